"""``smollm2-reasoner``: the converted SmolLM2 base with lynx's LoRA adapter merged in, cached.

Why merged and not served as a LoRA: lynx's probes read hidden states and its vLLM hook wraps
the model class, so a plain float32 transformers folder goes through exactly the path any
model takes (both engines, the fingerprint, the conformance check) with no LoRA support in
either engine. Why cached by hash: the folder's name is keyed by the base GGUF's sha256 and
the adapter's (weights and config), so a new wheel or a new adapter merges again and a stale
folder is never served; the same hashes sit in its config.json, so the model fingerprint of
the reasoner differs from the base's. Its tokenizer_config.json declares the thinking format
(``<think>``), which the base's chat template and vocabulary do not show.

The adapter ships inside the package (``lynx/smollm2/adapter/``: peft's ``adapter_config.json``
and ``adapter_model.safetensors``, as :func:`lynx.smollm2.finetune.finetune` writes them).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lynx.errors import InvalidInput
from lynx.smollm2.convert import INSTALL_HINT, REASONER_NAME, SOURCE_KEY, MissingExtra, cache_root, converted_folder, file_sha256, publish, staging
from lynx.thinking import THINKING_KEY

ADAPTER_DIR = Path(__file__).parent / "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: the thinking format the reasoner was taught (its base's template and vocabulary never show
#: ``<think>``), declared in its tokenizer_config.json (lynx.thinking.detect_format)
THINKING = "think"
#: part of the cache key: a change in what the merge writes makes a new folder, never a stale one
RECIPE = "merge-1"


class MissingAdapter(InvalidInput):
    """The LoRA adapter of ``smollm2-reasoner`` is not there (one line saying how to get one)."""


def adapter_files(adapter_dir: Path) -> tuple[Path, Path]:
    """(weights, config) of a peft adapter folder; one line when either is missing."""
    weights, config = adapter_dir / ADAPTER_WEIGHTS, adapter_dir / ADAPTER_CONFIG
    if not (weights.exists() and config.exists()):
        raise MissingAdapter(
            f"model {REASONER_NAME!r} needs lynx's LoRA adapter, but {adapter_dir} has no {ADAPTER_WEIGHTS} and {ADAPTER_CONFIG}:"
            " reinstall lynx, or train one (`lynx smollm2 finetune --out DIR`) and copy DIR/adapter there"
        )
    return weights, config


def require_peft(needed_by: str = f"model {REASONER_NAME!r}") -> None:
    """One line naming the extra when peft (the merge, the fine-tune) is not installed."""
    try:
        import peft  # noqa: F401
    except ModuleNotFoundError:
        raise MissingExtra(f"{needed_by} needs the peft package: {INSTALL_HINT}") from None


def reasoner_folder(adapter_dir: Path | None = None) -> Path:
    """The cached transformers folder of base + adapter (``adapter_dir``, default the shipped
    one), merging it on first use."""
    weights, config = adapter_files(Path(adapter_dir) if adapter_dir is not None else ADAPTER_DIR)
    require_peft()
    base = converted_folder()
    base_source = json.loads((base / "config.json").read_text())[SOURCE_KEY]
    source = base_source | {"adapter_sha256": file_sha256(weights), "adapter_config_sha256": file_sha256(config)}
    key = hashlib.sha256((RECIPE + base_source["gguf_sha256"] + source["adapter_sha256"] + source["adapter_config_sha256"]).encode()).hexdigest()
    folder = cache_root() / "models" / f"{REASONER_NAME}-{key[:12]}"
    if (folder / "config.json").exists():
        return folder
    return merge(base, weights.parent, folder, source)


def merge(base: Path, adapter_dir: Path, folder: Path, source: dict) -> Path:
    """peft's ``merge_and_unload`` of ``adapter_dir`` into ``base``, saved in float32 with the
    base's tokenizer and chat template (declaring the thinking format) at ``folder``, atomically
    as the conversion."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = staging(folder)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    tok_config = json.loads((tmp / "tokenizer_config.json").read_text())
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config | {THINKING_KEY: THINKING}, indent=2) + "\n")
    return publish(tmp, folder, source)

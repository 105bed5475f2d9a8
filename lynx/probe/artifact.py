"""The probe artifact: ``probe.safetensors`` (scaler + MLP weights) and ``probe.json``.

Why this format: a probe runs *inside* an inference engine, so scoring is one pure torch
function of plain tensors (:func:`score`) that works on CPU or GPU and under vLLM; the
weights load with safetensors (never unpickled); and ``probe.json`` records the model the
probe belongs to, so using it with another model fails loudly instead of scoring garbage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lynx.errors import InvalidInput, MissingInput
from lynx.models import resolve_probe_folder
from lynx.probe.trees import TreeEnsemble

PROBE_WEIGHTS = "probe.safetensors"
PROBE_META = "probe.json"
#: where a probe folder keeps the baselines ``lynx train`` fits beside it, each a probe folder
BASELINES_DIR = "baselines"
#: 1: an MLP on hidden states; 2: with a tree head on context and score history (probe v2)
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
#: what a probe scores from (``architecture.kind`` in probe.json)
KINDS = {
    "mlp": "an MLP on the cue's hidden states (probe v1)",
    "stacked": "the hidden-state MLP's logit, the trace's earlier logits and the cue's context, through boosted trees (probe v2)",
    "context-only": "the cue's context alone (no hidden state): the baseline that shows what the hidden state adds",
}


class ProbeModelMismatch(InvalidInput):
    """The probe was trained on another model's hidden states."""


@dataclass
class Probe:
    """Scaler + MLP as tensors (empty for a context-only probe), an optional tree head, and
    the metadata that says what it may be used with."""

    mean: torch.Tensor  # (d,)
    scale: torch.Tensor  # (d,)
    weights: list[torch.Tensor]  # W_i: (d_in, d_out), as scikit-learn's coefs_
    biases: list[torch.Tensor]
    meta: dict = field(default_factory=dict)
    head: TreeEnsemble | None = None  # probe v2 / context-only: the final score (lynx.probe.scoring)

    @property
    def kind(self) -> str:
        """``mlp`` (v1), ``stacked`` (v2) or ``context-only`` (:data:`KINDS`)."""
        return self.meta.get("architecture", {}).get("kind", "mlp")

    @property
    def has_mlp(self) -> bool:
        """Does it read hidden states (an engine must gather them at cues)?"""
        return bool(self.weights)

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    @property
    def input_dim(self) -> int:
        return int(self.mean.shape[0])

    def to(self, device=None, dtype=None) -> Probe:
        mv = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return Probe(mv(self.mean), mv(self.scale), [mv(w) for w in self.weights], [mv(b) for b in self.biases], self.meta, self.head)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """The hidden-state MLP's P(safe) (v1's final score; v2's first stage)."""
        if not self.has_mlp:
            raise InvalidInput(f"a {self.kind} probe reads no hidden states: score its cues with lynx.probe.scoring.cue_scores")
        return score(self, features)

    def check_model(self, fingerprint: str, what: str = "this model") -> None:
        """Raise unless the probe was trained on hidden states of the model with ``fingerprint``."""
        mine = self.meta.get("model_fingerprint")
        if mine != fingerprint:
            raise ProbeModelMismatch(f"probe belongs to model {self.meta.get('model')!r} (fingerprint {mine}), not to {what} (fingerprint {fingerprint})")


class DeviceProbe:
    """The probe prepared for an engine's decode loop: on one device and dtype, the scaler
    folded into the first layer (``(x - m) / s @ W + b == x @ (W / s) + (b - (m / s) @ W)``)
    and each layer one fused ``addmm``. Why: inside an engine every small tensor op costs tens
    of microseconds of dispatch, and the probe runs at every cue; same function as
    :func:`score` up to float rounding."""

    def __init__(self, probe: Probe, device=None, dtype=torch.float32):
        p = probe.to(device=device, dtype=dtype)
        w0 = p.weights[0] / p.scale[:, None]
        b0 = p.biases[0] - (p.mean / p.scale) @ p.weights[0]
        self.layers = [(w0, b0)] + list(zip(p.weights[1:], p.biases[1:], strict=True))
        self.dtype, self.input_dim = dtype, probe.input_dim

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        x = features if features.dtype == self.dtype else features.to(self.dtype)
        for w, b in self.layers[:-1]:
            x = torch.addmm(b, x, w).relu_()
        w, b = self.layers[-1]
        return torch.sigmoid(torch.addmm(b, x, w)).view(-1)


def score(probe: Probe, features: torch.Tensor) -> torch.Tensor:
    """P(safe exit) for each row of ``features`` (``(n, d)``, the configured layers concatenated).

    ReLU hidden layers and a logistic output, exactly scikit-learn's ``MLPClassifier``
    forward pass on standardised inputs.
    """
    x = (features.to(probe.mean.dtype) - probe.mean) / probe.scale
    for w, b in zip(probe.weights[:-1], probe.biases[:-1], strict=True):
        x = torch.relu(x @ w + b)
    return torch.sigmoid(x @ probe.weights[-1] + probe.biases[-1]).squeeze(-1)


def probe_hash(folder: Path | str) -> str:
    """The identity of a folder's probe: a hash of its weights and its ``probe.json``. What is
    computed from a probe (its calibration) records it, so an edited or retrained probe can
    never silently reuse a threshold computed for another."""
    folder = resolve_probe_folder(folder)
    h = hashlib.sha256()
    for name in (PROBE_WEIGHTS, PROBE_META):
        h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return h.hexdigest()[:16]


#: what a probe inherits from the collection it reads: its model, tokenizer, layers, cues, exit and
#: thinking format, and how its prompts were made (lynx serves the probe under exactly these)
MANIFEST_KEYS = ("model", "model_fingerprint", "tokenizer_hash", "num_layers", "hidden_size", "layers", "cues", "exit_string")
OPTIONAL_MANIFEST_KEYS = ("thinking", "answer_tokens", "prompt_suffix")


def meta_from_manifest(manifest: dict) -> dict:
    """The probe metadata a collection's manifest determines (every writer of a probe starts here)."""
    from lynx import __version__

    return {"lynx_version": __version__} | {k: manifest[k] for k in MANIFEST_KEYS} | {k: manifest.get(k) for k in OPTIONAL_MANIFEST_KEYS}


def save_probe(probe: Probe, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"scaler.mean": probe.mean, "scaler.scale": probe.scale} if probe.has_mlp else {}
    for i, (w, b) in enumerate(zip(probe.weights, probe.biases, strict=True)):
        tensors[f"mlp.{i}.weight"] = w
        tensors[f"mlp.{i}.bias"] = b
    tensors = {k: v.contiguous().float() for k, v in tensors.items()}
    meta = probe.meta | {"format_version": 1 if probe.head is None else FORMAT_VERSION, "n_layers_mlp": len(probe.weights)}
    if probe.head is not None:
        tensors |= probe.head.tensors()
        meta["head"] = meta.get("head", {}) | {"kind": "trees"} | probe.head.scalars()
    save_file(tensors, str(folder / PROBE_WEIGHTS))
    (folder / PROBE_META).write_text(json.dumps(meta, indent=2) + "\n")


def load_probe(folder: Path | str) -> Probe:
    """Load a probe folder (safetensors + JSON; nothing is unpickled); ``organism`` names the shipped one."""
    folder = resolve_probe_folder(folder)
    wpath, mpath = folder / PROBE_WEIGHTS, folder / PROBE_META
    for p in (wpath, mpath):
        if not p.exists():
            raise MissingInput(f"{folder} is not a probe folder: {p.name} is missing")
    try:
        meta = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{mpath} is corrupt ({e.msg})") from None
    if meta.get("format_version") not in READABLE_FORMATS:
        raise InvalidInput(f"{mpath}: unsupported probe format {meta.get('format_version')!r}")
    try:
        t = load_file(str(wpath))
    except Exception as e:  # safetensors raises its own error types
        raise InvalidInput(f"{wpath} is corrupt ({e})") from None
    try:
        n = meta["n_layers_mlp"]
        head = TreeEnsemble.from_tensors(t, meta["head"]) if "head" in meta else None
        empty = torch.zeros(0)
        probe = Probe(t.get("scaler.mean", empty), t.get("scaler.scale", empty), [t[f"mlp.{i}.weight"] for i in range(n)], [t[f"mlp.{i}.bias"] for i in range(n)], meta, head)
        expected = len(meta["layers"]) * meta["hidden_size"] if n else 0
        missing = [k for k in ("model", "model_fingerprint", "cues", "exit_string") if k not in meta]
    except (KeyError, TypeError) as e:
        raise InvalidInput(f"probe folder {folder} is inconsistent: {mpath.name} or {wpath.name} lacks {e} ({type(e).__name__})") from None
    if missing:
        raise InvalidInput(f"{mpath} lacks {', '.join(missing)}; retrain the probe with lynx train")
    if probe.kind not in KINDS or (probe.kind != "mlp") != (head is not None) or (probe.kind == "context-only") == bool(n):
        raise InvalidInput(f"{folder}: a {probe.kind!r} probe with {n} MLP layers and {'a' if head else 'no'} tree head is inconsistent")
    if probe.input_dim != expected:
        raise InvalidInput(f"{folder}: probe input size {probe.input_dim} != {len(meta['layers'])} layers x {meta['hidden_size']}")
    return probe

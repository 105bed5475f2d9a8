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

PROBE_WEIGHTS = "probe.safetensors"
PROBE_META = "probe.json"
FORMAT_VERSION = 1


class ProbeModelMismatch(InvalidInput):
    """The probe was trained on another model's hidden states."""


@dataclass
class Probe:
    """Scaler + MLP as tensors, and the metadata that says what it may be used with."""

    mean: torch.Tensor  # (d,)
    scale: torch.Tensor  # (d,)
    weights: list[torch.Tensor]  # W_i: (d_in, d_out), as scikit-learn's coefs_
    biases: list[torch.Tensor]
    meta: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    @property
    def input_dim(self) -> int:
        return int(self.mean.shape[0])

    def to(self, device=None, dtype=None) -> Probe:
        mv = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return Probe(mv(self.mean), mv(self.scale), [mv(w) for w in self.weights], [mv(b) for b in self.biases], self.meta)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return score(self, features)

    def check_model(self, fingerprint: str, what: str = "this model") -> None:
        """Raise unless the probe was trained on hidden states of the model with ``fingerprint``."""
        mine = self.meta.get("model_fingerprint")
        if mine != fingerprint:
            raise ProbeModelMismatch(
                f"probe belongs to model {self.meta.get('model')!r} (fingerprint {mine}), not to {what} (fingerprint {fingerprint})"
            )


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
    folder = Path(folder)
    h = hashlib.sha256()
    for name in (PROBE_WEIGHTS, PROBE_META):
        h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return h.hexdigest()[:16]


def save_probe(probe: Probe, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"scaler.mean": probe.mean, "scaler.scale": probe.scale}
    for i, (w, b) in enumerate(zip(probe.weights, probe.biases, strict=True)):
        tensors[f"mlp.{i}.weight"] = w
        tensors[f"mlp.{i}.bias"] = b
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, str(folder / PROBE_WEIGHTS))
    meta = probe.meta | {"format_version": FORMAT_VERSION, "n_layers_mlp": len(probe.weights)}
    (folder / PROBE_META).write_text(json.dumps(meta, indent=2) + "\n")


def load_probe(folder: Path | str) -> Probe:
    """Load a probe folder (safetensors + JSON; nothing is unpickled)."""
    folder = Path(folder)
    wpath, mpath = folder / PROBE_WEIGHTS, folder / PROBE_META
    for p in (wpath, mpath):
        if not p.exists():
            raise MissingInput(f"{folder} is not a probe folder: {p.name} is missing")
    try:
        meta = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{mpath} is corrupt ({e.msg})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise InvalidInput(f"{mpath}: unsupported probe format {meta.get('format_version')!r}")
    try:
        t = load_file(str(wpath))
    except Exception as e:  # safetensors raises its own error types
        raise InvalidInput(f"{wpath} is corrupt ({e})") from None
    try:
        n = meta["n_layers_mlp"]
        probe = Probe(t["scaler.mean"], t["scaler.scale"], [t[f"mlp.{i}.weight"] for i in range(n)], [t[f"mlp.{i}.bias"] for i in range(n)], meta)
        expected = len(meta["layers"]) * meta["hidden_size"]
        missing = [k for k in ("model", "model_fingerprint", "cues", "exit_string") if k not in meta]
    except (KeyError, TypeError) as e:
        raise InvalidInput(f"probe folder {folder} is inconsistent: {mpath.name} or {wpath.name} lacks {e} ({type(e).__name__})") from None
    if missing:
        raise InvalidInput(f"{mpath} lacks {', '.join(missing)}; retrain the probe with lynx train")
    if probe.input_dim != expected:
        raise InvalidInput(f"{folder}: probe input size {probe.input_dim} != {len(meta['layers'])} layers x {meta['hidden_size']}")
    return probe

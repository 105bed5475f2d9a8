"""Wrapper architectures: the base model, plus the probe's layers as graph outputs.

Why not forward hooks: under torch.compile / CUDA graphs Python hooks on inner layers do not
fire. vLLM's EAGLE-3 mechanism (``set_aux_hidden_state_layers``) makes the inner model return
the requested layers as real outputs; the wrapper concatenates them with the final hidden
state (the probe's input first, in its layer order) so they survive the runner's
``hidden_states[logits_indices]`` selection, and takes them apart again (as views) in
``compute_logits``, which runs eagerly on exactly the rows that become logits.
There it hands the features (a reference) to the logits processor through
:mod:`lynx.engines.vllm_plugin.shared`; the probe (one small MLP, on device) then scores just
the rows that sit on a cue, or, with ``probe_rows: "all"``, every row right here.

Layer numbering is lynx's (= transformers' ``hidden_states`` index): ``l`` < L is the residual
stream after decoder layer ``l`` (0 = embeddings), ``L`` is the final, normed state.
"""

from __future__ import annotations

import importlib

import torch

from lynx.engines.exit_control import probe_scores
from lynx.engines.vllm_plugin import SUPPORTED, shared


def _base(arch: str):
    mod, cls = SUPPORTED[arch].split(":")
    return getattr(importlib.import_module(mod), cls)


class _LynxMixin:
    def _lynx_setup(self, vllm_config) -> None:
        from lynx.engines.exit_control import with_probe_defaults

        cfg = with_probe_defaults((vllm_config.additional_config or {}).get("lynx", {}))
        n = self.config.num_hidden_layers
        self.lynx_layers = [int(x) for x in cfg.get("layers", [n])]
        bad = [x for x in self.lynx_layers if not 0 <= x <= n]
        if bad:
            raise ValueError(f"lynx layers {bad} out of range for a {n}-layer model")
        self.lynx_aux = tuple(sorted({x for x in self.lynx_layers if x != n}))
        if self.lynx_aux:
            self.set_aux_hidden_state_layers(self.lynx_aux)
        self.lynx_probe = None
        if cfg.get("probe"):
            from lynx.probe import load_probe

            probe = load_probe(cfg["probe"])
            if probe.layers != self.lynx_layers:
                raise ValueError(f"probe reads layers {probe.layers}, the engine was configured with {self.lynx_layers}")
            self.lynx_probe = probe
        self._lynx_device_probe = None
        self.lynx_probe_rows = cfg.get("probe_rows", "cues")
        if self.lynx_probe_rows not in ("cues", "all"):
            raise ValueError(f"lynx probe_rows must be 'cues' or 'all', got {self.lynx_probe_rows!r}")

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        n = self.config.num_hidden_layers
        if isinstance(out, tuple):  # (final, [aux layers in sorted order])
            final, aux = out
            parts = {n: final} | dict(zip(self.lynx_aux, aux, strict=True))
        elif self.lynx_layers == [n]:
            return out  # the probe reads the final state: nothing to add
        else:
            final, parts = out, {n: out}
        # the probe's input first, in its layer order, then the final state if the probe skips it:
        # compute_logits then takes both as views, without another concatenation per step
        tail = [] if n in self.lynx_layers else [final]
        return torch.cat([parts[x] for x in self.lynx_layers] + tail, dim=-1)

    def lynx_features(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(final hidden state, probe features in the configured layer order), both views."""
        h, n = self.config.hidden_size, self.config.num_hidden_layers
        k = self.lynx_layers.index(n) if n in self.lynx_layers else len(self.lynx_layers)
        return hidden_states[..., h * k : h * (k + 1)], hidden_states[..., : h * len(self.lynx_layers)]

    def compute_logits(self, hidden_states: torch.Tensor):
        final, feats = self.lynx_features(hidden_states)
        scores = None
        if self.lynx_probe is not None:
            if self._lynx_device_probe is None:
                from lynx.probe.artifact import DeviceProbe

                self._lynx_device_probe = DeviceProbe(self.lynx_probe, device=feats.device)
            shared.probe = self._lynx_device_probe
            if self.lynx_probe_rows == "all":
                scores = probe_scores(self._lynx_device_probe, feats, shared.errors)
        # a reference, no copy: the processor scores (lazy mode) or records only the rows at a cue
        shared.publish(feats, scores)
        return super().compute_logits(final)


def _make(arch: str):
    base = _base(arch)

    class Wrapper(_LynxMixin, base):
        def __init__(self, *, vllm_config, prefix: str = ""):
            super().__init__(vllm_config=vllm_config, prefix=prefix)
            self._lynx_setup(vllm_config)

    Wrapper.__name__ = Wrapper.__qualname__ = f"Lynx{arch}"
    return Wrapper


LynxQwen3ForCausalLM = _make("Qwen3ForCausalLM")
LynxQwen2ForCausalLM = _make("Qwen2ForCausalLM")
LynxLlamaForCausalLM = _make("LlamaForCausalLM")

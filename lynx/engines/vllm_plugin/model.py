"""Wrapper architectures: the base model, plus the probe's layers as graph outputs.

Why not forward hooks: under torch.compile / CUDA graphs Python hooks on inner layers do not
fire. vLLM's EAGLE-3 mechanism (``set_aux_hidden_state_layers``) makes the inner model return
the requested layers as real outputs; the wrapper concatenates them onto the final hidden
state so they survive the runner's ``hidden_states[logits_indices]`` selection, and splits
them again in ``compute_logits``, which runs eagerly on exactly the rows that become logits.
There it scores every row with the probe (one small MLP, on device) and hands the scores to
the logits processor through :mod:`lynx.engines.vllm_plugin.shared`.

Layer numbering is lynx's (= transformers' ``hidden_states`` index): ``l`` < L is the residual
stream after decoder layer ``l`` (0 = embeddings), ``L`` is the final, normed state.
"""

from __future__ import annotations

import importlib
import logging

import torch

from lynx.engines.vllm_plugin import SUPPORTED, shared

log = logging.getLogger("lynx.vllm")


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

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if isinstance(out, tuple):  # (final, [aux layers in sorted order])
            final, aux = out
            return torch.cat([final, *aux], dim=-1)
        return out

    def lynx_features(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(final hidden state, probe features in the configured layer order)."""
        h = self.config.hidden_size
        final = hidden_states[..., :h]
        parts = {self.config.num_hidden_layers: final}
        for i, layer in enumerate(self.lynx_aux):
            parts[layer] = hidden_states[..., h * (i + 1) : h * (i + 2)]
        return final, torch.cat([parts[x] for x in self.lynx_layers], dim=-1)

    def compute_logits(self, hidden_states: torch.Tensor):
        final, feats = self.lynx_features(hidden_states)
        scores = None
        if self.lynx_probe is not None:
            try:
                if self._lynx_device_probe is None:
                    self._lynx_device_probe = self.lynx_probe.to(device=feats.device, dtype=torch.float32)
                scores = self._lynx_device_probe(feats.float())
            except Exception as e:  # never take the engine down for the probe
                msg = f"lynx probe failed ({type(e).__name__}: {e}); lynx exits disabled for this step"
                if msg not in shared.errors:
                    shared.errors.append(msg)
                    log.warning(msg)
                scores = None
        shared.publish(scores, feats)  # a reference, no copy: read only for requests that record cue features
        return super().compute_logits(final.contiguous())


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

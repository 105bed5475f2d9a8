"""Wrapper architectures: the base model, plus the probe's layers as graph outputs.

Why not forward hooks: under torch.compile / CUDA graphs Python hooks on inner layers do not
fire. vLLM's EAGLE-3 mechanism (``set_aux_hidden_state_layers``) makes the inner model return
the requested layers as real outputs. They reach ``compute_logits`` (which runs eagerly on
exactly the rows that become logits) by one of two hand-offs, ``handoff`` in the lynx config:

* ``"output"``: the wrapper concatenates them with the final hidden state (the probe's input
  first, in its layer order) so they survive the runner's ``hidden_states[logits_indices]``
  selection, and ``compute_logits`` takes them apart again as views. Safe wherever the
  model's forward is replayed without Python (full CUDA graphs), at the price of one
  ``(tokens, layers x hidden)`` copy per step.
* ``"direct"``: the forward returns the base model's own output and leaves the layer tensors
  (references), the step's ``query_start_loc`` and its ``input_ids`` in the hand-off (the
  ids let the processor find the rows whose latest token matters with one vectorised test
  instead of a Python check per request); only the rows the probe
  actually reads are ever gathered (``query_start_loc[r + 1] - 1`` is the token of logits row
  ``r``, the runner's rule). Needs the wrapper's forward to run in Python every step, which
  it does on CPU (no CUDA graphs): ``"auto"``, the default, picks it there and ``"output"``
  elsewhere. A step without attention metadata falls back to ``"output"``;
  ``compute_logits`` tells the two apart by the width of what it receives.

There the features go (a reference) to the logits processor through the engine's
:class:`~lynx.engines.vllm_plugin.worker_state.StepHandoff`; the probe (one small MLP, on device) then scores just
the rows that sit on a cue, or, with ``probe_rows: "all"``, every row right here.

Layer numbering is lynx's (= transformers' ``hidden_states`` index): ``l`` < L is the residual
stream after decoder layer ``l`` (0 = embeddings), ``L`` is the final, normed state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from lynx.engines.exit_control import probe_scores
from lynx.engines.vllm_plugin.support import WRAPPER_PREFIX, hook_support, model_class
from lynx.engines.vllm_plugin.worker_state import LynxWorker, StepFeatures
from lynx.errors import InvalidInput

if TYPE_CHECKING:
    from lynx.probe.artifact import DeviceProbe


def _base(arch: str):
    """vLLM's class for ``arch``, after the registry-based check (one clear refusal otherwise)."""
    hook_support(arch).require()
    return model_class(arch)


class _LynxMixin:
    # provided by the vLLM model class the wrapper combines this mixin with (_make)
    set_aux_hidden_state_layers: Callable[[tuple[int, ...]], None]

    def _lynx_setup(self, vllm_config) -> None:
        lynx = LynxWorker.of(vllm_config)  # settings and probe folder, read once per worker (shared with the processor)
        text = vllm_config.model_config.hf_text_config  # the decoder's config, whatever wraps it
        hook, n = lynx.hook, int(text.num_hidden_layers)
        self.lynx_n_layers, self.lynx_hidden = n, int(text.hidden_size)
        self.lynx_handoff_state = lynx.handoff
        self.lynx_layers = [int(x) for x in (hook.layers or [n])]
        bad = [x for x in self.lynx_layers if not 0 <= x <= n]
        if bad:
            raise InvalidInput(f"lynx layers {bad} out of range for a {n}-layer model")
        self.lynx_aux = tuple(sorted({x for x in self.lynx_layers if x != n}))
        if self.lynx_aux:
            self.set_aux_hidden_state_layers(self.lynx_aux)
        self.lynx_probe = lynx.policy.probe if lynx.policy is not None else None  # its layers were checked against the hook's
        self._lynx_device_probe: DeviceProbe | None = None
        self.lynx_probe_rows = hook.probe_rows
        handoff = hook.handoff
        if handoff == "auto":
            from vllm.platforms import current_platform

            handoff = "direct" if current_platform.is_cpu() else "output"
        self.lynx_handoff = handoff

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        n = self.lynx_n_layers
        step = None  # direct hand-off: (query_start_loc, input_ids) of this step, by reference
        if self.lynx_handoff == "direct":
            qsl = _query_start_loc()
            if qsl is not None:
                step = (qsl, kwargs["input_ids"] if "input_ids" in kwargs else (args[0] if args else None))
        if not isinstance(out, tuple):  # the probe reads the final state only: compute_logits has it
            self.lynx_handoff_state.layer_states = None if step is None else ({}, *step)
            return out
        final, aux = out  # aux: the probe's intermediate layers in sorted order
        parts = dict(zip(self.lynx_aux, aux, strict=True))
        if step is not None:
            self.lynx_handoff_state.layer_states = (parts, *step)
            return final
        self.lynx_handoff_state.layer_states = None
        parts[n] = final
        # the probe's input first, in its layer order, then the final state if the probe skips it:
        # compute_logits then takes both as views, without another concatenation per step
        tail = [] if n in self.lynx_layers else [final]
        return torch.cat([parts[x] for x in self.lynx_layers] + tail, dim=-1)

    def lynx_features(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, StepFeatures | None]:
        """(final hidden state, the probe's features of every row) from what compute_logits got."""
        h, n, rows = self.lynx_hidden, self.lynx_n_layers, hidden_states.shape[0]
        if hidden_states.shape[-1] == h:  # the final state only; intermediate layers came directly
            states = self.lynx_handoff_state.layer_states
            if states is not None and states[1].shape[0] < rows + 1:
                states = None  # not this step's: never score (or read the tokens of) another step
            if not self.lynx_aux:
                return hidden_states, StepFeatures([(hidden_states, False)], rows, *(states[1:] if states else ()))
            if states is None:
                return hidden_states, None
            layers, qsl, input_ids = states
            parts = [(hidden_states, False) if x == n else (layers[x], True) for x in self.lynx_layers]
            return hidden_states, StepFeatures(parts, rows, qsl, input_ids)
        k = self.lynx_layers.index(n) if n in self.lynx_layers else len(self.lynx_layers)
        return hidden_states[..., h * k : h * (k + 1)], StepFeatures.of(hidden_states[..., : h * len(self.lynx_layers)])

    def compute_logits(self, hidden_states: torch.Tensor):
        handoff = self.lynx_handoff_state
        final, feats = self.lynx_features(hidden_states)
        scores = None
        if self.lynx_probe is not None:
            if self._lynx_device_probe is None:
                from lynx.probe.artifact import DeviceProbe

                self._lynx_device_probe = DeviceProbe(self.lynx_probe, device=final.device)
            handoff.probe = self._lynx_device_probe
            if self.lynx_probe_rows == "all" and feats is not None:
                scores = probe_scores(self._lynx_device_probe, feats.dense(), handoff.errors)
        # references, no copy: the processor scores (lazy mode) or records only the rows at a cue
        handoff.publish(feats, scores)
        return super().compute_logits(final)  # type: ignore[misc]  # the superclass is vLLM's model class, combined at runtime (_make)


def _query_start_loc() -> torch.Tensor | None:
    """This step's ``query_start_loc`` from vLLM's forward context (None when there is none:
    a profiling or dummy run, or micro-batched attention metadata)."""
    from vllm.forward_context import get_forward_context, is_forward_context_available

    if not is_forward_context_available():
        return None
    meta = get_forward_context().attn_metadata
    if not isinstance(meta, dict) or not meta:
        return None
    return getattr(next(iter(meta.values())), "query_start_loc", None)


@functools.cache
def _make(arch: str):
    base = _base(arch)

    class Wrapper(_LynxMixin, base):  # type: ignore[valid-type, misc]  # base: vLLM's model class, picked at runtime
        def __init__(self, *, vllm_config, prefix: str = ""):
            super().__init__(vllm_config=vllm_config, prefix=prefix)
            self._lynx_setup(vllm_config)

    Wrapper.__name__ = Wrapper.__qualname__ = f"Lynx{arch}"
    return Wrapper


def __getattr__(name: str):
    """The wrapper classes (``LynxQwen3ForCausalLM``, ...), built on first use: importing this
    module does not import vLLM's model code (vLLM's registry names them lazily too)."""
    if name.startswith(WRAPPER_PREFIX) and name != WRAPPER_PREFIX:
        return _make(name[len(WRAPPER_PREFIX) :])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

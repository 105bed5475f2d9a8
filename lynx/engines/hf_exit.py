"""Early exit inside transformers' ``generate``: hooks read the probe's layers, a logits
processor forces the exit.

Why this shape: ``model.generate`` already does batched, seeded sampling with a KV cache; lynx
only needs, at every step, the hidden states of each row's *input* token (the token sampled
at the previous step) at the probe's layers. Forward hooks on the embedding, the decoder
layers and the final norm capture exactly that (transformers runs eagerly, so hooks fire),
and a ``LogitsProcessor`` of the same step scores the states of rows at a cue and, through the shared
:class:`~lynx.engines.exit_control.ExitController`, forces the exit string when the score
clears the request's threshold. Rows that do not exit sample exactly as plain ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from lynx.engines.exit_control import ExitController, RequestState, force, score_rows
from lynx.engines.hf import _device, generate


class LayerCapture:
    """Last-position hidden states of one forward pass at lynx layer indices (0 = embeddings,
    l = after decoder layer l, L = after the final norm)."""

    def __init__(self, model, layers: Sequence[int]):
        inner = model.model
        n = model.config.num_hidden_layers
        self.layers = list(layers)
        self.states: dict[int, torch.Tensor] = {}
        modules = {0: inner.embed_tokens, n: inner.norm} | {i + 1: inner.layers[i] for i in range(n - 1)}
        self.handles = [modules[layer].register_forward_hook(self._hook(layer)) for layer in sorted(set(self.layers))]

    def _hook(self, layer: int):
        def fn(_module, _inputs, output):
            h = output[0] if isinstance(output, tuple) else output
            self.states[layer] = h[:, -1, :].detach()

        return fn

    def features(self) -> torch.Tensor:
        return torch.cat([self.states[layer] for layer in self.layers], dim=-1).float()

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class _ExitProcessor(LogitsProcessor):
    def __init__(self, controller: ExitController, states: list[RequestState | None], width: int, capture: LayerCapture, probe):
        self.controller, self.states, self.width, self.capture, self.probe = controller, states, width, capture, probe
        self.errors: list[str] = []  # probe failures, logged once each

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        active = [(r, s) for r, s in enumerate(self.states) if s is not None]
        if not active:
            return scores
        for r, state in active:
            state.output[:] = input_ids[r, self.width :].tolist()
        feats = self.capture.features()

        def scores_of(rows: list[int]) -> list[float] | None:
            # guarded like the vLLM hook: a failing probe (wrong width, NaN) disables lynx for the
            # rows at a cue (ExitController.decide), it never aborts the batch
            if self.probe is None:
                return None
            return score_rows(self.probe, feats.to(self.probe.mean.device), rows, self.errors)

        return force(scores, self.controller.step_rows(active, scores_of, feats))


@torch.inference_mode()
def generate_with_exit(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    controller: ExitController,
    request_args: Sequence[dict | None],
    *,
    probe=None,
    layers: Sequence[int] = (),
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    stop_ids: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[list[int]]:
    """Like :func:`lynx.engines.hf.generate`, with lynx's exit for requests whose
    ``request_args`` opt in (``lynx_alpha`` / ``lynx_threshold`` / ``lynx_record``, plus a
    ``lynx_tag`` under which the controller's :class:`~lynx.engines.events.EventSink` keeps
    the audit when it keeps events). ``probe``: the scorer (default: the controller's policy's)."""
    if probe is None and controller.policy is not None:
        probe = controller.policy.probe
    probe = probe.to(device=_device(model)) if probe is not None else None
    capture = LayerCapture(model, layers or (probe.layers if probe is not None else [model.config.num_hidden_layers]))

    made: dict[int, RequestState] = {}  # the requests' states, finished (monitor summaries) once their outputs are final

    def processors(idx: range, width: int) -> LogitsProcessorList:
        states = [controller.new_request(request_args[i], prompts[i], [], temperature=temperature, seed=None if seeds is None else int(seeds[i])) for i in idx]
        made.update((i, s) for i, s in zip(idx, states, strict=True) if s is not None)
        return LogitsProcessorList([_ExitProcessor(controller, states, width, capture, probe)])

    try:
        outs = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            stop_ids=stop_ids,
            batch_processors=processors,
            seeds=seeds,
        )
    finally:
        capture.close()
    for i, state in made.items():
        state.output[:] = outs[i]
        controller.finish_request(state)
    return outs

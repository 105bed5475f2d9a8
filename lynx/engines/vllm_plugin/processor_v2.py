"""lynx's logits processor for vLLM's Model Runner V2 (the GPU default).

Interface: ``vllm.v1.worker.gpu.sample.logits_processor.interface``. State is per request
*slot*; each step's ``LogitsContext`` maps logits rows to slots and gives every row's input
token and position. The input token of a decode row is the token sampled last step — the cue
candidate — and the wrapper model published that token's probe features for the same row;
the probe runs only on rows at a cue.
The rows that need a look (input token a cue completer or an exit-string token) are found
on device with one table lookup for the whole batch; only those rows are copied to the host
and handled in Python, and token history is read from the runner's device buffer only when a
candidate cue shows up. Nothing runs while no request has opted in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

from lynx.engines.exit_control import RequestState, force
from lynx.engines.vllm_plugin.worker_state import LynxWorker
from lynx.exit_policy import RequestOptions


class LynxLogitsProcessorV2(LogitsProcessor):
    def __init__(self, vllm_config, req_states) -> None:
        lynx = LynxWorker.of(vllm_config) if (vllm_config.additional_config or {}).get("lynx") else None
        self.req_states = req_states
        self.handoff = lynx.handoff if lynx is not None else None
        self.controller = lynx.controller if lynx is not None else None
        self.slots: dict[int, RequestState] = {}
        self._watch: torch.Tensor | None = None  # watched tokens, a boolean table over the vocabulary

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """Refuse bad ``lynx_*`` switches at admission (the OpenAI server answers HTTP 400)."""
        RequestOptions.parse(sampling_params.extra_args)

    def add_request(self, req_idx: int, sampling_params) -> bool:
        self.slots.pop(req_idx, None)
        if self.controller is None:
            return False
        state = self.controller.new_request(sampling_params.extra_args, [], [], temperature=sampling_params.temperature)
        if state is None:
            return False
        self.slots[req_idx] = state
        return True

    def _history(self, slot: int, pos: int) -> tuple[list[int], list[int]]:
        ids = self.req_states.all_token_ids.gpu[slot, : pos + 1].tolist()
        n_prompt = int(self.req_states.prompt_len.np[slot])
        return ids[:n_prompt], ids[n_prompt:]

    def _watched_rows(self, logits: torch.Tensor, ctx) -> list[list[int]]:
        """``[rows, slots, tokens, positions]`` of the rows whose input token is one the exit rule
        watches (``ExitController.watch_ids``): one table lookup on device for the whole batch,
        then one copy of just those rows to the host (no Python work for the other rows)."""
        ids = ctx.input_ids
        if self._watch is None or self._watch.device != ids.device:
            assert self.controller is not None  # called from apply, with lynx configured
            self._watch = self.controller.watch_table(logits.shape[1], ids.device)
        rows = self._watch[ids.long()].nonzero().view(-1)
        return torch.stack([rows, ctx.expanded_idx_mapping[rows].long(), ids[rows].long(), ctx.pos[rows].long()]).tolist()

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        if not self.slots:
            return logits
        assert self.handoff is not None and self.controller is not None  # slots are only kept with lynx configured (add_request)
        n = logits.shape[0]
        controller = self.controller
        forced: list[tuple[int, int]] = []
        cues: list[tuple[int, RequestState, int]] = []
        for row, slot, tok, pos in zip(*self._watched_rows(logits, ctx), strict=True):
            state = self.slots.get(slot)
            if state is None or state.disabled:
                continue
            if state.exit_from is not None:  # exit under way: the output holds pos + 1 - prompt tokens
                nxt = controller.exit_token(state, pos + 1 - len(state.prompt), tok)
                if nxt is not None:
                    forced.append((row, nxt))
            elif tok in controller.candidates:
                state.prompt, out = self._history(slot, pos)
                state.output[:] = out
                cue = controller.new_cue(state)
                if cue is not None:
                    cues.append((row, state, cue))
        if cues:
            feats = self.handoff.features_for(n)
            scores: Sequence[float | None] = self.handoff.scores_for([row for row, _, _ in cues], n) or [None] * len(cues)
            scores = controller.final_scores([(state, cue) for _, state, cue in cues], scores)
            for (row, state, cue), score in zip(cues, scores, strict=True):
                tok = controller.decide(state, cue, score, feats[row] if feats is not None and state.record else None)
                if tok is not None:
                    forced.append((row, tok))
        return force(logits, forced)

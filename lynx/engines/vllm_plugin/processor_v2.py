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

import torch
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

from lynx.engines.exit_control import ExitController, RequestState
from lynx.engines.vllm_plugin import shared


class LynxLogitsProcessorV2(LogitsProcessor):
    def __init__(self, vllm_config, req_states):
        cfg = dict((vllm_config.additional_config or {}).get("lynx", {}))
        self.req_states = req_states
        self.controller = ExitController(cfg, vllm_config.model_config.tokenizer) if cfg else None
        self.slots: dict[int, RequestState] = {}
        self._watch: torch.Tensor | None = None  # watched tokens, a boolean table over the vocabulary

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        args = sampling_params.extra_args or {}
        if "lynx_alpha" in args:
            a = args["lynx_alpha"]
            if not isinstance(a, (int, float)) or not 0 < float(a) < 1:
                raise ValueError(f"lynx_alpha must be a number strictly between 0 and 1, got {a!r}")

    def add_request(self, req_idx: int, sampling_params) -> bool:
        self.slots.pop(req_idx, None)
        if self.controller is None:
            return False
        state = self.controller.new_request(sampling_params.extra_args, [], [])
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
            self._watch = self.controller.watch_table(logits.shape[1], ids.device)
        rows = self._watch[ids.long()].nonzero().view(-1)
        return torch.stack([rows, ctx.expanded_idx_mapping[rows].long(), ids[rows].long(), ctx.pos[rows].long()]).tolist()

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        if not self.slots:
            return logits
        n = logits.shape[0]
        exit_ids, candidates = self.controller.exit_ids, self.controller.candidates
        forced: list[tuple[int, int]] = []
        cues: list[tuple[int, RequestState, int]] = []
        positions: dict[int, int] = {}
        for row, slot, tok, pos in zip(*self._watched_rows(logits, ctx), strict=True):
            state = self.slots.get(slot)
            if state is None or state.disabled:
                continue
            if state.exit_from is not None:  # exit under way: exit_ids[k] goes to position exit_from + k
                k = pos + 1 - state.exit_from
                if 1 <= k < len(exit_ids) and tok == exit_ids[k - 1]:
                    forced.append((row, exit_ids[k]))
            elif tok in candidates:
                state.prompt, out = self._history(slot, pos)
                state.output[:] = out
                cue = self.controller.new_cue(state)
                if cue is not None:
                    cues.append((row, state, cue))
                    positions[row] = pos
        if cues:
            feats = shared.features_for(n)
            scores = shared.scores_for([row for row, _, _ in cues], n) or [None] * len(cues)
            for (row, state, cue), score in zip(cues, scores, strict=True):
                tok = self.controller.decide(state, cue, score, feats[row] if feats is not None and state.record else None)
                if tok is not None:
                    state.exit_from = positions[row] + 1
                    forced.append((row, tok))
        for row, tok in forced:
            logits[row] = float("-inf")
            logits[row, tok] = 0.0
        return logits

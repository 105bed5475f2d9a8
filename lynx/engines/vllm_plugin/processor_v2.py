"""lynx's logits processor for vLLM's Model Runner V2 (the GPU default).

Interface: ``vllm.v1.worker.gpu.sample.logits_processor.interface``. State is per request
*slot*; each step's ``LogitsContext`` maps logits rows to slots and gives every row's input
token and position. The input token of a decode row is the token sampled last step — the cue
candidate — and the wrapper model published that token's probe features for the same row;
the probe runs only on rows at a cue.
Token history is read from the runner's device buffer only when a candidate cue shows up,
so the common step costs one host copy of the (small) input-id and position vectors, and
nothing at all when no request in the batch opted in.
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

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        if not self.slots:
            return logits
        slots = ctx.expanded_idx_mapping.tolist()
        if not any(s in self.slots for s in slots):
            return logits
        n = logits.shape[0]
        tokens, positions = ctx.input_ids.tolist(), ctx.pos.tolist()
        exit_ids, candidates = self.controller.exit_ids, self.controller.candidates
        forced: list[tuple[int, int]] = []
        cues: list[tuple[int, RequestState, int]] = []
        for row, slot in enumerate(slots):
            state = self.slots.get(slot)
            if state is None or state.disabled:
                continue
            tok, pos = tokens[row], positions[row]
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

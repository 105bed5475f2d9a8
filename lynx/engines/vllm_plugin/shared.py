"""Per-process hand-off from the wrapper model to the logits processor of the same step.

Why a module global: in both vLLM runners ``compute_logits`` and the logits processors run
in the same worker process, one after the other, on the same rows in the same order, so the
model can leave the step's probe features (and, in all-rows mode, scores) here for the
processor to read. A row-count mismatch means the hand-off is not for this step, and the
processor then leaves the logits alone.

Scoring is lazy by default: the model publishes a *reference* to the features (no copy, no
compute) and the processor asks :func:`scores_for` only for the rows that sit on a cue of a
request that opted in. ``probe_rows: "all"`` in the engine's lynx config makes the model score
every row on device instead (the dense variant: no per-step row selection, constant work).
"""

from __future__ import annotations

import torch

from lynx.engines.exit_control import score_rows

features: torch.Tensor | None = None  # (rows, n_layers * hidden): the probe input of each row
scores: torch.Tensor | None = None  # (rows,) P(safe) of every row, only in all-rows mode
probe = None  # the probe on the features' device, set by the model
step: int = 0  # incremented by every compute_logits call
errors: list[str] = []  # probe failures, reported once each


def publish(new_features: torch.Tensor | None, new_scores: torch.Tensor | None = None) -> None:
    global features, scores, step
    features, scores, step = new_features, new_scores, step + 1


def features_for(n_rows: int) -> torch.Tensor | None:
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

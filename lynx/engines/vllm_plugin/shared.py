"""Per-process hand-off from the wrapper model to the logits processor of the same step.

Why a module global: in both vLLM runners ``compute_logits`` and the logits processors run
in the same worker process, one after the other, on the same rows in the same order, so the
model can leave the step's probe scores (and, when recording, features) here for the
processor to read. A row-count mismatch means the hand-off is not for this step, and the
processor then leaves the logits alone.
"""

from __future__ import annotations

import torch

scores: torch.Tensor | None = None  # (rows,) P(safe) of each row's input token
features: torch.Tensor | None = None  # (rows, n_layers * hidden): the probe input of each row
step: int = 0  # incremented by every compute_logits call
errors: list[str] = []  # probe failures, reported once each


def publish(new_scores: torch.Tensor | None, new_features: torch.Tensor | None) -> None:
    global scores, features, step
    scores, features, step = new_scores, new_features, step + 1

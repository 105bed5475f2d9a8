"""The online signals a probe may use besides the hidden state, defined once for training
(from a collection's cue rows) and serving (from a request's state in the engine).

* **context** — where the cue sits: its index among the trace's cues, its thinking position
  (and log), the thinking tokens since the previous cue, where the thinking span started
  (a prompt-length proxy), and which cue word it is.
* **history** — the hidden-state probe's logits at the trace's earlier cues (max, mean,
  last, and a first-cue flag), next to the current cue's own logit.

Why one module: the engine decides from these numbers at decode time and the calibration
replays them offline; if the two computed them differently, the calibrated threshold would
silently apply to other scores. Every value is computable online at the cue, from the tokens
so far — nothing looks ahead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONTEXT_BASE = ("cue_index", "thinking_position", "log_thinking_position", "tokens_since_previous_cue", "thinking_start")
HISTORY = ("logit", "previous_max_logit", "previous_mean_logit", "previous_logit", "first_cue")
#: a probability is clipped to [EPS, 1 - EPS] before its logit (a saturated probe stays finite)
EPS = 1e-6


def context_names(cues: Sequence[str]) -> list[str]:
    """The context columns for a probe with these cue words (one indicator per word)."""
    return list(CONTEXT_BASE) + [f"cue_is_{w}" for w in cues]


def context_row(cue_index: int, thinking_position: int, previous_position: int, thinking_start: int, cue_word: str, cues: Sequence[str]) -> list[float]:
    """One cue's context columns (:func:`context_names`), in plain Python: the one definition,
    used per cue by the engine and row by row by :func:`context_matrix`. ``previous_position``:
    the thinking position of the trace's previous cue (0 for its first cue)."""
    pos = float(thinking_position)
    return [float(cue_index), pos, math.log1p(max(pos, 0.0)), pos - float(previous_position), float(thinking_start), *(1.0 if cue_word == w else 0.0 for w in cues)]


def context_matrix(cue_index, thinking_position, previous_position, thinking_start, cue_word, cues: Sequence[str]) -> np.ndarray:
    """``(n, len(context_names(cues)))`` context rows (:func:`context_row` of each cue)."""
    rows = [
        context_row(*r, cues)
        for r in zip(
            np.asarray(cue_index).tolist(),
            np.asarray(thinking_position).tolist(),
            np.asarray(previous_position).tolist(),
            np.asarray(thinking_start).tolist(),
            np.asarray(cue_word, dtype=object).tolist(),
            strict=True,
        )
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(context_names(cues)))


def logit(p) -> np.ndarray:
    """Elementwise :func:`scalar_logit` (the same numbers the engine computes one at a time)."""
    return np.asarray([scalar_logit(x) for x in np.ravel(np.asarray(p, dtype=np.float64)).tolist()], dtype=np.float64).reshape(np.shape(p))


def scalar_logit(p: float) -> float:
    """The log-odds of a probability clipped to [EPS, 1 - EPS] (a saturated probe stays finite)."""
    p = min(max(float(p), EPS), 1 - EPS)
    return math.log(p / (1 - p))


def history_row(previous_logits: Sequence[float], current_logit: float) -> list[float]:
    """One cue's history columns (:data:`HISTORY`) from the logits of the trace's earlier cues."""
    if not previous_logits:
        return [current_logit, 0.0, 0.0, 0.0, 1.0]
    return [current_logit, max(previous_logits), math.fsum(previous_logits) / len(previous_logits), previous_logits[-1], 0.0]


def history_matrix(cue_index: np.ndarray, stage1: np.ndarray) -> np.ndarray:
    """``(n, len(HISTORY))`` for cue rows in trace order (``cue_index`` restarts at 0 with
    each trace), from the hidden-state probe's probabilities ``stage1``."""
    lg = logit(stage1)
    rows, start = [], 0
    for i, k in enumerate(np.asarray(cue_index)):
        if k == 0:
            start = i
        rows.append(history_row(lg[start:i].tolist(), float(lg[i])))
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(HISTORY))


def previous_positions(cue_index: np.ndarray, thinking_position: np.ndarray) -> np.ndarray:
    """The previous cue's thinking position for cue rows in trace order (0 for a first cue)."""
    pos = np.asarray(thinking_position)
    prev = np.concatenate([[0], pos[:-1]]) if len(pos) else pos
    return np.where(np.asarray(cue_index) > 0, prev, 0)

"""The exit policy lynx runs, replayed offline: exit at the first cue whose score clears
the threshold. Calibration and evaluation both need its outcome for many thresholds at
once, so it is computed for a whole threshold grid in one vectorised pass per trace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lynx.errors import InvalidInput

#: what counts as a loss for the per-problem guarantee
RISKS = {
    "premature": "the early exit turned a right full-CoT answer wrong",
    "unsafe-exit": "the early exit's answer is wrong (whether or not the full CoT was right)",
    "answer-change": "the early exit's answer differs from the model's own full-CoT answer",
}
#: risks that need gold answers; ``answer-change`` needs none. Why it is enough: whenever the
#: full-CoT answer is right, an exit whose answer is wrong has changed the answer, so (for a
#: grader that is an equivalence: exact or normalised equality) premature <= answer-change
#: problem by problem, and controlling answer-change at alpha controls premature at alpha.
GOLD_RISKS = ("premature", "unsafe-exit")


@dataclass
class Traces:
    """Scored cue points grouped by trace, plus each trace's full-CoT outcome.

    ``offsets[i]:offsets[i+1]`` are trace ``i``'s cues, in order. Traces without any cue are
    included (they never exit, and they count in every rate).
    """

    problem_id: np.ndarray  # (T,) str
    sample_id: np.ndarray  # (T,) int
    offsets: np.ndarray  # (T + 1,)
    score: np.ndarray  # (N,) float64
    label: np.ndarray  # (N,) int: 1 = forced exit here is right
    position: np.ndarray  # (N,) thinking tokens up to and including the cue
    total: np.ndarray  # (T,) thinking tokens of the full trace
    final_correct: np.ndarray  # (T,) bool (False where unknown: no gold answer)
    agreement: np.ndarray | None = None  # (N,) int: 1 = forced exit here gives the trace's own final answer

    @property
    def n_traces(self) -> int:
        return len(self.total)

    def take(self, idx: np.ndarray) -> Traces:
        """The traces ``idx`` (in that order), with their cues."""
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        cue_idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)]) if len(idx) else np.zeros(0, int)
        return Traces(
            self.problem_id[idx],
            self.sample_id[idx],
            np.concatenate([[0], np.cumsum(ends - starts)]),
            self.score[cue_idx],
            self.label[cue_idx],
            self.position[cue_idx],
            self.total[idx],
            self.final_correct[idx],
            None if self.agreement is None else self.agreement[cue_idx],
        )

    def problems(self) -> tuple[np.ndarray, np.ndarray]:
        """(unique problem ids, index of each trace's problem)."""
        return np.unique(self.problem_id, return_inverse=True)


def exit_cues(traces: Traces, thresholds: np.ndarray) -> np.ndarray:
    """``(T, K)`` global index of the cue each trace exits at for each threshold, -1 = no exit."""
    thresholds = np.asarray(thresholds, float)
    if np.isnan(thresholds).any():
        raise InvalidInput("a threshold is NaN: it would silently never exit; give a number (inf = never exit)")
    out = np.full((traces.n_traces, len(thresholds)), -1, dtype=np.int64)
    for t in range(traces.n_traces):
        s, e = traces.offsets[t], traces.offsets[t + 1]
        if s == e:
            continue
        running = np.maximum.accumulate(traces.score[s:e])
        first = np.searchsorted(running, thresholds, side="left")  # first cue whose running max >= threshold
        out[t] = np.where(first < e - s, s + first, -1)
    return out


def trace_losses(traces: Traces, exits: np.ndarray, risk: str) -> np.ndarray:
    """``(T, K)`` 0/1 loss of each trace under each threshold's exit."""
    if risk not in RISKS:
        raise InvalidInput(f"unknown risk {risk!r}: choose one of {', '.join(RISKS)}")
    exited = exits >= 0
    wrong = np.zeros_like(exited)
    if risk == "answer-change":
        if traces.agreement is None:
            raise InvalidInput("risk 'answer-change' needs agreement labels (collect the data with this lynx)")
        wrong[exited] = traces.agreement[exits[exited]] == 0
        return wrong.astype(float)
    wrong[exited] = traces.label[exits[exited]] == 0
    if risk == "premature":
        wrong &= traces.final_correct[:, None]
    return wrong.astype(float)


def problem_losses(traces: Traces, losses: np.ndarray) -> np.ndarray:
    """Average the trace losses of each problem: ``(P, K)``. Problems, not traces, are the
    exchangeable units when a problem has several samples."""
    _, inv = traces.problems()
    sums = np.zeros((inv.max() + 1, losses.shape[1]))
    np.add.at(sums, inv, losses)
    return sums / np.bincount(inv)[:, None]


def outcomes(traces: Traces, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Per threshold: exit rate, token saving, accuracy, and both risks (rates over traces)."""
    exits = exit_cues(traces, thresholds)
    exited = exits >= 0
    used = np.where(exited, traces.position[np.maximum(exits, 0)], traces.total[:, None])
    correct = np.where(exited, traces.label[np.maximum(exits, 0)] == 1, traces.final_correct[:, None])
    total = max(1, traces.total.sum())
    out = {
        "exit_rate": exited.mean(0),
        "saving": 1.0 - used.sum(0) / total,
        "accuracy": correct.mean(0),
        "premature": trace_losses(traces, exits, "premature").mean(0),
        "unsafe-exit": trace_losses(traces, exits, "unsafe-exit").mean(0),
    }
    if traces.agreement is not None:
        out["answer-change"] = trace_losses(traces, exits, "answer-change").mean(0)
    return out


def threshold_grid(scores: np.ndarray, max_points: int = 2000) -> np.ndarray:
    """Candidate thresholds, most conservative first: +inf (never exit), then the distinct
    calibration scores in decreasing order (thinned to ``max_points`` quantiles)."""
    uniq = np.unique(scores)[::-1]
    if len(uniq) > max_points:
        uniq = np.unique(np.quantile(scores, np.linspace(0, 1, max_points)))[::-1]
    return np.concatenate([[np.inf], uniq])

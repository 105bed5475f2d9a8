"""The operating figure ``lynx train`` chooses a probe by: the thinking saved when conformal
risk control (CRC, per problem) sets the threshold at ``alpha`` on half of the problems,
measured on the other half, averaged over random halvings.

Why not AUC: lynx uses a probe through one number — the first cue whose score clears a
calibrated threshold — so what matters is how early that threshold lets traces exit while
the promise holds. A probe with the better AUC can save less (it may rank cues well across
traces but badly within one). The same replay as ``lynx calibrate`` (:mod:`lynx.calibrate.policy`).
"""

from __future__ import annotations

import numpy as np

from lynx.calibrate.policy import exit_cues, problem_losses, threshold_grid, trace_losses
from lynx.calibrate.procedures import crc_index
from lynx.calibrate.store import traces_from_rows


def operating_figure(data, scores: np.ndarray, traces: dict, alpha: float = 0.1, risk: str = "premature", n_splits: int = 100, seed: int = 0) -> dict:
    """Mean (and spread) of saving, risk and accuracy on the held-out halves. ``data``: the
    cue rows scored (:class:`~lynx.store.cue_data.CueData`); ``traces``: the trace rows of the
    same problems (every trace, with or without a cue)."""
    cues = {
        "problem_id": data.problem_id,
        "sample_id": data.sample_id,
        "cue_index": data.cue_index,
        "score": scores,
        "label": data.label,
        "thinking_position": data.thinking_position,
    }
    if data.agreement is not None:
        cues["agreement"] = data.agreement
    T = traces_from_rows(cues, traces)
    grid = threshold_grid(T.score)
    exits = exit_cues(T, grid)
    losses = trace_losses(T, exits, risk)
    exited = exits >= 0
    used = np.where(exited, T.position[np.maximum(exits, 0)], T.total[:, None]).astype(float)
    correct = np.where(exited, T.label[np.maximum(exits, 0)] == 1, T.final_correct[:, None]).astype(float)
    problems, inv = T.problems()
    P = len(problems)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_splits):
        cal = np.zeros(P, bool)
        cal[rng.permutation(P)[: P // 2]] = True
        k = crc_index(problem_losses(T.take(np.flatnonzero(cal[inv])), losses[cal[inv]]), alpha)
        test = ~cal[inv]
        if k is None:
            rows.append((0.0, 0.0, T.final_correct[test].mean()))
            continue
        rows.append((1 - used[test, k].sum() / max(1, T.total[test].sum()), losses[test, k].mean(), correct[test, k].mean()))
    r = np.asarray(rows)
    return {
        "alpha": alpha,
        "risk": risk,
        "n_splits": n_splits,
        "n_problems": int(P),
        "saving": float(r[:, 0].mean()),
        "saving_sd": float(r[:, 0].std()),
        "risk_measured": float(r[:, 1].mean()),
        "accuracy": float(r[:, 2].mean()),
        "full_cot_accuracy": float(T.final_correct.mean()),
    }

"""Probe quality figures and the reliability diagram (why: a calibrated threshold is only as
useful as the probe's ranking, and users should see both)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            err += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(err)


def binary_metrics(p: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {
        "auc": auc,
        "accuracy": float(((p >= 0.5) == (y == 1)).mean()),
        "brier": float(((p - y) ** 2).mean()),
        "ece": expected_calibration_error(p, y),
        "safe_share": float(y.mean()),
    }


def reliability_plot(p: np.ndarray, y: np.ndarray, path: Path, title: str, bins: int = 10) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.minimum((p * bins).astype(int), bins - 1)
    xs, ys, ns = [], [], []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            xs.append(p[sel].mean())
            ys.append(y[sel].mean())
            ns.append(int(sel.sum()))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.plot(xs, ys, marker="o")
    for x, v, n in zip(xs, ys, ns, strict=True):
        ax.annotate(str(n), (x, v), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="predicted P(safe)", ylabel="observed safe share", title=title, xlim=(0, 1), ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

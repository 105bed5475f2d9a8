"""The calibration report: per alpha, the threshold, what it does on calibration data, an
out-of-sample estimate by repeated half splits, and the promise in plain words; plus plots.

Why the half-split estimate: in-sample figures of a threshold chosen on the same data are
optimistic; re-calibrating on one half and measuring on the other (many times) shows what a
user should expect on new problems, next to the line the guarantee promises.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lynx.calibrate.conditions import Condition
from lynx.calibrate.policy import RISKS
from lynx.calibrate.procedures import crc_index, ltt_index, per_cue_threshold
from lynx.calibrate.store import Calibration

SETTINGS = (("per-problem", "crc"), ("per-problem", "ltt"), ("per-cue", None))
PLOT_ALPHAS = np.round(np.arange(0.02, 0.305, 0.02), 3)


def _grid_index(grid: np.ndarray, t: float) -> int:
    """Index of the grid threshold that behaves like ``t`` (last grid value >= t)."""
    return int(np.searchsorted(-grid, -t, side="right") - 1)


class Evaluator:
    """Outcomes of the exit policy on any subset of calibration traces, at any grid index."""

    def __init__(self, cal: Calibration, risk: str):
        self.cal, self.risk = cal, risk
        t = cal.traces
        self.grid, exits = cal.grid, cal.exits
        exited = exits >= 0
        self.used = np.where(exited, t.position[np.maximum(exits, 0)], t.total[:, None]).astype(float)
        self.exited = exited
        self.problem_ids, self.trace_problem = t.problems()
        self.plosses = cal.losses(risk)
        self.cue_trace = np.repeat(np.arange(t.n_traces), np.diff(t.offsets))

    def index(self, mode: str, method: str | None, alpha: float, delta: float, problems: np.ndarray) -> int | None:
        if mode == "per-cue":
            sel = np.isin(self.cue_trace, np.flatnonzero(np.isin(self.trace_problem, problems)))
            t = per_cue_threshold(self.cal.traces.score[sel], self.cal.traces.label[sel], alpha)
            return _grid_index(self.grid, t) if math.isfinite(t) else None
        losses = self.plosses[problems]
        return crc_index(losses, alpha) if method == "crc" else ltt_index(losses, alpha, delta)

    def outcome(self, idx: int | None, problems: np.ndarray) -> dict:
        idx = 0 if idx is None else idx
        tr = np.isin(self.trace_problem, problems)
        return {
            "risk": float(self.plosses[problems, idx].mean()),
            "saving": float(1.0 - self.used[tr, idx].sum() / max(1.0, self.cal.traces.total[tr].sum())),
            "exit_rate": float(self.exited[tr, idx].mean()),
        }


def held_out(cal: Calibration, alphas, risk: str, delta: float, n_splits: int = 100, seed: int = 0) -> dict:
    """Held-out risk and saving per setting and alpha over random half splits of problems: the
    means, the 90th percentile of the risk, and the share of splits whose risk exceeds alpha.

    Why the spread as well as the mean: CRC promises the risk *averaged over calibration draws*;
    one draw can land above alpha, and how often it does at this calibration size is what a user
    deciding how many problems to calibrate on needs to see (each half holds n/2 problems, so the
    spread is wider than a calibration on all n)."""
    ev = Evaluator(cal, risk)
    n = len(ev.problem_ids)
    rng = np.random.default_rng(seed)
    res: dict = {s: {a: {"risk": [], "saving": []} for a in alphas} for s in SETTINGS}
    for _ in range(n_splits):
        perm = rng.permutation(n)
        a_half, b_half = perm[: n // 2], perm[n // 2 :]
        for s in SETTINGS:
            for a in alphas:
                o = ev.outcome(ev.index(s[0], s[1], a, delta, a_half), b_half)
                res[s][a]["risk"].append(o["risk"])
                res[s][a]["saving"].append(o["saving"])
    return {s: {a: _split_summary(d, a) for a, d in per.items()} for s, per in res.items()}


def _split_summary(splits: dict, alpha: float) -> dict:
    """One setting's half splits at ``alpha``: mean risk and saving, the risk's 90th percentile,
    the share of splits whose risk exceeds alpha."""
    risk = np.asarray(splits["risk"])
    return {"risk": float(risk.mean()), "saving": float(np.mean(splits["saving"])), "risk_p90": float(np.quantile(risk, 0.9)), "above_alpha": float(np.mean(risk > alpha))}


def write_report(cal: Calibration, folder: Path, alphas: list[float], n_splits: int = 100) -> list[dict]:
    """Write ``calibration_report.md`` and the plots; return one row per alpha (default settings)."""
    meta = cal.meta
    risk, delta = meta["risk"], meta["delta"]
    ev = Evaluator(cal, risk)
    allp = np.arange(len(ev.problem_ids))
    est = held_out(cal, sorted(set(alphas) | set(PLOT_ALPHAS.tolist())), risk, delta, n_splits)
    rows = []
    for a in alphas:
        for mode, method in SETTINGS:
            d = cal.threshold(a, mode=mode, method=method)
            o = ev.outcome(ev.index(mode, method, a, delta, allp), allp)
            h = est[(mode, method)][a]
            rows.append(
                {
                    "alpha": a,
                    "mode": mode,
                    "method": method,
                    "threshold": d.threshold,
                    "attainable": d.attainable,
                    "exit_rate": o["exit_rate"],
                    "saving": o["saving"],
                    "risk": o["risk"],
                    "held_out_risk": h["risk"],
                    "held_out_saving": h["saving"],
                    "held_out_risk_p90": h["risk_p90"],
                    "held_out_above_alpha": h["above_alpha"],
                    "promise": d.promise,
                    "default": mode == meta["mode"] and (mode == "per-cue" or method == meta["method"]),
                }
            )
    _plots(est, folder, risk)
    fmt = lambda t: "never exit" if math.isinf(t) else f"{t:.4f}"  # noqa: E731
    lines = [
        f"# Calibration report: `{meta['model']}`",
        "",
        f"Calibration data: `{meta['data']['dataset']}` ({meta['data']['folder']}), {meta['n_problems']} problems "
        f"({meta.get('n_problems_with_cues', meta['n_problems'])} with a cue), "
        f"{meta['n_traces']} traces, {meta['n_cues']} cue points ({meta['safe_share']:.1%} safe). "
        + (
            f"Full-CoT accuracy {meta['full_cot_accuracy']:.3f}."
            if meta.get("full_cot_accuracy") is not None
            else "Labels by agreement with each trace's own final answer (no gold answers)."
        ),
        "",
        f"Condition: {Condition.of(meta).describe()} (the promise holds for requests under this condition).",
        "",
        f"Default guarantee: **{meta['mode']}**" + (f", method **{meta['method']}**, risk **{risk}** ({risk} = {RISKS[risk]})" if meta["mode"] == "per-problem" else ""),
        "",
        f"In-sample figures use all calibration problems; held-out figures are means over {n_splits} random half splits (calibrate on one half, measure on the other).",
        "",
        "| alpha | mode | method | threshold | exit rate | token saving | risk | held-out risk (mean / p90) | half splits above alpha | held-out saving |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " **(default)**" if r["default"] else ""
        lines.append(
            f"| {r['alpha']:g} | {r['mode']}{mark} | {r['method'] or '-'} | {fmt(r['threshold'])} | {r['exit_rate']:.3f} | "
            f"{r['saving']:.1%} | {r['risk']:.3f} | {r['held_out_risk']:.3f} / {r['held_out_risk_p90']:.3f} | {r['held_out_above_alpha']:.0%} | {r['held_out_saving']:.1%} |"
        )
    lines += [
        "",
        "Risk = share of problems where " + RISKS[risk] + ".",
        "",
        "CRC's promise is an average over calibration draws: a single draw can sit above alpha on new problems. "
        "'Half splits above alpha' is how often that happened here with half the problems; many, or a p90 well "
        f"above alpha, means {meta['n_problems']} calibration problems leave the promise loose for this model "
        "(calibrate on more, or use LTT, which holds with probability 1 - delta per draw).",
        "",
        "## The promise, per alpha (default guarantee)",
        "",
    ]
    for r in rows:
        if r["default"]:
            lines.append(f"- alpha = {r['alpha']:g}: {r['promise']}.")
    lines += ["", "Plots: `risk_vs_alpha.png`, `savings_vs_alpha.png`.", ""]
    (folder / "calibration_report.md").write_text("\n".join(lines))
    return rows


def _plots(est: dict, folder: Path, risk: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = PLOT_ALPHAS
    for what, fname, ylabel in (("risk", "risk_vs_alpha.png", f"held-out {risk} rate"), ("saving", "savings_vs_alpha.png", "held-out thinking-token saving")):
        fig, ax = plt.subplots(figsize=(5, 4))
        for (mode, method), per in est.items():
            ax.plot(xs, [per[float(a)][what] for a in xs], marker=".", label=f"{mode} {method or ''}".strip())
        if what == "risk":
            ax.plot(xs, xs, ls="--", c="grey", label="alpha")
        ax.set(xlabel="alpha", ylabel=ylabel)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / fname, dpi=120)
        plt.close(fig)

"""From per-problem samples to the results table, the Pareto plot and the acceptance checks.

Every figure is paired with vanilla on the same problems and seeds: the saving is relative
to vanilla's mean thinking tokens, the *premature-exit rate* is the share of problems the
method answered wrong while vanilla answered them right (the risk lynx's default
calibration controls), and the accuracy difference comes with a paired 95% interval.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

Z95 = 1.959963984540054


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + Z95**2 / n
    mid = (p + Z95**2 / (2 * n)) / den
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / den
    return (mid - half, mid + half)


def changed_answers(samples, base, graders) -> np.ndarray:
    """Per problem: does the method's answer differ from vanilla's own (same problem, same
    seed), by the problem's grader? Two missing answers are the same answer."""
    out = []
    for s, b, grade in zip(samples, base, graders, strict=True):
        same = s.answer == b.answer or (s.answer is not None and b.answer is not None and grade(s.answer, b.answer))
        out.append(not same)
    return np.asarray(out, dtype=float)


def row(method: str, setting: str, samples, base, seconds: float, alpha: float | None = None, graders=None) -> dict:
    """One table row: ``samples`` of a method, ``base`` = vanilla's samples on the same problems;
    ``graders`` (one per problem) compare answers for the answer-change rate."""
    n = len(samples)
    correct = np.array([s.correct for s in samples], dtype=float)
    base_correct = np.array([s.correct for s in base], dtype=float)
    think = np.array([s.thinking_tokens for s in samples], dtype=float)
    base_think = float(np.mean([s.thinking_tokens for s in base]))
    diff = correct - base_correct
    half = Z95 * diff.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
    lo, hi = wilson(int(correct.sum()), n)
    harmed = (base_correct == 1) & (correct == 0)
    plo, phi = wilson(int(harmed.sum()), n)  # the test set's own sampling error, beside the promise
    return {
        "method": method,
        "setting": setting,
        "alpha": alpha,
        "n": n,
        "accuracy": float(correct.mean()),
        "accuracy_ci_low": lo,
        "accuracy_ci_high": hi,
        "accuracy_vs_vanilla": float(diff.mean()),
        "accuracy_vs_vanilla_ci": float(half),
        "mean_thinking_tokens": float(think.mean()),
        "median_thinking_tokens": float(np.median(think)),
        "saving": 1.0 - float(think.mean()) / base_think if base_think > 0 else 0.0,
        "exit_rate": float(np.mean([s.exited for s in samples])),
        "premature_exit_rate": float(harmed.mean()),
        "premature_ci_low": plo,
        "premature_ci_high": phi,
        "answer_change_rate": float(changed_answers(samples, base, graders).mean()) if graders is not None else float("nan"),
        "extra_tokens": float(np.mean([s.extra_tokens for s in samples])),
        "seconds": round(seconds, 2),
    }


def regret(samples, oracle) -> dict:
    """The oracle's accuracy *at the tokens* of an exit policy's run (lynx's, or the context-only
    baseline's), and the policy's regret against it: that accuracy minus the policy's accuracy.

    ``samples``: the policy's run; ``oracle``: the oracle's run (:func:`lynx.evaluate.methods.oracle`)
    on the same problems, in the same order. Per problem, the oracle *at the policy's tokens* may
    answer only from what the policy had read when it stopped thinking: it is right when

    * a cue of the trace at or before that point has a right forced answer (the oracle's greedy
      answer after the exit string): where the policy exited, a cue whose exit would have cost at
      most the policy's thinking tokens on that problem (the oracle's first right cue, exited at
      ``oracle[i].thinking_tokens``, is at most ``samples[i].thinking_tokens``); where it did not
      exit, any cue of the full trace, or the full trace's own answer (``oracle[i].correct``); or
    * the policy's own answer is right (the answer at the end of that span: the answer it wrote
      after its exit, or the trace's own where it did not exit).

    So the regret is at least 0 problem by problem: it is the share of problems the policy
    answered wrong although a cue it had already read (or, where it did not exit, the full trace)
    gave the right answer. Counts in thinking tokens compare like with like where both runs sample
    the same trace: the oracle's cues are vanilla's trace's, and lynx (and the context-only
    baseline) runs inside vanilla's own seeded request and exits inside that trace (the same
    seed per problem; vLLM's token-for-token test in tests/test_eval.py; measured on transformers
    too), so an exit at the same cue has the same thinking tokens in both. Where the traces differ
    (another seed, another engine) the figure is the oracle on *its* trace at the policy's token
    count for that problem."""
    right = [s.correct or (o.correct and (not s.exited or (o.exited and o.thinking_tokens <= s.thinking_tokens))) for s, o in zip(samples, oracle, strict=True)]
    at = float(np.mean(right)) if right else float("nan")
    acc = float(np.mean([s.correct for s in samples])) if samples else float("nan")
    return {"oracle_at_lynx_tokens": at, "regret": at - acc}


def to_markdown(df: pd.DataFrame) -> str:
    lines = [
        "| method | setting | accuracy (95% CI) | vs vanilla | mean / median thinking | saving | exit rate | premature (promised) | answer changed | "
        "oracle at its tokens (regret) | probe tokens | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        promised = f" (<= {r.alpha:g})" if isinstance(r.alpha, float) and not math.isnan(r.alpha) else ""
        at, reg = getattr(r, "oracle_at_lynx_tokens", float("nan")), getattr(r, "regret", float("nan"))
        oracle_at = "-" if at is None or math.isnan(at) else f"{at:.3f} ({reg:+.3f})"
        lines.append(
            f"| {r.method} | {r.setting} | {r.accuracy:.3f} ({r.accuracy_ci_low:.3f}-{r.accuracy_ci_high:.3f}) | "
            f"{r.accuracy_vs_vanilla:+.3f} ± {r.accuracy_vs_vanilla_ci:.3f} | {r.mean_thinking_tokens:.1f} / {r.median_thinking_tokens:.0f} | "
            f"{r.saving:.1%} | {r.exit_rate:.2f} | {r.premature_exit_rate:.3f}{promised} | {r.answer_change_rate:.3f} | {oracle_at} | "
            f"{r.extra_tokens:.1f} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def lynx_curve(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """lynx's (tokens, accuracy) points plus vanilla (the alpha -> 0 end), sorted by tokens."""
    pts = df[df.method.isin(["lynx", "vanilla"])][["mean_thinking_tokens", "accuracy"]].to_numpy()
    pts = pts[np.argsort(pts[:, 0])]
    return pts[:, 0], pts[:, 1]


def pareto_comparison(df: pd.DataFrame) -> list[dict]:
    """For each DEER / Dynasor / budget point: lynx's accuracy at the same thinking tokens
    (linear interpolation between lynx's points), or "outside" when lynx has no point that cheap."""
    xs, ys = lynx_curve(df)
    out = []
    for r in df[df.method.isin(["deer", "dynasor", "budget"])].itertuples():
        t = r.mean_thinking_tokens
        if len(xs) == 0 or t < xs[0] or t > xs[-1]:
            out.append({"method": r.method, "setting": r.setting, "tokens": t, "accuracy": r.accuracy, "lynx_accuracy": None, "delta": None})
            continue
        la = float(np.interp(t, xs, ys))
        out.append({"method": r.method, "setting": r.setting, "tokens": t, "accuracy": r.accuracy, "lynx_accuracy": la, "delta": la - r.accuracy})
    return out


def pareto_markdown(cmp: list[dict]) -> str:
    lines = ["| baseline | setting | thinking tokens | its accuracy | lynx at equal tokens | lynx - baseline |", "|---|---|---|---|---|---|"]
    for c in cmp:
        if c["lynx_accuracy"] is None:
            lines.append(f"| {c['method']} | {c['setting']} | {c['tokens']:.1f} | {c['accuracy']:.3f} | outside lynx's range | - |")
        else:
            lines.append(f"| {c['method']} | {c['setting']} | {c['tokens']:.1f} | {c['accuracy']:.3f} | {c['lynx_accuracy']:.3f} | {c['delta']:+.3f} |")
    return "\n".join(lines)


def pareto_plot(df: pd.DataFrame, path: Path, title: str) -> None:
    """Accuracy vs mean thinking tokens, one line per method family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    style = {"lynx": ("tab:red", "o-"), "context-only": ("tab:purple", "v-."), "deer": ("tab:blue", "s--"), "dynasor": ("tab:green", "^--"), "budget": ("tab:gray", "d:")}
    for method, (color, fmt) in style.items():
        part = df[df.method == method].sort_values("mean_thinking_tokens")
        if len(part):
            ax.plot(part.mean_thinking_tokens, part.accuracy, fmt, color=color, label=method)
            for r in part.itertuples():
                ax.annotate(r.setting, (r.mean_thinking_tokens, r.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for method, marker in (("vanilla", "*"), ("oracle", "P")):
        part = df[df.method == method]
        if len(part):
            ax.plot(part.mean_thinking_tokens, part.accuracy, marker, color="black", markersize=11, label=method)
    ax.set_xlabel("mean thinking tokens")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def context_comparison(df: pd.DataFrame, samples: dict | None = None, base=None) -> list[dict]:
    """lynx against the context-only baseline at each alpha both ran: what the hidden state adds.

    With the per-problem ``samples`` (``(method, alpha) -> samples``, problems in the same order)
    and vanilla's ``base``, each difference comes with a paired 95% interval over problems
    (half-width): both policies ran on the same problems and seeds, so the interval is about
    the two scorers, not about which problems were drawn."""
    out = []
    for r in df[df.method == "lynx"].itertuples():
        c = df[(df.method == "context-only") & np.isclose(df.alpha.astype(float), float(r.alpha))]
        if len(c):
            c = c.iloc[0]
            cmp = {
                "alpha": float(r.alpha),
                "lynx_saving": r.saving,
                "context_saving": float(c.saving),
                "lynx_accuracy": r.accuracy,
                "context_accuracy": float(c.accuracy),
                "lynx_premature": r.premature_exit_rate,
                "context_premature": float(c.premature_exit_rate),
                "saving_delta": r.saving - float(c.saving),
                "accuracy_delta": r.accuracy - float(c.accuracy),
                "saving_delta_ci": float("nan"),
                "accuracy_delta_ci": float("nan"),
            }
            ly, co = _samples_at(samples, "lynx", r.alpha), _samples_at(samples, "context-only", r.alpha)
            if ly is not None and co is not None and base and len(ly) == len(co) > 1:
                base_think = float(np.mean([s.thinking_tokens for s in base]))
                d_think = np.array([b.thinking_tokens - a.thinking_tokens for a, b in zip(ly, co, strict=True)], float) / max(base_think, 1e-12)
                d_acc = np.array([float(a.correct) - float(b.correct) for a, b in zip(ly, co, strict=True)])
                cmp["saving_delta_ci"] = float(Z95 * d_think.std(ddof=1) / math.sqrt(len(ly)))
                cmp["accuracy_delta_ci"] = float(Z95 * d_acc.std(ddof=1) / math.sqrt(len(ly)))
            out.append(cmp)
    return out


def _samples_at(samples: dict | None, method: str, alpha) -> list | None:
    if not samples:
        return None
    return next((v for (m, a), v in samples.items() if m == method and a is not None and np.isclose(float(a), float(alpha))), None)


def _pm(delta: float, half: float, fmt: str) -> str:
    return format(delta, fmt) + ("" if math.isnan(half) else f" ± {format(half, fmt.lstrip('+'))}")


def context_markdown(cmp: list[dict]) -> str:
    lines = [
        "| alpha | lynx saving | context-only saving | lynx - context (paired 95%) | lynx accuracy | context-only accuracy | accuracy lynx - context | lynx / context premature |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cmp:
        lines.append(
            f"| {c['alpha']:g} | {c['lynx_saving']:.1%} | {c['context_saving']:.1%} | {_pm(c['saving_delta'], c['saving_delta_ci'], '+.1%')} | "
            f"{c['lynx_accuracy']:.3f} | {c['context_accuracy']:.3f} | {_pm(c['accuracy_delta'], c['accuracy_delta_ci'], '+.3f')} | "
            f"{c['lynx_premature']:.3f} / {c['context_premature']:.3f} |"
        )
    return "\n".join(lines)


def _interval(r: pd.Series) -> str:
    """`` (95% lo-hi, n N)`` for a row's premature rate: how far the test set alone can put it from the promise."""
    if pd.isna(r.get("premature_ci_low", float("nan"))):
        return ""
    return f" (95% {r['premature_ci_low']:.3f}-{r['premature_ci_high']:.3f}, n {int(r['n'])})"


def acceptance(df: pd.DataFrame, alpha: float = 0.1, context: list[dict] | None = None) -> list[tuple[str, bool, str]]:
    """The issue's acceptance figures for lynx at ``alpha``: (check, passed, measured).
    ``context``: :func:`context_comparison`'s rows, for the paired interval of the difference."""
    v = df[df.method == "vanilla"].iloc[0]
    ly = df[(df.method == "lynx") & np.isclose(df.alpha.astype(float), alpha)]
    if not len(ly):
        return []
    ly = ly.iloc[0]
    checks = [
        (f"premature-exit rate <= {alpha}", ly.premature_exit_rate <= alpha, f"{ly.premature_exit_rate:.3f}" + _interval(ly)),
        (
            "accuracy >= vanilla - 0.1",
            ly.accuracy >= v.accuracy - 0.1,
            f"{ly.accuracy:.3f} vs {v.accuracy:.3f} (diff {ly.accuracy_vs_vanilla:+.3f} ± {ly.accuracy_vs_vanilla_ci:.3f})",
        ),
        ("thinking-token saving >= 30%", ly.saving >= 0.3, f"{ly.saving:.1%}"),
    ]
    orc = df[df.method == "oracle"]
    if len(orc):
        o = orc.iloc[0]
        share = ly.saving / o.saving if o.saving > 0 else float("nan")
        checks.append(("saving >= 70% of the oracle's", bool(share >= 0.7), f"{share:.1%} ({ly.saving:.1%} of {o.saving:.1%})"))
    ctx = df[(df.method == "context-only") & np.isclose(df.alpha.astype(float), alpha)]
    if len(ctx):
        c = ctx.iloc[0]
        half = next((x["saving_delta_ci"] for x in context or [] if np.isclose(x["alpha"], alpha)), float("nan"))
        checks.append(
            (
                "saving >= the context-only baseline's (the hidden state adds something)",
                bool(ly.saving >= c.saving),
                f"{ly.saving:.1%} vs {c.saving:.1%}, difference {_pm(ly.saving - c.saving, half, '+.1%')} (premature {ly.premature_exit_rate:.3f} vs {c.premature_exit_rate:.3f})",
            )
        )
    return checks

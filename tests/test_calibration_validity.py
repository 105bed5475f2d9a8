"""The guarantees hold empirically, over hundreds of random calibration draws.

Synthetic traces have a known ground truth: every repetition draws a fresh calibration set
from the generator and measures the chosen threshold's *population* risk on a fixed sample
of 200k traces. Tolerances: a mean over independent repetitions may exceed its bound by at
most z = 3.09 (one-sided 0.1%) standard errors; a violation count is compared with the
0.999 quantile of Binomial(repetitions, delta). The same checks also require the procedure
to be *useful* (risk not far below alpha), so a method that never exits would fail.
"""

import math

import numpy as np
import pytest
from scipy.stats import binom

from lynx.calibrate.policy import Traces
from lynx.calibrate.store import Calibration

Z = 3.09
M = 8  # cue slots per synthetic trace


def synthetic(n: int, rng: np.random.Generator) -> dict:
    """Traces with 0-8 cues; the answer settles at a random cue (or never, for traces whose
    full CoT ends wrong); scores are noisy but informative; labels follow the truth."""
    n_cues = rng.integers(0, M + 1, size=n)
    final_correct = rng.random(n) < 0.75
    settle = rng.geometric(0.3, size=n) - 1  # first safe cue index
    k = np.arange(M)[None, :]
    label = (k >= settle[:, None]) & final_correct[:, None]
    label |= (~final_correct[:, None]) & (rng.random((n, M)) < 0.1)  # lucky forced exits on wrong traces
    logit = 2.2 * (label - 0.5) + 0.15 * k + rng.normal(scale=1.1, size=(n, M))
    score = 1 / (1 + np.exp(-logit))
    exists = k < n_cues[:, None]
    position = (k + 1) * 20
    return {"n_cues": n_cues, "final_correct": final_correct, "label": label.astype(int), "score": score, "exists": exists, "position": position, "total": np.full(n, (M + 2) * 20)}


def to_traces(s: dict) -> Traces:
    n = len(s["n_cues"])
    e = s["exists"]
    return Traces(
        problem_id=np.array([f"p{i:06d}" for i in range(n)]),
        sample_id=np.zeros(n, int),
        offsets=np.concatenate([[0], np.cumsum(s["n_cues"])]),
        score=s["score"][e],
        label=s["label"][e],
        position=np.broadcast_to(s["position"], e.shape)[e],
        total=s["total"],
        final_correct=s["final_correct"],
    )


def population_outcome(pop: dict, threshold: float) -> dict:
    """Exact (200k-trace) premature-exit rate and unsafe-cue exit rate at ``threshold``."""
    passing = pop["exists"] & (pop["score"] >= threshold)
    exited = passing.any(1)
    first = np.argmax(passing, axis=1)
    exit_label = pop["label"][np.arange(len(first)), first]
    premature = exited & (exit_label == 0) & pop["final_correct"]
    unsafe = pop["exists"] & (pop["label"] == 0)
    return {"premature": premature.mean(), "per_cue": (passing & unsafe).sum() / unsafe.sum(), "exit_rate": exited.mean()}


@pytest.fixture(scope="module")
def population():
    return synthetic(200_000, np.random.default_rng(12345))


def _repeat(population, n_cal: int, reps: int, alpha: float, **kw):
    rng = np.random.default_rng(2024)
    out = []
    for _ in range(reps):
        cal = Calibration(to_traces(synthetic(n_cal, rng)), {})
        d = cal.threshold(alpha, **kw)
        out.append(population_outcome(population, d.threshold) if math.isfinite(d.threshold) else {"premature": 0.0, "per_cue": 0.0, "exit_rate": 0.0})
    return out


@pytest.mark.slow  # hundreds of random splits (~5 s each)
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_crc_per_problem_expected_risk(population, alpha):
    res = _repeat(population, n_cal=300, reps=300, alpha=alpha, mode="per-problem", method="crc", risk="premature")
    risk = np.array([r["premature"] for r in res])
    assert risk.mean() <= alpha + Z * risk.std(ddof=1) / math.sqrt(len(risk))
    assert risk.mean() >= 0.6 * alpha  # tight, not vacuous
    assert np.mean([r["exit_rate"] for r in res]) > 0.2


@pytest.mark.slow  # hundreds of random splits (~6 s each)
@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_ltt_violation_frequency(population, alpha):
    delta = 0.1
    res = _repeat(population, n_cal=300, reps=300, alpha=alpha, mode="per-problem", method="ltt", risk="premature", delta=delta)
    violations = sum(r["premature"] > alpha for r in res)
    assert violations <= binom.ppf(0.999, len(res), delta)
    assert np.mean([r["premature"] for r in res]) >= 0.4 * alpha  # not vacuous


@pytest.mark.slow  # hundreds of random splits (~4 s each)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_per_cue_unsafe_exit_probability(population, alpha):
    res = _repeat(population, n_cal=200, reps=300, alpha=alpha, mode="per-cue")
    rate = np.array([r["per_cue"] for r in res])
    assert rate.mean() <= alpha + Z * rate.std(ddof=1) / math.sqrt(len(rate))
    assert rate.mean() >= 0.5 * alpha


def test_unattainable_alpha_never_exits():
    cal = Calibration(to_traces(synthetic(15, np.random.default_rng(0))), {})
    d = cal.threshold(0.05, mode="per-problem", method="crc")  # 1/(n+1) > alpha: nothing can be certified
    assert not d.attainable and math.isinf(d.threshold) and "never exits" in d.promise
    assert not cal.threshold(0.01, mode="per-cue").attainable


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_alpha_outside_unit_interval_is_refused(alpha):
    cal = Calibration(to_traces(synthetic(50, np.random.default_rng(0))), {})
    with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
        cal.threshold(alpha)


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_guarantee_on_organism_data(organism_probe, organism_collections, alpha):
    """Re-split real organism calibration traces 200 times: calibrate on one half, measure the
    other. CRC's and LTT's expected risk and the per-cue exit rate of unsafe cues stay within alpha, and LTT's
    violation frequency stays within its delta."""
    from lynx.calibrate import load_calibration
    from lynx.calibrate.pipeline import calibrate
    from lynx.calibrate.report import Evaluator

    calibrate(organism_probe, organism_collections["calibration"], alphas=[alpha], n_splits=5)
    cal = load_calibration(organism_probe)
    ev = Evaluator(cal, "premature")
    n = len(ev.problem_ids)
    rng = np.random.default_rng(7)
    crc, ltt, per_cue = [], [], []
    unsafe_trace = ev.cue_trace[cal.traces.label == 0]
    unsafe_score = cal.traces.score[cal.traces.label == 0]
    for _ in range(200):
        perm = rng.permutation(n)
        a, b = perm[: n // 2], perm[n // 2 :]
        crc.append(ev.outcome(ev.index("per-problem", "crc", alpha, 0.1, a), b)["risk"])
        ltt.append(ev.outcome(ev.index("per-problem", "ltt", alpha, 0.1, a), b)["risk"])
        idx = ev.index("per-cue", None, alpha, 0.1, a)
        t = ev.grid[idx] if idx is not None else np.inf
        in_b = np.isin(ev.trace_problem[unsafe_trace], b)
        per_cue.append(float((unsafe_score[in_b] >= t).mean()))
    for vals in (np.array(crc), np.array(ltt), np.array(per_cue)):
        assert vals.mean() <= alpha + Z * vals.std(ddof=1) / math.sqrt(len(vals))
    # LTT: the share of splits whose held-out risk exceeds alpha stays within what delta = 0.1 allows, plus the
    # held-out half's own sampling noise (a binomial bound on the half's risk at level alpha)
    from scipy.stats import binom

    m = n - n // 2
    noisy = 1 - binom.cdf(math.floor(alpha * m), m, alpha)  # P(half risk > alpha | true risk = alpha)
    assert sum(r > alpha for r in ltt) <= binom.ppf(0.999, len(ltt), min(1.0, 0.1 + noisy))


SHIPPED = __import__("lynx.models").models.ORGANISM_PROBE_DIR


@pytest.mark.slow  # random splits of the shipped traces (~3 s each)
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_answer_change_guarantee_on_organism_data_at_temperature_1(alpha):
    """The shipped probe's T = 1.0 condition (recalibrated from prompts without answers, agreement
    labels) re-split 300 times: calibrate answer-change on one half, measure the other. CRC's mean
    held-out risk stays within alpha, and LTT's violation frequency within delta (plus the held-out
    half's own noise)."""
    from scipy.stats import binom

    from lynx.calibrate import load_calibration
    from lynx.calibrate.report import Evaluator

    cal = load_calibration(SHIPPED, "T1")
    assert cal.labels == "agreement" and cal.meta["risk"] == "answer-change"
    ev = Evaluator(cal, "answer-change")
    n = len(ev.problem_ids)
    rng = np.random.default_rng(11)
    crc, ltt = [], []
    for _ in range(300):
        perm = rng.permutation(n)
        a, b = perm[: n // 2], perm[n // 2 :]
        crc.append(ev.outcome(ev.index("per-problem", "crc", alpha, 0.1, a), b)["risk"])
        ltt.append(ev.outcome(ev.index("per-problem", "ltt", alpha, 0.1, a), b)["risk"])
    crc = np.array(crc)
    assert crc.mean() <= alpha + Z * crc.std(ddof=1) / math.sqrt(len(crc))
    assert crc.mean() >= alpha / 3  # useful, not "never exit"
    m = n - n // 2
    noisy = 1 - binom.cdf(math.floor(alpha * m), m, alpha)
    assert sum(r > alpha for r in ltt) <= binom.ppf(0.999, len(ltt), min(1.0, 0.1 + noisy))


@pytest.mark.slow  # random splits (~2 s each)
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_answer_change_calibration_controls_premature_exits(alpha):
    """On the shipped T = 0.6 condition (gold and agreement labels of the same forced answers):
    thresholds calibrated for answer-change on one half keep the *premature* rate of the other
    half within alpha, over 300 resplits — the promise without gold answers."""
    from lynx.calibrate import load_calibration
    from lynx.calibrate.report import Evaluator

    cal = load_calibration(SHIPPED, "T0.6")
    by_change, premature = Evaluator(cal, "answer-change"), Evaluator(cal, "premature")
    n = len(by_change.problem_ids)
    rng = np.random.default_rng(12)
    risks = []
    for _ in range(300):
        perm = rng.permutation(n)
        a, b = perm[: n // 2], perm[n // 2 :]
        risks.append(premature.outcome(by_change.index("per-problem", "crc", alpha, 0.1, a), b)["risk"])
    risks = np.array(risks)
    assert risks.mean() <= alpha + Z * risks.std(ddof=1) / math.sqrt(len(risks))

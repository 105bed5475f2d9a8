"""Label-free calibration: agreement labels (a forced answer equal to the same trace's own final
answer) and the answer-change risk, which needs no gold answers and bounds the premature-exit
risk from above problem by problem."""

import json
import math

import numpy as np
import pytest

from lynx.calibrate.policy import Traces, exit_cues, problem_losses, threshold_grid, trace_losses
from lynx.calibrate.store import Calibration
from lynx.errors import InvalidInput
from lynx.models import ORGANISM_PROBE_DIR

PROBE = ORGANISM_PROBE_DIR


def _synthetic(n: int, seed: int = 0) -> Traces:
    """Traces whose final answer is right or wrong; a forced answer is right from a random cue on
    (right traces), agrees with the final answer when it equals it — wrong answers may agree
    with a wrong final answer, or not."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 7, size=n)
    final_correct = rng.random(n) < 0.7
    label, agreement, score = [], [], []
    for c, right in zip(counts, final_correct, strict=True):
        settle = rng.integers(0, 7)
        for k in range(c):
            if right:
                ok = k >= settle
                label.append(int(ok))
                agreement.append(int(ok))  # right final answer: agreeing = being right
            else:
                label.append(int(rng.random() < 0.05))
                agreement.append(int(k >= settle))  # the wrong final answer settles too
            score.append(float(1 / (1 + math.exp(-(2.0 * (agreement[-1] - 0.5) + rng.normal())))))
    return Traces(
        np.array([f"p{i}" for i in range(n)]),
        np.zeros(n, int),
        np.concatenate([[0], np.cumsum(counts)]),
        np.array(score),
        np.array(label),
        np.arange(len(score)) % 50 + 1,
        np.full(n, 60),
        final_correct,
        np.array(agreement),
    )


def _premature_le_answer_change(traces: Traces) -> None:
    exits = exit_cues(traces, threshold_grid(traces.score))
    premature, changed = trace_losses(traces, exits, "premature"), trace_losses(traces, exits, "answer-change")
    assert (premature <= changed).all()
    assert (problem_losses(traces, premature) <= problem_losses(traces, changed)).all()
    assert changed.sum() > premature.sum()  # it is a strict upper bound on this data: wrong traces change answers too


def test_answer_change_bounds_premature_problem_by_problem():
    _premature_le_answer_change(_synthetic(400))


def test_answer_change_bounds_premature_on_real_organism_traces():
    """The shipped probe's T = 0.6 calibration carries gold and agreement labels of the same
    forced answers: every premature exit there is an answer change."""
    from lynx.calibrate import load_calibration

    cal = load_calibration(PROBE, "T0.6")
    assert cal.traces.agreement is not None and cal.labels == "gold"
    _premature_le_answer_change(cal.traces)


def test_controlling_answer_change_controls_premature():
    cal = Calibration(_synthetic(600, seed=1), {"mode": "per-problem", "method": "crc", "risk": "answer-change", "labels": "gold"})
    for alpha in (0.05, 0.1, 0.2):
        via_change, direct = cal.threshold(alpha, risk="answer-change"), cal.threshold(alpha, risk="premature")
        assert via_change.threshold >= direct.threshold  # more conservative, never less


def test_gold_risks_are_refused_without_gold_and_answer_change_without_agreement():
    t = _synthetic(100)
    agreement_only = Calibration(t, {"risk": "answer-change", "labels": "agreement"})
    for risk in ("premature", "unsafe-exit"):
        with pytest.raises(InvalidInput, match="needs gold answers"):
            agreement_only.threshold(0.1, risk=risk)
    assert math.isfinite(agreement_only.threshold(0.2).threshold)
    old = Calibration(Traces(*[getattr(t, f) for f in ("problem_id", "sample_id", "offsets", "score", "label", "position", "total", "final_correct")]), {"risk": "premature"})
    with pytest.raises(InvalidInput, match="agreement labels"):
        old.threshold(0.1, risk="answer-change")


def test_labels_follow_the_dataset():
    from lynx.collect.pipeline import resolve_labels
    from lynx.datasets import Record

    gold = [Record("a", "q", "1", "math"), Record("b", "q", "2", "math")]
    bare = [Record("a", "q", None, "math"), Record("b", "q", None, "math")]
    assert resolve_labels("auto", gold, "d") == "gold" and resolve_labels("auto", bare, "d") == "agreement"
    assert resolve_labels("agreement", gold, "d") == "agreement"
    with pytest.raises(InvalidInput, match="no answer field"):
        resolve_labels("gold", bare, "d")
    with pytest.raises(InvalidInput, match="1 of 2 problems have no answer"):
        resolve_labels("auto", [gold[0], bare[1]], "d")
    with pytest.raises(InvalidInput, match="--labels"):
        resolve_labels("silver", gold, "d")


def test_a_prompt_file_without_answers_loads_as_bare_prompts(tmp_path):
    from lynx.datasets import load

    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"id": "x1", "prompt": "Compute 1 + 2."}) + "\n" + json.dumps({"prompt": "Compute 2 + 2."}) + "\n")
    recs = load(str(path), require_answer=False)
    assert [(r.id, r.answer) for r in recs] == [("x1", None), ("1", None)]
    with pytest.raises(InvalidInput, match="no answer field"):
        load(str(path))  # evaluation needs gold answers: still refused there


@pytest.mark.slow  # a real collection (~35 s)
def test_collect_labels_an_answerless_dataset_by_agreement(tmp_path):
    """A JSONL of prompts without answers: agreement labels, gold and correctness null, and the
    label column equals the agreement column; the same problems with answers carry both."""
    from lynx.collect.pipeline import CollectConfig, collect
    from lynx.organism.problems import sample_problems
    from lynx.store.cue_data import load_cue_data
    from lynx.store.manifest import read_manifest
    from lynx.store.shards import read_folder

    problems = sample_problems("calibration", 12, seed=3)
    bare, gold = tmp_path / "bare.jsonl", tmp_path / "gold.jsonl"
    bare.write_text("".join(json.dumps({"id": p.problem_id, "prompt": p.text}) + "\n" for p in problems))
    gold.write_text("".join(json.dumps({"id": p.problem_id, "prompt": p.text, "answer": str(p.answer)}) + "\n" for p in problems))
    for src, out in ((bare, tmp_path / "a"), (gold, tmp_path / "g")):
        collect(CollectConfig(model="organism", dataset=str(src), out=out, answer_tokens=16, temperature=1.0))
    assert read_manifest(tmp_path / "a")["labels"] == "agreement" and read_manifest(tmp_path / "g")["labels"] == "gold"
    a, g = read_folder(tmp_path / "a", "cues").to_pydict(), read_folder(tmp_path / "g", "cues").to_pydict()
    assert a["label"] == a["agreement"] and set(a["gold"]) == {None} and set(a["final_correct"]) == {None}
    # the same seeds give the same rollouts: the agreement column does not depend on having gold answers
    assert a["agreement"] == g["agreement"] and a["forced_answer"] == g["forced_answer"]
    data = load_cue_data(tmp_path / "a")
    assert data.labels == "agreement" and (data.agreement == data.label).all()

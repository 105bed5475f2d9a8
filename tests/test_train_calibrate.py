"""`lynx train` / `lynx calibrate` end to end on real organism collections, and their refusals."""

import json
import math
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lynx.calibrate import load_calibration
from lynx.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def calibrated(organism_probe, organism_collections, tmp_path_factory):
    probe = tmp_path_factory.mktemp("cal") / "probe"
    shutil.copytree(organism_probe, probe)
    res = runner.invoke(app, ["calibrate", "--probe", str(probe), "--data", str(organism_collections["calibration"]), "--alphas", "0.05,0.1,0.2", "--n-splits", "20", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    baseline = [r for r in rows if r["scorer"] == "context-only"]  # calibrated with the probe, on the same data and alphas
    assert [r["alpha"] for r in baseline if r["default"]] == [0.05, 0.1, 0.2]
    assert {r["folder"] for r in baseline} == {str(probe / "baselines" / "context-only" / "calibrations" / "T0.6")}
    return probe, [r for r in rows if r["scorer"] == "probe"]


def test_calibration_report_and_plots(calibrated):
    probe, rows = calibrated
    folder = probe / "calibrations" / "T0.6"  # the condition of the data: its sampling temperature
    assert {r["condition"] for r in rows} == {"T0.6"} and {r["folder"] for r in rows} == {str(folder)}
    for name in ("calibration_report.md", "risk_vs_alpha.png", "savings_vs_alpha.png", "calibration.parquet", "calibration_traces.parquet"):
        assert (folder / name).exists(), name
    report = (folder / "calibration_report.md").read_text()
    assert "per-problem **(default)**" in report and "alpha = 0.1:" in report and "Condition: temperature 0.6" in report
    defaults = [r for r in rows if r["default"]]
    assert [r["alpha"] for r in defaults] == [0.05, 0.1, 0.2]
    # a looser alpha never exits less, and the in-sample CRC risk respects its bound
    exits = [r["exit_rate"] for r in defaults]
    assert exits == sorted(exits)
    for r in defaults:
        assert r["risk"] <= r["alpha"]
    # the held-out spread beside its mean: how often one calibration draw misses its alpha
    assert "half splits above alpha" in report and "average over calibration draws" in report
    for r in rows:
        assert r["held_out_risk_p90"] >= r["held_out_risk"] - 1e-12 and 0.0 <= r["held_out_above_alpha"] <= 1.0
        if r["held_out_risk_p90"] <= r["alpha"]:
            assert r["held_out_above_alpha"] <= 0.1 + 1e-9  # at most the splits above the 90th percentile


def test_threshold_for_any_alpha_at_inference_time(calibrated):
    probe, rows = calibrated
    cal = load_calibration(probe)
    stored = {r["alpha"]: r["threshold"] for r in rows if r["default"]}
    assert cal.threshold(0.1).threshold == pytest.approx(stored[0.1] if stored[0.1] is not None else math.inf)
    t = [cal.threshold(a).threshold for a in (0.03, 0.07, 0.15, 0.3)]  # alphas never reported
    assert t == sorted(t, reverse=True)
    assert cal.threshold(0.1, mode="per-cue").mode == "per-cue"


def test_calibrate_refuses_training_problems(organism_probe, organism_collections):
    res = runner.invoke(app, ["calibrate", "--probe", str(organism_probe), "--data", str(organism_collections["train"])])
    assert res.exit_code == 2 and "used to train the probe" in res.output and "Traceback" not in res.output


def test_calibrate_refuses_probe_of_another_model(organism_probe, organism_collections, tmp_path):
    probe = tmp_path / "foreign"
    shutil.copytree(organism_probe, probe)
    meta = json.loads((probe / "probe.json").read_text())
    meta |= {"model": "Qwen/Qwen3-1.7B", "model_fingerprint": "feedfacefeedface"}
    (probe / "probe.json").write_text(json.dumps(meta))
    res = runner.invoke(app, ["calibrate", "--probe", str(probe), "--data", str(organism_collections["calibration"])])
    assert res.exit_code == 2 and "probe belongs to model 'Qwen/Qwen3-1.7B'" in res.output


def test_calibrate_refuses_one_class_and_bad_alpha(organism_probe, organism_collections, tmp_path):
    data = tmp_path / "one-class"
    shutil.copytree(organism_collections["calibration"], data)
    for path in data.glob("*.cues.parquet"):
        t = pq.read_table(path)
        t = t.set_column(t.column_names.index("label"), "label", pc.cast(pc.multiply(t.column("label"), 0), t.schema.field("label").type))
        pq.write_table(t, path)
    res = runner.invoke(app, ["calibrate", "--probe", str(organism_probe), "--data", str(data)])
    assert res.exit_code == 2 and "only unsafe cue points" in res.output
    res = runner.invoke(app, ["calibrate", "--probe", str(organism_probe), "--data", str(organism_collections["calibration"]), "--alphas", "0.1,1.2"])
    assert res.exit_code == 2 and "alpha must be strictly between 0 and 1" in res.output


def test_train_refuses_empty_and_one_class(organism_collections, tmp_path):
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "does not exist" in res.output
    data = tmp_path / "ones"
    shutil.copytree(organism_collections["train"], data)
    for path in data.glob("*.cues.parquet"):
        t = pq.read_table(path)
        ones = pc.cast(pc.add(pc.multiply(t.column("label"), 0), 1), t.schema.field("label").type)
        pq.write_table(t.set_column(t.column_names.index("label"), "label", ones), path)
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "every cue point has label 1" in res.output
    assert not (tmp_path / "p").exists()


def test_train_cli_writes_card(organism_collections, tmp_path):
    res = runner.invoke(app, ["train", "--data", str(organism_collections["train"]), "--out", str(tmp_path / "p"), "--hidden", "32", "--max-epochs", "5", "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    assert set(metrics) == {"train", "validation", "test"} and all(0 <= m["auc"] <= 1 for m in metrics.values())
    assert 100 <= sum(m["n_problems"] for m in metrics.values()) <= 160  # problems with at least one cue

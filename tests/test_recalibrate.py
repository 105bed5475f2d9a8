"""``lynx recalibrate`` end to end (transformers engine): prompts without answers -> a new condition in
the probe folder, next to the old one; requests at each temperature get their own calibration,
others the flagged fallback; the collection resumes; bad input is one line with status 2."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from lynx.cli import app
from lynx.models import ORGANISM_PROBE_DIR

pytestmark = pytest.mark.slow
runner = CliRunner()
PROBE = ORGANISM_PROBE_DIR


@pytest.fixture(scope="module")
def recalibrated(tmp_path_factory):
    from lynx.organism.problems import sample_problems

    root = tmp_path_factory.mktemp("recal")
    probe = root / "probe"
    probe.mkdir()
    for name in ("probe.safetensors", "probe.json", "train_problems.json"):
        shutil.copy(PROBE / name, probe / name)
    shutil.copytree(PROBE / "calibrations" / "T0.6", probe / "calibrations" / "T0.6")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": p.problem_id, "prompt": p.text}) + "\n" for p in sample_problems("calibration", 40, seed=9)))
    res = runner.invoke(
        app,
        ["recalibrate", "--probe", str(probe), "--prompts", str(prompts), "--temperature", "0.9", "--engine", "hf", "--work", str(root / "work"), "--alphas", "0.1,0.2", "--json"],
    )
    assert res.exit_code == 0, res.output
    return probe, prompts, root, json.loads(res.stdout)


def test_recalibrate_adds_a_label_free_condition(recalibrated):
    from lynx import ExitPolicy

    probe, _, root, rows = recalibrated
    assert {r["condition"] for r in rows} == {"T0.9"} and all(r["alpha"] in (0.1, 0.2) for r in rows)
    policy = ExitPolicy.load(probe)
    assert set(policy.conditions) == {"T0.6", "T0.9"}
    new = policy.calibrations["T0.9"]
    assert new.labels == "agreement" and new.meta["risk"] == "answer-change" and new.meta["n_problems"] == 40
    assert json.loads((root / "work" / "manifest.json").read_text())["labels"] == "agreement"
    old = ExitPolicy.load(PROBE).threshold(0.1, temperature=0.6)
    assert policy.threshold(0.1, temperature=0.6).threshold == old.threshold  # the other condition is untouched
    assert policy.threshold(0.2, temperature=0.9).condition == "T0.9"
    assert "differs from the model's own full-CoT answer" in policy.threshold(0.2, temperature=0.9).promise


def test_run_picks_the_condition_of_its_temperature_and_flags_others(recalibrated):
    probe = recalibrated[0]
    args = ["run", "--probe", str(probe), "--alpha", "0.2", "--dataset", "organism:test:6", "--json", "--max-new-tokens", "300"]
    for temperature, expect in (("0.9", "T0.9"), ("0.7", None)):
        res = runner.invoke(app, args + ["--temperature", temperature])
        assert res.exit_code == 0, res.output
        exits = [json.loads(line)["exit"] for line in res.stdout.splitlines() if line.startswith("{")]
        exits = [e for e in exits if e]
        assert exits, "no request exited"
        if expect:
            assert all(e["condition"] == expect and not e["uncalibrated_condition"] for e in exits)
        else:
            assert all(e["uncalibrated_condition"] for e in exits)
    res = runner.invoke(app, args + ["--temperature", "0.7", "--fallback", "no-exit"])
    assert res.exit_code == 0 and all(not json.loads(line)["exited"] for line in res.stdout.splitlines() if line.startswith("{"))


def test_recalibrate_resumes_its_collection(recalibrated):
    probe, prompts, root, rows = recalibrated
    res = runner.invoke(
        app,
        ["recalibrate", "--probe", str(probe), "--prompts", str(prompts), "--temperature", "0.9", "--engine", "hf", "--work", str(root / "work"), "--alphas", "0.1,0.2", "--json"],
    )
    assert res.exit_code == 0 and "resuming: 1 of 1 shards already complete" in res.output
    assert [r["threshold"] for r in json.loads(res.stdout)] == [r["threshold"] for r in rows]


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["--domain", "a/b"], "domain must be"),
        (["--prompts", "/nonexistent/prompts.jsonl"], "not found"),
        (["--method", "bogus"], "method must be one of"),
    ],
)
def test_recalibrate_bad_input_is_one_line(recalibrated, tmp_path, extra, expect):
    probe, prompts = recalibrated[0], recalibrated[1]
    args = ["recalibrate", "--probe", str(probe), "--prompts", str(prompts), "--temperature", "1.0", "--engine", "hf", "--work", str(tmp_path / "w")]
    res = runner.invoke(app, args + extra)
    assert res.exit_code == 2 and expect in res.output and "Traceback" not in res.output, res.output

import json

import pytest
from typer.testing import CliRunner

from lynx.cli import app
from lynx.models import ORGANISM_PROBE_DIR

runner = CliRunner()


def test_organism_data_prints_jsonl():
    r = runner.invoke(app, ["organism", "data", "--split", "calibration", "--n", "3", "--traces"])
    assert r.exit_code == 0
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert len(rows) == 3 and all(row["split"] == "calibration" and "<think>" in row["trace"] for row in rows)


def test_bad_input_is_one_line_without_traceback():
    r = runner.invoke(app, ["organism", "data", "--split", "dev"])
    assert r.exit_code == 2
    assert "unknown organism split 'dev'" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["organism", "info", "--model", "nonsense"])
    assert r.exit_code == 2 and "unknown model 'nonsense'" in r.output


def test_run_refuses_alpha_without_probe_and_bad_alpha(tmp_path):
    r = runner.invoke(app, ["run", "--prompt", "Compute 1 + 2.", "--alpha", "0.1"])
    assert r.exit_code == 2 and "needs --probe" in r.output
    r = runner.invoke(app, ["run", "--prompt", "Compute 1 + 2.", "--alpha", "1.5", "--probe", str(tmp_path)])
    assert r.exit_code == 2 and "alpha must be strictly between 0 and 1" in r.output
    r = runner.invoke(app, ["run"])
    assert r.exit_code == 2 and "give --prompt" in r.output


def _one_line(r, *needles):
    assert r.exit_code == 2, r.output
    assert r.output.strip().count("\n") == 0 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in r.output, r.output


def test_output_paths_are_checked_before_any_work(tmp_path):
    """An --out that is a file, or under a file, is refused at once (train and eval used to fail
    on it only after their work), and organism data refuses a folder where a file goes."""
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    probe = "organism"
    for args in (
        ["collect", "--model", "organism", "--dataset", "organism:train:2", "--out", str(a_file)],
        ["collect", "--model", "organism", "--dataset", "organism:train:2", "--out", str(a_file / "sub")],
        ["train", "--data", str(tmp_path), "--out", str(a_file / "p")],
        ["eval", "--probe", probe, "--out", str(a_file)],
        ["demo", "--out", str(a_file / "d")],
        ["organism", "train", "--out", str(a_file)],
    ):
        _one_line(runner.invoke(app, args), "is a file, not a folder")
    _one_line(runner.invoke(app, ["organism", "data", "--out", str(tmp_path)]), "is a folder; give a file name")


def test_numbers_out_of_their_range_are_refused_with_the_range(tmp_path):
    probe = "organism"
    cases = [
        (["eval", "--probe", probe, "--deer-thresholds", "2", "--out", str(tmp_path)], "--deer-thresholds: 2 is outside (0, 1)"),
        (["eval", "--probe", probe, "--dynasor-k", "0", "--out", str(tmp_path)], "--dynasor-k takes whole numbers >= 1"),
        (["eval", "--probe", probe, "--alphas", "0.1,1.2", "--out", str(tmp_path)], "--alphas: alpha must be strictly between 0 and 1, got 1.2"),
        (["train", "--data", str(tmp_path), "--out", str(tmp_path / "p"), "--hidden", "2.7"], "--hidden takes whole numbers"),
        (["calibrate", "--probe", probe, "--data", str(tmp_path), "--alphas", ""], "--alphas needs at least one value"),
        (["run", "--prompt", "x", "--probe", probe, "--threshold", "nan"], "lynx_threshold must be a finite number"),
        (["run", "--prompt", "x", "--probe", probe, "--alpha", "0.1", "--threshold", "0.9"], "not both"),
        (["collect", "--model", "organism", "--dataset", "organism:train:2", "--out", str(tmp_path / "c"), "--exit-string", ""], "--exit-string must not be empty"),
        (["collect", "--model", "organism", "--dataset", "organism:train:5", "--n-problems", "2", "--out", str(tmp_path / "c")], "ask for different numbers of problems"),
        (["collect", "--model", "organism", "--dataset", "organism:train:0", "--out", str(tmp_path / "c")], "must be at least 1"),
        (["run", "--prompt", "x", "--n-problems", "3"], "--n-problems needs --dataset"),
    ]
    for args, needle in cases:
        _one_line(runner.invoke(app, args), needle)
    for args in (
        ["organism", "train", "--out", str(tmp_path / "o"), "--scripted-steps", "-1"],
        ["organism", "train", "--out", str(tmp_path / "o"), "--max-minutes", "-1"],
        ["train", "--data", str(tmp_path), "--out", str(tmp_path / "p"), "--tree-leaves", "65"],  # the most the engine compiles
        ["train", "--data", str(tmp_path), "--out", str(tmp_path / "p"), "--tree-iterations", "0"],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "Traceback" not in r.output  # typer's range check


def test_dataset_rows_that_are_not_problems_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2]\n")
    _one_line(runner.invoke(app, ["run", "--dataset", str(bad)]), "row 0: a row must be a JSON object")
    bad.write_text('{"problem": ["a", "list"], "answer": "3"}\n')
    _one_line(runner.invoke(app, ["run", "--dataset", str(bad)]), "the question must be text, got list")


def test_calibrate_refuses_data_of_another_hidden_size_before_scoring(tmp_path):
    meta = json.loads((ORGANISM_PROBE_DIR / "probe.json").read_text())
    (tmp_path / "manifest.json").write_text(
        json.dumps({"hidden_size": meta["hidden_size"] * 2, "layers": meta["layers"], "model_fingerprint": meta["model_fingerprint"], "model": "organism"})
    )
    _one_line(
        runner.invoke(app, ["calibrate", "--probe", "organism", "--data", str(tmp_path)]),
        f"hidden size {meta['hidden_size'] * 2} but the probe reads hidden size {meta['hidden_size']}",
    )


def test_a_prompt_beyond_the_context_is_refused():
    r = runner.invoke(app, ["run", "--prompt", "Compute 1 + 2. " * 1500])  # (after transformers' loading bar)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "tokens; the model's context is 2048 tokens" in r.output.strip().splitlines()[-1]


@pytest.mark.slow
def test_an_unreachable_hub_id_is_one_line():
    """The hub client retries quietly; the user sees lynx's one line (it printed a dozen)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "lynx.cli", "run", "--model", "someorg/somemodel", "--prompt", "x"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "cannot load model 'someorg/somemodel'" in r.stderr, r.stderr

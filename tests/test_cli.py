import json

from typer.testing import CliRunner

from lynx.cli import app

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

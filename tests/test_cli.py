import json

import pytest
from typer.testing import CliRunner

from lynx.cli import app

runner = CliRunner()


@pytest.mark.parametrize("stage", ["train", "calibrate", "run", "eval", "demo"])
def test_unbuilt_stages_say_so_and_fail(stage):
    r = runner.invoke(app, [stage, "--model", "organism"])
    assert r.exit_code == 1
    assert "not implemented yet" in r.output and len(r.output.strip().splitlines()) == 1


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

"""``ExitPolicy`` (a probe folder as one object), ``HookConfig`` (an engine's lynx settings)
and ``RequestOptions`` (one request's switches), on the shipped probe."""

import json
import math
import shutil

import pytest

from lynx.errors import InvalidInput, LynxError
from lynx.exit_policy import ExitPolicy, HookConfig, NotCalibrated, RequestOptions, request_args
from lynx.models import ORGANISM_PROBE_DIR
from lynx.probe import ProbeModelMismatch

PROBE = ORGANISM_PROBE_DIR


@pytest.fixture(scope="module")
def policy():
    return ExitPolicy.load(PROBE)


def test_the_folder_as_one_object(policy):
    meta = json.loads((PROBE / "probe.json").read_text())
    assert policy.layers == meta["layers"] and policy.cues == meta["cues"] and policy.exit_string == meta["exit_string"]
    assert policy.model_fingerprint == meta["model_fingerprint"] and policy.hidden_size == meta["hidden_size"]
    assert policy.is_calibrated and policy.conditions["T0.6"].temperature == 0.6
    d = policy.threshold(0.1, temperature=0.6)
    assert 0 < d.threshold < 1 and d.attainable and "at most 0.1" in d.promise and d.mode == "per-problem"
    assert policy.threshold(0.1, method="ltt", temperature=0.6).threshold >= d.threshold  # LTT is the more conservative
    # two conditions (T0.6, T1) and no temperature given: the default sampling temperature's (README's example)
    assert policy.threshold(0.1).condition == "T0.6" and policy.threshold(0.1).threshold == d.threshold
    policy.check_model("organism")


def test_model_mismatch_and_uncalibrated_folder_are_refused(policy, tmp_path):
    from lynx.models import ModelRef

    other = tmp_path / "model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(ProbeModelMismatch, match="belongs to model"):
        policy.check_model(ModelRef("mine", str(other)))
    bare = tmp_path / "probe"
    bare.mkdir()
    for name in ("probe.safetensors", "probe.json"):
        shutil.copy(PROBE / name, bare / name)
    uncal = ExitPolicy.load(bare)
    assert not uncal.is_calibrated
    with pytest.raises(NotCalibrated, match="lynx calibrate"):
        uncal.threshold(0.1)
    assert isinstance(NotCalibrated("x"), LynxError)


def test_engine_config_round_trip_and_contradictions(policy):
    cfg = policy.engine_config(audit_path="/tmp/a.jsonl")
    assert json.loads(json.dumps(cfg)) == cfg  # JSON-able: vLLM hashes it and ships it to its workers
    back = ExitPolicy.from_engine_config(cfg)
    assert back.folder == policy.folder and back.layers == policy.layers
    assert HookConfig.from_dict(cfg).audit_path == "/tmp/a.jsonl"
    with pytest.raises(ProbeModelMismatch, match="layers"):
        ExitPolicy.from_engine_config(cfg | {"layers": [1, 2]})
    with pytest.raises(ProbeModelMismatch, match="exit_string"):
        ExitPolicy.from_engine_config(cfg | {"exit_string": "</think>"})
    with pytest.raises(InvalidInput, match="unknown lynx engine setting.*known:"):
        HookConfig.from_dict({"probe": str(PROBE), "probe_row": "all"})
    with pytest.raises(InvalidInput, match="probe_rows"):
        HookConfig.from_dict({"probe_rows": "some"})
    assert ExitPolicy.from_engine_config({"layers": [1]}) is None  # no probe: recording only
    filled = policy.hook_config({"keep_events": True})
    assert filled.keep_events and list(filled.layers) == policy.layers and filled.exit_string == policy.exit_string


@pytest.mark.parametrize(
    "args, message",
    [
        ({"lynx_alpha": "abc"}, "lynx_alpha must be a number"),
        ({"lynx_alpha": True}, "lynx_alpha must be a number"),
        ({"lynx_alpha": [0.1]}, "lynx_alpha must be a number"),
        ({"lynx_alpha": 0}, "strictly between 0 and 1"),
        ({"lynx_alpha": 1}, "strictly between 0 and 1"),
        ({"lynx_alpha": -1}, "strictly between 0 and 1"),
        ({"lynx_alpha": math.nan}, "strictly between 0 and 1"),
        ({"lynx_threshold": math.nan}, "finite"),
        ({"lynx_threshold": math.inf}, "finite"),
        ({"lynx_alpha": 0.1, "lynx_threshold": 0.5}, "not both"),
        ({"lynx_alpha": 0.1, "lynx_mode": "bogus"}, "lynx_mode must be one of"),
        ({"lynx_alpha": 0.1, "lynx_method": "ttl"}, "lynx_method must be one of"),
        ({"lynx_alpah": 0.1}, "unknown lynx request key"),
        ({"lynx_mode": "per-cue"}, "without lynx_alpha or lynx_threshold"),
        ({"lynx_alpha": 0.1, "lynx_tag": "t" * 201}, "at most 200"),
        ({"lynx_record": 3}, "lynx_record must be"),
    ],
)
def test_bad_request_switches_are_refused_with_a_bounded_message(args, message):
    with pytest.raises(InvalidInput, match=message) as e:
        RequestOptions.parse(args)
    assert len(str(e.value)) < 300


def test_a_huge_value_is_never_echoed_whole():
    with pytest.raises(InvalidInput) as e:
        RequestOptions.parse({"lynx_alpha": "9" * 1_000_000})
    assert len(str(e.value)) < 300 and "chars)" in str(e.value)


def test_good_request_switches():
    assert RequestOptions.parse(None) is None and RequestOptions.parse({"temperature_like": 1}) is None
    o = RequestOptions.parse({"lynx_alpha": 0.1, "lynx_mode": "per-cue", "lynx_tag": "t"})
    assert (o.alpha, o.mode, o.tag, o.record) == (0.1, "per-cue", "t", False)
    o = RequestOptions.parse({"lynx_record": "rec1"})
    assert o.record and o.tag == "rec1" and o.alpha is None and o.threshold is None
    assert request_args(alpha=0.2, tag="x") == {"lynx_alpha": 0.2, "lynx_tag": "x"}
    assert request_args() is None
    with pytest.raises(InvalidInput):
        request_args(alpha=2.0)


def test_the_cli_shows_lynx_errors_in_one_line_and_bugs_with_a_traceback(monkeypatch):
    """A LynxError is the user's to fix (one line, status 2); anything else is a bug and keeps
    its traceback instead of posing as bad input."""
    from typer.testing import CliRunner

    from lynx import cli

    runner = CliRunner()
    r = runner.invoke(cli.app, ["run", "--prompt", "x", "--alpha", "0.1", "--probe", "/nonexistent"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "not a probe folder" in r.output

    def broken(*a, **k):
        raise KeyError("an internal bug")

    monkeypatch.setattr("lynx.run.generate", broken)
    r = runner.invoke(cli.app, ["run", "--prompt", "x"])
    assert r.exit_code == 1 and isinstance(r.exception, KeyError)


def test_a_calibration_is_bound_to_the_exact_probe(tmp_path, caplog):
    """A retrained or edited probe never reuses the threshold computed for another: the
    calibration records the probe's hash and is refused when the folder's probe changed;
    retraining into a calibrated folder removes the stale calibration."""
    from lynx.calibrate.store import StaleCalibration

    folder = tmp_path / "probe"
    shutil.copytree(PROBE, folder)
    assert ExitPolicy.load(folder).is_calibrated
    meta = json.loads((folder / "probe.json").read_text())
    (folder / "probe.json").write_text(json.dumps(meta | {"cues": ["so"]}, indent=2))  # an edit after calibration
    with pytest.raises(StaleCalibration, match="rerun lynx calibrate"):
        ExitPolicy.load(folder)
    (folder / "probe.json").write_text(json.dumps(meta | {"layers": [1, 2, 3]}, indent=2))
    with pytest.raises(StaleCalibration):
        ExitPolicy.load(folder)
    (folder / "probe.json").write_text(json.dumps(meta, indent=2) + "\n")
    assert (folder / "probe.json").read_text() == (PROBE / "probe.json").read_text()
    ExitPolicy.load(folder)  # restored: bound again
    # a calibration from before the binding loads, with a warning that says it cannot be checked
    meta_path = folder / "calibrations" / "T0.6" / "calibration.json"
    cal = json.loads(meta_path.read_text())
    del cal["probe_hash"]
    meta_path.write_text(json.dumps(cal))
    with caplog.at_level("WARNING"):
        assert ExitPolicy.load(folder).is_calibrated
    assert "predates" in caplog.text


def test_alpha_and_threshold_together_are_refused():
    with pytest.raises(InvalidInput, match="not both"):
        request_args(alpha=0.1, threshold=0.5)


def test_piped_tables_are_not_cut(tmp_path):
    """Output that is not a terminal (a pipe, a log) gets whole cells, not rich's 80 columns."""
    import subprocess
    import sys

    code = (
        "from rich.table import Table; from lynx.cli import out\n"
        "t = Table(); [t.add_column(c) for c in ('method', 'setting', 'accuracy', 'vs vanilla', 'premature exits (<= alpha)')]\n"
        "t.add_row('vanilla (think to the end)', 'alpha=0.05 per-problem/crc', '0.777', '+0.000±0.000', '0.083 (<=0.1)')\n"
        "t.add_row('lynx', 'a much longer setting than eighty columns allow, kept whole', '0.697', '-0.080±0.031', '0.083')\n"
        "out.print(t)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout and "a much longer setting than eighty columns allow, kept whole" in r.stdout
    assert "premature exits (<= alpha)" in r.stdout


def test_cli_errors_quote_user_text_verbatim():
    from typer.testing import CliRunner

    from lynx import cli

    r = CliRunner().invoke(cli.app, ["collect", "--model", "organism", "--dataset", "organism:train:abc", "--out", "/tmp/x-none"])
    assert r.exit_code == 2 and "organism:train:abc" in r.output and "🚋" not in r.output


def test_calibration_fine_print_nan_and_empty_sets_are_refused():
    import numpy as np

    from lynx.calibrate.policy import exit_cues
    from lynx.calibrate.store import traces_from_rows

    cal = ExitPolicy.load(PROBE).calibrations["T0.6"]
    with pytest.raises(InvalidInput, match="NaN"):
        exit_cues(cal.traces, np.array([0.5, math.nan]))
    with pytest.raises(InvalidInput, match="calibration set is empty"):
        traces_from_rows(
            {"problem_id": [], "sample_id": [], "cue_index": [], "score": [], "label": [], "thinking_position": []},
            {"problem_id": [], "sample_id": [], "final_correct": [], "thinking_tokens_total": []},
        )
    assert "a larger alpha does not always exit more" in cal.threshold(0.1, mode="per-cue").promise

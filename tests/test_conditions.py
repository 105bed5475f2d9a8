"""Several calibrations per probe folder, one per condition (temperature, domain): a request gets
the calibration of its condition, one outside every calibrated condition gets the documented
fallback — flagged, never a silent reuse — and folders calibrated before conditions still load."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from lynx.calibrate.conditions import CONDITIONS_DIR, Condition, load_calibrations, prepare_condition_dir
from lynx.calibrate.store import Calibration, load_calibration_files
from lynx.errors import InvalidInput
from lynx.exit_policy import ExitPolicy, HookConfig, RequestOptions
from lynx.models import ORGANISM_PROBE_DIR

PROBE = ORGANISM_PROBE_DIR


def _legacy_probe(tmp_path: Path) -> Path:
    """A copy of the shipped probe with its T = 0.6 calibration in the pre-conditions layout
    (calibration files in the probe folder itself, no "condition" in calibration.json)."""
    folder = tmp_path / "probe"
    folder.mkdir()
    for name in ("probe.safetensors", "probe.json"):
        shutil.copy(PROBE / name, folder / name)
    src = next(iter(load_calibrations(PROBE).keys()))
    cal_dir = PROBE / CONDITIONS_DIR / src if (PROBE / CONDITIONS_DIR / src).is_dir() else PROBE
    for name in ("calibration.parquet", "calibration_traces.parquet", "calibration.json"):
        shutil.copy(cal_dir / name, folder / name)
    meta = json.loads((folder / "calibration.json").read_text())
    meta.pop("condition", None)
    meta["data"]["sampling"]["temperature"] = 0.6
    (folder / "calibration.json").write_text(json.dumps(meta))
    return folder


def _add_condition(folder: Path, temperature: float, domain: str | None = None, shift: float = 0.0) -> Calibration:
    """Store a calibration for (temperature, domain): the folder's T=0.6 one with scores shifted
    (a condition whose scores run higher needs a higher threshold)."""
    base = load_calibration_files(folder if (folder / "calibration.json").exists() else folder / CONDITIONS_DIR / "T0.6", probe_folder=folder)
    t = base.traces
    traces = type(t)(t.problem_id, t.sample_id, t.offsets, np.clip(t.score + shift, 0, 1), t.label, t.position, t.total, t.final_correct, t.agreement)
    cond = Condition(temperature, domain)
    cal = Calibration(traces, base.meta | {"condition": cond.to_dict()})
    cal.save(prepare_condition_dir(folder, cond))
    return cal


def test_a_folder_calibrated_before_conditions_loads_as_its_temperature(tmp_path):
    folder = _legacy_probe(tmp_path)
    policy = ExitPolicy.load(folder)
    assert list(policy.conditions) == ["T0.6"] and policy.conditions["T0.6"] == Condition(0.6)
    d = policy.threshold(0.1, temperature=0.6)
    assert d.condition == "T0.6" and not d.uncalibrated_condition and math.isfinite(d.threshold)
    assert policy.threshold(0.1).threshold == d.threshold  # one condition: no temperature needed


def test_adding_a_condition_keeps_the_others_and_requests_get_their_own(tmp_path):
    folder = _legacy_probe(tmp_path)
    before = ExitPolicy.load(folder).threshold(0.1, temperature=0.6).threshold
    _add_condition(folder, 1.0, shift=0.2)
    assert not (folder / "calibration.json").exists() and (folder / CONDITIONS_DIR / "T0.6" / "calibration.json").exists()
    policy = ExitPolicy.load(folder)
    assert set(policy.conditions) == {"T0.6", "T1"}
    at06, at1 = policy.threshold(0.1, temperature=0.6), policy.threshold(0.1, temperature=1.0)
    assert at06.threshold == before and at06.condition == "T0.6"  # T = 0.6 requests still get the T = 0.6 figures
    assert at1.condition == "T1" and at1.threshold > at06.threshold
    # no temperature given: the one lynx.generate samples at by default (0.6), and the decision says so
    default = policy.threshold(0.1)
    assert default.condition == "T0.6" and default.threshold == at06.threshold and not default.uncalibrated_condition
    # the engine, which cannot tell a request's temperature, still never picks one (the request is disabled, see below)
    with pytest.raises(InvalidInput, match="several conditions"):
        policy.calibrations.threshold(0.1)
    # several conditions and none at the default temperature: an error naming them, never a guess
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    _add_condition(other, 0.9, shift=0.1)
    shutil.rmtree(other / CONDITIONS_DIR / "T0.6")
    with pytest.raises(InvalidInput, match="several conditions .*none at the default temperature 0.6"):
        ExitPolicy.load(other).threshold(0.1)
    # replacing a condition replaces it, and only it
    _add_condition(folder, 1.0, shift=0.1)
    again = ExitPolicy.load(folder)
    assert set(again.conditions) == {"T0.6", "T1"} and again.threshold(0.1, temperature=1.0).threshold < at1.threshold


def test_a_request_at_an_uncalibrated_temperature_gets_the_flagged_fallback(tmp_path):
    """T = 0.8 with only 0.6 and 1.0 calibrated: the most conservative calibrated threshold (or
    no exit), flagged, and a promise that says no guarantee holds."""
    folder = _legacy_probe(tmp_path)
    _add_condition(folder, 1.0, shift=0.2)
    policy = ExitPolicy.load(folder)
    calibrated = [policy.threshold(a, temperature=t).threshold for a in (0.1,) for t in (0.6, 1.0)]
    d = policy.threshold(0.1, temperature=0.8)
    assert d.uncalibrated_condition and d.threshold == max(calibrated) and d.condition == "T1"
    assert "no guarantee" in d.promise and "0.8" in d.promise
    never = policy.threshold(0.1, temperature=0.8, fallback="no-exit")
    assert never.uncalibrated_condition and math.isinf(never.threshold)
    with pytest.raises(InvalidInput, match="fallback"):
        policy.threshold(0.1, temperature=0.8, fallback="nearest")


def test_the_engine_flags_uncalibrated_requests_in_the_audit(tmp_path):
    from lynx.engines.exit_control import ExitController
    from lynx.models import resolve_model

    folder = _legacy_probe(tmp_path)
    _add_condition(folder, 1.0, shift=0.2)
    policy = ExitPolicy.load(folder)
    audit = tmp_path / "audit.jsonl"
    ctl = ExitController(HookConfig(audit_path=str(audit), keep_events=True), resolve_model("organism").path, policy=policy)
    ok = ctl.new_request({"lynx_alpha": 0.1, "lynx_tag": "a"}, [1], [], temperature=0.6)
    hot = ctl.new_request({"lynx_alpha": 0.1, "lynx_tag": "b"}, [1], [], temperature=1.0)
    odd = ctl.new_request({"lynx_alpha": 0.1, "lynx_tag": "c"}, [1], [], temperature=0.8)
    assert (ok.condition, ok.uncalibrated) == ("T0.6", False) and (hot.condition, hot.uncalibrated) == ("T1", False)
    assert odd.uncalibrated and odd.threshold == max(ok.threshold, hot.threshold)
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["tag"], e["event"]) for e in events] == [("c", "uncalibrated_condition")]
    assert events[0]["temperature"] == 0.8 and events[0]["fallback"] == "conservative"
    strict = ExitController(HookConfig(fallback="no-exit"), resolve_model("organism").path, policy=policy)
    assert math.isinf(strict.new_request({"lynx_alpha": 0.1}, [1], [], temperature=0.8).threshold)
    # an engine that cannot tell the temperature (several conditions): that request is disabled, the engine keeps going
    unknown = ctl.new_request({"lynx_alpha": 0.1, "lynx_tag": "d"}, [1], [], temperature=None)
    assert unknown.disabled and unknown.threshold is None
    last = json.loads(audit.read_text().splitlines()[-1])
    assert last["tag"] == "d" and last["event"] == "disabled" and "several conditions" in last["reason"]


def test_domains_select_their_calibration_and_travel_per_request(tmp_path):
    folder = _legacy_probe(tmp_path)
    _add_condition(folder, 0.6, domain="gsm8k", shift=0.3)
    policy = ExitPolicy.load(folder)
    plain, tagged = policy.threshold(0.1, temperature=0.6), policy.threshold(0.1, temperature=0.6, domain="gsm8k")
    assert plain.condition == "T0.6" and tagged.condition == "T0.6-gsm8k" and tagged.threshold > plain.threshold
    assert policy.threshold(0.1, temperature=0.6, domain="aime").uncalibrated_condition
    assert RequestOptions.parse({"lynx_alpha": 0.1, "lynx_domain": "gsm8k"}).domain == "gsm8k"
    for bad in ("", "a/b", "x" * 65, 7):
        with pytest.raises(InvalidInput, match="lynx_domain"):
            RequestOptions.parse({"lynx_alpha": 0.1, "lynx_domain": bad})
    with pytest.raises(InvalidInput, match="without"):
        RequestOptions.parse({"lynx_domain": "gsm8k"})  # no alpha: would silently run without lynx
    with pytest.raises(InvalidInput, match="fallback"):
        HookConfig(fallback="bogus")


def test_retraining_removes_every_condition(tmp_path):
    from lynx.calibrate.conditions import remove_calibrations

    folder = _legacy_probe(tmp_path)
    _add_condition(folder, 1.0)
    removed = remove_calibrations(folder)
    assert removed == [CONDITIONS_DIR + "/"] and not ExitPolicy.load(folder).is_calibrated


def test_a_calibration_of_another_probe_is_refused_in_any_condition(tmp_path):
    from lynx.calibrate.store import StaleCalibration

    folder = _legacy_probe(tmp_path)
    _add_condition(folder, 1.0)
    meta_path = folder / CONDITIONS_DIR / "T1" / "calibration.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"probe_hash": "0" * 16}))
    with pytest.raises(StaleCalibration):
        ExitPolicy.load(folder)

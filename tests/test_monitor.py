"""The live monitor without an engine: its sequential tests are MAPIE's (bit for bit) with bounded
memory, its false-alarm rate stays within the test level over many replays of unshifted traffic,
it detects the organism's temperature shift, and its responses (conservative, recalibrate) do
what they say. Replays use the shipped probe's own calibration traces (T0.6, gold + agreement)
and its T1 traces as the shifted traffic."""

import json
import math
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from lynx.calibrate.conditions import load_calibrations
from lynx.calibrate.store import Calibration
from lynx.config import MonitorConfig, parse_monitor
from lynx.engines.exit_control import audit_selected, condition_key
from lynx.errors import InvalidInput
from lynx.exit_policy import ExitPolicy, HookConfig
from lynx.models import ORGANISM_PROBE_DIR
from lynx.monitor.live import LiveMonitor, audit_loss, first_cue_positions
from lynx.monitor.replay import replay, trace_events
from lynx.monitor.sequences import DriftTest, RiskBound

PROBE = ORGANISM_PROBE_DIR


@pytest.fixture(scope="module")
def cals():
    return load_calibrations(PROBE)


def _policy(calibrations: dict):
    return types.SimpleNamespace(calibrations=calibrations)


# -- the tests are MAPIE's ------------------------------------------------------------
@pytest.mark.slow  # many sequences (~10 s)
def test_risk_bound_equals_mapie_risk_monitoring():
    from mapie.exchangeability_testing import RiskMonitoring
    from mapie.risk_control.risks import BinaryRisk

    rng = np.random.default_rng(3)
    reference = (rng.random(500) < 0.1).astype(int)
    live = (rng.random(400) < 0.35).astype(int)
    loss = BinaryRisk(risk_occurrence=lambda yt, yp: yt == 1, risk_condition=lambda yt, yp: np.ones(len(yt), bool), higher_is_better=False)
    mapie = RiskMonitoring(loss, test_level=0.05, tolerance=0.02, reference_data=(reference, reference), warn=False)
    mine = RiskBound(reference, test_level=0.05, tolerance=0.02, v_opt=1.0)  # RiskMonitoring's fixed mixture
    assert mine.alarm_level == pytest.approx(mapie.threshold)
    lows, alarms = [], []
    for x in live:
        mapie.update(np.array([x]), np.array([x]))
        mine.update(x)
        lows.append(mine.lower)
        alarms.append(mine.alarm == mapie.harmful_shift_detected)
    np.testing.assert_allclose(lows, mapie.online_risk_lower_bound_sequence_history, rtol=1e-12, atol=1e-12)
    assert all(alarms) and mine.alarm  # a 0.35 risk against a 0.1 reference is detected
    assert mine.lower <= live.mean() <= mine.upper


def test_drift_test_is_mapies_jumper_martingale_on_binned_values():
    """Same p-values (same tie-breaking draws) and martingale as MAPIE's own update on the same values."""
    from mapie.exchangeability_testing import OnlineMartingaleTest

    rng = np.random.default_rng(0)
    ref, live = rng.integers(0, 50, 200), rng.integers(10, 60, 100)
    mine = DriftTest(ref, test_level=0.05, bins=4096, seed=7)
    theirs = OnlineMartingaleTest(test_method="jumper_martingale", test_level=0.05, warn=False, random_state=7)
    theirs.conformity_score_history = [float(v) for v in ref]
    for v in live:
        p_mine = mine.update(int(v))
        p_theirs = theirs.compute_p_value(float(v), np.asarray(theirs.conformity_score_history))
        theirs.update_simple_jumper_martingale(p_theirs)
        theirs.conformity_score_history.append(float(v))
        assert p_mine == pytest.approx(p_theirs, abs=1e-12)
    assert mine.value == pytest.approx(theirs.current_martingale_value)
    assert mine.test.martingale_value_history == []  # nothing kept per update
    assert mine.counts.sum() == 300 and mine.counts.shape == (4096,)


@pytest.mark.slow  # many streams (~3 s)
def test_drift_test_false_alarm_rate_within_level_over_many_streams():
    rng = np.random.default_rng(1)
    alarms = 0
    for r in range(200):
        ref = rng.poisson(40, 300)
        d = DriftTest(ref, test_level=0.05, seed=r)
        for v in rng.poisson(40, 600):
            d.update(int(v))
        alarms += d.alarm
    assert alarms / 200 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 200)


# -- audits ---------------------------------------------------------------------------
def test_audit_share_is_honoured_and_reproducible():
    tags = [f"req-{i}" for i in range(20_000)]
    for fraction in (0.05, 0.1, 0.5):
        picked = [audit_selected(fraction, 0, t, [], None) for t in tags]
        share = np.mean(picked)
        assert abs(share - fraction) < 4 * math.sqrt(fraction * (1 - fraction) / len(tags)), (fraction, share)
        assert picked == [audit_selected(fraction, 0, t, [], None) for t in tags]  # seeded: the same requests
    assert not any(audit_selected(0.0, 0, t, [], None) for t in tags[:100])
    assert all(audit_selected(1.0, 0, t, [], None) for t in tags[:100])
    # without a tag: the prompt and the request's sampling seed decide
    assert audit_selected(0.5, 0, None, [1, 2, 3], 5) == audit_selected(0.5, 0, None, [1, 2, 3], 5)
    assert np.mean([audit_selected(0.3, 1, None, [i, 7], None) for i in range(5000)]) == pytest.approx(0.3, abs=0.03)


def test_audit_loss_is_the_exit_rule():
    cues = [[10, 0.2, 1], [30, 0.5, 0], [50, 0.9, 1]]
    assert audit_loss(cues, 0.1) == 0.0  # exits at the first cue, which agrees
    assert audit_loss(cues, 0.4) == 1.0  # exits at the second, which changes the answer
    assert audit_loss(cues, 0.8) == 0.0
    assert audit_loss(cues, 0.95) == 0.0 and audit_loss(cues, math.inf) == 0.0  # never exits


def test_monitor_settings_are_checked():
    assert parse_monitor({"audit_fraction": 0.1, "alphas": [0.05, 0.1]}) == MonitorConfig(audit_fraction=0.1, alphas=(0.05, 0.1))
    for bad, what in (
        ({"audit_fraction": 1.5}, "audit_fraction"),
        ({"response": "panic"}, "response"),
        ({"alphas": []}, "alphas"),
        ({"alphas": [0.1, 1.0]}, "alphas"),
        ({"window": 10, "min_audits": 20}, "min_audits"),
        ({"nope": 1}, "unknown"),
        ({"test_level": 0}, "test_level"),
        ({"grader": "regex"}, "grader"),
        ({"seed": -1}, "seed"),
    ):
        with pytest.raises(InvalidInput, match=what):
            parse_monitor(bad)
    with pytest.raises(InvalidInput, match="response"):
        HookConfig.from_dict({"monitor": {"response": "panic"}})
    assert HookConfig.from_dict({"monitor": {"audit_fraction": 0.2}}).to_dict()["monitor"] == {"audit_fraction": 0.2}
    assert condition_key(1.0, None) == "T1" and condition_key(0.6, "gsm8k") == "T0.6-gsm8k" and condition_key(None, None) == "default"


# -- the monitor on replayed traffic ---------------------------------------------------
@pytest.mark.slow  # many replays (~10 s)
def test_no_more_false_alarms_than_the_test_level_on_unshifted_traffic(cals):
    """Half of the T0.6 calibration traces is the reference, the other half (never seen by it)
    the live stream, re-split 100 times: each test alarms on at most ~test_level of the streams."""
    c06 = cals["T0.6"]
    t = c06.traces
    rng = np.random.default_rng(0)
    alarms = {"risk": 0, "drift": 0}
    n = 100
    for r in range(n):
        perm = rng.permutation(t.n_traces)
        ref, live = perm[: t.n_traces // 2], perm[t.n_traces // 2 :]
        monitor = LiveMonitor(_policy({"T0.6": Calibration(t.take(ref), dict(c06.meta))}), {"audit_fraction": 0.5, "alphas": [0.05, 0.1, 0.2], "test_level": 0.05, "seed": r})
        res = replay(monitor, trace_events(t.take(live), rng.permutation(len(live)), group="T0.6", condition="T0.6", temperature=0.6, audit_fraction=0.5, seed=r))
        for kind in res["first_alarm"].get("T0.6", {}):
            alarms[kind] += 1
    slack = 2 * math.sqrt(0.05 * 0.95 / n)
    assert alarms["risk"] / n <= 0.05 + slack and alarms["drift"] / n <= 0.05 + slack, alarms


def test_the_temperature_shift_is_detected_by_the_drift_test(cals):
    """T = 1.0 traffic served with the T0.6 calibration: the label-free test alarms in every
    replay, within a few hundred requests."""
    policy = _policy({"T0.6": cals["T0.6"]})
    t1 = cals["T1"].traces
    rng = np.random.default_rng(2)
    delays = []
    for r in range(30):
        monitor = LiveMonitor(policy, {"audit_fraction": 0.1, "alphas": [0.1], "seed": r})
        res = replay(monitor, trace_events(t1, rng.permutation(t1.n_traces)[:600], group="T1", condition="T0.6", temperature=1.0, audit_fraction=0.1, seed=r))
        delays.append(res["first_alarm"]["T1"].get("drift", math.inf))
    assert max(delays) <= 600 and np.median(delays) < 200, delays


def test_risk_alarm_on_a_harmful_stream(cals):
    """A stream whose exits change the answer far more often than calibration's: the risk bound alarms."""
    c06 = cals["T0.6"]
    thr = c06.threshold(0.1).threshold
    monitor = LiveMonitor(_policy({"T0.6": c06}), {"audit_fraction": 1.0, "alphas": [0.1], "response": "warn"})
    for k in range(200):
        monitor.observe({"event": "request", "group": "T0.6", "condition": "T0.6", "temperature": 0.6, "first_cue_position": 40})
        monitor.observe(
            {"event": "audit_label", "group": "T0.6", "condition": "T0.6", "temperature": 0.6, "thinking_tokens": 100, "cues": [[20, thr + 0.01, int(k % 2 == 0)], [60, 0.99, 1]]}
        )  # half of the exits change the answer
    g = monitor.groups["T0.6"]
    assert "risk" in g.first_alarm and g.risks[0.1].lower > g.risks[0.1].alarm_level
    assert g.risks[0.1].lower <= 0.5 <= g.risks[0.1].upper
    assert monitor.overrides == {}  # warn: no response


def _shifted_stream(cals, rng, n=600):
    return trace_events(cals["T1"].traces, rng.permutation(cals["T1"].traces.n_traces)[:n], group="T1", condition="T0.6", temperature=1.0, audit_fraction=0.2, seed=0)


def test_conservative_response_overrides_the_group_until_cleared(cals):
    monitor = LiveMonitor(_policy({"T0.6": cals["T0.6"]}), {"audit_fraction": 0.2, "alphas": [0.1], "response": "conservative"})
    out = replay(monitor, _shifted_stream(cals, np.random.default_rng(5)))["events"]
    kinds = [e["event"] for e in out]
    assert "alarm" in kinds and "response" in kinds
    assert kinds.index("response") > kinds.index("alarm")
    g = monitor.groups["T1"]
    if "cleared" not in kinds:  # cleared only once fresh audits bound the risk below the alarm level
        assert monitor.overrides == {"T1": "conservative"} and g.response_active
    # the T0.6 group of other traffic is untouched
    assert "T0.6" not in monitor.overrides


def test_recalibrate_response_stores_a_condition_from_the_audits(cals, tmp_path):
    folder = tmp_path / "probe"
    shutil.copytree(PROBE, folder)
    shutil.rmtree(folder / "calibrations" / "T1")
    policy = ExitPolicy.load(folder)
    monitor = LiveMonitor(policy, {"audit_fraction": 0.2, "alphas": [0.1], "response": "recalibrate", "min_audits": 40})
    out = replay(monitor, _shifted_stream(cals, np.random.default_rng(6), n=1000))["events"]
    recal = [e for e in out if e["event"] == "recalibrated"]
    assert len(recal) == 1 and recal[0]["condition"] == "T1" and recal[0]["audits"] == 40
    reloaded = ExitPolicy.load(folder)
    assert set(reloaded.conditions) == {"T0.6", "T1"}
    cal = reloaded.calibrations["T1"]
    assert cal.meta["data"]["source"] == "live audits" and cal.meta["labels"] == "agreement" and cal.meta["risk"] == "answer-change"
    assert cal.traces.n_traces == 40
    d = reloaded.threshold(0.1, temperature=1.0)
    assert d.condition == "T1" and not d.uncalibrated_condition
    # after the recalibration the group is compared with its own new calibration, response over
    g = monitor.groups["T1"]
    assert g.reference == "T1" and not g.response_active and monitor.overrides == {}
    assert (folder / "calibrations" / "T1" / "calibration_report.md").exists()


def test_first_cue_position_statistic_of_calibration_traces(cals):
    t = cals["T0.6"].traces
    first = first_cue_positions(t)
    with_cue = np.diff(t.offsets) > 0
    assert np.array_equal(first[with_cue], t.position[t.offsets[:-1][with_cue]])
    assert np.array_equal(first[~with_cue], t.total[~with_cue])


def test_monitor_memory_is_bounded(cals):
    """Thousands of requests and audits: the monitor keeps a window, a histogram and a few numbers."""
    import tracemalloc

    monitor = LiveMonitor(_policy({"T0.6": cals["T0.6"]}), {"audit_fraction": 0.5, "alphas": [0.1], "window": 100})
    t = cals["T0.6"].traces
    rng = np.random.default_rng(0)

    def feed(n):
        for e in trace_events(t, rng.integers(0, t.n_traces, n), group="T0.6", condition="T0.6", temperature=0.6, audit_fraction=0.5):
            monitor.observe(e)

    feed(500)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    feed(3000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename") if "lynx" in str(s.traceback) or "mapie" in str(s.traceback))
    g = monitor.groups["T0.6"]
    assert len(g.window) == 100 and g.requests == 3500
    assert growth < 64 * 1024, growth
    json.dumps(monitor.state())  # the state is JSON (metrics, logs)


# -- visibility -------------------------------------------------------------------------
def test_metrics_collector_reads_live_state_files_and_skips_dead_ones(cals, tmp_path, monkeypatch):
    from prometheus_client import CollectorRegistry, generate_latest

    from lynx.monitor.metrics import LynxCollector, register_collector, write_state

    monkeypatch.setenv("LYNX_METRICS_DIR", str(tmp_path))
    monitor = LiveMonitor(_policy({"T0.6": cals["T0.6"]}), {"alphas": [0.1]})
    monitor.observe({"event": "request", "group": "T0.6", "condition": "T0.6", "first_cue_position": 30})
    monitor.observe({"event": "audit_label", "group": "T0.6", "condition": "T0.6", "cues": [[10, 0.99, 0]], "thinking_tokens": 50})
    write_state("monitor", monitor.state())
    write_state("engine", {"counts": {"requests": 7, "exits": 3, "audits": 1}})
    write_state("engine", {"counts": {"requests": 1000}}, pid=2**22 + 12345)  # a process that is gone
    registry = CollectorRegistry()
    assert register_collector(registry) and not register_collector(registry)  # once per registry
    text = generate_latest(registry).decode()
    assert 'lynx_requests_total{pid="%d"} 7.0' % __import__("os").getpid() in text and "1000.0" not in text
    assert 'lynx_live_risk{alpha="0.1",group="T0.6"} 1.0' in text  # the one audit's exit changed the answer
    assert 'lynx_live_risk_upper_bound{alpha="0.1",group="T0.6"} 1.0' in text
    assert 'lynx_alarm{group="T0.6",kind="drift"} 0.0' in text
    assert not (tmp_path / f"engine-{2**22 + 12345}.json").exists()  # a dead process's file is removed
    assert isinstance(LynxCollector().describe().__next__().name, str)


def _audit_file(cals, tmp_path) -> Path:
    """An audit file as a monitored engine + its monitor would leave it (replayed T1 traffic on T0.6)."""
    monitor = LiveMonitor(_policy({"T0.6": cals["T0.6"]}), {"audit_fraction": 0.2, "alphas": [0.1]})
    events = list(trace_events(cals["T1"].traces, range(200), group="T1", condition="T0.6", temperature=1.0, audit_fraction=0.2))
    lines = []
    for e in events:
        lines.append(e | {"exited": False, "output_tokens": 100} if e["event"] == "request" else e | {"extra_tokens": 12})
        lines += monitor.observe(e)
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"event": "requ')  # a line still being written
    return path


def test_lynx_monitor_command_prints_the_state_and_plots(cals, tmp_path):
    from typer.testing import CliRunner

    from lynx.cli import app

    audit = _audit_file(cals, tmp_path)
    r = CliRunner().invoke(app, ["monitor", str(audit), "--plot", str(tmp_path / "m.png")])
    assert r.exit_code == 0, r.output
    assert "live answer-change risk" in r.output and "T1" in r.output and "drift @" in r.output
    assert (tmp_path / "m.png").stat().st_size > 10_000
    r = CliRunner().invoke(app, ["monitor", str(audit), "--json", "--plot", str(tmp_path / "n.png")])
    state = json.loads(r.output)
    assert state["requests"] == 200 and state["groups"]["T1"]["alarms"][0]["kind"] == "drift"
    assert state["audit_extra_tokens"] == 12 * state["labelled"]


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["monitor", "nope.jsonl"], "does not exist"),
        (["monitor", "{audit}", "--follow"], "--follow needs --server"),
        (["run", "--probe", "organism", "--alpha", "0.1", "--prompt", "x", "--monitor", "{bad"], "--monitor must be a JSON object"),
        (["run", "--probe", "organism", "--alpha", "0.1", "--prompt", "x", "--monitor", '{"response": "panic"}'], "response must be one of"),
        (["eval", "--probe", "organism", "--monitor", '{"audit_fraction": 2}'], "audit_fraction must be"),
    ],
)
def test_monitor_options_refuse_bad_input_with_one_line(cals, tmp_path, argv, expect):
    from typer.testing import CliRunner

    from lynx.cli import app

    audit = _audit_file(cals, tmp_path)
    r = CliRunner().invoke(app, [a.replace("{audit}", str(audit)) for a in argv])
    assert r.exit_code == 2 and expect in r.output and "Traceback" not in r.output, r.output


@pytest.mark.slow  # generation (~4 s)
def test_generate_with_a_monitor_on_transformers(tmp_path):
    """lynx.generate: every request audited (audit_fraction 1): none exits, each is labelled in the audit file."""
    from lynx.monitor.report import read_events
    from lynx.organism.problems import sample_problems
    from lynx.run import generate

    audit = tmp_path / "audit.jsonl"
    problems = [p.text for p in sample_problems("test", 6, seed=3)]
    res = generate(problems, probe=str(PROBE), alpha=0.2, engine="hf", temperature=0.6, max_new_tokens=400, monitor={"audit_fraction": 1.0, "grader": "integer"}, audit_path=audit)
    assert all(r.extra.get("audited") and not r.exited for r in res)
    events = read_events(audit)
    assert sum(e["event"] == "request" for e in events) == 6 and sum(e["event"] == "audit_label" for e in events) == 6
    assert all(e["final_answer"] == r.answer for e, r in zip((e for e in events if e["event"] == "audit_label"), res, strict=True))

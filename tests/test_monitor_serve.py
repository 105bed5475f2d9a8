"""The live monitor behind the OpenAI server (``vllm serve`` with lynx's plugin and a monitor
section): the engine writes request summaries and audit traces into its audit file, ``lynx
monitor --follow --server`` labels the audits through the server itself, and lynx's counters
and the live risk bound appear on the server's Prometheus ``/metrics``; a response written to
the control file reaches the served engine."""

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from lynx.models import ORGANISM_PROBE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
PROBE = ORGANISM_PROBE_DIR


def _metrics(base: str) -> str:
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory, serve_organism):
    work = tmp_path_factory.mktemp("serve-monitor")
    audit = work / "audit.jsonl"
    metrics_dir = work / "metrics"
    lynx_cfg = {"probe": str(PROBE), "audit_path": str(audit), "monitor": {"audit_fraction": 0.5, "grader": "integer"}}
    with serve_organism(work, lynx_cfg, {"LYNX_METRICS_DIR": str(metrics_dir)}, ("--enable-prefix-caching", "--scheduling-policy", "priority")) as base:
        yield base, audit, metrics_dir


def _ask(post, base, problems, tag_prefix, temperature=0.6, alpha=0.2):
    from lynx.prompting import user_message

    def one(i):
        body = {
            "model": "organism",
            "messages": [{"role": "user", "content": user_message(problems[i].text)}],
            "temperature": temperature,
            "max_tokens": 600,
            "seed": i,
            "skip_special_tokens": False,
            "vllm_xargs": {"lynx_alpha": alpha, "lynx_tag": f"{tag_prefix}{i}"},
        }
        return post(base + "/v1/chat/completions", body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(len(problems))))


def test_served_monitor_labels_audits_through_the_server_and_shows_on_metrics(served, monkeypatch, post_json):
    from lynx.exit_policy import ExitPolicy
    from lynx.monitor.follow import follow
    from lynx.monitor.report import read_events
    from lynx.organism.problems import sample_problems

    base, audit, metrics_dir = served
    monkeypatch.setenv("LYNX_METRICS_DIR", str(metrics_dir))
    problems = sample_problems("test", 24, seed=61)
    _ask(post_json, base, problems, "a")
    _ask(post_json, base, problems[:1], "flush")  # the engine releases a finished request's row at a later step
    events = read_events(audit)
    summaries = {e["tag"]: e for e in events if e["event"] == "request"}
    traces = [e for e in events if e["event"] == "audit_trace"]
    assert len([t for t in summaries if t.startswith("a")]) >= 20
    assert traces and all(not summaries[t["tag"]]["exited"] for t in traces if t["tag"] in summaries)  # audits never exit
    # the forced exits at a lower priority than the traffic (the server runs priority scheduling)
    mon = follow(audit, base, ExitPolicy.load(PROBE), {"audit_fraction": 0.5, "grader": "integer"}, once=True, priority=1)
    labels = [e for e in read_events(audit) if e["event"] == "audit_label"]
    traces = [e for e in read_events(audit) if e["event"] == "audit_trace"]  # again: the flush request's own trace may land after the first read
    assert {lab["tag"] for lab in labels} == {t["tag"] for t in traces}  # every audit labelled, through the server
    assert all(len(lab["cues"]) == len(lab["forced_answers"]) for lab in labels) and sum(len(lab["cues"]) for lab in labels) > 0
    assert mon.monitor.groups["T0.6"].audits == len(labels)
    # a restarted follower relabels nothing and rebuilds the same state
    again = follow(audit, base, ExitPolicy.load(PROBE), {"audit_fraction": 0.5, "grader": "integer"}, once=True)
    assert len([e for e in read_events(audit) if e["event"] == "audit_label"]) == len(labels)
    assert again.monitor.groups["T0.6"].risks[0.1].state() == mon.monitor.groups["T0.6"].risks[0.1].state()
    deadline = time.monotonic() + 30
    while True:  # the engine rewrites its counters at most once a second, when a request ends
        text = _metrics(base)
        counts = {line.split(" ")[0].split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("lynx_") and not line.startswith("#")}
        if counts.get("lynx_requests_total", 0) >= len(summaries) or time.monotonic() > deadline:
            break
        time.sleep(1.1)
        _ask(post_json, base, problems[:1], f"tick{time.monotonic()}")
    assert counts.get("lynx_requests_total", 0) >= 20 and counts.get("lynx_audits_total", 0) >= 1, text[-2000:]
    assert "lynx_exits_total" in counts
    # the follower's monitor state (this test process) appears too: live risk bound per group and alpha
    assert 'lynx_live_risk_upper_bound{alpha="0.1",group="T0.6"}' in text
    assert 'lynx_alarm{group="T0.6",kind="drift"}' in text


def test_a_response_in_the_control_file_reaches_the_served_engine(served, post_json):
    from lynx.monitor.follow import ControlFile
    from lynx.monitor.report import read_events
    from lynx.organism.problems import sample_problems

    base, audit, _ = served
    control = ControlFile(audit)
    problems = sample_problems("test", 6, seed=71)
    try:
        control.set_overrides({"T0.6": "conservative"})
        time.sleep(1.5)  # the engine reads the control file at most once a second
        _ask(post_json, base, problems, "ctl")
        _ask(post_json, base, problems[:1], "flush2")
        summaries = [e for e in read_events(audit) if e["event"] == "request" and e["tag"].startswith("ctl")]
        assert summaries and all(s["response"] == "conservative" for s in summaries if not s["audited"])
    finally:
        control.set_overrides({})

"""lynx's counters and gauges on a served engine's Prometheus ``/metrics``.

Why files: behind ``vllm serve`` lynx's exit rule runs in the engine-core process and the
monitor in its own (or the sidecar's) process, while ``/metrics`` is answered by the API
server process. Each lynx process writes a small JSON state file (atomically, at most once a
second) into one per-user directory; a Prometheus collector, registered in every process by
lynx's vLLM plugin, reads the files of live processes when ``/metrics`` is scraped. Nothing
needs configuring, no port is opened, and a dead process's file is ignored (and removed).

Directory: ``$LYNX_METRICS_DIR``, else ``<tmp>/lynx-metrics-<uid>``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

#: engine counters (ExitController.counts) -> (metric name, help)
ENGINE_COUNTERS = {
    "requests": ("lynx_requests", "requests that asked lynx for an early exit at some alpha (monitored engines)"),
    "exits": ("lynx_exits", "requests lynx ended early"),
    "audits": ("lynx_audits", "requests chosen as shadow audits (run to the end without exiting)"),
    "finished": ("lynx_requests_finished", "monitored requests that ended"),
    "uncalibrated": ("lynx_uncalibrated_requests", "requests outside every calibrated condition (fallback served)"),
    "overridden": ("lynx_overridden_requests", "requests served with a monitor's response instead of their calibrated threshold"),
    "disabled": ("lynx_disabled_requests", "requests for which lynx was disabled (bad probe score, no threshold)"),
}


def metrics_dir() -> Path:
    env = os.environ.get("LYNX_METRICS_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"lynx-metrics-{os.getuid()}"


def write_state(kind: str, state: dict, pid: int | None = None) -> Path | None:
    """Atomically replace this process's ``<kind>-<pid>.json`` (None if the directory is unusable:
    metrics never take an engine down)."""
    pid = os.getpid() if pid is None else pid
    folder = metrics_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{kind}-{pid}.json"
        tmp = folder / f".{kind}-{pid}.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
        return path
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_states() -> list[tuple[str, int, dict]]:
    """(kind, pid, state) of every live lynx process's state file."""
    out: list[tuple[str, int, dict]] = []
    folder = metrics_dir()
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        kind, _, pid = path.stem.rpartition("-")
        if not pid.isdigit():
            continue
        if not _alive(int(pid)):
            path.unlink(missing_ok=True)
            continue
        try:
            out.append((kind, int(pid), json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # being replaced: the next scrape reads it
    return out


class LynxCollector:
    """A Prometheus collector over the state files (see the module docstring)."""

    def describe(self):
        # fixed names, so registering a second collector in one process is refused by the registry
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, doc in ENGINE_COUNTERS.values():
            yield CounterMetricFamily(name, doc, labels=["pid"])
        yield GaugeMetricFamily("lynx_live_risk_upper_bound", "time-uniform upper confidence bound on the live answer-change risk", labels=["group", "alpha"])

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        states = read_states()
        counters = {k: CounterMetricFamily(name, doc, labels=["pid"]) for k, (name, doc) in ENGINE_COUNTERS.items()}
        gauges = {
            "risk": GaugeMetricFamily("lynx_live_risk", "live answer-change rate of the audited requests at each alpha's threshold", labels=["group", "alpha"]),
            "upper": GaugeMetricFamily("lynx_live_risk_upper_bound", "time-uniform upper confidence bound on the live answer-change risk", labels=["group", "alpha"]),
            "lower": GaugeMetricFamily("lynx_live_risk_lower_bound", "time-uniform lower confidence bound on the live answer-change risk", labels=["group", "alpha"]),
            "limit": GaugeMetricFamily("lynx_risk_alarm_level", "the risk alarm fires when the lower bound exceeds this", labels=["group", "alpha"]),
            "labelled": GaugeMetricFamily("lynx_audits_labelled", "audited requests labelled since the monitor's last reset", labels=["group"]),
            "drift": GaugeMetricFamily("lynx_drift_martingale", "label-free drift test martingale (alarm above 1/test_level)", labels=["group"]),
            "alarm": GaugeMetricFamily("lynx_alarm", "1 while an alarm of this kind is raised for the group", labels=["group", "kind"]),
            "responding": GaugeMetricFamily("lynx_response_active", "1 while a monitor's response (conservative / recalibrating) is served", labels=["group"]),
        }
        for kind, pid, state in states:
            if kind == "engine":
                for key, value in (state.get("counts") or {}).items():
                    if key in counters:
                        counters[key].add_metric([str(pid)], float(value))
            elif kind == "monitor":
                for group, g in (state.get("groups") or {}).items():
                    gauges["labelled"].add_metric([group], float(g.get("audits_since_reset", 0)))
                    if g.get("drift_martingale") is not None:
                        gauges["drift"].add_metric([group], float(g["drift_martingale"]))
                    for alarm_kind in ("risk", "drift"):
                        gauges["alarm"].add_metric([group, alarm_kind], 1.0 if g.get("alarm") == alarm_kind or alarm_kind in (g.get("alarms") or []) else 0.0)
                    gauges["responding"].add_metric([group], 1.0 if g.get("response_active") else 0.0)
                    for alpha, r in (g.get("risk") or {}).items():
                        for key, field in (("risk", "rate"), ("upper", "upper"), ("lower", "lower"), ("limit", "alarm_level")):
                            if r.get(field) is not None:
                                gauges[key].add_metric([group, str(alpha)], float(r[field]))
        yield from counters.values()
        yield from gauges.values()


def register_collector(registry=None) -> bool:
    """Add :class:`LynxCollector` to ``registry`` (default: prometheus_client's), once per registry."""
    try:
        from prometheus_client import REGISTRY
    except ImportError:
        return False
    try:
        (registry or REGISTRY).register(LynxCollector())
    except ValueError:  # already registered in this process
        return False
    return True

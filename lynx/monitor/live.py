"""The live monitor: is the promise still kept on the traffic being served, and what to do if not.

Requests are grouped by their own condition (sampling temperature and ``lynx_domain``: the
key a calibration of them would get, ``T0.6``, ``T1-gsm8k``). Each group is compared with the
calibration that served it (its ``condition``), by two sequential tests
(:mod:`lynx.monitor.sequences`):

* **live risk** (needs audits): every labelled shadow audit gives, at each monitored alpha,
  the loss "the exit at that alpha's calibrated threshold would have changed the request's
  answer"; a time-uniform confidence sequence bounds the live answer-change risk, and the
  *risk alarm* fires when its lower bound exceeds the calibration's own answer-change risk
  (upper bound, plus ``tolerance``) — Podkopaev & Ramdas' harmful-shift test, as MAPIE's
  ``RiskMonitoring``. Why against the calibration's answer-change risk and not alpha: a
  gold-calibrated condition promises premature exits <= alpha, which audits without gold
  cannot measure; its answer-change risk on the calibration traces is the level live traffic
  exchangeable with them has (and it is <= alpha for an agreement-calibrated condition).
* **drift** (label-free, every request): how many thinking tokens the request wrote before its
  first cue (all of them without a cue), against the same statistic of the calibration traces,
  by MAPIE's jumper-martingale exchangeability test. Why this statistic: it needs no label and
  no threshold (so responses and alpha do not change it), every request has it, and it moves
  with the model's behaviour — on the organism, the chance that a T = 1.0 request's value is
  below a T = 0.6 one's is 0.66 (0.53 for the probe's score at the first cue, 0.50 for the
  thinking length).

Each alarm has a false-alarm probability of at most ``test_level`` over the whole stream
(the risk alarm's level is split over the monitored alphas). On an alarm the configured
response runs: ``warn`` (logged, audited, on ``/metrics``); ``conservative`` (the group's
new requests get the most conservative calibrated threshold, none when no condition is
stricter, until fresh audits bound the live risk below the alarm level again); ``recalibrate``
(conservative until ``min_audits`` audits arrived after the alarm, then conformal risk control
(answer-change) on those audits, stored in the probe folder as the group's condition and
served at once — the audits after an alarm are exchangeable with the traffic that follows
when the shift is a change of regime, which is what the promise of the new calibration needs).

Memory is bounded: per group a few numbers, a histogram and at most ``window`` audits; at most
:data:`MAX_GROUPS` groups.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lynx.calibrate.policy import exit_cues, trace_losses
from lynx.config import MonitorConfig, parse_monitor
from lynx.errors import InvalidInput
from lynx.monitor.sequences import DriftTest, RiskBound

log = logging.getLogger("lynx.monitor")
#: traffic conditions tracked at once (domains come from requests): later ones are counted only
MAX_GROUPS = 64


@dataclass
class Group:
    key: str
    temperature: float | None
    domain: str | None
    reference: str | None = None  # the calibration condition the group is compared with
    retired: set = field(default_factory=set)  # conditions it was compared with before (late requests may still name them)
    thresholds: dict = field(default_factory=dict)  # alpha -> calibrated threshold of the reference
    risks: dict = field(default_factory=dict)  # alpha -> RiskBound (since the last reset)
    drift: DriftTest | None = None
    window: deque = field(default_factory=deque)  # labelled audits since the last reset (bounded)
    requests: int = 0
    audits: int = 0
    alarm: str | None = None  # "risk" or "drift": the alarm that raised the response (while raised)
    alarm_request: int | None = None
    first_alarm: dict = field(default_factory=dict)  # kind -> group request count when that test first alarmed (ever)
    raised: set = field(default_factory=set)  # kinds alarmed since the tests last restarted
    response_active: bool = False
    notes: list = field(default_factory=list)

    def state(self) -> dict:
        return {
            "requests": self.requests,
            "audits": self.audits,
            "audits_since_reset": len(self.window),
            "reference": self.reference,
            "alarm": self.alarm,
            "alarm_request": self.alarm_request,
            "first_alarm": dict(self.first_alarm),
            "response_active": self.response_active,
            "drift_martingale": None if self.drift is None else self.drift.value,
            "drift": None if self.drift is None else self.drift.state(),
            "risk": {str(a): r.state() | {"threshold": self.thresholds.get(a)} for a, r in self.risks.items()},
            "notes": list(self.notes),
        }


class LiveMonitor:
    """Sequential tests of a served probe's promise, fed with the engine's events.

    Parameters
    ----------
    policy : ExitPolicy
        The probe folder the engine serves (its calibrations are the references; ``recalibrate``
        writes into it).
    cfg : MonitorConfig or dict
        Audit share, monitored alphas, test level, response...

    Feed it, in stream order, the engine's ``request`` events and the ``audit_label`` events
    of :func:`lynx.monitor.labels.label_audits`; :meth:`observe` returns the monitor's own
    events (``bound``, ``alarm``, ``response``, ``cleared``, ``recalibrated``), and
    :attr:`overrides` is what the engine should serve per group.
    """

    def __init__(self, policy, cfg: MonitorConfig | dict | None = None):
        self.policy = policy
        self.cfg = parse_monitor(cfg) if cfg is not None else MonitorConfig()
        self.groups: dict[str, Group] = {}
        self.ignored_groups = 0
        self.requests = 0  # events seen, all groups

    # -- references -------------------------------------------------------------------
    def _set_reference(self, g: Group, condition: str | None) -> None:
        """Compare ``g`` with calibration ``condition`` from now on (fresh tests)."""
        if g.reference is not None and g.reference != condition:
            g.retired.add(g.reference)
        g.reference, g.thresholds, g.risks, g.drift, g.notes = condition, {}, {}, None, []
        g.window = deque(maxlen=self.cfg.window)
        g.alarm = g.alarm_request = None
        g.raised = set()
        cals = self.policy.calibrations if self.policy is not None else None
        if condition is None or cals is None or condition not in cals:
            g.notes.append("no calibration served this group: nothing to compare with")
            return
        cal = cals[condition]
        t = cal.traces
        g.drift = DriftTest(first_cue_positions(t), self.cfg.test_level, bins=self.cfg.drift_bins, seed=self.cfg.seed)
        if t.agreement is None:
            g.notes.append(f"calibration {condition} has no agreement labels: the live risk cannot be compared with it")
            return
        level = self.cfg.test_level / len(self.cfg.alphas)
        for a in self.cfg.alphas:
            thr = cal.threshold(a).threshold
            ref = trace_losses(t, exit_cues(t, np.array([thr])), "answer-change")[:, 0]
            g.thresholds[a] = thr
            g.risks[a] = RiskBound(ref, level, self.cfg.tolerance, v_opt=0.25 * self.cfg.risk_horizon)

    def _group(self, event: dict) -> Group | None:
        key = event.get("group") or "default"
        g = self.groups.get(key)
        if g is None:
            if len(self.groups) >= MAX_GROUPS:
                self.ignored_groups += 1
                return None
            g = self.groups[key] = Group(key, event.get("temperature"), event.get("domain"))
            self._set_reference(g, event.get("condition"))
        elif (cond := event.get("condition")) is not None and cond != g.reference and cond not in g.retired and not g.response_active:
            self._set_reference(g, cond)  # the engine now serves another calibration (reloaded)
        return g

    # -- the stream -------------------------------------------------------------------
    def observe(self, event: dict) -> list[dict]:
        """Take one engine / labeller event; return the monitor's events it caused."""
        kind = event.get("event")
        if kind not in ("request", "audit_label"):
            return []
        g = self._group(event)
        if g is None:
            return []
        out: list[dict] = []
        if kind == "request":
            self.requests += 1
            g.requests += 1
            if g.drift is not None and not g.response_active:
                g.drift.update(int(event.get("first_cue_position") or 0))
        else:
            g.audits += 1
            g.window.append(event)
            for a, rb in g.risks.items():
                rb.update(audit_loss(event["cues"], g.thresholds[a]))
            out.append(
                {
                    "event": "bound",
                    "group": g.key,
                    "request": g.requests,
                    "audits": g.audits,
                    "risk": {str(a): {k: rb.state()[k] for k in ("n", "rate", "lower", "upper", "alarm_level")} for a, rb in g.risks.items()},
                    "drift_martingale": None if g.drift is None else g.drift.value,
                    "drift_reject_above": None if g.drift is None else g.drift.reject_threshold,
                    "response_active": g.response_active,
                }
            )
        out += self._check(g)
        return [e | {"time": time.time()} for e in out]

    def _check(self, g: Group) -> list[dict]:
        events: list[dict] = []
        # each test's first crossing is reported on its own (their detection delays differ)
        risky = [a for a, rb in g.risks.items() if rb.alarm]
        crossed = {"risk": bool(risky), "drift": g.drift is not None and g.drift.alarm}
        for kind, hit in crossed.items():
            if hit and kind not in g.raised:
                g.raised.add(kind)
                g.first_alarm.setdefault(kind, g.requests)
                if kind == "risk":
                    detail = (
                        f"live answer-change risk at alpha {', '.join(map(str, risky))} is above the calibration's "
                        f"(lower bound {max(g.risks[a].lower for a in risky):.3f} > {min(g.risks[a].alarm_level for a in risky):.3f})"
                    )
                else:
                    assert g.drift is not None  # only a drift test raises a drift alarm
                    detail = f"the probe's scores drifted from calibration {g.reference}'s (martingale {g.drift.value:.3g} > {g.drift.reject_threshold:g})"
                log.warning("lynx monitor: %s alarm for %s after %d requests: %s; response: %s", kind, g.key, g.requests, detail, self.cfg.response)
                events.append(
                    {"event": "alarm", "group": g.key, "kind": kind, "alphas": risky, "request": g.requests, "audits": g.audits, "detail": detail, "response": self.cfg.response}
                )
        if g.response_active:
            return events + self._respond(g)
        if g.alarm is not None or not events:
            return events
        g.alarm, g.alarm_request = events[0]["kind"], g.requests
        if self.cfg.response != "warn":
            g.response_active = True
            # fresh sequences from the alarm on: they decide when the response ends (or feed the recalibration)
            g.risks = {a: rb.restarted() for a, rb in g.risks.items()}
            g.window = deque(maxlen=self.cfg.window)
            events.append({"event": "response", "group": g.key, "response": self.cfg.response, "request": g.requests})
        return events

    def _respond(self, g: Group) -> list[dict]:
        if self.cfg.response == "recalibrate" and len(g.window) >= self.cfg.min_audits:
            return self._recalibrate(g)
        if g.risks and all(rb.clear for rb in g.risks.values()):
            g.response_active = False
            log.warning("lynx monitor: %s cleared after %d requests (live risk bounded below the alarm level again)", g.key, g.requests)
            self._set_reference(g, g.reference)  # fresh tests against the same calibration
            return [{"event": "cleared", "group": g.key, "request": g.requests}]
        return []

    def _recalibrate(self, g: Group) -> list[dict]:
        from lynx.monitor.recalibrate import store_calibration

        if g.temperature is None:  # no condition to store it under: the group stays conservative
            return []
        try:
            key, folder = store_calibration(self.policy, list(g.window), g.temperature, g.domain)
        except (InvalidInput, OSError) as e:  # e.g. a read-only probe folder: stay conservative, say why, try again later
            log.warning("lynx monitor: recalibrating %s failed (%s); its requests stay conservative", g.key, e)
            g.window = deque(maxlen=self.cfg.window)
            return [{"event": "recalibration_failed", "group": g.key, "reason": str(e)[:300], "request": g.requests}]
        self.policy = self.policy.reloaded()
        log.warning("lynx monitor: %s recalibrated on %d audits since the alarm; condition %s stored in %s and served", g.key, len(g.window), key, folder)
        n = len(g.window)
        g.response_active = False
        self._set_reference(g, key)
        return [{"event": "recalibrated", "group": g.key, "condition": key, "folder": str(folder), "audits": n, "request": g.requests}]

    # -- what the engine should do ---------------------------------------------------------
    @property
    def overrides(self) -> dict[str, str]:
        """Group -> response the engine serves its new requests with (``conservative``)."""
        return {k: "conservative" for k, g in self.groups.items() if g.response_active}

    def state(self) -> dict:
        return {
            "requests": self.requests,
            "config": {k: getattr(self.cfg, k) for k in ("audit_fraction", "alphas", "test_level", "tolerance", "response")},
            "groups": {k: g.state() for k, g in self.groups.items()},
            "ignored_groups": self.ignored_groups,
            "overrides": self.overrides,
        }


def first_cue_positions(traces) -> np.ndarray:
    """The drift statistic of each calibration trace: thinking tokens up to its first cue (all of
    its thinking tokens when it has none), as the engine reports it for a live request."""
    t = traces
    return np.array([t.position[t.offsets[i]] if t.offsets[i + 1] > t.offsets[i] else t.total[i] for i in range(t.n_traces)], dtype=np.int64)


def audit_loss(cues, threshold: float) -> float:
    """1 when exiting at the first cue whose score clears ``threshold`` changes the answer."""
    if math.isinf(threshold):
        return 0.0
    for _, score, agrees in cues:
        if score >= threshold:
            return 0.0 if agrees else 1.0
    return 0.0

"""The monitor next to an in-process engine (``lynx.generate``, ``lynx run``, ``lynx eval``,
the benchmark): engine events in, labels by forced exits on the same engine, the tests, and the
responses sent back to the engine — plus a JSONL log that ``lynx monitor`` reads.

Forced exits run between batches, after the batch's requests finished, on the same engine
(their prefixes are in vLLM's prefix cache from the audited request itself), so they never
compete with the traffic inside a step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lynx.config import parse_monitor
from lynx.cues import CueMatcher
from lynx.monitor.labels import Complete, label_audits
from lynx.monitor.live import LiveMonitor
from lynx.monitor.metrics import write_state
from lynx.rollouts import answer_stop_ids

#: engine events the monitor reads (the others — exits, disabled requests — are the engine's audit)
MONITOR_INPUT = ("request", "audit_trace")


class Monitoring:
    """Glue of one engine and one :class:`~lynx.monitor.live.LiveMonitor`.

    Parameters
    ----------
    policy : ExitPolicy
        The probe folder the engine serves.
    cfg : MonitorConfig or dict
    tokenizer
        The model's tokenizer (cue matching, exit string, answer parsing).
    complete : callable
        ``complete(prompts, max_tokens, stop_ids) -> ids``: greedy continuations on the engine.
    set_overrides, reload : callable
        Send the monitor's per-group responses to the engine; make the engine serve the
        probe folder's calibrations again (after a ``recalibrate`` response).
    log_path : path, optional
        JSONL file the labels and the monitor's events are appended to (the engine's audit file).
    """

    def __init__(self, policy, cfg, *, tokenizer, complete: Complete, set_overrides: Callable[[dict], None], reload: Callable[[], None], log_path: str | Path | None = None):
        self.cfg = parse_monitor(cfg)
        self.monitor = LiveMonitor(policy, self.cfg)
        self.tokenizer, self.complete = tokenizer, complete
        self.matcher = CueMatcher(tokenizer, cues=tuple(policy.cues), thinking=policy.thinking)
        self.exit_ids = tokenizer(policy.exit_string, add_special_tokens=False)["input_ids"]
        self.stops = sorted(answer_stop_ids(tokenizer))
        self.set_overrides, self.reload = set_overrides, reload
        self.log_path = Path(log_path) if log_path else None
        self._overrides: dict[str, str] = {}
        #: stream totals: tokens generated for the traffic and for the audits' forced exits
        self.totals = dict.fromkeys(("requests", "exited", "audits", "output_tokens", "audit_output_tokens", "extra_tokens"), 0)

    def observe(self, events: list[dict], labelled: list[dict] | None = None) -> list[dict]:
        """Take a batch's engine events (any order of requests); returns the monitor's events.
        ``labelled``: audits labelled earlier (a restarted follower), fed as they are."""
        out: list[dict] = []
        traces = []
        for lab in labelled or ():
            self.totals["extra_tokens"] += int(lab.get("extra_tokens") or 0)
            out += self.monitor.observe(lab)
        for e in events:
            kind = e.get("event")
            if kind == "request":
                self.totals["requests"] += 1
                self.totals["exited"] += bool(e.get("exited"))
                self.totals["output_tokens"] += int(e.get("output_tokens") or 0)
                if e.get("audited"):
                    self.totals["audits"] += 1
                    self.totals["audit_output_tokens"] += int(e.get("output_tokens") or 0)
                out += self.monitor.observe(e)
            elif kind == "audit_trace":
                traces.append(e)
        labels = label_audits(
            traces,
            tokenizer=self.tokenizer,
            matcher=self.matcher,
            exit_ids=self.exit_ids,
            stop_ids=self.stops,
            complete=self.complete,
            answer_tokens=self.cfg.answer_tokens,
            kind=self.cfg.grader,
        )
        for lab in labels:
            self.totals["extra_tokens"] += lab["extra_tokens"]
            out.append(lab)
            out += self.monitor.observe(lab)
        if any(e.get("event") == "recalibrated" for e in out):
            self.reload()
        overrides = self.monitor.overrides
        if overrides != self._overrides:
            self.set_overrides(overrides)
            self._overrides = overrides
        self._log(out)
        write_state("monitor", self.state())
        return out

    def state(self) -> dict:
        return self.monitor.state() | {"totals": dict(self.totals)}

    def _log(self, events: list[dict]) -> None:
        if self.log_path is None or not events:
            return
        with self.log_path.open("a") as f:
            f.write("".join(json.dumps(e) + "\n" for e in events))

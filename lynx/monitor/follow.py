"""The monitor behind an OpenAI server (``vllm serve`` with lynx's plugin): ``lynx monitor
AUDIT.jsonl --follow --server URL --probe P``.

The engine writes its events into the audit file (``audit_path`` in its lynx settings, with a
``monitor`` section): a ``request`` summary of every monitored request and the whole trace of
each shadow audit. This process tails the file, sends each audit's forced exits to the server
itself (``/v1/completions`` with the token ids, greedy — the server's prefix cache holds the
audited request's prefix), labels them, runs the tests, appends its own events to the file, and
answers an alarm through ``AUDIT.jsonl.control.json``, which the engine reads at most once a
second (overrides; a ``reload`` counter after a ``recalibrate`` response wrote a condition into
the probe folder the server serves). Its state goes to the server's Prometheus ``/metrics``
(:mod:`lynx.monitor.metrics`).

Restartable: on start it reads the file from the beginning; audits already labelled are not
labelled again (their labels are replayed), so a restarted sidecar rebuilds the same state.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from lynx.errors import InvalidInput
from lynx.monitor.driver import Monitoring


def http_complete(server: str, model: str, tokenizer, timeout: float = 300.0, priority: int | None = None):
    """``complete(prompts, max_tokens, stop_ids) -> ids`` through the server's completions API.
    ``priority`` (a server started with ``--scheduling-policy priority``; larger = later): the
    audits' forced exits then yield to the traffic."""
    url = server.rstrip("/") + "/v1/completions"

    def complete(prompts, max_tokens, stop_ids):
        body = {
            "model": model,
            "prompt": [list(map(int, p)) for p in prompts],
            "max_tokens": int(max_tokens),
            "temperature": 0.0,
            "stop_token_ids": list(map(int, stop_ids)),
            "return_token_ids": True,
            "skip_special_tokens": False,
            "include_stop_str_in_output": True,
        } | ({"priority": int(priority)} if priority is not None else {})
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            choices = sorted(json.loads(r.read())["choices"], key=lambda c: c["index"])
        return [c.get("token_ids") or tokenizer(c["text"], add_special_tokens=False)["input_ids"] for c in choices]

    return complete


def served_model(server: str, timeout: float = 30.0) -> str:
    with urllib.request.urlopen(server.rstrip("/") + "/v1/models", timeout=timeout) as r:
        return json.loads(r.read())["data"][0]["id"]


class ControlFile:
    """``AUDIT.jsonl.control.json``: what the engine should serve (written atomically)."""

    def __init__(self, audit_path: Path):
        self.path = Path(str(audit_path) + ".control.json")
        self.reload = 0
        self.overrides: dict = {}
        if self.path.exists():
            try:
                d = json.loads(self.path.read_text())
                self.reload, self.overrides = int(d.get("reload", 0)), dict(d.get("overrides") or {})
            except (ValueError, OSError):
                pass

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"overrides": self.overrides, "reload": self.reload}))
        os.replace(tmp, self.path)

    def set_overrides(self, overrides: dict) -> None:
        self.overrides = dict(overrides)
        self.write()

    def request_reload(self) -> None:
        self.reload += 1
        self.write()


def follow(
    audit_path: str | Path, server: str, policy, cfg=None, *, once: bool = False, poll: float = 1.0, model: str | None = None, on_events=None, priority: int | None = None
) -> Monitoring:
    """Tail ``audit_path`` and monitor it (forever, or one pass over what is there with ``once``)."""
    from transformers import AutoTokenizer

    from lynx.models import resolve_model

    audit_path = Path(audit_path)
    if not audit_path.exists():
        raise InvalidInput(f"audit file {audit_path} does not exist: serve with lynx settings audit_path and monitor")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(policy.model).path)
    control = ControlFile(audit_path)
    # the control file's overrides are the previous run's: start from none, the replay re-derives them
    control.set_overrides({})
    mon = Monitoring(
        policy,
        cfg or {},
        tokenizer=tokenizer,
        complete=http_complete(server, model or served_model(server), tokenizer, priority=priority),
        set_overrides=control.set_overrides,
        reload=control.request_reload,
        log_path=audit_path,
    )
    labelled: dict[str, dict] = {}
    offset, catching_up = 0, True
    while True:
        with audit_path.open() as f:
            f.seek(offset)
            chunk = f.read()
        end = chunk.rfind("\n") + 1  # only whole lines; a line being written waits for the next pass
        lines, offset = chunk[:end].splitlines(), offset + len(chunk[:end].encode())
        events = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == "audit_label" and e.get("tag"):
                labelled[e["tag"]] = e
            events.append(e)
        fresh = [e for e in events if not (e.get("event") == "audit_trace" and e.get("tag") in labelled)]
        replayed = [labelled[e["tag"]] for e in events if e.get("event") == "audit_trace" and e.get("tag") in labelled]
        if catching_up:  # the monitor's events of an earlier run are in the file already: rebuild, do not re-log
            mon.log_path = None if labelled else audit_path
        if fresh or replayed:
            out = mon.observe(fresh, labelled=replayed)
            for e in out:
                if e.get("event") == "audit_label" and e.get("tag"):
                    labelled[e["tag"]] = e
            if on_events is not None:
                on_events(out)
        if len(labelled) > 4 * mon.cfg.window:  # bounded: keep the latest labels only
            for tag in list(labelled)[: len(labelled) - 2 * mon.cfg.window]:
                del labelled[tag]
        mon.log_path, catching_up = audit_path, False
        if once:
            return mon
        time.sleep(poll)

"""Engine-independent exit logic, shared by the transformers engine and both vLLM runners.

Per request that opted in (``extra_args`` ``lynx_alpha``, or ``lynx_threshold``, or
``lynx_record``) it keeps a small state; per step it is told the request's tokens and the
probe score of its last token and answers "force token t" or nothing:

* last token completes a cue word inside an open thinking span and the score clears the
  request's threshold -> start the exit: force ``exit_ids[0]``, record an audit entry;
* an exit is under way -> force the next exit token until the string is complete;
* otherwise -> leave the logits alone (requests that did not opt in are never touched).

The convention is the one collection used: the cue token itself is kept, the exit string
follows it, then the model answers freely.

With a live monitor configured (``HookConfig.monitor``), every request that asked for an
alpha also keeps its cues' positions and scores, and at its end the controller emits a
``request`` summary (the label-free drift statistic is in it); a seeded share of them are
*shadow audits*, which never exit and whose whole trace is emitted (``audit_trace``) for
:mod:`lynx.monitor` to label by forced exits. A monitor's responses come back as
per-condition overrides (:meth:`ExitController.set_overrides`), in-process through the engine
or, behind a server, through a small control file next to the audit file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lynx.calibrate.conditions import Condition
from lynx.config import parse_monitor
from lynx.cues import WINDOW
from lynx.engines.events import EventSink
from lynx.errors import InvalidInput
from lynx.exit_policy import ExitPolicy, HookConfig, RequestOptions

if TYPE_CHECKING:
    from lynx.probe.artifact import Probe
    from lynx.probe.scoring import OnlineContext

log = logging.getLogger("lynx.exit")
#: distinct uncalibrated (temperature, domain) pairs warned about once each; every request is audited anyway
MAX_WARNED_CONDITIONS = 64
#: how often (seconds) a served engine looks at its monitor's control file / rewrites its metrics
POLL_SECONDS = 1.0
#: responses an override can ask for (lynx.monitor): the most conservative calibrated threshold
OVERRIDES = ("conservative",)


def audit_selected(fraction: float, seed: int, tag: str | None, prompt: list[int], request_seed: int | None) -> bool:
    """Is this request a shadow audit? A seeded hash of the request — its tag, else its prompt
    and sampling seed — so the choice is reproducible and independent of how it is sampled."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    key = f"{seed}\0tag\0{tag}" if tag is not None else f"{seed}\0prompt\0{request_seed}\0{','.join(map(str, prompt))}"
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return h < fraction * 2.0**64


def condition_key(temperature: float | None, domain: str | None) -> str:
    """The key of the condition a request runs under (its temperature and domain), as a
    calibration of it would be stored: ``T1``, ``T0.6-gsm8k`` (``default`` without a temperature)."""
    if temperature is None:
        return "default" + (f"-{domain}" if domain else "")
    return Condition(temperature, domain).key


@dataclass
class RequestState:
    prompt: list[int]
    output: list[int]  # live list owned by vLLM (V1); the token history up to the cue (V2)
    threshold: float | None  # None: record only
    alpha: float | None
    mode: str | None
    tag: str | None
    record: bool
    condition: str | None = None  # key of the calibrated condition the threshold came from
    uncalibrated: bool = False  # no calibrated condition matched: the fallback's threshold
    exit_from: int | None = None  # output length when the exit started (the cue is output[exit_from - 1])
    disabled: bool = False
    seen: int = 0  # cue checks done up to this output length
    thinking: bool | None = None  # is the thinking span open after output[:seen - 1]? (None: not looked yet)
    # -- monitored requests only (HookConfig.monitor) --
    cues: list | None = None  # (position, score) of every cue seen; None: not monitored
    audit: bool = False  # a shadow audit: never exits, its trace is emitted at the end
    group: str | None = None  # the request's own condition key (temperature, domain)
    temperature: float | None = None
    domain: str | None = None
    response: str | None = None  # an override a monitor asked for (e.g. "conservative")
    # -- a probe with a tree head (v2, or the context-only baseline) --
    head: Probe | None = None  # the Probe whose final score the threshold applies to (None: the engine's MLP score)
    online: OnlineContext | None = None  # its per-request memory (lynx.probe.scoring.OnlineContext)
    think_start: int | None = None  # index of the thinking span's opener in prompt + output
    cue_word: str | None = None  # the word of the cue the last token completed


class ExitController:
    """The exit rule of one engine, and the state it keeps: per-request states (owned by the
    engine's processor, released with the request) and an :class:`EventSink` for audits and
    recorded features."""

    def __init__(self, hook: HookConfig | dict | None, tokenizer, policy: ExitPolicy | None = None):
        """``hook``: the engine's lynx settings; ``tokenizer``: the model's tokenizer or a path
        to it; ``policy``: the probe folder already loaded (else loaded from ``hook.probe``)."""
        from lynx.cues import DEFAULT_CUES, CueMatcher

        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        policy, hook = ExitPolicy.resolve(hook, policy)
        self.hook, self.policy, self.tokenizer = hook, policy, tokenizer
        self.matcher = CueMatcher(self.tokenizer, cues=tuple(hook.cues or DEFAULT_CUES), thinking=hook.thinking)
        self.candidates = self.matcher.candidate_ids
        # the exit string given (or the probe's), else the thinking format's own
        self.exit_ids = list(hook.exit_ids or self.tokenizer(hook.exit_string or self.matcher.format.exit_string, add_special_tokens=False)["input_ids"])
        self.audit_path = Path(hook.audit_path) if hook.audit_path else None
        if self.audit_path is not None:  # `--audit runs/audit.jsonl` in a fresh folder: the folder is made, not a crash at the first event
            self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        self.events = EventSink(keep=hook.keep_events, max_requests=hook.max_kept_requests)
        self._warned_conditions: set = set()
        self.monitor = parse_monitor(hook.monitor)
        self.overrides: dict[str, str] = {}  # request condition key -> response (set by a monitor)
        self.counts = dict.fromkeys(("requests", "exits", "audits", "finished", "disabled", "uncalibrated", "overridden"), 0)
        self._control_path = Path(str(self.audit_path) + ".control.json") if self.audit_path is not None else None
        self._control_seen: tuple | None = None
        self._reloads = 0
        self._polled = 0.0
        self._metrics_written = 0.0

    def set_overrides(self, overrides: dict[str, str]) -> None:
        """Serve new requests of the given conditions (request condition keys) with a monitor's
        response: ``conservative`` = the most conservative calibrated threshold at the request's
        alpha (no exit when no condition is stricter than its own). Replaces the previous set."""
        bad = {k: v for k, v in overrides.items() if v not in OVERRIDES}
        if bad:
            raise InvalidInput(f"unknown lynx override(s) {bad}; known: {', '.join(OVERRIDES)}")
        self.overrides = dict(overrides)

    def poll_control(self, now: float | None = None) -> None:
        """Behind a server: apply the monitor's control file (overrides, reload requests), at
        most once per :data:`POLL_SECONDS`. A missing or half-written file changes nothing."""
        now = time.monotonic() if now is None else now
        if self._control_path is None or now - self._polled < POLL_SECONDS:
            return
        self._polled = now
        try:
            st = self._control_path.stat()
            if self._control_seen == (st.st_mtime_ns, st.st_size):
                return
            control = json.loads(self._control_path.read_text())
            self._control_seen = (st.st_mtime_ns, st.st_size)
        except (OSError, ValueError):
            return
        try:
            self.set_overrides(dict(control.get("overrides") or {}))
        except (InvalidInput, TypeError, ValueError) as e:
            log.warning("lynx: ignoring the monitor's control file %s: %s", self._control_path, e)
        if int(control.get("reload", 0) or 0) != self._reloads:
            self._reloads = int(control.get("reload", 0) or 0)
            self.reload_calibrations()

    def reload_calibrations(self) -> None:
        """Serve the calibrations now in the probe folder (new requests; running ones keep theirs)."""
        if self.policy is not None:
            self.policy = self.policy.reloaded()

    @property
    def watch_ids(self) -> list[int]:
        """Tokens after which a request may need a decision: those that can complete a cue,
        and the exit string's tokens but its last (the next exit token is then forced)."""
        return sorted(self.candidates | set(self.exit_ids[:-1]))

    def watch_table(self, vocab_size: int, device=None):
        """:attr:`watch_ids` as a boolean table over a ``vocab_size`` vocabulary (ids beyond it
        cannot be sampled and are left out), so an engine finds the rows whose latest token is
        watched with one lookup for the whole batch."""
        import torch

        table = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        table[[t for t in self.watch_ids if t < vocab_size]] = True
        return table

    # -- requests -----------------------------------------------------------------
    def new_request(
        self, extra_args: dict | None, prompt: Sequence[int] | None, output: list[int], temperature: float | None = None, seed: int | None = None
    ) -> RequestState | None:
        """The state of a request that opted in (None: untouched). Bad switches raise
        :class:`~lynx.errors.InvalidInput` (vLLM refuses them earlier, in ``validate_params``).

        ``temperature``: the request's sampling temperature, which (with ``lynx_domain``)
        selects the calibrated condition its threshold comes from; a request outside every
        calibrated condition gets the engine's fallback and an ``uncalibrated_condition``
        audit event. ``seed``: the request's sampling seed (part of the audit choice when the
        request has no tag)."""
        opts = RequestOptions.parse(extra_args)
        if opts is None:
            return None
        if self.monitor is not None:
            self.poll_control()
        state = RequestState(list(prompt or []), output, None, None, None, opts.tag, opts.record)
        policy = self.policy
        if policy is not None and (opts.alpha is not None or opts.threshold is not None):
            try:
                policy = policy.scorer(opts.scorer)
            except InvalidInput as e:  # this request only: a baseline the probe folder does not have
                state.disabled = True
                self._audit(state, {"event": "disabled", "reason": str(e)})
                return state
            if policy.probe.head is not None:
                from lynx.probe.scoring import OnlineContext

                state.head, state.online = policy.probe, OnlineContext()
        if opts.threshold is not None:
            state.threshold, state.mode = opts.threshold, "threshold"
        elif opts.alpha is not None:
            if policy is None or not policy.is_calibrated:
                state.disabled = True
                reason = "the probe folder has no calibration; run lynx calibrate, or pass lynx_threshold"
                log.warning("lynx disabled for a request: %s", reason)
                self._audit(state, {"event": "disabled", "reason": reason})
            else:
                try:  # the calibrations' own choice: an engine that cannot tell the temperature never gets the API's default one
                    assert policy.calibrations is not None  # is_calibrated
                    d = policy.calibrations.threshold(opts.alpha, opts.mode, opts.method, temperature=temperature, domain=opts.domain, fallback=self.hook.fallback)
                except InvalidInput as e:  # e.g. a mode or risk no calibration supports: this request only, never the engine
                    state.disabled = True
                    log.warning("lynx disabled for a request: %s", e)
                    self._audit(state, {"event": "disabled", "reason": str(e)})
                    return state
                state.threshold, state.alpha, state.mode = d.threshold, d.alpha, d.mode + (f"/{d.method}" if d.method else "")
                state.condition, state.uncalibrated = d.condition, d.uncalibrated_condition
                if d.uncalibrated_condition:
                    self._flag_uncalibrated(state, temperature, opts.domain, d)
                if self.monitor is not None and not opts.record and policy is self.policy:  # baselines are not monitored
                    self._monitor_request(state, opts, temperature, seed)
        return state

    def _monitor_request(self, state: RequestState, opts, temperature, seed) -> None:
        """A monitored request: keep its cues; a shadow audit never exits; a monitor's override applies."""
        assert self.monitor is not None and state.alpha is not None  # called for an alpha request of a monitored engine only
        state.cues, state.temperature, state.domain = [], temperature, opts.domain
        state.group = condition_key(temperature, opts.domain)
        self.counts["requests"] += 1
        if state.uncalibrated:
            self.counts["uncalibrated"] += 1
        state.audit = audit_selected(self.monitor.audit_fraction, self.monitor.seed, opts.tag, state.prompt, seed)
        if state.audit:
            self.counts["audits"] += 1
            return
        response = self.overrides.get(state.group)
        if response == "conservative":
            strictest = max(d.threshold for d in self._all_decisions(state.alpha))
            state.threshold = strictest if strictest > state.threshold else math.inf
            state.response = response
            self.counts["overridden"] += 1

    def _all_decisions(self, alpha: float) -> list:
        assert self.policy is not None and self.policy.calibrations is not None  # an alpha request's policy is calibrated
        cals = self.policy.calibrations
        return [cals[k].threshold(alpha) for k in cals]

    def _flag_uncalibrated(self, state: RequestState, temperature, domain, decision) -> None:
        """Audit every request outside the calibrated conditions; warn once per condition."""
        self._audit(
            state,
            {
                "event": "uncalibrated_condition",
                "temperature": temperature,
                "domain": domain,
                "fallback": self.hook.fallback,
                "threshold": None if math.isinf(decision.threshold) else decision.threshold,
                "alpha": decision.alpha,
                "detail": decision.fallback,
            },
        )
        key = (temperature, domain)
        if key not in self._warned_conditions and len(self._warned_conditions) < MAX_WARNED_CONDITIONS:
            self._warned_conditions.add(key)  # bounded: domains come from requests
            log.warning("lynx: %s; no guarantee holds for these requests", decision.fallback)

    # -- per step -----------------------------------------------------------------
    def forced_token(self, state: RequestState, score: float | None, features=None) -> int | None:
        """The token to force for this request at this step, or None (one request, score known)."""
        if state.exit_from is not None:
            return self.exit_token(state, len(state.output), state.output[-1]) if state.output else None
        pos = self.new_cue(state)
        return None if pos is None else self.decide(state, pos, self.final_scores([(state, pos)], [score])[0], features)

    def step_rows(self, rows, score_rows, features=None) -> list[tuple[int, int]]:
        """``(row, token)`` pairs to force this step, for ``rows`` = ``(row, state)`` pairs.

        Why batched and lazy: at most steps no request sits on a cue, so the probe need not
        run at all; ``score_rows(list_of_rows)`` (probe scores of those rows, or None when
        unavailable) is called once, only for the rows whose last token completed a cue inside
        an open thinking span. The common case is one membership test per row.
        """
        forced: list[tuple[int, int]] = []
        cues: list[tuple[int, RequestState, int]] = []
        candidates = self.candidates
        # one pass in a comprehension (the per-step cost of every opted-in row): only rows that
        # are exiting or whose last token could complete a cue need more than this
        busy = [(row, s) for row, s in rows if s.exit_from is not None or (s.output and s.output[-1] in candidates)]
        for row, state in busy:
            if state.exit_from is None:
                pos = self.new_cue(state)
                if pos is not None:
                    cues.append((row, state, pos))
            else:
                tok = self.exit_token(state, len(state.output), state.output[-1])
                if tok is not None:
                    forced.append((row, tok))
        if cues:
            scores = self.final_scores([(s, p) for _, s, p in cues], score_rows([row for row, _, _ in cues]) or [None] * len(cues))
            for (row, state, pos), score in zip(cues, scores, strict=True):
                # features are gathered only for a request that records them (collection)
                tok = self.decide(state, pos, score, features[row] if features is not None and state.record else None)
                if tok is not None:
                    forced.append((row, tok))
        return forced

    def exit_token(self, state: RequestState, n_output: int, last_token: int) -> int | None:
        """The next token of an exit under way, given the request's output length and latest
        token (None once the exit string is complete or the sampled tokens left it).

        The one exit rule of every engine: the exit started after ``exit_from`` output tokens
        (the cue the last of them), ``exit_ids[0]`` was forced then, and ``exit_ids[k]`` is
        forced while the output has ``exit_from + k`` tokens and the last is ``exit_ids[k - 1]``."""
        if state.disabled or state.exit_from is None:
            return None
        k = n_output - state.exit_from
        if 1 <= k < len(self.exit_ids) and last_token == self.exit_ids[k - 1]:
            return self.exit_ids[k]
        return None

    def new_cue(self, state: RequestState) -> int | None:
        """Position (in prompt + output) of a cue that the request's last token just completed
        inside an open thinking span, else None. Each output length is examined once.

        Cheap at decode time: the thinking state is carried forward over the new tokens only
        (no rescan of the sequence) and the cue word is matched on the last few tokens."""
        out = state.output
        if state.disabled or state.exit_from is not None or not out or out[-1] not in self.candidates or len(out) <= state.seen:
            return None
        prev, n, m = state.seen, len(out), self.matcher
        state.seen = n
        if state.thinking is None:  # first look: the thinking state the prompt leaves
            state.thinking = m.thinking_open(state.prompt, len(state.prompt) - 1) if state.prompt else False
        open_, lo, markers = state.thinking, max(prev - 1, 0), m.marker_ids
        if any(t in markers for t in out[lo : n - 1]):  # a marker may end among the tokens since the last look (rare)
            seq = state.prompt + list(out)  # a marker of several tokens may begin in the prompt
            open_ = m.thinking_after(seq, len(state.prompt) + lo, len(state.prompt) + n - 1, open_)
        state.thinking = open_
        if not open_:
            return None
        w = WINDOW + 1
        tail = out[-w:] if n >= w else state.prompt[max(0, len(state.prompt) - (w - n)) :] + out
        cue = m.match_at(tail, len(tail) - 1)
        if cue is None:
            return None
        state.cue_word = cue.word
        return len(state.prompt) + n - 1

    def decide(self, state: RequestState, pos: int, score: float | None, features=None) -> int | None:
        """At a cue: record it (collection), then start the exit if the final score
        (:meth:`final_scores`) clears the request's threshold. A missing or non-finite score
        disables lynx for the request."""
        out = state.output
        if state.record:  # collection (no probe) or a test: the features and the score compared with the threshold
            self.events.record(state.tag, pos, None if features is None else features.detach().float().cpu().numpy().copy(), score)
        if state.cues is not None and score is not None and math.isfinite(score):
            state.cues.append((pos, float(score)))
        if state.threshold is None or state.audit:
            return None
        if score is None or not math.isfinite(score):
            state.disabled = True
            log.warning("lynx probe score unavailable (%r); lynx disabled for this request", score)
            self._audit(state, {"event": "disabled", "reason": f"probe score {score!r}", "cue_position": pos})
            return None
        if score >= state.threshold:
            state.exit_from = len(out)
            self._audit(
                state,
                {
                    "event": "exit",
                    "cue_position": pos,
                    "cue_text": self.matcher._text(out[-1]),
                    "score": float(score),
                    "threshold": state.threshold,
                    "alpha": state.alpha,
                    "mode": state.mode,
                    "output_tokens": len(out),
                    "condition": state.condition,
                    "uncalibrated_condition": state.uncalibrated,
                }
                | ({"response": state.response} if state.response else {}),
            )
            if state.cues is not None:
                self.counts["exits"] += 1
            return self.exit_ids[0]
        return None

    def final_scores(self, cues: list[tuple[RequestState, int]], scores: Sequence[float | None]) -> list:
        """The scores the thresholds apply to, for a step's ``(state, cue position)`` pairs given
        their MLP scores (None where unavailable). A v1 probe's score is its MLP's; a probe with
        a tree head (v2, context-only) scores the columns the calibration replayed
        (:mod:`lynx.probe.scoring`), with one pass of the trees per probe for the whole step.
        A missing or non-finite MLP score stays as it is (:meth:`decide` then disables the request)."""
        pending: dict[int, tuple] = {}  # id(probe) -> (probe, [indices], [rows])
        out = list(scores)
        for i, ((state, pos), score) in enumerate(zip(cues, scores, strict=True)):
            head = state.head
            if head is None or (head.has_mlp and (score is None or not math.isfinite(score))):
                continue
            if state.think_start is None:  # the thinking span's first opener, found once per request (as in collection)
                at = self.matcher.span(state.prompt + list(state.output))[0]
                if at is None:
                    at = pos
                state.think_start = at
            _, idx, rows = pending.setdefault(id(head), (head, [], []))
            idx.append(i)
            assert state.online is not None and state.cue_word is not None  # set with state.head (new_request) and at the cue (cue_position)
            rows.append(state.online.advance(head, pos - state.think_start, state.think_start, state.cue_word, score))
        if pending:
            from lynx.probe.scoring import online_scores

            for head, idx, rows in pending.values():
                values: Sequence[float | None]
                try:
                    values = online_scores(head, rows)
                except Exception as e:  # never take the engine down for the probe: these requests are disabled
                    log.warning("lynx probe head failed (%s: %s)", type(e).__name__, e)
                    values = [None] * len(idx)
                for i, v in zip(idx, values, strict=True):
                    out[i] = v
        return out

    # -- the end of a request ---------------------------------------------------------
    def finish_request(self, state: RequestState) -> None:
        """A monitored request ended (the engine released it): emit its ``request`` summary and,
        for a shadow audit, its whole trace; then nothing of it is kept here."""
        if state.cues is None:
            return
        self.counts["finished"] += 1
        if state.disabled:
            self.counts["disabled"] += 1
        m = self.matcher
        ids = state.prompt + list(state.output)
        opened, closed = m.span(ids)
        thinking = 0 if opened is None else (closed if closed is not None else len(ids)) - opened - 1
        exit_pos = None if state.exit_from is None else len(state.prompt) + state.exit_from - 1  # the exit's cue
        summary = {
            "event": "request",
            "group": state.group,
            "temperature": state.temperature,
            "domain": state.domain,
            "alpha": state.alpha,
            "condition": state.condition,
            "uncalibrated_condition": state.uncalibrated,
            "threshold": _finite(state.threshold),
            "response": state.response,
            "audited": state.audit,
            "disabled": state.disabled,
            "exited": state.exit_from is not None,
            "exit_thinking_position": None if exit_pos is None or opened is None else exit_pos - opened,
            "thinking_tokens": thinking,
            "output_tokens": len(state.output),
            "n_cues": len(state.cues),
            "first_score": state.cues[0][1] if state.cues else None,
            # the label-free drift statistic: thinking tokens up to the first cue (all of them without a cue)
            "first_cue_position": (state.cues[0][0] - opened) if state.cues and opened is not None else thinking,
        }
        self._audit(state, summary)
        if state.audit:
            self._audit(
                state,
                {
                    "event": "audit_trace",
                    "group": state.group,
                    "temperature": state.temperature,
                    "domain": state.domain,
                    "condition": state.condition,
                    "alpha": state.alpha,
                    "prompt_ids": list(state.prompt),
                    "output_ids": list(state.output),
                    "cues": [[p, s] for p, s in state.cues],
                },
            )
        state.cues = None  # released: a finished request is never summarised twice
        self.write_metrics()

    def write_metrics(self, now: float | None = None, force: bool = False) -> None:
        """Counters for a served engine's Prometheus ``/metrics`` (:mod:`lynx.monitor.metrics`),
        rewritten at most once per :data:`POLL_SECONDS`."""
        now = time.monotonic() if now is None else now
        if not force and now - self._metrics_written < POLL_SECONDS:
            return
        self._metrics_written = now
        from lynx.monitor.metrics import write_state

        write_state("engine", {"counts": dict(self.counts), "overrides": dict(self.overrides), "probe": str(self.policy.folder) if self.policy is not None else None})

    def _audit(self, state: RequestState, entry: dict) -> None:
        entry = {"tag": state.tag, "time": time.time()} | entry
        self.events.audit(state.tag, entry)
        if self.audit_path is not None:
            with self.audit_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else x


def force(logits, forced: list[tuple[int, int]]):
    """Force ``(row, token)`` pairs: every other token of the row impossible. The one forcing
    step of every engine's processor (transformers, vLLM V1 and V2)."""
    for row, tok in forced:
        logits[row] = float("-inf")
        logits[row, tok] = 0.0
    return logits


def probe_scores(probe, features, errors: list[str], rows: list[int] | None = None):
    """``probe(features[rows])`` (every row when ``rows`` is None), or None if the probe fails
    (wrong shape, dtype, device...): the failure is logged once per message and appended to
    ``errors``, and the requests waiting on these scores are then disabled by
    :meth:`ExitController.decide`, never the engine."""
    try:
        return probe(features if rows is None else features[rows])
    except Exception as e:  # never take the engine down for the probe
        msg = f"lynx probe failed ({type(e).__name__}: {e}); lynx disabled for the requests at a cue"
        if msg not in errors:
            errors.append(msg)
            log.warning(msg)
        return None


def score_rows(probe, features, rows: list[int], errors: list[str]) -> list[float] | None:
    """:func:`probe_scores` of ``rows`` as floats."""
    scores = probe_scores(probe, features, errors, rows)
    return None if scores is None else scores.tolist()

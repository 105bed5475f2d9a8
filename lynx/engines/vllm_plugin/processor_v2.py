"""lynx's logits processor for vLLM's Model Runner V2 (the GPU default).

Interface: ``vllm.v1.worker.gpu.sample.logits_processor.interface``. State is per request
*slot*; each step's ``LogitsContext`` maps logits rows to slots and gives every row's input
token and position. The input token of a decode row is the token sampled last step — the cue
candidate — and the wrapper model published that token's probe features for the same row;
the probe runs only on rows at a cue.
The rows that need a look (input token a cue completer or an exit-string token) are found
on device with one table lookup for the whole batch; only those rows are copied to the host
and handled in Python, and token history is read from the runner's device buffer only when a
candidate cue shows up. Nothing runs while no request has opted in.

**The end of a request.** V2's processor interface has ``add_request`` and ``apply`` but no
removal callback, and the slot a request leaves is recycled for the next one. The monitor
needs each request's end exactly once (its ``request`` summary, a shadow audit's trace), and a
*preempted* request is removed from the runner exactly like a finished one, then re-added
later, in any free slot, as if new. What this module relies on, in vLLM 0.32
(``vllm/v1/worker/gpu/`` and ``vllm/v1/core/sched/``):

* ``model_runner.py: GPUModelRunner.execute_model`` calls ``finish_requests(scheduler_output)``
  first, then ``add_requests``, every (non-dummy) step.
* ``model_runner.py: GPUModelRunner.finish_requests`` removes ``scheduler_output.finished_req_ids``
  and ``scheduler_output.preempted_req_ids`` (``_remove_request`` ->
  ``states.py: RequestState.remove_request``, which frees the slot); the two sets are the only
  place the worker can tell an ended request from a preempted one. lynx wraps this method
  (:func:`observe_runner`, once per process) to see both sets *before* vLLM frees the slots, so
  the slots' token buffers still hold those requests' tokens, and to keep the runner's
  ``req_states`` (its ``index_to_req_id`` names the request ``add_request`` is told about).
* ``core/sched/scheduler.py: Scheduler.schedule``: with the V2 runner a resumed request is sent
  in ``scheduled_new_reqs`` under its own request id, with ``prefill_token_ids`` = its prompt and
  the output so far (``prefill_len > prompt_len``); ``Scheduler._preempt_request`` adds it to
  ``preempted_req_ids``; ``Scheduler._free_request`` puts every ended request, a waiting
  (preempted) one aborted included, in ``finished_req_ids``, sent with the next step — the
  engine runs that step even with nothing left to schedule (``v1/engine/core.py: EngineCore.step``
  runs while ``Scheduler.has_requests()``, which counts finished ids not yet sent).
* ``model_runner.py: GPUModelRunner.add_requests`` calls ``states.py: RequestState.add_request``
  (which sets ``index_to_req_id[slot]``, ``prompt_len.np[slot]`` and stages the tokens) before
  ``sample/sampler.py: Sampler.add_request`` -> this processor's ``add_request``, so the new
  request's id and prompt length are known there; then ``req_states.apply_staged_writes`` before
  ``Sampler.apply_staged_writes`` -> this processor's ``apply_staged_writes``, where the
  request's tokens are on device (the interface's documented order).
* ``input_batch.py: post_update`` appends each sampled token to ``all_token_ids`` and
  ``total_len`` on device, so a request's whole history is in its slot until the slot is reused.

So: a finished request's state is summarised and released in ``finish_requests``; a preempted
one's is *parked* under its request id (its history read first) and continues when
``add_request`` sees that id again, in whatever slot (never re-counted, summarised once, at its
real end); a parked request that is aborted while waiting ends from the parked store. A request
re-added under the id it already holds (a streaming-input chunk, ``add_requests`` removing and
re-adding it itself) continues too. Under async scheduling the runner may compute a token past
a request's stop before the scheduler learns of it; the summary's output is cut where vLLM's
``core/sched/utils.py: check_stop`` stopped it (``max_tokens``, ``eos_token_id``,
``stop_token_ids``).

Cost, only in an engine with a monitor: one device read (a sync) per step in which monitored
requests end or are preempted, for all of them together, and one per step that admits opted-in
requests, for their prompts (the audit choice of a request without a tag hashes its prompt).
A request's exit state is made in ``apply_staged_writes``.

Without the wrapper (a vLLM whose runner has no ``finish_requests``, refused with a warning)
the processor falls back to slot reuse: a slot re-added under another request id (or with no id
known) ends the request it held, which then cannot be told from a preempted one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

from lynx.engines.exit_control import RequestState, force
from lynx.engines.vllm_plugin.worker_state import LynxWorker
from lynx.exit_policy import RequestOptions

log = logging.getLogger("lynx.exit")
_OBSERVER = "__lynx_observer__"  # marks lynx's wrapper of GPUModelRunner.finish_requests


@dataclass(frozen=True)
class _Slot:
    """What the processor knows of the request in a slot besides its exit state."""

    req_id: str | None  # the runner's request id (None: the runner's ids were never seen)
    n_prompt: int  # tokens of the user's prompt (req_states.prompt_len at admission)
    stops: frozenset[int]  # tokens that end it (vLLM's check_stop: eos unless ignore_eos, stop_token_ids)
    max_tokens: int | None

    def output(self, ids: list[int]) -> list[int]:
        """The request's output in its token history, cut where vLLM stopped it."""
        out = ids[self.n_prompt :]
        if self.max_tokens is not None:
            out = out[: self.max_tokens]
        for i, t in enumerate(out):
            if t in self.stops:
                return out[: i + 1]
        return out


def _slot_info(req_id: str | None, n_prompt: int, sampling_params) -> _Slot:
    stops = set(getattr(sampling_params, "stop_token_ids", None) or ())
    eos = getattr(sampling_params, "eos_token_id", None)
    if eos is not None:
        stops.add(eos)
    return _Slot(req_id, n_prompt, frozenset(stops), getattr(sampling_params, "max_tokens", None))


def observe_runner() -> bool:
    """Wrap ``vllm.v1.worker.gpu.model_runner.GPUModelRunner.finish_requests`` (once per process)
    so that lynx's V2 processors of the runner's engine see which requests end and which are
    preempted, before vLLM frees their slots (see the module docstring). False (with a warning)
    if this vLLM's runner has no such method; the processors then fall back to slot reuse."""
    try:
        from vllm.v1.worker.gpu.model_runner import GPUModelRunner
    except Exception as e:  # pragma: no cover - an incompatible vLLM
        log.warning("lynx: cannot observe vLLM's Model Runner V2 (%s: %s); request ends are seen at slot reuse", type(e).__name__, e)
        return False
    current = getattr(GPUModelRunner, "finish_requests", None)
    if current is None:  # pragma: no cover - an incompatible vLLM
        log.warning("lynx: vLLM's GPUModelRunner has no finish_requests; request ends are seen at slot reuse")
        return False
    if getattr(current, _OBSERVER, False):
        return True

    @functools.wraps(current)
    def finish_requests(runner, scheduler_output):
        lynx = getattr(getattr(runner, "vllm_config", None), LynxWorker._ATTR, None)
        if lynx is not None:
            for proc in lynx.processors:
                leaving = getattr(proc, "requests_leaving", None)
                if leaving is not None:
                    try:
                        leaving(runner.req_states, scheduler_output)
                    except Exception as e:  # never take the engine down for the monitor
                        log.warning("lynx: request bookkeeping failed (%s: %s)", type(e).__name__, e)
        return current(runner, scheduler_output)

    setattr(finish_requests, _OBSERVER, True)
    GPUModelRunner.finish_requests = finish_requests
    return True


class LynxLogitsProcessorV2(LogitsProcessor):
    def __init__(self, vllm_config, req_states) -> None:
        lynx = LynxWorker.of(vllm_config) if (vllm_config.additional_config or {}).get("lynx") else None
        self.req_states = req_states
        self.handoff = lynx.handoff if lynx is not None else None
        self.controller = lynx.controller if lynx is not None else None
        self.slots: dict[int, RequestState] = {}  # slot -> exit state of the opted-in request in it
        self._info: dict[int, _Slot] = {}  # slot -> its request's id, prompt length, stop rule
        self._slot_of: dict[str, int] = {}  # request id -> slot, for the requests in self._info
        self.parked: dict[str, tuple[RequestState, _Slot]] = {}  # preempted requests, by id, until re-added or ended
        self._pending: dict[int, object] = {}  # slot -> sampling params of a request added this step
        self._runner: Any = None  # the runner's RequestState (request ids by slot), from the finish_requests wrapper
        self._watch: torch.Tensor | None = None  # watched tokens, a boolean table over the vocabulary
        self.observed = False  # finish_requests is wrapped (observe_runner)
        self.resumed = 0  # preempted requests that came back and continued
        if lynx is not None:
            lynx.processors.append(self)  # so an in-process engine can finish its idle requests (finish_all)
            self.observed = observe_runner()

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """Refuse bad ``lynx_*`` switches at admission (the OpenAI server answers HTTP 400)."""
        RequestOptions.parse(sampling_params.extra_args)

    # -- requests entering and leaving ----------------------------------------------------
    def add_request(self, req_idx: int, sampling_params) -> bool:
        if self.controller is None:
            return False
        req_id = self._runner.index_to_req_id.get(req_idx) if self._runner is not None else None
        held = self._info.get(req_idx)
        if held is not None and (req_id is None or held.req_id != req_id):
            self._finish_slots([req_idx])  # its request left unseen (no finish_requests wrapper): it has ended
        self._pending.pop(req_idx, None)
        n_prompt = int(self.req_states.prompt_len.np[req_idx])  # set by the runner just before (RequestState.add_request)
        if req_id is not None:
            if req_id in self.parked:  # resumed after preemption: the same request continues, in this slot
                state, info = self.parked.pop(req_id)
                self._hold(req_idx, state, info)
                self.resumed += 1
                return True
            old = self._slot_of.get(req_id)
            if old is not None:  # re-added under its own id (a streaming-input chunk): it continues
                state_or_none, info = self.slots.pop(old, None), self._info.pop(old)
                params = self._pending.pop(old, None)
                self._info[req_idx], self._slot_of[req_id] = replace(info, n_prompt=n_prompt), req_idx
                if state_or_none is not None:
                    self.slots[req_idx] = state_or_none
                if params is not None:
                    self._pending[req_idx] = params
                return True
        if RequestOptions.parse(sampling_params.extra_args) is None:
            return False
        # the state is made in apply_staged_writes, where the request's prompt is on device
        self._pending[req_idx] = sampling_params
        self._info[req_idx] = _slot_info(req_id, n_prompt, sampling_params)
        if req_id is not None:
            self._slot_of[req_id] = req_idx
        return True

    def apply_staged_writes(self) -> None:
        """Called once per step after the runner flushed its request state to the device
        (``GPUModelRunner.add_requests``): the requests added this step get their states."""
        if self._pending:
            self._admit()

    def _admit(self) -> None:
        pending, self._pending = self._pending, {}
        controller = self.controller
        assert controller is not None  # requests are only pending with lynx configured (add_request)
        # the prompt is read only where admission needs it: a monitor's audit choice of a request without a tag
        prompts = self._prompts(list(pending)) if controller.monitor is not None else {}
        for slot, sp in pending.items():
            state = controller.new_request(getattr(sp, "extra_args", None), prompts.get(slot, []), [], temperature=getattr(sp, "temperature", None), seed=getattr(sp, "seed", None))
            if state is None:
                self._release(slot)
            else:
                self.slots[slot] = state

    def requests_leaving(self, runner_states, scheduler_output) -> None:
        """vLLM is about to free the slots of ``scheduler_output``'s finished and preempted
        requests (called by the :func:`observe_runner` wrapper of ``finish_requests``): finished
        ones are summarised and released, preempted ones parked until they are re-added."""
        self._runner = runner_states  # its index_to_req_id names the requests add_request sees
        finished = set(getattr(scheduler_output, "finished_req_ids", None) or ())
        preempted = set(getattr(scheduler_output, "preempted_req_ids", None) or ()) - finished
        if not (self._slot_of or self.parked) or not (finished or preempted):
            return
        if self._pending:
            self._admit()
        ended: list[tuple[RequestState, _Slot]] = []
        for req_id in sorted(finished):
            if req_id in self.parked:  # preempted earlier and aborted while waiting: its history was read then
                ended.append(self.parked.pop(req_id))
        self._finish_slots(sorted(self._slot_of[r] for r in finished if r in self._slot_of))
        for state, _ in ended:
            self._finish(state)
        slots = sorted(self._slot_of[r] for r in preempted if r in self._slot_of)
        self._read_histories(slots)  # a parked request may end without coming back
        for slot in slots:
            held, info = self._release(slot)
            if held is not None and info.req_id is not None:
                self.parked[info.req_id] = (held, info)

    def finish_all(self) -> None:
        """Every request has ended (an offline engine between ``generate`` calls): emit their
        summaries now rather than when the next call's first step frees their slots."""
        if self._pending:
            self._admit()
        self._finish_slots(sorted(self._info))
        parked, self.parked = self.parked, {}
        for state, _ in parked.values():
            self._finish(state)

    def _hold(self, slot: int, state: RequestState, info: _Slot) -> None:
        self.slots[slot], self._info[slot] = state, info
        if info.req_id is not None:
            self._slot_of[info.req_id] = slot

    def _release(self, slot: int) -> tuple[RequestState | None, _Slot]:
        state, info = self.slots.pop(slot, None), self._info.pop(slot)
        self._pending.pop(slot, None)
        if info.req_id is not None and self._slot_of.get(info.req_id) == slot:
            del self._slot_of[info.req_id]
        return state, info

    def _finish_slots(self, slots: list[int]) -> None:
        """The requests in ``slots`` have ended: their histories into their states, their
        summaries out, their state released."""
        self._read_histories(slots)
        for slot in slots:
            state, _ = self._release(slot)
            if state is not None:
                self._finish(state)

    def _finish(self, state: RequestState) -> None:
        assert self.controller is not None  # states are only kept with lynx configured
        self.controller.finish_request(state)

    def _read_histories(self, slots: list[int]) -> None:
        """The whole prompt and output of the monitored requests in ``slots`` into their
        states (one device read for all): their slots still hold them (``total_len`` tokens of
        ``all_token_ids``), the output cut where vLLM stopped the request."""
        slots = [s for s in slots if (st := self.slots.get(s)) is not None and st.cues is not None]
        if not slots:
            return
        lens = self.req_states.total_len.gpu[slots].tolist()
        rows = self.req_states.all_token_ids.gpu[slots, : max(lens)].tolist()
        for slot, n, row in zip(slots, lens, rows, strict=True):
            info, state = self._info[slot], self.slots[slot]
            ids = row[:n]
            state.prompt = ids[: info.n_prompt]
            state.output[:] = info.output(ids)

    def _prompts(self, slots: list[int]) -> dict[int, list[int]]:
        n = [self._info[s].n_prompt for s in slots]
        if not slots or max(n) == 0:
            return {}
        rows = self.req_states.all_token_ids.gpu[slots, : max(n)].tolist()
        return {s: row[:k] for s, k, row in zip(slots, n, rows, strict=True)}

    # -- every step ------------------------------------------------------------------------
    def _history(self, slot: int, pos: int) -> tuple[list[int], list[int]]:
        ids = self.req_states.all_token_ids.gpu[slot, : pos + 1].tolist()
        n_prompt = int(self.req_states.prompt_len.np[slot])
        return ids[:n_prompt], ids[n_prompt:]

    def _watched_rows(self, logits: torch.Tensor, ctx) -> list[list[int]]:
        """``[rows, slots, tokens, positions]`` of the rows whose input token is one the exit rule
        watches (``ExitController.watch_ids``): one table lookup on device for the whole batch,
        then one copy of just those rows to the host (no Python work for the other rows)."""
        ids = ctx.input_ids
        if self._watch is None or self._watch.device != ids.device:
            assert self.controller is not None  # called from apply, with lynx configured
            self._watch = self.controller.watch_table(logits.shape[1], ids.device)
        rows = self._watch[ids.long()].nonzero().view(-1)
        return torch.stack([rows, ctx.expanded_idx_mapping[rows].long(), ids[rows].long(), ctx.pos[rows].long()]).tolist()

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        if self._pending:  # the runner calls apply_staged_writes first; never act without the states
            self._admit()
        if not self.slots:
            return logits
        assert self.handoff is not None and self.controller is not None  # slots are only kept with lynx configured (add_request)
        n = logits.shape[0]
        controller = self.controller
        forced: list[tuple[int, int]] = []
        cues: list[tuple[int, RequestState, int]] = []
        for row, slot, tok, pos in zip(*self._watched_rows(logits, ctx), strict=True):
            state = self.slots.get(slot)
            if state is None or state.disabled:
                continue
            if state.exit_from is not None:  # exit under way: the output holds pos + 1 - prompt tokens
                nxt = controller.exit_token(state, pos + 1 - len(state.prompt), tok)
                if nxt is not None:
                    forced.append((row, nxt))
            elif tok in controller.candidates:
                state.prompt, out = self._history(slot, pos)
                state.output[:] = out
                cue = controller.new_cue(state)
                if cue is not None:
                    cues.append((row, state, cue))
        if cues:
            feats = self.handoff.features_for(n)
            scores: Sequence[float | None] = self.handoff.scores_for([row for row, _, _ in cues], n) or [None] * len(cues)
            scores = controller.final_scores([(state, cue) for _, state, cue in cues], scores)
            for (row, state, cue), score in zip(cues, scores, strict=True):
                tok = controller.decide(state, cue, score, feats[row] if feats is not None and state.record else None)
                if tok is not None:
                    forced.append((row, tok))
        return force(logits, forced)

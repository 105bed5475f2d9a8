"""The Model Runner V2 logits processor on CPU (the V2 runner itself needs CUDA and Triton).

Exits and scoring: driven by hand-built LogitsContexts. The end of a request (the monitor's
``request`` summaries, shadow audits' traces): driven through vLLM's own V2 request bookkeeping
(RequestState, the processor loader, Sampler, GPUModelRunner.finish_requests / add_requests) with
a scripted model and scheduler, preemption and async scheduling's extra token included, and
compared event for event with what the V1 runner's processor writes for the same tokens."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("vllm.v1.worker.gpu.sample.logits_processor.interface", reason="vLLM not installed")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsContext  # noqa: E402

from lynx.config import DEFAULT_EXIT  # noqa: E402
from lynx.engines.vllm_plugin.processor_v2 import LynxLogitsProcessorV2  # noqa: E402
from lynx.models import (
    ORGANISM_DIR,  # noqa: E402
    ORGANISM_PROBE_DIR,
)

pytestmark = pytest.mark.vllm


def _ctx(slots, tokens, positions):
    idx = torch.tensor(slots)
    return LogitsContext(
        expanded_idx_mapping=idx,
        idx_mapping=idx,
        idx_mapping_np=np.array(slots),
        expanded_local_pos=torch.zeros(len(slots), dtype=torch.long),
        input_ids=torch.tensor(tokens),
        pos=torch.tensor(positions),
        seq_lens_upper_bound_np=np.array(positions) + 1,
    )


PROBE_CALLS: list[int] = []  # rows the stand-in probe scored, per call


def _probe(features):
    PROBE_CALLS.append(features.shape[0])
    return features[:, 0]


def _publish(handoff, mode, values):
    """This step's hand-off as the wrapper model leaves it: features (column 0 = the score the
    stand-in probe reads off) and, in all-rows mode, every row's score."""
    feats = torch.zeros(len(values), 8)
    feats[:, 0] = torch.tensor(values)
    handoff.probe = _probe
    handoff.publish(feats, feats[:, 0].clone() if mode == "all" else None)


def _processor(lynx: dict):
    """A V2 processor on a stand-in runner of 4 slots (token buffer, prompt lengths)."""
    req_states = SimpleNamespace(
        all_token_ids=SimpleNamespace(gpu=torch.zeros(4, 256, dtype=torch.long)),
        prompt_len=SimpleNamespace(np=np.zeros(4, dtype=np.int32)),
    )
    cfg = SimpleNamespace(additional_config={"lynx": lynx}, model_config=SimpleNamespace(tokenizer=str(ORGANISM_DIR)))
    return LynxLogitsProcessorV2(cfg, req_states), req_states


def _write_trace(tok, req_states, slots) -> tuple[list[int], list[int]]:
    """The same prompt and thinking (ending on the cue word 'Wait') in the runner's buffer for ``slots``."""
    prompt = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    seq = prompt + tok("<think>\n12 + 3 = 15.\nWait,", add_special_tokens=False)["input_ids"]
    for slot in slots:
        req_states.all_token_ids.gpu[slot, : len(seq)] = torch.tensor(seq)
        req_states.prompt_len.np[slot] = len(prompt)
    return prompt, seq


@pytest.mark.parametrize("mode", ["cues", "all"])
def test_v2_processor_exits_only_the_opted_in_request(organism_tokenizer, mode):
    tok = organism_tokenizer
    V = len(tok)
    proc, req_states = _processor({"exit_string": DEFAULT_EXIT, "keep_events": True})
    assert proc.add_request(0, SamplingParams(extra_args={"lynx_threshold": 0.5, "lynx_tag": "v2"}))
    PROBE_CALLS.clear()
    assert not proc.add_request(1, SamplingParams())
    with pytest.raises(ValueError, match="lynx_alpha"):
        LynxLogitsProcessorV2.validate_params(SamplingParams(extra_args={"lynx_alpha": 2}))

    prompt, seq = _write_trace(tok, req_states, (0, 1))
    exit_ids = proc.controller.exit_ids
    # decode steps: every row's input token is the last token so far; scores are high
    for p in range(len(prompt), len(seq)):
        logits = torch.zeros(2, V)
        _publish(proc.handoff, mode, [0.9, 0.9])
        out = proc.apply(logits, _ctx([0, 1], [seq[p], seq[p]], [p, p]))
        if p < len(seq) - 1:
            assert torch.isfinite(out).all()  # no cue yet
    assert out[0].argmax().item() == exit_ids[0] and torch.isinf(out[0]).sum() == V - 1
    assert torch.isfinite(out[1]).all()  # the request that did not opt in is untouched
    # the exit string continues token by token (rows may be reordered between steps)
    pos = len(seq)
    for k in range(1, len(exit_ids)):
        _publish(proc.handoff, mode, [0.1, 0.1])
        out = proc.apply(torch.zeros(2, V), _ctx([1, 0], [5, exit_ids[k - 1]], [pos, pos]))
        assert out[1].argmax().item() == exit_ids[k] and torch.isfinite(out[0]).all()
        pos += 1
    _publish(proc.handoff, mode, [0.1])
    assert torch.isfinite(proc.apply(torch.zeros(1, V), _ctx([0], [exit_ids[-1]], [pos]))).all()  # answering freely
    (entry,) = proc.controller.events.take(["v2"])["v2"][0]
    assert entry["event"] == "exit" and entry["cue_position"] == len(seq) - 1 and entry["score"] == pytest.approx(0.9)
    # lazy mode: the probe ran once, on the one row at a cue, not on every row of every step
    assert PROBE_CALLS == ([1] if mode == "cues" else [])


def test_v2_processor_scores_a_tree_head_probe_and_its_baseline_as_offline(organism_tokenizer):
    """The shipped v2 probe in the V2 runner's processor: at the same cue, a request served by the
    probe (its trees on the MLP's score, here the stand-in's) and one served by the context-only
    baseline each record the score lynx.probe.scoring computes for that cue on its own."""

    from lynx.exit_policy import ExitPolicy
    from lynx.probe.scoring import OnlineContext

    shipped = ORGANISM_PROBE_DIR
    tok = organism_tokenizer
    V = len(tok)
    proc, req_states = _processor({"probe": str(shipped), "keep_events": True})
    for slot, scorer in enumerate(("probe", "context-only")):
        assert proc.add_request(slot, SamplingParams(extra_args={"lynx_threshold": 2.0, "lynx_record": scorer, "lynx_scorer": scorer}))
    prompt, seq = _write_trace(tok, req_states, (0, 1))
    for p in range(len(prompt), len(seq)):
        _publish(proc.handoff, "cues", [0.7, 0.7])
        out = proc.apply(torch.zeros(2, V), _ctx([0, 1], [seq[p], seq[p]], [p, p]))
        assert torch.isfinite(out).all()  # an unreachable threshold: never exits
    events = proc.controller.events.take(["probe", "context-only"])
    policy = ExitPolicy.load(shipped)
    think_start = seq.index(proc.controller.matcher.think_open_id)
    cue = len(seq) - 1
    for scorer, stage1 in (("probe", 0.7), ("context-only", None)):
        ((pos, _features, score),) = events[scorer][1]
        expected = OnlineContext().score(policy.scorer(scorer).probe, cue - think_start, think_start, "wait", stage1)
        assert pos == cue and score == pytest.approx(expected, abs=1e-12)
    assert events["probe"][1][0][2] != events["context-only"][1][0][2]  # two scorers, two scores


# -- the end of a request: vLLM's own V2 request bookkeeping, driven on CPU ------------------------
# What runs here is vLLM's: RequestState (slots, free list, token buffers), the loader that builds the
# processor, Sampler.add_request / apply_staged_writes, and GPUModelRunner.finish_requests /
# add_requests / _remove_request (called on a stand-in runner object that has the attributes they
# use). Stood in: the Triton kernel behind StagedWriteTensor.apply_write (no Triton on CPU), the
# runner's post_update (the sampled token appended to the slot's buffer), the model and the scheduler.

PROMPT = "<|im_start|>user\nWhat is 12 + 3?{}<|im_end|>\n<|im_start|>assistant\n"
THINKING = "<think>\n12 + 3 = 15.\nWait, let me check: 12 + 3 = 15.\nHmm, yes.\n</think>\n\nFinal answer: \\boxed{"
MONITOR = {"audit_fraction": 0.5, "grader": "integer"}


def _apply_write(self):
    """vLLM's _apply_write_kernel (buffer_utils.py) in Python: the staged rows into the tensor."""
    lo = 0
    for index, start, hi in zip(self._staged_write_indices, self._staged_write_starts, self._staged_write_cu_lens, strict=True):
        values = self._staged_write_contents[lo:hi]
        if self.gpu.dim() == 1:
            self.gpu[index] = values[0]
        else:
            self.gpu[index, start : start + len(values)] = torch.tensor(values, dtype=self.gpu.dtype)
        lo = hi
    self.clear_staged_writes()


@pytest.fixture
def v2_on_cpu(monkeypatch):
    """vLLM's V2 request state on CPU: the CPU build's UvaBuffer (as vllm/v1/worker/cpu/shm.py
    installs it in a CPU worker) and the write kernel's Python stand-in."""
    from vllm.v1.worker.cpu import buffer_utils as cpu_buffer_utils
    from vllm.v1.worker.gpu import buffer_utils

    monkeypatch.setattr(buffer_utils, "UvaBuffer", cpu_buffer_utils.UvaBuffer)
    monkeypatch.setattr(buffer_utils.StagedWriteTensor, "apply_write", _apply_write)


def _config(lynx: dict):
    return SimpleNamespace(additional_config={"lynx": lynx}, model_config=SimpleNamespace(tokenizer=str(ORGANISM_DIR)), reasoning_config=None)


def _noop(*args, **kwargs):
    return None


class _Runner:
    """The request bookkeeping of vLLM's GPUModelRunner (its own methods, on this object)."""

    def __init__(self, vllm_config, max_num_reqs: int, vocab_size: int):
        from vllm.v1.worker.gpu.sample.logits_processor import build_custom_logits_processors
        from vllm.v1.worker.gpu.sample.sampler import Sampler
        from vllm.v1.worker.gpu.states import RequestState

        cpu = torch.device("cpu")
        self.vllm_config = vllm_config
        self.req_states = RequestState(max_num_reqs, 512, 512, 0, vocab_size, cpu)
        (self.proc,) = build_custom_logits_processors(vllm_config, self.req_states, False, [LynxLogitsProcessorV2])
        self.sampler = Sampler(vllm_config, max_num_reqs, vocab_size, cpu, self.req_states, custom_logits_processors=[self.proc])
        stub = SimpleNamespace(add_request=_noop, remove_request=_noop, apply_staged_writes=_noop, append_block_ids=_noop)
        self.model_state = self.block_tables = self.lora_state = self.prompt_logprobs_worker = stub
        self.adaptive_verification = self.pooling_runner = self.encoder_cache = self.pp_handler = None
        self.is_last_pp_rank = True

    def finish_requests(self, scheduler_output):
        from vllm.v1.worker.gpu.model_runner import GPUModelRunner

        return GPUModelRunner.finish_requests(self, scheduler_output)

    def add_requests(self, scheduler_output):
        from vllm.v1.worker.gpu.model_runner import GPUModelRunner

        return GPUModelRunner.add_requests(self, scheduler_output)

    def _remove_request(self, req_id):
        from vllm.v1.worker.gpu.model_runner import GPUModelRunner

        return GPUModelRunner._remove_request(self, req_id)


class _Script:
    """One request's 'model': the tokens it samples (its thinking, then the answer, then the stop
    token) unless lynx forces one; after a forced exit string, the answer."""

    def __init__(self, spec):
        self.spec, self.output, self.k, self.j, self.exited = spec, [], 0, 0, False

    def sample(self, row: torch.Tensor) -> int:
        finite = torch.isfinite(row)
        if int(finite.sum()) == 1:  # forced by lynx
            tok, self.exited = int(row.argmax()), True
        elif self.exited:
            tok, self.j = self.spec.answer[self.j], self.j + 1
        else:
            natural = self.spec.thinking + self.spec.answer
            tok, self.k = natural[self.k], self.k + 1
        self.output.append(tok)
        return tok

    @property
    def done(self) -> bool:
        return bool(self.output) and (self.output[-1] in self.spec.stops or len(self.output) >= self.spec.params.max_tokens)


def _spec(tok, req_id, extra_args, score, question="", seed=7, max_tokens=200, preempt=None):
    """A request: its prompt and scripted tokens, the probe's stand-in score at its rows, its
    params (eos as vLLM's input processor sets it), and when it is preempted (a predicate on its output)."""
    params = SamplingParams(temperature=0.6, seed=seed, max_tokens=max_tokens, extra_args=extra_args)
    params.update_from_generation_config({}, eos_token_id=tok.eos_token_id)
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return SimpleNamespace(
        req_id=req_id,
        prompt=ids(PROMPT.format(question)),
        thinking=ids(THINKING),
        answer=ids("15}") + [tok.eos_token_id],
        stops={tok.eos_token_id},
        score=score,
        params=params,
        preempt=preempt,
    )


def _events(path) -> list[str]:
    """The audit file's events, without their times, as sorted JSON lines (a multiset)."""
    return sorted(json.dumps({k: v for k, v in json.loads(line).items() if k != "time"}, sort_keys=True) for line in path.read_text().splitlines())


def _run_v1(vllm_config, specs, vocab_size):
    """The same requests through the V1 runner's processor, one at a time (a BatchUpdate adds the
    request in row 0 with vLLM's live output list; one removes it after its stop token)."""
    from vllm.v1.sample.logits_processor import BatchUpdate

    from lynx.engines.vllm_plugin.processor_v1 import LynxLogitsProcessor

    proc = LynxLogitsProcessor(vllm_config, torch.device("cpu"), False)
    outputs = {}
    for spec in specs:
        script = _Script(spec)
        proc.update_state(BatchUpdate(1, [], [(0, spec.params, spec.prompt, script.output)], []))
        while not script.done:
            _publish(proc.handoff, "cues", [spec.score])
            script.sample(proc.apply(torch.zeros(1, vocab_size))[0])
        proc.update_state(BatchUpdate(0, [0], [], []))
        outputs[spec.req_id] = script.output
    assert not proc.rows
    return proc, outputs


class _V2Engine:
    """The V2 runner's request life cycle around the processor, as vLLM 0.32 drives it: each step
    the scheduler's finished and preempted ids (finish_requests), then its new and resumed requests
    (add_requests: a resumed one with its prompt and output so far), then one logits row per running
    request (rows in another order than slots) and the sampled tokens appended to the slots' buffers.
    Async scheduling is mimicked: a request that sampled its stop token runs one more step (a token
    the scheduler discards) and is finished the step after."""

    def __init__(self, vllm_config, max_num_reqs, vocab_size):
        self.runner = _Runner(vllm_config, max_num_reqs, vocab_size)
        self.proc, self.vocab_size, self.max_num_reqs = self.runner.proc, vocab_size, max_num_reqs
        self.running: dict[str, _Script] = {}
        self.waiting: list = []  # specs not yet admitted
        self.preempted: dict[str, tuple[_Script, int]] = {}  # id -> (script, step it was preempted)
        self.stopped: dict[str, int] = {}  # id -> the step it sampled its stop token
        self.aborted: set[str] = set()  # preempted requests the client aborts while they wait
        self.step_no, self.outputs, self.slots_used = 0, {}, {}

    def step(self):
        from vllm.v1.core.sched.output import NewRequestData, SchedulerOutput

        so = SchedulerOutput.make_empty()
        stopped = {i for i, t in self.stopped.items() if t == self.step_no - 2}
        aborted = self.aborted & set(self.preempted)
        so.finished_req_ids = stopped | aborted
        for i in aborted:
            self.outputs[i] = self.preempted.pop(i)[0].output
        so.preempted_req_ids = {i for i, s in self.running.items() if i not in self.stopped and s.spec.preempt is not None and s.spec.preempt(s.output)}
        for i in so.preempted_req_ids:
            script = self.running.pop(i)
            script.spec.preempt = None  # once
            self.preempted[i] = (script, self.step_no)
        for i in stopped:
            self.outputs[i] = self.running.pop(i).output
            del self.stopped[i]
        free = self.max_num_reqs - len(self.running)
        admit: list[_Script] = []
        for i, (script, at) in list(self.preempted.items()):  # resumed first (vLLM prepends them to the waiting queue)
            if free > len(admit) and self.step_no - at >= 2:
                admit.append(script)
                del self.preempted[i]
        while self.waiting and free > len(admit):
            admit.append(_Script(self.waiting.pop(0)))
        for script in admit:
            spec = script.spec
            so.scheduled_new_reqs.append(NewRequestData(spec.req_id, spec.prompt, [], spec.params, None, ([],), 0, None, prefill_token_ids=spec.prompt + script.output))
            self.running[spec.req_id] = script
        self.runner.finish_requests(so)
        self.runner.add_requests(so)
        rs = self.runner.req_states
        ids = sorted(self.running, reverse=True)
        for i in ids:
            self.slots_used.setdefault(i, []).append(rs.req_id_to_index[i])
        self.step_no += 1
        if not ids:
            return
        slots = [rs.req_id_to_index[i] for i in ids]
        total = rs.total_len.gpu[slots].long()
        tokens = rs.all_token_ids.gpu[slots].gather(1, (total - 1).view(-1, 1)).view(-1)
        _publish(self.proc.handoff, "cues", [self.running[i].spec.score for i in ids])
        logits = torch.zeros(len(ids), self.vocab_size)
        if self.runner.sampler.needs_logits_processing[slots].any():  # as Sampler.apply_sampling_params
            logits = self.proc.apply(logits, _ctx(slots, tokens.tolist(), (total - 1).tolist()))
        for row, (i, slot, n) in enumerate(zip(ids, slots, total.tolist(), strict=True)):
            script = self.running[i]
            tok = 5 if i in self.stopped else script.sample(logits[row])  # past its stop: computed, then discarded
            rs.all_token_ids.gpu[slot, n] = tok  # post_update
            rs.total_len.gpu[slot] = n + 1
            if i not in self.stopped and script.done:
                self.stopped[i] = self.step_no - 1

    def run(self, specs):
        self.waiting = list(specs)
        while self.waiting or self.running or set(self.preempted) - self.aborted or self.stopped:
            self.step()
        self.step()  # the engine's last step: nothing scheduled, the last finished ids
        return self.outputs


def _mixed_requests(tok):
    """Monitored requests (one audited, one exiting, two without a tag whose audit choice depends on
    their prompt), one with a plain threshold, one not opted in; one monitored request is preempted
    mid-thinking, one in the middle of its exit string."""
    from lynx.engines.exit_control import audit_selected
    from lynx.exit_policy import ExitPolicy

    fraction = MONITOR["audit_fraction"]
    tags = [f"req-{k}" for k in range(100)]
    audited = [t for t in tags if audit_selected(fraction, 0, t, [], None)]
    plain = [t for t in tags if not audit_selected(fraction, 0, t, [], None)]
    exit_ids = tok(ExitPolicy.load(ORGANISM_PROBE_DIR).hook_config({}).exit_string, add_special_tokens=False)["input_ids"]
    mid_exit = lambda out: out[-2:] == exit_ids[:2]  # noqa: E731
    # untagged: the audit choice is a hash of the prompt and seed; pick questions where the prompt decides it
    blind = audit_selected(fraction, 0, None, [], None)  # the choice without the prompt and seed
    questions = [q for q in (f" ({k})" for k in range(100)) if audit_selected(fraction, 0, None, tok(PROMPT.format(q), add_special_tokens=False)["input_ids"], 7) != blind]
    alpha = lambda t=None: {"lynx_alpha": 0.2} | ({"lynx_tag": t} if t else {})  # noqa: E731
    return [  # the preempted ones first: requests are waiting when they leave, and one takes each freed slot
        _spec(tok, "g-preempted-thinking", alpha(plain[1]), 0.0, preempt=lambda out: len(out) == 12),
        _spec(tok, "h-preempted-exiting", alpha(plain[2]), 0.9, preempt=mid_exit),
        _spec(tok, "a-audited", alpha(audited[0]), 0.9),
        _spec(tok, "b-exits", alpha(plain[0]), 0.9),
        _spec(tok, "c-untagged", alpha(), 0.9, question=questions[0]),
        _spec(tok, "d-untagged", alpha(), 0.05, question=questions[1]),
        _spec(tok, "e-plain", None, 0.9),
        _spec(tok, "f-threshold", {"lynx_threshold": 0.5, "lynx_tag": "thr"}, 0.9),
    ]


def _lynx(audit_path) -> dict:
    return {"probe": str(ORGANISM_PROBE_DIR), "audit_path": str(audit_path), "monitor": MONITOR}


def test_v2_summaries_equal_v1s_once_per_request_under_preemption_and_slot_reuse(organism_tokenizer, v2_on_cpu, tmp_path):
    """Every event V1's processor writes for these requests (exits, request summaries, audit traces)
    V2's writes too, once each, although on V2 two requests are preempted and resumed in another
    slot, slots are reused, rows come in another order and a token runs past each stop (async
    scheduling); and nothing of a finished request stays held."""
    from lynx.engines.exit_control import audit_selected

    tok = organism_tokenizer
    specs = _mixed_requests(tok)
    v1_proc, v1_out = _run_v1(_config(_lynx(tmp_path / "v1.jsonl")), _mixed_requests(tok), len(tok))
    engine = _V2Engine(_config(_lynx(tmp_path / "v2.jsonl")), 3, len(tok))
    v2_out = engine.run(specs)

    assert v2_out == v1_out  # the same tokens were generated (exits forced at the same places)
    assert _events(tmp_path / "v2.jsonl") == _events(tmp_path / "v1.jsonl")
    events = [json.loads(line) for line in (tmp_path / "v2.jsonl").read_text().splitlines()]
    summaries = [e for e in events if e["event"] == "request"]
    assert len(summaries) == 6 and {e["event"] for e in events} == {"request", "exit", "audit_trace"}  # the six alpha requests, once each
    audited = [e for e in summaries if e["audited"]]
    assert audited and len([e for e in events if e["event"] == "audit_trace"]) == len(audited) and sum(e["exited"] for e in summaries) >= 2
    # a request without a tag is audited by a hash of its prompt and seed, which V2 now reads as V1 gets them
    untagged = [s for s in specs if s.params.extra_args and "lynx_tag" not in s.params.extra_args]
    expected = sorted(audit_selected(MONITOR["audit_fraction"], 0, None, s.prompt, s.params.seed) for s in untagged)
    assert sorted(e["audited"] for e in summaries if e["tag"] is None) == expected != sorted(audit_selected(MONITOR["audit_fraction"], 0, None, [], None) for _ in untagged)
    by_tag = {e["tag"]: e for e in summaries}
    exiting = next(s for s in specs if s.req_id == "h-preempted-exiting")
    assert by_tag[exiting.params.extra_args["lynx_tag"]]["exited"] and by_tag[exiting.params.extra_args["lynx_tag"]]["output_tokens"] == len(v1_out[exiting.req_id])
    quiet = next(s for s in specs if s.req_id == "g-preempted-thinking")
    assert by_tag[quiet.params.extra_args["lynx_tag"]]["output_tokens"] == len(v1_out[quiet.req_id]) > 12  # the whole request, not the part before the preemption
    assert engine.proc.observed and engine.proc.resumed == 2
    for req_id in ("g-preempted-thinking", "h-preempted-exiting"):
        assert len(set(engine.slots_used[req_id])) == 2, engine.slots_used[req_id]  # resumed in another slot
    c2, c1 = engine.proc.controller.counts, v1_proc.controller.counts
    assert c2 == c1 and c2["requests"] == c2["finished"] == 6  # admitted once each, no double count
    assert not (engine.proc.slots or engine.proc.parked or engine.proc._info or engine.proc._slot_of or engine.proc._pending)


def _summaries(path) -> list[dict]:
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "request"]


def test_a_slot_reused_under_another_request_id_ends_the_request_it_held(organism_tokenizer, v2_on_cpu, tmp_path):
    """A removal lynx did not see (vLLM's RequestState.remove_request without finish_requests): when
    the next request takes the slot, the one it held is summarised with its whole output and released."""
    tok = organism_tokenizer
    engine = _V2Engine(_config(_lynx(tmp_path / "audit.jsonl")), 2, len(tok))
    first, second = _spec(tok, "first", {"lynx_alpha": 0.2, "lynx_tag": "first"}, 0.0), _spec(tok, "second", {"lynx_alpha": 0.2, "lynx_tag": "second"}, 0.0)
    engine.waiting = [first]
    for _ in range(6):
        engine.step()
    slot = engine.runner.req_states.req_id_to_index["first"]
    assert engine.proc.slots.keys() == {slot} and not _summaries(tmp_path / "audit.jsonl")
    engine.runner.req_states.remove_request("first")  # unobserved
    output = engine.running.pop("first").output
    engine.waiting = [second]
    engine.step()
    assert engine.runner.req_states.req_id_to_index["second"] == slot  # vLLM's free list hands the same slot out again
    (summary,) = _summaries(tmp_path / "audit.jsonl")
    assert summary["tag"] == "first" and summary["output_tokens"] == len(output) == 6 and summary["thinking_tokens"] == 5
    assert list(engine.proc.slots) == [slot] and list(engine.proc._slot_of) == ["second"]  # the old state is gone


def test_a_preempted_request_aborted_while_waiting_is_summarised_once_with_its_output(organism_tokenizer, v2_on_cpu, tmp_path):
    tok = organism_tokenizer
    engine = _V2Engine(_config(_lynx(tmp_path / "audit.jsonl")), 2, len(tok))
    engine.waiting = [_spec(tok, "r", {"lynx_alpha": 0.2, "lynx_tag": "r"}, 0.0, preempt=lambda out: len(out) == 9)]
    while "r" not in engine.preempted:
        engine.step()
    assert "r" in engine.proc.parked and not engine.proc.slots and not _summaries(tmp_path / "audit.jsonl")
    engine.aborted.add("r")
    engine.step()
    (summary,) = _summaries(tmp_path / "audit.jsonl")
    assert summary["tag"] == "r" and summary["output_tokens"] == len(engine.outputs["r"]) == 9
    assert not engine.proc.parked and engine.proc.controller.counts["finished"] == engine.proc.controller.counts["requests"] == 1
    for _ in range(3):
        engine.step()
    assert len(_summaries(tmp_path / "audit.jsonl")) == 1


def test_an_idle_in_process_engine_finishes_its_requests_once(organism_tokenizer, v2_on_cpu, tmp_path):
    """lynx.engines.vllm_engine.take_events asks every processor of the engine to finish its requests
    (LynxWorker.finish_requests -> finish_all) before vLLM's next step frees their slots; the V2
    processor is one of them, and the later finish_requests does not summarise them again."""
    from lynx.engines.vllm_plugin.worker_state import LynxWorker

    tok = organism_tokenizer
    cfg = _config(_lynx(tmp_path / "audit.jsonl"))
    engine = _V2Engine(cfg, 4, len(tok))
    engine.waiting = [_spec(tok, f"r{k}", {"lynx_alpha": 0.2, "lynx_tag": f"r{k}"}, 0.9 * (k % 2)) for k in range(6)]
    while engine.waiting or any(i not in engine.stopped for i in engine.running):
        engine.step()
    assert engine.proc in LynxWorker.of(cfg).processors
    assert len(_summaries(tmp_path / "audit.jsonl")) < 6  # the last ones are still held
    LynxWorker.of(cfg).finish_requests()
    summaries = _summaries(tmp_path / "audit.jsonl")
    assert sorted(e["tag"] for e in summaries) == [f"r{k}" for k in range(6)] and not engine.proc.slots
    outputs = {i: s.output for i, s in engine.running.items()}
    engine.run([])
    assert len(_summaries(tmp_path / "audit.jsonl")) == 6
    by_tag = {e["tag"]: e for e in summaries}
    assert all(by_tag[i]["output_tokens"] == len(out) for i, out in outputs.items())  # cut at the stop token


@pytest.mark.slow  # ~2,000 requests through the V2 life cycle
def test_v2_state_does_not_grow_over_thousands_of_requests(organism_tokenizer, v2_on_cpu, tmp_path):
    """2,000 monitored requests, one in ten preempted (one in a hundred aborted while it waits), on 8
    slots: every one is summarised exactly once with its whole output, and the processor never holds
    more than the running and preempted requests; at the end it holds nothing."""
    tok = organism_tokenizer
    n = 2000
    engine = _V2Engine(_config(_lynx(tmp_path / "audit.jsonl") | {"monitor": MONITOR | {"audit_fraction": 0.1}}), 8, len(tok))
    specs = [
        _spec(tok, f"r{k}", {"lynx_alpha": 0.2, "lynx_tag": f"r{k}"}, (0.9, 0.0, 0.5)[k % 3], seed=k, preempt=(lambda out: len(out) == 7) if k % 10 == 0 else None)
        for k in range(n)
    ]
    engine.waiting = list(specs)
    while engine.waiting or engine.running or set(engine.preempted) - engine.aborted or engine.stopped:
        engine.step()
        assert len(engine.proc.slots) <= 8 and len(engine.proc.parked) <= len(engine.preempted)
        assert len(engine.proc._info) == len(engine.proc._slot_of) <= 8
        engine.aborted |= {i for i in engine.preempted if int(i[1:]) % 100 == 0}
    engine.step()
    summaries = _summaries(tmp_path / "audit.jsonl")
    assert sorted(e["tag"] for e in summaries) == sorted(s.req_id for s in specs)  # once each
    assert all(e["output_tokens"] == len(engine.outputs[e["tag"]]) for e in summaries)
    assert sum(1 for k in range(0, n, 100) if len(engine.outputs[f"r{k}"]) == 7) == n // 100  # the aborted ones ended while waiting
    counts = engine.proc.controller.counts
    assert counts["requests"] == counts["finished"] == n
    assert not (engine.proc.slots or engine.proc.parked or engine.proc._info or engine.proc._slot_of or engine.proc._pending)


def _resumed(worker) -> int:
    from lynx.engines.vllm_plugin.processor_v2 import LynxLogitsProcessorV2
    from lynx.engines.vllm_plugin.worker_state import LynxWorker

    lynx = LynxWorker.find(worker)
    procs = [p for p in (lynx.processors if lynx is not None else []) if isinstance(p, LynxLogitsProcessorV2)]
    assert procs and all(p.observed for p in procs), "not the V2 runner, or finish_requests not observed"
    return sum(p.resumed for p in procs)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Model Runner V2 runs on a CUDA GPU (with Triton)")
def test_gpu_v2_engine_summarises_every_monitored_request_once_under_preemption(tmp_path, monkeypatch):
    """The real V2 runner (GPU only): 48 monitored requests on a KV cache of 64 blocks, so vLLM's
    scheduler preempts and resumes some of them; each has exactly one ``request`` summary whose
    output length is the one vLLM returned (async scheduling's extra tokens cut)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    from lynx.engines.vllm_engine import build_lynx_llm, generate_ids, take_events
    from lynx.exit_policy import ExitPolicy, request_args
    from lynx.models import resolve_model
    from lynx.organism.problems import sample_problems
    from lynx.prompting import chat_prompt

    policy = ExitPolicy.load(ORGANISM_PROBE_DIR)
    hook = policy.hook_config({"keep_events": True, "audit_path": str(tmp_path / "audit.jsonl"), "monitor": MONITOR})
    llm, tok = build_lynx_llm(resolve_model("organism"), hook, max_model_len=768, num_gpu_blocks_override=64, block_size=16, max_num_seqs=48, enable_prefix_caching=False)
    prompts = [tok(chat_prompt(tok, p.text, suffix=policy.prompt_suffix), add_special_tokens=False)["input_ids"] for p in sample_problems("test", 48, seed=5)]
    tags = [f"gpu-{k}" for k in range(len(prompts))]
    outs = generate_ids(llm, prompts, max_new_tokens=512, temperature=0.6, seed=1, extra_args=[request_args(alpha=0.2, tag=t) for t in tags], stop_ids=[tok.eos_token_id])
    events = take_events(llm, tags)
    for tag, out in zip(tags, outs, strict=True):
        (summary,) = [e for e in events[tag][0] if e["event"] == "request"]
        assert summary["output_tokens"] == len(out), tag
    assert sum(llm.collective_rpc(_resumed)) > 0  # vLLM did preempt and resume (else shrink the KV cache)

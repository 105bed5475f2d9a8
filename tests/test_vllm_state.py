"""lynx's state inside a long-running vLLM engine stays flat: per-request states are released
when vLLM removes the request, events are kept only for an in-process reader and released
when taken, and a server-style engine (nobody takes them) keeps none. Measured over 2,000+
requests through one in-process engine with the shipped probe, exits happening."""

import tracemalloc

import pytest

from lynx.config import DEFAULT_EXIT
from lynx.models import resolve_model
from lynx.organism.problems import sample_problems
from lynx.prompting import chat_prompt

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
PROBE = "organism"


def _lynx_state(worker) -> dict:
    """Sizes of everything lynx keeps in the worker (run inside it by collective_rpc)."""
    from lynx.engines.vllm_plugin.processor_v1 import LynxLogitsProcessor
    from lynx.engines.vllm_plugin.worker_state import LynxWorker

    state = LynxWorker.find(worker)
    procs = [p for p in worker.worker.model_runner.input_batch.logitsprocs.all if isinstance(p, LynxLogitsProcessor)]
    assert len(procs) == 1 and procs[0].controller is state.controller  # one controller, shared by model and processor
    return {
        "request_states": len(procs[0].rows),
        "events_held": len(state.controller.events),
        "dropped": state.controller.events.dropped,
        "probe_errors": len(state.handoff.errors),
    }


def _lynx_bytes(snapshot) -> int:
    return sum(s.size for s in snapshot.filter_traces([tracemalloc.Filter(True, "*/lynx/*")]).statistics("filename"))


def test_lynx_state_does_not_grow_over_thousands_of_requests(organism_tokenizer, keep_events=True):
    """With events kept for an in-process reader (the case that could accumulate; a server's
    engine keeps none, see the test below)."""
    from lynx.engines.vllm_engine import build_lynx_llm, generate_ids, take_events
    from lynx.exit_policy import ExitPolicy

    policy = ExitPolicy.load(PROBE)
    hook = policy.hook_config({"keep_events": keep_events, "max_kept_requests": 500})
    llm, tok = build_lynx_llm(resolve_model("organism"), hook, seed=0)
    problems = sample_problems("test", 100, seed=11)
    prompts = [tok(chat_prompt(tok, p.text), add_special_tokens=False)["input_ids"] for p in problems]
    n_rounds, served, exits = 21, 0, 0
    sizes, lynx_bytes = [], []
    tracemalloc.start()
    try:
        for r in range(n_rounds):
            tags = [f"r{r}-{i}" for i in range(len(prompts))]
            args = [{"lynx_alpha": 0.2, "lynx_tag": t} if i % 4 else {"lynx_record": t} if i % 8 else None for i, t in enumerate(tags)]
            generate_ids(llm, prompts, max_new_tokens=96, temperature=1.0, top_p=0.95, seed=r, extra_args=args)
            served += len(prompts)
            if keep_events:
                events = take_events(llm, tags)
                exits += sum(any(a["event"] == "exit" for a in events[t][0]) for t in tags)
            (state,) = llm.collective_rpc(_lynx_state)
            sizes.append(state)
            if r in (1, n_rounds - 1):  # after warm-up, and at the end
                lynx_bytes.append(_lynx_bytes(tracemalloc.take_snapshot()))
    finally:
        tracemalloc.stop()
    assert served >= 2000
    # nothing per request survives its request: no events (taken, or never kept); request states
    # only for the batch's rows (vLLM reports the last requests' removal at the next step, so
    # up to one batch of them waits between rounds) — the same bound in round 2 as in round 21
    assert all(s["events_held"] == 0 and s["dropped"] == 0 and s["probe_errors"] == 0 for s in sizes), sizes
    assert max(s["request_states"] for s in sizes) <= len(prompts), sizes
    if keep_events:
        assert exits > served // 10  # the hook did exit (alpha 0.2, T = 1.0)
    # memory allocated by lynx's code and still alive: flat from round 2 to round 21 (1,900 requests)
    growth = lynx_bytes[1] - lynx_bytes[0]
    print(
        f"lynx-held memory after round 2: {lynx_bytes[0]} B, after round {n_rounds}: {lynx_bytes[1]} B (growth {growth} B over "
        f"{(n_rounds - 2) * len(prompts)} requests, keep_events={keep_events})"
    )
    assert growth < 64 * 1024, growth


def test_events_beyond_the_bound_are_dropped_and_counted(organism_tokenizer):
    from lynx.engines.exit_control import ExitController

    ctl = ExitController({"exit_string": DEFAULT_EXIT, "keep_events": True, "max_kept_requests": 3}, organism_tokenizer)
    for i in range(5):
        ctl.events.audit(f"t{i}", {"event": "exit"})
    assert len(ctl.events) == 3 and ctl.events.dropped == 2
    assert ctl.events.take(["t0", "t4"]) == {"t0": ([], []), "t4": ([{"event": "exit"}], [])}
    quiet = ExitController({"exit_string": DEFAULT_EXIT}, organism_tokenizer)  # a server's: keeps nothing
    quiet.events.audit("t", {"event": "exit"})
    assert len(quiet.events) == 0

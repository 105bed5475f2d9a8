"""The live monitor inside the vLLM engine (organism, CPU build): audited requests are never
exited and their share is honoured, their labels are exactly ``lynx collect``'s for the same
greedy trace, a monitor's response reaches the engine, and lynx's memory stays flat over
thousands of monitored requests."""

import tracemalloc
import uuid

import numpy as np
import pytest

from lynx.models import ORGANISM_PROBE_DIR, resolve_model

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
PROBE = ORGANISM_PROBE_DIR
SETTINGS = {"audit_fraction": 0.5, "window": 50, "min_audits": 20, "grader": "integer", "response": "warn"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    pytest.importorskip("vllm")
    from lynx.evaluate.backends import VLLMBackend
    from lynx.exit_policy import ExitPolicy

    audit = tmp_path_factory.mktemp("monitor") / "audit.jsonl"
    policy = ExitPolicy.load(PROBE)
    hook = policy.hook_config({"keep_events": True, "audit_path": str(audit), "monitor": SETTINGS})
    b = VLLMBackend(resolve_model("organism"), hook, policy)
    yield b, audit


def _prompts(tok, n, seed=0, split="test"):
    from lynx.datasets import load
    from lynx.exit_policy import ExitPolicy
    from lynx.prompting import chat_prompt

    suffix = ExitPolicy.load(PROBE).prompt_suffix
    recs = load(f"organism:{split}:{n}", seed=seed)
    return recs, [tok(chat_prompt(tok, r.question, suffix=suffix), add_special_tokens=False)["input_ids"] for r in recs]


def _run(b, prompts, tags, temperature=0.6, alpha=0.2, max_tokens=1024, seeds=None):
    from lynx.exit_policy import request_args

    outs = b.complete(
        prompts,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=0.95,
        seeds=seeds or list(range(len(prompts))),
        stop_ids=[b.tokenizer.eos_token_id],
        extra_args=[request_args(alpha=alpha, tag=t) for t in tags],
    )
    return outs, b.take_events(tags)


def _audited_tags(n, fraction=SETTINGS["audit_fraction"], want=True):
    from lynx.engines.exit_control import audit_selected

    tags = []
    while len(tags) < n:
        t = uuid.uuid4().hex
        if audit_selected(fraction, 0, t, [], None) == want:
            tags.append(t)
    return tags


def test_audits_never_exit_their_share_is_honoured_and_their_output_is_plain_generation(backend):
    b, _ = backend
    _, prompts = _prompts(b.tokenizer, 64, seed=3)
    tags = [f"share-{i}" for i in range(64)]
    outs, events = _run(b, prompts, tags, temperature=1.0, alpha=0.2)
    audited = [any(e["event"] == "audit_trace" for e in events[t][0]) for t in tags]
    exited = [any(e["event"] == "exit" for e in events[t][0]) for t in tags]
    summaries = [next(e for e in events[t][0] if e["event"] == "request") for t in tags]
    assert all(s["audited"] == a for s, a in zip(summaries, audited, strict=True))
    assert not any(a and x for a, x in zip(audited, exited, strict=True))  # an audit never exits
    assert sum(exited) > 5  # the others do
    from lynx.engines.exit_control import audit_selected

    assert audited == [audit_selected(0.5, 0, t, [], None) for t in tags]  # exactly the seeded hash's choice
    assert 0.5 - 4 * (0.25 / 64) ** 0.5 < np.mean(audited) < 0.5 + 4 * (0.25 / 64) ** 0.5
    # an audited request is plain generation: the same tokens as without lynx, same seed
    plain = b.complete(
        [p for p, a in zip(prompts, audited, strict=True) if a],
        max_tokens=1024,
        temperature=1.0,
        top_p=0.95,
        seeds=[i for i, a in enumerate(audited) if a],
        stop_ids=[b.tokenizer.eos_token_id],
    )
    assert [o.ids for o, a in zip(outs, audited, strict=True) if a] == [o.ids for o in plain]
    # every summary has the drift statistic and the request's full length
    assert all(s["output_tokens"] == len(o.ids) and s["first_cue_position"] >= 0 for s, o in zip(summaries, outs, strict=True))


def test_live_labels_equal_lynx_collect_labels_for_the_same_greedy_trace(backend, tmp_path):
    from lynx.collect.pipeline import VLLMCollector, collect
    from lynx.config import CollectConfig
    from lynx.exit_policy import ExitPolicy
    from lynx.monitor.report import read_events
    from lynx.store.shards import read_folder

    b, audit = backend
    n = 12
    recs, prompts = _prompts(b.tokenizer, n, seed=5)
    tags = _audited_tags(n)
    _run(b, prompts, tags, temperature=0.0, alpha=0.1, seeds=[0] * n)
    labels = {e["tag"]: e for e in read_events(audit) if e.get("event") == "audit_label" and e.get("tag") in tags}
    assert set(labels) == set(tags)
    policy = ExitPolicy.load(PROBE)
    cfg = CollectConfig(
        model="organism",
        dataset=f"organism:test:{n}",
        out=tmp_path / "collect",
        engine="vllm",
        temperature=0.0,
        layers=",".join(map(str, policy.layers)),
        cues=tuple(policy.cues),
        exit_string=policy.exit_string,
        prompt_suffix=policy.prompt_suffix,
        labels="agreement",
        seed=5,
        n_problems=n,
    )
    collect(cfg, engine=VLLMCollector.on_engine(resolve_model("organism"), b.llm, cfg))
    cues = read_folder(tmp_path / "collect", "cues").to_pydict()
    n_compared = 0
    for rec, tag in zip(recs, tags, strict=True):
        rows = sorted((p, a, tp) for pid, p, a, tp in zip(cues["problem_id"], cues["token_position"], cues["agreement"], cues["thinking_position"], strict=True) if pid == rec.id)
        live = labels[tag]
        assert live["cue_positions"] == [p for p, _, _ in rows], rec.id
        assert [c[2] for c in live["cues"]] == [a for _, a, _ in rows], rec.id  # agreement labels
        assert [c[0] for c in live["cues"]] == [tp for _, _, tp in rows], rec.id  # thinking positions
        n_compared += len(rows)
    assert n_compared >= n  # several cues per trace were compared


def test_a_monitor_response_reaches_the_engine(backend):
    from lynx.exit_policy import ExitPolicy

    b, _ = backend
    policy = ExitPolicy.load(PROBE)
    strictest = max(policy.calibrations[k].threshold(0.1).threshold for k in policy.calibrations)
    _, prompts = _prompts(b.tokenizer, 8, seed=9)
    tags = _audited_tags(8, want=False)
    try:
        b.set_overrides({"T0.6": "conservative"})
        _, events = _run(b, prompts, tags, temperature=0.6, alpha=0.1)
        summaries = [next(e for e in events[t][0] if e["event"] == "request") for t in tags]
        assert all(s["response"] == "conservative" and s["threshold"] == pytest.approx(strictest) for s in summaries)
        _, events = _run(b, prompts, [t + "-b" for t in tags], temperature=1.0, alpha=0.1)  # another group: untouched
        assert all(next(e for e in events[t + "-b"][0] if e["event"] == "request")["response"] is None for t in tags)
    finally:
        b.set_overrides({})
    _, events = _run(b, prompts, [t + "-c" for t in tags], temperature=0.6, alpha=0.1)
    assert all(next(e for e in events[t + "-c"][0] if e["event"] == "request")["response"] is None for t in tags)


def test_lynx_memory_stays_flat_over_thousands_of_monitored_requests(backend):
    """2,100 monitored requests (half of them audited and labelled): nothing per request survives
    it, and the monitor holds its bounded window — lynx-held memory is flat from round 2 to 21."""
    from lynx.engines.vllm_plugin.worker_state import LynxWorker

    b, _ = backend
    _, prompts = _prompts(b.tokenizer, 100, seed=11)

    def engine_state(worker):
        s = LynxWorker.find(worker)
        return {"events": len(s.controller.events), "rows": sum(len(p.rows) for p in s.processors)}

    sizes, held = [], []
    tracemalloc.start()
    try:
        for r in range(21):
            tags = [f"mem{r}-{i}" for i in range(len(prompts))]
            _run(b, prompts, tags, temperature=1.0, alpha=0.2, max_tokens=96, seeds=[r * 1000 + i for i in range(len(prompts))])
            (state,) = b.llm.collective_rpc(engine_state)
            sizes.append(state)
            if r in (1, 20):
                snap = tracemalloc.take_snapshot()
                held.append(sum(s.size for s in snap.statistics("filename") if "/lynx/" in str(s.traceback)))
    finally:
        tracemalloc.stop()
    g = b.monitoring.monitor.groups["T1"]
    assert g.requests >= 2100 and len(g.window) == SETTINGS["window"]
    assert all(s["events"] == 0 and s["rows"] == 0 for s in sizes), sizes
    growth = held[1] - held[0]
    print(f"lynx-held memory after round 2: {held[0]} B, after round 21: {held[1]} B (growth {growth} B over 1,900 monitored requests)")
    assert growth < 64 * 1024, growth


def test_vllm_online_scores_equal_the_offline_scores_of_the_shipped_probe_and_its_baseline(backend):
    """In vLLM too (the shipped probe, and its context-only baseline through ``lynx_scorer``), the
    score the engine compares with the threshold at each cue equals what calibration replays
    offline for the same cues (lynx.probe.scoring.cue_scores). Requests with a raw threshold are
    not monitored, so this shares the monitored engine without touching its audits."""
    from test_probe_v2 import assert_online_equals_offline

    from lynx.exit_policy import ExitPolicy
    from lynx.organism.problems import sample_problems
    from lynx.prompting import chat_prompt

    b, _ = backend
    tok, policy = b.tokenizer, ExitPolicy.load(PROBE)
    problems = sample_problems("test", 12, seed=31)
    prompts = [tok(chat_prompt(tok, p.text, suffix=policy.prompt_suffix), add_special_tokens=False)["input_ids"] for p in problems]
    for scorer in ["probe"] + list(policy.baselines):
        tags = [f"{scorer}-{uuid.uuid4().hex}" for _ in prompts]
        args = [{"lynx_record": t, "lynx_threshold": 2.0, "lynx_scorer": scorer} for t in tags]
        outs = b.complete(prompts, max_tokens=300, temperature=0.6, top_p=0.95, seeds=list(range(len(prompts))), stop_ids=[tok.eos_token_id], extra_args=args)
        events = b.take_events(tags)
        n = assert_online_equals_offline(policy, tok, problems, prompts, [o.ids for o in outs], [events[t][1] for t in tags], scorer)
        assert n >= 10

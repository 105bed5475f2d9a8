"""lynx's in-engine hook on vLLM (CPU build, old model runner): untouched requests, recorded
features equal to transformers', exits at the same cue as the transformers engine, audit.
Every engine test runs with both hand-offs of the probe's layers (``direct``, the CPU
default, and ``output``, the CUDA-graph-safe layout), switched inside the one engine."""

import numpy as np
import pytest
import torch

from lynx.config import DEFAULT_EXIT
from lynx.engines import hf
from lynx.engines.exit_control import ExitController
from lynx.engines.hf_exit import generate_with_exit
from lynx.layers import default_layers
from lynx.models import model_fingerprint, resolve_model
from lynx.organism.problems import sample_problems
from lynx.probe.artifact import Probe, save_probe
from lynx.prompting import chat_prompt

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def _prompts(tok, n, seed):
    return [tok(chat_prompt(tok, p.text), add_special_tokens=False)["input_ids"] for p in sample_problems("test", n, seed=seed)]


def _audits(llm, tag):
    from lynx.engines.vllm_engine import take_events

    return take_events(llm, [tag])[tag][0]


def _records(llm, tag):
    from lynx.engines.vllm_engine import take_events

    return take_events(llm, [tag])[tag][1]


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory, organism):
    lm, _ = organism
    layers = list(default_layers(lm.config.num_hidden_layers))
    d = len(layers) * lm.config.hidden_size
    g = torch.Generator().manual_seed(1)
    probe = Probe(
        torch.zeros(d),
        torch.ones(d),
        [torch.randn(d, 8, generator=g) / d**0.5, torch.randn(8, 1, generator=g)],
        [torch.zeros(8), torch.zeros(1)],
        {
            "layers": layers,
            "hidden_size": lm.config.hidden_size,
            "model": "organism",
            "model_fingerprint": model_fingerprint(resolve_model("organism")),
            "cues": ["alternatively", "hmm", "wait"],
            "exit_string": DEFAULT_EXIT,
        },
    )
    out = tmp_path_factory.mktemp("vprobe") / "probe"
    save_probe(probe, out)
    return out, probe


@pytest.fixture(scope="module")
def engine(probe_dir):
    from lynx.engines.vllm_engine import build_lynx_llm

    folder, probe = probe_dir
    llm, _ = build_lynx_llm(resolve_model("organism"), {"probe": str(folder), "layers": probe.layers, "exit_string": DEFAULT_EXIT, "keep_events": True})
    return llm


@pytest.fixture(params=["direct", "output"])
def lynx_llm(engine, request):
    """The engine with the probe's layers handed to compute_logits one way or the other; the
    test then checks that this hand-off, and not the other, carried the step's features."""
    _set_model(engine, "lynx_handoff", request.param)
    engine.apply_model(lambda model: setattr(model.lynx_handoff_state, "layer_states", None))
    try:
        yield engine
    finally:
        _set_model(engine, "lynx_handoff", "direct")
    handed = engine.apply_model(lambda model: model.lynx_handoff_state.layer_states is not None)[0]
    assert handed == (request.param == "direct")


def test_requests_without_lynx_are_plain_generation(organism, lynx_llm):
    from lynx.engines.vllm_engine import generate_ids

    lm, tok = organism
    prompts = _prompts(tok, 8, seed=21)
    assert generate_ids(lynx_llm, prompts, max_new_tokens=300) == hf.generate(lm, tok, prompts, max_new_tokens=300)
    # sampled: a request's output does not depend on lynx requests sharing its batch
    alone = generate_ids(lynx_llm, prompts, max_new_tokens=300, temperature=0.6, top_p=0.95, seed=5)
    args = [None if i % 2 == 0 else {"lynx_threshold": 0.0, "lynx_tag": f"mix{i}"} for i in range(8)]
    mixed = generate_ids(lynx_llm, prompts, max_new_tokens=300, temperature=0.6, top_p=0.95, seed=5, extra_args=args)
    assert [mixed[i] for i in range(0, 8, 2)] == [alone[i] for i in range(0, 8, 2)]
    exited = [_audits(lynx_llm, f"mix{i}") for i in range(1, 8, 2)]
    assert sum(bool(a) for a in exited) >= 2


def test_vectorised_row_filter_never_misses_a_row_that_needs_a_decision(organism, lynx_llm, monkeypatch):
    """With the direct hand-off the processor looks only at the rows whose input token this
    step is a cue completer or an exit token (one vectorised test on the step's input ids).
    Checked at every step against the full per-row scan: every row that the scan finds at a
    candidate cue token or in the middle of an exit is among them. Exits do happen (threshold
    0), so the exit string's rows are covered; the output hand-off falls back to the scan."""
    from lynx.engines.vllm_engine import generate_ids
    from lynx.engines.vllm_plugin import processor_v1

    _, tok = organism
    original = processor_v1.LynxLogitsProcessor._rows_to_check
    seen = {"filtered": 0, "scanned": 0, "needed": 0}

    def checked(self, feats, n, width):
        got = original(self, feats, n, width)
        full = [(r, s) for r, s in self.rows.items() if r < n]
        need = {
            r
            for r, s in full
            if (s.exit_from is None and s.output and s.output[-1] in self.controller.candidates)
            or (s.exit_from is not None and self.controller.exit_token(s, len(s.output), s.output[-1]) is not None)
        }
        got_rows = {r for r, _ in got}
        assert need <= got_rows, f"missed rows {sorted(need - got_rows)}"
        seen["filtered" if feats is not None and feats.input_ids is not None else "scanned"] += 1
        seen["needed"] += len(need)
        return got

    monkeypatch.setattr(processor_v1.LynxLogitsProcessor, "_rows_to_check", checked)
    prompts = _prompts(tok, 8, seed=25)
    args = [{"lynx_threshold": 0.0 if i % 2 else 2.0, "lynx_tag": f"vf{i}"} for i in range(8)]
    generate_ids(lynx_llm, prompts, max_new_tokens=300, temperature=0.6, top_p=0.95, seed=7, extra_args=args)
    exits = [_audits(lynx_llm, f"vf{i}") for i in range(8)]
    assert sum(bool(a) for a in exits) >= 2 and seen["needed"] > 20
    direct = shared_handoff(lynx_llm) == "direct"
    assert (seen["filtered"] > 50 and seen["scanned"] <= 2) if direct else seen["filtered"] == 0


def shared_handoff(llm) -> str:
    got = []
    llm.apply_model(lambda model: got.append(model.lynx_handoff))
    return got[0]


def test_recorded_features_equal_transformers_hidden_states(organism, lynx_llm, probe_dir):
    from lynx.cues import CueMatcher
    from lynx.engines.vllm_engine import generate_ids

    lm, tok = organism
    _, probe = probe_dir
    prompts = _prompts(tok, 8, seed=22)
    outs = generate_ids(lynx_llm, prompts, max_new_tokens=300, extra_args=[{"lynx_record": f"r{i}"} for i in range(8)])
    matcher = CueMatcher(tok)
    n = 0
    for i, (p, o) in enumerate(zip(prompts, outs, strict=True)):
        rec = _records(lynx_llm, f"r{i}")
        pos = [c.position for c in matcher.find(p + o, start=len(p))]
        pos = [q for q in pos if q < len(p) + len(o) - 1]  # the last token is never fed back in
        assert [r[0] for r in rec][: len(pos)] == pos
        if pos:
            ref = hf.hidden_states_at(lm, [p + o], [pos], probe.layers)[0].reshape(len(pos), -1)
            np.testing.assert_allclose(np.stack([r[1] for r in rec[: len(pos)]]), ref, atol=1e-4)
            np.testing.assert_allclose([r[2] for r in rec[: len(pos)]], probe(torch.from_numpy(ref)).numpy(), atol=1e-4)
            n += len(pos)
    assert n >= 3


def test_exit_at_the_same_cue_as_transformers(organism, lynx_llm, probe_dir):
    from lynx.engines.vllm_engine import generate_ids

    lm, tok = organism
    folder, probe = probe_dir
    prompts = _prompts(tok, 8, seed=23)
    # a threshold between the cue scores so that some traces exit late, some early, some never
    rec_args = [{"lynx_record": f"s{i}"} for i in range(8)]
    generate_ids(lynx_llm, prompts, max_new_tokens=300, extra_args=rec_args)
    scores = np.concatenate([[r[2] for r in _records(lynx_llm, f"s{i}")] for i in range(8)])
    t = float(np.quantile(scores, 0.6))
    v_args = [{"lynx_threshold": t, "lynx_tag": f"v{i}"} for i in range(8)]
    h_args = [{"lynx_threshold": t, "lynx_tag": f"h{i}"} for i in range(8)]
    v_out = generate_ids(lynx_llm, prompts, max_new_tokens=300, extra_args=v_args)
    hf_ctl = ExitController({"exit_string": DEFAULT_EXIT, "keep_events": True}, tok)
    h_out = generate_with_exit(lm, tok, prompts, hf_ctl, h_args, probe=probe, max_new_tokens=300)
    assert v_out == h_out
    v_audit = [[a["cue_position"] for a in _audits(lynx_llm, f"v{i}")] for i in range(8)]
    h_audit = [[a["cue_position"] for a in hf_ctl.events.take([f"h{i}"])[f"h{i}"][0]] for i in range(8)]
    assert v_audit == h_audit and sum(map(len, v_audit)) >= 4
    # the dense variant (the model scores every row on device) makes the same decisions
    _set_model(lynx_llm, "lynx_probe_rows", "all")
    try:
        assert generate_ids(lynx_llm, prompts, max_new_tokens=300, extra_args=v_args) == v_out
    finally:
        _set_model(lynx_llm, "lynx_probe_rows", "cues")
    assert [[a["cue_position"] for a in _audits(lynx_llm, f"v{i}")] for i in range(8)] == v_audit


def _set_model(llm, attr, value):
    """Set an attribute of the wrapper model inside vLLM's worker (in-process engine)."""
    llm.apply_model(lambda model: setattr(model, attr, value))


@pytest.mark.parametrize("fault", ["wrong_width", "nan"])
def test_a_failing_probe_disables_lynx_requests_and_leaves_the_others(organism, lynx_llm, probe_dir, fault):
    """Safety: a probe that raises (wrong input width) or returns NaN switches lynx off for the
    requests at a cue, with an audit entry; the engine keeps running and every output is the
    plain one (lynx never forced a token)."""
    from lynx.engines.vllm_engine import generate_ids

    _, tok = organism
    _, probe = probe_dir
    prompts = _prompts(tok, 8, seed=24)
    plain = generate_ids(lynx_llm, prompts, max_new_tokens=300, temperature=0.6, top_p=0.95, seed=3)
    d = probe.input_dim
    if fault == "wrong_width":
        broken = Probe(torch.zeros(d + 1), torch.ones(d + 1), [torch.ones(d + 1, 1)], [torch.zeros(1)], probe.meta)
    else:
        broken = Probe(torch.zeros(d), torch.ones(d), [torch.full((d, 1), float("nan"))], [torch.zeros(1)], probe.meta)
    _set_model(lynx_llm, "_lynx_device_probe", broken)
    try:
        args = [None if i % 2 == 0 else {"lynx_threshold": 0.0, "lynx_tag": f"{fault}{i}"} for i in range(8)]
        out = generate_ids(lynx_llm, prompts, max_new_tokens=300, temperature=0.6, top_p=0.95, seed=3, extra_args=args)
    finally:
        _set_model(lynx_llm, "_lynx_device_probe", None)  # rebuilt from the real probe at the next step
    assert out == plain
    audits = [_audits(lynx_llm, f"{fault}{i}") for i in range(1, 8, 2)]
    assert sum(1 for a in audits if a) >= 2  # at threshold 0 every request at a cue would have exited
    assert all(e["event"] == "disabled" and "probe score" in e["reason"] for a in audits for e in a)


def test_unsupported_configurations_are_refused_at_start_up():
    from lynx.engines.vllm_engine import build_lynx_llm

    ref = resolve_model("organism")
    with pytest.raises(ValueError, match="speculative decoding"):
        build_lynx_llm(ref, {}, speculative_config={"method": "ngram", "num_speculative_tokens": 2})
    with pytest.raises(ValueError, match="pipeline parallelism"):
        build_lynx_llm(ref, {}, pipeline_parallel_size=2)

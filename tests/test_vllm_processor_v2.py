"""The Model Runner V2 logits processor, driven by hand-built LogitsContexts (the new runner
needs a GPU; its interface module imports on CPU)."""

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

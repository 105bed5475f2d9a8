"""The organism runs in vLLM (CPU build) and agrees with transformers token for token."""

import os

import pytest

from lynx.engines import hf
from lynx.models import resolve_model
from lynx.organism.problems import sample_problems
from lynx.prompting import chat_prompt


def _prompts(tok, n, seed):
    return [tok(chat_prompt(tok, p.text), add_special_tokens=False)["input_ids"] for p in sample_problems("test", n, seed=seed)]


@pytest.fixture(scope="module")
def llm():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in-process: no spawn in pytest
    from lynx.engines.vllm_engine import build_llm

    return build_llm(resolve_model("organism"))


@pytest.mark.slow
@pytest.mark.vllm
def test_greedy_output_is_identical_in_transformers_and_vllm(organism, llm):
    from lynx.engines.vllm_engine import generate_ids

    model, tok = organism
    prompts = _prompts(tok, 8, seed=11)
    ours = hf.generate(model, tok, prompts, max_new_tokens=512)
    theirs = generate_ids(llm, prompts, max_new_tokens=512)
    assert theirs == ours
    texts = [tok.decode(t) for t in ours]
    assert all("</think>" in t and "\\boxed{" in t for t in texts)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_sampling_produces_cues(organism, llm):
    from lynx.cues import CueMatcher
    from lynx.engines.vllm_engine import generate_ids

    _, tok = organism
    prompts = _prompts(tok, 64, seed=12)
    outs = generate_ids(llm, prompts, max_new_tokens=768, temperature=0.6, top_p=0.95, seed=0)
    matcher = CueMatcher(tok)
    cues = sum(len(matcher.find(p + o, start=len(p))) for p, o in zip(prompts, outs, strict=True))
    assert cues / len(prompts) >= 1.0


@pytest.mark.slow
@pytest.mark.vllm
def test_forced_exits_continued_in_vllm_equal_transformers(organism, llm):
    """The model card's forced exits may run on vLLM (``lynx organism info --engine vllm``): the
    same greedy answer, hence the same label, at every cue of sampled traces."""
    from lynx.cues import CueMatcher
    from lynx.engines.vllm_engine import generate_ids
    from lynx.grading import grade_integer
    from lynx.organism.problems import sample_problems as problems
    from lynx.rollouts import force_exits, make_rollouts

    model, tok = organism
    ps = problems("test", 12, seed=13)
    prompts = _prompts(tok, 12, seed=13)
    gens = generate_ids(llm, prompts, max_new_tokens=512, temperature=0.6, top_p=0.95, seed=3)

    def rollouts():
        return make_rollouts(tok, CueMatcher(tok), [p.problem_id for p in ps], [str(p.answer) for p in ps], prompts, gens, [grade_integer] * len(ps))

    ours, theirs = rollouts(), rollouts()
    force_exits(model, tok, ours, grade_integer, max_answer_tokens=16)
    force_exits(model, tok, theirs, grade_integer, max_answer_tokens=16, generate=lambda pre, n, stop: generate_ids(llm, pre, max_new_tokens=n, stop_ids=stop))
    pairs = [(a, b) for ra, rb in zip(ours, theirs, strict=True) for a, b in zip(ra.cue_points, rb.cue_points, strict=True)]
    assert len(pairs) >= 12
    assert [(a.forced_answer, a.safe) for a, b in pairs] == [(b.forced_answer, b.safe) for a, b in pairs]
    assert any(a.safe for a, _ in pairs) and not all(a.safe for a, _ in pairs)

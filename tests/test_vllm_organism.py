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

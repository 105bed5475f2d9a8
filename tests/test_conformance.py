"""lynx's vLLM hook on every architecture family vLLM's CPU build runs: a tiny local model per
family (built, taught a few scripted traces), collected through both engines, exits compared,
per-request alpha served. One subprocess per family (``python -m lynx.conformance.check``, the
command the docs give for GPU machines), so every family gets a fresh vLLM engine."""

import json
import os
import subprocess
import sys

import pytest

from lynx.conformance.tiny_models import FAMILIES, conformance_families

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def _check(family: str, work) -> dict:
    proc = subprocess.run([sys.executable, "-m", "lynx.conformance.check", family, str(work)], capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", conformance_families())
def test_family_conformance(family, tmp_path):
    """One family, every check (one test, so the family's model and engine are built once and the
    families spread over the workers)."""
    report = _check(family, tmp_path)

    # the hook's features at the probe's layers = transformers' hidden_states, at the same cue points
    hs = report["hidden_states"]
    assert hs["cues"][0] >= 4, "the taught model must think with cues"
    assert hs["same_cue_points"] and hs["same_labels"], hs
    assert hs["features_close"], hs  # |hook - transformers| <= atol + rtol * |transformers| (check.ATOL, check.RTOL)
    assert hs["feature_width"] == len(report["collections"]["vllm"]["layers"]) * 128

    # greedy rollouts with a random probe and a fixed threshold exit at the same cues, same tokens
    ex = report["exits"]
    assert ex["same_exits"] and ex["same_tokens"], ex
    assert ex["exited"]["vllm"] > 0, ex  # the threshold (a gap in the scores near their median) lets some cues exit

    # the family's thinking format is collected and exited into: gpt-oss thinks in harmony's analysis
    # channel and its exits go into the final channel; the others think in <think>
    fmt = FAMILIES[family].thinking
    assert report["collections"]["vllm"]["thinking"] == report["collections"]["hf"]["thinking"] == fmt
    if fmt == "harmony":
        assert "<|end|><|start|>assistant<|channel|>final<|message|>Final answer: \\boxed{" in ex["exit_text"]
        assert ex["exit_text"].startswith("<|channel|>analysis<|message|>")

    # requests asking for lynx_alpha are served with the calibrated condition's threshold
    a = report["alpha"]
    assert a["requests"] == 8  # the four problems at alpha 0.5 and at 0.2
    assert a["exits"] and all(e["alpha"] in (0.5, 0.2) and e["condition"] == "T0" and not e["uncalibrated_condition"] for e in a["exits"])


SERVED_FAMILY = "gpt_oss"  # mixture of experts, sliding-window layers with attention sinks: the farthest from the organism's Qwen3


@pytest.fixture(scope="module")
def served_tiny(tmp_path_factory, serve_organism):
    """The OpenAI server on a tiny gpt-oss with lynx's plugin and a calibrated random probe."""
    from lynx.calibrate.pipeline import calibrate
    from lynx.conformance.check import collect_with, prepare, random_probe

    work = tmp_path_factory.mktemp("served-tiny")
    model, problems = prepare(SERVED_FAMILY, work)
    data = collect_with("hf", model, problems, work / "collect")
    probe = random_probe(data, work / "probe")
    calibrate(probe, data, alphas=(0.5,))
    audit = work / "audit.jsonl"
    with serve_organism(work, {"probe": str(probe), "audit_path": str(audit)}, model=str(model), name="tiny") as base:
        yield base, audit, problems, model


def test_served_tiny_model_takes_per_request_alpha(served_tiny, post_status):
    """Completions with the prompt rendered by the model's own chat template: vLLM's chat endpoint
    renders gpt-oss models with the real harmony encoding (o200k ids), which a tiny local
    tokenizer does not have."""
    from transformers import AutoTokenizer

    from lynx.prompting import chat_prompt

    base, audit, problems, model = served_tiny
    tok = AutoTokenizer.from_pretrained(str(model))
    questions = [json.loads(line)["question"] for line in problems.read_text().splitlines()]
    for i, q in enumerate(questions):
        body = {"model": "tiny", "prompt": chat_prompt(tok, q), "temperature": 0.0, "max_tokens": 192, "skip_special_tokens": False}
        body["vllm_xargs"] = {"lynx_alpha": 0.5, "lynx_tag": f"q{i}"}
        status, text = post_status(base + "/v1/completions", body)
        assert status == 200, text
        assert json.loads(text)["choices"][0]["text"]
    events = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
    exits = [e for e in events if e["event"] == "exit"]
    assert exits and all(e["alpha"] == 0.5 and e["tag"].startswith("q") for e in exits)


def test_served_tiny_model_refuses_a_bad_alpha_with_http_400(served_tiny, post_status):
    base = served_tiny[0]
    body = {"model": "tiny", "prompt": "Compute 1 + 2.", "max_tokens": 8, "vllm_xargs": {"lynx_alpha": 1.5}}
    status, text = post_status(base + "/v1/completions", body)
    assert status == 400 and "strictly between 0 and 1" in text

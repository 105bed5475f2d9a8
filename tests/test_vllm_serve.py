"""`vllm serve` with lynx's plugin, end to end over HTTP: concurrent chat requests with and
without lynx; the lynx ones exit early (audit in the audit file), the others are unchanged."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from lynx.models import ORGANISM_PROBE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
PROBE = ORGANISM_PROBE_DIR


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_organism):
    audit = tmp_path_factory.mktemp("serve") / "audit.jsonl"
    lynx_cfg = {"probe": str(PROBE), "audit_path": str(audit)}  # layers, cues and exit string come from the probe
    with serve_organism(audit.parent, lynx_cfg) as base:
        yield base, audit


def test_serve_concurrent_requests_with_and_without_lynx(server, organism, post_json):
    from lynx.engines import hf
    from lynx.organism.problems import sample_problems
    from lynx.prompting import chat_prompt, user_message

    base, audit = server
    lm, tok = organism
    problems = sample_problems("test", 8, seed=41)

    def ask(i_and_lynx):
        i, use_lynx = i_and_lynx
        body = {"model": "organism", "messages": [{"role": "user", "content": user_message(problems[i].text)}], "temperature": 0.0, "max_tokens": 400, "skip_special_tokens": False}
        if use_lynx:
            body["vllm_xargs"] = {"lynx_alpha": 0.2, "lynx_tag": f"req{i}"}
        return post_json(base + "/v1/chat/completions", body)

    jobs = [(i, flag) for i in range(len(problems)) for flag in (False, True)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = dict(zip(jobs, pool.map(ask, jobs), strict=True))

    # without lynx: exactly plain greedy generation (transformers reference)
    prompts = [tok(chat_prompt(tok, p.text), add_special_tokens=False)["input_ids"] for p in problems]
    ref = hf.generate(lm, tok, prompts, max_new_tokens=400)
    entries = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
    exits = {e["tag"]: e for e in entries if e["event"] == "exit"}
    n_exit = 0
    for i in range(len(problems)):
        plain = answers[(i, False)]["choices"][0]["message"]["content"]
        assert plain == tok.decode(ref[i], skip_special_tokens=False).replace("<|im_end|>", "").strip() or plain.strip() == tok.decode(ref[i], skip_special_tokens=True).strip()
        with_lynx = answers[(i, True)]
        if f"req{i}" in exits:
            n_exit += 1
            e = exits[f"req{i}"]
            assert {"cue_position", "score", "threshold", "alpha", "mode"} <= set(e) and e["score"] >= e["threshold"] and e["alpha"] == 0.2
            assert with_lynx["usage"]["completion_tokens"] < answers[(i, False)]["usage"]["completion_tokens"]
        else:
            assert with_lynx["choices"][0]["message"]["content"] == plain
    assert n_exit >= len(problems) // 2


@pytest.mark.parametrize(
    "xargs, expect",
    [
        ({"lynx_alpha": "abc"}, "lynx_alpha must be a number"),
        ({"lynx_alpha": 2}, "strictly between 0 and 1"),
        ({"lynx_alpha": 0}, "strictly between 0 and 1"),
        ({"lynx_alpha": -1}, "strictly between 0 and 1"),
        ({"lynx_threshold": "nan"}, "lynx_threshold must be a number"),
        ({"lynx_alpha": 0.1, "lynx_mode": "bogus"}, "lynx_mode must be one of"),
        ({"lynx_alpah": 0.1}, "unknown lynx request key"),
        ({"lynx_alpha": 0.1, "lynx_domain": "a/b"}, "lynx_domain must be"),
        ({"lynx_domain": "gsm8k"}, "without lynx_alpha"),
        ({"lynx_alpha": 0.1, "lynx_scorer": "oracle"}, "lynx_scorer must be one of"),
        ({"lynx_alpha": "x" * 1_000_000}, "chars)"),
    ],
)
def test_serve_refuses_bad_lynx_values_with_400_and_keeps_serving(server, xargs, expect, post_status):
    """A bad per-request value is an HTTP 400 naming the problem (never a silent plain run),
    the message never echoes an unbounded value, and the next good request is served."""
    base, _ = server
    body = {"model": "organism", "messages": [{"role": "user", "content": "Compute 1 + 2."}], "temperature": 0.0, "max_tokens": 8}
    status, text = post_status(base + "/v1/chat/completions", body | {"vllm_xargs": xargs})
    assert status == 400 and expect in text and len(text) < 2000, (status, text[:500])
    status, text = post_status(base + "/v1/chat/completions", body | {"vllm_xargs": {"lynx_alpha": 0.1}})
    assert status == 200, text[:500]


def test_serve_takes_each_requests_condition_from_its_temperature(server, post_json):
    """Over HTTP, the threshold of a request comes from the calibration of its own temperature
    (the shipped probe has T0.6 and T1); a greedy request (temperature 0, never calibrated) gets
    the conservative fallback and an ``uncalibrated_condition`` audit event."""
    from lynx.organism.problems import sample_problems
    from lynx.prompting import user_message

    base, audit = server
    problems = sample_problems("test", 6, seed=43)
    for temperature, name in ((0.6, "t06"), (1.0, "t1"), (0.0, "greedy")):
        for i, p in enumerate(problems):
            body = {
                "model": "organism",
                "messages": [{"role": "user", "content": user_message(p.text)}],
                "temperature": temperature,
                "max_tokens": 400,
                "seed": i,
                "vllm_xargs": {"lynx_alpha": 0.2, "lynx_tag": f"{name}-{i}"},
            }
            post_json(base + "/v1/chat/completions", body)
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    by_run = {name: [e for e in entries if str(e.get("tag", "")).startswith(name + "-")] for name in ("t06", "t1", "greedy")}
    for name, cond in (("t06", "T0.6"), ("t1", "T1")):
        exits = [e for e in by_run[name] if e["event"] == "exit"]
        assert exits and all(e["condition"] == cond and not e["uncalibrated_condition"] for e in exits), by_run[name]
        assert not any(e["event"] == "uncalibrated_condition" for e in by_run[name])
    flagged = [e for e in by_run["greedy"] if e["event"] == "uncalibrated_condition"]
    assert len(flagged) == len(problems) and all(e["temperature"] == 0.0 and e["fallback"] == "conservative" for e in flagged)
    assert all(e["uncalibrated_condition"] for e in by_run["greedy"] if e["event"] == "exit")

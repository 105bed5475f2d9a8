"""Decode throughput of lynx's vLLM hook, and wall-clock/tokens of early exit vs vanilla.

1. *Overhead*: plain vLLM vs lynx's wrapper + logits processor with every request opted in at
   an unreachable threshold (the probe scores every row at every step, cue checks run, nothing
   exits), same prompts, seeds and lengths. Target: throughput ratio >= 0.98.
2. *Saving*: vanilla vs lynx at ``--alpha`` on the same prompts: wall-clock and tokens.

Each configuration runs ``--repeats`` times alternately; the best time of each is reported
(the minimum is the least noisy estimate on a shared machine). Prints one JSON object.

    python benchmarks/vllm_overhead.py --probe probes/organism --n 256 --max-tokens 256
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time


def _prompts(tok, n: int, suffix: str):
    from lynx.datasets import load
    from lynx.organism.prompting import chat_prompt

    return [tok(chat_prompt(tok, r.question, suffix=suffix), add_special_tokens=False)["input_ids"] for r in load("organism:test", n=n)]


def _timed(llm, prompts, extra, max_tokens, seed):
    from lynx.engines.vllm import generate_ids

    t = time.perf_counter()
    outs = generate_ids(llm, prompts, max_new_tokens=max_tokens, temperature=0.6, top_p=0.95, seed=seed, extra_args=extra)
    return time.perf_counter() - t, outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probe", default="probes/organism")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    from lynx.engines.exit_control import AUDIT
    from lynx.engines.vllm import build_llm, build_lynx_llm
    from lynx.models import resolve_model
    from lynx.probe import load_probe

    ref = resolve_model("organism")
    probe = load_probe(args.probe)
    cfg = {"probe": args.probe, "layers": probe.layers, "cues": probe.meta["cues"], "exit_string": probe.meta["exit_string"]}
    result: dict = {"n_prompts": args.n, "max_tokens": args.max_tokens, "repeats": args.repeats, "probe": args.probe}

    # 1. overhead: two engines, alternated
    plain = build_llm(ref)
    tok = plain.get_tokenizer()
    prompts = _prompts(tok, args.n, probe.meta.get("prompt_suffix") or "")
    _timed(plain, prompts[:8], None, 16, 0)  # warm-up
    t_plain, plain_out = min((_timed(plain, prompts, None, args.max_tokens, 1) for _ in range(args.repeats)), key=lambda x: x[0])
    del plain
    gc.collect()
    lynx, _ = build_lynx_llm(ref, cfg)
    never = [{"lynx_threshold": 2.0} for _ in prompts]  # scores are probabilities: never >= 2
    _timed(lynx, prompts[:8], None, 16, 0)
    t_lynx, lynx_out = min((_timed(lynx, prompts, never, args.max_tokens, 1) for _ in range(args.repeats)), key=lambda x: x[0])
    n_plain, n_lynx = sum(map(len, plain_out)), sum(map(len, lynx_out))
    result["overhead"] = {
        "plain_tokens_per_s": round(n_plain / t_plain, 1), "lynx_tokens_per_s": round(n_lynx / t_lynx, 1),
        "throughput_ratio": round((n_lynx / t_lynx) / (n_plain / t_plain), 4), "same_outputs": plain_out == lynx_out,
    }

    # 2. exits vs vanilla, same engine, same seeds
    t_van, van = min((_timed(lynx, prompts, None, args.max_tokens, 2) for _ in range(args.repeats)), key=lambda x: x[0])
    tagged = [{"lynx_alpha": args.alpha, "lynx_tag": f"b{i}"} for i in range(len(prompts))]
    t_exit, ex = min((_timed(lynx, prompts, tagged, args.max_tokens, 2) for _ in range(args.repeats)), key=lambda x: x[0])
    exits = sum(any(a["event"] == "exit" for a in AUDIT.pop(f"b{i}", [])) for i in range(len(prompts)))
    result["early_exit"] = {
        "alpha": args.alpha, "vanilla_seconds": round(t_van, 3), "lynx_seconds": round(t_exit, 3),
        "vanilla_tokens": sum(map(len, van)), "lynx_tokens": sum(map(len, ex)),
        "token_saving": round(1 - sum(map(len, ex)) / sum(map(len, van)), 4), "wall_clock_saving": round(1 - t_exit / t_van, 4),
        "requests_exited": exits,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

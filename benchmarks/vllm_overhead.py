"""Decode throughput of lynx's vLLM hook, and wall-clock/tokens of early exit vs vanilla.

1. *Overhead*: plain vLLM vs lynx's wrapper + logits processor with every request opted in at
   an unreachable threshold (the probe scores every row at every step, cue checks run, nothing
   exits), same prompts, seeds and lengths. Target: throughput ratio >= 0.98.
2. *Saving*: vanilla vs lynx at ``--alpha`` on the same prompts: wall-clock and tokens.

Each configuration runs ``--repeats`` times, interleaved; the best time of each is reported
(the minimum is the least noisy estimate on a shared machine). Prints one JSON object.

    python benchmarks/vllm_overhead.py --probe probes/organism --n 256 --max-tokens 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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


def worker(kind: str, probe_dir: str, n: int, max_tokens: int) -> None:
    """One timed run in this process: plain vLLM, or lynx's hook opted in at an unreachable threshold."""
    import hashlib

    from lynx.engines.vllm import build_llm, build_lynx_llm
    from lynx.models import resolve_model
    from lynx.probe import load_probe

    ref = resolve_model("organism")
    probe = load_probe(probe_dir)
    if kind == "plain":
        llm = build_llm(ref)
        extra = None
    else:
        cfg = {"probe": probe_dir, "layers": probe.layers, "cues": probe.meta["cues"], "exit_string": probe.meta["exit_string"]}
        llm, _ = build_lynx_llm(ref, cfg)
        extra = [{"lynx_threshold": 2.0} for _ in range(n)]  # scores are probabilities: never >= 2
    prompts = _prompts(llm.get_tokenizer(), n, probe.meta.get("prompt_suffix") or "")
    _timed(llm, prompts[:8], None, 16, 0)  # warm-up
    t, outs = min((_timed(llm, prompts, extra, max_tokens, 1) for _ in range(2)), key=lambda x: x[0])
    digest = hashlib.sha256(json.dumps(outs).encode()).hexdigest()
    print(json.dumps({"kind": kind, "seconds": t, "tokens": sum(map(len, outs)), "digest": digest}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probe", default="probes/organism")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", choices=("plain", "lynx"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if args.worker:
        worker(args.worker, args.probe, args.n, args.max_tokens)
        return

    from lynx.engines.exit_control import AUDIT
    from lynx.engines.vllm import build_lynx_llm
    from lynx.models import resolve_model
    from lynx.probe import load_probe

    ref = resolve_model("organism")
    probe = load_probe(args.probe)
    cfg = {"probe": args.probe, "layers": probe.layers, "cues": probe.meta["cues"], "exit_string": probe.meta["exit_string"]}
    result: dict = {"n_prompts": args.n, "max_tokens": args.max_tokens, "repeats": args.repeats, "probe": args.probe}

    # 1. overhead: vLLM allows one engine per process, so each run is a fresh process, and plain
    #    and lynx processes alternate so machine noise hits both alike
    runs = {"plain": [], "lynx": []}
    for _ in range(args.repeats):
        for kind in ("plain", "lynx"):
            out = subprocess.run([sys.executable, __file__, "--worker", kind, "--probe", args.probe, "--n", str(args.n),
                                  "--max-tokens", str(args.max_tokens)], capture_output=True, text=True, check=True)
            runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {k: max(v, key=lambda r: r["tokens"] / r["seconds"]) for k, v in runs.items()}
    tps = {k: b["tokens"] / b["seconds"] for k, b in best.items()}
    result["overhead"] = {
        "plain_tokens_per_s": round(tps["plain"], 1), "lynx_tokens_per_s": round(tps["lynx"], 1),
        "throughput_ratio": round(tps["lynx"] / tps["plain"], 4), "same_outputs": best["plain"]["digest"] == best["lynx"]["digest"],
        "all_ratios": [round((l["tokens"] / l["seconds"]) / (p["tokens"] / p["seconds"]), 3) for p, l in zip(runs["plain"], runs["lynx"])],
    }

    lynx, tok = build_lynx_llm(ref, cfg)
    prompts = _prompts(tok, args.n, probe.meta.get("prompt_suffix") or "")
    _timed(lynx, prompts[:8], None, 16, 0)
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

"""What lynx's exits buy in wall-clock on a served model: plain vs lynx requests, same server.

One OpenAI server (vLLM with lynx's plugin) serves ``--n`` prompts of the model's problem
family at a fixed concurrency, twice per round: every request plain (no ``vllm_xargs``) and
every request with ``lynx_alpha`` (early exit at the calibrated threshold), the order of the
two alternating between rounds so that warm-up and machine noise hit both alike. Per arm:
requests/s, mean and p90 latency, completion tokens, accuracy (the boxed answer graded against
the gold one), and each round's ratio plain/lynx of wall-clock (its spread over the rounds).
Prints one JSON object.

    python benchmarks/served_walltime.py --model smollm2-reasoner --probe runs/demo-smollm2/probe --n 200 --concurrency 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=900) as r:
        return json.loads(r.read())


def _arm(base: str, name: str, records, xargs: dict | None, concurrency: int, max_tokens: int, temperature: float) -> dict:
    from lynx.grading.boxed import extract_boxed, grade_integer
    from lynx.prompting import user_message

    def one(rec):
        body = {"model": name, "messages": [{"role": "user", "content": user_message(rec.question)}], "max_tokens": max_tokens, "temperature": temperature, "top_p": 0.95}
        if xargs:
            body["vllm_xargs"] = xargs
        t = time.perf_counter()
        out = _post(base + "/v1/chat/completions", body)
        text = out["choices"][0]["message"]["content"] or ""
        return time.perf_counter() - t, int(out["usage"]["completion_tokens"]), grade_integer(extract_boxed(text), rec.answer or "")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(one, records))
    wall = time.perf_counter() - t0
    lat = sorted(r[0] for r in rows)
    return {
        "seconds": wall,
        "requests_per_s": len(rows) / wall,
        "latency_mean_s": statistics.fmean(lat),
        "latency_p90_s": lat[int(0.9 * (len(lat) - 1))],
        "completion_tokens": sum(r[1] for r in rows),
        "accuracy": sum(r[2] for r in rows) / len(rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-reasoner")
    ap.add_argument("--probe", required=True, help="calibrated probe folder of the model")
    ap.add_argument("--dataset", default=None, help="prompts (default: the test split of the model's problem family)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--temperature", type=float, default=0.6)
    args = ap.parse_args()

    from lynx.datasets import load
    from lynx.engines.serve import serve
    from lynx.families import family_of
    from lynx.models import resolve_model

    ref = resolve_model(args.model)
    records = load(args.dataset or f"{family_of(args.model)}:test", n=args.n)
    arms: dict[str, list[dict]] = {"plain": [], "lynx": []}
    with tempfile.TemporaryDirectory() as tmp, serve(ref.path, {"probe": str(Path(args.probe).resolve())}, Path(tmp) / "server.log", name=args.model, exact=ref.runs_exact) as base:
        _arm(base, args.model, records[: args.concurrency * 2], None, args.concurrency, args.max_tokens, args.temperature)  # warm-up
        for r in range(args.rounds):
            order = ("plain", "lynx") if r % 2 == 0 else ("lynx", "plain")
            for arm in order:
                xargs = {"lynx_alpha": args.alpha} if arm == "lynx" else None
                arms[arm].append(_arm(base, args.model, records, xargs, args.concurrency, args.max_tokens, args.temperature))
                print(f"round {r + 1}/{args.rounds} {arm}: {arms[arm][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)

    def total(arm: str, key: str) -> float:
        return sum(x[key] for x in arms[arm])

    ratios = [p["seconds"] / q["seconds"] for p, q in zip(arms["plain"], arms["lynx"], strict=True)]
    summary = {
        "model": args.model,
        "n": len(records),
        "concurrency": args.concurrency,
        "alpha": args.alpha,
        "rounds": args.rounds,
        "temperature": args.temperature,
        **{
            arm: {
                "requests_per_s": len(records) * args.rounds / total(arm, "seconds"),
                "latency_mean_s": statistics.fmean(x["latency_mean_s"] for x in arms[arm]),
                "latency_p90_s": statistics.fmean(x["latency_p90_s"] for x in arms[arm]),
                "completion_tokens_per_request": total(arm, "completion_tokens") / (len(records) * args.rounds),
                "accuracy": statistics.fmean(x["accuracy"] for x in arms[arm]),
            }
            for arm in arms
        },
        "speedup_per_round": {"mean": statistics.fmean(ratios), "min": min(ratios), "max": max(ratios)},
        "token_saving": 1 - total("lynx", "completion_tokens") / total("plain", "completion_tokens"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

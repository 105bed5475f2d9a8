"""What a collection costs: ``lynx collect`` time / plain generation time of the same problems.

Both run on one warm vLLM engine (lynx's hook wrapper, which a collection needs; the plain
requests do not opt in, so they generate as plain vLLM would, up to the hook's ~3% overhead),
same prompts, sampling and length limit, alternated over ``--rounds`` (the order flips each
round) after a warm-up of each. A collection's extra work is recording the features at cue
tokens and one greedy forced answer per cue (prefixes already in vLLM's prefix cache). Prints
one JSON object: the ratio of totals and the per-round ratios.

    python benchmarks/collect_cost.py --model smollm2-reasoner --n 64 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-reasoner")
    ap.add_argument("--dataset", default=None, help="default: the test split of the model's problem family")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from lynx.collect.pipeline import VLLMCollector, collect
    from lynx.config import CollectConfig
    from lynx.datasets import load
    from lynx.engines.vllm_engine import generate_ids
    from lynx.families import family_of
    from lynx.models import resolve_model
    from lynx.prompting import chat_prompt

    ref = resolve_model(args.model)
    dataset = args.dataset or f"{family_of(args.model)}:test"
    tmp = Path(tempfile.mkdtemp())

    def config(out: Path, n: int) -> CollectConfig:
        return CollectConfig(model=args.model, dataset=dataset, out=out, engine="vllm", n_problems=n)

    collector = VLLMCollector(ref, config(tmp / "warm", 8))
    collect(config(tmp / "warm", 8), engine=collector)  # starts the engine, warms it
    cfg = config(tmp / "c", args.n)
    tok = collector.llm.get_tokenizer()
    prompts = [tok(chat_prompt(tok, r.question, suffix=cfg.prompt_suffix), add_special_tokens=False)["input_ids"] for r in load(dataset, n=args.n)]

    def plain() -> float:
        t = time.perf_counter()
        generate_ids(collector.llm, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
        return time.perf_counter() - t

    def collection(r: int) -> float:
        t = time.perf_counter()
        collect(config(tmp / f"c{r}", args.n), engine=collector)
        return time.perf_counter() - t

    plain()  # warm-up at full size
    times: dict[str, list[float]] = {"plain": [], "collect": []}
    for r in range(args.rounds):
        for arm in ("plain", "collect") if r % 2 == 0 else ("collect", "plain"):
            times[arm].append(plain() if arm == "plain" else collection(r))
            print(f"round {r + 1}/{args.rounds} {arm}: {times[arm][-1]:.1f} s", file=sys.stderr, flush=True)
    ratios = [c / p for c, p in zip(times["collect"], times["plain"], strict=True)]
    print(
        json.dumps(
            {
                "model": args.model,
                "dataset": dataset,
                "n": args.n,
                "rounds": args.rounds,
                "plain_s": times["plain"],
                "collect_s": times["collect"],
                "ratio": sum(times["collect"]) / sum(times["plain"]),
                "ratio_per_round": {"mean": statistics.fmean(ratios), "min": min(ratios), "max": max(ratios)},
            }
        )
    )


if __name__ == "__main__":
    main()

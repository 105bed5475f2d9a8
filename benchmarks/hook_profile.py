"""Where lynx's vLLM hook spends its time: each piece of the exit controller clocked inside a run.

``vllm_overhead.py`` says how much the hook costs in all; this says where. Every request opts in
at an unreachable threshold (the probe and, for a v2 probe, its tree head run at every cue;
nothing exits), like the overhead benchmark's ``lynx`` configuration. After one warm-up run,
each of ``--runs`` runs prints the time spent in each piece, its number of calls and its share
of the run's wall clock. Pieces nest: ``apply`` (the logits processor) contains ``step_rows``,
which contains ``new_cue`` and ``final_scores`` (the tree head: ``advance`` per cue, ``predict_rows``
per step).

    python benchmarks/hook_profile.py --probe probes/organism
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

NEVER = 2.0  # probe scores are probabilities: never cleared


def _clock(totals: dict, counts: dict, owner, name: str) -> None:
    fn = getattr(owner, name)

    def run(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - t
            counts[name] += 1

    setattr(owner, name, run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="organism")
    ap.add_argument("--probe", default="probes/organism")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from lynx.datasets import load
    from lynx.engines import exit_control
    from lynx.engines.vllm_engine import build_lynx_llm, generate_ids, in_process_engine
    from lynx.engines.vllm_plugin import processor_v1
    from lynx.exit_policy import ExitPolicy
    from lynx.models import resolve_model
    from lynx.probe import scoring, trees
    from lynx.prompting import chat_prompt

    in_process_engine()
    policy = ExitPolicy.load(args.probe)
    llm = build_lynx_llm(resolve_model(args.model), policy.hook_config())[0]
    tok = llm.get_tokenizer()
    prompts = [tok(chat_prompt(tok, r.question, suffix=policy.prompt_suffix), add_special_tokens=False)["input_ids"] for r in load("organism:test", n=args.n)]
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for name in ("step_rows", "new_cue", "final_scores", "decide", "new_request", "finish_request"):
        _clock(totals, counts, exit_control.ExitController, name)
    _clock(totals, counts, processor_v1.LynxLogitsProcessor, "apply")
    _clock(totals, counts, scoring.OnlineContext, "advance")
    _clock(totals, counts, trees.TreeEnsemble, "predict_rows")
    never = [{"lynx_threshold": NEVER} for _ in prompts]
    sample = dict(max_new_tokens=args.max_tokens, temperature=0.6, top_p=0.95, seed=1, extra_args=never)
    generate_ids(llm, prompts, **sample)  # warm-up
    for _ in range(args.runs):
        totals.clear()
        counts.clear()
        t = time.perf_counter()
        generate_ids(llm, prompts, **sample)
        wall = time.perf_counter() - t
        print(
            json.dumps(
                {
                    "run_seconds": round(wall, 3),
                    "pieces": {k: {"ms": round(v * 1e3, 1), "calls": counts[k], "share": round(v / wall, 4)} for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Decode throughput of lynx's vLLM hook, and wall-clock/tokens of early exit vs vanilla.

1. *Overhead*: plain vLLM vs lynx's wrapper + logits processor with every request opted in at
   an unreachable threshold (every step: the probe's layers leave the model, every row's last
   token is checked for a cue, the probe scores the rows at a cue; nothing exits), same
   prompts, seeds and lengths. Target: throughput ratio >= 0.98. Also measured: the dense
   variant ``probe_rows: "all"`` (the model scores every row at every step) and the lynx
   engine with no request opted in (the wrapper's cost alone).
2. *Saving*: vanilla vs lynx at ``--alpha`` on the same prompts: wall-clock and tokens.

All engines live in this one process (vLLM's in-process engine core) and are timed in
rotating order, after one full-size warm-up run each, so that machine noise and warm-up hit
every configuration alike. Reported: the ratio of total times over ``--repeats`` rounds, the
quartiles of the per-round paired ratios, and the hook's own time clocked inside it
(:class:`HookClock`) as a share of each run. (Timing each configuration in a fresh process, as an earlier version did, mixed
process-level noise of +-8% into a 2% question.) Prints one JSON object.

    python benchmarks/vllm_overhead.py --probe probes/organism --n 256 --max-tokens 256
    python benchmarks/vllm_overhead.py --configs plain,lynx --repeats 40   # the target's pair, more rounds
    python benchmarks/vllm_overhead.py --model smollm2-reasoner --probe runs/demo-smollm2/probe --configs plain,lynx --repeats 12
    python benchmarks/vllm_overhead.py --configs plain,lynx --probe-b runs/v1-probe --repeats 12   # two probes, same rounds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

NEVER = 2.0  # probe scores are probabilities: a threshold of 2 is never cleared


def _prompts(tok, n: int, suffix: str, dataset: str):
    from lynx.datasets import load
    from lynx.prompting import chat_prompt

    return [tok(chat_prompt(tok, r.question, suffix=suffix), add_special_tokens=False)["input_ids"] for r in load(dataset, n=n)]


def _timed(llm, prompts, extra, max_tokens, seed):
    from lynx.engines.vllm_engine import generate_ids

    t = time.perf_counter()
    outs = generate_ids(llm, prompts, max_new_tokens=max_tokens, temperature=0.6, top_p=0.95, seed=seed, extra_args=extra)
    return time.perf_counter() - t, outs


class HookClock:
    """Seconds spent inside lynx's hook during a run: the wrapper model's ``forward`` and
    ``compute_logits`` beyond the base model's own, plus the logits processor's ``apply``.

    Why: the end-to-end ratio is the difference of two noisy totals (runs on this machine vary
    by several percent); the hook's own time, clocked where it is spent, is a direct and much
    steadier measure of the same cost (it misses only indirect effects, e.g. on caches)."""

    def __init__(self, base_cls):
        from lynx.engines.vllm_plugin import model, processor_v1

        self.seconds: dict[str, float] = {}
        for cls, name, key in (
            (model._LynxMixin, "forward", "wrapper_forward"),
            (base_cls, "forward", "base_forward"),
            (model._LynxMixin, "compute_logits", "wrapper_logits"),
            (base_cls, "compute_logits", "base_logits"),
            (processor_v1.LynxLogitsProcessor, "apply", "processor"),
        ):
            setattr(cls, name, self._clocked(getattr(cls, name), key))

    def _clocked(self, fn, key):
        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t

        return run

    def hook_seconds(self) -> float:
        s = self.seconds
        return (s.get("wrapper_forward", 0) - s.get("base_forward", 0)) + (s.get("wrapper_logits", 0) - s.get("base_logits", 0)) + s.get("processor", 0)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


CONFIGS = ("plain", "lynx", "lynx_dense", "lynx_engine_not_opted_in", "lynx_probe_b")


def overhead(engines: dict, prompts, max_tokens: int, repeats: int, clock: HookClock, names=CONFIGS) -> dict:
    never = [{"lynx_threshold": NEVER} for _ in prompts]
    configs = {  # name -> (engine, per-request args)
        "plain": (engines["plain"], None),
        "lynx": (engines["lynx"], never),
        "lynx_dense": (engines.get("lynx_dense"), never),
        "lynx_engine_not_opted_in": (engines["lynx"], None),
        "lynx_probe_b": (engines.get("lynx_probe_b"), never),  # --probe-b: another probe folder, same requests
    }
    configs = {k: v for k, v in configs.items() if k in names}
    for llm, extra in configs.values():
        _timed(llm, prompts, extra, max_tokens, 1)  # warm-up at full size
    tps: dict[str, list[float]] = {k: [] for k in configs}
    secs: dict[str, list[float]] = {k: [] for k in configs}
    hook_share: dict[str, list[float]] = {k: [] for k in configs if k != "plain"}
    digests = set()
    names = list(configs)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            llm, extra = configs[name]
            clock.seconds.clear()
            t, outs = _timed(llm, prompts, extra, max_tokens, 1)
            tps[name].append(sum(map(len, outs)) / t)
            secs[name].append(t)
            if name != "plain":
                hook_share[name].append(clock.hook_seconds() / t)
            digests.add(hashlib.sha256(json.dumps(outs).encode()).hexdigest())
        _log(f"round {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.0f} tok/s" for k, v in tps.items()))
    per_round = {k: [v[i] / tps["plain"][i] for i in range(repeats)] for k, v in tps.items() if k != "plain"}
    quart = lambda v: [round(q, 4) for q in statistics.quantiles(v, n=4)] if len(v) > 1 else v  # noqa: E731
    return {
        # end to end: all runs' tokens over all runs' seconds (the same tokens every run)
        "ratio_of_totals": {k: round(sum(secs["plain"]) / sum(secs[k]), 4) for k in per_round},
        # how far the machine's noise leaves that figure: rounds resampled with replacement (paired)
        "ratio_of_totals_ci95": {k: _bootstrap_ci(secs["plain"], secs[k]) for k in per_round},
        "seconds_by_round": {k: [round(x, 3) for x in v] for k, v in secs.items()},
        "ratio_quartiles_of_rounds": {k: quart(v) for k, v in per_round.items()},
        # clocked inside the hook: its share of the run's wall clock (1 - share = the ratio it implies)
        "hook_share_median": {k: round(statistics.median(v), 4) for k, v in hook_share.items()},
        "tokens_per_s_best": {k: round(max(v), 1) for k, v in tps.items()},
        "tokens_per_s_median": {k: round(statistics.median(v), 1) for k, v in tps.items()},
        "ratio_best": {k: round(max(tps[k]) / max(tps["plain"]), 4) for k in per_round},
        "ratio_median_of_rounds": {k: round(statistics.median(v), 4) for k, v in per_round.items()},
        "ratios_by_round": {k: [round(x, 3) for x in v] for k, v in per_round.items()},
        "same_outputs": len(digests) == 1,
    }


def _bootstrap_ci(plain: list[float], other: list[float], n: int = 10_000, seed: int = 0) -> list[float]:
    """95% percentile interval of sum(plain) / sum(other) over rounds resampled in pairs."""
    import numpy as np

    p, o = np.asarray(plain), np.asarray(other)
    idx = np.random.default_rng(seed).integers(0, len(p), size=(n, len(p)))
    ratios = p[idx].sum(axis=1) / o[idx].sum(axis=1)
    return [round(float(x), 4) for x in np.quantile(ratios, [0.025, 0.975])]


def early_exit(llm, prompts, max_tokens: int, alpha: float, repeats: int) -> dict:
    from lynx.engines.vllm_engine import take_events

    tagged = [{"lynx_alpha": alpha, "lynx_tag": f"b{i}"} for i in range(len(prompts))]
    runs = {"vanilla": [], "lynx": []}
    for _ in range(repeats):
        runs["vanilla"].append(_timed(llm, prompts, None, max_tokens, 2))
        runs["lynx"].append(_timed(llm, prompts, tagged, max_tokens, 2))
    (t_van, van), (t_exit, ex) = (min(runs[k], key=lambda x: x[0]) for k in ("vanilla", "lynx"))
    events = take_events(llm, [f"b{i}" for i in range(len(prompts))])
    exits = sum(any(a["event"] == "exit" for a in audits) for audits, _ in events.values())
    return {
        "alpha": alpha,
        "vanilla_seconds": round(t_van, 3),
        "lynx_seconds": round(t_exit, 3),
        "vanilla_tokens": sum(map(len, van)),
        "lynx_tokens": sum(map(len, ex)),
        "token_saving": round(1 - sum(map(len, ex)) / sum(map(len, van)), 4),
        "wall_clock_saving": round(1 - t_exit / t_van, 4),
        "requests_exited": exits,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="organism", help="organism, or a model folder (e.g. from scaled_model.py)")
    ap.add_argument("--probe", default="probes/organism")
    ap.add_argument("--dataset", default=None, help="prompts (default: the test split of the model's problem family, organism:test or smollm2:test)")
    ap.add_argument("--probe-b", default=None, help="a second probe folder timed in the same rounds (configuration lynx_probe_b), e.g. v1 next to v2")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=5, help="rounds of the overhead comparison")
    ap.add_argument("--exit-repeats", type=int, default=5, help="runs of vanilla and of early exit (best of)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="which configurations to time (plain and lynx always; fewer -> more rounds in the same time)")
    args = ap.parse_args()
    names = ["plain", "lynx"] + [c for c in args.configs.split(",") if c in CONFIGS and c not in ("plain", "lynx", "lynx_probe_b")]
    if args.probe_b:
        names.append("lynx_probe_b")
    bad = [c for c in args.configs.split(",") if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configuration(s) {bad}; choose from {', '.join(CONFIGS)}")
    from lynx.engines.vllm_engine import build_llm, build_lynx_llm, in_process_engine
    from lynx.exit_policy import ExitPolicy
    from lynx.models import resolve_model

    in_process_engine()  # engine cores in this process: engines side by side, audits read back
    ref = resolve_model(args.model)
    policy = ExitPolicy.load(args.probe)
    from lynx.engines.vllm_plugin.support import hook_support, model_class

    arch = json.loads((Path(ref.path) / "config.json").read_text())["architectures"][0]
    clock = HookClock(model_class(hook_support(arch).require().architecture))
    # LYNX_BENCH_EAGER=1: no torch.compile for models that would get it (the docs' examples test runs this script shortened;
    # a figure measured that way is not the documented one)
    eager = {"enforce_eager": True} if os.environ.get("LYNX_BENCH_EAGER") == "1" else {}
    engines = {
        "plain": build_llm(ref, **eager),
        "lynx": build_lynx_llm(ref, policy.hook_config({"keep_events": True}), **eager)[0],
    }
    if "lynx_dense" in names:
        engines["lynx_dense"] = build_lynx_llm(ref, policy.hook_config({"probe_rows": "all"}), **eager)[0]
    if args.probe_b:
        engines["lynx_probe_b"] = build_lynx_llm(ref, ExitPolicy.load(args.probe_b).hook_config({"keep_events": True}), **eager)[0]
    from lynx.families import family_of

    prompts = _prompts(engines["plain"].get_tokenizer(), args.n, policy.prompt_suffix, args.dataset or f"{family_of(args.model)}:test")
    result: dict = {"model": args.model, "n_prompts": args.n, "max_tokens": args.max_tokens, "repeats": args.repeats, "probe": args.probe, "probe_b": args.probe_b}
    result["overhead"] = overhead(engines, prompts, args.max_tokens, args.repeats, clock, names)
    result["early_exit"] = early_exit(engines["lynx"], prompts, args.max_tokens, args.alpha, args.exit_repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

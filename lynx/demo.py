"""``lynx demo``: the whole pipeline on the bundled organism (or SmolLM2-reasoner), on a CPU, in minutes.

collect (train and calibration problems) -> train the probe -> calibrate -> eval on the test
split against every baseline -> the same probe on the transfer split and at a second
temperature (the reuse claim: one probe per model), first as calibrated (the transfer split
looks like the calibration condition to lynx; temperature 1.0 gets the flagged fallback), then
after ``lynx recalibrate`` on *unlabeled* prompts of each condition (no gold answers), which
gets the promise back. Everything lands in one folder; ``demo.json`` and ``demo.md`` summarise it.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

from rich.console import Console

from lynx.errors import InvalidInput
from lynx.evaluate.pipeline import records_json

console = Console(stderr=True)

#: problems per stage; "small" is the README's demo (< 10 min on 2 cores with vLLM)
SIZES = {
    "small": {"train": 400, "calibration": 500, "test": 300, "transfer": 100, "second_temperature": 200, "recalibration": 300, "transfer_recalibration": 150},
    "tiny": {"train": 60, "calibration": 80, "test": 40, "transfer": 20, "second_temperature": 20, "recalibration": 80, "transfer_recalibration": 60},
}
#: SmolLM2-reasoner is ~50x the organism's size (vLLM CPU, float32: ~280 tokens/s greedy, ~145 sampled
#: with per-request seeds at batch 64) and its traces are ~455 thinking tokens with ~7 cues (adapter v4):
#: far fewer problems. v3's shorter traces ran 100/100/40 in 1,450 s; v4's cost ~1.6x per problem, so
#: "small" is 50/60/20: 1,335 s end to end on 2 idle cores (`lynx demo --model smollm2 --json`, README);
#: the figures at >= 300 test problems come from ``lynx eval``
SMOLLM2_SIZES = {
    "small": {"train": 50, "calibration": 60, "test": 20, "transfer": 10, "second_temperature": 12, "recalibration": 30, "transfer_recalibration": 20},
    "tiny": {"train": 24, "calibration": 30, "test": 16, "transfer": 8, "second_temperature": 8, "recalibration": 30, "transfer_recalibration": 20},
}
#: the test evaluation's settings: every baseline on both; on SmolLM2 (~50x the organism's compute per
#: token) one DEER threshold and one Dynasor setting, and the alphas the issue reports
TEST_EVAL: dict[str, dict] = {
    "organism": {"alphas": (0.05, 0.1, 0.2, 0.3, 0.5)},
    "smollm2": {"alphas": (0.05, 0.1, 0.2), "deer_thresholds": (0.95,), "dynasor_k": (2,)},
}
SECOND_TEMPERATURE = 1.0
#: the domain tag of the transfer split's recalibrated condition
TRANSFER_DOMAIN = "transfer"


def write_unlabeled_prompts(path: Path, split: str, n: int, skip: int = 0, family: str = "organism") -> Path:
    """``n`` problems of ``family`` of ``split`` (after the first ``skip``) as a JSONL of prompts with
    no answers: what a deployment has. The ids are the problems' own, so lynx's check that
    calibration problems are disjoint from the probe's training problems still applies."""
    from lynx.families import sample_problems

    problems = sample_problems(family, split, skip + n, seed=0)[skip:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": p.problem_id, "prompt": p.text}) + "\n" for p in problems))
    return path


def run_demo(out: Path, *, engine: str = "auto", size: str = "small", model: str = "organism", as_json: bool = False, show=None) -> dict:
    """``model``: ``organism`` (the default) or ``smollm2`` / ``smollm2-reasoner`` (both run the
    reasoner: the base model as shipped does not think)."""
    from lynx.calibrate.pipeline import calibrate
    from lynx.calibrate.recalibrate import RecalibrateConfig, recalibrate
    from lynx.collect.pipeline import CollectConfig, HFCollector, VLLMCollector, collect
    from lynx.config import Sampling
    from lynx.evaluate import EvalConfig, build_backend, engine_choice, evaluate
    from lynx.families import family_of
    from lynx.models import resolve_model
    from lynx.probe.train import train_probe

    if size not in SIZES:
        raise InvalidInput(f"unknown demo size {size!r}: use {' or '.join(SIZES)}")
    family = family_of(model)
    if family == "organism" and model != "organism":
        raise InvalidInput(f"the demo runs 'organism' or 'smollm2' (the reasoner), not {model!r}; for another model run the stages (lynx collect, train, calibrate, eval)")
    model = "organism" if family == "organism" else "smollm2-reasoner"
    n = (SIZES if family == "organism" else SMOLLM2_SIZES)[size]
    out = Path(out)
    engine = engine_choice(engine)
    why = "vLLM is installed" if engine == "vllm" else "vLLM is not installed" if engine == "hf" else ""
    console.print(f"[bold]lynx demo[/] on {model}, engine: [bold]{engine}[/] ({why}), sizes {n}; output {out}")
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def stage(name: str):
        timings[name] = round(time.monotonic() - t0 - sum(timings.values()), 1)
        console.print(f"[green]done[/] {name} ({timings[name]:.0f} s)")

    ref = resolve_model(model)
    splits = (("train", f"{family}:train"), ("calibration", f"{family}:calibration"))
    collector = None
    for key, ds in splits:
        cfg = CollectConfig(model=model, dataset=ds, out=out / f"collect-{key}", engine=engine, n_problems=n[key])
        if collector is None:
            collector = (VLLMCollector if engine == "vllm" else HFCollector)(ref, cfg)
        collect(cfg, engine=collector)
    del collector
    gc.collect()
    stage("collect")
    probe_dir = out / "probe"
    meta = train_probe(out / "collect-train", probe_dir)
    stage("train")
    cal_rows = calibrate(probe_dir, out / "collect-calibration")
    stage("calibrate")

    backend = build_backend(engine, model, str(probe_dir))
    hot = f"test@T={SECOND_TEMPERATURE:g}"

    def evals(after: bool):
        tag = "recalibrated" if after else "as calibrated"
        base = ("vanilla",) if after else ("vanilla", "oracle")
        yield "test", EvalConfig(model=model, probe=str(probe_dir), dataset=f"{family}:test", out=out / "eval-test", n_problems=n["test"], **TEST_EVAL[family])
        yield (
            f"transfer ({tag})",
            EvalConfig(
                model=model,
                probe=str(probe_dir),
                dataset=f"{family}:transfer",
                out=out / f"eval-transfer{'-recalibrated' if after else ''}",
                n_problems=n["transfer"],
                baselines=base,
                domain=TRANSFER_DOMAIN if after else None,
            ),
        )
        yield (
            f"{hot} ({tag})",
            EvalConfig(
                model=model,
                probe=str(probe_dir),
                dataset=f"{family}:test",
                out=out / f"eval-second-temperature{'-recalibrated' if after else ''}",
                n_problems=n["second_temperature"],
                temperature=SECOND_TEMPERATURE,
                baselines=base,
            ),
        )

    results = {}
    for name, cfg in evals(after=False):
        cfg.engine = engine
        results[name] = evaluate(cfg, backend=backend)
        stage(f"eval {name}")

    # the deployment's own conditions, from prompts without answers (agreement labels), on the same engine
    recal = [
        RecalibrateConfig(
            probe=probe_dir,
            prompts=str(write_unlabeled_prompts(out / "prompts-calibration-unlabeled.jsonl", "calibration", n["recalibration"], family=family)),
            temperature=SECOND_TEMPERATURE,
            engine=engine,
            work=out / "recalibrate-second-temperature",
        ),
        RecalibrateConfig(
            probe=probe_dir,
            prompts=str(write_unlabeled_prompts(out / "prompts-transfer-unlabeled.jsonl", "transfer", n["transfer_recalibration"], skip=n["transfer"], family=family)),
            temperature=Sampling.temperature,
            domain=TRANSFER_DOMAIN,
            engine=engine,
            work=out / "recalibrate-transfer",
        ),
    ]
    for rcfg in recal:
        recalibrate(rcfg, collector=VLLMCollector.on_engine(ref, backend.llm) if engine == "vllm" else None)
    backend.reload_calibrations()
    stage("recalibrate")
    for (name, cfg), before in zip(list(evals(after=True))[1:], list(results.values())[1:], strict=True):
        cfg.engine = engine
        results[name] = evaluate(cfg, backend=backend, vanilla_of=before)  # the same vanilla runs: reused, not re-run
        stage(f"eval {name}")
    total = round(time.monotonic() - t0, 1)

    summary = {
        "engine": engine,
        "model": model,
        "size": size,
        "sizes": n,
        "seconds": total,
        "stage_seconds": timings,
        "probe": {"folder": str(probe_dir), "test_auc": meta["metrics"].get("test", {}).get("auc")},
        "calibration": [
            {k: r[k] for k in ("alpha", "mode", "method", "threshold", "exit_rate", "saving", "risk", "held_out_risk", "held_out_risk_p90", "held_out_above_alpha")}
            | {"threshold": None if r["threshold"] == float("inf") else r["threshold"]}
            for r in cal_rows
            if r["default"] and r.get("scorer", "probe") == "probe"
        ],
        "conditions": {
            key: {"labels": cal.labels, "risk": cal.meta["risk"], "n_problems": cal.meta["n_problems"], "dataset": cal.meta["data"]["dataset"]}
            for key, cal in backend.policy.calibrations.items()
        },
        "evaluations": {
            name: {
                "folder": str(res["out"]),
                "table": records_json(res["table"]),
                "acceptance": [{"check": c, "passed": bool(ok), "measured": v} for c, ok, v in res["acceptance"]],
                "pareto": res["pareto"],
                "context_comparison": res["context_comparison"],
            }
            for name, res in results.items()
        },
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    md = [f"# lynx demo ({engine}, {total:.0f} s)", ""] + [(Path(res["out"]) / "results.md").read_text() for res in results.values()]
    (out / "demo.md").write_text("\n".join(md))
    if show is not None:
        for res in results.values():
            show(res)
    console.print(f"demo finished in {total:.0f} s; summary {out / 'demo.json'}, {out / 'demo.md'}")
    if as_json:
        print(json.dumps([r | {"evaluation": name} for name, res in results.items() for r in records_json(res["table"])]))
    return summary

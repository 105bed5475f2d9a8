"""``lynx demo``: the whole pipeline on the bundled organism, on a CPU, in minutes.

collect (train and calibration problems) -> train the probe -> calibrate -> eval on the test
split against every baseline -> the same probe, unchanged, on the transfer split and at a
second temperature (the reuse claim: one probe per model). Everything lands in one folder;
``demo.json`` and ``demo.md`` summarise it.
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
    "small": {"train": 400, "calibration": 500, "test": 300, "transfer": 150, "second_temperature": 150},
    "tiny": {"train": 60, "calibration": 80, "test": 40, "transfer": 20, "second_temperature": 20},
}
SECOND_TEMPERATURE = 1.0


def run_demo(out: Path, *, engine: str = "auto", size: str = "small", as_json: bool = False, show=None) -> dict:
    from lynx.calibrate.pipeline import calibrate
    from lynx.collect.pipeline import CollectConfig, HFCollector, VLLMCollector, collect
    from lynx.evaluate import EvalConfig, build_backend, engine_choice, evaluate
    from lynx.models import resolve_model
    from lynx.probe.train import train_probe

    if size not in SIZES:
        raise InvalidInput(f"unknown demo size {size!r}: use {' or '.join(SIZES)}")
    n = SIZES[size]
    out = Path(out)
    engine = engine_choice(engine)
    why = "vLLM is installed" if engine == "vllm" else "vLLM is not installed" if engine == "hf" else ""
    console.print(f"[bold]lynx demo[/] on the bundled organism, engine: [bold]{engine}[/] ({why}), sizes {n}; output {out}")
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def stage(name: str):
        timings[name] = round(time.monotonic() - t0 - sum(timings.values()), 1)
        console.print(f"[green]done[/] {name} ({timings[name]:.0f} s)")

    ref = resolve_model("organism")
    splits = (("train", "organism:train"), ("calibration", "organism:calibration"))
    collector = None
    for key, ds in splits:
        cfg = CollectConfig(model="organism", dataset=ds, out=out / f"collect-{key}", engine=engine, n_problems=n[key])
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

    backend = build_backend(engine, "organism", str(probe_dir))
    evals = [
        ("test", EvalConfig(probe=str(probe_dir), dataset="organism:test", out=out / "eval-test", n_problems=n["test"],
                            alphas=(0.05, 0.1, 0.2, 0.3, 0.5))),
        ("transfer", EvalConfig(probe=str(probe_dir), dataset="organism:transfer", out=out / "eval-transfer", n_problems=n["transfer"],
                                baselines=("vanilla", "oracle"))),
        (f"test@T={SECOND_TEMPERATURE:g}", EvalConfig(probe=str(probe_dir), dataset="organism:test", out=out / "eval-second-temperature",
                                                      n_problems=n["second_temperature"], temperature=SECOND_TEMPERATURE,
                                                      baselines=("vanilla", "oracle"))),
    ]
    results = {}
    for name, cfg in evals:
        cfg.engine = engine
        results[name] = evaluate(cfg, backend=backend)
        stage(f"eval {name}")
    total = round(time.monotonic() - t0, 1)

    summary = {
        "engine": engine, "size": size, "sizes": n, "seconds": total, "stage_seconds": timings,
        "probe": {"folder": str(probe_dir), "test_auc": meta["metrics"].get("test", {}).get("auc")},
        "calibration": [{k: r[k] for k in ("alpha", "mode", "method", "threshold", "exit_rate", "saving", "risk", "held_out_risk")} | {
            "threshold": None if r["threshold"] == float("inf") else r["threshold"]} for r in cal_rows if r["default"]],
        "evaluations": {name: {"folder": str(res["out"]), "table": records_json(res["table"]),
                               "acceptance": [{"check": c, "passed": bool(ok), "measured": v} for c, ok, v in res["acceptance"]],
                               "pareto": res["pareto"]} for name, res in results.items()},
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

"""``lynx eval``: every method on the same problems, sampling and seeds, in one engine.

The engine is built once (:func:`build_backend`) and can serve several evaluations — the
demo evaluates the main split, the transfer split and a second temperature on one engine.
Outputs per evaluation folder: ``samples.parquet`` (one row per problem and method),
``results.csv`` / ``results.parquet`` / ``results.md`` (the table), ``pareto.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console

from lynx.cues import DEFAULT_CUES, CueMatcher
from lynx.datasets import load as load_dataset
from lynx.defaults import DEFAULT_EXIT, TEMPERATURE, TOP_P
from lynx.evaluate import methods as M
from lynx.evaluate.table import acceptance, pareto_comparison, pareto_markdown, pareto_plot, row, to_markdown
from lynx.models import model_fingerprint, resolve_model
from lynx.organism.prompting import INSTRUCTION, chat_prompt

console = Console(stderr=True)
BASELINES = ("vanilla", "budget", "deer", "dynasor", "oracle")


@dataclass
class EvalConfig:
    model: str = "organism"
    probe: str | None = None
    dataset: str = "organism:test"
    out: Path = Path("runs/eval")
    n_problems: int | None = 300
    alphas: tuple[float, ...] = (0.05, 0.1, 0.2)
    baselines: tuple[str, ...] = BASELINES
    budgets: tuple[int, ...] | None = None  # default: 25/50/75% of vanilla's mean thinking
    deer_thresholds: tuple[float, ...] = (0.9, 0.95, 0.99)
    dynasor_k: tuple[int, ...] = (2, 3)
    dynasor_chunk: int = 32
    engine: str = "auto"
    temperature: float = TEMPERATURE
    top_p: float = TOP_P
    max_new_tokens: int = 1024
    seed: int = 0
    question_field: str | None = None
    answer_field: str | None = None
    title: str | None = None
    extra: dict = field(default_factory=dict)


def engine_choice(engine: str) -> str:
    """``auto`` -> vLLM when it is installed and usable, else transformers."""
    if engine not in ("auto", "hf", "vllm"):
        raise ValueError(f"unknown engine {engine!r}: use auto, hf or vllm")
    if engine != "auto":
        return engine
    from lynx.engines.vllm import available

    return "vllm" if available() else "hf"


def build_backend(engine: str, model: str, probe: str | None):
    """The engine every method of an evaluation runs on (lynx's hook installed when a probe is given)."""
    from lynx.probe import load_probe

    ref = resolve_model(model)
    p = None
    if probe is not None:
        p = load_probe(probe)
        p.check_model(model_fingerprint(ref), f"model {model!r}")
    cfg = {"probe": str(probe) if probe else None, "exit_string": p.meta["exit_string"] if p else DEFAULT_EXIT,
           "cues": p.meta["cues"] if p else None, "layers": p.layers if p else None}
    if engine == "vllm":
        from lynx.evaluate.backends import VLLMBackend

        return VLLMBackend(ref, cfg)
    from lynx.evaluate.backends import HFBackend

    return HFBackend(ref, cfg, probe=p)


def evaluate(cfg: EvalConfig, backend=None) -> dict:
    """Run every requested method; write the table, samples and plot; return the results."""
    from lynx.calibrate.procedures import check_alpha
    from lynx.probe import load_probe

    unknown = [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}: choose from {', '.join(BASELINES)}")
    for a in cfg.alphas:
        check_alpha(a)
    if cfg.alphas and cfg.probe is None:
        raise ValueError("lynx needs --probe (a folder from lynx train + lynx calibrate); or pass --alphas '' to run baselines only")
    probe = load_probe(cfg.probe) if cfg.probe else None
    engine = engine_choice(cfg.engine)
    if backend is None:
        console.print(f"engine: {engine}")
        backend = build_backend(engine, cfg.model, cfg.probe)
    tok = backend.tokenizer
    suffix = (probe.meta.get("prompt_suffix") if probe is not None else None) or INSTRUCTION
    exit_string = probe.meta["exit_string"] if probe is not None else DEFAULT_EXIT
    records = load_dataset(cfg.dataset, n=cfg.n_problems, seed=cfg.seed, question_field=cfg.question_field,
                           answer_field=cfg.answer_field)
    prompts = [tok(chat_prompt(tok, r.question, suffix=suffix), add_special_tokens=False)["input_ids"] for r in records]
    matcher = CueMatcher(tok, cues=tuple(probe.meta["cues"]) if probe is not None else DEFAULT_CUES)
    ctx = M.EvalContext(backend, records, prompts, [cfg.seed * 1_000_003 + i for i in range(len(records))], matcher,
                        tok(exit_string, add_special_tokens=False)["input_ids"], max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature, top_p=cfg.top_p, probe_path=cfg.probe)

    runs: list[tuple[str, str, float | None, list, float]] = []
    with console.status("vanilla") as status:
        base, secs = M.timed(M.vanilla, ctx)
        runs.append(("vanilla", "full CoT", None, base, secs))
        mean_think = sum(s.thinking_tokens for s in base) / len(base)
        plan: list[tuple[str, str, float | None, object]] = []
        for a in cfg.alphas:
            plan.append(("lynx", f"alpha={a:g}", a, lambda a=a: M.lynx(ctx, a)))
        if "oracle" in cfg.baselines:
            plan.append(("oracle", "first right cue", None, lambda: M.oracle(ctx, base)))
        if "budget" in cfg.baselines:
            budgets = cfg.budgets or tuple(max(1, round(mean_think * f)) for f in (0.25, 0.5, 0.75))
            plan += [("budget", f"N={n}", None, lambda n=n: M.budget(ctx, n)) for n in budgets]
        if "deer" in cfg.baselines:
            plan += [("deer", f"p>{t:g}", None, lambda t=t: M.deer(ctx, t)) for t in cfg.deer_thresholds]
        if "dynasor" in cfg.baselines:
            plan += [("dynasor", f"k={k}/{cfg.dynasor_chunk}", None, lambda k=k: M.dynasor(ctx, k, cfg.dynasor_chunk)) for k in cfg.dynasor_k]
        for method, setting, alpha, fn in plan:
            status.update(f"{method} {setting}")
            samples, secs = M.timed(fn)
            runs.append((method, setting, alpha, samples, secs))
    if "vanilla" not in cfg.baselines:
        runs = runs[1:]  # vanilla still ran: every other figure is paired with it

    df = pd.DataFrame([row(m, s, smp, base, secs, a) for m, s, a, smp, secs in runs])
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sample_rows = [{"method": m, "setting": s, "problem_id": x.problem_id, "answer": x.answer, "gold": records[i].answer,
                    "correct": x.correct, "thinking_tokens": x.thinking_tokens, "exited": x.exited, "extra_tokens": x.extra_tokens,
                    "exit": json.dumps(x.exit) if x.exit else None}
                   for m, s, _a, smp, _t in runs for i, x in enumerate(smp)]
    pd.DataFrame(sample_rows).to_parquet(out / "samples.parquet", index=False)
    df.to_csv(out / "results.csv", index=False)
    df.to_parquet(out / "results.parquet", index=False)
    title = cfg.title or f"{cfg.model} on {cfg.dataset} (T={cfg.temperature:g}, n={len(records)}, {backend.name})"
    pareto_plot(df, out / "pareto.png", title)
    cmp = pareto_comparison(df)
    checks = acceptance(df, 0.1) if 0.1 in cfg.alphas else []
    md = [f"# {title}", "", to_markdown(df), ""]
    if cmp:
        md += ["## lynx vs the baselines at equal thinking tokens", "", pareto_markdown(cmp), ""]
    if checks:
        md += ["## Acceptance at alpha = 0.1", ""] + [f"- [{'x' if ok else ' '}] {name}: {val}" for name, ok, val in checks] + [""]
    (out / "results.md").write_text("\n".join(md))
    meta = {"model": cfg.model, "probe": cfg.probe, "dataset": cfg.dataset, "n_problems": len(records), "engine": backend.name,
            "temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens} | cfg.extra
    (out / "eval.json").write_text(json.dumps(meta, indent=2))
    return {"meta": meta, "table": df, "pareto": cmp, "acceptance": checks, "out": out, "title": title}


def records_json(df: pd.DataFrame) -> list[dict]:
    """The table as JSON records (NaN -> null)."""
    return json.loads(df.to_json(orient="records"))

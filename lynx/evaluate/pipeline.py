"""``lynx eval``: every method on the same problems, sampling and seeds, in one engine.

The engine is built once (:func:`build_backend`) and can serve several evaluations — the
demo evaluates the main split, the transfer split and a second temperature on one engine.
Outputs per evaluation folder: ``samples.parquet`` (one row per problem and method),
``results.csv`` / ``results.parquet`` / ``results.md`` (the table), ``pareto.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from rich.console import Console

from lynx.config import BASELINES, DEFAULT_EXIT, EvalConfig
from lynx.cues import DEFAULT_CUES, CueMatcher
from lynx.datasets import load as load_dataset
from lynx.errors import InvalidInput
from lynx.evaluate import methods as M
from lynx.evaluate.table import acceptance, pareto_comparison, pareto_markdown, pareto_plot, row, to_markdown
from lynx.exit_policy import ExitPolicy, HookConfig
from lynx.grading import grader_for
from lynx.models import resolve_model
from lynx.prompting import INSTRUCTION, chat_prompt

console = Console(stderr=True)


def engine_choice(engine: str) -> str:
    """``auto`` -> vLLM when it is installed and usable, else transformers."""
    if engine not in ("auto", "hf", "vllm"):
        raise InvalidInput(f"unknown engine {engine!r}: use auto, hf or vllm")
    if engine != "auto":
        return engine
    from lynx.engines.vllm_engine import available

    return "vllm" if available() else "hf"


def build_backend(engine: str, model: str, probe: ExitPolicy | str | Path | None, fallback: str = EvalConfig.fallback,
                  monitor: dict | None = None, audit_path: str | None = None):
    """The engine every method of an evaluation runs on (lynx's hook installed when a probe is
    given; the probe folder is read here, once, and checked against the model). ``fallback``:
    what lynx's requests outside every calibrated condition get; ``monitor``: a live monitor
    of lynx's requests (:mod:`lynx.monitor`), logging into ``audit_path``."""
    ref = resolve_model(model)
    policy = probe if isinstance(probe, ExitPolicy) or probe is None else ExitPolicy.load(probe)
    if policy is not None:
        policy.check_model(ref)
    if monitor is not None and policy is None:
        raise InvalidInput("a monitor needs a calibrated probe (--probe)")
    settings = {"keep_events": True, "fallback": fallback, "monitor": monitor, "audit_path": audit_path}
    hook = (policy.hook_config({k: v for k, v in settings.items() if v is not None}) if policy is not None
            else HookConfig(exit_string=DEFAULT_EXIT, keep_events=True, fallback=fallback))
    if engine == "vllm":
        from lynx.evaluate.backends import VLLMBackend

        return VLLMBackend(ref, hook, policy)
    from lynx.evaluate.backends import HFBackend

    return HFBackend(ref, hook, policy)


#: what must agree for an earlier evaluation's vanilla samples to be this one's
SAME_VANILLA = ("model", "dataset", "n_problems", "engine", "temperature", "top_p", "seed", "max_new_tokens")


def evaluate(cfg: EvalConfig, backend=None, vanilla_of: dict | None = None) -> dict:
    """Run every requested method; write the table, samples and plot; return the results.

    ``vanilla_of``: an earlier result on the same problems, sampling and engine whose vanilla
    samples are reused (vanilla is a pure function of those: same seeds, no lynx); a result
    that differs in any of them is refused, never silently reused."""
    from lynx.calibrate.procedures import check_alpha

    unknown = [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise InvalidInput(f"unknown baseline(s) {unknown}: choose from {', '.join(BASELINES)}")
    for a in cfg.alphas:
        check_alpha(a)
    if cfg.alphas and cfg.probe is None:
        raise InvalidInput("lynx needs --probe (a folder from lynx train + lynx calibrate); or pass --alphas '' to run baselines only")
    engine = engine_choice(cfg.engine)
    if backend is None:
        console.print(f"engine: {engine}")
        backend = build_backend(engine, cfg.model, cfg.probe, cfg.fallback, cfg.monitor, cfg.audit_path)
    policy = backend.policy
    if cfg.probe is not None and (policy is None or Path(cfg.probe).resolve() != policy.folder.resolve()):
        raise InvalidInput(f"the evaluation asks for probe {cfg.probe} but its engine runs {policy.folder if policy else 'no probe'}")
    lynx_meta = {}
    if cfg.alphas and policy is not None:
        # an uncalibrated probe is refused here, before any generation; the condition is the one each request gets
        d = policy.threshold(cfg.alphas[0], temperature=cfg.temperature, domain=cfg.domain, fallback=backend.hook.fallback)
        labels = policy.calibrations[d.condition].labels if d.condition is not None else None
        lynx_meta = {"condition": d.condition if not d.uncalibrated_condition else f"uncalibrated ({backend.hook.fallback})",
                     "calibration_labels": labels, "uncalibrated_condition": d.uncalibrated_condition}
        if d.uncalibrated_condition:
            console.print(f"[yellow]warning[/]: {d.fallback}")
    tok = backend.tokenizer
    suffix = policy.prompt_suffix if policy is not None else INSTRUCTION
    exit_string = policy.exit_string if policy is not None else DEFAULT_EXIT
    records = load_dataset(cfg.dataset, n=cfg.n_problems, seed=cfg.seed, question_field=cfg.question_field,
                           answer_field=cfg.answer_field)
    prompts = [tok(chat_prompt(tok, r.question, suffix=suffix), add_special_tokens=False)["input_ids"] for r in records]
    matcher = CueMatcher(tok, cues=tuple(policy.cues) if policy is not None else DEFAULT_CUES)
    ctx = M.EvalContext(backend, records, prompts, [cfg.seed * 1_000_003 + i for i in range(len(records))], matcher,
                        tok(exit_string, add_special_tokens=False)["input_ids"], max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature, top_p=cfg.top_p, domain=cfg.domain)

    meta = {"model": cfg.model, "probe": cfg.probe, "dataset": cfg.dataset, "n_problems": len(records), "engine": backend.name,
            "temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens,
            "domain": cfg.domain, "fallback": backend.hook.fallback} | lynx_meta | cfg.extra
    runs: list[tuple[str, str, float | None, list, float]] = []
    with console.status("vanilla") as status:
        if vanilla_of is not None:
            diff = [k for k in SAME_VANILLA if vanilla_of["meta"].get(k) != meta[k]]
            if diff:
                raise InvalidInput(f"cannot reuse vanilla samples of an evaluation with other {', '.join(diff)}")
            base, secs = vanilla_of["vanilla"], vanilla_of["vanilla_seconds"]
        else:
            base, secs = M.timed(M.vanilla, ctx)
        runs.append(("vanilla", "full CoT", None, base, secs))
        vanilla_secs = secs
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

    graders = [grader_for(r.kind) for r in records]
    df = pd.DataFrame([row(m, s, smp, base, secs, a, graders) | (lynx_meta if m == "lynx" else {}) for m, s, a, smp, secs in runs])
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sample_rows = [{"method": m, "setting": s, "problem_id": x.problem_id, "answer": x.answer, "gold": records[i].answer,
                    "correct": x.correct, "thinking_tokens": x.thinking_tokens, "exited": x.exited, "extra_tokens": x.extra_tokens,
                    "exit": json.dumps(x.exit) if x.exit else None}
                   for m, s, _a, smp, _t in runs for i, x in enumerate(smp)]
    pd.DataFrame(sample_rows).to_parquet(out / "samples.parquet", index=False)
    df.to_csv(out / "results.csv", index=False)
    df.to_parquet(out / "results.parquet", index=False)
    cond = f", lynx condition {lynx_meta['condition']}" if lynx_meta else ""
    title = cfg.title or f"{cfg.model} on {cfg.dataset} (T={cfg.temperature:g}, n={len(records)}, {backend.name}{cond})"
    pareto_plot(df, out / "pareto.png", title)
    cmp = pareto_comparison(df)
    checks = acceptance(df, 0.1) if 0.1 in cfg.alphas else []
    md = [f"# {title}", "", to_markdown(df), ""]
    if cmp:
        md += ["## lynx vs the baselines at equal thinking tokens", "", pareto_markdown(cmp), ""]
    if checks:
        md += ["## Acceptance at alpha = 0.1", ""] + [f"- [{'x' if ok else ' '}] {name}: {val}" for name, ok, val in checks] + [""]
    if backend.monitoring is not None:  # the live monitor's view of lynx's requests (lynx monitor reads its audit file)
        meta["monitor"] = backend.monitoring.state()
        md += ["## Live monitor", "", "```", json.dumps(meta["monitor"]["groups"], indent=1, default=str)[:4000], "```", ""]
    (out / "results.md").write_text("\n".join(md))
    (out / "eval.json").write_text(json.dumps(meta, indent=2, default=str))
    return {"meta": meta, "table": df, "pareto": cmp, "acceptance": checks, "out": out, "title": title, "vanilla": base,
            "vanilla_seconds": vanilla_secs}


def records_json(df: pd.DataFrame) -> list[dict]:
    """The table as JSON records (NaN -> null)."""
    return json.loads(df.to_json(orient="records"))

"""``lynx eval``: every method on the same problems, sampling and seeds, in one engine.

The engine is built once (:func:`build_backend`) and can serve several evaluations — the
demo evaluates the main split, the transfer split and a second temperature on one engine.
Outputs per evaluation folder: ``samples.parquet`` (one row per problem and method),
``results.csv`` / ``results.parquet`` / ``results.md`` (the table), ``pareto.png``, and under
``runs/`` each method's finished run as it completes: a killed evaluation rerun with the same
command reads those back and runs only what is left (:class:`~lynx.evaluate.runstore.MethodStore`).

:func:`evaluate` is made of pieces that :mod:`lynx.evaluate.distributed` (``lynx eval --ray``)
reuses, so a distributed run cannot drift from a local one: :func:`eval_context` (problems,
prompts and per-problem seeds by *global* index), :func:`method_plan` (the one list of
methods), :func:`run_methods` and :func:`write_results` (every output file from the runs).
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
from lynx.evaluate.runstore import MethodStore, plan_identity
from lynx.evaluate.table import acceptance, context_comparison, context_markdown, pareto_comparison, pareto_markdown, pareto_plot, regret, row, to_markdown
from lynx.exit_policy import ExitPolicy, HookConfig
from lynx.grading import grader_for
from lynx.models import resolve_model, resolve_probe_folder
from lynx.prompting import INSTRUCTION, chat_prompt
from lynx.store.folders import exclusive_writer

console = Console(stderr=True)

#: one method's run: (method, setting, alpha or None, samples in problem order, seconds)
Run = tuple[str, str, float | None, list, float]


def engine_choice(engine: str) -> str:
    """``auto`` -> vLLM when it is installed and usable, else transformers."""
    if engine not in ("auto", "hf", "vllm"):
        raise InvalidInput(f"unknown engine {engine!r}: use auto, hf or vllm")
    if engine != "auto":
        return engine
    from lynx.engines.vllm_engine import available

    return "vllm" if available() else "hf"


def load_policy(model: str, probe: ExitPolicy | str | Path | None) -> ExitPolicy | None:
    """The probe folder, read once and checked against the model (None: baselines only)."""
    policy = probe if isinstance(probe, ExitPolicy) or probe is None else ExitPolicy.load(probe)
    if policy is not None:
        policy.check_model(resolve_model(model))
    return policy


def engine_hook(policy: ExitPolicy | None, fallback: str = EvalConfig.fallback, monitor: dict | None = None, audit_path: str | None = None) -> HookConfig:
    """The hook an evaluation's engine runs (what :func:`build_backend` installs; a Ray driver
    reads its checked settings without starting an engine)."""
    if monitor is not None and policy is None:
        raise InvalidInput("a monitor needs a calibrated probe (--probe)")
    settings = {"keep_events": True, "fallback": fallback, "monitor": monitor, "audit_path": audit_path}
    return (
        policy.hook_config({k: v for k, v in settings.items() if v is not None})
        if policy is not None
        else HookConfig(exit_string=DEFAULT_EXIT, keep_events=True, fallback=fallback)
    )


def build_backend(engine: str, model: str, probe: ExitPolicy | str | Path | None, fallback: str = EvalConfig.fallback, monitor: dict | None = None, audit_path: str | None = None):
    """The engine every method of an evaluation runs on (lynx's hook installed when a probe is
    given; the probe folder is read here, once, and checked against the model). ``fallback``:
    what lynx's requests outside every calibrated condition get; ``monitor``: a live monitor
    of lynx's requests (:mod:`lynx.monitor`), logging into ``audit_path``."""
    ref = resolve_model(model)
    policy = load_policy(model, probe)
    hook = engine_hook(policy, fallback, monitor, audit_path)
    if engine == "vllm":
        from lynx.evaluate.backends import VLLMBackend

        return VLLMBackend(ref, hook, policy)
    from lynx.evaluate.backends import HFBackend

    return HFBackend(ref, hook, policy)


#: what must agree for an earlier evaluation's vanilla samples to be this one's
SAME_VANILLA = ("model", "dataset", "n_problems", "engine", "temperature", "top_p", "seed", "max_new_tokens")


def check_config(cfg: EvalConfig) -> None:
    """Refuse bad options before any engine starts."""
    from lynx.calibrate.procedures import check_alpha

    unknown = [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise InvalidInput(f"unknown baseline(s) {unknown}: choose from {', '.join(BASELINES)}")
    for a in cfg.alphas:
        check_alpha(a)
    if cfg.alphas and cfg.probe is None:
        raise InvalidInput("lynx needs --probe (a folder from lynx train + lynx calibrate); or pass --alphas '' to run baselines only")


def check_probe(cfg: EvalConfig, policy: ExitPolicy | None) -> None:
    """The engine runs the probe the evaluation asks for."""
    if cfg.probe is not None and (policy is None or resolve_probe_folder(cfg.probe).resolve() != policy.folder.resolve()):
        raise InvalidInput(f"the evaluation asks for probe {cfg.probe} but its engine runs {policy.folder if policy else 'no probe'}")


def lynx_condition(cfg: EvalConfig, policy: ExitPolicy | None, fallback: str) -> dict:
    """The calibrated condition lynx's requests get (an uncalibrated probe is refused here,
    before any generation); merged into lynx's rows and the evaluation's meta."""
    if not cfg.alphas or policy is None:
        return {}
    d = policy.threshold(cfg.alphas[0], temperature=cfg.temperature, domain=cfg.domain, fallback=fallback)
    assert policy.calibrations is not None  # threshold() raised NotCalibrated otherwise
    labels = policy.calibrations[d.condition].labels if d.condition is not None else None
    if d.uncalibrated_condition:
        console.print(f"[yellow]warning[/]: {d.fallback}")
    return {
        "condition": d.condition if not d.uncalibrated_condition else f"uncalibrated ({fallback})",
        "calibration_labels": labels,
        "uncalibrated_condition": d.uncalibrated_condition,
    }


def load_records(cfg: EvalConfig) -> list:
    return load_dataset(cfg.dataset, n=cfg.n_problems, seed=cfg.seed, question_field=cfg.question_field, answer_field=cfg.answer_field)


def eval_context(cfg: EvalConfig, backend, records: list, start: int = 0) -> M.EvalContext:
    """The methods' shared context for ``records``, the problems ``start, start + 1, ...`` of the
    evaluation: every seed is the problem's global index's, so a slice of the problems gets
    exactly the seeds (and so the samples) it gets in the whole evaluation."""
    policy, tok = backend.policy, backend.tokenizer
    suffix = policy.prompt_suffix if policy is not None else INSTRUCTION
    exit_string = policy.exit_string if policy is not None else DEFAULT_EXIT
    prompts = [tok(chat_prompt(tok, r.question, suffix=suffix), add_special_tokens=False)["input_ids"] for r in records]
    matcher = CueMatcher(tok, cues=tuple(policy.cues) if policy is not None else DEFAULT_CUES, thinking=policy.thinking if policy is not None else None)
    return M.EvalContext(
        backend,
        records,
        prompts,
        [cfg.seed * 1_000_003 + start + i for i in range(len(records))],
        matcher,
        tok(exit_string, add_special_tokens=False)["input_ids"],
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        domain=cfg.domain,
    )


def eval_meta(cfg: EvalConfig, n_problems: int, engine: str, fallback: str, lynx_meta: dict) -> dict:
    """``eval.json``'s settings (the monitor's state and a Ray run's figures are added later)."""
    return (
        {
            "model": cfg.model,
            "probe": cfg.probe,
            "dataset": cfg.dataset,
            "n_problems": n_problems,
            "engine": engine,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seed": cfg.seed,
            "max_new_tokens": cfg.max_new_tokens,
            "domain": cfg.domain,
            "fallback": fallback,
        }
        | lynx_meta
        | cfg.extra
    )


def mean_thinking(base: list) -> float:
    """Vanilla's mean thinking tokens over *all* the evaluation's problems (the default budgets' base)."""
    return sum(s.thinking_tokens for s in base) / len(base)


def needs_mean_thinking(cfg: EvalConfig) -> bool:
    """Does :func:`method_plan` read ``mean_think`` (the default static budgets)? A distributed
    run then finishes vanilla on every slice before the other methods start."""
    return "budget" in cfg.baselines and not cfg.budgets


def method_plan(cfg: EvalConfig, ctx: M.EvalContext, base: list, mean_think: float | None) -> list[tuple[str, str, float | None, object]]:
    """Every method after vanilla, in table order: (method, setting, alpha, fn() -> samples).
    The one list both the local and the distributed evaluation run. ``base``: vanilla's samples
    of ``ctx``'s problems; ``mean_think``: vanilla's mean thinking over all problems (only read
    when :func:`needs_mean_thinking`)."""
    plan: list[tuple[str, str, float | None, object]] = []
    for a in cfg.alphas:
        plan.append(("lynx", f"alpha={a:g}", a, lambda a=a: M.lynx(ctx, a)))
    policy = ctx.backend.policy
    if "context-only" in cfg.baselines and cfg.alphas and policy is not None:
        baseline = policy.baselines.get("context-only")
        if baseline is not None and baseline.is_calibrated:  # the same exit rule and alphas, no hidden state
            plan += [("context-only", f"alpha={a:g}", a, lambda a=a: M.lynx(ctx, a, scorer="context-only")) for a in cfg.alphas]
        else:
            console.print(f"[yellow]note[/]: no context-only rows: {policy.folder} has no calibrated context-only baseline (lynx train writes it, lynx calibrate calibrates it)")
    if "oracle" in cfg.baselines:
        plan.append(("oracle", "first right cue", None, lambda: M.oracle(ctx, base)))
    if "budget" in cfg.baselines:
        if cfg.budgets:
            budgets = cfg.budgets
        else:
            assert mean_think is not None  # passed whenever needs_mean_thinking(cfg)
            budgets = tuple(max(1, round(mean_think * f)) for f in (0.25, 0.5, 0.75))
        plan += [("budget", f"N={n}", None, lambda n=n: M.budget(ctx, n)) for n in budgets]
    if "deer" in cfg.baselines:
        plan += [("deer", f"p>{t:g}", None, lambda t=t: M.deer(ctx, t)) for t in cfg.deer_thresholds]
    if "dynasor" in cfg.baselines:
        plan += [("dynasor", f"k={k}/{cfg.dynasor_chunk}", None, lambda k=k: M.dynasor(ctx, k, cfg.dynasor_chunk)) for k in cfg.dynasor_k]
    return plan


def run_methods(cfg: EvalConfig, ctx: M.EvalContext, base: list, mean_think: float | None, status=None, store=None) -> list[Run]:
    """Run :func:`method_plan` on ``ctx``'s problems, timing each method. ``store``: a
    :class:`~lynx.evaluate.runstore.MethodStore` that writes each finished method and hands back
    the ones a killed run already finished (method ``i`` of the plan is its run ``i + 1``)."""
    runs: list[Run] = []
    for i, (method, setting, alpha, fn) in enumerate(method_plan(cfg, ctx, base, mean_think), start=1):
        if status is not None:
            status.update(f"{method} {setting}")
        runs.append(run_one(store, i, method, setting, alpha, fn))
    return runs


def run_one(store, index: int, method: str, setting: str, alpha: float | None, fn) -> Run:
    """``fn()`` timed as one run, or through ``store`` (written, or read back when finished)."""
    if store is not None:
        return store.run(index, method, setting, alpha, fn)
    samples, secs = M.timed(fn)
    return (method, setting, alpha, samples, secs)


def evaluate(cfg: EvalConfig, backend=None, vanilla_of: dict | None = None) -> dict:
    """Run every requested method; write the table, samples and plot; return the results.

    ``vanilla_of``: an earlier result on the same problems, sampling and engine whose vanilla
    samples are reused (vanilla is a pure function of those: same seeds, no lynx); a result
    that differs in any of them is refused, never silently reused."""
    check_config(cfg)
    engine = engine_choice(cfg.engine)
    if backend is None:
        console.print(f"engine: {engine}")
        backend = build_backend(engine, cfg.model, cfg.probe, cfg.fallback, cfg.monitor, cfg.audit_path)
    check_probe(cfg, backend.policy)
    lynx_meta = lynx_condition(cfg, backend.policy, backend.hook.fallback)
    records = load_records(cfg)
    ctx = eval_context(cfg, backend, records)
    meta = eval_meta(cfg, len(records), backend.name, backend.hook.fallback, lynx_meta)
    with exclusive_writer(cfg.out), console.status("vanilla") as status:
        store = None
        if resumable(cfg):
            store = MethodStore(cfg.out, plan_identity(cfg, backend.name, len(records), backend.policy), note=lambda m: console.print(f"[yellow]note[/]: {m}"))
        if vanilla_of is not None:
            diff = [k for k in SAME_VANILLA if vanilla_of["meta"].get(k) != meta[k]]
            if diff:
                raise InvalidInput(f"cannot reuse vanilla samples of an evaluation with other {', '.join(diff)}")
            base, secs = vanilla_of["vanilla"], vanilla_of["vanilla_seconds"]
        else:
            *_, base, secs = run_one(store, 0, "vanilla", "full CoT", None, lambda: M.vanilla(ctx))
        runs = [("vanilla", "full CoT", None, base, secs)] + run_methods(cfg, ctx, base, mean_thinking(base), status, store)
        if store is not None and store.resumed:
            console.print(f"resumed: {store.resumed} finished method run(s) read back from {store.folder}")
            meta["resumed_runs"] = store.resumed
        return write_results(cfg, runs, records, meta, lynx_meta, backend.name, backend.monitoring)


def resumable(cfg: EvalConfig) -> bool:
    """A local evaluation resumes unless a live monitor or an audit file watches it: their state
    (alarms, responses, the audit log) lives in the engine and cannot be read back with the runs."""
    return cfg.monitor is None and cfg.audit_path is None


def write_results(cfg: EvalConfig, runs: list[Run], records: list, meta: dict, lynx_meta: dict, engine: str, monitoring=None) -> dict:
    """Every output of an evaluation from its runs (vanilla's first, samples in problem order):
    ``samples.parquet``, ``results.csv`` / ``.parquet`` / ``.md``, ``pareto.png``, ``eval.json``;
    returns the result :func:`evaluate` returns."""
    base, vanilla_secs = runs[0][3], runs[0][4]
    if "vanilla" not in cfg.baselines:
        runs = runs[1:]  # vanilla still ran: every other figure is paired with it
    graders = [grader_for(r.kind) for r in records]
    orc = next((smp for m, _s, _a, smp, _t in runs if m == "oracle"), None)  # the oracle at lynx's tokens: the lynx rows' regret

    def extra(m: str, smp: list) -> dict:
        return (regret(smp, orc) if orc is not None and m in ("lynx", "context-only") else {}) | (lynx_meta if m == "lynx" else {})

    df = pd.DataFrame([row(m, s, smp, base, secs, a, graders) | extra(m, smp) for m, s, a, smp, secs in runs])
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sample_rows = [
        {
            "method": m,
            "setting": s,
            "problem_id": x.problem_id,
            "answer": x.answer,
            "gold": records[i].answer,
            "correct": x.correct,
            "thinking_tokens": x.thinking_tokens,
            "exited": x.exited,
            "extra_tokens": x.extra_tokens,
            "exit": json.dumps(x.exit) if x.exit else None,
        }
        for m, s, _a, smp, _t in runs
        for i, x in enumerate(smp)
    ]
    pd.DataFrame(sample_rows).to_parquet(out / "samples.parquet", index=False)
    df.to_csv(out / "results.csv", index=False)
    df.to_parquet(out / "results.parquet", index=False)
    cond = f", lynx condition {lynx_meta['condition']}" if lynx_meta else ""
    title = cfg.title or f"{cfg.model} on {cfg.dataset} (T={cfg.temperature:g}, n={len(records)}, {engine}{cond})"
    pareto_plot(df, out / "pareto.png", title)
    cmp = pareto_comparison(df)
    ctx_cmp = context_comparison(df, {(m, a): smp for m, _s, a, smp, _t in runs}, base)
    checks = acceptance(df, 0.1, ctx_cmp) if 0.1 in cfg.alphas else []
    md = [f"# {title}", "", to_markdown(df), ""]
    if cmp:
        md += ["## lynx vs the baselines at equal thinking tokens", "", pareto_markdown(cmp), ""]
    if ctx_cmp:
        md += ["## lynx vs the context-only baseline (what the hidden state adds)", "", context_markdown(ctx_cmp), ""]
    if checks:
        md += ["## Acceptance at alpha = 0.1", ""] + [f"- [{'x' if ok else ' '}] {name}: {val}" for name, ok, val in checks] + [""]
    if monitoring is not None:  # the live monitor's view of lynx's requests (lynx monitor reads its audit file)
        meta["monitor"] = monitoring.state()
        md += ["## Live monitor", "", "```", json.dumps(meta["monitor"]["groups"], indent=1, default=str)[:4000], "```", ""]
    (out / "results.md").write_text("\n".join(md))
    (out / "eval.json").write_text(json.dumps(meta, indent=2, default=str))
    return {
        "meta": meta,
        "table": df,
        "pareto": cmp,
        "context_comparison": ctx_cmp,
        "acceptance": checks,
        "out": out,
        "title": title,
        "vanilla": base,
        "vanilla_seconds": vanilla_secs,
    }


def records_json(df: pd.DataFrame) -> list[dict]:
    """The table as JSON records (NaN -> null)."""
    return json.loads(df.to_json(orient="records"))

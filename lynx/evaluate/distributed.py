"""``lynx eval --ray``: an evaluation's problems in slices on a Ray cluster, one table.

The problems are cut into contiguous slices (``slice_size`` problems each; by default each
worker gets about four). A Ray Data actor pool (:mod:`lynx.collect.ray_pool`) runs the *same*
method plan as a local evaluation (:func:`~lynx.evaluate.pipeline.method_plan`) on each slice,
one engine per actor (:func:`~lynx.evaluate.pipeline.build_backend`, built once per actor), every
problem seeded by its global index (:func:`~lynx.evaluate.pipeline.eval_context`). The driver
assembles the runs in problem order and writes exactly the outputs of
:func:`~lynx.evaluate.pipeline.evaluate` (:func:`~lynx.evaluate.pipeline.write_results`).

Exactness: lynx's exit and every baseline decide per request, so a slice's samples are the ones
the whole evaluation gives its problems. The one global figure, vanilla's mean thinking over all
problems (the default static budgets), is computed between two passes: vanilla on every slice
first, then the other methods (a worker reads its slice's vanilla back). With ``--budgets`` given,
one pass runs everything.

Resumable: each finished slice is one Parquet file written atomically under ``<out>/slices/``
(``vanilla-00003.parquet`` after the first pass, ``slice-00003.parquet`` with every method after
the second), next to ``plan.json``, the settings that determine the results; a rerun of the
same command skips finished slices, a rerun with other settings into the folder is refused.

Per-method ``seconds`` in the table are summed over the slices (worker time, not wall time):
``eval.json`` says so and adds ``ray_workers`` and the run's ``wall_seconds``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lynx.collect.ray_pool import DEFAULT_RETRIES, check_pool, guarded, map_on_pool, raise_failures, rows_of, start_ray
from lynx.config import EvalConfig
from lynx.errors import InvalidInput
from lynx.evaluate import methods as M
from lynx.evaluate.pipeline import (
    Run,
    build_backend,
    check_config,
    console,
    engine_choice,
    engine_hook,
    eval_context,
    eval_meta,
    load_policy,
    load_records,
    lynx_condition,
    mean_thinking,
    needs_mean_thinking,
    run_methods,
    write_results,
)
from lynx.evaluate.runstore import (
    CorruptRunFile,
    check_readable,
    identity_diff,
    plan_identity,
    read_plan,
    read_runs,
    write_plan,
    write_runs,
)
from lynx.store.folders import exclusive_writer
from lynx.store.manifest import IncompatibleFolder

SLICES = "slices"
PLAN = "plan.json"  # the same name as a local evaluation's (lynx.evaluate.runstore.PLAN), in its own folder
#: the passes of a run: vanilla alone (when the plan reads its mean over all problems), then everything
VANILLA, METHODS = "vanilla", "slice"
#: slices per worker when ``--ray-slice`` is not given: small enough to balance the load, few enough
#: that each slice still batches well
SLICES_PER_WORKER = 4
#: a slice file that cannot be read
CorruptSlice = CorruptRunFile


# -- slices on disk ---------------------------------------------------------------------------


def slice_bounds(n_problems: int, size: int) -> list[tuple[int, int]]:
    """Contiguous problem ranges ``[lo, hi)`` of ``size`` problems (the last may be shorter)."""
    return [(lo, min(n_problems, lo + size)) for lo in range(0, n_problems, size)]


def slice_path(out: Path, kind: str, index: int) -> Path:
    return Path(out) / SLICES / f"{kind}-{index:05d}.parquet"


def finished_slices(out: Path, kind: str, n_slices: int) -> set[int]:
    """Indices of the slices of this kind already written (a file that cannot be read is an error)."""
    done = set()
    for i in range(n_slices):
        path = slice_path(out, kind, i)
        if path.exists():
            check_readable(path, what="slice")
            done.add(i)
    return done


def write_slice(path: Path, runs: list[Run]) -> None:
    write_runs(path, runs)


def read_slice(path: Path) -> list[Run]:
    return read_runs(path, what="slice")


# -- the plan: what a folder's slices were made with ------------------------------------------


def open_plan(out: Path, identity: dict, slice_size: int | None, workers: int) -> int:
    """Write ``plan.json`` on a first run, check it on a rerun; returns the slice size (a rerun
    keeps the folder's own, so resuming with another ``--ray-workers`` cuts the same slices)."""
    path = Path(out) / SLICES / PLAN
    if path.exists():
        plan = read_plan(path)
        diff = identity_diff(plan["identity"], identity)
        if diff:
            raise IncompatibleFolder(f"{out} holds slices of another evaluation (differs in: {', '.join(diff)}); use a new --out or the original settings")
        if slice_size is not None and slice_size != plan["slice_size"]:
            raise InvalidInput(f"--ray-slice {slice_size}: {out}'s slices were cut with {plan['slice_size']} problems; omit --ray-slice to resume them")
        return plan["slice_size"]
    if slice_size is not None and slice_size < 1:
        raise InvalidInput(f"--ray-slice must be at least 1, got {slice_size}")
    size = slice_size or max(1, math.ceil(identity["n_problems"] / (workers * SLICES_PER_WORKER)))
    write_plan(path, identity, slice_size=size)
    return size


# -- the workers ------------------------------------------------------------------------------


class SliceWorker:
    """A Ray Data actor: one backend (engine + lynx's hook), built once, whole slices.

    ``kind`` VANILLA: vanilla alone; METHODS: vanilla (read back from the first pass when it
    ran) and then every method of the plan. ``mean_think``: vanilla's mean over all problems."""

    def __init__(self, cfg: EvalConfig, records: list, slice_size: int, kind: str, mean_think: float | None = None, before_write=None):
        self.cfg, self.records, self.size, self.kind, self.mean_think = cfg, records, slice_size, kind, mean_think
        self.out, self.before_write = Path(cfg.out), before_write
        self.backend = None
        self.failure = guarded(-1, self._start)  # an engine that cannot start fails every slice, in one line

    def _start(self) -> dict:
        self.backend = build_backend(self.cfg.engine, self.cfg.model, self.cfg.probe, self.cfg.fallback)
        return {}

    def __call__(self, batch: dict) -> dict:
        if self.backend is None:
            return rows_of([self.failure | {"index": int(i)} for i in batch["index"]])
        return rows_of([guarded(int(i), lambda i=i: self.run(int(i))) for i in batch["index"]])

    def run(self, index: int) -> dict:
        lo = index * self.size
        records = self.records[lo : lo + self.size]
        ctx = eval_context(self.cfg, self.backend, records, start=lo)
        first = slice_path(self.out, VANILLA, index)
        if self.kind == METHODS and first.exists():
            runs = read_slice(first)
        else:
            base, secs = M.timed(M.vanilla, ctx)
            runs = [("vanilla", "full CoT", None, base, secs)]
        if self.kind == METHODS:
            runs += run_methods(self.cfg, ctx, runs[0][3], self.mean_think)
        if self.before_write is not None:
            self.before_write(index)
        write_slice(slice_path(self.out, self.kind, index), runs)
        return {"problems": len(records)}


class SliceProgress:
    """The progress bar of a distributed evaluation: problems per pass, across the cluster."""

    def __init__(self):
        cols = [TextColumn("[bold]eval {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("problems"), TimeElapsedColumn()]
        self.bar = Progress(*cols, console=console)

    def __enter__(self) -> SliceProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def task(self, name: str, total: int):
        """A bar for one pass; returns ``on_result(index, result)`` that advances it."""
        task = self.bar.add_task(name, total=total)
        return lambda _i, res: self.bar.update(task, advance=res["problems"])


# -- the driver -------------------------------------------------------------------------------


def _pass(
    ray,
    out: Path,
    cfg: EvalConfig,
    records: list,
    bounds,
    size: int,
    kind: str,
    progress: SliceProgress,
    *,
    workers: int,
    retries: int,
    cpus: float,
    gpus: float,
    mean_think: float | None = None,
    before_write=None,
) -> None:
    """Run the slices of this pass that are not written yet; one clear line for any that failed."""
    done = finished_slices(out, kind, len(bounds))
    if done:
        console.print(f"resuming: {len(done)} of {len(bounds)} slices already complete ({'vanilla' if kind == VANILLA else 'all methods'})")
    todo = [i for i in range(len(bounds)) if i not in done]
    on_result = progress.task("vanilla" if kind == VANILLA else "methods", sum(hi - lo for lo, hi in (bounds[i] for i in todo)))
    if not todo:
        return
    ctor = {"cfg": cfg, "records": records, "slice_size": size, "kind": kind, "mean_think": mean_think, "before_write": before_write}
    ok, failed = map_on_pool(ray, todo, SliceWorker, ctor, workers=workers, retries=retries, cpus=cpus, gpus=gpus, on_result=on_result)
    raise_failures(
        todo, ok, failed, what="slice", retries=retries, describe=lambda i: f"{'vanilla of ' if kind == VANILLA else ''}slice {i} (problems {bounds[i][0]}-{bounds[i][1] - 1})"
    )


def assemble(out: Path, bounds, records: list) -> list[Run]:
    """The slices' runs joined in problem order, seconds summed over slices."""
    parts = [read_slice(slice_path(out, METHODS, i)) for i in range(len(bounds))]
    names = [(m, s) for m, s, *_ in parts[0]]
    for i, runs in enumerate(parts):
        if [(m, s) for m, s, *_ in runs] != names:
            raise InvalidInput(f"{slice_path(out, METHODS, i)} holds other methods than slice 0; delete {out / SLICES} to start again")
    runs = [(m, s, a, [x for p in parts for x in p[k][3]], sum(p[k][4] for p in parts)) for k, (m, s, a, _, _) in enumerate(parts[0])]
    ids = [r.id for r in records]
    for m, s, _a, samples, _t in runs:
        if [x.problem_id for x in samples] != ids:
            raise InvalidInput(f"the slices of {out} do not cover the evaluation's problems in order ({m} {s}); delete {out / SLICES} to start again")
    return runs


def evaluate_on_ray(
    cfg: EvalConfig,
    workers: int = 2,
    address: str | None = None,
    *,
    slice_size: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    retries: int = DEFAULT_RETRIES,
    before_write=None,
) -> dict:
    """Run (or resume) ``cfg``'s evaluation on ``workers`` Ray actors; writes and returns what
    :func:`~lynx.evaluate.pipeline.evaluate` does (``meta`` adds ``ray_workers``, ``slices``,
    ``slice_size``, ``wall_seconds``; per-method seconds are summed over workers). A slice whose
    worker dies is retried ``retries`` times on the restarted actor, then the run ends naming it.

    ``before_write(index)`` runs in the worker just before a slice file is written (fault injection)."""
    check_config(cfg)
    check_pool(workers, retries)
    if cfg.monitor is not None or cfg.audit_path is not None:
        raise InvalidInput("--monitor and --audit watch one engine's requests: run them without --ray")
    engine = engine_choice(cfg.engine)
    policy = load_policy(cfg.model, cfg.probe)
    hook = engine_hook(policy, cfg.fallback)
    lynx_meta = lynx_condition(cfg, policy, hook.fallback)  # an uncalibrated probe is refused before any worker starts
    records = load_records(cfg)
    wcfg = dataclasses.replace(cfg, engine=engine)  # every worker runs the engine the driver chose
    out = Path(cfg.out)
    t0 = time.monotonic()
    with exclusive_writer(out):
        size = open_plan(out, plan_identity(cfg, engine, len(records), policy), slice_size, workers)
        bounds = slice_bounds(len(records), size)
        opts = {"workers": workers, "retries": retries, "cpus": cpus_per_worker, "gpus": gpus_per_worker, "before_write": before_write}
        pending = len(finished_slices(out, METHODS, len(bounds))) < len(bounds)
        ray = start_ray(address, "lynx eval") if pending else None
        with SliceProgress() as progress:
            mean_think = None
            if pending and needs_mean_thinking(cfg):
                _pass(ray, out, wcfg, records, bounds, size, VANILLA, progress, **opts)
                mean_think = mean_thinking([x for i in range(len(bounds)) for x in read_slice(slice_path(out, VANILLA, i))[0][3]])
            _pass(ray, out, wcfg, records, bounds, size, METHODS, progress, mean_think=mean_think, **opts)
        runs = assemble(out, bounds, records)
        meta = eval_meta(cfg, len(records), engine, hook.fallback, lynx_meta) | {
            "seconds": "summed over workers",
            "ray_workers": workers,
            "slices": len(bounds),
            "slice_size": size,
            "wall_seconds": round(time.monotonic() - t0, 1),
        }
        return write_results(cfg, runs, records, meta, lynx_meta, engine)

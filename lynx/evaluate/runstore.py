"""An evaluation's finished runs on disk: what makes ``lynx eval`` resumable, locally and on Ray.

A *run* is one method at one setting on a list of problems (``(method, setting, alpha, samples,
seconds)``, :data:`lynx.evaluate.pipeline.Run`). Runs are written as Parquet, one row per
(run, problem), atomically (a temporary name, then a rename), next to a ``plan.json`` holding
:func:`plan_identity`: every setting that determines the samples (the model's and the probe's
fingerprints included). Only runs made under the same identity are ever read back.

Why it matters on real models: ``lynx eval`` of SmolLM2 on 300 problems with its baselines is
~40 minutes on 2 cores; a kill (a session's end, a pre-empted machine) must not cost the methods
already done. ``--ray`` cuts the problems into slices (:mod:`lynx.evaluate.distributed`); the
local evaluation keeps one file per method (:class:`MethodStore`): vanilla first, then each
method of the plan, each reused on a rerun of the same command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lynx import __version__
from lynx.config import EvalConfig
from lynx.errors import InvalidInput
from lynx.evaluate import methods as M
from lynx.models import model_fingerprint, resolve_model, resolve_probe_folder

#: EvalConfig fields that do not change a sample (where it is written, how it is titled, the
#: monitor and audit file, which a resumable run refuses); ``engine`` and ``n_problems`` enter
#: the identity resolved (the engine chosen, the problems loaded)
NOT_IDENTITY = ("out", "title", "extra", "monitor", "audit_path", "engine", "n_problems")
#: Sample fields stored as JSON text (their shape varies from row to row)
JSON_FIELDS = ("exit",)
#: the local evaluation's folder of finished methods, under ``--out``
METHOD_RUNS = "runs"
PLAN = "plan.json"


class CorruptRunFile(InvalidInput):
    """A file of finished runs exists but cannot be read."""


def runs_table(runs: list) -> pa.Table:
    """Runs as rows: one per (run, problem), the run's name, alpha and seconds repeated."""
    cols: dict[str, list] = {k: [] for k in ("run", "method", "setting", "alpha", "seconds")}
    names = [f.name for f in dataclasses.fields(M.Sample)]
    cols |= {k: [] for k in names}
    for r, (method, setting, alpha, samples, secs) in enumerate(runs):
        for s in samples:
            for k, v in (("run", r), ("method", method), ("setting", setting), ("alpha", alpha), ("seconds", float(secs))):
                cols[k].append(v)
            for k in names:
                v = getattr(s, k)
                cols[k].append(json.dumps(v) if k in JSON_FIELDS and v is not None else v)
    types = {
        "run": pa.int64(),
        "method": pa.string(),
        "setting": pa.string(),
        "alpha": pa.float64(),
        "seconds": pa.float64(),
        "generated": pa.list_(pa.int64()),
        "answer": pa.string(),
        "problem_id": pa.string(),
    } | {k: pa.string() for k in JSON_FIELDS}
    return pa.table({k: pa.array(v, type=types.get(k)) for k, v in cols.items()})


def table_runs(table: pa.Table) -> list:
    """:func:`runs_table` read back: the runs with their samples rebuilt."""
    names = [f.name for f in dataclasses.fields(M.Sample)]
    runs: list = []
    current = None
    for rec in table.to_pylist():
        if rec["run"] != current:
            current = rec["run"]
            runs.append((rec["method"], rec["setting"], rec["alpha"], [], rec["seconds"]))
        kw = {k: (json.loads(rec[k]) if k in JSON_FIELDS and rec[k] is not None else rec[k]) for k in names}
        runs[-1][3].append(M.Sample(**kw))
    return runs


def write_runs(path: Path, runs: list) -> None:
    """Atomically: a temporary name, then a rename, so an interrupted write leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(runs_table(runs), tmp)
    tmp.replace(path)


def _corrupt(path: Path, what: str, e: Exception) -> CorruptRunFile:
    return CorruptRunFile(f"corrupt {what} file {path} ({type(e).__name__}); delete it to evaluate that {what} again")


def read_runs(path: Path, what: str = "runs") -> list:
    try:
        return table_runs(pq.read_table(path))
    except Exception as e:
        raise _corrupt(path, what, e) from None


def check_readable(path: Path, what: str = "runs") -> None:
    """Raise :class:`CorruptRunFile` unless ``path``'s Parquet metadata reads."""
    try:
        pq.read_metadata(path)
    except Exception as e:
        raise _corrupt(path, what, e) from None


def probe_digest(folder: Path | None) -> str | None:
    """A hash of every file of the probe folder (probe, calibrations, baselines): another
    calibration can change lynx's rows, so resuming across one is refused."""
    if folder is None:
        return None
    h = hashlib.sha256()
    for p in sorted(q for q in Path(folder).rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def plan_identity(cfg: EvalConfig, engine: str, n_problems: int, policy) -> dict:
    """Everything that determines an evaluation's samples (every EvalConfig field but where it
    is written and how it is titled, so a field added later counts too), JSON-normalised."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in NOT_IDENTITY}
    ident = fields | {
        "engine": engine,
        "n_problems": n_problems,
        "model_fingerprint": model_fingerprint(resolve_model(cfg.model)),
        "probe": str(resolve_probe_folder(cfg.probe).resolve()) if cfg.probe else None,
        "probe_digest": probe_digest(policy.folder if policy is not None else None),
    }
    return json.loads(json.dumps(ident, default=str))


def identity_diff(stored: dict, identity: dict) -> list[str]:
    """The identity fields in which two plans differ (sorted)."""
    return sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))


def write_plan(path: Path, identity: dict, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"lynx_version": __version__, **extra, "identity": identity}, indent=2) + "\n")
    tmp.replace(path)


def read_plan(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path} is corrupt ({e.msg}); delete {path.parent} to start the evaluation again") from None


def _file_name(index: int, method: str, setting: str) -> str:
    return f"{index:02d}-{re.sub(r'[^A-Za-z0-9.=-]+', '_', f'{method}-{setting}')}.parquet"


class MethodStore:
    """The local evaluation's finished methods, one Parquet file each under ``<out>/runs/``.

    Opened with the evaluation's :func:`plan_identity`: a folder holding runs of the same
    identity is resumed (each finished method read back, ``resumed`` counts them); one holding
    runs of another evaluation is cleared first, with a note naming what differs (a local
    ``--out`` is overwritten, as before resuming existed; never are runs of another identity
    reused). Method ``index`` is its place in the plan (vanilla 0): a file whose method or
    setting is not the plan's at that place is an error, not a reuse."""

    def __init__(self, out: Path, identity: dict, note=print):
        self.folder = Path(out) / METHOD_RUNS
        self.resumed = 0
        plan = self.folder / PLAN
        if plan.exists():
            diff = identity_diff(read_plan(plan).get("identity", {}), identity)
            if diff:
                note(f"{self.folder}: runs of another evaluation (differs in: {', '.join(diff)}); starting afresh")
                for p in self.folder.glob("*.parquet"):
                    p.unlink()
                plan.unlink()
        if not plan.exists():
            write_plan(plan, identity)

    def run(self, index: int, method: str, setting: str, alpha: float | None, fn) -> tuple:
        """The finished run at ``index`` if written, else ``fn()`` timed, written, and returned."""
        path = self.folder / _file_name(index, method, setting)
        if path.exists():
            runs = read_runs(path, what="method")
            if len(runs) != 1 or runs[0][:2] != (method, setting):
                raise InvalidInput(f"{path} holds {[r[:2] for r in runs]}, not {method} {setting}; delete {self.folder} to start again")
            self.resumed += 1
            return runs[0]
        samples, secs = M.timed(fn)
        run = (method, setting, alpha, samples, secs)
        write_runs(path, [run])
        return run

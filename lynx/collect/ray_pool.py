"""The Ray plumbing ``lynx collect --ray`` and ``lynx eval --ray`` share: start or attach Ray,
map work items (shards, slices) over a pool of stateful actors with *bounded* retries, and turn
what failed into one clear line.

Why bounded: Ray Data's actor pools restart a dead actor and retry its task without limit by
default (``max_restarts`` / ``max_task_retries`` -1), so a shard that kills its worker on every
attempt (out of memory on the longest traces) would loop forever. Here each item gets
``retries + 1`` attempts (``max_task_retries``); an item that exhausts them is dropped from the
stream (``DataContext.max_errored_blocks`` -1) while the other items go on, and the driver names
it afterwards. Actor restarts stay finite too (enough for every item to use its attempts), so an
actor that dies while it restarts cannot loop either.

Exceptions inside an actor never fail the stream: the actor returns them as the item's result
(``error``), so the driver can name the item, say what went wrong in one line for a lynx error
(and keep the traceback for a bug), and leave every item that finished written. A rerun resumes.
"""

from __future__ import annotations

import json
import traceback
import warnings

from lynx.errors import EngineUnavailable, InvalidInput, LynxError

#: the attempts an item gets beyond its first when its worker dies (``--ray-retries``)
DEFAULT_RETRIES = 3


class WorkFailed(LynxError, RuntimeError):
    """Items of a distributed run did not finish (their worker died on every attempt, or lynx
    refused them); the others are written and a rerun retries these."""


def check_pool(workers: int, retries: int) -> None:
    if workers < 1:
        raise InvalidInput(f"--ray-workers must be at least 1, got {workers}")
    if retries < 0:
        raise InvalidInput(f"--ray-retries must be 0 or more, got {retries}")


def start_ray(address: str | None, what: str = "lynx collect"):
    """Ray, initialised (``address`` None: a local Ray, unless ``RAY_ADDRESS`` names a cluster)."""
    try:
        import ray
    except ImportError:
        raise EngineUnavailable(f'Ray is not installed: pip install "lynx[ray]" (or run {what} without --ray)') from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    return ray


def guarded(index: int, work) -> dict:
    """Run ``work()`` (-> a JSON-able dict) for item ``index`` in an actor: the row the pool
    yields, ``{"index", "result", "error"}`` as JSON text, whether it worked or raised."""
    try:
        return {"index": index, "result": json.dumps(work()), "error": ""}
    except LynxError as e:
        return {"index": index, "result": "", "error": json.dumps({"lynx": True, "message": str(e) or type(e).__name__})}
    except Exception:
        return {"index": index, "result": "", "error": json.dumps({"lynx": False, "message": traceback.format_exc()})}


def rows_of(results: list[dict]) -> dict:
    """``guarded`` results as a Ray Data batch (columns of equal length)."""
    return {k: [r[k] for r in results] for k in ("index", "result", "error")}


def map_on_pool(
    ray, indices: list[int], actor_cls, ctor_kwargs: dict, *, workers: int, retries: int, cpus: float = 1.0, gpus: float = 0.0, on_result=None
) -> tuple[dict[int, dict], dict[int, dict]]:
    """Map item ``indices`` over ``workers`` actors of ``actor_cls(**ctor_kwargs)`` (one item per
    call, each actor one item at a time); returns ({index: result}, {index: error}) — an index in
    neither died on every attempt. ``on_result(index, result)`` runs on the driver as each item
    finishes (progress)."""
    if not indices:
        return {}, {}
    data_ctx = ray.data.DataContext.get_current()
    saved = data_ctx.enable_progress_bars, data_ctx.max_errored_blocks
    data_ctx.enable_progress_bars = False  # lynx's own bar counts the work across the cluster
    data_ctx.max_errored_blocks = -1  # an item whose attempts are spent is dropped; the others go on
    done: dict[int, dict] = {}
    failed: dict[int, dict] = {}
    try:
        ds = ray.data.from_items([{"index": i} for i in indices], override_num_blocks=len(indices))
        pool = ray.data.ActorPoolStrategy(size=min(workers, len(indices)), max_tasks_in_flight_per_actor=1)
        with warnings.catch_warnings():
            # Ray 2.60 deprecates **ray_remote_args but has no named parameter for these two yet (its actor-pool operator
            # documents this route: map_batches(..., max_restarts=...)); revisit when Ray names them
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=DeprecationWarning)
            mapped = ds.map_batches(
                actor_cls,
                fn_constructor_kwargs=ctor_kwargs,
                batch_size=1,
                compute=pool,
                num_cpus=cpus,
                num_gpus=gpus or None,
                max_task_retries=retries,
                max_restarts=len(indices) * (retries + 1),
            )
        for r in mapped.iter_rows():
            index = int(r["index"])
            if r["error"]:
                failed[index] = json.loads(r["error"])
                continue
            done[index] = json.loads(r["result"])
            if on_result is not None:
                on_result(index, done[index])
    except ray.exceptions.RayError as e:  # an actor that died while starting (Ray Data replaces none by default)
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise WorkFailed(f"a Ray worker died while starting its engine (out of memory?): {first[:300]}; finished items are written, rerun the same command to resume") from None
    finally:
        data_ctx.enable_progress_bars, data_ctx.max_errored_blocks = saved
    return done, failed


def raise_failures(indices: list[int], done: dict, failed: dict, *, what: str, retries: int, describe=str) -> None:
    """One clear line for the items that did not finish (a bug keeps its worker's traceback).
    ``describe(index)`` names an item (``shard 3``, ``slice 2 (problems 8-11)``)."""
    bugs = {i: f for i, f in failed.items() if not f["lynx"]}
    if bugs:
        i, f = next(iter(sorted(bugs.items())))
        raise RuntimeError(f"{describe(i)} failed in its Ray worker:\n{f['message']}")
    if failed:
        i, f = next(iter(sorted(failed.items())))
        others = f" (and {len(failed) - 1} more {what}s)" if len(failed) > 1 else ""
        raise WorkFailed(f"{describe(i)}{others}: {f['message']}; finished {what}s are written, fix it and rerun the same command to resume")
    lost = [i for i in indices if i not in done]
    if lost:
        names = ", ".join(describe(i) for i in lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        raise WorkFailed(
            f"{names}: the Ray worker died on every one of {retries + 1} attempts (--ray-retries {retries}; out of memory?); "
            f"the other {what}s are written, rerun the same command to retry"
        )

"""``lynx collect --ray``: a collection's shards on a Ray cluster, written into the one folder.

The standard Ray batch-inference pattern: a Ray Data dataset of shard indices mapped by a pool
of stateful actors, each holding one lynx engine (:class:`~lynx.collect.pipeline.ShardRunner`)
for its lifetime. The driver checks the options, writes the manifest, holds the folder's lock
and lists the unfinished shards; each actor collects whole shards and writes them atomically
under their own index, so names never collide, a re-run skips finished shards, and a shard that
was being collected when its worker died is collected again when Ray Data restarts the actor and
retries the task (its defaults for actor pools). Rows equal a single-process collection's: every
rollout is seeded by (seed, problem, sample) alone.

Ray is optional (``pip install "lynx[ray]"``). ``address`` None starts a local Ray; ``"auto"``
or ``ray://...`` attaches to a running cluster (``RAY_ADDRESS`` is honoured by Ray itself).
"""

from __future__ import annotations

import time
from pathlib import Path

from lynx.collect.pipeline import ModelFiles, ShardProgress, ShardRunner, check_options, finish_summary, open_collection, pending_shards
from lynx.config import CollectConfig
from lynx.errors import EngineUnavailable, InvalidInput
from lynx.models import resolve_model
from lynx.store.folders import exclusive_writer
from lynx.store.shards import completed_shards


class ShardWorker:
    """A Ray Data actor: one engine, whole shards (a batch is a few shard indices)."""

    def __init__(self, cfg: CollectConfig, before_write=None):
        import os

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the hook's recorded features are read in-process
        self.runner = ShardRunner(cfg)
        self.out, self.before_write = Path(cfg.out), before_write

    def __call__(self, batch: dict) -> dict:
        rows = [self.runner.run(int(i), self.out, self.before_write) for i in batch["shard"]]
        return {k: [r[k] for r in rows] for k in ("shard", "rollouts", "cues", "generation_seconds", "labelling_seconds")}


def collect_on_ray(cfg: CollectConfig, workers: int = 2, address: str | None = None, *, cpus_per_worker: float = 1.0,
                   gpus_per_worker: float = 0.0, before_write=None) -> dict:
    """Run (or resume) ``cfg``'s collection on ``workers`` Ray actors; returns the summary
    ``lynx collect`` prints (plus ``ray_workers``, ``wall_seconds``).

    ``before_write(index)`` runs in the worker just before a shard is written (fault injection)."""
    try:
        import ray
    except ImportError:
        raise EngineUnavailable('Ray is not installed: pip install "lynx[ray]" (or run lynx collect without --ray)') from None
    check_options(cfg)
    if workers < 1:
        raise InvalidInput(f"--ray-workers must be at least 1, got {workers}")
    # the driver needs the tokenizer and config only (the manifest, the shard plan), not the weights
    runner = ShardRunner(cfg, engine=ModelFiles(resolve_model(cfg.model), cfg))
    out, manifest = open_collection(cfg, runner)
    t0 = time.monotonic()
    with exclusive_writer(out):
        todo = pending_shards(out, manifest, runner)
        with ShardProgress(sum(runner.shard_jobs(i) for i in todo)) as progress:
            if todo:
                if not ray.is_initialized():
                    ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
                ray.data.DataContext.get_current().enable_progress_bars = False  # lynx's own bar counts shards across the cluster
                ds = ray.data.from_items([{"shard": i} for i in todo], override_num_blocks=len(todo))
                # Ray Data restarts a dead actor and retries its task (max_restarts / max_task_retries -1 by default
                # for actor pools); an exception raised by lynx is not retried: it fails the run, and a rerun resumes
                pool = ray.data.ActorPoolStrategy(size=min(workers, len(todo)), max_tasks_in_flight_per_actor=1)
                mapped = ds.map_batches(ShardWorker, fn_constructor_kwargs={"cfg": cfg, "before_write": before_write}, batch_size=1,
                                        compute=pool, num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None)
                for row in mapped.iter_rows():
                    progress.done(row)
        missing = [i for i in range(runner.n_shards) if i not in completed_shards(out)]
        if missing:
            raise RuntimeError(f"the Ray run ended with shard(s) {missing[:10]} unwritten; rerun the same command to complete them")
    return finish_summary(out, cfg.model, todo, progress.t_gen, progress.t_label) | {"ray_workers": workers,
                                                                                    "wall_seconds": round(time.monotonic() - t0, 1)}

"""``lynx collect --ray``: a collection's shards on a Ray cluster, written into the one folder.

The standard Ray batch-inference pattern: a Ray Data dataset of shard indices mapped by a pool
of stateful actors, each holding one lynx engine (:class:`~lynx.collect.pipeline.ShardRunner`)
for its lifetime (:mod:`lynx.collect.ray_pool`). The driver checks the options, writes the
manifest, holds the folder's lock and lists the unfinished shards; each actor collects whole
shards and writes them atomically under their own index, so names never collide, a re-run skips
finished shards, and a shard that was being collected when its worker died is collected again
on the restarted actor — at most ``retries`` more times, then the run ends naming it (the other
shards written). Rows equal a single-process collection's: every rollout is seeded by (seed,
problem, sample) alone.

Ray is optional (``pip install "lynx[ray]"``). ``address`` None starts a local Ray; ``"auto"``
or ``ray://...`` attaches to a running cluster (``RAY_ADDRESS`` is honoured by Ray itself).
"""

from __future__ import annotations

import time
from pathlib import Path

from lynx.collect.pipeline import ModelFiles, ShardProgress, ShardRunner, check_options, finish_summary, open_collection, pending_shards
from lynx.collect.ray_pool import DEFAULT_RETRIES, check_pool, guarded, map_on_pool, raise_failures, rows_of, start_ray
from lynx.config import CollectConfig
from lynx.models import resolve_model
from lynx.store.folders import exclusive_writer


class ShardWorker:
    """A Ray Data actor: one engine, whole shards (a batch is one shard index)."""

    def __init__(self, cfg: CollectConfig, before_write=None):
        import os

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the hook's recorded features are read in-process
        self.out, self.before_write = Path(cfg.out), before_write
        self.runner: ShardRunner | None = None
        self.failure = guarded(-1, lambda: self._start(cfg))  # an engine that cannot start fails every shard, in one line

    def _start(self, cfg: CollectConfig) -> dict:
        self.runner = ShardRunner(cfg)
        return {}

    def __call__(self, batch: dict) -> dict:
        if self.runner is None:
            return rows_of([self.failure | {"index": int(i)} for i in batch["index"]])
        return rows_of([guarded(int(i), lambda i=i: self.runner.run(int(i), self.out, self.before_write)) for i in batch["index"]])


def collect_on_ray(
    cfg: CollectConfig,
    workers: int = 2,
    address: str | None = None,
    *,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    retries: int = DEFAULT_RETRIES,
    before_write=None,
) -> dict:
    """Run (or resume) ``cfg``'s collection on ``workers`` Ray actors; returns the summary
    ``lynx collect`` prints (plus ``ray_workers``, ``wall_seconds``). A shard whose worker dies is
    retried ``retries`` times on the restarted actor, then the run ends naming it.

    ``before_write(index)`` runs in the worker just before a shard is written (fault injection)."""
    check_options(cfg)
    check_pool(workers, retries)
    # the driver needs the tokenizer and config only (the manifest, the shard plan), not the weights
    runner = ShardRunner(cfg, engine=ModelFiles(resolve_model(cfg.model), cfg))
    out, manifest = open_collection(cfg, runner)
    t0 = time.monotonic()
    with exclusive_writer(out):
        todo = pending_shards(out, manifest, runner)
        with ShardProgress(sum(runner.shard_jobs(i) for i in todo)) as progress:
            ray = start_ray(address) if todo else None
            done, failed = map_on_pool(
                ray,
                todo,
                ShardWorker,
                {"cfg": cfg, "before_write": before_write},
                workers=workers,
                retries=retries,
                cpus=cpus_per_worker,
                gpus=gpus_per_worker,
                on_result=lambda _i, res: progress.done(res),
            )
        raise_failures(todo, done, failed, what="shard", retries=retries, describe=lambda i: f"shard {i}")
    return finish_summary(out, cfg.model, todo, progress.t_gen, progress.t_label) | {"ray_workers": workers, "wall_seconds": round(time.monotonic() - t0, 1)}

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

from lynx.collect.pipeline import ShardRunner, check_options, console, finish_summary, open_collection, progress_bar
from lynx.config import CollectConfig
from lynx.errors import EngineUnavailable, InvalidInput
from lynx.store.folders import exclusive_writer
from lynx.store.manifest import write_manifest
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
    runner = ShardRunner(cfg, engine=_PlanOnly(cfg))
    out, manifest = open_collection(cfg, runner)
    t0 = time.monotonic()
    with exclusive_writer(out):
        write_manifest(out, manifest)
        done = completed_shards(out)
        todo = [i for i in range(runner.n_shards) if i not in done]
        if done:
            console.print(f"resuming: {len(done)} of {runner.n_shards} shards already complete")
        t_gen = t_label = 0.0
        if todo:
            if not ray.is_initialized():
                ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ds = ray.data.from_items([{"shard": i} for i in todo], override_num_blocks=len(todo))
            # Ray Data restarts a dead actor and retries its task (max_restarts / max_task_retries -1 by default
            # for actor pools); an exception raised by lynx is not retried: it fails the run, and a rerun resumes
            pool = ray.data.ActorPoolStrategy(size=min(workers, len(todo)), max_tasks_in_flight_per_actor=1)
            mapped = ds.map_batches(ShardWorker, fn_constructor_kwargs={"cfg": cfg, "before_write": before_write}, batch_size=1,
                                    compute=pool, num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None)
            with progress_bar() as bar:
                task = bar.add_task("collect", total=sum(runner.shard_jobs(i) for i in todo), rate=0.0, cues=0)
                n_cues = 0
                for row in mapped.iter_rows():
                    t_gen += row["generation_seconds"]
                    t_label += row["labelling_seconds"]
                    n_cues += row["cues"]
                    done_now = bar.tasks[0].completed + row["rollouts"]
                    bar.update(task, advance=row["rollouts"], cues=n_cues, rate=done_now / max(1e-9, time.monotonic() - t0))
        missing = [i for i in range(runner.n_shards) if i not in completed_shards(out)]
        if missing:
            raise RuntimeError(f"the Ray run ended with shard(s) {missing[:10]} unwritten; rerun the same command to complete them")
    return finish_summary(out, cfg.model, todo, t_gen, t_label) | {"ray_workers": workers, "wall_seconds": round(time.monotonic() - t0, 1)}


class _PlanOnly:
    """The tokenizer and model config of ``cfg.model`` without its weights (the driver's view)."""

    def __init__(self, cfg: CollectConfig):
        from transformers import AutoConfig, AutoTokenizer

        from lynx.models import ModelNotFound, quiet_hub, resolve_model

        ref = resolve_model(cfg.model)
        try:
            with quiet_hub():
                self.tokenizer = AutoTokenizer.from_pretrained(ref.path)
                self.config = AutoConfig.from_pretrained(ref.path)
        except OSError as e:
            raise ModelNotFound(f"cannot load model {ref.name!r}: {str(e).splitlines()[0]}") from None
        self.cfg = cfg

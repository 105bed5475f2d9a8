"""``lynx collect --ray``: a collection's shards on a local Ray cluster (2 workers on the 2 cores)
give exactly the rows of a single-process collection — greedy and sampled — a worker killed
mid-shard loses and duplicates nothing, and a rerun resumes instead of redoing."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

#: 20 problems in 4 shards: what the equality, kill and resume checks need (sizes do not change what they assert)
BASE = {"model": "organism", "dataset": "organism:train:20", "shard_size": 5, "engine": "hf", "answer_tokens": 16}

#: the run must end rather than wait on Ray's own long retry defaults: 16 s alone, 290 s once in CI
#: with three test workers and vLLM engines on 2 cores (pytest-timeout, 900 s, catches a real hang)
ENDS_WITHIN_S = 600


def _rows(folder: Path, what: str):
    from lynx.store.shards import read_folder

    keys = [("problem_id", "ascending"), ("sample_id", "ascending")] + ([("cue_index", "ascending")] if what == "cues" else [])
    return read_folder(folder, what).sort_by(keys)


def _collect_with_a_killed_worker(root: Path, temperature: float) -> Path:
    """A single-process collection and a Ray one whose worker dies holding shard 1; checks they
    hold the same rows (features included), none lost, none twice. Returns the Ray folder."""
    from lynx.collect.distributed import collect_on_ray
    from lynx.collect.pipeline import collect
    from lynx.config import CollectConfig

    collect(CollectConfig(out=root / "single", temperature=temperature, **BASE))
    marker = root / "killed"

    def kill_once(index):  # the worker dies while holding shard 1, before writing it
        if index == 1 and not marker.exists():
            marker.write_text("killed")
            os._exit(1)

    summary = collect_on_ray(CollectConfig(out=root / "ray", temperature=temperature, **BASE), workers=2, before_write=kill_once)
    assert marker.exists() and summary["ray_workers"] == 2 and summary["problems"] == 20
    for what in ("cues", "traces"):
        single, distributed = _rows(root / "single", what), _rows(root / "ray", what)
        assert single.num_rows == distributed.num_rows and single.equals(distributed), what  # features included
    keys = list(zip(*(_rows(root / "ray", "traces").column(c).to_pylist() for c in ("problem_id", "sample_id")), strict=True))
    assert len(keys) == len(set(keys)) == 20  # no duplicate, none missing
    return root / "ray"


@pytest.fixture(scope="module")
def greedy_ray_collection(local_ray, tmp_path_factory):
    """The greedy killed-worker collection, made once: its own test checks it, and the resume
    test starts from a copy of it (a second full Ray collection would check nothing more)."""
    return _collect_with_a_killed_worker(tmp_path_factory.mktemp("ray-greedy"), 0.0)


def test_ray_collection_equals_single_process_and_survives_a_killed_worker_greedy(greedy_ray_collection):
    assert (greedy_ray_collection / "manifest.json").exists()  # its checks ran in the fixture


def test_ray_collection_equals_single_process_and_survives_a_killed_worker_sampled(local_ray, tmp_path):
    _collect_with_a_killed_worker(tmp_path, 0.6)


def test_a_ray_rerun_resumes_the_missing_shards_only(greedy_ray_collection, tmp_path):
    import shutil

    from lynx.collect.distributed import collect_on_ray
    from lynx.config import CollectConfig

    shutil.copytree(greedy_ray_collection, tmp_path / "ray")
    cfg = CollectConfig(out=tmp_path / "ray", temperature=0.0, **BASE)
    (tmp_path / "ray" / "shard-00002.cues.parquet").unlink()  # as if its worker never finished it
    (tmp_path / "ray" / "shard-00002.traces.parquet").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("shard-*.parquet")}
    summary = collect_on_ray(cfg, workers=2)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("shard-*.parquet")}
    assert summary["rollouts"] == 20 and "shard-00002.traces.parquet" in after
    assert all(after[name] == t for name, t in before.items())  # finished shards untouched
    assert _rows(tmp_path / "ray", "cues").equals(_rows(greedy_ray_collection, "cues"))  # the redone shard is the same


def test_a_shard_that_kills_its_worker_every_time_ends_the_run_in_one_line(local_ray, tmp_path):
    """Ray Data alone would restart the worker and retry the shard forever; lynx bounds it
    (``retries``), names the shard, and the other shards are written."""
    import time

    from lynx.collect.distributed import collect_on_ray
    from lynx.collect.ray_pool import WorkFailed
    from lynx.config import CollectConfig

    attempts = tmp_path / "attempts"

    def always_die(index):
        if index == 1:
            with attempts.open("a") as f:
                f.write("x")
            os._exit(1)

    cfg = CollectConfig(out=tmp_path / "ray", temperature=0.0, **(BASE | {"dataset": "organism:train:12", "shard_size": 4, "max_new_tokens": 150}))
    t = time.monotonic()
    with pytest.raises(WorkFailed, match=r"shard 1: the Ray worker died on every one of 3 attempts \(--ray-retries 2; .*rerun"):
        collect_on_ray(cfg, workers=2, retries=2, before_write=always_die)
    assert attempts.read_text() == "xxx" and time.monotonic() - t < ENDS_WITHIN_S
    assert sorted(p.name for p in (tmp_path / "ray").glob("shard-*.traces.parquet")) == ["shard-00000.traces.parquet", "shard-00002.traces.parquet"]


def test_collect_ray_options_refuse_bad_input_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from lynx.cli import app

    r = CliRunner().invoke(app, ["collect", "--model", "organism", "--dataset", "organism:train:4", "--out", str(tmp_path / "x"), "--ray-address", "auto"])
    assert r.exit_code == 2 and "--ray-address needs --ray" in r.output
    r = CliRunner().invoke(app, ["collect", "--model", "organism", "--dataset", "organism:train:4", "--out", str(tmp_path / "y"), "--ray", "--ray-workers", "0"])
    assert r.exit_code == 2 and "Traceback" not in r.output


@pytest.mark.vllm
def test_ray_collection_on_the_vllm_engine_equals_single_process(local_ray, tmp_path):
    """One CPU vLLM engine per Ray worker (in-process engine core, as lynx collect needs). Every
    column is equal except the hidden states, which agree to float rounding: vLLM's CPU kernels
    round differently with the batch's composition (a worker's batch is one shard; the single
    process's is one shard too, but next to other requests in its KV cache)."""
    pytest.importorskip("vllm")
    from lynx.collect.distributed import collect_on_ray
    from lynx.collect.pipeline import collect
    from lynx.config import CollectConfig

    base = BASE | {"engine": "vllm", "dataset": "organism:train:20"}
    collect(CollectConfig(out=tmp_path / "single", temperature=0.0, **base))
    collect_on_ray(CollectConfig(out=tmp_path / "ray", temperature=0.0, **base), workers=2)
    import numpy as np

    assert _rows(tmp_path / "single", "traces").equals(_rows(tmp_path / "ray", "traces"))
    single, distributed = _rows(tmp_path / "single", "cues"), _rows(tmp_path / "ray", "cues")
    assert single.num_rows == distributed.num_rows > 0
    for col in single.column_names:
        a, b = single.column(col).to_pylist(), distributed.column(col).to_pylist()
        if col.startswith("features_"):
            np.testing.assert_allclose(np.array(b), np.array(a), rtol=0, atol=1e-5)
        else:
            assert a == b, col

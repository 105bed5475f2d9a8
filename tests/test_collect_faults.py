"""Collection under faults: rows depend only on (seed, problem, sample) — never on the batch
size, the resume point or the engine's batching — and a run killed with SIGKILL at random
points, then resumed, ends with exactly the rows of an uninterrupted run: none lost, none
duplicated. (A resume with another --batch-size used to mix two samplings.)"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lynx.collect.pipeline import CollectConfig, collect
from lynx.store.shards import read_folder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
KEYS = ["problem_id", "sample_id", "cue_index"]


def _rows(folder: Path) -> tuple[pa.Table, pa.Table]:
    cues, traces = read_folder(folder, "cues"), read_folder(folder, "traces")
    return cues.sort_by([(k, "ascending") for k in KEYS]), traces.sort_by([(k, "ascending") for k in KEYS[:2]])


def assert_same_rows(a: Path, b: Path) -> None:
    (ca, ta), (cb, tb) = _rows(a), _rows(b)
    assert ta.to_pylist() == tb.to_pylist()
    feats = [c for c in ca.column_names if c.startswith("features_")]
    plain = [c for c in ca.column_names if c not in feats]
    assert ca.select(plain).to_pylist() == cb.select(plain).to_pylist()
    for c in feats:
        np.testing.assert_allclose(np.stack(ca.column(c).to_numpy(zero_copy_only=False)), np.stack(cb.column(c).to_numpy(zero_copy_only=False)), atol=1e-4)


def test_batch_size_never_changes_the_rows(tmp_path):
    """Sampled rollouts (T = 0.6) with batch sizes 1, 7 and 64: identical rows."""
    common = dict(model="organism", dataset="organism:train:10", engine="hf", max_new_tokens=160, answer_tokens=16, shard_size=10, seed=3)
    for bs in (1, 7, 64):
        collect(CollectConfig(out=tmp_path / f"bs{bs}", batch_size=bs, **common))
    assert _rows(tmp_path / "bs1")[0].num_rows >= 10
    assert_same_rows(tmp_path / "bs1", tmp_path / "bs7")
    assert_same_rows(tmp_path / "bs1", tmp_path / "bs64")


def _collect_cmd(out: Path, engine: str, batch_size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lynx.cli",
        "collect",
        "--model",
        "organism",
        "--dataset",
        "organism:train:24",
        "--engine",
        engine,
        "--out",
        str(out),
        "--shard-size",
        "4",
        "--batch-size",
        str(batch_size),
        "--max-new-tokens",
        "200",
        "--answer-tokens",
        "16",
        "--seed",
        "5",
    ]


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_sigkill_at_random_points_then_resume_loses_and_duplicates_nothing(tmp_path, engine):
    if engine == "vllm":
        pytest.importorskip("vllm")
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1"}
    ref = tmp_path / "uninterrupted"
    subprocess.run(_collect_cmd(ref, engine, 8), check=True, env=env, capture_output=True, cwd=ROOT)
    out, rng, kills, n_shards = tmp_path / "killed", random.Random(7), 0, 6  # 24 problems, 4 per shard
    done = lambda: len(list(out.glob("shard-*.traces.parquet")))  # noqa: E731
    # kill at random points of the work (after a random number of further shards, plus a random
    # delay that lands anywhere in the next shard, its writing included), resuming each time with
    # another batch size, until a run completes
    for _attempt in range(4):
        proc = subprocess.Popen(_collect_cmd(out, engine, rng.choice([1, 3, 8])), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = done() + rng.randint(0, 1)
        if done() < n_shards - 1:
            while proc.poll() is None and done() < target:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None and done() < n_shards:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if proc.returncode == 0:
            break
    else:
        subprocess.run(_collect_cmd(out, engine, 8), check=True, env=env, capture_output=True, cwd=ROOT)
    assert kills >= 2
    assert_same_rows(ref, out)
    ca, _ = _rows(out)
    keys = list(zip(*(ca.column(k).to_pylist() for k in KEYS), strict=True))
    assert len(keys) == len(set(keys))  # no duplicated row
    assert not list(out.glob("*.tmp"))  # no half-written file left under a real name

"""``lynx eval --ray``: an evaluation's problems in slices on a local Ray cluster (2 workers on the
2 cores) give the table and samples of a single-process evaluation — greedy and sampled, every
method of the plan — a worker killed mid-slice loses and duplicates nothing, a rerun resumes,
a slice whose worker dies on every attempt ends the run in bounded time with one clear line."""

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from lynx.models import ORGANISM_PROBE_DIR

pytestmark = pytest.mark.slow

PROBE = ORGANISM_PROBE_DIR
#: every method of the plan; default budgets, so the run takes two passes (vanilla's mean over all problems)
BASE = {"probe": str(PROBE), "n_problems": 6, "alphas": (0.1,), "engine": "hf", "deer_thresholds": (0.95,), "dynasor_k": (2,), "max_new_tokens": 100}
#: the lynx exit audit's fields that differ between any two runs (a request tag, a clock) or to float rounding (the
#: probe's score: a slice batches other problems together than the whole run)
VOLATILE = ("tag", "time", "score")

#: the run must end rather than wait on Ray's own long retry defaults: 16 s alone, 290 s once in CI
#: with three test workers and vLLM engines on 2 cores (pytest-timeout, 900 s, catches a real hang)
ENDS_WITHIN_S = 600


def _same_samples(single: Path, distributed: Path) -> None:
    a, b = pd.read_parquet(single / "samples.parquet"), pd.read_parquet(distributed / "samples.parquet")
    cols = [c for c in a.columns if c != "exit"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    for x, y in zip(a.exit, b.exit, strict=True):
        assert pd.isna(x) == pd.isna(y)
        if not pd.isna(x):
            x, y = json.loads(x), json.loads(y)
            assert {k: v for k, v in x.items() if k not in VOLATILE} == {k: v for k, v in y.items() if k not in VOLATILE}
            assert x["score"] == pytest.approx(y["score"], abs=1e-5)


def _same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in a.columns if c != "seconds"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


@pytest.fixture(scope="module")
def greedy(local_ray, tmp_path_factory):
    """The single-process evaluation and the Ray one (a worker killed once, before writing slice 1)."""
    from lynx.config import EvalConfig
    from lynx.evaluate import evaluate
    from lynx.evaluate.distributed import evaluate_on_ray

    root = tmp_path_factory.mktemp("eval-ray")
    single = evaluate(EvalConfig(out=root / "single", temperature=0.0, **BASE))
    marker = root / "killed"

    def kill_once(index):
        if index == 1 and not marker.exists():
            marker.write_text("killed")
            os._exit(1)

    distributed = evaluate_on_ray(EvalConfig(out=root / "ray", temperature=0.0, **BASE), workers=2, slice_size=2, before_write=kill_once)
    assert marker.exists()
    return single, distributed


def test_ray_eval_equals_single_process_and_survives_a_killed_worker(greedy):
    single, distributed = greedy
    methods = list(single["table"].method)  # the plan's every method (context-only too when the probe ships its baseline)
    assert methods[0] == "vanilla" and {"lynx", "oracle", "budget", "deer", "dynasor"} <= set(methods) and methods.count("budget") == 3
    _same_table(single["table"], distributed["table"])
    _same_samples(single["out"], distributed["out"])
    samples = pd.read_parquet(distributed["out"] / "samples.parquet")
    assert len(samples) == 6 * len(methods) and not samples.duplicated(["method", "setting", "problem_id"]).any()
    meta = json.loads((distributed["out"] / "eval.json").read_text())
    assert meta["seconds"] == "summed over workers" and meta["ray_workers"] == 2 and meta["slices"] == 3 and meta["wall_seconds"] > 0
    for f in ("results.csv", "results.parquet", "results.md", "pareto.png"):
        assert (distributed["out"] / f).stat().st_size > 0
    assert (distributed["out"] / "results.md").read_text().splitlines()[0] == (single["out"] / "results.md").read_text().splitlines()[0]


def test_a_ray_eval_rerun_resumes_the_missing_slices_only(greedy, tmp_path):
    from lynx.config import EvalConfig
    from lynx.errors import InvalidInput
    from lynx.evaluate.distributed import evaluate_on_ray

    out = tmp_path / "ray"
    shutil.copytree(greedy[1]["out"], out)
    (out / "slices" / "slice-00002.parquet").unlink()  # as if its worker never finished it
    before = {p.name: p.stat().st_mtime_ns for p in (out / "slices").glob("*.parquet")}
    res = evaluate_on_ray(EvalConfig(out=out, temperature=0.0, **BASE), workers=1)  # another worker count: the folder's slices
    after = {p.name: p.stat().st_mtime_ns for p in (out / "slices").glob("*.parquet")}
    assert "slice-00002.parquet" in after and all(after[name] == t for name, t in before.items())  # finished slices untouched
    _same_table(greedy[0]["table"], res["table"])
    with pytest.raises(InvalidInput, match=r"holds slices of another evaluation \(differs in: temperature\)"):
        evaluate_on_ray(EvalConfig(out=out, temperature=0.6, **BASE), workers=2)


def test_ray_eval_equals_single_process_sampled(local_ray, tmp_path):
    from lynx.config import EvalConfig
    from lynx.evaluate import evaluate
    from lynx.evaluate.distributed import evaluate_on_ray

    cfg = BASE | {"baselines": ("vanilla", "budget", "dynasor"), "budgets": (40,)}  # given budgets: one pass
    single = evaluate(EvalConfig(out=tmp_path / "single", temperature=0.6, **cfg))
    distributed = evaluate_on_ray(EvalConfig(out=tmp_path / "ray", temperature=0.6, **cfg), workers=2, slice_size=2)
    _same_table(single["table"], distributed["table"])
    _same_samples(tmp_path / "single", tmp_path / "ray")
    assert not list((tmp_path / "ray" / "slices").glob("vanilla-*"))  # no first pass without default budgets


def test_a_slice_that_kills_its_worker_every_time_ends_the_run_in_one_line(local_ray, tmp_path):
    from lynx.collect.ray_pool import WorkFailed
    from lynx.config import EvalConfig
    from lynx.evaluate.distributed import evaluate_on_ray

    attempts = tmp_path / "attempts"

    def always_die(index):
        if index == 1:
            with attempts.open("a") as f:
                f.write("x")
            os._exit(1)

    cfg = EvalConfig(out=tmp_path / "ray", temperature=0.0, **(BASE | {"alphas": (), "baselines": ("vanilla",)}))
    t = time.monotonic()
    with pytest.raises(WorkFailed, match=r"slice 1 \(problems 2-3\): the Ray worker died on every one of 2 attempts .*rerun"):
        evaluate_on_ray(cfg, workers=2, slice_size=2, retries=1, before_write=always_die)
    assert attempts.read_text() == "xx" and time.monotonic() - t < ENDS_WITHIN_S
    assert sorted(p.name for p in (tmp_path / "ray" / "slices").glob("*.parquet")) == ["slice-00000.parquet", "slice-00002.parquet"]


def test_eval_ray_options_refuse_bad_input_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from lynx.cli import RAY_RETRIES, app
    from lynx.collect.ray_pool import DEFAULT_RETRIES

    assert RAY_RETRIES == DEFAULT_RETRIES
    base = ["eval", "--probe", str(PROBE), "--n-problems", "4", "--engine", "hf"]
    for extra, message in (
        (["--ray-address", "auto"], "--ray-address needs --ray"),
        (["--ray-slice", "3"], "--ray-slice needs --ray"),
        (["--ray", "--monitor", '{"audit_fraction": 0.1}'], "--monitor and --audit watch one engine's requests"),
        (["--ray", "--ray-retries", "-1"], None),
    ):
        r = CliRunner().invoke(app, base + ["--out", str(tmp_path / "x")] + extra)
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        if message is not None:
            assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output

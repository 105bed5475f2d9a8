"""The built wheel works on its own, outside the repository (``.ci/check_wheel``), and the tiny
``lynx demo`` it runs there goes end to end on vLLM: every stage runs, and ``--json`` carries
context-only rows at the same alphas as lynx, compared pairwise.

Why one test: the demo is the most expensive single command of the suite (~4.5 min on 2 cores);
running it from the installed wheel checks the package data (organism, its probe), the console
script and the declared dependencies in the same run, instead of a second demo in the checkout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.repo]  # ~8 min on 2 cores: install, demo, the quick tests
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    pytest.importorskip("vllm", reason="the demo's main engine")
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(["bash", str(ROOT / ".ci" / "check_wheel"), str(out)], capture_output=True, text=True, env=os.environ | {"PY": sys.executable}, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return out, r.stdout


def test_the_wheel_runs_the_shipped_probe_by_name_and_passes_the_quick_tests(checked):
    out, log = checked
    assert "exited at cue" in (out / "run.txt").read_text() or "thinking tokens" in (out / "run.txt").read_text()
    tail = (out / "pytest.log").read_text().strip().splitlines()[-1]
    assert " passed" in tail and "failed" not in tail and "error" not in tail, tail


def test_tiny_demo_runs_every_stage_and_reports_the_context_only_baseline(checked):
    out, _ = checked
    summary = json.loads((out / "demo" / "demo.json").read_text())
    assert summary["engine"] == "vllm"
    assert set(summary["stage_seconds"]) >= {"collect", "train", "calibrate", "eval test", "recalibrate"}
    test = summary["evaluations"]["test"]
    alphas = {m: sorted(row["alpha"] for row in test["table"] if row["method"] == m) for m in ("lynx", "context-only")}
    assert alphas["lynx"] == alphas["context-only"] == [0.05, 0.1, 0.2, 0.3, 0.5]
    cmp = test["context_comparison"]
    assert [c["alpha"] for c in cmp] == alphas["lynx"]
    for c in cmp:  # each difference is the two rows' own, with its paired interval
        ly = next(row for row in test["table"] if row["method"] == "lynx" and row["alpha"] == c["alpha"])
        assert c["saving_delta"] == pytest.approx(ly["saving"] - c["context_saving"], abs=1e-9) and c["saving_delta_ci"] >= 0  # the JSON rounds to 1e-10
    checks = {a["check"]: a["measured"] for a in test["acceptance"]}
    assert "difference" in checks["saving >= the context-only baseline's (the hidden state adds something)"]
    rows = json.loads((out / "demo.stdout").read_text().strip().splitlines()[-1])  # --json: the tables' rows, one JSON line at the end of stdout
    assert {row["method"] for row in rows} >= {"vanilla", "lynx", "context-only"}

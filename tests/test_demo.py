"""``lynx demo`` end to end at its tiny size on vLLM: every stage runs, and ``--json`` carries
what issue 17 asks of it — context-only rows at the same alphas as lynx, compared pairwise."""

import json

import pytest
from typer.testing import CliRunner

from lynx.cli import app

pytestmark = [pytest.mark.vllm, pytest.mark.slow]  # ~4.5 min on 2 cores
runner = CliRunner()


def test_tiny_demo_runs_every_stage_and_reports_the_context_only_baseline(tmp_path):
    pytest.importorskip("vllm", reason="the demo's main engine")
    r = runner.invoke(app, ["demo", "--size", "tiny", "--engine", "vllm", "--json", "--out", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output[-2000:]
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
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
    rows = json.loads(r.stdout.strip().splitlines()[-1])  # --json: the tables' rows, one JSON line at the end of stdout
    assert {row["method"] for row in rows} >= {"vanilla", "lynx", "context-only"}

"""The quick loop (``pytest -m "not slow"``) works where vLLM is not installed: no test module
imports vLLM unguarded, and lynx's vLLM plugin builds its wrapper classes only on first use."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.repo  # reads the checkout, not the installed package

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # collects the whole suite in a subprocess (~14 s)
def test_quick_loop_collects_without_vllm(tmp_path):
    hidden = tmp_path / "vllm"
    hidden.mkdir()
    (hidden / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'vllm\'", name="vllm")\n')
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "error" not in r.stdout.lower().split("collected")[-1], r.stdout[-2000:]
    # and the plugin module itself imports (its wrapper classes are built lazily)
    r = subprocess.run(
        [sys.executable, "-c", "import lynx.engines.vllm_plugin.model, lynx.engines.vllm_engine, lynx.cli"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_missing_vllm_is_one_line_not_a_traceback(tmp_path):
    hidden = tmp_path / "vllm"
    hidden.mkdir()
    (hidden / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'vllm\'", name="vllm")\n')
    r = subprocess.run(
        [sys.executable, "-m", "lynx.cli", "run", "--engine", "vllm", "--prompt", "Compute 1 + 2."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0 and "vLLM is not usable here" in r.stderr and "Traceback" not in r.stderr

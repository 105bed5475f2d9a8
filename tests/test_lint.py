"""The code passes the project's linter and formatter configuration (``[tool.ruff]`` in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.repo  # reads the checkout, not the installed package

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["lynx", "tests", "benchmarks"]


def test_ruff_check_is_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", *SOURCES], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_applied():
    """``ruff format`` is the project's formatter: a file it would change fails here (run ``ruff format lynx tests benchmarks``)."""
    r = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", *SOURCES], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr

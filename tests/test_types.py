"""The package type-checks: ``mypy`` (configured by ``[tool.mypy]`` in pyproject.toml) is clean on ``lynx/``.

Why here: lynx ships its type information (``lynx/py.typed``), so the annotations are part of the
interface and must stay true. The heavy libraries (torch, transformers, vLLM, Ray, ...) are treated
as untyped and not followed, which keeps the check in the quick loop (~10 s cold, under a second
with mypy's cache in ``.mypy_cache``).
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.repo  # reads the checkout, not the installed package

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_is_clean():
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr

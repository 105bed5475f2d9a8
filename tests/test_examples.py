"""Every code example of the README and the docs runs, or says why it cannot run here.

Why: nothing used to run the documents' code, and the README's own Python example failed on the
shipped probe. Examples are the first API a user meets; they must not drift from it.

An *example* is a fenced block tagged ``bash`` / ``sh`` / ``shell`` / ``python`` in a Markdown file
of the repository (README, docs/, probes/, the organism's model cards). An HTML comment on the line
before the fence says how it is checked:

* no marker: it **runs** here. The blocks of one document run in order in one scratch folder,
  which holds a copy of the shipped probe at ``probes/organism`` (so examples that add
  calibrations never touch the shipped one) and the repository's ``benchmarks/``. Shell blocks run
  under ``bash -eu -o pipefail`` with lynx's environment on ``PATH``; Python blocks run in a fresh
  interpreter. Problem counts and repeats are shortened (``SHORTEN``) to at most
  ``LYNX_EXAMPLE_PROBLEMS`` problems (default 12), ``LYNX_EXAMPLE_REPEATS`` repeats (default 1) and
  a benchmark's ``--max-tokens`` to ``LYNX_EXAMPLE_TOKENS`` (default 96), and the overhead benchmark
  runs its engines without torch.compile (``LYNX_BENCH_EAGER=1``),
  so the documents keep their real sizes and the suite stays in its time.
* ``<!-- example: gpu -->``: needs a GPU (vLLM's GPU build, a real reasoning model's size).
* ``<!-- example: hub -->``: needs a download from the Hugging Face hub (models, data sets).
* ``<!-- example: run-by PATH -->``: is exactly what that test or CI script runs (``make test`` is
  ``.ci/run``; a served engine is a test's fixture); PATH must exist (checked).

A fence with no language is text (a folder listing); one whose lines read as commands (``lynx``,
``python``, ``pip``, ``make``, ``vllm``) is refused: tag it ``bash`` so it runs, or ``text`` if it
is a synopsis with ``[optional]`` parts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lynx.models import ORGANISM_PROBE_DIR

pytestmark = pytest.mark.repo  # reads the checkout, not the installed package

ROOT = Path(__file__).resolve().parents[1]
RUN_LANGS = {"bash", "sh", "shell", "python"}
MARKERS = ("gpu", "hub", "run-by")
COMMAND_START = re.compile(r"^\s*(lynx|python|pip|make|vllm)\s")
PROBLEMS = int(os.environ.get("LYNX_EXAMPLE_PROBLEMS", "12"))
REPEATS = int(os.environ.get("LYNX_EXAMPLE_REPEATS", "1"))
TOKENS = int(os.environ.get("LYNX_EXAMPLE_TOKENS", "96"))  # a benchmark's --max-tokens


def _at_most(limit: int):
    return lambda m: f"{m.group(1)}{min(int(m.group(2)), limit)}"


#: (pattern, replacement): how an example's sizes are shortened before it runs
SHORTEN = [
    (re.compile(r"(organism:(?:train|calibration|test|transfer):)(\d+)"), _at_most(PROBLEMS)),
    (re.compile(r"(--n-problems[ =])(\d+)"), _at_most(PROBLEMS)),
    (re.compile(r"(--n[ =])(\d+)"), _at_most(PROBLEMS)),
    (re.compile(r"(--repeats[ =])(\d+)"), _at_most(REPEATS)),
    (re.compile(r"(--max-tokens[ =])(\d+)"), _at_most(TOKENS)),
]


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None  # "gpu", "hub", "run-by PATH" or None (runs)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    skip = {".venv", "runs", ".git", "build", "dist", "node_modules", ".pytest_cache", ".mypy_cache"}
    docs = [p for p in ROOT.rglob("*.md") if not (set(p.relative_to(ROOT).parts) & skip) and not p.is_symlink()]
    return sorted(p for p in docs if not any(part.endswith(".egg-info") for part in p.parts) and "probes/organism" not in str(p.relative_to(ROOT)))


FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*example:\s*(.+?)\s*-->\s*$")


def blocks(doc: Path) -> list[Block]:
    lines = doc.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mm = MARKER.match(prev.strip())
        out.append(Block(doc, start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n", mm.group(1) if mm else None))
        i = j + 1
    return out


def shorten(code: str) -> str:
    for pattern, repl in SHORTEN:
        code = pattern.sub(repl, code)
    return code


ALL_BLOCKS = [b for d in documents() for b in blocks(d)]
RUNNABLE_DOCS = sorted({b.doc for b in ALL_BLOCKS if b.lang in RUN_LANGS and b.marker is None})


def test_every_example_is_marked_or_runs():
    """Markers are known, a run-by names something that exists, and no commands hide in untagged fences."""
    problems = []
    for b in ALL_BLOCKS:
        if b.marker is not None:
            kind, _, arg = b.marker.partition(" ")
            if kind not in MARKERS:
                problems.append(f"{b.where}: unknown example marker {b.marker!r} (known: {', '.join(MARKERS)})")
            elif kind == "run-by" and not (ROOT / arg.split("::")[0]).exists():
                problems.append(f"{b.where}: run-by names {arg!r}, which does not exist")
            elif kind == "run-by" and "::" in arg and f"def {arg.split('::')[1]}(" not in (ROOT / arg.split("::")[0]).read_text():
                problems.append(f"{b.where}: run-by names test {arg!r}, which does not exist")
        if b.lang == "" and any(COMMAND_START.match(line) for line in b.code.splitlines()):
            problems.append(f"{b.where}: commands in an untagged fence; tag it bash (it runs) or text (a synopsis)")
    assert not problems, "\n".join(problems)
    assert RUNNABLE_DOCS, "no example runs"


def test_shortening_keeps_commands_and_cuts_sizes():
    code = "lynx collect --dataset organism:train:2000 --n-problems 300 --n 256 --repeats 40 --max-tokens 256 --n-problems 5\n"
    assert shorten(code) == (
        f"lynx collect --dataset organism:train:{min(2000, PROBLEMS)} --n-problems {min(300, PROBLEMS)} --n {min(256, PROBLEMS)} "
        f"--repeats {min(40, REPEATS)} --max-tokens {min(256, TOKENS)} --n-problems {min(5, PROBLEMS)}\n"
    )


@pytest.fixture
def example_env():  # function-scoped: each document is scheduled on its own (pytest -n 2)
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "GIT_DIR": str(ROOT / ".git"),  # examples that read the project's history (an earlier probe) from a scratch folder
        "PYTHONUNBUFFERED": "1",
        "LYNX_BENCH_EAGER": "1",  # benchmarks/vllm_overhead.py without torch.compile: minutes of compiling measure nothing here
    }
    return env


@pytest.mark.slow
@pytest.mark.parametrize("doc", RUNNABLE_DOCS, ids=[str(d.relative_to(ROOT)) for d in RUNNABLE_DOCS])
def test_document_examples_run(doc, tmp_path, example_env):
    work = tmp_path / "work"
    (work / "probes").mkdir(parents=True)
    shutil.copytree(ORGANISM_PROBE_DIR, work / "probes" / "organism")
    (work / "benchmarks").symlink_to(ROOT / "benchmarks")
    for b in blocks(doc):
        if b.lang not in RUN_LANGS or b.marker is not None:
            continue
        code = shorten(b.code)
        cmd = [sys.executable, "-c", code] if b.lang == "python" else ["bash", "-eu", "-o", "pipefail", "-c", code]
        r = subprocess.run(cmd, cwd=work, env=example_env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{b.where} failed (exit {r.returncode}):\n{code}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-4000:]}"

"""The organism's problem family: chains of single-digit additions and subtractions.

Why this family: every step is small enough for a few-million-parameter transformer to
learn, yet the final answer of a 3-10 step chain cannot be produced in one forward pass,
so thinking is necessary and an early exit *before* the chain is finished is unsafe.
Steps that cross a tens boundary ("carry"/"borrow" steps) are where the organism makes
its mistakes, like a student who forgets the carry.

Splits are disjoint by construction: a problem's split is a pure function of the hash of
its text (buckets 0-79 train, 80-89 calibration, 90-99 test / transfer), so no amount
of sampling can leak a test problem into training.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from lynx.errors import InvalidInput


class _Texted(Protocol):
    @property
    def text(self) -> str: ...


T = TypeVar("T", bound=_Texted)

SPLITS = ("train", "calibration", "test", "transfer")
#: chain lengths of the main family (train / calibration / test) and of the transfer family
MAIN_STEPS = (3, 7)
TRANSFER_STEPS = (8, 9)
_BUCKETS = {"train": range(0, 80), "calibration": range(80, 90), "test": range(90, 100), "transfer": range(90, 100)}
_SPLIT_SEED_OFFSET = {"train": 0, "calibration": 1_000_003, "test": 2_000_003, "transfer": 3_000_017}


@dataclass(frozen=True)
class Step:
    """One operation of a chain: ``before op operand = after``."""

    before: int
    op: str  # "+" or "-"
    operand: int

    @property
    def after(self) -> int:
        return self.before + self.operand if self.op == "+" else self.before - self.operand

    @property
    def carries(self) -> bool:
        """True when the step crosses a tens boundary (where the organism errs)."""
        units = self.before % 10
        return units + self.operand >= 10 if self.op == "+" else units < self.operand

    @property
    def forgot_carry(self) -> int:
        """The wrong result of forgetting the carry/borrow (tens digit unchanged)."""
        return self.after - 10 if self.op == "+" else self.after + 10


@dataclass(frozen=True)
class Problem:
    """A chain problem with an exact integer answer."""

    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def text(self) -> str:
        return "Compute " + str(self.start) + "".join(f" {op} {d}" for op, d in self.ops) + "."

    @property
    def problem_id(self) -> str:
        return "org-" + hashlib.sha256(self.text.encode()).hexdigest()[:12]

    def steps(self, start: int | None = None) -> list[Step]:
        """The chain's steps, optionally re-run from another starting value."""
        value = self.start if start is None else start
        out = []
        for op, d in self.ops:
            step = Step(value, op, d)
            out.append(step)
            value = step.after
        return out

    @property
    def answer(self) -> int:
        return self.steps()[-1].after

    def to_record(self) -> dict:
        return {"id": self.problem_id, "problem": self.text, "answer": str(self.answer)}


def bucket_of(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 100


def random_problem(rng: random.Random, n_steps: int) -> Problem:
    """Draw one chain whose running total stays within 0..99."""
    value = rng.randint(10, 89)
    start = value
    ops = []
    for _ in range(n_steps):
        d = rng.randint(1, 9)
        if value + d > 99:
            op = "-"
        elif value - d < 0:
            op = "+"
        else:
            op = rng.choice("+-")
        ops.append((op, d))
        value = value + d if op == "+" else value - d
    return Problem(start, tuple(ops))


def sample_problems(split: str, n: int, seed: int = 0, steps: tuple[int, int] | None = None) -> list[Problem]:
    """``n`` distinct problems of ``split``, reproducible from ``seed``."""
    if split not in SPLITS:
        raise InvalidInput(f"unknown organism split {split!r}; choose one of {', '.join(SPLITS)}")
    lo, hi = steps or (TRANSFER_STEPS if split == "transfer" else MAIN_STEPS)
    rng = random.Random(seed * 7_919 + _SPLIT_SEED_OFFSET[split])
    return sample_distinct(lambda: random_problem(rng, rng.randint(lo, hi)), _BUCKETS[split], n)


def sample_distinct(draw: Callable[[], T], buckets: range, n: int) -> list[T]:
    """The first ``n`` distinct draws whose text hashes into ``buckets`` (a split): how every
    problem family lynx generates keeps its splits disjoint and reproducible."""
    seen: set[str] = set()
    out: list[T] = []
    while len(out) < n:
        p = draw()
        if p.text in seen or bucket_of(p.text) not in buckets:
            continue
        seen.add(p.text)
        out.append(p)
    return out


def parse_problem(text: str) -> Problem:
    """Inverse of :attr:`Problem.text` (used to grade and rewrite the organism's own traces)."""
    body = text.strip()
    if not body.startswith("Compute ") or not body.endswith("."):
        raise InvalidInput(f"not an organism problem: {text!r}")
    tokens = body[len("Compute ") : -1].split()
    start = int(tokens[0])
    ops = tuple((tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2))
    return Problem(start, ops)

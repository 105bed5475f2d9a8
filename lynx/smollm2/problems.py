"""SmolLM2-reasoner's problem families: natural-language multi-step word problems.

A main problem is a story around one chain of the organism's kind (a start between 10 and
89, then 3-5 single-digit additions and subtractions), told in sentences whose wording is
drawn from several verbs, names and items: "Mia has 23 stickers. She buys 8 more. Then she
gives 5 to a friend. ... How many stickers does Mia have now?". Steps that cross a tens
boundary are where a 135M model slips, as the organism does.

The **transfer** family is another kind of problem: the start is a product ("4 packs with
6 stickers in each"), so the first step is a multiplication the reasoner never saw in
training, followed by a chain of the usual kind.

Splits are disjoint by construction: a problem's split is a pure function of the hash of
its text (buckets 0-79 train, 80-89 calibration, 90-99 test / transfer), as for the organism.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from lynx.errors import InvalidInput
from lynx.organism.problems import Problem, Step, sample_distinct

SPLITS = ("train", "calibration", "test", "transfer")
MAIN_STEPS = (3, 5)
TRANSFER_STEPS = (2, 4)  # additions/subtractions after the product
_BUCKETS = {"train": range(0, 80), "calibration": range(80, 90), "test": range(90, 100), "transfer": range(90, 100)}
_SPLIT_SEED_OFFSET = {"train": 0, "calibration": 1_000_003, "test": 2_000_003, "transfer": 3_000_017}

NAMES = (
    ("Mia", "she"),
    ("Leo", "he"),
    ("Ava", "she"),
    ("Sam", "he"),
    ("Noah", "he"),
    ("Emma", "she"),
    ("Omar", "he"),
    ("Lily", "she"),
    ("Ben", "he"),
    ("Zoe", "she"),
    ("Ravi", "he"),
    ("Nina", "she"),
)
ITEMS = ("stickers", "marbles", "apples", "coins", "books", "shells", "cards", "pencils", "stamps", "cookies", "beads", "toy cars")
#: how a story says "+ d" and "- d" ({d} is the operand)
GAINS = ("buys {d} more", "finds {d} more", "gets {d} from a friend", "wins {d} more", "is given {d} more")
LOSSES = ("gives {d} to a friend", "loses {d}", "sells {d}", "gives away {d}", "uses {d}")
CONNECTIVES = ("Then", "After that,", "Later,", "Next,")


@dataclass(frozen=True)
class WordProblem:
    """One story: who, what, the start (or the product that makes it) and the steps."""

    name: str
    pronoun: str
    item: str
    start: int
    ops: tuple[tuple[str, int, int], ...]  # (op, operand, phrase index)
    packs: tuple[int, int] | None = None  # transfer kind: start = packs[0] * packs[1]

    @property
    def text(self) -> str:
        if self.packs is None:
            parts = [f"{self.name} has {self.start} {self.item}."]
        else:
            parts = [f"{self.name} buys {self.packs[0]} packs of {self.item} with {self.packs[1]} {self.item} in each pack."]
        for i, (op, d, k) in enumerate(self.ops):
            phrase = (GAINS if op == "+" else LOSSES)[k].format(d=d)
            lead = self.pronoun.capitalize() if i == 0 else f"{CONNECTIVES[(k + i) % len(CONNECTIVES)]} {self.pronoun}"
            parts.append(f"{lead} {phrase}.")
        parts.append(f"How many {self.item} does {self.name} have now?")
        return " ".join(parts)

    def phrase(self, i: int) -> str:
        op, d, k = self.ops[i]
        return (GAINS if op == "+" else LOSSES)[k].format(d=d)

    @property
    def problem_id(self) -> str:
        return "smol-" + hashlib.sha256(self.text.encode()).hexdigest()[:12]

    @property
    def chain(self) -> Problem:
        """The story's arithmetic as an organism chain (its steps, carries and slips)."""
        return Problem(self.start, tuple((op, d) for op, d, _ in self.ops))

    def steps(self, start: int | None = None) -> list[Step]:
        return self.chain.steps(start)

    @property
    def answer(self) -> int:
        return self.steps()[-1].after

    def to_record(self) -> dict:
        return {"id": self.problem_id, "problem": self.text, "answer": str(self.answer)}


def random_problem(rng: random.Random, n_steps: int, transfer: bool = False) -> WordProblem:
    """Draw one story whose running total stays within 0..99."""
    name, pronoun = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    packs = None
    if transfer:
        packs = (rng.randint(2, 9), rng.randint(3, 9))
        value = packs[0] * packs[1]
    else:
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
        ops.append((op, d, rng.randrange(len(GAINS) if op == "+" else len(LOSSES))))
        value = value + d if op == "+" else value - d
    return WordProblem(name, pronoun, item, start, tuple(ops), packs)


def sample_problems(split: str, n: int, seed: int = 0, steps: tuple[int, int] | None = None) -> list[WordProblem]:
    """``n`` distinct problems of ``split``, reproducible from ``seed``."""
    if split not in SPLITS:
        raise InvalidInput(f"unknown smollm2 split {split!r}; choose one of {', '.join(SPLITS)}")
    transfer = split == "transfer"
    lo, hi = steps or (TRANSFER_STEPS if transfer else MAIN_STEPS)
    rng = random.Random(seed * 7_919 + _SPLIT_SEED_OFFSET[split] + 17)
    return sample_distinct(lambda: random_problem(rng, rng.randint(lo, hi), transfer=transfer), _BUCKETS[split], n)

"""Problem families with generators: the organism's chains and SmolLM2-reasoner's word problems.

A family is what a model shipped by lynx was taught on; it names the dataset prefix
(``organism:test``, ``smollm2:test``) and samples problems of a split. One place maps a model
name to its family, so the demo, the model cards and the unlabeled prompts of recalibration
agree on which problems a model gets.
"""

from __future__ import annotations

from typing import Any

from lynx.errors import InvalidInput

FAMILIES = ("organism", "smollm2")


def family_of(model: str) -> str:
    """The family of a model name: ``smollm2*`` models get the word problems, any other the chains."""
    return "smollm2" if model.startswith("smollm2") else "organism"


def sample_problems(family: str, split: str, n: int, seed: int = 0) -> list[Any]:
    """``n`` problems of ``split`` of ``family`` (each has ``problem_id``, ``text``, ``answer``)."""
    if family == "organism":
        from lynx.organism.problems import sample_problems as organism

        return list(organism(split, n, seed=seed))
    if family == "smollm2":
        from lynx.smollm2.problems import sample_problems as words

        return list(words(split, n, seed=seed))
    raise InvalidInput(f"unknown problem family {family!r}: use {' or '.join(FAMILIES)}")

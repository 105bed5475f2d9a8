"""Math and multiple-choice grading.

Math answers go through math-verify (symbolic equivalence: ``\\frac{1}{2}`` == ``0.5``,
``x \\in [1,2]`` == ``[1,2]``), the grader the open reasoning-model evaluations use, instead
of a hand-written normaliser. Multiple choice compares the first option letter.
"""

from __future__ import annotations

import re

from lynx.errors import InvalidInput
from lynx.grading.boxed import grade_integer

_LETTER = re.compile(r"\b([A-J])\b")


def _parse(text: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(f"${text}$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=5)


def grade_math(prediction: str | None, gold: str) -> bool:
    """Is the extracted ``prediction`` mathematically equal to ``gold``?"""
    if prediction is None or not prediction.strip():
        return False
    if prediction.strip() == gold.strip():
        return True
    from math_verify import verify

    try:
        g, p = _parse(gold), _parse(prediction)
        return bool(g) and bool(p) and verify(g, p, timeout_seconds=5)
    except Exception:  # math-verify can raise on exotic LaTeX; an unparsable answer is wrong
        return False


def grade_choice(prediction: str | None, gold: str) -> bool:
    """First standalone option letter of the prediction equals the gold letter."""
    if prediction is None:
        return False
    m = _LETTER.search(prediction.upper().replace("\\TEXT{", " "))
    return m is not None and m.group(1) == gold.strip().upper()


def grader_for(kind: str):
    """The grading function for a :class:`lynx.datasets.Record` kind."""
    graders = {"integer": grade_integer, "math": grade_math, "choice": grade_choice}
    if kind not in graders:
        raise InvalidInput(f"no grader for answer kind {kind!r}")
    return graders[kind]

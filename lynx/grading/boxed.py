"""The last brace-matched ``\\boxed{...}`` of a text, and exact-integer grading.

Brace matching (not a regex) because real answers nest braces: ``\\boxed{\\frac{1}{2}}``.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{}`` whose braces close, else None."""
    for m in reversed(list(_BOXED.finditer(text))):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[m.end() : i - 1].strip()
    return None


def grade_integer(prediction: str | None, gold: str | int) -> bool:
    """Exact integer match (the organism's answers); anything unparsable is wrong."""
    if prediction is None:
        return False
    try:
        return int(prediction.strip().replace(",", "")) == int(str(gold).strip())
    except ValueError:
        return False

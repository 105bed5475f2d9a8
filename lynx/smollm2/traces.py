"""Scripted R1-style reasoning traces for teaching SmolLM2 to reason (the LoRA's data).

The organism's trace policy (:func:`lynx.organism.traces.write_chain_thinking`) in SmolLM2's
style (:data:`STYLE`), written as prose a pretrained model can take up: each numbered step of
the story is retold and worked the same way, ones then tens
(``2. She buys 8 more, so add 8: 37 + 8: ones 7 + 8 = 15, tens 3 + 1 = 4, so 45.``), carry
steps are sometimes slipped (the forgotten carry: ``tens 3, so 35``), and cues sit where R1
puts them:

* after a step, more often after a slip than after a right step, immediately followed by the
  verdict (``Wait, no: 37 + 8 = 45.``) and, after ``no``, the work continues from the fix;
* right after a stated answer, before its recheck (``So the answer is 45.`` /
  ``Wait, let me check again: 1. 31 + 6 = 37; 2. 37 + 8 = 45. That gives 45.``), then a cue with
  the verdict on the answer (``Wait, yes.`` / ``Wait, no: ...``);
* overthinking after a confirmed answer: ``Hmm, let me check once more``, ``Alternatively, ...``;
  a recheck of a wrong answer is sometimes hasty and copies the slip, so some traces end wrong.

Cue words come in several spellings, as a BPE tokenizer sees them: ``Wait,`` at the start
of a line (one token ``Wait``), `` wait,`` / `` Wait,`` inside a line (one token with its
space), and ``Hmm,`` at the start of a line, which SmolLM2's tokenizer splits into ``H`` +
``mm``. The answer follows ``</think>`` as ``Final answer: \\boxed{N}``, the text lynx's exit
string forces, so a forced exit and a natural end look the same to the model.
"""

from __future__ import annotations

import random
import re

from lynx.organism.problems import Step
from lynx.organism.traces import TraceStyle, assistant_turn, step_text, write_chain_thinking
from lynx.smollm2.problems import WordProblem

#: how the first recheck after a stated answer opens: always with a cue, as R1 does ("So the answer
#: is 45. Wait, let me check again"). (An earlier recipe opened a fifth of them without one; the
#: model then had no exit point between its stated answer and the end of the first recheck, and
#: the oracle saved 25.5% of thinking, under the 30% lynx's reasoner must leave to be saved.)
FIRST_CHECK_INTRO = (("Wait, let me check again", 0.75), ("Hmm, let me double-check", 0.25))
#: how later rechecks open (overthinking), each with a cue
CHECK_INTRO = ("Hmm, let me check once more", "Alternatively, let me count it another way", "Hmm, one more time")


def _mid_cue(rng: random.Random) -> str:
    """A cue after a line of work, in one of its spellings (newline + ``Wait`` mostly)."""
    r = rng.random()
    return "\nWait," if r < 0.7 else (" Wait," if r < 0.85 else " wait,")


def _check_step(index: int, step: Step, written: int, careful: bool) -> str:
    """One numbered step of a recheck, the whole sum at once (``2. 37 + 8 = 45``): the number
    ties it to the line of work it rereads, so a small model neither skips nor repeats a step."""
    return f"{index + 1}. {step_text(step, written)}"


def work_text(step: Step, written: int) -> str:
    """A line of work, every step decomposed the same way, ones then tens
    (``37 + 8: ones 7 + 8 = 15, tens 3 + 1 = 4, so 45``; ``45 - 5: ones 5 - 5 = 0, tens 4, so 40``):
    whether a step carries is read off the ones digit instead of guessed, and the tens digit is
    written out. The slip is the forgotten carry or borrow (``tens 3, so 35``)."""
    ones, tens, d = step.before % 10, step.before // 10, step.operand
    if step.op == "+":
        ones_part = f"ones {ones} + {d} = {ones + d}"
    else:
        top = ones + 10 if step.carries else ones
        ones_part = f"ones {top} - {d} = {top - d}"
    if step.carries and written == step.after:
        tens_part = f"tens {tens} {step.op} 1 = {tens + 1 if step.op == '+' else tens - 1}"
    else:
        tens_part = f"tens {tens}"
    return f"{step.before} {step.op} {d}: {ones_part}, {tens_part}, so {written}"


#: a value worked out in a line of work (``= 45.`` or ``so 45.``), for a forced exit before any stated answer
_VALUE = re.compile(r"(?:=|so) (\d+)\.")


def _opening(problem: WordProblem) -> str:
    if problem.packs is None:
        return f"{problem.name} starts with {problem.start} {problem.item}.\n"
    a, b = problem.packs
    return f"{problem.name} buys {a} packs of {b}: {a} x {b} = {a * b} {problem.item}.\n"


def _check_intro(checks: int, rng: random.Random) -> str:
    if checks:
        return CHECK_INTRO[min(checks, len(CHECK_INTRO)) - 1]
    r = rng.random()
    for intro, p in FIRST_CHECK_INTRO:
        if r < p:
            return intro
        r -= p
    return FIRST_CHECK_INTRO[-1][0]


#: the organism's policy at SmolLM2's rates: fewer scripted slips (8% of carry steps; a 135M model
#: adds slips of its own), a cue after 60% of them, and more overthinking than the organism (a
#: stated answer is nearly always rechecked, and a confirmed one often again): a 135M model drops
#: cues and rechecks it was taught, so its traces keep ~2/3 of the scripted exit headroom
#: (scripted oracle saving 0.375 gave 0.255 sampled; these rates script 0.51)
STYLE = TraceStyle(
    error_rate=0.08,
    cue_after_error=0.6,
    cue_after_right=0.3,
    first_check=0.95,
    second_check=0.9,
    third_check=0.7,
    confirmation_bias=0.1,
    work_text=work_text,
    mid_cue=_mid_cue,
    check_intro=_check_intro,
    check_step=_check_step,
    check_end=". That gives",
    verdict_cue=lambda rng: "Wait," if rng.random() < 0.85 else "Hmm,",
)


def write_thinking(problem: WordProblem, rng: random.Random) -> tuple[str, int]:
    """(thinking text without the ``<think>`` tags, final stated answer)."""

    def lead(i: int) -> str:
        op, d, _ = problem.ops[i]
        return f"{i + 1}. {problem.pronoun.capitalize()} {problem.phrase(i)}, so {'add' if op == '+' else 'take away'} {d}: "

    return write_chain_thinking(problem.chain, rng, STYLE, prefix=_opening(problem), lead=lead)


def write_assistant(problem: WordProblem, rng: random.Random) -> str:
    """The assistant turn (the generated part): thinking, then the boxed answer."""
    thinking, answer = write_thinking(problem, rng)
    return assistant_turn(thinking, answer, rng, _VALUE)

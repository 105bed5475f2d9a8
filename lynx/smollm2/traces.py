"""Scripted R1-style reasoning traces for teaching SmolLM2 to reason (the LoRA's data).

The same policy as the organism's traces (:mod:`lynx.organism.traces`), written as prose a
pretrained model can take up: each step of the story is retold with its arithmetic
(``She buys 8 more: 37 + 8 = 45.``), carry steps are sometimes slipped (the forgotten
carry), and cues sit where R1 puts them:

* after a step, more often after a slip than after a right step, immediately followed by the
  verdict (``Wait, no: 37 + 8 = 45.``) and, after ``no``, the work continues from the fix;
* after a stated answer (``So the answer is 45.``), a careful recheck that spells out each
  carry, then a cue with the verdict on the answer (``Wait, yes.`` / ``Wait, no: ...``);
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

from lynx.config import DEFAULT_EXIT
from lynx.organism.problems import Step
from lynx.organism.traces import ANSWER_PREFIX, _Line, step_text
from lynx.smollm2.problems import WordProblem

ERROR_RATE = 0.08  # P(forgot carry) on a carry step of the main work (a 135M model adds slips of its own)
CUE_AFTER_ERROR = 0.6  # P(a cue) right after a slip ...
CUE_AFTER_RIGHT = 0.3  # ... and after a right step
FIRST_CHECK = 0.85  # P(a recheck) once an answer is stated or corrected
SECOND_CHECK = 0.75  # P(another recheck) after the first one confirmed the answer (overthinking)
THIRD_CHECK = 0.45
CONFIRMATION_BIAS = 0.1  # P(a recheck of a wrong answer is hasty: copies the slip)
FORCED_EXIT_RATE = 0.12  # traces cut at a cue by lynx's exit string (loss on the answer only)

#: how the first recheck after a stated answer opens: mostly with a cue, as R1 does ("So the answer
#: is 45. Wait, let me check again"), sometimes without one
FIRST_CHECK_INTRO = (("Wait, let me check again", 0.6), ("Hmm, let me double-check", 0.2), ("Let me check again", 0.2))
#: how later rechecks open (overthinking), each with a cue
CHECK_INTRO = ("Hmm, let me check once more", "Alternatively, let me count it another way", "Hmm, one more time")


def _mid_cue(rng: random.Random) -> str:
    """A cue after a line of work, in one of its spellings (newline + ``Wait`` mostly)."""
    r = rng.random()
    return "\nWait," if r < 0.7 else (" Wait," if r < 0.85 else " wait,")


def _check_step(number: int, step: Step, written: int | None = None) -> str:
    """One numbered step of a recheck, the whole sum at once (``2. 37 + 8 = 45``): the number
    ties it to the line of work it rereads, so a small model neither skips nor repeats a step."""
    return f"{number}. {step_text(step, step.after if written is None else written)}"


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


_CUE_AT = re.compile(r"(?i)\b(?:wait|hmm|alternatively),")
_STATED = re.compile(r"So the answer is (\d+)\.")
_VALUE = re.compile(r"(?:=|so) (\d+)\.")


def forced_exit(thinking: str, rng: random.Random) -> str | None:
    """Cut ``thinking`` right after a random cue and close it with lynx's exit string; the answer
    is what the trace believes there (the last stated answer, else the last value worked out)."""
    cues = list(_CUE_AT.finditer(thinking))
    if not cues:
        return None
    cut = rng.choice(cues).end()
    before = thinking[:cut]
    stated, values = _STATED.findall(before), _VALUE.findall(before)
    if not stated and not values:
        return None
    return f"<think>\n{before}{DEFAULT_EXIT}{stated[-1] if stated else values[-1]}}}"


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


def write_thinking(problem: WordProblem, rng: random.Random) -> tuple[str, int]:
    """(thinking text without the ``<think>`` tags, final stated answer)."""
    out = [_opening(problem)]
    work: list[_Line] = []
    value = problem.start
    for i, (op, d, _) in enumerate(problem.ops):
        step = Step(value, op, d)
        written = step.forgot_carry if step.carries and rng.random() < ERROR_RATE else step.after
        line = _Line(step, written)
        text = f"{i + 1}. {problem.pronoun.capitalize()} {problem.phrase(i)}, so {'add' if op == '+' else 'take away'} {d}: {work_text(step, written)}."
        if rng.random() < (CUE_AFTER_RIGHT if line.right else CUE_AFTER_ERROR):
            text += f"{_mid_cue(rng)} {'yes' if line.right else 'no'}: {step_text(step, step.after)}."
            line = _Line(step, step.after)
        out.append(text + "\n")
        work.append(line)
        value = line.written
    answer = value
    out.append(f"So the answer is {answer}.\n")

    checks, biased, p_next = 0, False, FIRST_CHECK
    while checks < 4 and rng.random() < p_next:
        wrong = answer != problem.answer
        if wrong and (biased or rng.random() < CONFIRMATION_BIAS):
            biased = True
            lines = [_check_step(k + 1, w.step, w.written) for k, w in enumerate(work)]
            result = answer
        else:
            work = [_Line(s, s.after) for s in problem.steps()]
            lines = [_check_step(k + 1, s) for k, s in enumerate(problem.steps())]
            result = problem.answer
        out.append(f"{_check_intro(checks, rng)}: {'; '.join(lines)}. That gives {result}.\n")
        cue = "Wait," if rng.random() < 0.85 else "Hmm,"
        if result == answer:
            out.append(f"{cue} yes.\n")
            p_next = SECOND_CHECK if checks == 0 else THIRD_CHECK
        else:
            out.append(f"{cue} no: {result} is not {answer}. So the answer is {result}.\n")
            answer, p_next = result, FIRST_CHECK
        checks += 1
    return "".join(out), answer


def write_assistant(problem: WordProblem, rng: random.Random) -> str:
    """The assistant turn (the generated part): thinking, then the boxed answer."""
    thinking, answer = write_thinking(problem, rng)
    if rng.random() < FORCED_EXIT_RATE:
        cut = forced_exit(thinking, rng)
        if cut is not None:
            return cut
    return f"<think>\n{thinking}</think>\n\n{ANSWER_PREFIX}{answer}}}"

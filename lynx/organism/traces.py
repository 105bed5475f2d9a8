"""Scripted reasoning traces for training the organism (stage 1 of its training).

A trace imitates what matters in DeepSeek-R1 / Qwen3 thinking for early exit:

* step-by-step work, one ``a op d = r.`` line per step, where carry steps are sometimes
  wrong (the "forgot the carry" slip, ``ERROR_RATE``);
* a cue (``Wait,``) that follows a wrong step more often than a right one and is
  immediately followed by the verdict (``yes`` / ``no``) and, after ``no``, a correction;
* ``So the answer is N.`` followed by a *careful* recheck that spells out each carry
  (``47 + 8: 7 + 8 = 15, so 55``) and ends ``that gives M.``; the next cue carries the verdict
  (``Wait, yes.`` / ``Wait, no: M is not N.`` + the corrected answer). The verdict compares
  two numbers in context, so the cue token's hidden state can know whether the stated answer
  is right — the signal a probe must find beyond the cue's position. (A first design asked
  for a *global* verdict right after the answer; a 4-layer model never learned it.)
* overthinking after a confirmed answer: ``Hmm, let me check once more: …``,
  ``Alternatively, …`` (quick copies of the work); a recheck of a wrong answer is sometimes
  hasty (copies the slip, ``CONFIRMATION_BIAS``), so some traces end wrong;
* the answer section ``Final answer: \\boxed{N}``.

One dominant cue word per context (``Wait,`` for verdicts, ``Hmm,`` / ``Alternatively,``
opening further rechecks) keeps cues alive under greedy decoding; rare
variants (``wait,`` on the same line, ``hmm,``) exercise case- and space-insensitive cue
matching.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from lynx.config import DEFAULT_EXIT
from lynx.organism.problems import Problem, Step

_CUE_AT = re.compile(r"(?i)\b(?:wait|hmm|alternatively),")
_STATED = re.compile(r"So the answer is (\d+)\.")
_VALUE = re.compile(r"= (\d+)\.")

ERROR_RATE = 0.35  # P(forgot carry) on a carry step of the main work
CUE_AFTER_ERROR = 0.5  # P(Wait) right after a slip ...
CUE_AFTER_RIGHT = 0.3  # ... and after a right step
FIRST_CHECK = 0.85  # P(a recheck) once an answer is stated or corrected
SECOND_CHECK = 0.8  # P(another recheck) after the first one confirmed the answer (overthinking)
THIRD_CHECK = 0.5  # ... and after later confirmations
CONFIRMATION_BIAS = 0.1  # P(a recheck of a wrong answer is hasty: copies the slip and "confirms" it)
NO_THINK_RATE = 0.05  # traces trained with thinking switched off (direct answer)
FORCED_EXIT_RATE = 0.12  # traces cut at a cue by lynx's exit string (loss on the answer only)

ANSWER_PREFIX = "Final answer: \\boxed{"


def step_text(step: Step, result: int) -> str:
    return f"{step.before} {step.op} {step.operand} = {result}"


@dataclass
class _Line:
    step: Step
    written: int

    @property
    def right(self) -> bool:
        return self.written == self.step.after


def _chain_text(lines: list[_Line]) -> str:
    return ", ".join(step_text(line.step, line.written) for line in lines)


def _work_line(step: Step, written: int, rng: random.Random) -> tuple[str, _Line]:
    """One line of work, with the mid-work cue and verdict that may follow it."""
    line = _Line(step, written)
    text = step_text(step, written) + "."
    if rng.random() < (CUE_AFTER_RIGHT if line.right else CUE_AFTER_ERROR):
        cue = "\nWait," if rng.random() < 0.8 else " wait,"
        text += f"{cue} {'yes' if line.right else 'no'}: {step_text(step, step.after)}."
        line = _Line(step, step.after)  # after a cue the work continues from the right value
    return text + "\n", line


#: how each recheck after the answer opens; the first opens without a cue, later ones with
#: the dominant cue of their context (overthinking after a confirmed answer)
_CHECK_INTRO = ("Let me check again", "Hmm, let me check once more", "Alternatively, check it another time", "Hmm, one more time")


def _check_step(step: Step, careful: bool, written: int | None = None) -> str:
    """One step of a recheck. A careful recheck spells out the units of a carry step
    (``47 + 8: 7 + 8 = 15, so 55``), which is what makes it catch a forgotten carry; a
    hasty one copies the line as first written."""
    if not careful:
        return step_text(step, step.after if written is None else written)
    if not step.carries:
        return step_text(step, step.after)
    units = step.before % 10
    inner = f"{units} + {step.operand} = {units + step.operand}" if step.op == "+" else f"{units + 10} - {step.operand} = {units + 10 - step.operand}"
    return f"{step.before} {step.op} {step.operand}: {inner}, so {step.after}"


def write_thinking(problem: Problem, rng: random.Random, prefix: str = "", done: list[_Line] | None = None) -> tuple[str, int]:
    """Return (thinking text without the ``<think>`` tags, final stated answer).

    Mid-work cues judge the step just written (a local check); cues after an answer judge
    the answer itself (a global check that must notice any uncorrected slip above it).
    ``prefix``/``done`` continue a trace whose first ``len(done)`` steps are already written
    (the on-policy stage continues the model's own traces this way).
    """
    out: list[str] = [prefix]
    work: list[_Line] = list(done or [])
    value = work[-1].written if work else problem.start
    for op, d in problem.ops[len(work) :]:
        step = Step(value, op, d)
        written = step.forgot_carry if step.carries and rng.random() < ERROR_RATE else step.after
        text, line = _work_line(step, written, rng)
        out.append(text)
        work.append(line)
        value = line.written
    answer = value
    out.append(f"So the answer is {answer}.\n")

    checks, biased, p_next = 0, False, FIRST_CHECK
    while checks < 4 and rng.random() < p_next:
        wrong = answer != problem.answer
        if wrong and (biased or rng.random() < CONFIRMATION_BIAS):
            biased = True  # a hasty recheck: the slipped lines are copied, not recomputed
            lines = [_check_step(w.step, careful=w.right and checks == 0, written=w.written) for w in work]
            result = answer
        else:  # the first recheck is careful; later ones (overthinking) are quick copies
            work = [_Line(s, s.after) for s in problem.steps()]
            lines = [_check_step(s, careful=checks == 0) for s in problem.steps()]
            result = problem.answer
        out.append(f"{_CHECK_INTRO[min(checks, 3)]}: {'; '.join(lines)}; that gives {result}.\n")
        cue = "Wait," if rng.random() < 0.85 else "wait,"
        if result == answer:
            out.append(f"{cue} yes.\n")
            p_next = SECOND_CHECK if checks == 0 else THIRD_CHECK
        else:
            out.append(f"{cue} no: {result} is not {answer}. So the answer is {result}.\n")
            answer, p_next = result, FIRST_CHECK
        checks += 1
    return "".join(out), answer


def forced_exit(thinking: str, rng: random.Random) -> str | None:
    """Cut ``thinking`` right after a random cue and close it with lynx's exit string.

    The answer is what the trace believes at that point: the last stated answer, else the
    last value computed. So a forced exit before the chain is done is wrong, and one after a
    slipped answer is wrong — the labels a probe must learn to predict.
    """
    cues = list(_CUE_AT.finditer(thinking))
    if not cues:
        return None
    cut = rng.choice(cues).end()
    before = thinking[:cut]
    stated = _STATED.findall(before)
    values = _VALUE.findall(before)
    if not stated and not values:
        return None
    answer = stated[-1] if stated else values[-1]
    return f"<think>\n{before}{DEFAULT_EXIT}{answer}}}"


def write_assistant(problem: Problem, rng: random.Random) -> str:
    """The assistant turn (generated part): thinking, then the boxed answer."""
    if rng.random() < NO_THINK_RATE:
        return f"<think>\n\n</think>\n\n{ANSWER_PREFIX}{problem.answer}}}"
    thinking, answer = write_thinking(problem, rng)
    if rng.random() < FORCED_EXIT_RATE:
        cut = forced_exit(thinking, rng)
        if cut is not None:
            return cut
    return f"<think>\n{thinking}</think>\n\n{ANSWER_PREFIX}{answer}}}"

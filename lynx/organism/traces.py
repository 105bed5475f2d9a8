"""Scripted reasoning traces for training the organism (stage 1 of its training).

A trace imitates what matters in DeepSeek-R1 / Qwen3 thinking for early exit:

* step-by-step work, one ``a op d = r.`` line per step, where carry steps are sometimes
  wrong (the "forgot the carry" slip, ``ORGANISM_STYLE.error_rate``);
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
  hasty (copies the slip, ``ORGANISM_STYLE.confirmation_bias``), so some traces end wrong;
* the answer section ``Final answer: \\boxed{N}``.

One dominant cue word per context (``Wait,`` for verdicts, ``Hmm,`` / ``Alternatively,``
opening further rechecks) keeps cues alive under greedy decoding; rare
variants (``wait,`` on the same line, ``hmm,``) exercise case- and space-insensitive cue
matching.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, fields

from lynx.config import DEFAULT_EXIT
from lynx.organism.problems import Problem, Step

_CUE_AT = re.compile(r"(?i)\b(?:wait|hmm|alternatively),")
_STATED = re.compile(r"So the answer is (\d+)\.")
_VALUE = re.compile(r"= (\d+)\.")

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


def _organism_cue(rng: random.Random) -> str:
    return "\nWait," if rng.random() < 0.8 else " wait,"


#: how each recheck after the answer opens; the first opens without a cue, later ones with
#: the dominant cue of their context (overthinking after a confirmed answer)
_CHECK_INTRO = ("Let me check again", "Hmm, let me check once more", "Alternatively, check it another time", "Hmm, one more time")


def _check_step(index: int, step: Step, written: int, careful: bool) -> str:
    """One step of a recheck. A careful recheck spells out the units of a carry step
    (``47 + 8: 7 + 8 = 15, so 55``), which is what makes it catch a forgotten carry; a
    hasty one copies the line as first written."""
    if not careful or not step.carries:
        return step_text(step, written)
    units = step.before % 10
    inner = f"{units} + {step.operand} = {units + step.operand}" if step.op == "+" else f"{units + 10} - {step.operand} = {units + 10 - step.operand}"
    return f"{step.before} {step.op} {step.operand}: {inner}, so {step.after}"


@dataclass(frozen=True)
class TraceStyle:
    """How one model's traces word the shared trace policy, and at which rates.

    The policy (:func:`write_chain_thinking`) is the same for every model lynx teaches: work,
    slips, cues after slips more than after right steps, a stated answer, rechecks, verdicts,
    overthinking. A style says how each piece reads (terse organism lines or SmolLM2's prose)
    and how often the random events happen; the order in which they draw from the random stream
    is the policy's, so one seed gives one trace."""

    error_rate: float  # P(forgot carry) on a carry step of the main work
    cue_after_error: float  # P(a cue) right after a slip ...
    cue_after_right: float  # ... and after a right step
    first_check: float  # P(a recheck) once an answer is stated or corrected
    second_check: float  # P(another recheck) after the first one confirmed the answer (overthinking)
    third_check: float  # ... and after later confirmations
    confirmation_bias: float  # P(a recheck of a wrong answer is hasty: copies the slip and "confirms" it)
    work_text: Callable[[Step, int], str]  # a line of work (step, written result), without its period
    mid_cue: Callable[[random.Random], str]  # the cue after a line of work, with its leading space/newline
    check_intro: Callable[[int, random.Random], str]  # (rechecks so far, rng) -> how the next one opens
    check_step: Callable[[int, Step, int, bool], str]  # (index, step, written, careful) -> one step of a recheck
    check_end: str  # between the recheck's steps and its result ("; that gives")
    verdict_cue: Callable[[random.Random], str]  # the cue that carries a recheck's verdict

    def rates(self) -> dict[str, float]:
        """The style's rates (its numbers, not its wording): what a fine-tune records it was
        trained with, so a model card states them from the record, not from today's recipe."""
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), float)}


ORGANISM_STYLE = TraceStyle(
    error_rate=0.35,
    cue_after_error=0.5,
    cue_after_right=0.3,
    first_check=0.85,
    second_check=0.8,
    third_check=0.5,
    confirmation_bias=0.1,
    work_text=step_text,
    mid_cue=_organism_cue,
    check_intro=lambda checks, rng: _CHECK_INTRO[min(checks, 3)],
    check_step=_check_step,
    check_end="; that gives",
    verdict_cue=lambda rng: "Wait," if rng.random() < 0.85 else "wait,",
)


def write_chain_thinking(
    chain: Problem,
    rng: random.Random,
    style: TraceStyle,
    prefix: str = "",
    done: list[_Line] | None = None,
    lead: Callable[[int], str] | None = None,
) -> tuple[str, int]:
    """Return (thinking text without the ``<think>`` tags, final stated answer) for ``chain``.

    Mid-work cues judge the step just written (a local check); cues after an answer judge
    the answer itself (a global check that must notice any uncorrected slip above it).
    ``prefix``/``done`` continue a trace whose first ``len(done)`` steps are already written
    (the on-policy stage continues the model's own traces this way); ``lead(i)`` opens the
    line of step ``i`` (a story's own words).
    """
    out: list[str] = [prefix]
    work: list[_Line] = list(done or [])
    value = work[-1].written if work else chain.start
    for i in range(len(work), len(chain.ops)):
        op, d = chain.ops[i]
        step = Step(value, op, d)
        written = step.forgot_carry if step.carries and rng.random() < style.error_rate else step.after
        line = _Line(step, written)
        text = (lead(i) if lead else "") + style.work_text(step, written) + "."
        if rng.random() < (style.cue_after_right if line.right else style.cue_after_error):
            text += f"{style.mid_cue(rng)} {'yes' if line.right else 'no'}: {step_text(step, step.after)}."
            line = _Line(step, step.after)  # after a cue the work continues from the right value
        out.append(text + "\n")
        work.append(line)
        value = line.written
    answer = value
    out.append(f"So the answer is {answer}.\n")

    checks, biased, p_next = 0, False, style.first_check
    while checks < 4 and rng.random() < p_next:
        wrong = answer != chain.answer
        if wrong and (biased or rng.random() < style.confirmation_bias):
            biased = True  # a hasty recheck: the slipped lines are copied, not recomputed
            lines = [style.check_step(k, w.step, w.written, w.right and checks == 0) for k, w in enumerate(work)]
            result = answer
        else:  # the first recheck is careful; later ones (overthinking) are quick copies
            work = [_Line(s, s.after) for s in chain.steps()]
            lines = [style.check_step(k, s, s.after, checks == 0) for k, s in enumerate(chain.steps())]
            result = chain.answer
        out.append(f"{style.check_intro(checks, rng)}: {'; '.join(lines)}{style.check_end} {result}.\n")
        cue = style.verdict_cue(rng)
        if result == answer:
            out.append(f"{cue} yes.\n")
            p_next = style.second_check if checks == 0 else style.third_check
        else:
            out.append(f"{cue} no: {result} is not {answer}. So the answer is {result}.\n")
            answer, p_next = result, style.first_check
        checks += 1
    return "".join(out), answer


def write_thinking(problem: Problem, rng: random.Random, prefix: str = "", done: list[_Line] | None = None) -> tuple[str, int]:
    """The organism's thinking for ``problem`` (see :func:`write_chain_thinking`)."""
    return write_chain_thinking(problem, rng, ORGANISM_STYLE, prefix, done)


def forced_exit(thinking: str, rng: random.Random, value: re.Pattern = _VALUE) -> str | None:
    """Cut ``thinking`` right after a random cue and close it with lynx's exit string.

    The answer is what the trace believes at that point: the last stated answer, else the
    last value computed (``value`` finds one in a line of work). So a forced exit before the
    chain is done is wrong, and one after a slipped answer is wrong — the labels a probe must
    learn to predict.
    """
    cues = list(_CUE_AT.finditer(thinking))
    if not cues:
        return None
    cut = rng.choice(cues).end()
    before = thinking[:cut]
    stated = _STATED.findall(before)
    values = value.findall(before)
    if not stated and not values:
        return None
    answer = stated[-1] if stated else values[-1]
    return f"<think>\n{before}{DEFAULT_EXIT}{answer}}}"


def assistant_turn(thinking: str, answer: int, rng: random.Random, value: re.Pattern = _VALUE) -> str:
    """The assistant turn around ``thinking``: closed and answered, or (``FORCED_EXIT_RATE``)
    cut at one of its cues by lynx's exit string."""
    if rng.random() < FORCED_EXIT_RATE:
        cut = forced_exit(thinking, rng, value)
        if cut is not None:
            return cut
    return f"<think>\n{thinking}</think>\n\n{ANSWER_PREFIX}{answer}}}"


def write_assistant(problem: Problem, rng: random.Random) -> str:
    """The assistant turn (generated part): thinking, then the boxed answer."""
    if rng.random() < NO_THINK_RATE:
        return f"<think>\n\n</think>\n\n{ANSWER_PREFIX}{problem.answer}}}"
    thinking, answer = write_thinking(problem, rng)
    return assistant_turn(thinking, answer, rng)

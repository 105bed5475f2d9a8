"""Stage 2 of the organism's training: learn from its *own* slips.

The stage-1 model is sampled on fresh training problems. Each trace's work lines are
graded in order; the model's text is kept up to its first own slip, and from there the
trace is finished by the scripted policy with *correct* verdicts: the slip is followed by
``Wait, no:`` and a correction (with the same probability a scripted slip gets one), or,
if left uncaught, the answer checks after ``So the answer is`` judge it. A cue the model
wrote after a right step is kept only if its verdict was right. So the state at a cue has
to encode whether the model's own work is right — not just a scripted error pattern.
"""

from __future__ import annotations

import random
import re

from rich.console import Console

from lynx.engines import hf
from lynx.organism.examples import encode_example
from lynx.organism.problems import Problem, Step, sample_problems
from lynx.organism.traces import ANSWER_PREFIX, ORGANISM_STYLE, _Line, step_text, write_thinking
from lynx.prompting import chat_prompt

_WORK = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)\.(?P<cue>( wait,|\nWait,) (yes|no): (\d+) ([+-]) (\d+) = (\d+)\.)?\n")


def rewrite(problem: Problem, thinking: str, rng: random.Random) -> tuple[str, bool]:
    """(assistant text, whether the model slipped) for one sampled thinking text."""
    pos, done = 0, []
    value = problem.start
    for op, d in problem.ops:
        m = _WORK.match(thinking, pos)
        if m is None:
            break
        a, mop, md, r = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if (a, mop, md) != (value, op, d):
            break  # the model misread the problem: keep nothing of this line
        step = Step(value, op, d)
        has_cue = m.group("cue") is not None
        work_end = m.start("cue") if has_cue else m.end() - 1
        verdict_ok = has_cue and m.group(7) == ("yes" if r == step.after else "no") and int(m.group(11)) == step.after
        if r == step.after and (not has_cue or verdict_ok):
            done.append(_Line(step, r))
            value, pos = r, m.end()
            continue
        if r == step.after:  # a right line with a wrong verdict: keep the line, redo the verdict
            done.append(_Line(step, r))
            prefix = thinking[:work_end] + "\n"
        elif verdict_ok:  # its own slip, caught and fixed by itself: keep all of it
            done.append(_Line(step, step.after))
            prefix = thinking[: m.end()]
        elif rng.random() < ORGANISM_STYLE.cue_after_error:  # its own slip, then a correct verdict
            cue = "\nWait," if rng.random() < 0.8 else " wait,"
            done.append(_Line(step, step.after))
            prefix = thinking[:work_end] + f"{cue} no: {step_text(step, step.after)}.\n"
        else:  # its own slip, left for the answer checks to judge
            done.append(_Line(step, r))
            prefix = thinking[:work_end] + "\n"
        text, answer = write_thinking(problem, rng, prefix=prefix, done=done)
        return _assistant(text, answer), r != step.after
    text, answer = write_thinking(problem, rng, prefix=thinking[:pos], done=done)
    return _assistant(text, answer), False


def _assistant(thinking: str, answer: int) -> str:
    return f"<think>\n{thinking}</think>\n\n{ANSWER_PREFIX}{answer}}}"


def onpolicy_examples(model, tokenizer, cfg) -> list[tuple[list[int], int]]:
    """Sample the model on fresh train problems and return rewritten, encoded traces."""
    problems = sample_problems("train", cfg.onpolicy_problems, seed=cfg.seed + 303)
    prompts = [tokenizer(chat_prompt(tokenizer, p.text), add_special_tokens=False)["input_ids"] for p in problems]
    gens = hf.generate(model, tokenizer, prompts, max_new_tokens=140, temperature=cfg.onpolicy_temperature, top_p=1.0, seed=cfg.seed + 5, batch_size=64)
    rng = random.Random(cfg.seed + 11)
    out, slips, off_format = [], 0, 0
    for p, g in zip(problems, gens, strict=True):
        text = tokenizer.decode(g, skip_special_tokens=False)
        if not text.startswith("<think>\n"):
            off_format += 1  # nothing of the model's to keep: the script writes the whole trace
            text = "<think>\n"
        thinking = text[len("<think>\n") :].split("So the answer", 1)[0]
        assistant, slipped = rewrite(p, thinking, rng)
        slips += slipped
        out.append(encode_example(tokenizer, p.text, assistant))
    if off_format > len(out) // 2:
        raise RuntimeError(f"stage-1 model is off-format on {off_format}/{len(out)} samples, e.g. {tokenizer.decode(gens[0])[:120]!r}")
    Console(stderr=True).print(f"on-policy: {len(out)} traces, {slips} with the model's own slip ({slips / max(1, len(out)):.0%}), {off_format} off-format")
    return out

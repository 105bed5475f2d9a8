"""Teach a tiny random model a few scripted reasoning traces, so that its greedy output thinks
with cues.

Why: a random model never writes ``<think>`` followed by ``Wait,`` on its own, and the
conformance checks need cue points inside a thinking span — where lynx's hook scores, records
and exits — in greedy rollouts of every architecture. A few hundred full-batch steps make a
4-layer model reproduce a handful of the organism's R1-style traces (cues after steps, after
a stated answer, before rechecks) from their prompts; the weights stay the architecture's own,
just no longer random. Deterministic from the seed on one thread.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lynx.errors import InvalidInput

#: what the scripted traces are: organism problems of this split, the first ones whose trace has a cue
SPLIT = "train"


@dataclass(frozen=True)
class Script:
    """The traces a tiny model was taught: problem texts and the assistant texts to reproduce."""

    problems: tuple[str, ...]
    answers: tuple[str, ...]  # the assistant turns (thinking with cues, then the boxed answer)
    golds: tuple[str, ...]  # the problems' exact answers


def scripted_traces(n: int = 4, seed: int = 0) -> Script:
    """``n`` organism problems whose scripted trace has at least two cues, with those traces."""
    from lynx.organism.problems import sample_problems
    from lynx.organism.traces import write_assistant

    rng = random.Random(seed)
    problems, answers, golds = [], [], []
    for p in sample_problems(SPLIT, 20 * n, seed=seed):
        text = write_assistant(p, rng)
        cues = sum(text.lower().count(w) for w in ("wait,", "hmm,"))
        if text.startswith("<think>\n") and cues >= 2 and len(text) < 400:
            problems.append(p.text)
            answers.append(text)
            golds.append(str(p.answer))
        if len(problems) == n:
            return Script(tuple(problems), tuple(answers), tuple(golds))
    raise InvalidInput(f"found only {len(problems)} scripted traces with cues among {20 * n} problems")


def in_format(assistant: str, fmt) -> str:
    """An organism trace (``<think>`` … ``\\n</think>\\n\\nFinal answer: \\boxed{N}``) written in
    the thinking format ``fmt`` (:class:`~lynx.thinking.ThinkingFormat`): its opener, the same
    thinking, its exit string, the same answer (harmony: the analysis channel, then the final one)."""
    from lynx.thinking import FORMATS

    think = FORMATS["think"]
    head, sep, tail = assistant.partition(think.exit_string)
    if not head.startswith(think.open) or not sep:
        raise InvalidInput(f"not an organism trace with thinking: {assistant[:60]!r}")
    return fmt.open + head[len(think.open) :] + fmt.exit_string + tail


class _LastCue:
    """Picks the last item: ``forced_exit`` then cuts a trace at its last cue."""

    @staticmethod
    def choice(seq):
        return seq[-1]


def forced_exits(script: Script) -> list[tuple[str, str]]:
    """(problem, assistant) pairs: each trace cut at its last cue and closed with the exit string,
    answered with what the trace believes there (the organism's forced-exit examples). Taught
    with the loss on the answer only, they make a forced exit at a late cue answer right while
    an early one does not: the collected cue points carry both labels, which calibration needs."""
    from lynx.organism.traces import forced_exit
    from lynx.thinking import FORMATS

    think = FORMATS["think"]
    out = []
    for problem, assistant in zip(script.problems, script.answers, strict=True):
        head = assistant.partition(think.exit_string)[0]
        cut = forced_exit(head[len(think.open) :] + "\n", _LastCue())  # type: ignore[arg-type]  # only .choice is used
        if cut is not None:
            out.append((problem, cut))
    return out


def teach(folder: Path | str, script: Script | None = None, *, steps: int = 600, lr: float = 3e-3, seed: int = 0) -> dict:
    """Train the model in ``folder`` on ``script`` (teacher forcing on the assistant turns) until
    its greedy output reproduces every trace, then save it back in place (safetensors).
    Returns ``{"steps", "loss", "reproduced"}``; a model that cannot learn the script in
    ``steps`` is an error."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lynx.organism.examples import encode_example

    folder = Path(folder)
    script = script or scripted_traces()
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    from lynx.thinking import detect_format

    fmt = detect_format(tok)  # the traces are taught in the model's own thinking format
    examples = [encode_example(tok, p, in_format(a, fmt)) for p, a in zip(script.problems, script.answers, strict=True)]
    for p, a in forced_exits(script):  # the loss starts after the exit string: the answer alone is learned
        ids, start = encode_example(tok, p, in_format(a, fmt))
        head = in_format(a, fmt).rpartition(fmt.exit_string)[0] + fmt.exit_string
        examples.append((ids, len(encode_example(tok, p, head)[0]) - 1))
    width = max(len(ids) for ids, _ in examples)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.full((len(examples), width), pad)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, start) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, start : len(ids)] = torch.tensor(ids[start:])
        mask[i, : len(ids)] = 1
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    loss = torch.tensor(float("nan"))
    done = 0
    for step in range(1, steps + 1):
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
        loss = out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or loss.item() < 1e-3:
            model.eval()
            with torch.no_grad():
                logits = model(input_ids=input_ids, attention_mask=mask).logits
            # teacher-forced argmax = the script on every learned token: greedy decoding reproduces it
            hits = ((logits[:, :-1].argmax(-1) == input_ids[:, 1:]) | (labels[:, 1:] == -100)).all(dim=1)
            done = int(hits.sum())
            model.train()
            if done == len(examples):
                break
    if done < len(examples):
        raise InvalidInput(f"the tiny model in {folder} reproduced {done}/{len(examples)} scripted traces after {steps} steps (loss {loss.item():.3g})")
    model.eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    return {"steps": step, "loss": float(loss.item()), "reproduced": done, "thinking": fmt.name}

"""Rollouts with forced exits at cues: the labelled decision points lynx learns from.

A *cue point* is a cue token inside a sampled trace's thinking span. Its label is whether
exiting right there is safe: the context up to **and including** the cue token, then the
exit string (close thinking, open ``\\boxed{``), then a short greedy answer, graded against
the gold answer. The cue token is kept because an online engine has already emitted it
when it decides, so training and serving see the same context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lynx.config import DEFAULT_EXIT  # noqa: E402  (re-exported)
from lynx.cues import Cue, CueMatcher
from lynx.engines import hf
from lynx.grading import extract_boxed


@dataclass
class CuePoint:
    cue: Cue
    thinking_position: int  # tokens of thinking before and including the cue
    forced_answer: str | None = None
    safe: bool | None = None  # the forced answer is right (None: no gold answer)
    agrees: bool | None = None  # the forced answer equals the trace's own final answer (same grader)
    features: object = None  # (n_layers, hidden) hidden states of the cue token, once read


@dataclass
class Rollout:
    problem_id: str
    gold: str | None  # None: a prompt without a gold answer
    prompt_ids: list[int]
    generated: list[int]
    think_open: int | None  # index in the full sequence, None if the model never opened it
    think_close: int | None
    final_answer: str | None
    final_correct: bool | None  # None without a gold answer
    cue_points: list[CuePoint] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.generated

    @property
    def thinking_tokens(self) -> int:
        if self.think_open is None:
            return 0
        end = self.think_close if self.think_close is not None else len(self.ids)
        return end - self.think_open - 1


def _span(ids: list[int], matcher: CueMatcher) -> tuple[int | None, int | None]:
    """(the token completing the first opener, the closer's first token after it)."""
    return matcher.span(ids)


def make_rollouts(
    tokenizer,
    matcher: CueMatcher,
    problem_ids: Sequence[str],
    golds: Sequence[str | None],
    prompt_ids: Sequence[list[int]],
    generated: Sequence[list[int]],
    graders: Sequence[Callable[[str | None, str], bool]],
) -> list[Rollout]:
    """Parse sampled traces: thinking span, final answer (graded by its problem's grader), cues."""
    out = []
    for pid, gold, p, g, grade in zip(problem_ids, golds, prompt_ids, generated, graders, strict=True):
        ids = list(p) + list(g)
        opened, closed = _span(ids, matcher)
        answer_text = tokenizer.decode(ids[closed + 1 :], skip_special_tokens=True) if closed is not None else ""
        final = extract_boxed(answer_text)
        r = Rollout(pid, gold, list(p), list(g), opened, closed, final, None if gold is None else grade(final, gold))
        if opened is not None:
            for cue in matcher.find(ids, start=max(len(p), opened + 1)):
                r.cue_points.append(CuePoint(cue, cue.position - opened))
        out.append(r)
    return out


def grade_cue(cp: CuePoint, r: Rollout, grade: Callable[[str | None, str], bool]) -> None:
    """Both labels of a cue point from its forced answer: ``safe`` against the gold answer (if
    any) and ``agrees`` against the trace's own final answer, by the same grader. A trace without
    a final answer agrees with no exit (every exit there counts as an answer change)."""
    cp.safe = None if r.gold is None else grade(cp.forced_answer, r.gold)
    cp.agrees = r.final_answer is not None and grade(cp.forced_answer, r.final_answer)


def answer_stop_ids(tokenizer) -> set[int]:
    """Tokens that end a forced answer: the closing brace of ``\\boxed{`` or end of turn."""
    close = {tid for tok, tid in tokenizer.get_vocab().items() if tokenizer.convert_tokens_to_string([tok]).strip() == "}"}
    return close | {tokenizer.eos_token_id}


def parse_forced_answer(tokenizer, answer_ids: Sequence[int]) -> str | None:
    """The answer a forced exit produced: the content of the ``\\boxed{`` the exit string opened.

    The exit string ends inside ``\\boxed{``, so the greedy continuation must close the brace;
    one that does not within the token budget is no answer (None, graded wrong).
    """
    return extract_boxed("\\boxed{" + tokenizer.decode(list(answer_ids), skip_special_tokens=True))


def force_exits(
    model,
    tokenizer,
    rollouts: Sequence[Rollout],
    grade: Callable[[str | None, str], bool],
    exit_string: str = DEFAULT_EXIT,
    max_answer_tokens: int = 64,
    batch_size: int = 64,
    on_batch=None,
    generate: Callable[[list[list[int]], int, list[int]], list[list[int]]] | None = None,
) -> None:
    """Label every cue point in place with a greedy forced answer.

    ``generate(prefixes, max_new_tokens, stop_ids)`` continues the forced prefixes greedily
    on another engine (a vLLM engine shares their common prefixes: many times faster on CPU
    than transformers' padded batches); by default transformers' ``model``."""
    exit_ids = tokenizer(exit_string, add_special_tokens=False)["input_ids"]
    jobs = [(r, cp) for r in rollouts for cp in r.cue_points]
    prefixes = [r.ids[: cp.cue.position + 1] + exit_ids for r, cp in jobs]
    stop_ids = sorted(answer_stop_ids(tokenizer))
    if generate is not None:
        answers = generate(prefixes, max_answer_tokens, stop_ids)
        if on_batch is not None:
            on_batch(len(prefixes))
    else:
        answers = hf.generate(
            model,
            tokenizer,
            prefixes,
            max_new_tokens=max_answer_tokens,
            batch_size=batch_size,
            stop_ids=set(stop_ids),
            on_batch=on_batch,
        )
    for (r, cp), ans in zip(jobs, answers, strict=True):
        cp.forced_answer = parse_forced_answer(tokenizer, ans)
        grade_cue(cp, r, grade)

"""The methods ``lynx eval`` compares, all on one backend, the same prompts and seeds.

* ``vanilla`` — think until ``</think>`` (or the token budget), answer.
* ``lynx`` — lynx's online exit at a calibrated ``alpha`` (the engine hook, not a replay).
* ``context-only`` — the same exit rule, cues and calibration (CRC at the same alphas), scored
  by the baseline ``lynx train`` fits beside the probe on the cue's context alone (index,
  position, cue word; no hidden state): what lynx's hidden states add is lynx minus this.
* ``oracle`` — exit at the first cue of the vanilla trace whose forced answer is right: the
  ceiling of any cue-based exit policy (not deployable: it reads the gold answer).
* ``budget`` — a static thinking budget: after N thinking tokens the closer (``</think>``) is
  forced and the model writes its answer (vLLM's ``thinking_token_budget`` on vLLM; two rounds on
  transformers, and on vLLM where a thinking marker is several tokens).
* ``deer`` — DEER (arXiv 2504.15895): at each cue, a greedy trial answer; exit if the mean
  probability of its tokens exceeds a threshold.
* ``dynasor`` — Dynasor-CoT (arXiv 2412.20993): every ``chunk`` tokens a greedy probe answer;
  exit when the last ``k`` agree, are non-empty and contain no hesitation word.

Two deliberate departures from the upstream code, for a fair comparison (see
docs/eval.md): DEER and Dynasor probe with the model's exit string (the same string lynx and
the budget force, which the answer is graded after) instead of their own hard-coded
phrases, and DEER decides at the same cue tokens lynx does (the cue token kept, as in
collection). Every exit answers from the same context a lynx exit would.

The thinking markers and the cue words may be several tokens (SmolLM2's ``</think>`` is ``</``
``think`` ``>``, its ``Hmm,`` is ``H`` ``mm`` ``,``): a loop that generates until thinking closes
stops on every token that can complete the closer and goes on where it did not
(:meth:`EvalContext.closes`); DEER stops on the tokens that complete its cue words as the
tokenizer spells them (:attr:`~lynx.cues.CueMatcher.cue_stop_ids`) and checks the cue in
context; a forced closer is the closer's token ids (:attr:`~lynx.cues.CueMatcher.close_ids`).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field

from lynx.config import Sampling
from lynx.cues import CueMatcher
from lynx.evaluate.backends import Backend
from lynx.exit_policy import request_args
from lynx.grading import extract_boxed, grader_for
from lynx.rollouts import answer_stop_ids, parse_forced_answer
from lynx.run import thinking_tokens

HESITATION = re.compile(r"(?i)\b(wait|hold|but|okay|no|hmm)\b")


@dataclass
class Sample:
    """One problem under one method."""

    problem_id: str
    generated: list[int]  # everything after the prompt
    answer: str | None
    correct: bool
    thinking_tokens: int
    exited: bool  # the method cut the thinking short
    extra_tokens: int = 0  # tokens decoded off the answer path (trial answers, probes, forced exits)
    exit: dict | None = None


@dataclass
class EvalContext:
    """Everything the methods share: backend, problems, prompts, per-problem seeds, sampling."""

    backend: Backend
    records: list
    prompts: list[list[int]]
    seeds: list[int]
    matcher: CueMatcher
    exit_ids: list[int]
    max_new_tokens: int = Sampling.max_new_tokens
    temperature: float = Sampling.temperature
    top_p: float = Sampling.top_p
    answer_tokens: int = 20
    domain: str | None = None  # the calibrated condition's domain lynx's requests ask for
    _stops: set[int] | None = field(default=None, repr=False)

    @property
    def tok(self):
        return self.backend.tokenizer

    @property
    def eos(self) -> int:
        return self.tok.eos_token_id

    @property
    def answer_stops(self) -> list[int]:
        if self._stops is None:
            self._stops = answer_stop_ids(self.tok)
        return sorted(self._stops)

    def thinking(self, generated: list[int]) -> int:
        """Tokens of the thinking span (to the end if thinking never closed)."""
        return thinking_tokens(generated, self.matcher)

    @property
    def close_stops(self) -> list[int]:
        """Stop ids of a round that generates until thinking closes: end of text and every token
        that can complete the closer (only the closer's id where it is one token). A stop on one
        of them is the closer only where :meth:`closes` says so; elsewhere the round goes on."""
        return sorted({self.eos} | self.matcher.close_final_ids)

    def closes(self, i: int, generated: list[int]) -> bool:
        """Does the last token of problem ``i``'s ``generated`` complete the thinking closer?"""
        if not generated or generated[-1] not in self.matcher.close_final_ids:
            return False
        full = self.prompts[i] + generated
        return self.matcher.closes_at(full, len(full) - 1) is not None

    def sample(self, i: int, generated: list[int], *, exited: bool, extra: int = 0, exit: dict | None = None) -> Sample:
        rec = self.records[i]
        text = self.tok.decode(generated, skip_special_tokens=True)
        answer = extract_boxed(text)
        return Sample(rec.id, list(generated), answer, grader_for(rec.kind)(answer, rec.answer), self.thinking(generated), exited, extra, exit)


def vanilla(ctx: EvalContext) -> list[Sample]:
    outs = ctx.backend.complete(ctx.prompts, max_tokens=ctx.max_new_tokens, temperature=ctx.temperature, top_p=ctx.top_p, seeds=ctx.seeds, stop_ids=[ctx.eos])
    return [ctx.sample(i, o.ids, exited=False) for i, o in enumerate(outs)]


def lynx(ctx: EvalContext, alpha: float, *, mode: str | None = None, method: str | None = None, scorer: str | None = None) -> list[Sample]:
    """lynx's online exit, through the engine's hook, with the calibration stored in the probe
    (``scorer``: a baseline trained beside the probe, e.g. ``context-only``, instead of the probe)."""
    tags = [uuid.uuid4().hex for _ in ctx.prompts]
    args = [request_args(alpha=alpha, mode=mode, method=method, tag=t, domain=ctx.domain, scorer=scorer) for t in tags]
    outs = ctx.backend.complete(ctx.prompts, max_tokens=ctx.max_new_tokens, temperature=ctx.temperature, top_p=ctx.top_p, seeds=ctx.seeds, stop_ids=[ctx.eos], extra_args=args)
    events = ctx.backend.take_events(tags)
    res = []
    for i, (o, t) in enumerate(zip(outs, tags, strict=True)):
        audit = [a for a in events[t][0] if a["event"] == "exit"]
        res.append(ctx.sample(i, o.ids, exited=bool(audit), exit=audit[0] if audit else None))
    return res


def _forced_answers(ctx: EvalContext, prefixes: list[list[int]], probs: bool = False):
    """Greedy answers after ``prefix + exit string`` (stop at the closing brace)."""
    return ctx.backend.complete(
        [p + ctx.exit_ids for p in prefixes], max_tokens=ctx.answer_tokens, temperature=0.0, top_p=1.0, seeds=[0] * len(prefixes), stop_ids=ctx.answer_stops, probs=probs
    )


def oracle(ctx: EvalContext, base: list[Sample]) -> list[Sample]:
    """Exit at the first cue of each ``base`` (vanilla) trace whose forced answer is right."""
    jobs = []
    for i, s in enumerate(base):
        full = ctx.prompts[i] + s.generated
        for cue in ctx.matcher.find(full, start=len(ctx.prompts[i])):
            jobs.append((i, cue.position))
    answers = _forced_answers(ctx, [(ctx.prompts[i] + base[i].generated)[: pos + 1] for i, pos in jobs])
    first: dict[int, tuple[int, list[int]]] = {}
    extra = [0] * len(base)
    for (i, pos), a in zip(jobs, answers, strict=True):
        extra[i] += len(a.ids)
        rec = ctx.records[i]
        if i not in first and grader_for(rec.kind)(parse_forced_answer(ctx.tok, a.ids), rec.answer):
            first[i] = (pos, a.ids)
    res = []
    for i, s in enumerate(base):
        if i in first:
            pos, ans = first[i]
            gen = (ctx.prompts[i] + s.generated)[len(ctx.prompts[i]) : pos + 1] + ctx.exit_ids + ans
            res.append(ctx.sample(i, gen, exited=True, extra=extra[i]))
        else:
            res.append(ctx.sample(i, s.generated, exited=False, extra=extra[i]))
    return res


def _finish(ctx: EvalContext, seqs: dict[int, list[int]], gens: dict[int, list[int]], rounds: dict[int, int]) -> None:
    """Let sequences whose thinking closed on its own write their answer (no more probing).
    ``rounds[i]``: the problem's own round number, which seeds its answer: never the batch's, so a
    problem's sample does not depend on which problems ran with it (``lynx eval --ray`` slices)."""
    idx = [i for i in seqs if (not gens[i] or gens[i][-1] != ctx.eos) and len(gens[i]) < ctx.max_new_tokens]
    outs = ctx.backend.complete(
        [seqs[i] for i in idx],
        max_tokens=max(1, ctx.max_new_tokens - min((len(gens[i]) for i in idx), default=0)),
        temperature=ctx.temperature,
        top_p=ctx.top_p,
        seeds=[ctx.seeds[i] + 7919 * rounds[i] for i in idx],
        stop_ids=[ctx.eos],
    )
    for i, o in zip(idx, outs, strict=True):
        gens[i] += o.ids[: ctx.max_new_tokens - len(gens[i])]


def budget(ctx: EvalContext, n_tokens: int) -> list[Sample]:
    """Static thinking budget: at ``n_tokens`` thinking tokens the closer is forced (what vLLM's
    ``thinking_token_budget`` does), then the model answers on its own."""
    native = ctx.backend.complete_with_budget(
        ctx.prompts, budget=n_tokens, max_tokens=ctx.max_new_tokens, temperature=ctx.temperature, top_p=ctx.top_p, seeds=ctx.seeds, stop_ids=[ctx.eos]
    )
    if native is not None:
        # vLLM forces the closer once thinking reaches the budget: thinking ran to n_tokens
        return [ctx.sample(i, o.ids, exited=ctx.thinking(o.ids) >= n_tokens) for i, o in enumerate(native)]
    # two rounds: think up to the budget (plus the opener's tokens, which the model writes unless
    # the chat template pre-filled them), then force the closer or go on
    limit = n_tokens + len(ctx.matcher.open_ids)
    gens: dict[int, list[int]] = {i: [] for i in range(len(ctx.prompts))}
    rounds = dict.fromkeys(gens, 0)
    active = list(gens)
    while active:  # one round where the closer is one token; more where a stop only might have ended it
        room = {i: limit - len(gens[i]) for i in active}
        outs = ctx.backend.complete(
            [ctx.prompts[i] + gens[i] for i in active],
            max_tokens=max(room.values()),
            temperature=ctx.temperature,
            top_p=ctx.top_p,
            seeds=[ctx.seeds[i] + 7919 * rounds[i] for i in active],
            stop_ids=ctx.close_stops,
        )
        nxt = []
        for i, o in zip(active, outs, strict=True):
            rounds[i] += 1
            gens[i] += o.ids[: room[i]]
            g = gens[i]
            if g and g[-1] != ctx.eos and len(g) < limit and not ctx.closes(i, g):
                nxt.append(i)
        active = nxt
    cut = []
    for i, g in gens.items():
        opened, _ = ctx.matcher.span(g)
        start = opened + 1 if opened is not None else 0
        if ctx.thinking(g) > n_tokens:  # the opener was pre-filled (or never written): its allowance went to thinking
            del g[start + n_tokens :]
        elif ctx.closes(i, g) or (g and g[-1] == ctx.eos):
            continue
        g += ctx.matcher.close_ids
        cut.append(i)
    seqs = {i: ctx.prompts[i] + gens[i] for i in gens}
    _finish(ctx, seqs, gens, rounds)
    return [ctx.sample(i, gens[i], exited=i in cut) for i in range(len(ctx.prompts))]


def _probe_loop(ctx: EvalContext, *, chunk: int | None, decide) -> list[Sample]:
    """Shared driver of DEER and Dynasor: generate until a decision point (a cue token when
    ``chunk`` is None, else every ``chunk`` tokens), ask ``decide(i, trial)`` on a greedy
    trial answer after the exit string, exit with that answer or continue. A stop that is no
    decision point (a token that only might end a cue or the closer) goes on in the next round."""
    n = len(ctx.prompts)
    gens: dict[int, list[int]] = {i: [] for i in range(n)}
    extra = [0] * n
    exited: dict[int, list[int]] = {}
    stops = sorted(set(ctx.close_stops) | (ctx.matcher.cue_stop_ids if chunk is None else set()))
    active = list(range(n))
    closed: list[int] = []
    round_ = 0
    rounds: dict[int, int] = {}
    while active:
        room = {i: ctx.max_new_tokens - len(gens[i]) for i in active}
        if chunk is not None:  # to the next multiple of chunk (a row that stopped short of it goes on to it)
            room = {i: min(r, chunk - len(gens[i]) % chunk) for i, r in room.items()}
        outs = ctx.backend.complete(
            [ctx.prompts[i] + gens[i] for i in active],
            max_tokens=max(1, max(room.values())),
            temperature=ctx.temperature,
            top_p=ctx.top_p,
            seeds=[ctx.seeds[i] + 7919 * round_ for i in active],
            stop_ids=stops,
        )
        round_ += 1
        probe = []
        for i, o in zip(active, outs, strict=True):
            rounds[i] = round_  # a problem is active from round 0 until it ends: its own round count
            gens[i] += o.ids[: room[i]]
            g = gens[i]
            if not g or g[-1] == ctx.eos or len(g) >= ctx.max_new_tokens or ctx.closes(i, g):
                if ctx.closes(i, g):
                    closed.append(i)
                continue
            full = ctx.prompts[i] + g
            if chunk is not None:
                probe.append((i, len(g) % chunk == 0))  # else stopped on a token that only might end the closer
            else:  # a cue-word token outside thinking, or not a cue (nor the closer): continue
                probe.append((i, ctx.matcher.match_at(full, len(full) - 1) is not None and ctx.matcher.thinking_open(full, len(full) - 1)))
        to_try = [i for i, ok in probe if ok]
        trials = _forced_answers(ctx, [ctx.prompts[i] + gens[i] for i in to_try], probs=chunk is None)
        nxt = [i for i, ok in probe if not ok]
        for i, t in zip(to_try, trials, strict=True):
            extra[i] += len(t.ids)
            if decide(i, t):
                exited[i] = ctx.exit_ids + t.ids
            else:
                nxt.append(i)
        active = sorted(nxt)
    seqs = {i: ctx.prompts[i] + gens[i] for i in closed}
    _finish(ctx, seqs, gens, {i: rounds[i] + 1 for i in closed})
    out = []
    for i in range(n):
        if i in exited:
            out.append(ctx.sample(i, gens[i] + exited[i], exited=True, extra=extra[i]))
        else:
            out.append(ctx.sample(i, gens[i], exited=False, extra=extra[i]))
    return out


def deer(ctx: EvalContext, threshold: float = 0.95) -> list[Sample]:
    """DEER: exit at a cue when the trial answer's mean token probability exceeds ``threshold``."""

    def decide(_i, trial) -> bool:
        return bool(trial.probs) and sum(trial.probs) / len(trial.probs) > threshold and parse_forced_answer(ctx.tok, trial.ids) is not None

    return _probe_loop(ctx, chunk=None, decide=decide)


def dynasor(ctx: EvalContext, k: int = 2, chunk: int = 32) -> list[Sample]:
    """Dynasor-CoT: every ``chunk`` tokens a probe answer; exit when the last ``k`` agree."""
    history: dict[int, list[str | None]] = {}

    def decide(i, trial) -> bool:
        text = ctx.tok.decode(trial.ids, skip_special_tokens=True)
        ans = parse_forced_answer(ctx.tok, trial.ids)
        ok = ans is not None and ans.strip() != "" and not HESITATION.search(text)
        h = history.setdefault(i, [])
        h.append(ans if ok else None)
        last = h[-k:]
        if len(last) < k or any(a is None for a in last):
            return False
        from lynx.grading import grade_math

        assert last[-1] is not None  # none of the last k answers is None (checked above)
        return all(grade_math(a, last[-1]) for a in last[:-1])

    return _probe_loop(ctx, chunk=chunk, decide=decide)


def timed(fn, *args, **kwargs) -> tuple[list[Sample], float]:
    t = time.monotonic()
    res = fn(*args, **kwargs)
    return res, time.monotonic() - t

"""``lynx eval``'s baselines on a tokenizer whose thinking markers and cue words are several
tokens (issue #26): a static budget forces the whole closer after N thinking tokens, DEER decides
at a cue that ends in a token of its own (`` hmm,`` is `` `` ``h`` ``m`` ``m,`` on the organism's
BPE, as ``Hmm,`` is ``H`` ``mm`` ``,`` on SmolLM2's), Dynasor probes at multiples of its chunk
although a token that only might end the closer stopped a round short of it; and with a closer of
one token the budget runs exactly the rounds it always ran.

The model is scripted (each prompt continues its own trace; once a forced closer or exit string
leaves the trace it writes the answer) over a real tokenizer, so every decision point is known.
The tests take the tokenizer and the format as one argument (``mt``): any BPE whose markers are
several tokens can run them (SmolLM2's with ``think`` was checked by hand)."""

import pytest

from lynx.cues import CueMatcher
from lynx.datasets import Record
from lynx.evaluate import methods as M
from lynx.evaluate.backends import Backend, Completion
from lynx.thinking import parse_format

CUSTOM = "<reasoning>,</reasoning>"  # several tokens on the organism's BPE: < reas on in g >
THINKING = "\nWe are awaiting the sum: 2+3=5, and 5>4, hmm, so 5+2=7.\nAlternatively, 3+4=7.\nSo the answer is 7.\n"
CLOSING = "\n\nFinal answer: \\boxed{7}"


class Scripted(Backend):
    """A deterministic model: a prompt that is problem ``i``'s prompt plus a prefix of its trace
    continues the trace; any other continuation (after a forced closer or exit string) writes
    ``7}`` after the exit string, else the closing answer. Stops and ``max_tokens`` as an engine."""

    name = "scripted"

    def __init__(self, tok, prompts, traces, exit_ids):
        self.tokenizer, self.prompts, self.traces, self.exit_ids = tok, prompts, traces, exit_ids
        self.calls: list[dict] = []

    def _enc(self, text):
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def complete(self, prompts, *, max_tokens, temperature, top_p, seeds, stop_ids=(), probs=False, extra_args=None):
        self.calls.append({"n": len(prompts), "max_tokens": max_tokens, "stop_ids": sorted(stop_ids), "seeds": list(seeds)})
        stops = set(stop_ids) | {self.tokenizer.eos_token_id}
        out = []
        for p in prompts:
            i = next(k for k, q in enumerate(self.prompts) if p[: len(q)] == q)
            rest, trace = p[len(self.prompts[i]) :], self.traces[i]
            if trace[: len(rest)] == rest:
                cont = trace[len(rest) :]
            elif p[-len(self.exit_ids) :] == self.exit_ids:
                cont = self._enc("7}")
            else:
                cont = self._enc(CLOSING) + [self.tokenizer.eos_token_id]
            ids: list[int] = []
            for t in cont[:max_tokens]:
                ids.append(t)
                if t in stops:
                    break
            out.append(Completion(ids, [0.99] * len(ids) if probs else []))
        return out


@pytest.fixture(scope="module")
def organism_tok():
    from transformers import AutoTokenizer

    from lynx.models import ORGANISM_DIR

    return AutoTokenizer.from_pretrained(str(ORGANISM_DIR))


@pytest.fixture(scope="module")
def mt(organism_tok):
    """(tokenizer, thinking format) with markers of several tokens."""
    return organism_tok, parse_format(CUSTOM)


def _ctx(tok, fmt, traces, prompt_tail=""):
    matcher = CueMatcher(tok, thinking=fmt)
    exit_ids = tok(matcher.format.exit_string, add_special_tokens=False)["input_ids"]
    prompts = [tok(f"Question {i}: what is 2 + 5?\n{prompt_tail}", add_special_tokens=False)["input_ids"] for i in range(len(traces))]
    traces = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in traces]
    backend = Scripted(tok, prompts, traces, exit_ids)
    records = [Record(f"q{i}", "what is 2 + 5?", "7", "integer") for i in range(len(traces))]
    return M.EvalContext(backend, records, prompts, [11 * i for i in range(len(traces))], matcher, exit_ids, max_new_tokens=200), traces


def _text(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def _trace(fmt, before=""):
    return before + fmt.open + THINKING + fmt.close + CLOSING


def test_the_markers_and_a_cue_are_several_tokens_with_false_stops_inside_thinking(mt):
    """What the other tests rely on: the markers and `` hmm,`` are several tokens, and the
    closer's last token (``>``) also ends the opener and ``5>4`` (stops that are no closer)."""
    tok, fmt = mt
    m = CueMatcher(tok, thinking=fmt)
    assert len(m.open_ids) > 1 and len(m.close_ids) > 1 and _text(tok, m.close_ids) == fmt.close
    trace = tok(fmt.open + THINKING, add_special_tokens=False)["input_ids"]
    assert sum(t in m.close_final_ids for t in trace) >= 2 and m.span(trace)[1] is None
    cues = m.find(trace)
    assert [c.word for c in cues] == ["hmm", "alternatively"] and _text(tok, [trace[cues[0].position]]).strip(" ,") != "hmm"
    assert all(trace[c.position] in m.cue_stop_ids for c in cues)


def test_a_single_token_marker_is_its_id(organism_tok):
    single = CueMatcher(organism_tok)
    assert single.close_ids == [single.think_close_id] and single.close_final_ids == {single.think_close_id}
    assert single.open_ids == [single.think_open_id]


@pytest.mark.parametrize("n", [4, 12, 25])
def test_budget_forces_the_whole_closer_after_n_thinking_tokens(mt, n):
    tok, fmt = mt
    ctx, (trace,) = _ctx(tok, fmt, [_trace(fmt)])
    (s,) = M.budget(ctx, n)
    opened, _ = ctx.matcher.span(trace)
    start = opened + 1
    assert s.exited and s.thinking_tokens == n
    assert s.generated[: start + n] == trace[: start + n]  # the model's own thinking, cut at the budget ...
    assert s.generated[start + n : start + n + len(ctx.matcher.close_ids)] == ctx.matcher.close_ids  # ... then the whole closer
    assert ctx.matcher.span(s.generated) == (opened, start + n)
    assert _text(tok, s.generated[start + n :]).startswith(fmt.close + CLOSING)  # and the answer follows
    assert s.answer == "7" and s.correct


def test_budget_beyond_the_thinking_leaves_the_trace_alone(mt):
    """Rounds stopped by ``>`` (the opener's, ``5>4``) go on: the model's own closer ends thinking."""
    tok, fmt = mt
    ctx, (trace,) = _ctx(tok, fmt, [_trace(fmt)])
    (s,) = M.budget(ctx, 150)
    assert s.generated == trace and not s.exited and s.thinking_tokens == ctx.thinking(trace) > 25
    assert len(ctx.backend.calls) >= 3  # stopped at the opener's '>' and at 5>4 on the way


def test_budget_counts_from_a_prefilled_opener(mt):
    """The chat template pre-filled the opener: the model writes thinking at once, and the budget
    is still exactly n thinking tokens (the opener's allowance is not thinking)."""
    tok, fmt = mt
    ctx, (trace,) = _ctx(tok, fmt, [THINKING + fmt.close + CLOSING], prompt_tail=fmt.open)
    (s,) = M.budget(ctx, 10)
    assert s.exited and s.thinking_tokens == 10
    assert s.generated[:10] == trace[:10] and s.generated[10 : 10 + len(ctx.matcher.close_ids)] == ctx.matcher.close_ids


def test_deer_decides_at_a_cue_of_several_tokens(mt):
    tok, fmt = mt
    ctx, (trace,) = _ctx(tok, fmt, [_trace(fmt, before="Hmm, first.")])
    cues = ctx.matcher.find(trace)
    answer = tok("7}", add_special_tokens=False)["input_ids"]
    (s,) = M.deer(ctx, threshold=0.0)  # any parseable trial exits: DEER exits at its first cue inside thinking
    assert s.exited and s.answer == "7" and s.correct
    pos = cues[0].position  # " hmm": the cue before thinking opened and "awaiting" were no decision points
    assert _text(tok, trace[: pos + 1]).rstrip(",").endswith("5>4, hmm")  # the token that ends the word (its comma may come with it)
    assert s.generated == trace[: pos + 1] + ctx.exit_ids + answer
    (never,) = M.deer(ctx, threshold=1.01)
    assert never.generated == trace and not never.exited
    assert never.extra_tokens == 2 * len(answer)  # one trial at each of the two cues


def test_dynasor_probes_at_multiples_of_its_chunk(mt):
    """The opener's ``>`` stops the first round short of the chunk: it goes on to 8."""
    tok, fmt = mt
    ctx, (trace,) = _ctx(tok, fmt, [_trace(fmt)])
    assert any(t in ctx.matcher.close_final_ids for t in trace[:7])
    (s,) = M.dynasor(ctx, k=1, chunk=8)  # the first parseable, hesitation-free probe exits
    assert s.exited and s.generated[:8] == trace[:8] and s.generated[8 : 8 + len(ctx.exit_ids)] == ctx.exit_ids
    (never,) = M.dynasor(ctx, k=50, chunk=8)
    assert never.generated == trace and not never.exited


def test_a_single_token_closer_runs_the_budget_in_one_round_as_before(organism_tok):
    """With ``</think>`` one token: one thinking round of n + 1 tokens stopped at end of text or
    the closer, the closer's id forced, one answer round (the rounds the budget always ran)."""
    tok, fmt = organism_tok, parse_format("think")
    ctx, (trace,) = _ctx(tok, fmt, [_trace(fmt)])
    close = ctx.matcher.think_close_id
    (s,) = M.budget(ctx, 12)
    first, answer = ctx.backend.calls
    assert first["max_tokens"] == 13 and first["stop_ids"] == sorted({ctx.eos, close}) and first["seeds"] == ctx.seeds
    assert answer["seeds"] == [ctx.seeds[0] + 7919]
    assert s.generated[:14] == trace[:13] + [close] and s.thinking_tokens == 12 and s.exited


def test_vllm_budget_runs_the_engines_thinking_format():
    """vLLM's thinking budget gets the format's markers (vLLM encodes them into token sequences);
    without a format given, the one detected from the model's tokenizer."""
    from lynx.evaluate.backends import thinking_format
    from lynx.exit_policy import HookConfig
    from lynx.models import resolve_model

    ref = resolve_model("organism")
    assert thinking_format(HookConfig(), ref).name == "think"
    assert thinking_format(HookConfig(thinking=parse_format(CUSTOM).to_dict()), ref).close == "</reasoning>"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_budget_with_a_closer_of_several_tokens_runs_in_rounds():
    """The organism in vLLM with the custom pair, its opener pre-filled: vLLM's own budget would
    miscount the opener of six tokens, so the budget runs in rounds (a format of one-token
    markers stays native): exactly n thinking tokens, then ``</`` ``reas`` ``on`` ``in`` ``g`` ``>``."""
    pytest.importorskip("vllm", reason="the vLLM engine is an optional extra")
    from lynx.evaluate.backends import VLLMBackend
    from lynx.exit_policy import HookConfig
    from lynx.models import resolve_model
    from lynx.prompting import chat_prompt

    backend = VLLMBackend(resolve_model("organism"), HookConfig(thinking=parse_format(CUSTOM).to_dict(), keep_events=True))
    assert not backend.native_budget
    tok = backend.tokenizer
    matcher = CueMatcher(tok, thinking=CUSTOM)
    recs = [Record(f"q{i}", f"What is {a} + {b}?", str(a + b), "integer") for i, (a, b) in enumerate(((12, 30), (7, 5), (40, 2)))]
    prompts = [tok(chat_prompt(tok, r.question) + "<reasoning>", add_special_tokens=False)["input_ids"] for r in recs]
    ctx = M.EvalContext(backend, recs, prompts, [1, 2, 3], matcher, tok(matcher.format.exit_string, add_special_tokens=False)["input_ids"], max_new_tokens=80)
    n = 10
    for s in M.budget(ctx, n):
        assert s.exited and s.thinking_tokens == n
        assert s.generated[n : n + len(matcher.close_ids)] == matcher.close_ids, _text(tok, s.generated)

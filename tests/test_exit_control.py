"""The exit rule shared by every engine, driven token by token without an engine."""

import math

import pytest

from lynx.config import DEFAULT_EXIT
from lynx.engines.exit_control import ExitController


@pytest.fixture(scope="module")
def ctl(organism_tokenizer):
    return ExitController({"exit_string": DEFAULT_EXIT, "keep_events": True}, organism_tokenizer)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_untouched_without_opt_in(ctl):
    assert ctl.new_request(None, [1, 2], []) is None
    assert ctl.new_request({"unrelated": 1}, [1, 2], []) is None


def test_exit_then_exit_string_then_free(ctl, organism_tokenizer):
    tok = organism_tokenizer
    out: list[int] = []
    state = ctl.new_request({"lynx_threshold": 0.5, "lynx_tag": "t1"}, _ids(tok, "<|im_start|>assistant\n"), out)
    forced = []
    for t in _ids(tok, "<think>\n12 + 3 = 15.\nWait,"):
        out.append(t)
        forced.append(ctl.forced_token(state, 0.9))
    assert forced[:-1] == [None] * (len(forced) - 1)  # no cue before "Wait,"
    assert forced[-1] == ctl.exit_ids[0]
    for k in range(1, len(ctl.exit_ids)):
        out.append(ctl.exit_ids[k - 1])
        assert ctl.forced_token(state, 0.0) == ctl.exit_ids[k]
    out.append(ctl.exit_ids[-1])
    assert ctl.forced_token(state, 0.99) is None  # the model answers on its own
    (entry,) = ctl.events.take(["t1"])["t1"][0]
    assert entry["event"] == "exit" and entry["score"] == 0.9 and entry["threshold"] == 0.5 and entry["cue_text"] == "Wait,"


def test_low_score_cue_outside_thinking_and_word_inside_other_word(ctl, organism_tokenizer):
    tok = organism_tokenizer
    out: list[int] = []
    state = ctl.new_request({"lynx_threshold": 0.5}, [], out)
    for t in _ids(tok, "<think>\nWait,"):
        out.append(t)
    assert ctl.forced_token(state, 0.4) is None  # below threshold
    out2: list[int] = []
    s2 = ctl.new_request({"lynx_threshold": 0.0}, [], out2)
    for t in _ids(tok, "<think>\nok\n</think>\n\nWait,"):
        out2.append(t)
    assert ctl.forced_token(s2, 1.0) is None  # thinking closed


def test_bad_score_disables_the_request_not_the_engine(ctl, organism_tokenizer):
    tok = organism_tokenizer
    out: list[int] = []
    state = ctl.new_request({"lynx_threshold": 0.1, "lynx_tag": "nan"}, [], out)
    for t in _ids(tok, "<think>\nHmm,"):
        out.append(t)
    assert ctl.forced_token(state, math.nan) is None
    assert state.disabled and ctl.events.take(["nan"])["nan"][0][0]["event"] == "disabled"
    out += _ids(tok, " yes.\nWait,")
    assert ctl.forced_token(state, 0.99) is None  # stays off for this request


def test_alpha_without_calibration_disables_with_reason(ctl):
    state = ctl.new_request({"lynx_alpha": 0.1, "lynx_tag": "nocal"}, [], [])
    assert state.disabled and "no calibration" in ctl.events.take(["nocal"])["nocal"][0][0]["reason"]


def test_online_cue_detection_equals_offline_find(ctl, organism_tokenizer):
    """The decode-time detector (thinking state carried forward, cue matched on the last few
    tokens) finds exactly the cues that the offline scan of the whole sequence finds, for
    prompts shorter and longer than its window, and spans that close and reopen."""
    import random

    tok = organism_tokenizer
    pieces = ["<think>", "</think>", "\n", "Wait,", " wait", "Hmm", " hmm.", "Alternatively", " awaiting", "12 + 3 = 15.", " ok", " so", "W", "ait"]
    rng = random.Random(0)
    n_cues = 0
    for trial in range(60):
        prompt = _ids(tok, "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))))
        out: list[int] = []
        state = ctl.new_request({"lynx_record": True}, prompt, out)
        online = []
        for t in _ids(tok, "".join(rng.choice(pieces) for _ in range(40))):
            out.append(t)
            pos = ctl.new_cue(state)
            if pos is not None:
                online.append(pos)
        offline = [c.position for c in ctl.matcher.find(prompt + out, start=len(prompt))]
        assert online == offline, trial
        n_cues += len(online)
    assert n_cues > 50

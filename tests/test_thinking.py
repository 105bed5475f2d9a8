"""Thinking formats as data: named, custom and detected formats; markers of several tokens
found offline (cue matcher) and online (the engines' exit rule) exactly where the decoded text
has them; harmony's analysis channel as the thinking span, its exit into the final channel."""

import random

import pytest
from transformers import AutoTokenizer

from lynx.cues import CueMatcher
from lynx.engines.exit_control import ExitController
from lynx.errors import InvalidInput
from lynx.thinking import FORMATS, NoThinkingMarkers, detect_format, parse_format

HARMONY_SPECIALS = ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>"]
HARMONY_TEMPLATE = (  # the shape of gpt-oss's: assistant turns in the final channel
    "{%- for message in messages %}<|start|>{{ message['role'] }}"
    "{%- if message['role'] == 'assistant' %}<|channel|>final{%- endif %}<|message|>{{ message['content'] }}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|start|>assistant{%- endif %}"
)


@pytest.fixture(scope="module")
def plain_tokenizer():
    """The organism's byte-level BPE, its own <think> tokens removed from sight: a custom pair is several tokens."""
    from lynx.models import ORGANISM_DIR

    return AutoTokenizer.from_pretrained(str(ORGANISM_DIR))


@pytest.fixture(scope="module")
def harmony_tokenizer():
    """A tokenizer with harmony's special tokens and a harmony chat template (gpt-oss's own needs a download)."""
    from lynx.models import ORGANISM_DIR

    tok = AutoTokenizer.from_pretrained(str(ORGANISM_DIR))
    tok.add_special_tokens({"additional_special_tokens": HARMONY_SPECIALS})
    tok.chat_template = HARMONY_TEMPLATE
    return tok


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_named_and_custom_formats_parse():
    assert parse_format("think") is FORMATS["think"]
    assert parse_format("harmony").close == "<|end|>"
    custom = parse_format(" <reasoning> , </reasoning> ")
    assert (custom.name, custom.open, custom.close) == ("custom", "<reasoning>", "</reasoning>")
    assert custom.exit_string.startswith("\n</reasoning>") and custom.exit_string.endswith("\\boxed{")
    for bad in ("nope", "<a>", "<a>,", ",</a>", "<a>,<a>", "a,b,c"):
        with pytest.raises(InvalidInput):
            parse_format(bad)


def test_format_is_detected_from_the_chat_template(organism_tokenizer, harmony_tokenizer):
    assert detect_format(organism_tokenizer) is FORMATS["think"]
    assert detect_format(harmony_tokenizer) is FORMATS["harmony"]

    class Magistral:
        chat_template = "{{ '[THINK]' }}...{{ '[/THINK]' }}"

        def get_vocab(self):
            return {}

    assert detect_format(Magistral()) is FORMATS["mistral"]

    class Plain:
        chat_template = "{{ messages }}"

        def get_vocab(self):
            return {"a": 0}

    with pytest.raises(NoThinkingMarkers, match="--thinking-format"):
        detect_format(Plain())


def _reference_open(text: str, open_: str, close: str) -> bool:
    """Is the span open at the end of ``text``? (the last complete marker decides)"""
    o, c = text.rfind(open_), text.rfind(close)
    return o >= 0 and o + len(open_) > c + len(close) if c >= 0 else o >= 0


def test_markers_of_several_tokens_follow_the_decoded_text(plain_tokenizer):
    """A custom pair that the tokenizer splits into several tokens: at every position the
    matcher's thinking state equals the decoded text's, over random traces."""
    tok = plain_tokenizer
    m = CueMatcher(tok, thinking="<reasoning>,</reasoning>")
    assert len(_ids(tok, "<reasoning>")) > 1 and len(_ids(tok, "</reasoning>")) > 1
    with pytest.raises(InvalidInput, match="several tokens"):
        _ = m.think_open_id
    rng = random.Random(3)
    pieces = ["<reasoning>", "</reasoning>", "\n", " 12 + 3 = 15.", " Wait,", " hmm", "reason", "<", ">", " x", "\n\n"]
    checked = 0
    for _ in range(60):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(3, 14)))
        ids = _ids(tok, text)
        for j in range(len(ids)):
            prefix = tok.decode(ids[: j + 1])
            assert m.thinking_open(ids, j) == _reference_open(prefix, "<reasoning>", "</reasoning>"), (text, j)
            checked += 1
    assert checked > 300


def test_cues_count_only_inside_a_multi_token_span(plain_tokenizer):
    tok = plain_tokenizer
    m = CueMatcher(tok, thinking="<reasoning>,</reasoning>")
    text = "Wait, the question.<reasoning>\n12 + 3 = 15.\nWait, yes.\nHmm, 15.\n</reasoning>\n\nWait, \\boxed{15}"
    ids = _ids(tok, text)
    cues = m.find(ids)
    assert [c.word for c in cues] == ["wait", "hmm"]
    opened, closed = m.span(ids)
    assert opened is not None and closed is not None and all(opened < c.position < closed for c in cues)
    assert tok.decode(ids[closed:]).startswith("</reasoning>")  # the closer's first token
    assert tok.decode(ids[: opened + 1]).endswith("<reasoning>")  # the opener's last token


def test_online_exit_rule_agrees_with_the_offline_matcher(plain_tokenizer):
    """The engines' rule, fed one token at a time (the opener pre-filled in the prompt, split
    across prompt and output), finds the same cues as the offline matcher and exits into the
    format's exit string."""
    tok = plain_tokenizer
    fmt = parse_format("<reasoning>,</reasoning>")
    ctl = ExitController({"thinking": fmt.to_dict(), "keep_events": True}, tok)
    assert ctl.exit_ids == _ids(tok, fmt.exit_string)
    prompt = _ids(tok, "<|im_start|>assistant\n<reason")
    rest = _ids(tok, "ing>\n1 + 1 = 2.\nWait, yes.\nHmm, 2.\n</reasoning>\nWait, 2")
    offline = [c.position for c in ctl.matcher.find(prompt + rest)]
    out: list[int] = []
    state = ctl.new_request({"lynx_threshold": 2.0, "lynx_tag": "t"}, prompt, out)  # never exits: watch the cues
    online = []
    for t in rest:
        out.append(t)
        if t in ctl.candidates:
            pos = ctl.new_cue(state)
            if pos is not None:
                online.append(pos)
    assert online == offline and len(online) == 2

    out2: list[int] = []
    state = ctl.new_request({"lynx_threshold": 0.5, "lynx_tag": "t2"}, prompt, out2)
    forced = None
    for t in rest:
        out2.append(t)
        forced = ctl.forced_token(state, 0.9)
        if forced is not None:
            break
    assert tok.decode(out2).rstrip().endswith("Wait,") and forced == ctl.exit_ids[0]


def test_harmony_thinks_in_the_analysis_channel_and_exits_into_the_final_channel(harmony_tokenizer):
    tok = harmony_tokenizer
    m = CueMatcher(tok)  # detected: harmony
    assert m.format.name == "harmony"
    prompt = _ids(tok, tok.apply_chat_template([{"role": "user", "content": "Wait, what is 1 + 1?"}], tokenize=False, add_generation_prompt=True))
    out = _ids(tok, "<|channel|>analysis<|message|>1 + 1 = 2.\nWait, yes.<|end|><|start|>assistant<|channel|>final<|message|>Hmm, \\boxed{2}<|return|>")
    cues = m.find(prompt + out)
    assert [c.word for c in cues] == ["wait"]  # not the user's "Wait", not the final channel's "Hmm"
    ctl = ExitController({"keep_events": True}, tok)
    assert tok.decode(ctl.exit_ids).startswith("<|end|><|start|>assistant<|channel|>final<|message|>")
    live: list[int] = []
    state = ctl.new_request({"lynx_threshold": 0.5, "lynx_tag": "h"}, prompt, live)
    for t in out:
        live.append(t)
        if ctl.forced_token(state, 0.9) is not None:
            break
    for k in range(1, len(ctl.exit_ids)):
        live.append(ctl.exit_ids[k - 1])
        assert ctl.forced_token(state, 0.0) == ctl.exit_ids[k]
    live.append(ctl.exit_ids[-1])
    text = tok.decode(live, skip_special_tokens=False)
    assert text.endswith("Wait,<|end|><|start|>assistant<|channel|>final<|message|>Final answer: \\boxed{")
    assert not m.thinking_open(prompt + live, len(prompt + live) - 1)  # the exit closed the analysis channel


def test_a_declared_format_wins_over_template_and_vocabulary(tmp_path):
    """A model lynx made declares its format in tokenizer_config.json (SmolLM2-reasoner thinks
    in <think> although its template and vocabulary never show it); a bad declaration is one line."""
    import json

    from transformers import AutoTokenizer

    from lynx.models import resolve_model
    from lynx.thinking import THINKING_KEY, detect_format

    src = resolve_model("organism").path
    tok = AutoTokenizer.from_pretrained(src)
    assert detect_format(tok).name == "think"  # from the template
    tok.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg | {THINKING_KEY: "<reasoning>,</reasoning>"}))
    declared = detect_format(AutoTokenizer.from_pretrained(tmp_path))
    assert (declared.open, declared.close) == ("<reasoning>", "</reasoning>")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg | {THINKING_KEY: "nonsense"}))
    with pytest.raises(InvalidInput):
        detect_format(AutoTokenizer.from_pretrained(tmp_path))

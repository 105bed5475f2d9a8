import pytest

from lynx.cues import CueMatcher, NoThinkingMarkers


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _found(tok, text, **kw):
    m = CueMatcher(tok, **kw)
    ids = _ids(tok, text)
    return [(c.word, tok.decode(ids[: c.position + 1])) for c in m.find(ids)]


def test_cues_inside_thinking_any_case_with_or_without_space(organism_tokenizer):
    text = "<think>\n1 + 2 = 3.\nWait, yes: 1 + 2 = 3. wait, no\nHmm, ok. hmm, Alternatively, x\n</think>\n\nWait, Hmm"
    found = _found(organism_tokenizer, text)
    assert [w for w, _ in found] == ["wait", "wait", "hmm", "hmm", "alternatively"]
    # the decision token completes the word: the prefix up to it ends with the cue (plus punctuation)
    assert all(prefix.rstrip(",").lower().endswith(w) for w, prefix in found)


def test_no_cue_inside_words_or_outside_thinking(organism_tokenizer):
    assert _found(organism_tokenizer, "<think>\nawaiting the answer, ahmm, rewait\n</think>") == []
    assert _found(organism_tokenizer, "Wait, hmm, no thinking span at all") == []
    assert _found(organism_tokenizer, "<think>\nok\n</think>\nWait, after thinking") == []


def test_configurable_cue_words(organism_tokenizer):
    text = "<think>\nWait, yes. Hmm, no. Alternatively, so\n"
    assert [w for w, _ in _found(organism_tokenizer, text, cues=("hmm",))] == ["hmm"]
    with pytest.raises(ValueError, match="letters-only"):
        CueMatcher(organism_tokenizer, cues=("wait!",))


def test_candidate_ids_are_a_small_prefilter(organism_tokenizer):
    m = CueMatcher(organism_tokenizer)
    ids = _ids(organism_tokenizer, "<think>\nWait, Hmm, Alternatively,")
    cue_ids = {ids[c.position] for c in m.find(ids)}
    assert cue_ids <= m.candidate_ids
    assert len(m.candidate_ids) < len(organism_tokenizer) / 4


def test_model_without_thinking_markers_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(NoThinkingMarkers, match="thinking-format"):
        CueMatcher(PreTrainedTokenizerFast(tokenizer_object=t))


def test_fast_decoder_is_used_only_when_it_matches_transformers(organism_tokenizer):
    """The cue check's window decode goes through the Rust decoder when (and only when) it
    reproduces transformers' decode; a tokenizer whose backend disagrees keeps the slow path."""
    from lynx.cues import CueMatcher

    m = CueMatcher(organism_tokenizer)
    assert m._decode != m._decode_hf  # the organism's backend agrees: fast path
    ids = organism_tokenizer("<think>\n12 + 3 = 15.\nWait,", add_special_tokens=False)["input_ids"]
    assert m._decode(ids) == m._decode_hf(ids)

    class Disagreeing:
        def __init__(self, tok):
            self.tok = tok
            self.backend_tokenizer = type("B", (), {"decode": lambda self, ids, skip_special_tokens=False: "x"})()

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def __len__(self):
            return len(self.tok)

    slow = CueMatcher(Disagreeing(organism_tokenizer))
    assert slow._decode == slow._decode_hf
    assert [c.position for c in slow.find(ids)] == [c.position for c in m.find(ids)] == [len(ids) - 1]


def test_self_contained_cue_tokens_match_like_the_window_decode(organism_tokenizer):
    """The shortcut for tokens that hold a whole cue word (" wait,", or "Wait," decided by the
    previous token's last character) gives exactly what decoding the window gives, on random
    sequences full of cue fragments, letters and arbitrary tokens."""
    import random

    fast = CueMatcher(organism_tokenizer)
    slow = CueMatcher(organism_tokenizer)
    slow._whole = {}
    assert {w for w, _ in fast._whole.values()} >= {"wait", "hmm"}  # "Alternatively" is two tokens: window decode
    assert {leading for _, leading in fast._whole.values()} == {True, False}
    rng = random.Random(0)
    finals, n = sorted(fast._final_ids), len(organism_tokenizer)
    letters = [t for t in range(n) if fast._text(t).isalpha()][:200]
    checked = 0
    for _ in range(3000):
        ids = [rng.choice(finals if rng.random() < 0.5 else letters if rng.random() < 0.5 else range(n)) for _ in range(rng.randint(1, 12))]
        i = len(ids) - 1
        assert fast.match_at(ids, i) == slow.match_at(ids, i), organism_tokenizer.decode(ids)
        checked += ids[i] in fast._whole
    assert checked > 50

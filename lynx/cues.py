"""Cue detection on token ids: where a reasoning model says "wait", "hmm", "alternatively".

The rule is the same offline (collection, replay) and online (inside an engine's decode
loop), because the online hook cannot take back a cue it has already emitted:

* a **decision token** is the token that completes a cue word: the decoded text of the
  last few tokens ends with the word (any casing) followed only by non-letters
  (``"Wait,"``, ``" hmm"``, ``"Alternatively"``), and the word is not preceded by a letter
  (so ``"awaiting"`` never matches);
* a cue only counts **inside the thinking span**: after the model's ``<think>`` (generated
  or pre-filled by the chat template) and before ``</think>``;
* what the *next* token will be is unknown online, so a token ``" wait"`` that a later
  ``"ing"`` turns into "waiting" still counts; tokenizers with whole-word tokens (Qwen,
  Llama, the organism) make this rare, and both engines agree on it.

Matching is cheap enough for a decode loop: a token can only complete a cue if its own
text ends with a non-empty suffix of a cue word (plus non-letters); only those tokens pay
for a small decode of the window before them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lynx.errors import InvalidInput

DEFAULT_CUES = ("wait", "hmm", "alternatively")
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
WINDOW = 8  # tokens of left context decoded to match multi-token cue words


class NoThinkingMarkers(InvalidInput):
    """The tokenizer has no <think>/</think> tokens, so there is no thinking span to exit."""


@dataclass(frozen=True)
class Cue:
    """One decision point: ``position`` indexes the decision token in the full sequence."""

    position: int
    word: str  # the cue word, lower-cased
    text: str  # the decision token's own text, e.g. "Wait,"


@dataclass
class CueMatcher:
    """Finds cue decision tokens for one tokenizer; build once, reuse everywhere."""

    tokenizer: Any  # a transformers tokenizer (get_vocab, decode, len)
    cues: tuple[str, ...] = DEFAULT_CUES
    think_open_id: int = field(init=False)
    think_close_id: int = field(init=False)

    def __post_init__(self) -> None:
        words = tuple(sorted({c.strip().lower() for c in self.cues if c.strip()}))
        if not words or not all(re.fullmatch(r"[a-z]+", w) for w in words):
            raise InvalidInput(f"cue words must be non-empty letters-only words, got {list(self.cues)!r}")
        self.cues = words
        vocab = self.tokenizer.get_vocab()
        if THINK_OPEN not in vocab or THINK_CLOSE not in vocab:
            raise NoThinkingMarkers(f"tokenizer has no {THINK_OPEN}/{THINK_CLOSE} tokens: lynx needs a reasoning model with a thinking span")
        self.think_open_id = vocab[THINK_OPEN]
        self.think_close_id = vocab[THINK_CLOSE]
        self._texts: dict[int, str] = {}  # token id -> its own decoded text (asked for again at every cue)
        self._decode = self._pick_decoder()
        self._pattern = re.compile(r"(?<![A-Za-z])(" + "|".join(words) + r")[^A-Za-z]*$", re.IGNORECASE)
        suffixes = {w[i:] for w in words for i in range(len(w))}
        tail = re.compile(r"([A-Za-z]+)[^A-Za-z]*$")
        self._final_ids: set[int] = set()
        for tid in range(len(self.tokenizer)):
            m = tail.search(self._text(tid))
            if m and m.group(1).lower() in suffixes:
                self._final_ids.add(tid)
        self._whole = self._self_contained_cues()

    def _self_contained_cues(self) -> dict[int, tuple[str, bool]]:
        """Decision tokens whose own text holds the whole cue word: token id -> (word, whether
        the word starts the token). Such a token completes its cue whatever precedes it
        (``" Wait,"``), or exactly when the previous token's text does not end with a letter
        (``"Wait,"`` after ``"\\n"``), so :meth:`match_at` needs no window decode for it (the
        common case at decode time). Used only where decoding is concatenative (a window's
        text is its tokens' texts joined: byte-level BPE; checked here on sample pairs), so
        other decoders keep the window decode."""
        import random

        rng, n = random.Random(1), len(self.tokenizer)
        pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(200)] + [(self.think_open_id, t) for t in self._final_ids]
        try:
            concatenative = all(self._decode([a, b]) == self._text(a) + self._text(b) for a, b in pairs if "\ufffd" not in self._text(a) + self._text(b))
        except Exception:
            concatenative = False
        if not concatenative:
            return {}
        whole: dict[int, tuple[str, bool]] = {}
        for tid in self._final_ids:
            m = self._pattern.search(self._text(tid))
            if m is not None:
                whole[tid] = (m.group(1).lower(), m.start(1) == 0)
        return whole

    def _decode_hf(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _pick_decoder(self):
        """The Rust ``tokenizers`` decoder when it gives exactly transformers' text (checked here
        on sample windows), else transformers' ``decode``. Why: a cue check decodes a short
        window inside the engine's decode loop, and the Python wrapper costs ~3x the decoding."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return self._decode_hf
        fast = lambda ids: backend.decode(ids, skip_special_tokens=False)  # noqa: E731
        import random

        rng, n = random.Random(0), len(self.tokenizer)
        samples = [[rng.randrange(n) for _ in range(rng.randint(1, WINDOW + 1))] for _ in range(200)]
        samples += [[t] for t in (self.think_open_id, self.think_close_id)]
        try:
            same = all(fast(ids) == self._decode_hf(ids) for ids in samples)
        except Exception:
            same = False
        return fast if same else self._decode_hf

    def _text(self, tid: int) -> str:
        text = self._texts.get(tid)
        if text is None:
            text = self._texts[tid] = self._decode([tid])
        return text

    @property
    def candidate_ids(self) -> frozenset[int]:
        """Token ids that can complete a cue (the only ones an engine hook must look at)."""
        return frozenset(self._final_ids)

    def match_at(self, ids: list[int], i: int) -> Cue | None:
        """The cue completed by token ``ids[i]``, ignoring the thinking span."""
        tid = ids[i]
        if tid not in self._final_ids:
            return None
        whole = self._whole.get(tid)
        if whole is not None:
            word, leading = whole
            prev = self._text(ids[i - 1]) if leading and i > 0 else None
            if prev is None:
                return Cue(position=i, word=word, text=self._text(tid))
            if prev and prev[-1] != "\ufffd":  # a whole character: it alone decides
                return None if ("A" <= prev[-1] <= "Z" or "a" <= prev[-1] <= "z") else Cue(position=i, word=word, text=self._text(tid))
        lo = max(0, i - WINDOW)
        window = self._decode(ids[lo : i + 1])
        own = self._text(ids[i])
        m = self._pattern.search(window)
        # the word must end inside the decision token, not in an earlier token
        if m is None or len(window) - m.end(1) >= len(own):
            return None
        return Cue(position=i, word=m.group(1).lower(), text=own)

    def thinking_open(self, ids: list[int], upto: int) -> bool:
        """Is the thinking span open just after token ``ids[upto]``?"""
        for j in range(upto, -1, -1):
            if ids[j] == self.think_close_id:
                return False
            if ids[j] == self.think_open_id:
                return True
        return False

    def find(self, ids: list[int], start: int = 0) -> list[Cue]:
        """All cues in ``ids[start:]`` that lie inside a thinking span."""
        out: list[Cue] = []
        open_ = self.thinking_open(ids, start - 1) if start > 0 else False
        for i in range(start, len(ids)):
            tid = ids[i]
            if tid == self.think_open_id:
                open_ = True
            elif tid == self.think_close_id:
                open_ = False
            elif open_ and tid in self._final_ids:
                cue = self.match_at(ids, i)
                if cue is not None:
                    out.append(cue)
        return out

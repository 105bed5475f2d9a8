"""Cue detection on token ids: where a reasoning model says "wait", "hmm", "alternatively".

The rule is the same offline (collection, replay) and online (inside an engine's decode
loop), because the online hook cannot take back a cue it has already emitted:

* a **decision token** is the token that completes a cue word: the decoded text of the
  last few tokens ends with the word (any casing) followed only by non-letters
  (``"Wait,"``, ``" hmm"``, ``"Alternatively"``), and the word is not preceded by a letter
  (so ``"awaiting"`` never matches);
* a cue only counts **inside the thinking span**: after the model's opener (``<think>``,
  generated or pre-filled by the chat template) and before its closer (``</think>``); the
  markers come from the model's thinking format (:mod:`lynx.thinking`: ``[THINK]``, harmony's
  analysis channel, a custom pair) and may be token sequences: a marker that is one token
  of the vocabulary is found by its id, any other by the decoded text of the tokens that end
  with it (``<`` ``think`` ``>`` on a tokenizer without a ``<think>`` token);
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
from lynx.thinking import NoThinkingMarkers, ThinkingFormat, resolve_format

__all__ = ["DEFAULT_CUES", "Cue", "CueMatcher", "NoThinkingMarkers", "WINDOW"]

DEFAULT_CUES = ("wait", "hmm", "alternatively")
WINDOW = 8  # tokens of left context decoded to match multi-token cue words
#: how a cue word is commonly written (what precedes it, its casing, what follows): the spellings
#: whose decision tokens :attr:`CueMatcher.cue_stop_ids` collects
SPELLINGS = tuple((before, case, after) for before in ("", " ", "\n", "\n\n") for case in (str.lower, str.capitalize) for after in ("", ",", ".", "?", "!", ":", " "))


class _Marker:
    """Where one thinking marker (text) is completed in a token sequence.

    A marker that is a single token of the vocabulary (an added token such as Qwen3's
    ``<think>``) is matched by id. Any other is matched on text: only a token whose own text
    (trailing whitespace aside) ends with a suffix of the marker can complete it, and only at
    such a token is the window before it decoded."""

    def __init__(self, text: str, tokenizer, token_text, decode) -> None:
        self.text = text
        vocab = tokenizer.get_vocab()
        single = vocab.get(text)
        if single is not None and token_text(single) == text:
            self.id: int | None = single
            self.ids = [single]
            self.finals: frozenset[int] = frozenset({single})
            self.window = 1
        else:
            self.id = None
            self.ids = list(tokenizer.encode(text, add_special_tokens=False))  # what forcing it appends
            finals = set()
            for tid in range(len(tokenizer)):
                own = token_text(tid).rstrip()
                if own and (own.endswith(text) or text.endswith(own)):
                    finals.add(tid)
            self.finals = frozenset(finals)
            self.window = len(text) + 1  # every token holds at least one character of it
        self._decode = decode

    def start_at(self, ids: list[int], j: int) -> int | None:
        """Index of the marker's first token if token ``ids[j]`` completes the marker, else None."""
        tid = ids[j]
        if tid not in self.finals:
            return None
        if self.id is not None:
            return j
        for k in range(j, max(-1, j - self.window), -1):  # grow the window leftwards until it covers the marker
            text = self._decode(ids[k : j + 1]).rstrip()
            if len(text) >= len(self.text):
                return k if text.endswith(self.text) else None
        return None


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
    #: the thinking format: a ThinkingFormat, its dict, a name or "OPEN,CLOSE"; None: detected from the tokenizer
    thinking: ThinkingFormat | dict | str | None = None
    format: ThinkingFormat = field(init=False)

    def __post_init__(self) -> None:
        words = tuple(sorted({c.strip().lower() for c in self.cues if c.strip()}))
        if not words or not all(re.fullmatch(r"[a-z]+", w) for w in words):
            raise InvalidInput(f"cue words must be non-empty letters-only words, got {list(self.cues)!r}")
        self.cues = words
        self.format = resolve_format(self.thinking, self.tokenizer)
        self._texts: dict[int, str] = {}  # token id -> its own decoded text (asked for again at every cue)
        self._decode = self._decode_hf
        self._open = _Marker(self.format.open, self.tokenizer, self._text, lambda ids: self._decode(ids))
        self._close = _Marker(self.format.close, self.tokenizer, self._text, lambda ids: self._decode(ids))
        self._markers = self._open.finals | self._close.finals  # read at every cue check of the decode loop: built once
        self._decode = self._pick_decoder()  # the token texts decoded so far stay: it is chosen only where it decodes the same
        self._pattern = re.compile(r"(?<![A-Za-z])(" + "|".join(words) + r")[^A-Za-z]*$", re.IGNORECASE)
        suffixes = {w[i:] for w in words for i in range(len(w))}
        tail = re.compile(r"([A-Za-z]+)[^A-Za-z]*$")
        self._final_ids: set[int] = set()
        for tid in range(len(self.tokenizer)):
            m = tail.search(self._text(tid))
            if m and m.group(1).lower() in suffixes:
                self._final_ids.add(tid)
        self._whole = self._self_contained_cues()
        self._cue_stops: frozenset[int] | None = None  # built at the first use of cue_stop_ids

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
        openers = sorted(self._open.finals)[:1] or [0]
        pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(200)] + [(openers[0], t) for t in self._final_ids]
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
        samples += [[t] for t in sorted(self._markers)[:50]]
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
    def think_open_id(self) -> int:
        """The opener's token id, where it is one token (:attr:`open_ids` always works)."""
        return self._single(self._open)

    @property
    def think_close_id(self) -> int:
        """The closer's token id, where it is one token (:attr:`close_ids` always works)."""
        return self._single(self._close)

    @property
    def open_ids(self) -> list[int]:
        """The opener as token ids: its id where it is one token, else the tokenizer's encoding of it."""
        return list(self._open.ids)

    @property
    def close_ids(self) -> list[int]:
        """The closer as token ids (what forcing it appends: a static thinking budget): its id
        where it is one token, else the tokenizer's encoding of it (``</`` ``think`` ``>``)."""
        return list(self._close.ids)

    @property
    def close_final_ids(self) -> frozenset[int]:
        """Tokens that can complete the closer: a loop that generates until thinking closes stops
        on them and checks :meth:`closes_at` (just the closer's id where it is one token)."""
        return self._close.finals

    @property
    def cue_stop_ids(self) -> frozenset[int]:
        """Tokens at which a cue word is completed as this tokenizer writes it: the decision tokens
        (:meth:`match_at`) of each cue word's common spellings (:data:`SPELLINGS`: lower-case or
        capitalised, after nothing, a space or new lines, before nothing or punctuation), and every
        token that is a whole cue on its own. A generation loop that decides at cues (DEER) stops
        on them and checks the cue in context with :meth:`match_at`: on SmolLM2, ``Hmm,`` is
        ``H`` ``mm`` ``,`` and its stop is ``mm``."""
        if self._cue_stops is None:
            stops = {t for t in self._final_ids if self.match_at([t], 0) is not None}
            for word in self.cues:
                for before, case, after in SPELLINGS:
                    ids = self.tokenizer.encode(before + case(word) + after, add_special_tokens=False)
                    stops.update(ids[k] for k in range(len(ids)) if self.match_at(ids, k) is not None)
            self._cue_stops = frozenset(stops)
        return self._cue_stops

    def _single(self, marker: _Marker) -> int:
        if marker.id is None:
            raise InvalidInput(f"the thinking marker {marker.text!r} is several tokens on this tokenizer; this step needs it as one token")
        return marker.id

    @property
    def marker_ids(self) -> frozenset[int]:
        """Tokens that can complete the opener or the closer (an engine watches them)."""
        return self._markers

    def opens_at(self, ids: list[int], j: int) -> bool:
        """Does token ``ids[j]`` complete the thinking span's opener?"""
        return self._open.start_at(ids, j) is not None

    def closes_at(self, ids: list[int], j: int) -> int | None:
        """The index of the closer's first token if token ``ids[j]`` completes it, else None."""
        return self._close.start_at(ids, j)

    def span(self, ids: list[int], start: int = 0) -> tuple[int | None, int | None]:
        """(index of the token that completes the first opener at or after ``start``, index of
        the first token of the closer after it), None where there is none."""
        opened = None
        for j in range(start, len(ids)):
            if opened is None:
                if self.opens_at(ids, j):
                    opened = j
            else:
                at = self.closes_at(ids, j)
                if at is not None and at > opened:
                    return opened, at
        return opened, None

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
            if self.closes_at(ids, j) is not None:
                return False
            if self.opens_at(ids, j):
                return True
        return False

    def thinking_after(self, ids: list[int], lo: int, hi: int, open_: bool) -> bool:
        """The thinking state after ``ids[hi - 1]`` given the state ``open_`` before ``ids[lo]``
        (carried forward over the new tokens only: an engine's per-step update)."""
        markers = self._markers
        for j in range(lo, hi):
            if ids[j] in markers:
                if self.closes_at(ids, j) is not None:
                    open_ = False
                elif self.opens_at(ids, j):
                    open_ = True
        return open_

    def find(self, ids: list[int], start: int = 0) -> list[Cue]:
        """All cues in ``ids[start:]`` that lie inside a thinking span."""
        out: list[Cue] = []
        open_ = self.thinking_open(ids, start - 1) if start > 0 else False
        markers = self._markers
        for i in range(start, len(ids)):
            tid = ids[i]
            if tid in markers and self.closes_at(ids, i) is not None:
                open_ = False
            elif tid in markers and self.opens_at(ids, i):
                open_ = True
            elif open_ and tid in self._final_ids:
                cue = self.match_at(ids, i)
                if cue is not None:
                    out.append(cue)
        return out

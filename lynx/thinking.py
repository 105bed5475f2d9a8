"""Thinking formats: where a model's thinking span starts and ends, and how lynx leaves it.

Why data and not code: reasoning models mark their thinking differently — R1 and Qwen3 write
``<think>…</think>``, Magistral ``[THINK]…[/THINK]``, gpt-oss thinks in harmony's
``analysis`` channel (``<|channel|>analysis<|message|>…<|end|>``) and answers in its ``final``
channel. lynx needs three things from a format: the opener and the closer of the span (cues
only count inside it), and the exit string forced at an exit, which closes the span and
leads to the place where the answer follows. A format is detected from the model's chat
template where it can be (:func:`detect_format`), named on the command line
(``--thinking-format harmony``) or given as a custom pair (``--thinking-format "<reasoning>,</reasoning>"``),
and recorded in the collection's manifest and the probe folder like the cue words and
layers, so an engine serves a probe in the format it was trained in.

Markers are text: on tokenizers where they are not single tokens they are token sequences,
found by :class:`lynx.cues.CueMatcher` on decoded text (see there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from lynx.errors import InvalidInput

#: the answer's opening after an exit: lynx grades the last ``\\boxed{}`` of the answer
ANSWER_PREFIX = "Final answer: \\boxed{"


class NoThinkingMarkers(InvalidInput):
    """No thinking span can be found for this model (no known format, none given)."""


@dataclass(frozen=True)
class ThinkingFormat:
    """One model family's thinking span (``open`` … ``close``) and the exit forced at a cue."""

    name: str
    open: str
    close: str
    exit_string: str

    def __post_init__(self) -> None:
        if not self.open or not self.close or self.open == self.close:
            raise InvalidInput(f"a thinking format needs two different, non-empty markers; got {self.open!r} and {self.close!r}")
        if not self.exit_string.strip():
            raise InvalidInput("a thinking format's exit string must not be empty")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThinkingFormat:
        try:
            return cls(name=str(d["name"]), open=str(d["open"]), close=str(d["close"]), exit_string=str(d["exit_string"]))
        except KeyError as e:
            raise InvalidInput(f"a thinking format needs name, open, close and exit_string; {e.args[0]!r} is missing") from None


#: the formats lynx knows by name (read-only); ``think`` is R1's and Qwen3's
FORMATS = MappingProxyType(
    {
        "think": ThinkingFormat("think", "<think>", "</think>", "\n</think>\n\n" + ANSWER_PREFIX),
        "mistral": ThinkingFormat("mistral", "[THINK]", "[/THINK]", "\n[/THINK]\n\n" + ANSWER_PREFIX),
        "harmony": ThinkingFormat("harmony", "<|channel|>analysis<|message|>", "<|end|>", "<|end|><|start|>assistant<|channel|>final<|message|>" + ANSWER_PREFIX),
    }
)

#: what each known format's chat templates contain (checked in this order)
_TEMPLATE_SIGNS = (("harmony", "<|channel|>"), ("mistral", "[THINK]"), ("think", "<think>"))


def parse_format(spec: str) -> ThinkingFormat:
    """A known format by name, or a custom ``"OPEN,CLOSE"`` pair (its exit string closes the span
    on a new line and opens the boxed answer, as ``think`` does)."""
    spec = spec.strip()
    if spec in FORMATS:
        return FORMATS[spec]
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2 or not all(parts):
        raise InvalidInput(f"thinking format {spec!r}: give one of {', '.join(FORMATS)} or a custom pair OPEN,CLOSE (e.g. '<reasoning>,</reasoning>')")
    return ThinkingFormat("custom", parts[0], parts[1], f"\n{parts[1]}\n\n{ANSWER_PREFIX}")


#: the key of ``tokenizer_config.json`` that declares a model's thinking format (see detect_format)
THINKING_KEY = "lynx_thinking"


def detect_format(tokenizer) -> ThinkingFormat:
    """The format the model declares, else the one its chat template (else its vocabulary)
    shows; one clear error if none.

    A declaration is the key :data:`THINKING_KEY` in ``tokenizer_config.json`` (a format name
    or its dict): lynx writes it into models it made (SmolLM2-reasoner thinks in ``<think>``,
    which its base's template and vocabulary never show)."""
    declared = (getattr(tokenizer, "init_kwargs", None) or {}).get(THINKING_KEY)
    if declared is not None:
        return ThinkingFormat.from_dict(declared) if isinstance(declared, dict) else parse_format(str(declared))
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates
        template = "\n".join(str(t) for t in template.values())
    for name, sign in _TEMPLATE_SIGNS:
        if sign in template:
            return FORMATS[name]
    vocab = tokenizer.get_vocab()
    for name in ("think", "mistral"):
        if FORMATS[name].open in vocab and FORMATS[name].close in vocab:
            return FORMATS[name]
    raise NoThinkingMarkers(
        "cannot tell this model's thinking span: its chat template shows no known format "
        f"({', '.join(FORMATS)}); name one with --thinking-format, or give the markers as OPEN,CLOSE"
    )


def resolve_format(value: ThinkingFormat | dict | str | None, tokenizer) -> ThinkingFormat:
    """A format from what a setting holds: a format, its dict (a manifest's or a probe's), a
    name / custom pair, or None (detected from the tokenizer)."""
    if isinstance(value, ThinkingFormat):
        return value
    if isinstance(value, dict):
        return ThinkingFormat.from_dict(value)
    if isinstance(value, str):
        return parse_format(value)
    return detect_format(tokenizer)

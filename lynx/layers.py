"""Which layers a probe reads: LYNX's depth-based choice, and parsing user input.

Indices follow transformers' ``hidden_states``: 1..L are the decoder layers' outputs, and
``L`` ("last") is taken *after* the final norm, as LYNX does.
"""

from __future__ import annotations

from lynx.errors import InvalidInput

_LYNX = {28: (9, 16, 28), 32: (8, 16, 24, 32), 64: (16, 32, 48, 64)}


def default_layers(num_layers: int) -> tuple[int, ...]:
    """LYNX's table where it has one, else the same proportions (~1/3, ~4/7, last)."""
    if num_layers in _LYNX:
        return _LYNX[num_layers]
    picks = {max(1, round(num_layers * 9 / 28)), max(1, round(num_layers * 16 / 28)), num_layers}
    return tuple(sorted(picks))


def parse_layers(spec: str | None, num_layers: int) -> tuple[int, ...]:
    """``"9,16,last"`` -> (9, 16, 28); None -> the default; out-of-range -> ValueError."""
    if spec is None or spec.strip() in ("", "default"):
        return default_layers(num_layers)
    out = []
    for part in spec.split(","):
        part = part.strip().lower()
        if part == "last":
            out.append(num_layers)
            continue
        try:
            layer = int(part)
        except ValueError:
            raise InvalidInput(f"layer {part!r} is not an integer or 'last'") from None
        if layer < 0:
            layer = num_layers + 1 + layer
        if not 1 <= layer <= num_layers:
            raise InvalidInput(f"layer {part} is out of range: this model has layers 1..{num_layers}")
        out.append(layer)
    return tuple(dict.fromkeys(out))

"""A probe's final score at a cue, offline (a collection's cue rows) and online (a request's
state in the engine), from one definition.

A v1 probe's score is its MLP on the cue's hidden states. A v2 (``stacked``) probe feeds that
MLP's logit, the logits of the trace's earlier cues and the cue's context
(:mod:`lynx.probe.context`) to boosted trees; a ``context-only`` probe feeds the context
alone. Calibration, training metrics and the engine all go through :func:`head_inputs`, so a
threshold is always calibrated on the numbers the engine compares it with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lynx.errors import InvalidInput
from lynx.probe.artifact import Probe
from lynx.probe.context import HISTORY, context_matrix, context_names, context_row, history_matrix, history_row, previous_positions, scalar_logit


def head_input_names(kind: str, cues: Sequence[str]) -> list[str]:
    """The tree head's columns for a probe kind: history then context (``stacked``), context (``context-only``)."""
    if kind == "stacked":
        return list(HISTORY) + context_names(cues)
    if kind == "context-only":
        return context_names(cues)
    raise InvalidInput(f"a {kind!r} probe has no tree head")


def head_inputs(kind: str, cues: Sequence[str], context: np.ndarray, history: np.ndarray | None) -> np.ndarray:
    """The head's input rows from context rows and (``stacked``) history rows."""
    if kind == "stacked":
        if history is None:
            raise InvalidInput("a stacked probe needs the hidden-state scores of the trace's cues")
        return np.column_stack([history, context])
    return context


def data_context(data) -> np.ndarray:
    """Context rows of a collection's cues (:class:`lynx.store.cue_data.CueData`, trace order)."""
    if data.cue_word is None or data.token_position is None:
        raise InvalidInput(f"{data.source} predates cue words and token positions in its cue rows: collect it again for a v2 probe")
    return context_matrix(
        data.cue_index,
        data.thinking_position,
        previous_positions(data.cue_index, data.thinking_position),
        data.token_position - data.thinking_position,
        data.cue_word,
        data.manifest["cues"],
    )


def cue_scores(probe: Probe, data) -> np.ndarray:
    """The probe's final score (float64) of every cue row of ``data``, in its order (trace order):
    what the engine computes online at those cues."""
    stage1 = None
    if probe.has_mlp:
        with torch.no_grad():
            stage1 = probe(torch.from_numpy(data.features)).double().numpy()
    if probe.head is None:
        assert stage1 is not None  # a probe without a tree head is an MLP (v1): load_probe checks it
        return stage1
    history = None
    if probe.kind == "stacked":
        assert stage1 is not None  # a stacked probe has the MLP stage: load_probe checks it
        history = history_matrix(data.cue_index, stage1)
    return probe.head.predict(head_inputs(probe.kind, probe.meta["cues"], data_context(data), history))


class OnlineContext:
    """What a request keeps for a probe with a tree head: the earlier cues' logits and
    thinking position. One per request, owned by the engine's exit controller."""

    __slots__ = ("n_cues", "logits", "previous_position")

    def __init__(self) -> None:
        self.n_cues = 0
        self.logits: list[float] = []
        self.previous_position = 0

    def advance(self, probe: Probe, thinking_position: int, thinking_start: int, cue_word: str, stage1: float | None) -> list[float]:
        """The head's input row at the request's next cue (the columns :func:`head_inputs`
        builds offline, in plain Python); the cue is remembered for the cues after it."""
        row = context_row(self.n_cues, thinking_position, self.previous_position, thinking_start, cue_word, probe.meta["cues"])
        self.n_cues, self.previous_position = self.n_cues + 1, thinking_position
        if probe.kind == "stacked":
            lg = scalar_logit(stage1) if stage1 is not None else float("nan")
            row = history_row(self.logits, lg) + row
            self.logits.append(lg)
        return row

    def score(self, probe: Probe, thinking_position: int, thinking_start: int, cue_word: str, stage1: float | None) -> float:
        """The final score at the request's next cue (one cue; an engine batches a step's cues with :func:`online_scores`)."""
        return online_scores(probe, [self.advance(probe, thinking_position, thinking_start, cue_word, stage1)])[0]


def online_scores(probe: Probe, rows: Sequence[list[float]]) -> list[float]:
    """Final scores of several requests' cues (rows from :meth:`OnlineContext.advance`, all for
    ``probe``), in plain Python (the trees' compiled function, :mod:`lynx.probe.trees`): the
    same function and summation order :func:`cue_scores` uses offline."""
    assert probe.head is not None  # only a probe with a tree head keeps an OnlineContext
    return probe.head.predict_rows(rows)

"""Calibration data kept in the probe folder, and thresholds for any alpha from it.

Why store scores rather than a threshold: the user picks alpha at inference time (per call
or per request), so the folder keeps every calibration trace's cue scores and labels
(``calibration.parquet`` + ``calibration_traces.parquet``) and :meth:`Calibration.threshold`
runs the chosen procedure on demand (cached; it takes milliseconds).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lynx.calibrate.policy import GOLD_RISKS, RISKS, Traces, exit_cues, problem_losses, threshold_grid, trace_losses
from lynx.calibrate.procedures import METHODS, MODES, check_alpha, crc_index, ltt_index, per_cue_threshold
from lynx.config import CalibrateConfig
from lynx.errors import InvalidInput, MissingInput
from lynx.store.manifest import identity_value

log = logging.getLogger("lynx.calibrate")
CUES_FILE = "calibration.parquet"
TRACES_FILE = "calibration_traces.parquet"
META_FILE = "calibration.json"
#: what ``lynx calibrate`` writes into a probe folder (data, report, plots)
CALIBRATION_FILES = (CUES_FILE, TRACES_FILE, META_FILE, "calibration_report.md", "risk_vs_alpha.png", "savings_vs_alpha.png")


@dataclass(frozen=True)
class Decision:
    """A threshold and the promise that comes with it."""

    threshold: float  # exit at a cue iff its score >= threshold; inf = never exit
    alpha: float
    mode: str
    method: str | None
    risk: str | None
    delta: float | None
    attainable: bool
    condition: str | None = None  # key of the calibration's condition (see lynx.calibrate.conditions)
    uncalibrated_condition: bool = False  # the request matched no calibrated condition: a fallback applied
    fallback: str | None = None  # which fallback, and why, when uncalibrated_condition

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in self.__dict__.items()}

    @property
    def promise(self) -> str:
        if self.uncalibrated_condition:
            return f"no guarantee: the request's condition was never calibrated (fallback {self.fallback}); run lynx recalibrate for it to get the promise back"
        return guarantee_text(self.mode, self.method, self.risk, self.alpha, self.delta, self.attainable)


def guarantee_text(mode: str, method: str | None, risk: str | None, alpha: float, delta: float | None, attainable: bool = True) -> str:
    if not attainable:
        return f"alpha = {alpha:g} cannot be certified with this many calibration {'cues' if mode == 'per-cue' else 'problems'}; lynx never exits early at this level"
    if mode == "per-cue":
        return (
            f"for a cue where exiting would give a wrong answer, the chance lynx exits there is at most {alpha:g} (per cue, not per "
            "problem; cues of one problem are treated as exchangeable, and a larger alpha does not always exit more)"
        )
    assert risk is not None  # a per-trace decision always names its risk
    what = RISKS[risk]
    if method == "ltt":
        assert delta is not None  # an LTT decision always has its delta
        return f"with probability at least {1 - delta:g} over the calibration draw, the share of problems where {what} is at most {alpha:g}"
    return f"on average over problems like the calibration ones, the share of problems where {what} is at most {alpha:g}"


@dataclass
class Calibration:
    traces: Traces
    meta: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def default_mode(self) -> str:
        return self.meta.get("mode", CalibrateConfig.mode)

    @cached_property
    def grid(self) -> np.ndarray:
        return threshold_grid(self.traces.score, max_points=10**9)

    @cached_property
    def exits(self) -> np.ndarray:
        return exit_cues(self.traces, self.grid)

    def losses(self, risk: str) -> np.ndarray:
        key = ("losses", risk)
        if key not in self._cache:
            self._cache[key] = problem_losses(self.traces, trace_losses(self.traces, self.exits, risk))
        return self._cache[key]

    @property
    def labels(self) -> str:
        """``gold`` (forced answers graded against gold answers) or ``agreement`` (against the
        trace's own full-CoT answer; no gold needed)."""
        return identity_value(self.meta, "labels")  # a calibration from before labels were recorded: gold

    def check_risk(self, risk: str) -> None:
        """Refuse a risk this calibration's labels cannot measure."""
        if risk in GOLD_RISKS and self.labels != "gold":
            raise InvalidInput(f"risk {risk!r} needs gold answers, but this calibration's labels are {self.labels!r}: use risk answer-change")
        if risk == "answer-change" and self.traces.agreement is None:
            raise InvalidInput("risk 'answer-change' needs agreement labels, which this calibration's data predates: collect it again with this lynx and rerun lynx calibrate")

    def threshold(self, alpha: float, mode: str | None = None, method: str | None = None, risk: str | None = None, delta: float | None = None) -> Decision:
        """The threshold for ``alpha`` under the given (or stored default) guarantee."""
        alpha = check_alpha(alpha)
        mode = mode or self.default_mode
        if mode not in MODES:
            raise InvalidInput(f"unknown mode {mode!r}: choose {' or '.join(MODES)}")
        if mode == "per-cue":
            t = per_cue_threshold(self.traces.score, self.traces.label, alpha)
            return Decision(t, alpha, mode, None, None, None, math.isfinite(t))
        method = method or self.meta.get("method", CalibrateConfig.method)
        risk = risk or self.meta.get("risk", CalibrateConfig.risk)
        delta = float(delta if delta is not None else self.meta.get("delta", CalibrateConfig.delta))
        if method not in METHODS:
            raise InvalidInput(f"unknown method {method!r}: choose {' or '.join(METHODS)}")
        if risk not in RISKS:
            raise InvalidInput(f"unknown risk {risk!r}: choose {' or '.join(RISKS)}")
        self.check_risk(risk)
        key = (alpha, method, risk, delta if method == "ltt" else None)
        if key not in self._cache:
            losses = self.losses(risk)
            idx = crc_index(losses, alpha) if method == "crc" else ltt_index(losses, alpha, delta)
            self._cache[key] = Decision(
                float(self.grid[idx]) if idx is not None else math.inf,
                alpha,
                mode,
                method,
                risk,
                delta if method == "ltt" else None,
                idx is not None,
            )
        return self._cache[key]

    def save(self, folder: Path) -> None:
        t = self.traces
        counts = np.diff(t.offsets)
        pq.write_table(
            pa.table(
                {
                    "problem_id": np.repeat(t.problem_id, counts),
                    "sample_id": np.repeat(t.sample_id, counts),
                    "cue_index": np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, int),
                    "score": t.score,
                    "label": t.label.astype(np.int8),
                    "thinking_position": t.position,
                }
                | ({} if t.agreement is None else {"agreement": t.agreement.astype(np.int8)})
            ),
            folder / CUES_FILE,
        )
        pq.write_table(
            pa.table(
                {
                    "problem_id": t.problem_id,
                    "sample_id": t.sample_id,
                    "n_cues": counts,
                    "final_correct": t.final_correct,
                    "thinking_tokens_total": t.total,
                }
            ),
            folder / TRACES_FILE,
        )
        (folder / META_FILE).write_text(json.dumps(self.meta, indent=2) + "\n")


def traces_from_rows(cues: dict, traces: dict) -> Traces:
    """Group cue rows (problem_id, sample_id, cue_index, score, label, thinking_position) under
    trace rows (problem_id, sample_id, final_correct, thinking_tokens_total)."""
    if len(traces.get("problem_id", ())) == 0:
        raise InvalidInput("the calibration set is empty (no traces): collect calibration problems first")
    tkey = list(zip(np.asarray(traces["problem_id"]).astype(str), np.asarray(traces["sample_id"]).astype(int), strict=True))
    order = sorted(range(len(tkey)), key=lambda i: tkey[i])
    tkey = [tkey[i] for i in order]
    pos_of = {k: i for i, k in enumerate(tkey)}
    if len(pos_of) != len(tkey):
        raise InvalidInput("calibration data lists a trace twice")
    cpid = np.asarray(cues["problem_id"]).astype(str)
    csid = np.asarray(cues["sample_id"]).astype(int)
    try:
        trace_of = np.array([pos_of[(p, s)] for p, s in zip(cpid, csid, strict=True)], dtype=np.int64)
    except KeyError as e:
        raise InvalidInput(f"cue rows refer to a trace missing from the trace table: {e}") from None
    corder = np.lexsort((np.asarray(cues["cue_index"]), trace_of))
    agreement = cues.get("agreement")
    if agreement is not None and any(a is None for a in agreement):
        agreement = None  # shards from before agreement labels: the answer-change risk is unavailable
    counts = np.bincount(trace_of, minlength=len(tkey))
    pick = lambda d, k: np.asarray(d[k])[order]  # noqa: E731
    return Traces(
        problem_id=np.array([k[0] for k in tkey]),
        sample_id=np.array([k[1] for k in tkey], dtype=np.int64),
        offsets=np.concatenate([[0], np.cumsum(counts)]),
        score=np.asarray(cues["score"], float)[corder],
        label=np.asarray(cues["label"]).astype(int)[corder],
        position=np.asarray(cues["thinking_position"]).astype(np.int64)[corder],
        total=pick(traces, "thinking_tokens_total").astype(np.int64),
        # unknown (no gold answer) is False: the gold risks are refused for such data (Calibration.check_risk)
        final_correct=np.array([bool(x) for x in pick(traces, "final_correct")], dtype=bool),
        agreement=None if agreement is None else np.asarray(agreement).astype(int)[corder],
    )


def load_calibration_files(folder: Path | str, probe_folder: Path | str | None = None) -> Calibration:
    """Read one calibration's files from ``folder``, checked against the probe in ``probe_folder``
    (default: the same folder). Use :func:`lynx.calibrate.load_calibration` for a probe folder."""
    folder = Path(folder)
    paths = [folder / n for n in (CUES_FILE, TRACES_FILE, META_FILE)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise MissingInput(f"{folder} is not calibrated (missing {', '.join(missing)}); run lynx calibrate --probe {folder} --data ...")
    try:
        cues, traces = pq.read_table(paths[0]).to_pydict(), pq.read_table(paths[1]).to_pydict()
        meta = json.loads(paths[2].read_text())
    except Exception as e:
        raise InvalidInput(f"calibration files in {folder} are corrupt ({e})") from None
    _check_bound_to_probe(Path(probe_folder or folder), meta)
    return Calibration(traces_from_rows(cues, traces), meta)


class StaleCalibration(InvalidInput):
    """The calibration was computed for another probe than the one now in its folder."""


def _check_bound_to_probe(folder: Path, meta: dict) -> None:
    """A calibration holds only for the exact probe it scored: refuse it when the folder's probe
    (weights or ``probe.json``) changed since — a retrained probe, an edited layer list or cue
    word — instead of serving a threshold under a promise that no longer applies."""
    from lynx.probe.artifact import PROBE_META, PROBE_WEIGHTS, probe_hash

    if not ((folder / PROBE_WEIGHTS).exists() and (folder / PROBE_META).exists()):
        return  # calibration files alone: nothing to bind to
    recorded, current = meta.get("probe_hash"), probe_hash(folder)
    if recorded is None:
        log.warning("the calibration in %s predates lynx's probe binding and cannot be checked against the probe; rerun lynx calibrate to bind it", folder)
    elif recorded != current:
        raise StaleCalibration(
            f"the calibration in {folder} was computed for another probe (probe hash {recorded}; the folder's "
            f"probe.safetensors/probe.json now hash to {current}): rerun lynx calibrate --probe {folder} --data ..."
        )

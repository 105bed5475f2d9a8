"""The ``recalibrate`` response: a calibration from labelled live audits, stored as a condition.

The audits are agreement-labelled calibration traces of the live traffic (the probe's score
and the agreement label at every cue, the request's thinking length), so conformal risk
control of the answer-change risk runs on them exactly as ``lynx recalibrate`` runs on a
collection; the calibration records where it came from (``data.source = "live audits"``) and
is bound to the probe like any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lynx.calibrate.conditions import Condition, prepare_condition_dir
from lynx.calibrate.report import write_report
from lynx.calibrate.store import Calibration, traces_from_rows
from lynx.config import AGREEMENT_RISK, CalibrateConfig
from lynx.errors import InvalidInput
from lynx.probe.artifact import probe_hash


def calibration_from_audits(policy, audits: list[dict], temperature: float, domain: str | None = None) -> Calibration:
    """A per-problem CRC calibration (answer-change risk, agreement labels) of ``audits``."""
    if not audits:
        raise InvalidInput("no labelled audits to calibrate on")
    cues: dict[str, list] = {k: [] for k in ("problem_id", "sample_id", "cue_index", "score", "label", "agreement", "thinking_position")}
    traces: dict[str, list] = {k: [] for k in ("problem_id", "sample_id", "final_correct", "thinking_tokens_total")}
    for i, a in enumerate(audits):
        pid = f"{a.get('tag') or 'audit'}#{i}"
        for k, (pos, score, agrees) in enumerate(a["cues"]):
            for name, value in (
                ("problem_id", pid),
                ("sample_id", 0),
                ("cue_index", k),
                ("score", float(score)),
                ("label", int(agrees)),
                ("agreement", int(agrees)),
                ("thinking_position", int(pos)),
            ):
                cues[name].append(value)
        for name, value in (("problem_id", pid), ("sample_id", 0), ("final_correct", False), ("thinking_tokens_total", int(a["thinking_tokens"]))):
            traces[name].append(value)
    condition = Condition(temperature, domain)
    agreement = np.asarray(cues["agreement"], dtype=float)
    meta = {
        "mode": CalibrateConfig.mode,
        "method": "crc",
        "risk": AGREEMENT_RISK,
        "delta": CalibrateConfig.delta,
        "labels": "agreement",
        "condition": condition.to_dict(),
        "model": policy.model,
        "model_fingerprint": policy.model_fingerprint,
        "probe_hash": probe_hash(policy.folder),
        "data": {
            "source": "live audits",
            "dataset": f"live:{condition.key}",
            "folder": "shadow audits of served requests",
            "sampling": {"temperature": float(temperature)},
            "first_audit_time": audits[0].get("time"),
            "last_audit_time": audits[-1].get("time"),
        },
        "n_problems": len(audits),
        "n_problems_with_cues": sum(bool(a["cues"]) for a in audits),
        "n_traces": len(audits),
        "n_cues": len(agreement),
        "safe_share": float(agreement.mean()) if len(agreement) else None,
        "agreement_share": float(agreement.mean()) if len(agreement) else None,
        "full_cot_accuracy": None,
    }
    return Calibration(traces_from_rows(cues, traces), meta)


def store_calibration(
    policy, audits: list[dict], temperature: float, domain: str | None = None, alphas=CalibrateConfig.alphas, n_splits: int = CalibrateConfig.n_splits
) -> tuple[str, Path]:
    """Calibrate on ``audits`` and store it as condition (temperature, domain) of ``policy``'s
    folder (replacing that condition's calibration); returns (condition key, its folder)."""
    cal = calibration_from_audits(policy, audits, temperature, domain)
    condition = Condition(temperature, domain)
    folder = prepare_condition_dir(Path(policy.folder), condition)
    cal.save(folder)
    write_report(cal, folder, list(alphas), n_splits=n_splits)
    return condition.key, folder

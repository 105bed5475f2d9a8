"""``lynx calibrate``: score a disjoint collect folder with the probe and store the calibration.

It refuses, with one clear line, what would make the guarantee meaningless: data from
another model (or other layers / cues / exit string), problems the probe was trained on,
data with a single class, and alpha outside (0, 1). Each calibration is stored as the
condition it was measured under (:mod:`lynx.calibrate.conditions`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lynx.calibrate.conditions import Condition, check_domain, prepare_condition_dir
from lynx.calibrate.policy import GOLD_RISKS, RISKS
from lynx.calibrate.procedures import METHODS, MODES, check_alpha
from lynx.calibrate.report import write_report
from lynx.calibrate.store import Calibration, traces_from_rows
from lynx.config import AGREEMENT_RISK, PROBE_BASELINES, CalibrateConfig
from lynx.errors import InvalidInput
from lynx.models import resolve_probe_folder
from lynx.probe.artifact import BASELINES_DIR, PROBE_META, load_probe, probe_hash
from lynx.probe.scoring import cue_scores
from lynx.probe.train import TRAIN_PROBLEMS
from lynx.store.cue_data import collection_manifest, load_cue_data, manifest_hash, read_traces
from lynx.store.manifest import identity_value


class OverlapError(InvalidInput):
    """Calibration problems that the probe was trained on."""


def check_matches(probe_meta: dict, manifest: dict, data_dir) -> None:
    """Refuse, before scoring, data the probe cannot read: other hidden size, layers, cues or exit string."""
    if probe_meta.get("hidden_size") != manifest.get("hidden_size"):
        raise InvalidInput(
            f"the data in {data_dir} has hidden size {manifest.get('hidden_size')} but the probe reads hidden size "
            f"{probe_meta.get('hidden_size')}: collect the data with the probe's model"
        )
    for key, what in (("layers", "layers"), ("cues", "cue words"), ("exit_string", "exit string"), ("thinking", "thinking format")):
        if key == "thinking" and (probe_meta.get(key) is None or manifest.get(key) is None):
            continue  # a folder from before formats were recorded: <think>, as the exit string shows
        if probe_meta.get(key) != manifest.get(key):
            raise InvalidInput(f"the data in {data_dir} was collected with other {what} ({manifest.get(key)!r}) than the probe ({probe_meta.get(key)!r})")


def calibrate(
    probe_dir: Path | str,
    data_dir: Path | str | list,
    alphas=CalibrateConfig.alphas,
    mode: str = CalibrateConfig.mode,
    method: str = CalibrateConfig.method,
    risk: str | None = None,
    delta: float = CalibrateConfig.delta,
    n_splits: int = CalibrateConfig.n_splits,
    domain: str | None = None,
) -> list[dict]:
    """Calibrate the probe in ``probe_dir`` on the collection ``data_dir`` and store it as the
    condition that collection was made under (its sampling temperature, and ``domain`` if
    given), next to the folder's other conditions; one for the same condition is replaced.

    ``risk`` None: ``premature`` for gold-labelled data, ``answer-change`` for agreement-labelled
    data (which has no gold answers). Returns one report row per alpha and guarantee.

    ``data_dir`` may be several collect folders read as one collection (same model, layers,
    cues, exit string, labels — and, for a calibration, the same sampling: one condition)."""
    probe_dir = resolve_probe_folder(probe_dir)
    alphas = [check_alpha(a) for a in alphas]
    domain = check_domain(domain)
    folders = data_dir
    data_dir = str(data_dir) if isinstance(data_dir, (str, Path)) else " + ".join(map(str, data_dir))  # for messages
    manifest = collection_manifest(folders)  # checked before any feature is read or scored
    if "mixed" in (manifest.get("sampling") or {}):
        raise InvalidInput(
            f"the folders {data_dir} were sampled differently ({manifest['sampling']['mixed']}); "
            "a calibration holds for one condition: calibrate each sampling temperature on its own"
        )
    labels = identity_value(manifest, "labels")
    risk = risk or (CalibrateConfig.risk if labels == "gold" else AGREEMENT_RISK)
    if mode not in MODES or method not in METHODS or risk not in RISKS:
        raise InvalidInput(f"mode must be one of {MODES}, method one of {METHODS}, risk one of {tuple(RISKS)}")
    if not 0 < delta < 1:
        raise InvalidInput(f"delta must be strictly between 0 and 1, got {delta}")
    if not alphas:
        raise InvalidInput("give at least one alpha to report")
    if risk in GOLD_RISKS and labels != "gold":
        raise InvalidInput(f"risk {risk!r} needs gold answers, but {data_dir} was labelled by {labels}: use --risk {AGREEMENT_RISK}")
    probe = load_probe(probe_dir)
    check_matches(probe.meta, manifest, data_dir)
    probe.check_model(manifest["model_fingerprint"], f"the model of the data in {data_dir} ({manifest['model']!r})")
    data = load_cue_data(folders)
    trained = probe_dir / TRAIN_PROBLEMS
    if trained.exists():
        overlap = sorted(set(json.loads(trained.read_text())) & set(map(str, data.problems)))
        if overlap:
            raise OverlapError(f"{len(overlap)} calibration problems were used to train the probe (e.g. {overlap[0]!r}); calibrate on disjoint problems")
    if risk == AGREEMENT_RISK and data.agreement is None:
        raise InvalidInput(f"{data_dir} predates agreement labels, so risk {AGREEMENT_RISK!r} cannot be measured on it: collect it again")
    target = data.label if risk != AGREEMENT_RISK else data.agreement
    assert target is not None  # data.agreement is checked just above
    if len(np.unique(target)) < 2:
        raise InvalidInput(f"calibration data in {data_dir} has only {'safe' if target[0] else 'unsafe'} cue points; it needs both")
    scores = cue_scores(probe, data)  # the final score the engine computes at each cue (v2: with context and history)
    cues = {
        "problem_id": data.problem_id,
        "sample_id": data.sample_id,
        "cue_index": data.cue_index,
        "score": scores,
        "label": data.label,
        "thinking_position": data.thinking_position,
    }
    if data.agreement is not None:
        cues["agreement"] = data.agreement
    condition = Condition(data.manifest["sampling"]["temperature"], domain)
    traces = read_traces(folders)
    cal = Calibration(
        traces_from_rows(cues, traces),
        {
            "mode": mode,
            "method": method,
            "risk": risk,
            "delta": delta,
            "labels": labels,
            "condition": condition.to_dict(),
            "model": probe.meta["model"],
            "model_fingerprint": probe.meta["model_fingerprint"],
            "probe_hash": probe_hash(probe_dir),
            "data": {"folder": data_dir, "dataset": data.manifest["dataset"], "manifest_hash": manifest_hash(data.manifest), "sampling": data.manifest["sampling"]},
            # the problems calibrated on, with or without a cue (a problem without one never exits, and counts in every rate)
            "n_problems": len(set(map(str, traces["problem_id"]))),
            "n_problems_with_cues": int(len(data.problems)),
            "n_traces": len(traces["problem_id"]),
            "n_cues": len(data),
            "safe_share": float(data.label.mean()),
            "agreement_share": None if data.agreement is None else float(data.agreement.mean()),
            "full_cot_accuracy": float(np.mean(traces["final_correct"])) if labels == "gold" else None,
        },
    )
    folder = prepare_condition_dir(probe_dir, condition)
    cal.save(folder)
    rows = [r | {"condition": condition.key, "folder": str(folder), "scorer": "probe"} for r in write_report(cal, folder, alphas, n_splits=n_splits)]
    for name in PROBE_BASELINES:  # the baselines trained beside the probe get the same calibration (lynx eval runs them)
        if (probe_dir / BASELINES_DIR / name / PROBE_META).exists():
            rows += [r | {"scorer": name} for r in calibrate(probe_dir / BASELINES_DIR / name, folders, alphas, mode, method, risk, delta, n_splits, domain)]
    return rows

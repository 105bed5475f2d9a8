"""``lynx train``: fit the probe on a collect folder, split by problem, and report it.

Why scikit-learn's ``MLPClassifier``: it is what upstream LYNX uses (StandardScaler + MLP
(256, 64), ReLU, Adam), so the paper-faithful probe is literally the same model. Two things
are done by hand around it, on purpose: early stopping uses a validation set of *whole
problems* (sklearn's built-in early stopping splits rows, which would leak a problem's
cues into its own validation), and the loss is class-balanced through ``sample_weight``.
The fitted weights are exported to safetensors and scored by :func:`lynx.probe.score`
(torch), which is tested to equal ``predict_proba``.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from lynx import __version__
from lynx.calibrate.conditions import remove_calibrations
from lynx.config import ProbeTrainConfig
from lynx.errors import InvalidInput
from lynx.probe.artifact import Probe, save_probe
from lynx.probe.metrics import binary_metrics, reliability_plot
from lynx.store.cue_data import load_cue_data, manifest_hash

console = Console(stderr=True)
TRAIN_PROBLEMS = "train_problems.json"


def split_problems(problems: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Disjoint random groups of problem ids with the given fractions (the rest is the last group)."""
    perm = np.random.default_rng(seed).permutation(np.sort(problems))
    cuts = np.cumsum([int(round(f * len(perm))) for f in fractions])
    return np.split(perm, cuts)


def _weights(y: np.ndarray, balanced: bool) -> np.ndarray:
    if not balanced:
        return np.ones(len(y))
    counts = np.bincount(y, minlength=2).astype(float)
    return (len(y) / (2 * counts))[y]


def _log_loss(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


def fit_mlp(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, cfg: ProbeTrainConfig):
    """(scaler, classifier, history) with early stopping on the validation problems."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    Xs, Xvs = scaler.transform(X), scaler.transform(Xv)
    w, wv = _weights(y, cfg.class_balanced), _weights(yv, cfg.class_balanced)
    clf = MLPClassifier(
        hidden_layer_sizes=cfg.hidden_layer_sizes, activation="relu", solver="adam", alpha=cfg.l2,
        batch_size=min(cfg.batch_size, len(y)), learning_rate_init=cfg.learning_rate, random_state=cfg.seed,
    )
    best, best_loss, since, history = None, np.inf, 0, []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("training probe", total=cfg.max_epochs, info="")
        for epoch in range(cfg.max_epochs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.partial_fit(Xs, y, classes=np.array([0, 1]), sample_weight=w)
            val = _log_loss(clf.predict_proba(Xvs)[:, 1], yv, wv) if len(yv) else 0.0
            history.append(val)
            bar.update(task, advance=1, info=f"epoch {epoch + 1} val loss {val:.4f}")
            if val < best_loss - 1e-4:
                best, best_loss, since = copy.deepcopy(clf), val, 0
            else:
                since += 1
                if since >= cfg.patience:
                    break
    return scaler, best if best is not None else clf, history


def to_probe(scaler, clf, meta: dict) -> Probe:
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return Probe(t(scaler.mean_), t(scaler.scale_), [t(w) for w in clf.coefs_], [t(b) for b in clf.intercepts_], meta)


def train_probe(data_dir: Path | str | list, out: Path | str, cfg: ProbeTrainConfig | None = None) -> dict:
    """Train, evaluate on held-out problems, and write the probe folder; returns its metadata.
    ``data_dir``: a collect folder, or several read as one collection (same model, layers,
    cues, exit string and labels; disjoint problems — e.g. one per GPU or per benchmark)."""
    cfg = cfg or ProbeTrainConfig()
    data = load_cue_data(data_dir)
    data_dir = data.source
    out = Path(out)
    if len(np.unique(data.label)) < 2:
        raise InvalidInput(f"{data_dir}: every cue point has label {int(data.label[0])}; a probe needs both safe and unsafe cues")
    problems = data.problems
    if len(problems) < 5:
        raise InvalidInput(f"{data_dir}: only {len(problems)} problems; a probe needs at least 5 to split by problem")
    test_p, val_p, train_p = split_problems(problems, (cfg.test_fraction, cfg.val_fraction), cfg.seed)
    part = lambda ids: data.subset(np.isin(data.problem_id, ids))  # noqa: E731
    tr, va, te = part(train_p), part(val_p), part(test_p)
    if len(np.unique(tr.label)) < 2:
        raise InvalidInput(f"{data_dir}: the training problems hold only one class; collect more problems")
    scaler, clf, history = fit_mlp(tr.features, tr.label, va.features, va.label, cfg)

    m = data.manifest
    meta = {
        "lynx_version": __version__, "model": m["model"], "model_fingerprint": m["model_fingerprint"],
        "tokenizer_hash": m["tokenizer_hash"], "num_layers": m["num_layers"], "hidden_size": m["hidden_size"],
        "layers": m["layers"], "cues": m["cues"], "exit_string": m["exit_string"], "answer_tokens": m.get("answer_tokens"),
        "prompt_suffix": m.get("prompt_suffix"),
        "data": {"folder": data.source, "manifest_hash": manifest_hash(m), "dataset": m["dataset"], "sampling": m["sampling"],
                 "n_cues": len(data), "n_problems": int(len(problems)), "safe_share": float(data.label.mean())}
                | ({"merged_from": m["merged_from"]} if "merged_from" in m else {}),
        "architecture": {"kind": "mlp", "hidden_layer_sizes": list(cfg.hidden_layer_sizes), "activation": "relu", "output": "sigmoid"},
        "training": asdict(cfg) | {"epochs": len(history), "best_val_loss": float(min(history))},
    }
    probe = to_probe(scaler, clf, meta)
    metrics = {}
    for name, d in (("train", tr), ("validation", va), ("test", te)):
        if len(d):
            with torch.no_grad():
                p = probe(torch.from_numpy(d.features)).numpy()
            metrics[name] = binary_metrics(p, d.label) | {"n_cues": len(d), "n_problems": int(len(d.problems))}
    probe.meta["metrics"] = metrics
    stale = remove_calibrations(out)  # computed for the probe this one replaces: they would not hold for the new one
    if stale:
        console.print(f"removed the calibrations of the previous probe in {out} ({', '.join(stale)}); run lynx calibrate")
    save_probe(probe, out)
    (out / TRAIN_PROBLEMS).write_text(json.dumps(sorted(map(str, problems))) + "\n")
    if len(te):
        with torch.no_grad():
            p = probe(torch.from_numpy(te.features)).numpy()
        reliability_plot(p, te.label, out / "reliability.png", title=f"probe reliability, {len(te.problems)} held-out problems")
    (out / "README.md").write_text(model_card(probe.meta))
    return probe.meta


def model_card(meta: dict) -> str:
    t = meta["metrics"].get("test", {})
    rows = "\n".join(
        f"| {k} | {v['n_problems']} | {v['n_cues']} | {v['auc']:.3f} | {v['accuracy']:.3f} | {v['brier']:.3f} | {v['ece']:.3f} |"
        for k, v in meta["metrics"].items()
    )
    return f"""# lynx probe for `{meta['model']}`

An MLP {tuple(meta['architecture']['hidden_layer_sizes'])} on the hidden states of cue tokens
(layers {meta['layers']} of {meta['num_layers']}, hidden size {meta['hidden_size']}) that predicts whether
forcing an exit at that cue (`{meta['exit_string']!r}`) already gives the gold answer.

- model fingerprint: `{meta['model_fingerprint']}` (the probe refuses any other model)
- cues: {', '.join(meta['cues'])}
- training data: `{meta['data']['dataset']}`, {meta['data']['n_problems']} problems, {meta['data']['n_cues']} cue points
  ({meta['data']['safe_share']:.1%} safe), sampling {meta['data']['sampling']}, manifest hash `{meta['data']['manifest_hash']}`
- split by problem: train / validation (early stopping) / test (the figures below)

| split | problems | cues | AUC | accuracy | Brier | ECE |
|---|---|---|---|---|---|---|
{rows}

Held-out AUC {t.get('auc', float('nan')):.3f}. Reliability diagram: `reliability.png`.
Calibrate before use: `lynx calibrate --probe <this folder> --data <collect folder on other problems>`.
"""

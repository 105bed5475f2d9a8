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
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from lynx.calibrate.conditions import remove_calibrations
from lynx.config import PROBE_KINDS, ProbeTrainConfig
from lynx.errors import InvalidInput
from lynx.probe.artifact import BASELINES_DIR, KINDS, Probe, meta_from_manifest, save_probe
from lynx.probe.context import history_matrix
from lynx.probe.heads import fit_trees, out_of_fold, problem_folds, target_labels
from lynx.probe.metrics import binary_metrics, reliability_plot
from lynx.probe.scoring import cue_scores, data_context, head_input_names, head_inputs
from lynx.probe.selection import operating_figure
from lynx.probe.trees import MAX_LEAVES
from lynx.store.cue_data import load_cue_data, manifest_hash, read_traces

console = Console(stderr=True)
TRAIN_PROBLEMS = "train_problems.json"


def split_problems(problems: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Disjoint random groups of problem ids with the given fractions (the rest is the last group)."""
    perm = np.random.default_rng(seed).permutation(np.sort(problems))
    cuts = np.cumsum([int(round(f * len(perm))) for f in fractions])
    return np.split(perm, cuts)


def _weights(y: np.ndarray, balanced: bool) -> np.ndarray:
    if not balanced or not len(y):
        return np.ones(len(y))
    counts = np.bincount(y, minlength=2).astype(float)
    return (len(y) / (2 * counts))[y]


def _log_loss(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


def fit_mlp(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, cfg: ProbeTrainConfig, epochs: int | None = None):
    """(scaler, classifier, history) with early stopping on the validation problems; with
    ``epochs``, exactly that many epochs and no validation (the out-of-fold refits)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    Xs, Xvs = scaler.transform(X), scaler.transform(Xv) if len(Xv) else Xv
    w, wv = _weights(y, cfg.class_balanced), _weights(yv, cfg.class_balanced)
    clf = MLPClassifier(
        hidden_layer_sizes=cfg.hidden_layer_sizes,
        activation="relu",
        solver="adam",
        alpha=cfg.l2,
        batch_size=min(cfg.batch_size, len(y)),
        learning_rate_init=cfg.learning_rate,
        random_state=cfg.seed,
    )
    best, best_loss, since, history = None, np.inf, 0, []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("training probe", total=epochs or cfg.max_epochs, info="")
        for epoch in range(epochs or cfg.max_epochs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.partial_fit(Xs, y, classes=np.array([0, 1]), sample_weight=w)
            if epochs is not None:
                bar.update(task, advance=1, info=f"epoch {epoch + 1}")
                continue
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


def to_probe(scaler, clf, meta: dict, head=None) -> Probe:
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return Probe(t(scaler.mean_), t(scaler.scale_), [t(w) for w in clf.coefs_], [t(b) for b in clf.intercepts_], meta, head)


def _architecture(kind: str, cfg: ProbeTrainConfig, cues) -> dict:
    arch: dict = {"kind": kind, "description": KINDS[kind]}
    if kind != "context-only":
        arch |= {"hidden_layer_sizes": list(cfg.hidden_layer_sizes), "activation": "relu", "output": "sigmoid"}
    if kind != "mlp":
        arch |= {
            "head": "boosted trees (HistGradientBoosting)",
            "head_inputs": head_input_names(kind, cues),
            "tree_iterations": cfg.tree_iterations,
            "tree_learning_rate": cfg.tree_learning_rate,
            "tree_leaves": cfg.tree_leaves,
            "tree_min_leaf": cfg.tree_min_leaf,
            "tree_l2": cfg.tree_l2,
        }
    return arch


def train_probe(data_dir: Path | str | list, out: Path | str, cfg: ProbeTrainConfig | None = None) -> dict:
    """Train, evaluate on held-out problems, and write the probe folder; returns its metadata.
    ``data_dir``: a collect folder, or several read as one collection (same model, layers,
    cues, exit string and labels; disjoint problems — e.g. one per GPU or per benchmark).

    ``cfg.kind``: ``mlp`` (v1: hidden states), ``stacked`` (v2: the MLP's logit, the earlier
    cues' logits and the cue's context through boosted trees) or ``auto`` (whichever saves more
    at ``cfg.select_alpha`` on out-of-fold scores of the training problems). With
    ``cfg.baseline`` the context-only baseline is written to ``<out>/baselines/context-only``."""
    cfg = cfg or ProbeTrainConfig()
    if cfg.kind not in PROBE_KINDS:
        raise InvalidInput(f"unknown probe kind {cfg.kind!r}: use {', '.join(PROBE_KINDS)}")
    if not 2 <= cfg.tree_leaves <= MAX_LEAVES:
        raise InvalidInput(f"tree_leaves must be in [2, {MAX_LEAVES}] (the engine compiles a tree into nested conditions, at most 63 deep), got {cfg.tree_leaves}")
    data = load_cue_data(data_dir)
    data_dir = data.source
    out = Path(out)
    y_all = target_labels(data, cfg.target)
    if len(np.unique(y_all)) < 2:
        raise InvalidInput(f"{data_dir}: every cue point has label {int(y_all[0])} (target {cfg.target}); a probe needs both safe and unsafe cues")
    problems = data.problems
    if len(problems) < 5:
        raise InvalidInput(f"{data_dir}: only {len(problems)} problems; a probe needs at least 5 to split by problem")
    test_p, val_p, train_p = split_problems(problems, (cfg.test_fraction, cfg.val_fraction), cfg.seed)
    in_ = lambda ids: np.isin(data.problem_id, ids)  # noqa: E731
    mtr, mva, mte = in_(train_p), in_(val_p), in_(test_p)
    if len(np.unique(y_all[mtr])) < 2:
        raise InvalidInput(f"{data_dir}: the training problems hold only one class; collect more problems")
    scaler, clf, history = fit_mlp(data.features[mtr], y_all[mtr], data.features[mva], y_all[mva], cfg)
    best_epochs = int(np.argmin(history)) + 1 if history else cfg.max_epochs

    m = data.manifest
    base = meta_from_manifest(m) | {
        "data": {
            "folder": data.source,
            "manifest_hash": manifest_hash(m),
            "dataset": m["dataset"],
            "sampling": m["sampling"],
            "n_cues": len(data),
            "n_problems": int(len(problems)),
            "safe_share": float(data.label.mean()),
            "labels": data.labels,
        }
        | ({"merged_from": m["merged_from"]} if "merged_from" in m else {}),
        "target": cfg.target,
        "training": asdict(cfg) | {"epochs": len(history), "best_epochs": best_epochs, "best_val_loss": float(min(history))},
    }
    mlp = to_probe(scaler, clf, base | {"architecture": _architecture("mlp", cfg, m["cues"])})

    # the problems the heads learn from: every non-test problem, in problem-grouped folds
    fit = mtr | mva
    fd = data.subset(fit)
    yf = y_all[fit]
    has_context = data.cue_word is not None and data.token_position is not None
    if cfg.kind == "stacked" and not has_context:
        data_context(data)  # the one clear error: the collection predates cue words
    candidates = {"mlp": mlp}
    oof: dict[str, np.ndarray] = {}
    folds = problem_folds(fd.problem_id, cfg.folds, cfg.seed)
    if has_context and (cfg.kind != "mlp" or cfg.baseline):
        ctx = data_context(fd)
        with console.status("out-of-fold scores (problem-grouped folds)"):

            def mlp_fold(trm, tem):
                sc, c, _ = fit_mlp(fd.features[trm], yf[trm], fd.features[:0], yf[:0], cfg, epochs=best_epochs)
                return c.predict_proba(sc.transform(fd.features[tem]))[:, 1]

            if cfg.kind != "mlp":
                oof["mlp"] = out_of_fold(folds, mlp_fold)
                X2 = head_inputs("stacked", m["cues"], ctx, history_matrix(fd.cue_index, oof["mlp"]))
                oof["stacked"] = out_of_fold(folds, lambda trm, tem: fit_trees(X2[trm], yf[trm], cfg).predict(X2[tem]))
                candidates["stacked"] = to_probe(scaler, clf, base | {"architecture": _architecture("stacked", cfg, m["cues"])}, head=fit_trees(X2, yf, cfg))
            if cfg.baseline:
                oof["context-only"] = out_of_fold(folds, lambda trm, tem: fit_trees(ctx[trm], yf[trm], cfg).predict(ctx[tem]))
                candidates["context-only"] = Probe(
                    torch.zeros(0), torch.zeros(0), [], [], base | {"architecture": _architecture("context-only", cfg, m["cues"])}, head=fit_trees(ctx, yf, cfg)
                )
    elif cfg.baseline:
        console.print(f"[yellow]warning[/]: {data_dir} predates cue words in its cue rows: no context-only baseline (collect again)")

    # choose by the operating figure, then report every candidate on the held-out test problems
    traces = read_traces(data.folders or data.folder)
    risk = "premature" if data.labels == "gold" else "answer-change"
    pick = lambda d, ids: {k: [v for v, p in zip(col, d["problem_id"], strict=True) if p in ids] for k, col in d.items()}  # noqa: E731
    selection = {k: operating_figure(fd, s, pick(traces, set(map(str, fd.problems))), cfg.select_alpha, risk) for k, s in oof.items()}
    kind = cfg.kind if cfg.kind != "auto" else ("stacked" if "stacked" in selection and selection["stacked"]["saving"] > selection["mlp"]["saving"] else "mlp")
    comparison = {}
    te = data.subset(mte)
    if len(te.problems) >= 10:
        te_traces = pick(traces, set(map(str, te.problems)))
        comparison = {k: operating_figure(te, cue_scores(c, te), te_traces, cfg.select_alpha, risk) for k, c in candidates.items()}
    probe = candidates[kind]
    probe.meta["selection"] = {"chosen": kind, "rule": cfg.kind, "out_of_fold": selection, "test": comparison}

    stale = remove_calibrations(out)  # computed for the probe this one replaces: they would not hold for the new one
    if stale:
        console.print(f"removed the calibrations of the previous probe in {out} ({', '.join(stale)}); run lynx calibrate")
    written = [(out, probe)]
    if "context-only" in candidates:
        written.append((out / BASELINES_DIR / "context-only", candidates["context-only"]))
    elif (out / BASELINES_DIR).is_dir():
        shutil.rmtree(out / BASELINES_DIR)  # a baseline of the previous probe's data would mislead
    for folder, pr in written:
        pr.meta["metrics"] = split_metrics(pr, {"train": data.subset(mtr), "validation": data.subset(mva), "test": te}, cfg.target)
        if folder != out:
            remove_calibrations(folder)
            pr.meta["selection"] = {"baseline_of": str(out), "test": {k: v for k, v in comparison.items() if k == "context-only"}}
        save_probe(pr, folder)
        (folder / TRAIN_PROBLEMS).write_text(json.dumps(sorted(map(str, problems))) + "\n")
        if len(te):
            reliability_plot(
                cue_scores(pr, te), target_labels(te, cfg.target), folder / "reliability.png", title=f"{pr.kind} probe reliability, {len(te.problems)} held-out problems"
            )
        (folder / "README.md").write_text(model_card(pr.meta))
    return probe.meta


def split_metrics(probe: Probe, splits: dict, target: str) -> dict:
    """AUC, accuracy, Brier, ECE of the final score against the target labels, per split."""
    return {name: binary_metrics(cue_scores(probe, d), target_labels(d, target)) | {"n_cues": len(d), "n_problems": int(len(d.problems))} for name, d in splits.items() if len(d)}


def model_card(meta: dict) -> str:
    t = meta["metrics"].get("test", {})
    rows = "\n".join(f"| {k} | {v['n_problems']} | {v['n_cues']} | {v['auc']:.3f} | {v['accuracy']:.3f} | {v['brier']:.3f} | {v['ece']:.3f} |" for k, v in meta["metrics"].items())
    arch = meta["architecture"]
    what = {
        "mlp": f"An MLP {tuple(arch.get('hidden_layer_sizes', ()))} on the hidden states of cue tokens",
        "stacked": f"Probe v2: an MLP {tuple(arch.get('hidden_layer_sizes', ()))} on the hidden states of cue tokens, whose logit, the "
        "logits of the trace's earlier cues and the cue's context (index, position, word) go through boosted trees",
        "context-only": "The context-only baseline: boosted trees on the cue's context alone (index, position, word), no hidden state",
    }
    sel = meta.get("selection", {})
    figures = ""
    if sel.get("out_of_fold") or sel.get("test"):
        lines = ["| candidate | where | problems | saving (sd) | risk | accuracy (full CoT) |", "|---|---|---|---|---|---|"]
        for where, figs in (("out-of-fold (training problems)", sel.get("out_of_fold") or {}), ("held-out test problems", sel.get("test") or {})):
            for k, f in figs.items():
                lines.append(
                    f"| {k} | {where} | {f['n_problems']} | {f['saving']:.1%} ({f['saving_sd']:.1%}) | {f['risk_measured']:.3f} "
                    f"({f['risk']}) | {f['accuracy']:.3f} ({f['full_cot_accuracy']:.3f}) |"
                )
        alpha = next(iter((sel.get("test") or sel.get("out_of_fold")).values()))["alpha"]
        figures = (
            f"\n## Operating figures at alpha {alpha:g}\n\nThe thinking saved when CRC sets the threshold on half of the problems, "
            "measured on the other half (mean over 100 halvings). "
            + (f"Chosen: **{sel['chosen']}** (rule: `{sel['rule']}`; auto = the better out-of-fold saving).\n\n" if "chosen" in sel else "\n\n")
            + "\n".join(lines)
            + "\n"
        )
    return f"""# lynx probe for `{meta["model"]}` ({meta["architecture"]["kind"]})

{what[arch["kind"]]} (layers {meta["layers"]} of {meta["num_layers"]}, hidden size {meta["hidden_size"]}); it predicts whether
forcing an exit at that cue (`{meta["exit_string"]!r}`) is safe (target `{meta.get("target", "safe")}`).

- model fingerprint: `{meta["model_fingerprint"]}` (the probe refuses any other model)
- cues: {", ".join(meta["cues"])}
- training data: `{meta["data"]["dataset"]}`, {meta["data"]["n_problems"]} problems, {meta["data"]["n_cues"]} cue points
  ({meta["data"]["safe_share"]:.1%} safe), sampling {meta["data"]["sampling"]}, manifest hash `{meta["data"]["manifest_hash"]}`
- split by problem: train / validation (early stopping) / test (the figures below)

| split | problems | cues | AUC | accuracy | Brier | ECE |
|---|---|---|---|---|---|---|
{rows}

Held-out AUC {t.get("auc", float("nan")):.3f}. Reliability diagram: `reliability.png`.
{figures}
Calibrate before use: `lynx calibrate --probe <this folder> --data <collect folder on other problems>`.
"""

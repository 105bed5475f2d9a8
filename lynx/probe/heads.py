"""The pieces ``lynx train`` stacks: targets, the tree head, out-of-fold scores.

Why out-of-fold: the v2 head learns how much to trust the hidden-state MLP's logit from the
trace's context and earlier logits. Trained on the MLP's *in-sample* scores it would learn
the MLP's overconfidence on its own training cues; trained on scores from MLPs that never saw
the cue's problem, it learns what the MLP's scores mean on new problems — what it gets online.
"""

from __future__ import annotations

import numpy as np

from lynx.config import TARGETS, ProbeTrainConfig
from lynx.errors import InvalidInput
from lynx.probe.trees import TreeEnsemble


def target_labels(data, target: str) -> np.ndarray:
    """0/1 training labels. ``safe``: a forced exit here gives the right answer (the label
    collected). ``harm``-target safe: exiting here does not turn a right full answer wrong, so a
    cue of a trace whose full answer is wrong is never unsafe (the per-problem premature risk
    counts exactly these harms). With agreement labels the two coincide (a disagreement is the harm)."""
    if target not in TARGETS:
        raise InvalidInput(f"unknown target {target!r}: use {' or '.join(TARGETS)}")
    y = data.label.astype(np.int64)
    if target == "harm" and data.labels == "gold":
        y = 1 - (data.final_correct & (y == 0)).astype(np.int64)
    return y


def fit_trees(X: np.ndarray, y: np.ndarray, cfg: ProbeTrainConfig) -> TreeEnsemble:
    """Boosted trees (scikit-learn's HistGradientBoosting, class-balanced like the MLP) exported to arrays."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if len(np.unique(y)) < 2:
        raise InvalidInput("the tree head's training cues hold only one class; collect more problems")
    model = HistGradientBoostingClassifier(
        max_iter=cfg.tree_iterations,
        learning_rate=cfg.tree_learning_rate,
        max_leaf_nodes=cfg.tree_leaves,
        min_samples_leaf=cfg.tree_min_leaf,
        l2_regularization=cfg.tree_l2,
        early_stopping=False,
        class_weight="balanced" if cfg.class_balanced else None,
        random_state=cfg.seed,
    )
    return TreeEnsemble.from_sklearn(model.fit(X, y))


def problem_folds(problem_id: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint masks over the rows, each holding whole problems."""
    problems = np.random.default_rng(seed).permutation(np.unique(problem_id))
    return [np.isin(problem_id, part) for part in np.array_split(problems, min(k, len(problems)))]


def out_of_fold(folds: list[np.ndarray], fit_predict) -> np.ndarray:
    """Scores of every row from a model fit without its fold: ``fit_predict(train_mask, test_mask)``."""
    out = np.full(len(folds[0]), np.nan)
    for test in folds:
        out[test] = fit_predict(~test, test)
    return out

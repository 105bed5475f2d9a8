"""Gradient-boosted trees as plain arrays: scikit-learn's ``HistGradientBoostingClassifier``
exported without pickle, and evaluated with numpy inside an engine.

Why: the tabular part of a probe (where a cue sits in the trace, which word it is, the scores
of the trace's earlier cues) is best fit by boosted trees, but an artifact lynx loads must be
safetensors + JSON, never an unpickled object, and the engine's scorer must not import
scikit-learn per step. A fitted ensemble is a handful of node arrays (what is stored).

Evaluation is QuickScorer's (Lucchese et al., SIGIR 2015), vectorised with numpy: every split
of every tree is tested at once, a failed split clears the bits of the leaves on its left in
its tree's leaf bitvector, and the exit leaf is the lowest bit left. That is a fixed handful of
array operations whatever the trees' depth or the number of rows, so a step's cues cost about
what one does: ~10-17 us warm, ~150 us inside a vLLM step, where each numpy call runs cold
(docs/run.md). Tested equal to ``decision_function``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from lynx.errors import InvalidInput

#: the node arrays, in the order they are stored (``head.<name>`` in the safetensors file)
NODE_FIELDS = ("feature", "threshold", "left", "right", "leaf", "value", "missing_left")
#: leaves per tree the bitvector evaluation supports (one uint64 per tree)
MAX_LEAVES = 64
#: the index of the lowest set bit of every byte (bit vectors of up to 8 leaves: one lookup)
LOWEST_BIT_OF_BYTE = np.array([(b & -b).bit_length() - 1 for b in range(256)], dtype=np.int64)


def _sigmoid(r: float) -> float:
    """The logistic function of one raw score, without overflow. Per row in plain Python: at a
    cue there are a few rows, and numpy's per-call cost would be most of the work."""
    if r >= 0:
        return 1.0 / (1.0 + math.exp(-r))
    e = math.exp(r)
    return e / (1.0 + e)


def _lowest_bit(bits: np.ndarray) -> np.ndarray:
    """The index of the lowest set bit of each (non-zero) unsigned integer: the tree's exit leaf
    (bit vectors wider than a byte; a byte's is one lookup in the exit-value table)."""
    return np.log2(bits & (~bits + bits.dtype.type(1))).astype(np.int64)  # a power of two: exact in float64


class _Bitvectors(NamedTuple):
    """The QuickScorer form of an ensemble (:meth:`TreeEnsemble._bitvectors`), split-major: index
    ``k * n_trees + t`` is split ``k`` of tree ``t`` (padded with splits every row passes)."""

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    mask: np.ndarray  # the leaves a failed split leaves reachable
    all_leaves: np.unsignedinteger  # every bit set, in the masks' type
    leaf_value: np.ndarray  # (trees * widest tree's leaves,): leaf values, left to right
    leaf_offset: np.ndarray  # (trees,): where each tree's leaves start in leaf_value
    exit_value: np.ndarray | None  # up to 8 leaves: (trees * 256,) the exit leaf's value of every leaf mask; else None
    exit_offset: np.ndarray  # (trees,): tree * 256


@dataclass
class TreeEnsemble:
    """A binary classifier's boosted trees: ``sigmoid(baseline + sum of one leaf per tree)``."""

    feature: np.ndarray  # (N,) int64: split feature of each node (unused at leaves)
    threshold: np.ndarray  # (N,) float64: go left when x <= threshold
    left: np.ndarray  # (N,) int64: global index of the left child
    right: np.ndarray  # (N,) int64
    leaf: np.ndarray  # (N,) bool
    value: np.ndarray  # (N,) float64: a leaf's contribution to the raw score
    missing_left: np.ndarray  # (N,) bool: where a NaN goes
    roots: np.ndarray  # (n_trees,) int64
    baseline: float
    depth: int  # longest root-to-leaf path
    n_features: int
    _scorer: _Bitvectors | None = field(default=None, init=False, repr=False, compare=False)  # built on first use

    @classmethod
    def from_sklearn(cls, model) -> TreeEnsemble:
        """Export a fitted binary ``HistGradientBoostingClassifier`` (numeric features only)."""
        if getattr(model, "n_trees_per_iteration_", 1) != 1:
            raise InvalidInput("only a binary classifier's trees can be exported")
        nodes = [p[0].nodes for p in model._predictors]
        if any(n["is_categorical"].any() for n in nodes):
            raise InvalidInput("categorical splits are not exported: encode categories as numbers")
        offsets = np.cumsum([0] + [len(n) for n in nodes])
        cat = lambda name: np.concatenate([n[name] for n in nodes])  # noqa: E731
        shift = np.concatenate([np.full(len(n), o) for n, o in zip(nodes, offsets[:-1], strict=True)])
        leaf = cat("is_leaf").astype(bool)
        return cls(
            feature=cat("feature_idx").astype(np.int64), threshold=cat("num_threshold").astype(np.float64),
            left=np.where(leaf, 0, cat("left").astype(np.int64) + shift), right=np.where(leaf, 0, cat("right").astype(np.int64) + shift),
            leaf=leaf, value=np.where(leaf, cat("value"), 0.0).astype(np.float64), missing_left=cat("missing_go_to_left").astype(bool),
            roots=offsets[:-1].astype(np.int64), baseline=float(np.ravel(model._baseline_prediction)[0]),
            depth=int(max(n["depth"].max() for n in nodes)) if nodes else 0, n_features=int(model.n_features_in_),
        )

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The raw score (log-odds) of each row of ``X`` ``(n, n_features)``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InvalidInput(f"the trees take {self.n_features} features, got an array of shape {X.shape}")
        if self._scorer is None:
            self._scorer = self._bitvectors()
        q = self._scorer
        x = X.take(q.feature, axis=1)  # (n, splits * trees), split-major: every operation below runs along a long contiguous axis
        go_left = x <= q.threshold
        if not math.isfinite(X.sum()):  # a NaN goes where the split sent the training NaNs (one numpy call when there is none)
            go_left |= np.isnan(x) & q.missing_left
        cleared = np.where(go_left, q.all_leaves, q.mask).reshape(len(X), -1, len(q.leaf_offset))
        bits = np.bitwise_and.reduce(cleared, axis=1)  # (n, trees): the leaves still reachable
        if q.exit_value is not None:  # up to 8 leaves a tree: (tree, leaf bits) -> its exit leaf's value, one lookup
            return self.baseline + q.exit_value.take(bits + q.exit_offset).sum(axis=1)
        return self.baseline + q.leaf_value.take(_lowest_bit(bits) + q.leaf_offset).sum(axis=1)

    def _in_order(self, root: int) -> tuple[list[tuple[int, int, int]], list[float]]:
        """One tree's splits as ``(node, its first leaf, its right child's first leaf)`` (leaves numbered from the
        left) and its leaves' values from left to right."""
        splits: list[tuple[int, int, int]] = []
        values: list[float] = []

        def visit(node: int) -> tuple[int, int]:  # the node's leaves, as a range of leaf numbers
            if self.leaf[node]:
                values.append(float(self.value[node]))
                return len(values) - 1, len(values)
            lo, mid = visit(int(self.left[node]))
            _, hi = visit(int(self.right[node]))
            splits.append((node, lo, mid))
            return lo, hi

        visit(root)
        return splits, values

    def _bitvectors(self) -> _Bitvectors:
        """Per tree, padded to the largest tree: its splits' feature, threshold and NaN side,
        the bitvector of leaves each split's failure leaves reachable (bit i = the tree's i-th
        leaf from the left; the narrowest unsigned type that holds every tree's leaves), and the
        leaves' values in that order (flat, with each tree's offset)."""
        splits, leaves = [], []
        for root in self.roots.tolist():
            tree_splits, tree_leaves = self._in_order(root)
            if len(tree_leaves) > MAX_LEAVES:
                raise InvalidInput(f"a tree has {len(tree_leaves)} leaves; at most {MAX_LEAVES} are supported")
            splits.append(tree_splits)
            leaves.append(tree_leaves)
        n_trees, width, n_leaves = len(splits), max([len(t) for t in splits] + [1]), max([len(t) for t in leaves] + [1])
        dtype = next(d for d in (np.uint8, np.uint16, np.uint32, np.uint64) if n_leaves <= np.iinfo(d).bits)
        all_leaves = int(np.iinfo(dtype).max)
        feature = np.zeros((n_trees, width), np.int64)
        threshold = np.full((n_trees, width), np.inf)  # padding: a split every row passes
        missing_left = np.ones((n_trees, width), bool)
        mask = np.full((n_trees, width), all_leaves, dtype)
        leaf_value = np.zeros((n_trees, n_leaves))
        for t, (tree_splits, tree_leaves) in enumerate(zip(splits, leaves, strict=True)):
            leaf_value[t, : len(tree_leaves)] = tree_leaves
            for k, (node, lo, mid) in enumerate(tree_splits):
                feature[t, k], threshold[t, k], missing_left[t, k] = self.feature[node], self.threshold[node], self.missing_left[node]
                left_bits = ((1 << (mid - lo)) - 1) << lo
                mask[t, k] = all_leaves & ~left_bits
        split_major = lambda a: np.ascontiguousarray(a.T).ravel()  # noqa: E731  index k * n_trees + t: split k of tree t
        exit_value = leaf_value[:, LOWEST_BIT_OF_BYTE.clip(0, n_leaves - 1)].ravel() if dtype == np.uint8 else None
        return _Bitvectors(split_major(feature), split_major(threshold), split_major(missing_left), split_major(mask), dtype(all_leaves),
                           leaf_value.ravel(), np.arange(n_trees) * n_leaves, exit_value, np.arange(n_trees) * 256)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) of each row: ``predict_proba(X)[:, 1]``."""
        return np.asarray([_sigmoid(r) for r in self.raw(X).tolist()], dtype=np.float64)

    def tensors(self, prefix: str = "head.") -> dict[str, torch.Tensor]:
        """The arrays to store in a safetensors file (the scalars go into the JSON)."""
        t = {f"{prefix}{k}": torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in NODE_FIELDS}
        t[f"{prefix}roots"] = torch.from_numpy(self.roots)
        return {k: v.to(torch.uint8) if v.dtype == torch.bool else v for k, v in t.items()}

    def scalars(self) -> dict:
        return {"baseline": self.baseline, "depth": self.depth, "n_features": self.n_features, "n_trees": len(self.roots)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], scalars: dict, prefix: str = "head.") -> TreeEnsemble:
        """The ensemble stored by :meth:`tensors` / :meth:`scalars`; a missing or inconsistent array is one clear error."""
        try:
            arr = {k: tensors[f"{prefix}{k}"].numpy() for k in (*NODE_FIELDS, "roots")}
            ens = cls(feature=arr["feature"].astype(np.int64), threshold=arr["threshold"].astype(np.float64), left=arr["left"].astype(np.int64),
                      right=arr["right"].astype(np.int64), leaf=arr["leaf"].astype(bool), value=arr["value"].astype(np.float64),
                      missing_left=arr["missing_left"].astype(bool), roots=arr["roots"].astype(np.int64),
                      baseline=float(scalars["baseline"]), depth=int(scalars["depth"]), n_features=int(scalars["n_features"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"the probe's trees are incomplete ({type(e).__name__}: {e})") from None
        n = len(ens.feature)
        if any(len(getattr(ens, k)) != n for k in NODE_FIELDS) or (n and (ens.left.max() >= n or ens.right.max() >= n or ens.roots.max() >= n)):
            raise InvalidInput("the probe's trees are inconsistent (node arrays of different lengths or out-of-range children)")
        if len(ens.roots) != int(scalars.get("n_trees", len(ens.roots))) or (n and ens.feature[~ens.leaf].max(initial=0) >= ens.n_features):
            raise InvalidInput("the probe's trees are inconsistent with their recorded sizes")
        ens._scorer = ens._bitvectors()  # refused now, not at the first cue, if it cannot be evaluated
        return ens

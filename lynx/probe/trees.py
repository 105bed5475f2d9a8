"""Gradient-boosted trees as plain arrays: scikit-learn's ``HistGradientBoostingClassifier``
exported without pickle, and evaluated inside an engine without numpy.

Why: the tabular part of a probe (where a cue sits in the trace, which word it is, the scores
of the trace's earlier cues) is best fit by boosted trees, but an artifact lynx loads must be
safetensors + JSON, never an unpickled object, and the engine's scorer must not import
scikit-learn per step. A fitted ensemble is a handful of node arrays (what is stored).

Evaluation: at load, the node arrays are turned into the source of one Python function, each
tree a nest of ``if x[f] <= t:`` conditions with its leaf values as constants (what m2cgen or
treelite do for other languages), and compiled. Why not numpy: at a cue the engine scores a few
rows, and numpy's cost there is per call, not per row; inside a vLLM step every numpy call runs
cold (~10-15 us each after the model's step), so a vectorised evaluation of about ten calls
cost ~155 us a step where this costs a few us a row (docs/run.md). The same function scores
offline (calibration, training metrics), so the engine compares a threshold with exactly the
numbers it was calibrated on, summed in the same order. The source is built only from the
validated arrays (integer feature indices, floats written with ``repr``), never from text read
from a file. Compiling is once per load (~0.7 s for 300 trees of 64 leaves; milliseconds for the
shipped 50 trees). Tested equal to ``decision_function``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lynx.errors import InvalidInput

#: the node arrays, in the order they are stored (``head.<name>`` in the safetensors file)
NODE_FIELDS = ("feature", "threshold", "left", "right", "leaf", "value", "missing_left")
#: leaves per tree the engine takes: a tree of 64 leaves can be 63 conditions deep, and Python's
#: parser stops at 100 levels of indentation
MAX_LEAVES = 64


def _sigmoid(r: float) -> float:
    """The logistic function of one raw score, without overflow. Per row in plain Python: at a
    cue there are a few rows, and numpy's per-call cost would be most of the work."""
    if r >= 0:
        return 1.0 / (1.0 + math.exp(-r))
    e = math.exp(r)
    return e / (1.0 + e)


def _constant(v: float) -> str:
    """A float as Python source that reads back as the same float (``repr`` round-trips)."""
    v = float(v)
    if math.isnan(v):
        raise InvalidInput("the probe's trees hold a NaN threshold or leaf value")
    return repr(v) if math.isfinite(v) else ("INF" if v > 0 else "-INF")


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
    _raw_rows: Callable[[Sequence[Sequence[float]]], list[float]] | None = field(default=None, init=False, repr=False, compare=False)  # compiled on first use

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
            feature=cat("feature_idx").astype(np.int64),
            threshold=cat("num_threshold").astype(np.float64),
            left=np.where(leaf, 0, cat("left").astype(np.int64) + shift),
            right=np.where(leaf, 0, cat("right").astype(np.int64) + shift),
            leaf=leaf,
            value=np.where(leaf, cat("value"), 0.0).astype(np.float64),
            missing_left=cat("missing_go_to_left").astype(bool),
            roots=offsets[:-1].astype(np.int64),
            baseline=float(np.ravel(model._baseline_prediction)[0]),
            depth=int(max(n["depth"].max() for n in nodes)) if nodes else 0,
            n_features=int(model.n_features_in_),
        )

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The raw score (log-odds) of each row of ``X`` ``(n, n_features)``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InvalidInput(f"the trees take {self.n_features} features, got an array of shape {X.shape}")
        return np.asarray(self.raw_rows(X.tolist()), dtype=np.float64).reshape(len(X))

    def raw_rows(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """The raw scores of rows given as lists of floats (a NaN takes the side its split sent the
        training NaNs to); no numpy, for the engine. A row shorter than the trees read is an
        ``IndexError``."""
        if self._raw_rows is None:
            self._raw_rows = self._compile()
        return self._raw_rows(rows)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) of each row: ``predict_proba(X)[:, 1]``."""
        return np.asarray([_sigmoid(r) for r in self.raw(X).tolist()], dtype=np.float64)

    def predict_rows(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """:meth:`predict` of rows given as lists of floats, as a list (the engine's call)."""
        return [_sigmoid(r) for r in self.raw_rows(rows)]

    def source(self) -> str:
        """The Python source of the scoring function: ``raw_scores(rows)`` -> a raw score per row,
        the baseline plus each tree's leaf value, added tree by tree. A split sends ``x[f] <= t``
        left; where it sent the training NaNs left, the test is ``not x[f] > t`` (true for NaN)."""
        lines = ["def raw_scores(rows):", "    out = []", "    for x in rows:", f"        s = {_constant(self.baseline)}"]
        leaf, left, right = self.leaf.tolist(), self.left.tolist(), self.right.tolist()
        feature, threshold, value, missing_left = self.feature.tolist(), self.threshold.tolist(), self.value.tolist(), self.missing_left.tolist()

        def emit(node: int, indent: str) -> int:  # the tree's source below ``node``; returns its number of leaves
            if len(indent) > 4 * (MAX_LEAVES + 1):  # deeper than a tree of MAX_LEAVES leaves can be (or a cycle)
                raise InvalidInput(f"a tree is deeper than {MAX_LEAVES} leaves allow; at most {MAX_LEAVES} leaves a tree are supported")
            if leaf[node]:
                lines.append(f"{indent}s += {_constant(value[node])}")
                return 1
            f, t = int(feature[node]), _constant(threshold[node])
            lines.append(f"{indent}if not x[{f}] > {t}:" if missing_left[node] else f"{indent}if x[{f}] <= {t}:")
            n = emit(left[node], indent + "    ")
            lines.append(f"{indent}else:")
            n += emit(right[node], indent + "    ")
            if n > MAX_LEAVES:
                raise InvalidInput(f"a tree has more than {MAX_LEAVES} leaves; at most {MAX_LEAVES} are supported")
            return n

        for root in self.roots.tolist():
            emit(root, "        ")
        lines += ["        out.append(s)", "    return out"]
        return "\n".join(lines) + "\n"

    def _compile(self) -> Callable[[Sequence[Sequence[float]]], list[float]]:
        """:meth:`source` compiled, with no builtins in reach (the source only compares and adds)."""
        namespace: dict = {}
        exec(compile(self.source(), "<lynx trees>", "exec"), {"__builtins__": {}, "INF": math.inf}, namespace)  # noqa: S102
        return namespace["raw_scores"]

    def __getstate__(self) -> dict:
        """The state for in-memory transport (multiprocessing, Ray; never an artifact): a compiled
        function does not pickle, so it is left out and compiled again on first use."""
        return self.__dict__ | {"_raw_rows": None}

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
            ens = cls(
                feature=arr["feature"].astype(np.int64),
                threshold=arr["threshold"].astype(np.float64),
                left=arr["left"].astype(np.int64),
                right=arr["right"].astype(np.int64),
                leaf=arr["leaf"].astype(bool),
                value=arr["value"].astype(np.float64),
                missing_left=arr["missing_left"].astype(bool),
                roots=arr["roots"].astype(np.int64),
                baseline=float(scalars["baseline"]),
                depth=int(scalars["depth"]),
                n_features=int(scalars["n_features"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"the probe's trees are incomplete ({type(e).__name__}: {e})") from None
        n = len(ens.feature)
        if any(len(getattr(ens, k)) != n for k in NODE_FIELDS) or (n and any(a.min(initial=0) < 0 or a.max(initial=0) >= n for a in (ens.left, ens.right, ens.roots))):
            raise InvalidInput("the probe's trees are inconsistent (node arrays of different lengths or out-of-range children)")
        split_features = ens.feature[~ens.leaf]
        if len(ens.roots) != int(scalars.get("n_trees", len(ens.roots))) or (len(split_features) and not 0 <= split_features.min() <= split_features.max() < ens.n_features):
            raise InvalidInput("the probe's trees are inconsistent with their recorded sizes")
        ens._raw_rows = ens._compile()  # refused now, not at the first cue, if it cannot be evaluated
        return ens

"""Cue points of a ``lynx collect`` folder as arrays, grouped the way training needs them.

Why a dedicated loader: training and calibration must never split one problem's cues
across sides (its cues are strongly correlated), and both need the collection's manifest
to know which model and layers the features came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lynx.errors import InvalidInput, MissingInput
from lynx.store.manifest import IDENTITY, LEGACY_IDENTITY, identity_value, read_manifest
from lynx.store.shards import completed_shards, read_folder

log = logging.getLogger("lynx.store")

class EmptyData(InvalidInput):
    """A collect folder without usable cue points."""


@dataclass
class CueData:
    """One row per cue point, in trace order (problem, sample, cue index)."""

    features: np.ndarray  # (n, n_layers * hidden) float32
    label: np.ndarray  # (n,) int8: 1 = a forced exit here gives the gold answer
    problem_id: np.ndarray  # (n,) str
    sample_id: np.ndarray  # (n,) int
    cue_index: np.ndarray  # (n,) int
    thinking_position: np.ndarray  # (n,) int: thinking tokens before the cue (inclusive)
    thinking_tokens_total: np.ndarray  # (n,) int: thinking tokens of the full trace
    final_correct: np.ndarray  # (n,) bool: the full-CoT answer is right (False where no gold answer)
    manifest: dict
    folder: Path
    agreement: np.ndarray | None = None  # (n,) int8: the forced answer equals the trace's final one (None: predates it)

    @property
    def labels(self) -> str:
        """What ``label`` means: ``gold`` or ``agreement`` (manifest; older collections are gold)."""
        return identity_value(self.manifest, "labels")

    def __len__(self) -> int:
        return len(self.label)

    @property
    def problems(self) -> np.ndarray:
        return np.unique(self.problem_id)

    def subset(self, mask: np.ndarray) -> CueData:
        fields = {k: getattr(self, k)[mask] for k in (
            "features", "label", "problem_id", "sample_id", "cue_index", "thinking_position", "thinking_tokens_total", "final_correct")}
        return CueData(**fields, manifest=self.manifest, folder=self.folder,
                       agreement=None if self.agreement is None else self.agreement[mask])


def manifest_hash(manifest: dict) -> str:
    """Hash of the fields that define a collection's rows (not versions or paths)."""
    ident = {k: manifest.get(k) for k in IDENTITY if k in manifest or k not in LEGACY_IDENTITY}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def warn_if_incomplete(folder: Path, manifest: dict) -> list[int]:
    """The shards the manifest promises that are not (complete) in the folder, with a warning
    that counts them: training or calibrating on part of a collection is allowed (a subset of
    exchangeable problems), but never silently."""
    n, size = manifest.get("n_problems"), manifest.get("shard_size")
    if not n or not size:
        return []
    expected = range((n + size - 1) // size)
    missing = [i for i in expected if i not in completed_shards(folder)]
    if missing:
        lost = sum(min(size, n - i * size) for i in missing)
        log.warning("%s holds %d of its %d shards (%d of %d problems; missing shard(s) %s): using what is there; "
                    "rerun lynx collect with the same options and --out to complete it",
                    folder, len(expected) - len(missing), len(expected), n - lost, n, ", ".join(map(str, missing[:10])))
    return missing


def load_cue_data(folder: Path | str) -> CueData:
    """Read every complete shard of a collect folder; clear errors for empty or foreign folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInput(f"data folder {folder} does not exist")
    manifest = read_manifest(folder)
    warn_if_incomplete(folder, manifest)
    table = read_folder(folder, "cues")
    if table.num_rows == 0:
        raise EmptyData(f"{folder} holds no cue points (no complete shard, or the model never emitted a cue)")
    layers = manifest["layers"]
    cols = [f"features_l{layer}" for layer in layers]
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise InvalidInput(f"{folder} lacks feature columns {missing} named by its manifest")
    hidden = manifest["hidden_size"]
    feats = np.concatenate(
        [table.column(c).combine_chunks().flatten().to_numpy().reshape(-1, hidden) for c in cols], axis=1
    ).astype(np.float32)
    col = lambda name: table.column(name).to_numpy(zero_copy_only=False)  # noqa: E731
    order = np.lexsort((col("cue_index"), col("sample_id"), col("problem_id")))
    agreement = table.column("agreement") if "agreement" in table.column_names else None
    if agreement is not None and agreement.null_count:
        agreement = None  # shards from before agreement labels
    data = CueData(
        features=feats, label=col("label").astype(np.int8), problem_id=col("problem_id").astype(str),
        sample_id=col("sample_id").astype(int), cue_index=col("cue_index").astype(int),
        thinking_position=col("thinking_position").astype(int), thinking_tokens_total=col("thinking_tokens_total").astype(int),
        final_correct=np.array([bool(x) for x in table.column("final_correct").to_pylist()], dtype=bool), manifest=manifest,
        folder=folder, agreement=None if agreement is None else agreement.to_numpy(zero_copy_only=False).astype(np.int8),
    )
    return data.subset(order)

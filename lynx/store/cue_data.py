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
    folders: tuple = ()  # every folder read (several: a merged collection); () = just ``folder``
    token_position: np.ndarray | None = None  # (n,) int: the cue token's index in prompt + output (None: predates it)
    cue_word: np.ndarray | None = None  # (n,) str: which cue word (None: predates it)

    @property
    def source(self) -> str:
        """The folder(s) the rows come from, for metadata and messages."""
        return " + ".join(map(str, self.folders)) if self.folders else str(self.folder)

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
        fields = {k: getattr(self, k)[mask] for k in ("features", "label", "problem_id", "sample_id", "cue_index", "thinking_position", "thinking_tokens_total", "final_correct")}
        opt = lambda a: None if a is None else a[mask]  # noqa: E731
        return CueData(
            **fields,
            manifest=self.manifest,
            folder=self.folder,
            agreement=opt(self.agreement),
            folders=self.folders,
            token_position=opt(self.token_position),
            cue_word=opt(self.cue_word),
        )


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
        log.warning(
            "%s holds %d of its %d shards (%d of %d problems; missing shard(s) %s): using what is there; rerun lynx collect with the same options and --out to complete it",
            folder,
            len(expected) - len(missing),
            len(expected),
            n - lost,
            n,
            ", ".join(map(str, missing[:10])),
        )
    return missing


#: what several collect folders must share to be read as one training / calibration set
MERGE_IDENTITY = ("model_fingerprint", "tokenizer_hash", "hidden_size", "layers", "cues", "exit_string", "labels", "prompt_suffix", "answer_tokens")
Folders = Path | str | list | tuple


def _folders(folders: Folders) -> list[Path]:
    out = [Path(f) for f in ([folders] if isinstance(folders, (str, Path)) else folders)]
    if not out:
        raise InvalidInput("give at least one collect folder (--data)")
    if len(set(out)) < len(out):
        raise InvalidInput(f"a collect folder is given twice: {', '.join(sorted({str(f) for f in out if out.count(f) > 1}))}")
    return out


def collection_manifest(folders: Folders) -> dict:
    """The manifest of one folder, or of several read as one collection: they must agree on
    :data:`MERGE_IDENTITY` (one line names the first field that differs and the two folders);
    datasets, sampling and sizes may differ (``dataset`` joins them, ``n_problems`` adds up,
    ``sampling`` is kept when all agree, and ``merged_from`` lists each folder's own)."""
    paths = _folders(folders)
    for f in paths:
        if not f.is_dir():
            raise MissingInput(f"data folder {f} does not exist")
    manifests = [read_manifest(f) for f in paths]
    if len(paths) == 1:
        return manifests[0]
    first = manifests[0]
    for f, m in zip(paths[1:], manifests[1:], strict=True):
        for key in MERGE_IDENTITY:
            if identity_value(m, key) != identity_value(first, key):
                raise InvalidInput(
                    f"{paths[0]} and {f} cannot be read as one collection: they differ in {key} ({_short(identity_value(first, key))} vs {_short(identity_value(m, key))})"
                )
    merged = dict(first)
    merged["dataset"] = " + ".join(str(m["dataset"]) for m in manifests)
    merged["n_problems"] = sum(int(m.get("n_problems") or 0) for m in manifests)
    same_sampling = all(m.get("sampling") == first.get("sampling") for m in manifests)
    merged["sampling"] = first.get("sampling") if same_sampling else {"mixed": [m.get("sampling") for m in manifests]}
    merged["merged_from"] = [{"folder": str(f), "dataset": m["dataset"], "manifest_hash": manifest_hash(m)} for f, m in zip(paths, manifests, strict=True)]
    return merged


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_traces(folders: Folders) -> dict:
    """The trace rows of one or several collect folders, as columns (lists)."""
    tables = [read_folder(f, "traces").to_pydict() for f in _folders(folders)]
    return {k: [v for t in tables for v in t[k]] for k in tables[0]}


def load_cue_data(folders: Folders) -> CueData:
    """Read every complete shard of one collect folder, or of several read as one collection
    (:func:`collection_manifest`: same model, layers, cues, exit string, labels; disjoint
    problems); clear errors for empty, foreign or overlapping folders."""
    paths = _folders(folders)
    if len(paths) == 1:
        return _load_one(paths[0])
    manifest = collection_manifest(paths)
    parts = [_load_one(f) for f in paths]
    seen: dict[tuple, Path] = {}
    for part in parts:
        for key in set(zip(part.problem_id.tolist(), part.sample_id.tolist(), strict=True)):
            if key in seen:
                raise InvalidInput(f"{seen[key]} and {part.folder} both hold problem {key[0]!r} sample {key[1]}: merge collections of disjoint problems (or samples)")
            seen[key] = part.folder
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    opt = lambda name: None if any(getattr(p, name) is None for p in parts) else cat(name)  # noqa: E731
    data = CueData(
        features=cat("features"),
        label=cat("label"),
        problem_id=cat("problem_id"),
        sample_id=cat("sample_id"),
        cue_index=cat("cue_index"),
        thinking_position=cat("thinking_position"),
        thinking_tokens_total=cat("thinking_tokens_total"),
        final_correct=cat("final_correct"),
        manifest=manifest,
        folder=paths[0],
        agreement=opt("agreement"),
        folders=tuple(paths),
        token_position=opt("token_position"),
        cue_word=opt("cue_word"),
    )
    return data.subset(np.lexsort((data.cue_index, data.sample_id, data.problem_id)))


def _load_one(folder: Path) -> CueData:
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
    feats = np.concatenate([table.column(c).combine_chunks().flatten().to_numpy().reshape(-1, hidden) for c in cols], axis=1).astype(np.float32)
    col = lambda name: table.column(name).to_numpy(zero_copy_only=False)  # noqa: E731
    order = np.lexsort((col("cue_index"), col("sample_id"), col("problem_id")))
    agreement = table.column("agreement") if "agreement" in table.column_names else None
    if agreement is not None and agreement.null_count:
        agreement = None  # shards from before agreement labels
    data = CueData(
        features=feats,
        label=col("label").astype(np.int8),
        problem_id=col("problem_id").astype(str),
        sample_id=col("sample_id").astype(int),
        cue_index=col("cue_index").astype(int),
        thinking_position=col("thinking_position").astype(int),
        thinking_tokens_total=col("thinking_tokens_total").astype(int),
        final_correct=np.array([bool(x) for x in table.column("final_correct").to_pylist()], dtype=bool),
        manifest=manifest,
        folder=folder,
        agreement=None if agreement is None else agreement.to_numpy(zero_copy_only=False).astype(np.int8),
        token_position=col("token_position").astype(int) if "token_position" in table.column_names else None,
        cue_word=col("cue_word").astype(str) if "cue_word" in table.column_names else None,
    )
    return data.subset(order)

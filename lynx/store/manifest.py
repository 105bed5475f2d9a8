"""The collection manifest: what a folder of cue points was made from.

Resuming into a folder, or training a probe on it, is only meaningful if model, tokenizer,
layers, cues, exit string, sampling and dataset are the same; the manifest records them
and :func:`check_compatible` names every field that differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lynx.errors import InvalidInput, MissingInput

MANIFEST = "manifest.json"
#: fields that define the rows; anything else (versions, paths) may differ on resume
IDENTITY = (
    "model_fingerprint",
    "tokenizer_hash",
    "layers",
    "cues",
    "exit_string",
    "sampling",
    "samples_per_problem",
    "answer_tokens",
    "dataset",
    "n_problems",
    "shard_size",
    "engine",
    "question_field",
    "answer_field",
    "prompt_suffix",
    "seeding",
    "labels",
)
#: identity fields added later, with the value a manifest without them implies
LEGACY_IDENTITY = {"labels": "gold"}


def identity_value(manifest: dict, key: str):
    return manifest.get(key, LEGACY_IDENTITY.get(key))


class IncompatibleFolder(InvalidInput):
    """The output folder was made for another model or configuration."""


def tokenizer_hash(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    h = hashlib.sha256(json.dumps(vocab).encode())
    h.update((tokenizer.chat_template or "").encode() if isinstance(tokenizer.chat_template, str) else b"")
    return h.hexdigest()[:16]


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        raise MissingInput(f"{folder} has no {MANIFEST}: not a lynx collect folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path} is corrupt ({e.msg})") from None


def check_compatible(folder: Path, manifest: dict) -> None:
    """Raise if ``folder`` already holds a manifest with other identity fields."""
    old = read_manifest(folder)
    diff = [k for k in IDENTITY if identity_value(old, k) != identity_value(manifest, k)]
    if diff:
        raise IncompatibleFolder(f"output folder {folder} was made for another model or config (differs in: {', '.join(diff)}); use a new --out or the original settings")


def write_manifest(folder: Path, manifest: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(folder / MANIFEST)

"""Output paths checked before any work starts: a run that fails on its ``--out`` only after
minutes of generation or training loses that work."""

from __future__ import annotations

from pathlib import Path

from lynx.errors import InvalidInput


def _first_existing(path: Path) -> Path | None:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return None


def check_output_folder(path: Path | str, what: str = "--out") -> Path:
    """``path`` can be (or become) a folder: it is not a file, and no part of it is a file."""
    p = Path(path)
    found = _first_existing(p)
    if found is not None and not found.is_dir():
        raise InvalidInput(f"{what} {p}: {found} is a file, not a folder; give a folder path")
    return p


def check_output_file(path: Path | str, what: str = "--out") -> Path:
    """``path`` can be written as a file: it is not a folder, and no part above it is a file."""
    p = Path(path)
    if p.is_dir():
        raise InvalidInput(f"{what} {p} is a folder; give a file name (e.g. {p / 'problems.jsonl'})")
    check_output_folder(p.parent, what)
    return p

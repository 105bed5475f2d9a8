"""Output paths checked before any work starts: a run that fails on its ``--out`` only after
minutes of generation or training loses that work."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from lynx.errors import InvalidInput

#: the writer lock a collection folder holds while a run writes into it
LOCK_FILE = ".lynx-writer.lock"


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


@contextmanager
def exclusive_writer(folder: Path | str):
    """Hold the folder's writer lock for the block: a second writer (two ``lynx collect`` into
    one ``--out`` at once) is refused at once instead of both writing shards and mixing data.
    An advisory ``flock`` on ``.lynx-writer.lock``: released when the block ends or the process
    dies (a killed run never leaves a stale lock behind)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115  (held open for the block)
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise InvalidInput(f"{folder} is being written by another lynx run ({holder}); wait for it to finish or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield folder
    finally:
        handle.close()

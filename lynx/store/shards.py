"""Parquet shards of cue points, written atomically so a run can stop and resume anywhere.

Shard ``i`` covers problems ``[i * shard_size, (i + 1) * shard_size)``. Its cue rows go to
``shard-i.cues.parquet`` and its per-rollout rows to ``shard-i.traces.parquet``; the traces
file is written last and marks the shard as complete. Each file is written to a temporary
name and renamed, so an interrupted write never leaves a half file under a real name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lynx.errors import InvalidInput

_NAME = re.compile(r"shard-(\d{5})\.traces\.parquet$")


#: the columns of a shard's cue rows (then one ``features_l<layer>`` column per layer, see
#: :func:`cue_schema`) and of its trace rows. Written with these explicit types, so a shard whose
#: answers happen to be all missing still has a string column, never a null-typed one that no
#: other shard's schema matches.
CUE_FIELDS = (
    ("problem_id", pa.string()),
    ("sample_id", pa.int64()),
    ("cue_index", pa.int64()),
    ("token_position", pa.int64()),
    ("thinking_position", pa.int64()),
    ("cue_text", pa.string()),
    ("cue_word", pa.string()),
    ("label", pa.int8()),
    ("forced_answer", pa.string()),
    ("final_answer", pa.string()),
    ("gold", pa.string()),
    ("final_correct", pa.bool_()),
    ("thinking_tokens_total", pa.int64()),
    # 1 = the forced answer equals the trace's own final answer (no gold needed); ``label`` is the
    # label the collection was made with (manifest "labels": gold or this agreement)
    ("agreement", pa.int8()),
)
TRACE_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("sample_id", pa.int64()),
        ("n_cues", pa.int64()),
        ("final_answer", pa.string()),
        ("final_correct", pa.bool_()),
        ("gold", pa.string()),
        ("thinking_tokens_total", pa.int64()),
        ("generated_tokens", pa.int64()),
        ("closed_thinking", pa.bool_()),
    ]
)


def cue_schema(layers, hidden: int) -> pa.Schema:
    return pa.schema(list(CUE_FIELDS) + [(f"features_l{layer}", pa.list_(pa.float32(), hidden)) for layer in layers])


class CorruptShard(InvalidInput):
    """A shard file exists but cannot be read."""


def shard_paths(folder: Path, index: int) -> tuple[Path, Path]:
    return folder / f"shard-{index:05d}.cues.parquet", folder / f"shard-{index:05d}.traces.parquet"


def write_shard(folder: Path, index: int, cues: pa.Table, traces: pa.Table) -> None:
    cue_path, trace_path = shard_paths(folder, index)
    for table, path in ((cues, cue_path), (traces, trace_path)):  # traces last: the commit marker
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)


def completed_shards(folder: Path) -> set[int]:
    """Indices of complete shards; a complete shard that cannot be read is an error."""
    done = set()
    for path in sorted(folder.glob("shard-*.traces.parquet")):
        m = _NAME.search(path.name)
        if not m:
            continue
        index = int(m.group(1))
        for p in shard_paths(folder, index):
            try:
                pq.read_metadata(p)
            except Exception as e:  # missing or unreadable
                raise CorruptShard(f"corrupt shard {p} ({type(e).__name__}); delete it to re-collect that shard") from None
        done.add(index)
    return done


def read_folder(folder: Path, what: str = "cues") -> pa.Table:
    """All complete shards' ``cues`` or ``traces`` rows, in shard order."""
    tables = []
    for index in sorted(completed_shards(folder)):
        path = shard_paths(folder, index)[0 if what == "cues" else 1]
        try:
            tables.append(pq.read_table(path))
        except Exception as e:
            raise CorruptShard(f"corrupt shard {path} ({type(e).__name__}); delete it to re-collect that shard") from None
    if not tables:
        raise InvalidInput(f"{folder} holds no complete shard")
    # "default" promotion unifies a null-typed column (written by lynx before shards had an
    # explicit schema, when a shard's answers were all missing) with the other shards' strings
    return pa.concat_tables(tables, promote_options="default")

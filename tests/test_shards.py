"""Shards are written with one explicit schema, so a shard whose answers are all missing is
still readable next to the others (it used to get a null-typed column: 'Schema at index 1 was
different'), and folders written that way before still read."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lynx.collect.pipeline import _tables
from lynx.cues import Cue
from lynx.rollouts import CuePoint, Rollout
from lynx.store.shards import TRACE_SCHEMA, cue_schema, read_folder, shard_paths, write_shard

LAYERS, HIDDEN = [1, 3], 4


def _rollout(pid: str, answer):
    r = Rollout(pid, "7", [1, 2], [3, 4, 5], 2, None, answer, answer == "7")
    r.cue_points.append(CuePoint(Cue(3, "Wait", "wait"), 1, forced_answer=None, safe=False, features=np.ones((2, HIDDEN), np.float32)))
    return r


def test_a_shard_with_every_answer_missing_has_the_common_schema(tmp_path):
    missing, present = _tables([_rollout("a", None)], [0], LAYERS, HIDDEN), _tables([_rollout("b", "7")], [0], LAYERS, HIDDEN)
    for cues, traces in (missing, present):
        assert cues.schema == cue_schema(LAYERS, HIDDEN) and traces.schema == TRACE_SCHEMA
    write_shard(tmp_path, 0, *missing)
    write_shard(tmp_path, 1, *present)
    cues = read_folder(tmp_path, "cues")
    assert cues.num_rows == 2 and cues.column("final_answer").to_pylist() == [None, "7"]
    assert read_folder(tmp_path, "traces").column("final_answer").type == pa.string()


def test_a_folder_written_before_the_explicit_schema_still_reads(tmp_path):
    cues, traces = _tables([_rollout("b", "7")], [0], LAYERS, HIDDEN)
    write_shard(tmp_path, 0, cues, traces)
    old_cues = cues.set_column(cues.schema.get_field_index("final_answer"), "final_answer", pa.nulls(1))
    old_traces = traces.set_column(traces.schema.get_field_index("final_answer"), "final_answer", pa.nulls(1))
    c_path, t_path = shard_paths(tmp_path, 1)
    pq.write_table(old_cues, c_path)
    pq.write_table(old_traces, t_path)
    assert pq.read_schema(c_path).field("final_answer").type == pa.null()
    assert read_folder(tmp_path, "cues").column("final_answer").to_pylist() == ["7", None]


def test_a_missing_shard_is_counted_in_a_warning(tmp_path, caplog):
    from lynx.store.cue_data import load_cue_data
    from lynx.store.manifest import write_manifest

    for i in (0, 2):
        write_shard(tmp_path, i, *_tables([_rollout(f"p{i}", "7")], [0], LAYERS, HIDDEN))
    write_manifest(tmp_path, {"layers": LAYERS, "hidden_size": HIDDEN, "n_problems": 5, "shard_size": 2})
    with caplog.at_level("WARNING"):
        data = load_cue_data(tmp_path)
    assert len(data) == 2
    assert "2 of its 3 shards (3 of 5 problems; missing shard(s) 1)" in caplog.text


def test_two_writers_into_one_folder_are_refused(tmp_path):
    """While one lynx run writes a collection folder, a second is refused at once (it used to
    write shards beside the first and mix two samplings)."""
    import pytest

    from lynx.collect.pipeline import CollectConfig, collect
    from lynx.errors import InvalidInput
    from lynx.store.folders import exclusive_writer

    with exclusive_writer(tmp_path / "c"):
        with pytest.raises(InvalidInput, match="being written by another lynx run \\(pid"):
            collect(CollectConfig(model="organism", dataset="organism:train:2", out=tmp_path / "c"))
    with exclusive_writer(tmp_path / "c"):  # released with the block: the next writer gets it
        pass

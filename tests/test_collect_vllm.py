"""`lynx collect --engine vllm` writes the same rows as the transformers engine (greedy)."""

import subprocess
import sys

import numpy as np
import pytest

from lynx.collect.pipeline import CollectConfig, collect
from lynx.store.shards import read_folder

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_vllm_collection_equals_transformers_collection(tmp_path):
    # layers out of order and without the final one: the hook's non-default layout
    args = dict(model="organism", dataset="organism:test:16", temperature=0.0, answer_tokens=16, max_new_tokens=400, layers="3,1")
    collect(CollectConfig(out=tmp_path / "hf", **args))
    cmd = [
        sys.executable,
        "-m",
        "lynx.cli",
        "collect",
        "--model",
        "organism",
        "--dataset",
        "organism:test:16",
        "--out",
        str(tmp_path / "vllm"),
        "--engine",
        "vllm",
        "--layers",
        "3,1",
        "--temperature",
        "0",
        "--answer-tokens",
        "16",
        "--max-new-tokens",
        "400",
        "--json",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    a = read_folder(tmp_path / "hf", "cues").sort_by([("problem_id", "ascending"), ("cue_index", "ascending")])
    b = read_folder(tmp_path / "vllm", "cues").sort_by([("problem_id", "ascending"), ("cue_index", "ascending")])
    assert a.num_rows == b.num_rows >= 20
    for col in ("problem_id", "cue_index", "token_position", "cue_text", "label", "forced_answer", "final_answer", "final_correct", "thinking_tokens_total"):
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    for col in [c for c in a.column_names if c.startswith("features_l")]:
        fa = np.asarray(a.column(col).to_pylist(), dtype=np.float32)
        fb = np.asarray(b.column(col).to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(fb, fa, atol=1e-4)

"""Several collect folders read as one collection (``--data A --data B``): the same probe and the
same calibration as one folder holding the same rows, and one clear line when the folders cannot
be one collection (other layers, overlapping problems, mixed sampling for a calibration)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lynx.errors import InvalidInput

pytestmark = pytest.mark.slow


def _split(folder: Path, parts: list[list[int]], root: Path) -> list[Path]:
    """Collect folders holding the given shards of ``folder`` (renumbered from 0), each with its own manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    out = []
    for k, shards in enumerate(parts):
        dst = root / f"{folder.name}-part{k}"
        dst.mkdir(parents=True)
        n = 0
        for new, old in enumerate(shards):
            for kind in ("cues", "traces"):
                shutil.copy(folder / f"shard-{old:05d}.{kind}.parquet", dst / f"shard-{new:05d}.{kind}.parquet")
            n += min(manifest["shard_size"], manifest["n_problems"] - old * manifest["shard_size"])
        (dst / "manifest.json").write_text(json.dumps(manifest | {"n_problems": n, "dataset": f"{manifest['dataset']}#part{k}"}))
        out.append(dst)
    return out


def test_training_on_two_folders_equals_training_on_one(organism_collections, tmp_path):
    from lynx.probe.artifact import load_probe
    from lynx.probe.train import ProbeTrainConfig, train_probe
    from lynx.store.cue_data import load_cue_data

    whole = organism_collections["train"]
    a, b = _split(whole, [[0], [1]], tmp_path)
    cfg = ProbeTrainConfig(max_epochs=40)
    one = train_probe(whole, tmp_path / "probe-one", cfg)
    two = train_probe([a, b], tmp_path / "probe-two", cfg)
    assert two["data"]["folder"] == f"{a} + {b}" and [m["folder"] for m in two["data"]["merged_from"]] == [str(a), str(b)]
    assert two["metrics"] == one["metrics"]
    feats = torch.from_numpy(load_cue_data(whole).features)
    with torch.no_grad():
        np.testing.assert_allclose(load_probe(tmp_path / "probe-two")(feats).numpy(), load_probe(tmp_path / "probe-one")(feats).numpy(), rtol=0, atol=1e-6)


def test_calibrating_on_two_folders_equals_calibrating_on_one(organism_collections, organism_probe, tmp_path):
    from lynx.calibrate import load_calibration
    from lynx.calibrate.pipeline import calibrate

    whole = organism_collections["calibration"]
    parts = _split(whole, [[0, 2], [1, 3]], tmp_path)
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    for p in (p1, p2):
        shutil.copytree(organism_probe, p)
    calibrate(p1, whole, n_splits=5)
    calibrate(p2, parts, n_splits=5)
    c1, c2 = load_calibration(p1), load_calibration(p2)
    for alpha in (0.05, 0.1, 0.2):
        assert c1.threshold(alpha).threshold == c2.threshold(alpha).threshold
    assert c2.traces.n_traces == c1.traces.n_traces and c2.meta["data"]["folder"] == " + ".join(map(str, parts))


def test_folders_that_are_not_one_collection_are_refused_with_one_line(organism_collections, organism_probe, tmp_path):
    from typer.testing import CliRunner

    from lynx.calibrate.pipeline import calibrate
    from lynx.cli import app
    from lynx.store.cue_data import load_cue_data

    a, b = _split(organism_collections["train"], [[0], [1]], tmp_path)
    manifest = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps(manifest | {"layers": manifest["layers"][:-1]}))
    with pytest.raises(InvalidInput, match="differ in layers"):
        load_cue_data([a, b])
    r = CliRunner().invoke(app, ["train", "--data", str(a), "--data", str(b), "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "differ in layers" in r.output and "Traceback" not in r.output
    # the same problems twice
    (c,) = _split(organism_collections["train"], [[0]], tmp_path / "again")
    with pytest.raises(InvalidInput, match="both hold problem"):
        load_cue_data([a, c])
    with pytest.raises(InvalidInput, match="given twice"):
        load_cue_data([a, a])
    # a calibration is one condition: folders sampled at different temperatures are refused
    (d,) = _split(organism_collections["calibration"], [[0]], tmp_path / "hot")
    m = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps(m | {"sampling": m["sampling"] | {"temperature": 1.0}}))
    (e,) = _split(organism_collections["calibration"], [[1]], tmp_path / "cold")
    with pytest.raises(InvalidInput, match="sampled differently"):
        calibrate(organism_probe, [d, e])

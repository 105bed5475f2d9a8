import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def organism_tokenizer():
    from transformers import AutoTokenizer

    from lynx.models import ORGANISM_DIR

    return AutoTokenizer.from_pretrained(str(ORGANISM_DIR))


@pytest.fixture(scope="session")
def organism():
    from lynx.models import load_hf, resolve_model

    return load_hf(resolve_model("organism"))


@pytest.fixture(scope="session")
def organism_collections(tmp_path_factory):
    """Real collect folders on the organism: training problems and disjoint calibration problems."""
    from lynx.collect.pipeline import CollectConfig, collect

    root = tmp_path_factory.mktemp("organism-data")
    folders = {}
    for split, n in (("train", 160), ("calibration", 320)):
        folders[split] = root / split
        collect(CollectConfig(model="organism", dataset=f"organism:{split}:{n}", out=folders[split], shard_size=80, answer_tokens=16))
    return folders


@pytest.fixture(scope="session")
def organism_probe(organism_collections, tmp_path_factory):
    from lynx.probe.train import ProbeTrainConfig, train_probe

    out = tmp_path_factory.mktemp("probe") / "organism-probe"
    train_probe(organism_collections["train"], out, ProbeTrainConfig(max_epochs=60))
    return out

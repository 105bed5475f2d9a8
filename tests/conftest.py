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

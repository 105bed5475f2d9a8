"""docs/real-models.md's architectures table is what vLLM's registry and lynx's conformance
families say now (regenerate with `python -m lynx.conformance.table --write`)."""

import pytest

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm, pytest.mark.repo, pytest.mark.slow]  # imports every vLLM model module (~10 s)


def test_architectures_table_is_current():
    from lynx.conformance.table import DOC, section, table

    assert section(DOC.read_text()) == table(), "docs/real-models.md is stale: run python -m lynx.conformance.table --write"


def test_table_counts_tested_architectures_and_refusals():
    from lynx.conformance.table import table

    text = table()
    assert "| `LlamaForCausalLM` |" in text and "tested (`llama`)" in text
    assert "| `GemmaForCausalLM` |" not in text  # refused: listed under the reasons, not as a row
    assert "no `SupportsEagle3`" in text

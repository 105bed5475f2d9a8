"""docs/real-models.md's architectures table is what vLLM's registry and lynx's conformance
families say now (regenerate with `python -m lynx.conformance.table --write`).

The table is generated in a subprocess: it imports every vLLM model module, which leaves state
behind that breaks a later in-process engine in the same test worker."""

import subprocess
import sys

import pytest

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm, pytest.mark.repo, pytest.mark.slow]  # imports every vLLM model module (~10 s)


@pytest.fixture(scope="module")
def generated() -> str:
    proc = subprocess.run([sys.executable, "-m", "lynx.conformance.table"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_architectures_table_is_current(generated):
    from lynx.conformance.table import DOC, section

    assert section(DOC.read_text()) == generated, "docs/real-models.md is stale: run python -m lynx.conformance.table --write"


def test_table_counts_tested_architectures_and_refusals(generated):
    assert "| `LlamaForCausalLM` |" in generated and "tested (`llama`)" in generated
    assert "| `GemmaForCausalLM` |" not in generated  # refused: listed under the reasons, not as a row
    assert "no `SupportsEagle3`" in generated and "harmony (tested)" in generated

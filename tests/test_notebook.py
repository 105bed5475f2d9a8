"""The walkthrough notebook runs top to bottom on the organism (CI executes it), at its tiny size
(the same cells on fewer problems: the test checks that every cell runs and draws, not the figures)."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.repo  # reads the checkout, not the installed package

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "lynx_walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_executes(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LYNX_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("LYNX_NOTEBOOK_SIZE", "tiny")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # reliability, risk vs alpha, Pareto
    assert (tmp_path / "eval" / "results.md").exists() and (tmp_path / "probe" / "probe.safetensors").exists()

"""The organism is a fit test subject: every figure issue #2 requires, measured afresh."""

import json

import pytest
from typer.testing import CliRunner

from lynx.cli import app
from lynx.organism.card import REQUIREMENTS, meets_requirements

JSON_KEYS = {"accuracy", "mean_thinking_tokens", "cues_per_trace", "safe_cue_fraction", "oracle_saving", "probe_auc_margin", "n_problems"}


@pytest.fixture(scope="module")
def figures():
    """Sampled with vLLM where it is installed (~2.5 min on 2 cores against ~6-9 with transformers):
    other traces of the same model and sampling settings, so every requirement must hold for them too
    (the model card's figures are the transformers engine's, `lynx organism info` by default)."""
    import importlib.util

    engine = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    r = CliRunner().invoke(app, ["organism", "info", "--json", "--n-problems", "500", "--engine", engine])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.slow
def test_info_json_has_the_documented_keys(figures):
    assert JSON_KEYS <= set(figures)
    assert figures["n_problems"] == 500 and figures["temperature"] == 0.6


#: Figures known to be out of range (strict xfail: reported on every run, and the test fails as soon
#: as a retrained organism closes the gap, so the marker has to go then). None for the shipped organism.
OPEN_GAPS: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize(
    "key",
    [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=OPEN_GAPS[k])) if k in OPEN_GAPS else k for k in [*REQUIREMENTS, "cues_on_both_sides"]],
)
def test_required_figure_is_in_range(figures, key):
    ok = meets_requirements(figures)
    assert ok[key], f"{key} = {figures.get(key)} outside {REQUIREMENTS.get(key)}: {json.dumps(figures['probe'])}"

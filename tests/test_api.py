"""The top-level Python API (``lynx.load_probe``, ``lynx.load_calibration``, ``lynx.generate``)
is the same code as the modules it names, and works on the shipped organism probe."""

import pytest

import lynx
from lynx.models import ORGANISM_PROBE_DIR

SHIPPED = ORGANISM_PROBE_DIR


def test_top_level_names_are_the_modules_own():
    from lynx.calibrate import load_calibration
    from lynx.probe import load_probe
    from lynx.run import generate

    assert lynx.load_probe is load_probe and lynx.load_calibration is load_calibration and lynx.generate is generate
    with pytest.raises(AttributeError, match="no attribute 'lod_probe'"):
        lynx.lod_probe  # noqa: B018


def test_shipped_probe_and_generation_with_exit_audit():
    probe = lynx.load_probe(SHIPPED)
    assert probe.meta["model"] == "organism" and probe.layers == [1, 2, 4]
    decision = lynx.load_calibration(SHIPPED, "T0.6").threshold(0.1)
    assert 0.0 <= decision.threshold <= 1.0 and decision.alpha == pytest.approx(0.1)
    prompts = [f"Compute {a} + {b} - 3 + 9 - 4." for a, b in ((47, 8), (23, 6), (71, 5), (38, 9))]
    outs = lynx.generate(prompts, probe=str(SHIPPED), alpha=0.1, max_new_tokens=400, seed=0)
    assert len(outs) == len(prompts) and all(o.text for o in outs)
    assert sum(o.exit is not None for o in outs) >= 2  # the shipped probe exits on most of these at alpha 0.1
    for o in outs:
        if o.exit is not None:  # an exit says why: where, which score against which threshold
            assert o.exit["score"] >= o.exit["threshold"] == pytest.approx(decision.threshold)
            assert o.exit["alpha"] == pytest.approx(0.1)

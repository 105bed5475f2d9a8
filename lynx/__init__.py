"""lynx: calibrated early exit for reasoning LLMs.

The Python API in one place (imported on first use, so ``import lynx`` stays light)::

    import lynx
    probe = lynx.load_probe("probes/organism")          # safetensors + JSON, never unpickled
    cal = lynx.load_calibration("probes/organism")      # thresholds for any alpha
    out = lynx.generate(["Compute 47 + 8 - 5."], probe="probes/organism", alpha=0.1)

Engines: :mod:`lynx.engines.hf` (transformers) and :mod:`lynx.engines.vllm` (the in-engine hook).
"""

from __future__ import annotations

__version__ = "0.1.0"

#: public name -> (module, attribute)
_API = {
    "load_probe": ("lynx.probe", "load_probe"),
    "Probe": ("lynx.probe", "Probe"),
    "ProbeModelMismatch": ("lynx.probe", "ProbeModelMismatch"),
    "load_calibration": ("lynx.calibrate", "load_calibration"),
    "generate": ("lynx.run", "generate"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lynx' has no attribute {name!r}")

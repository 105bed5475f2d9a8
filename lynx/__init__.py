"""lynx: calibrated early exit for reasoning LLMs.

The Python API in one place (imported on first use, so ``import lynx`` stays light)::

    import lynx
    policy = lynx.ExitPolicy.load("probes/organism")   # probe + calibration, safetensors + JSON, never unpickled
    policy.threshold(0.1, temperature=0.6).promise      # the threshold at alpha 0.1 for T=0.6 requests, and its promise
    out = lynx.generate(["Compute 47 + 8 - 5."], probe=policy, alpha=0.1)
    lynx.generate(prompts, probe=policy, alpha=0.1, monitor={"audit_fraction": 0.1}, audit_path="audit.jsonl")  # live monitor

Engines: :mod:`lynx.engines.hf` (transformers) and :mod:`lynx.engines.vllm_engine` (the in-engine hook).
Errors the user can fix are :class:`lynx.LynxError`.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: public name -> (module, attribute)
_API = {
    "ExitPolicy": ("lynx.exit_policy", "ExitPolicy"),
    "HookConfig": ("lynx.exit_policy", "HookConfig"),
    "LynxError": ("lynx.errors", "LynxError"),
    "load_probe": ("lynx.probe", "load_probe"),
    "Probe": ("lynx.probe", "Probe"),
    "ProbeModelMismatch": ("lynx.probe", "ProbeModelMismatch"),
    "load_calibration": ("lynx.calibrate", "load_calibration"),
    "generate": ("lynx.run", "generate"),
    "LiveMonitor": ("lynx.monitor.live", "LiveMonitor"),
    "MonitorConfig": ("lynx.config", "MonitorConfig"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lynx' has no attribute {name!r}")

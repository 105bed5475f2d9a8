"""lynx inside vLLM: a wrapper architecture that exposes the probe's hidden layers, and
logits processors that force the exit when a calibrated probe says so.

``register()`` is the ``vllm.general_plugins`` entry point, so every vLLM process (API
server, engine core, workers) knows the wrapper architectures; a model is run through
them with ``hf_overrides={"architectures": [wrapper_name(arch)]}`` and the probe settings
in ``additional_config={"lynx": {...}}`` (part of vLLM's compile-cache key).
"""

from __future__ import annotations

from lynx.engines.vllm_plugin.support import WRAPPER_PREFIX, hook_support


def wrapper_name(arch: str) -> str:
    """The wrapper architecture for ``arch`` (``Lynx<arch>``); an architecture the hook cannot
    wrap is one :class:`~lynx.engines.vllm_plugin.support.UnsupportedArchitecture` line saying
    why (decided from vLLM's registry: :func:`~lynx.engines.vllm_plugin.support.hook_support`)."""
    hook_support(arch).require()
    return f"{WRAPPER_PREFIX}{arch}"


def register() -> None:
    """Register a wrapper name for every architecture in vLLM's registry (idempotent; lazy
    ``module:Class`` strings, so nothing is imported until a model is built, and the wrapper
    class itself checks its base: :func:`~lynx.engines.vllm_plugin.model._make`), and lynx's
    Prometheus collector in this process (an API server's ``/metrics`` then shows lynx's
    counters)."""
    from vllm import ModelRegistry

    from lynx.monitor.metrics import register_collector

    register_collector()
    known = ModelRegistry.get_supported_archs()
    for arch in [a for a in known if not a.startswith(WRAPPER_PREFIX)]:
        name = f"{WRAPPER_PREFIX}{arch}"
        if name not in known:
            ModelRegistry.register_model(name, f"lynx.engines.vllm_plugin.model:{name}")

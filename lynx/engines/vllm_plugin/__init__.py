"""lynx inside vLLM: a wrapper architecture that exposes the probe's hidden layers, and
logits processors that force the exit when a calibrated probe says so.

``register()`` is the ``vllm.general_plugins`` entry point, so every vLLM process (API
server, engine core, workers) knows the wrapper architectures; a model is run through
them with ``hf_overrides={"architectures": [wrapper_name(arch)]}`` and the probe settings
in ``additional_config={"lynx": {...}}`` (part of vLLM's compile-cache key).
"""

from __future__ import annotations

from types import MappingProxyType

from lynx.errors import InvalidInput

#: base architecture -> (vLLM module, class); the wrapper is ``Lynx<base>`` (read-only)
SUPPORTED = MappingProxyType(
    {
        "Qwen3ForCausalLM": "vllm.model_executor.models.qwen3:Qwen3ForCausalLM",
        "Qwen2ForCausalLM": "vllm.model_executor.models.qwen2:Qwen2ForCausalLM",
        "LlamaForCausalLM": "vllm.model_executor.models.llama:LlamaForCausalLM",
    }
)


def wrapper_name(arch: str) -> str:
    if arch not in SUPPORTED:
        raise InvalidInput(f"lynx's vLLM hook supports {', '.join(SUPPORTED)}; the model is {arch}")
    return f"Lynx{arch}"


def register() -> None:
    """Register the wrapper architectures with vLLM's model registry (idempotent), and lynx's
    Prometheus collector in this process (an API server's ``/metrics`` then shows lynx's counters)."""
    from vllm import ModelRegistry

    from lynx.monitor.metrics import register_collector

    register_collector()

    for arch in SUPPORTED:
        name = wrapper_name(arch)
        if name not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(name, f"lynx.engines.vllm_plugin.model:{name}")

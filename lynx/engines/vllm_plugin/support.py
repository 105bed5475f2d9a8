"""Which architectures lynx's vLLM hook can wrap, decided from vLLM's own model registry.

Why no hand list: the hook rests on one vLLM mechanism, EAGLE-3's auxiliary hidden states
(``SupportsEagle3.set_aux_hidden_state_layers``, ``vllm/model_executor/models/interfaces.py``),
which makes a model's decoder return chosen layers as real outputs. Every architecture whose
vLLM class implements it can be wrapped, and that set changes with each vLLM release. So the
answer is computed here, per architecture, at run time: the registry names the class
(``ModelRegistry.models[arch]``: module and class name), importing that one module tells
whether the class implements the interface, and the registry's own categories tell draft
models, pooling models and multimodal wrappers apart (refused, each with its reason).

:func:`hook_support` imports one model module (a fraction of a second; the engine imports it
anyway); :func:`all_architectures` imports every one of them (seconds: for the docs table and
its test, never on an engine's start-up path). Run the latter in a process of its own: after
every model module is imported, a vLLM engine started later in the same process fails in vLLM's
Triton dispatcher ("'_lib_fn_wrapper' object has no attribute 'get'").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from lynx.errors import InvalidInput

#: where lynx's wrappers are registered under their names (``Lynx<base architecture>``)
WRAPPER_PREFIX = "Lynx"


class UnsupportedArchitecture(InvalidInput):
    """lynx's vLLM hook cannot wrap this architecture (the message says why)."""


@dataclass(frozen=True)
class HookSupport:
    """The verdict for one architecture: ``supported``, else ``reason`` in words."""

    architecture: str
    vllm_class: str  # "module:Class" as vLLM's registry names it ("" if unknown)
    supported: bool
    reason: str = ""
    moe: bool = False
    hybrid: bool = False  # attention + state-space layers (vLLM's is_hybrid)

    def require(self) -> HookSupport:
        if not self.supported:
            raise UnsupportedArchitecture(f"lynx's vLLM hook cannot wrap {self.architecture}: {self.reason}")
        return self


def _registry():
    from vllm.model_executor.models.registry import ModelRegistry

    return ModelRegistry


def _category(arch: str) -> str:
    """The registry's own grouping of ``arch``: text, multimodal, draft, pooling or other."""
    from vllm.model_executor.models import registry as r

    groups = [
        ("draft", "_SPECULATIVE_DECODING_MODELS"),
        ("multimodal", "_MULTIMODAL_MODELS"),
        ("text", "_TEXT_GENERATION_MODELS"),
        ("text", "_TRANSFORMERS_SUPPORTED_MODELS"),
        ("text", "_TRANSFORMERS_BACKEND_MODELS"),
    ]
    for name, attr in groups:
        if arch in getattr(r, attr, {}):
            return name
    return "pooling"  # embedding, reward, classification, late interaction: they generate no text


def hook_support(arch: str) -> HookSupport:
    """Can lynx's vLLM hook wrap ``arch`` (a Hugging Face ``architectures`` name)?"""
    if arch.startswith(WRAPPER_PREFIX) and arch[len(WRAPPER_PREFIX) :] in _registry().models:
        arch = arch[len(WRAPPER_PREFIX) :]
    entry = _registry().models.get(arch)
    if entry is None:
        import vllm

        return HookSupport(arch, "", False, f"vLLM {vllm.__version__} has no model class for it")
    module, cls_name = getattr(entry, "module_name", ""), getattr(entry, "class_name", "")
    where = f"{module}:{cls_name}" if module else ""
    kind = _category(arch)
    if kind == "draft":
        return HookSupport(arch, where, False, "it is a speculative-decoding draft model, not a model that thinks")
    if kind == "pooling":
        return HookSupport(arch, where, False, "vLLM runs it as a pooling model (embeddings, scores): it generates no text")
    try:
        cls = model_class(arch)
    except Exception as e:  # a missing optional dependency of that model's module
        return HookSupport(arch, where, False, f"its vLLM class does not import here ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    from vllm.model_executor.models.interfaces import is_hybrid, supports_eagle3, supports_multimodal

    moe = _is_moe(cls)
    if not supports_eagle3(cls):
        return HookSupport(arch, where, False, f"its vLLM class {cls.__name__} does not expose auxiliary hidden states (SupportsEagle3)", moe=moe)
    if kind == "multimodal" or supports_multimodal(cls):
        return HookSupport(
            arch,
            where,
            False,
            "it is a multimodal wrapper class: lynx's layer numbering and hand-off are built and tested on text decoders only",
            moe=moe,
        )
    return HookSupport(arch, where, True, moe=moe, hybrid=bool(is_hybrid(cls)))


def model_class(arch: str):
    """vLLM's class for ``arch`` (imports its module only)."""
    entry = _registry().models[arch]
    if hasattr(entry, "module_name"):
        return getattr(importlib.import_module(entry.module_name), entry.class_name)
    return entry.load_model_cls()


def _is_moe(cls) -> bool:
    """Whether the class routes tokens to experts: it declares vLLM's ``MixtureOfExperts``
    interface, or a module it is built from uses vLLM's fused-MoE layer (the interface is
    optional, so the module's source is read; for the docs table only)."""
    import inspect
    import sys

    import torch

    if any(b.__name__ == "MixtureOfExperts" for b in cls.__mro__):
        return True
    if cls.__module__.endswith(".transformers"):  # vLLM's transformers backend: one class per kind
        return "MoE" in cls.__name__
    for b in cls.__mro__:
        module = sys.modules.get(b.__module__)
        if module is not None and isinstance(b, type) and issubclass(b, torch.nn.Module) and b.__module__.startswith("vllm.model_executor.models"):
            try:
                if "fused_moe" in inspect.getsource(module):
                    return True
            except (OSError, TypeError):
                continue
    return False


def architectures() -> list[str]:
    """Every architecture name in vLLM's registry, lynx's own wrappers left out."""
    return sorted(a for a in _registry().models if not a.startswith(WRAPPER_PREFIX))


def all_architectures() -> list[HookSupport]:
    """The verdict for every text-generating architecture vLLM knows (imports every model module)."""
    return [hook_support(a) for a in architectures() if _category(a) in ("text", "multimodal")]

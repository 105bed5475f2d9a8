"""``lynx run`` and ``lynx.generate``: generation with calibrated early exit.

One entry point for both engines. The probe is checked against the model (fingerprint)
before anything runs; prompts are wrapped in the model's chat template with thinking on and
the same instruction suffix the probe's training data used, so the cue states the probe sees
online come from the same distribution it was trained and calibrated on.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import asdict, dataclass, field

from lynx.defaults import DEFAULT_EXIT, TEMPERATURE, TOP_P
from lynx.models import load_hf, model_fingerprint, resolve_model
from lynx.organism.prompting import INSTRUCTION, chat_prompt


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


def thinking_tokens(ids: list[int], open_id: int, close_id: int) -> int:
    """Tokens between ``<think>`` and ``</think>`` (to the end if thinking never closed)."""
    start = ids.index(open_id) + 1 if open_id in ids else 0
    end = ids.index(close_id, start) if close_id in ids[start:] else len(ids)
    return max(0, end - start)


def _request_args(alpha, threshold, mode, method, n) -> tuple[list[dict | None], list[str]]:
    tags = [uuid.uuid4().hex for _ in range(n)]
    if alpha is None and threshold is None:
        return [None] * n, tags
    base = {"lynx_threshold": float(threshold)} if threshold is not None else {"lynx_alpha": float(alpha)}
    if mode:
        base["lynx_mode"] = mode
    if method:
        base["lynx_method"] = method
    return [base | {"lynx_tag": t} for t in tags], tags


def generate(
    prompts: list[str],
    *,
    model: str = "organism",
    probe: str | None = None,
    alpha: float | None = None,
    threshold: float | None = None,
    mode: str | None = None,
    method: str | None = None,
    engine: str = "hf",
    max_new_tokens: int = 1024,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    seed: int = 0,
    batch_size: int = 64,
    raw_prompts: bool = False,
) -> list[Generation]:
    """Generate answers; with ``probe`` and ``alpha`` (or a raw ``threshold``) thinking ends at
    the first cue the calibrated probe clears. Without them this is plain generation."""
    from lynx.calibrate.procedures import check_alpha
    from lynx.engines.exit_control import AUDIT
    from lynx.grading import extract_boxed
    from lynx.probe import load_probe

    if engine not in ("hf", "vllm"):
        raise ValueError(f"unknown engine {engine!r}: use hf or vllm")
    if alpha is not None:
        check_alpha(alpha)
    if (alpha is not None or threshold is not None) and probe is None:
        raise ValueError("early exit needs --probe (a probe folder from lynx train + lynx calibrate)")
    ref = resolve_model(model)
    p = None
    if probe is not None:
        p = load_probe(probe)
        p.check_model(model_fingerprint(ref), f"model {model!r}")
    suffix = (p.meta.get("prompt_suffix") if p is not None else None) or INSTRUCTION
    exit_string = p.meta["exit_string"] if p is not None else DEFAULT_EXIT
    lynx_cfg = {"probe": str(probe) if probe else None, "exit_string": exit_string, "cues": p.meta["cues"] if p else None,
                "layers": p.layers if p else None}
    args, tags = _request_args(alpha, threshold, mode, method, len(prompts))

    if engine == "hf":
        from lynx.engines.exit_control import ExitController
        from lynx.engines.hf_exit import generate_with_exit

        lm, tok = load_hf(ref)
        texts = prompts if raw_prompts else [chat_prompt(tok, q, suffix=suffix) for q in prompts]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        controller = ExitController(lynx_cfg, tok)
        outs = generate_with_exit(lm, tok, ids, controller, args, probe=p, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size)
    else:
        from lynx.engines.vllm import build_lynx_llm, generate_ids

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # audits are read in-process
        llm, tok = build_lynx_llm(ref, lynx_cfg, seed=seed)
        texts = prompts if raw_prompts else [chat_prompt(tok, q, suffix=suffix) for q in prompts]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        outs = generate_ids(llm, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, extra_args=args)

    vocab = tok.get_vocab()
    results = []
    for text, gen, tag in zip(texts, outs, tags, strict=True):
        audit = [a for a in AUDIT.pop(tag, []) if a["event"] == "exit"]
        decoded = tok.decode(gen, skip_special_tokens=False)
        results.append(Generation(
            prompt=text, text=decoded, token_ids=gen, thinking_tokens=thinking_tokens(gen, vocab["<think>"], vocab["</think>"]),
            exited=bool(audit), exit=audit[0] if audit else None, answer=extract_boxed(decoded),
        ))
        if results[-1].exit and math.isinf(results[-1].exit.get("threshold", 0)):
            results[-1].exit["threshold"] = None
    return results

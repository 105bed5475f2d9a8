"""One small sampling interface over both engines, so every method of ``lynx eval`` runs
the same way in the same engine.

Baselines need four things from an engine: sample continuations of token-id prompts with
seeds, stop at given token ids, return the chosen tokens' probabilities (DEER's confidence),
and run lynx's own online exit for some requests. Multi-round methods (DEER, Dynasor, the
transformers budget) continue a sequence by resubmitting its token ids; on vLLM the prefix
cache holds those prefixes, so a continuation re-encodes nothing already computed (on
transformers each round re-encodes the prefix, which costs time but not correctness).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lynx.exit_policy import ExitPolicy, HookConfig
from lynx.thinking import ThinkingFormat, detect_format, resolve_format


@dataclass
class Completion:
    ids: list[int]
    probs: list[float] = field(default_factory=list)  # model probability of each chosen token (when asked)


class Backend:
    """What a method may ask of an engine."""

    name = "?"
    tokenizer: Any = None  # the model's transformers tokenizer
    policy: ExitPolicy | None = None  # the ExitPolicy lynx's requests run with (None: baselines only)
    monitoring = None  # lynx.monitor.Monitoring when the hook has a monitor

    def take_events(self, tags) -> dict[str, tuple[list[dict], list[tuple]]]:
        """Remove and return lynx's audits and records of the requests tagged ``tags``; with a
        monitor, its events go through the monitor first (audits labelled, tests updated, and
        any response sent back to the engine)."""
        events = self._take_events(tags)
        if self.monitoring is not None:
            self.monitoring.observe([e for audits, _ in events.values() for e in audits])
        return events

    def _take_events(self, tags) -> dict[str, tuple[list[dict], list[tuple]]]:
        raise NotImplementedError

    def set_overrides(self, overrides: dict[str, str]) -> None:
        """Serve new requests of these request conditions with a monitor's response."""
        raise NotImplementedError

    def _start_monitoring(self, hook: HookConfig) -> None:
        """A :class:`~lynx.monitor.driver.Monitoring` on this engine when ``hook`` has a monitor."""
        if hook.monitor is None or self.policy is None:
            return
        from lynx.monitor.driver import Monitoring

        def complete(prompts, max_tokens, stop_ids):
            return [c.ids for c in self.complete(prompts, max_tokens=max_tokens, temperature=0.0, top_p=1.0, seeds=[0] * len(prompts), stop_ids=stop_ids)]

        self.monitoring = Monitoring(
            self.policy, hook.monitor, tokenizer=self.tokenizer, complete=complete, set_overrides=self.set_overrides, reload=self.reload_calibrations, log_path=hook.audit_path
        )

    def reload_calibrations(self) -> None:
        """Serve the calibrations now in the probe folder (one added since the engine started)."""
        raise NotImplementedError

    def complete(
        self,
        prompts: Sequence[list[int]],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seeds: Sequence[int],
        stop_ids: Sequence[int] = (),
        probs: bool = False,
        extra_args: Sequence[dict | None] | None = None,
    ) -> list[Completion]:
        raise NotImplementedError

    def complete_with_budget(self, prompts, *, budget: int, max_tokens: int, temperature: float, top_p: float, seeds, stop_ids) -> list[Completion] | None:
        """Engine-native static thinking budget, or None when the engine has none (or none that
        counts this thinking format right)."""
        return None


def thinking_format(hook: HookConfig, ref) -> ThinkingFormat:
    """The thinking format an engine's hook runs: the probe's or the one given, else the one
    detected from the model's tokenizer (what :class:`~lynx.cues.CueMatcher` detects)."""
    if hook.thinking is not None:
        return resolve_format(hook.thinking, None)
    from transformers import AutoTokenizer

    return detect_format(AutoTokenizer.from_pretrained(ref.path))


class VLLMBackend(Backend):
    """Offline vLLM with lynx's hook installed (requests that do not opt in run as plain vLLM),
    prefix caching on, and a reasoning config of the model's thinking format so
    ``thinking_token_budget`` works (used where the format's markers are one token each)."""

    name = "vllm"

    def __init__(self, ref, hook: HookConfig, policy=None, *, seed: int = 0, max_model_len: int | None = None):
        from vllm.config import ReasoningConfig

        from lynx.engines.vllm_engine import build_lynx_llm

        # thinking_token_budget needs a reasoning config: the model's thinking format (no reasoning
        # parser: Qwen3's needs <think> tokens); vLLM forces the closer's token ids once the budget
        # is spent and detects a natural end by the same ids
        fmt = thinking_format(hook, ref)
        reasoning = ReasoningConfig(reasoning_start_str=fmt.open, reasoning_end_str=fmt.close)
        self.llm, self.tokenizer = build_lynx_llm(ref, hook, seed=seed, enable_prefix_caching=True, reasoning_config=reasoning, max_model_len=max_model_len)
        # ... but only markers of one token each are counted right: vLLM 0.32 undercounts the
        # thinking after a pre-filled opener of k tokens by k - 1 (measured: budget 10 -> 15 thinking
        # tokens after `<` `reas` `on` `in` `g` `>`) and misses a closer the model writes in other
        # tokens than the closer's own encoding; other formats run the budget in rounds (methods.budget)
        self.native_budget = all(len(self.tokenizer.encode(m, add_special_tokens=False)) == 1 for m in (fmt.open, fmt.close))
        self.policy, self.hook = policy, hook
        self._start_monitoring(hook)

    def _take_events(self, tags):
        from lynx.engines.vllm_engine import take_events

        return take_events(self.llm, tags)

    def set_overrides(self, overrides: dict[str, str]) -> None:
        from lynx.engines.vllm_engine import set_overrides

        set_overrides(self.llm, overrides)

    def reload_calibrations(self) -> None:
        from lynx.engines.vllm_engine import reload_calibrations

        if self.policy is not None:
            reload_calibrations(self.llm)
            self.policy = self.policy.reloaded()

    def _params(self, n, *, max_tokens, temperature, top_p, seeds, stop_ids, probs, extra_args, budget=None):
        from vllm import SamplingParams

        return [
            SamplingParams(
                temperature=temperature,
                top_p=top_p if temperature > 0 else 1.0,
                max_tokens=max_tokens,
                seed=int(seeds[i]),
                stop_token_ids=list(stop_ids) or None,
                logprobs=0 if probs else None,
                extra_args=extra_args[i] if extra_args is not None else None,
                thinking_token_budget=budget,
                skip_special_tokens=False,
            )
            for i in range(n)
        ]

    def _run(self, prompts, params, probs: bool) -> list[Completion]:
        from vllm import TokensPrompt

        if not prompts:
            return []
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        res = []
        for o in outs:
            c = o.outputs[0]
            ps = []
            if probs and c.logprobs is not None:
                ps = [math.exp(step[t].logprob) for t, step in zip(c.token_ids, c.logprobs, strict=True)]
            res.append(Completion(list(c.token_ids), ps))
        return res

    def complete(self, prompts, *, max_tokens, temperature, top_p, seeds, stop_ids=(), probs=False, extra_args=None):
        params = self._params(len(prompts), max_tokens=max_tokens, temperature=temperature, top_p=top_p, seeds=seeds, stop_ids=stop_ids, probs=probs, extra_args=extra_args)
        return self._run(prompts, params, probs)

    def complete_with_budget(self, prompts, *, budget, max_tokens, temperature, top_p, seeds, stop_ids):
        if not self.native_budget:
            return None
        params = self._params(
            len(prompts), max_tokens=max_tokens, temperature=temperature, top_p=top_p, seeds=seeds, stop_ids=stop_ids, probs=False, extra_args=None, budget=budget
        )
        return self._run(prompts, params, False)


class HFBackend(Backend):
    """transformers: ``generate`` in batches (each request sampled from its own seed),
    lynx's exit through :func:`lynx.engines.hf_exit.generate_with_exit`."""

    name = "hf"

    def __init__(self, ref, hook: HookConfig, policy=None, *, batch_size: int = 64):
        from lynx.engines.exit_control import ExitController
        from lynx.models import load_hf

        self.model, self.tokenizer = load_hf(ref)
        self.controller = ExitController(hook, self.tokenizer, policy=policy)
        self.policy, self.hook = policy, hook
        self.batch_size = batch_size
        self._start_monitoring(hook)

    def _take_events(self, tags):
        return self.controller.events.take(tags)

    def set_overrides(self, overrides: dict[str, str]) -> None:
        self.controller.set_overrides(overrides)

    def reload_calibrations(self) -> None:
        self.controller.reload_calibrations()
        self.policy = self.controller.policy

    def complete(self, prompts, *, max_tokens, temperature, top_p, seeds, stop_ids=(), probs=False, extra_args=None):
        from lynx.engines import hf
        from lynx.engines.hf_exit import generate_with_exit

        if not prompts:
            return []
        stops = sorted(set(stop_ids) | {self.tokenizer.eos_token_id})
        seeds = [int(s) for s in seeds]  # one per request: a row samples from its own stream, whatever its batch
        if probs:
            return self._greedy_with_probs(prompts, max_tokens, stops)
        if extra_args is not None and any(a for a in extra_args):
            outs = generate_with_exit(
                self.model,
                self.tokenizer,
                prompts,
                self.controller,
                extra_args,
                max_new_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                seeds=seeds,
                batch_size=self.batch_size,
                stop_ids=stops,
            )
        else:
            outs = hf.generate(
                self.model, self.tokenizer, prompts, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seeds=seeds, batch_size=self.batch_size, stop_ids=stops
            )
        return [Completion(o) for o in outs]

    @torch.inference_mode()
    def _greedy_with_probs(self, prompts, max_tokens, stops) -> list[Completion]:
        from lynx.engines.hf import _chunks, _device, _left_pad, _trim

        pad = self.tokenizer.pad_token_id
        res: list[Completion] = []
        for idx in _chunks(len(prompts), self.batch_size):
            ids, mask = _left_pad([prompts[i] for i in idx], pad, _device(self.model))
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad,
                output_scores=True,
                return_dict_in_generate=True,
            )
            gen = out.sequences[:, ids.shape[1] :]
            step_probs = torch.stack([s.float().softmax(-1) for s in out.scores], dim=1)  # (B, T, V)
            chosen = step_probs.gather(-1, gen[:, : step_probs.shape[1], None]).squeeze(-1)
            for r in range(gen.shape[0]):
                toks = _trim(gen[r].tolist(), set(stops), pad)
                res.append(Completion(toks, chosen[r, : len(toks)].tolist()))
        return res

"""Engine-independent exit logic, shared by the transformers engine and both vLLM runners.

Per request that opted in (``extra_args`` ``lynx_alpha``, or ``lynx_threshold``, or
``lynx_record``) it keeps a small state; per step it is told the request's tokens and the
probe score of its last token and answers "force token t" or nothing:

* last token completes a cue word inside an open thinking span and the score clears the
  request's threshold -> start the exit: force ``exit_ids[0]``, record an audit entry;
* an exit is under way -> force the next exit token until the string is complete;
* otherwise -> leave the logits alone (requests that did not opt in are never touched).

The convention is the one collection used: the cue token itself is kept, the exit string
follows it, then the model answers freely.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("lynx.exit")

#: per-request keys in SamplingParams.extra_args (flat, so they work as HTTP vllm_xargs)
ALPHA, THRESHOLD, MODE, METHOD, TAG, RECORD = "lynx_alpha", "lynx_threshold", "lynx_mode", "lynx_method", "lynx_tag", "lynx_record"

#: in-process results by tag: audits of exits, recorded cue features (collection)
AUDIT: dict[str, list[dict]] = {}
RECORDS: dict[str, list[tuple[int, object, float | None]]] = {}


def with_probe_defaults(lynx_cfg: dict) -> dict:
    """Fill ``layers``, ``cues`` and ``exit_string`` from the probe's metadata when a probe is
    configured and they are not given, so ``{"probe": "probes/x"}`` is a complete engine config."""
    cfg = dict(lynx_cfg)
    if cfg.get("probe"):
        meta_path = Path(cfg["probe"]) / "probe.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            cfg.setdefault("layers", meta.get("layers"))
            cfg.setdefault("cues", meta.get("cues"))
            if "exit_ids" not in cfg:
                cfg.setdefault("exit_string", meta.get("exit_string"))
    return cfg


@dataclass
class RequestState:
    prompt: list[int]
    output: list[int]  # live list owned by vLLM
    threshold: float | None  # None: record only
    alpha: float | None
    mode: str | None
    tag: str | None
    record: bool
    exit_from: int | None = None  # len(output) when the exit started
    disabled: bool = False
    seen: int = 0  # cue checks done up to this output length


class ExitController:
    def __init__(self, lynx_cfg: dict, tokenizer):
        """``lynx_cfg``: probe (folder), cues, exit_ids or exit_string, audit_path; ``tokenizer``:
        the model's tokenizer or a path to it."""
        from lynx.cues import DEFAULT_CUES, CueMatcher

        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        lynx_cfg = with_probe_defaults(lynx_cfg)
        self.cfg = lynx_cfg
        self.tokenizer = tokenizer
        self.matcher = CueMatcher(self.tokenizer, cues=tuple(lynx_cfg.get("cues") or DEFAULT_CUES))
        self.candidates = self.matcher.candidate_ids
        self.exit_ids = list(lynx_cfg.get("exit_ids") or self.tokenizer(lynx_cfg.get("exit_string", ""), add_special_tokens=False)["input_ids"])
        self.calibration = None
        self.audit_path = Path(lynx_cfg["audit_path"]) if lynx_cfg.get("audit_path") else None
        probe = lynx_cfg.get("probe")
        if probe:
            try:
                from lynx.calibrate import load_calibration

                self.calibration = load_calibration(probe)
            except FileNotFoundError:
                self.calibration = None  # thresholds must then come per request (lynx_threshold)

    # -- requests -----------------------------------------------------------------
    def new_request(self, extra_args: dict | None, prompt: list[int] | None, output: list[int]) -> RequestState | None:
        args = extra_args or {}
        if not any(k in args for k in (ALPHA, THRESHOLD, RECORD)):
            return None  # not opted in: untouched
        tag = args.get(TAG) or (args.get(RECORD) if isinstance(args.get(RECORD), str) else None)
        state = RequestState(list(prompt or []), output, None, None, None, tag, bool(args.get(RECORD)))
        try:
            if THRESHOLD in args:
                state.threshold = float(args[THRESHOLD])
                state.mode = "threshold"
            elif ALPHA in args:
                if self.calibration is None:
                    raise ValueError("the probe folder has no calibration; run lynx calibrate, or pass lynx_threshold")
                d = self.calibration.threshold(float(args[ALPHA]), mode=args.get(MODE), method=args.get(METHOD))
                state.threshold, state.alpha, state.mode = d.threshold, d.alpha, d.mode + (f"/{d.method}" if d.method else "")
        except (ValueError, TypeError) as e:
            log.warning("lynx disabled for a request: %s", e)
            state.disabled = True
            self._audit(state, {"event": "disabled", "reason": str(e)})
        return state

    # -- per step -----------------------------------------------------------------
    def forced_token(self, state: RequestState, score: float | None, features=None) -> int | None:
        """The token to force for this request at this step, or None."""
        out = state.output
        if state.disabled or not out:
            return None
        if state.exit_from is not None:
            k = len(out) - state.exit_from
            if 0 <= k < len(self.exit_ids) and out[state.exit_from :] == self.exit_ids[:k]:
                return self.exit_ids[k]
            return None
        if out[-1] not in self.candidates or len(out) <= state.seen:
            return None
        state.seen = len(out)
        ids = state.prompt + out
        pos = len(ids) - 1
        if self.matcher.match_at(ids, pos) is None or not self.matcher.thinking_open(ids, pos):
            return None
        if state.record and state.tag is not None:
            RECORDS.setdefault(state.tag, []).append((pos, None if features is None else features.detach().float().cpu().numpy().copy(), score))
        if state.threshold is None:
            return None
        if score is None or not math.isfinite(score):
            state.disabled = True
            log.warning("lynx probe score unavailable (%r); lynx disabled for this request", score)
            self._audit(state, {"event": "disabled", "reason": f"probe score {score!r}", "cue_position": pos})
            return None
        if score >= state.threshold:
            state.exit_from = len(out)
            self._audit(state, {"event": "exit", "cue_position": pos, "cue_text": self.matcher._text(out[-1]), "score": float(score),
                                "threshold": state.threshold, "alpha": state.alpha, "mode": state.mode, "output_tokens": len(out)})
            return self.exit_ids[0]
        return None

    def _audit(self, state: RequestState, entry: dict) -> None:
        entry = {"tag": state.tag, "time": time.time()} | entry
        if state.tag is not None:
            AUDIT.setdefault(state.tag, []).append(entry)
        if self.audit_path is not None:
            with self.audit_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")

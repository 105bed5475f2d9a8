"""Labels of shadow audits: the same forced exits and the same grading as ``lynx collect``.

An audited request ran to its end without exiting, and the engine emitted its whole trace
(``audit_trace``: prompt and output token ids, every cue's position and probe score). Here its
cues are found again by the same :class:`~lynx.cues.CueMatcher` (so positions and thinking
positions are collect's), an exit is forced at each — context up to and including the cue,
the exit string, a short greedy answer (:func:`lynx.rollouts.parse_forced_answer`) — and each
forced answer is graded against the request's own final answer by its problem kind's grader
(:func:`lynx.rollouts.grade_cue`). No gold answer is needed: the label is *agreement*, the one
``lynx recalibrate`` calibrates on, so a labelled audit is one fresh calibration trace from live
traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from lynx.grading import grader_for
from lynx.rollouts import grade_cue, make_rollouts, parse_forced_answer

#: complete(prompts, max_tokens, stop_ids) -> generated ids of each, greedy (the engine's forced exits)
Complete = Callable[[list[list[int]], int, list[int]], list[list[int]]]


def label_audits(
    traces: Sequence[dict], *, tokenizer, matcher, exit_ids: Sequence[int], stop_ids: Sequence[int], complete: Complete, answer_tokens: int, kind: str = "math"
) -> list[dict]:
    """One ``audit_label`` event per ``audit_trace`` event, forced exits of all of them in one batch.

    A cue the engine never scored (one on the very last generated token: its hidden state only
    exists once it is fed back) could not have ended the request, so it is left out."""
    if not traces:
        return []
    grade = grader_for(kind)
    rollouts = make_rollouts(
        tokenizer,
        matcher,
        [t.get("tag") or str(i) for i, t in enumerate(traces)],
        [None] * len(traces),
        [t["prompt_ids"] for t in traces],
        [t["output_ids"] for t in traces],
        [grade] * len(traces),
    )
    jobs = []
    kept: list[list] = []
    for i, (t, r) in enumerate(zip(traces, rollouts, strict=True)):
        scores = {int(p): float(s) for p, s in t["cues"]}
        cps = [cp for cp in r.cue_points if cp.cue.position in scores]
        kept.append(cps)
        jobs += [(i, cp, r.ids[: cp.cue.position + 1] + list(exit_ids)) for cp in cps]
    answers = complete([p for _, _, p in jobs], answer_tokens, list(stop_ids)) if jobs else []
    extra = [0] * len(traces)
    for (i, cp, _), ans in zip(jobs, answers, strict=True):
        cp.forced_answer = parse_forced_answer(tokenizer, ans)
        grade_cue(cp, rollouts[i], grade)
        extra[i] += len(ans)
    out = []
    for i, (t, r) in enumerate(zip(traces, rollouts, strict=True)):
        scores = {int(p): float(s) for p, s in t["cues"]}
        out.append(
            {
                "event": "audit_label",
                "tag": t.get("tag"),
                "time": time.time(),
                **{k: t.get(k) for k in ("group", "temperature", "domain", "condition", "alpha")},
                # [thinking position, probe score, agreement (1: exiting here gives the request's own answer)]
                "cues": [[cp.thinking_position, scores[cp.cue.position], int(bool(cp.agrees))] for cp in kept[i]],
                "cue_positions": [cp.cue.position for cp in kept[i]],
                "thinking_tokens": r.thinking_tokens,
                "final_answer": r.final_answer,
                "forced_answers": [cp.forced_answer for cp in kept[i]],
                "extra_tokens": extra[i],
                "output_tokens": len(t["output_ids"]),
            }
        )
    return out

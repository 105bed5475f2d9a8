"""The organism's model card: required ranges and rendering of measured figures."""

from __future__ import annotations

#: figure -> (minimum, maximum, description); what issue #2 requires of a useful organism
REQUIREMENTS = {
    "accuracy": (0.60, 0.95, "full-CoT accuracy"),
    "mean_thinking_tokens": (None, None, "mean thinking tokens"),
    "cues_per_trace": (1.5, None, "cues per trace"),
    "safe_cue_fraction": (0.25, 0.75, "share of cue points that are safe exits"),
    "oracle_saving": (0.30, None, "oracle saving (share of thinking tokens)"),
    "probe_auc_margin": (0.05, None, "probe AUC margin over the phase baseline (min of all / after-answer)"),
}


def meets_requirements(figs: dict) -> dict[str, bool]:
    out = {}
    for key, (lo, hi, _) in REQUIREMENTS.items():
        v = figs[key]
        out[key] = (lo is None or v >= lo) and (hi is None or v <= hi)
    out["cues_on_both_sides"] = figs["cues_before_answer_per_trace"] > 0 and figs["cues_after_answer_per_trace"] > 0
    return out

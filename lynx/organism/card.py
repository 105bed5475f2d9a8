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


def meets_requirements(figs: dict, requirements: dict = REQUIREMENTS) -> dict[str, bool]:
    out = {}
    for key, (lo, hi, _) in requirements.items():
        v = figs[key]
        out[key] = (lo is None or v >= lo) and (hi is None or v <= hi)
    out["cues_on_both_sides"] = figs["cues_before_answer_per_trace"] > 0 and figs["cues_after_answer_per_trace"] > 0
    return out


def figures_markdown(figs: dict, command: str, requirements: dict = REQUIREMENTS) -> str:
    """The figures as a markdown table, with the command that measured them."""
    rows = ["| figure | measured | required |", "|---|---:|---|"]
    for key, (lo, hi, label) in requirements.items():
        rng = "" if lo is None and hi is None else (f"{lo} – {hi}" if lo is not None and hi is not None else (f"≥ {lo}" if lo is not None else f"≤ {hi}"))
        rows.append(f"| {label} | {figs[key]:.3f} | {rng} |")
    p = figs["probe"]
    margin = requirements.get("probe_auc_margin", (None,))[0]
    for name in ("all", "after_answer"):
        rows.append(
            f"| probe AUC vs phase-baseline AUC, {name.replace('_', '-')} cues (n={p[name]['n_cues']}) | "
            f"{p[name]['probe_auc']:.3f} vs {p[name]['baseline_auc']:.3f} | {'' if margin is None else f'margin ≥ {margin}'} |"
        )
    rows.append(f"| cues per trace before / after the first stated answer | {figs['cues_before_answer_per_trace']:.2f} / {figs['cues_after_answer_per_trace']:.2f} | both > 0 |")
    head = (
        f"Measured on {figs['n_problems']} `{figs['split']}` problems at temperature {figs['temperature']}, "
        f"top-p {figs['top_p']}, seed {figs['seed']} ({figs['seconds']:.0f} s on 2 CPU cores) by `{command}`:\n\n"
    )
    return head + "\n".join(rows) + "\n"


def update_docs(figs: dict, command: str, readme, card) -> None:
    """Write the figures between the markers of README.md and into the model card."""
    import re
    from pathlib import Path

    table = figures_markdown(figs, command)
    text = Path(readme).read_text()
    text = re.sub(
        r"<!-- organism-figures -->.*<!-- /organism-figures -->",
        lambda _: f"<!-- organism-figures -->\n{table}<!-- /organism-figures -->",
        text,
        flags=re.S,
    )
    Path(readme).write_text(text)
    Path(card).write_text(MODEL_CARD.format(table=table))


MODEL_CARD = """# lynx-organism

A tiny reasoning language model trained by lynx's own code (`lynx organism train`) to be a test
subject for early-exit methods on machines without GPUs or downloads.

- Architecture: `Qwen3ForCausalLM`, 4 layers, hidden 256, 4 heads of size 64 (2 KV heads),
  MLP 512, tied embeddings, ~2.5M parameters, float32. Loads in transformers and vLLM (CPU build).
- Tokenizer: byte-level BPE (386 tokens) with Qwen3's special tokens; chat template with Qwen3's
  `enable_thinking` switch. Digits are single tokens; a cue word carries its comma (`Wait,`).
- Task: `Compute 47 + 8 - 5 + 9 - 3.` (3-7 single-digit steps, running total in 0..99); the
  `transfer` split has 8-9 steps.
- Behaviour: step-by-step thinking in `<think>…</think>`, slips on carry steps, `Wait, no:` +
  correction after some of its own slips, `So the answer is N.`, then a careful recheck that spells
  out the carries (`47 + 8: 7 + 8 = 15, so 55`) followed by `Wait, yes.` or `Wait, no: 52 is not 42.`,
  then overthinking (`Hmm, let me check once more: …`, `Alternatively, …`), answer
  `Final answer: \\boxed{{N}}`.
- Training: stage 1 on scripted traces, stage 2 on its own sampled traces rewritten so its real
  slips get a correct verdict; seeded, see `organism.json` for the exact recipe, loss curves and
  the sha256 of every file.

## Figures

{table}
Use it as `--model organism` anywhere lynx takes a model, and `--dataset organism:test` (or
`train`, `calibration`, `transfer`) anywhere it takes a dataset. It is a model organism, not a
useful model: figures on it show that lynx's machinery works, not how much real models gain.
"""


def main() -> None:
    """``python -m lynx.organism.card`` — measure the bundled organism and update its docs."""
    import json
    import sys
    from pathlib import Path

    from lynx.models import ORGANISM_DIR
    from lynx.organism.info import measure

    if len(sys.argv) > 2 and sys.argv[1] == "--from-json":  # figures already measured by `lynx organism info --json`
        figs = json.loads(Path(sys.argv[2]).read_text()) | {"model": "organism"}
        n = figs["n_problems"]
    else:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
        figs = measure(n_problems=n)
    readme = Path(__file__).resolve().parents[2] / "README.md"
    update_docs(figs, f"lynx organism info --n-problems {n}", readme, ORGANISM_DIR / "README.md")
    (ORGANISM_DIR / "figures.json").write_text(json.dumps(figs, indent=2) + "\n")
    print(json.dumps(figs))


if __name__ == "__main__":
    main()

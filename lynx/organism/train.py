"""Training the organism: a Qwen3-architecture LM learned from scripted traces.

Stage 1 (``scripted``) teaches the format, the arithmetic, the slips, the cue/verdict
behaviour and the overthinking. Stage 2 (``on-policy``) samples the stage-1 model's own
traces on training problems, grades every line, and rewrites each trace so that the
model's *own* slips are followed by a cue and a correction and its own right answers by a
cue and a confirmation — so that at a cue the hidden state must encode whether its own
work is right (a lesson from a prototype whose model never fixed its own mistakes).

Everything is seeded; on 2 CPU cores both stages together stay well under 45 minutes.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

from lynx.config import Sampling
from lynx.errors import InvalidInput, MissingInput
from lynx.organism.examples import encode_example
from lynx.organism.problems import MAIN_STEPS, TRANSFER_STEPS, sample_problems
from lynx.organism.tokenizer import save_tokenizer, train_tokenizer
from lynx.organism.traces import NO_THINK_RATE, write_assistant
from lynx.prompting import user_message

console = Console(stderr=True)


@dataclass
class OrganismTrainConfig:
    seed: int = 0
    n_problems: int = 24_000
    long_fraction: float = 0.15  # share of transfer-length chains in the LM's own training data
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 64  # vLLM's CPU attention supports 64 (not 16)
    intermediate_size: int = 512
    vocab_size: int = 384
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    scripted_steps: int = 700
    onpolicy_problems: int = 1600
    onpolicy_steps: int = 150
    onpolicy_temperature: float = 1.0
    max_seconds: float = 45 * 60
    threads: int = 2
    resume_stage1: bool = False  # reuse <out>-stage1 from an earlier run (stage 1 is deterministic)
    notes: dict = field(default_factory=dict)


def _lm_problems(cfg: OrganismTrainConfig):
    """Training problems for the LM: main-family lengths plus some longer chains, all train-bucket."""
    n_long = int(cfg.n_problems * cfg.long_fraction)
    main = sample_problems("train", cfg.n_problems - n_long, seed=cfg.seed + 101, steps=MAIN_STEPS)
    long = sample_problems("train", n_long, seed=cfg.seed + 202, steps=TRANSFER_STEPS)
    problems = main + long
    random.Random(cfg.seed).shuffle(problems)
    return problems


def _batches(examples: list[tuple[list[int], int]], batch_size: int, rng: random.Random, pad_id: int):
    """Endless length-grouped batches (less padding, same data distribution)."""
    if not examples:
        raise InvalidInput("no training examples")
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for g in range(0, len(order), batch_size * 50):
            group = sorted(order[g : g + batch_size * 50], key=lambda i: len(examples[i][0]))
            chunks = [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
            rng.shuffle(chunks)
            for chunk in chunks:
                width = max(len(examples[i][0]) for i in chunk)
                ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                labels = torch.full((len(chunk), width), -100, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, i in enumerate(chunk):
                    seq, start = examples[i]
                    ids[r, : len(seq)] = torch.tensor(seq)
                    labels[r, start : len(seq)] = torch.tensor(seq[start:])
                    mask[r, : len(seq)] = 1
                yield ids, labels, mask


def build_model(cfg: OrganismTrainConfig, tokenizer) -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(cfg.seed)
    return Qwen3ForCausalLM(config)


def fit(model, examples, steps: int, cfg: OrganismTrainConfig, label: str, deadline: float, lr: float | None = None) -> list[float]:
    """Plain AdamW + warmup/cosine on the assistant tokens; returns the loss curve."""
    rng = random.Random(cfg.seed + len(label))
    opt = torch.optim.AdamW(model.parameters(), lr=lr or cfg.lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    model.train()
    losses = []
    batches = _batches(examples, cfg.batch_size, rng, model.config.pad_token_id)
    cols = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=console) as bar:
        task = bar.add_task(label, total=steps, loss=float("nan"))
        for step in range(steps):
            ids, labels, mask = next(batches)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(task, advance=1, loss=sum(losses[-20:]) / len(losses[-20:]))
            if time.monotonic() > deadline:
                console.print(f"[yellow]{label}: time budget reached after {step + 1} steps")
                break
    model.eval()
    return losses


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(model, tokenizer, out: Path, cfg: OrganismTrainConfig, history: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(tokenizer, out)
    GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, temperature=Sampling.temperature, top_p=Sampling.top_p, do_sample=True
    ).save_pretrained(str(out))
    record = {
        "name": "lynx-organism",
        "architecture": "Qwen3ForCausalLM",
        "train_config": asdict(cfg),
        "history": history,
        "sha256": {f: sha256_file(out / f) for f in ("config.json", "model.safetensors", "tokenizer.json")},
    }
    (out / "organism.json").write_text(json.dumps(record, indent=2) + "\n")


def train_organism(out: Path, cfg: OrganismTrainConfig) -> Path:
    """Train both stages and write a self-describing checkpoint folder to ``out``."""
    torch.set_num_threads(cfg.threads)
    t0 = time.monotonic()
    deadline = t0 + cfg.max_seconds
    rng = random.Random(cfg.seed)
    problems = _lm_problems(cfg)
    texts = [(p.text, write_assistant(p, rng)) for p in problems]
    console.print(f"scripted corpus: {len(texts)} traces (no-think share {NO_THINK_RATE:.0%})")
    save_tokenizer(train_tokenizer([chat_prompt_free(t, a) for t, a in texts], vocab_size=cfg.vocab_size), out)
    tokenizer = AutoTokenizer.from_pretrained(str(out))  # train and serve with the saved tokenizer
    examples = [encode_example(tokenizer, t, a) for t, a in texts]
    mean_len = sum(len(e[0]) for e in examples) / len(examples)
    console.print(f"tokenizer: {len(tokenizer)} tokens; mean sequence {mean_len:.0f} tokens")
    stage1 = out.parent / f"{out.name}-stage1"
    if cfg.resume_stage1:
        if not (stage1 / "config.json").exists():
            raise MissingInput(f"--resume-stage1: {stage1} holds no stage-1 model")
        console.print(f"stage 1: reusing {stage1}")
        history: dict[str, Any] = {"scripted_loss": f"resumed from {stage1.name}"}
    else:
        model = build_model(cfg, tokenizer)
        console.print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
        history = {"scripted_loss": fit(model, examples, cfg.scripted_steps, cfg, "stage 1 (scripted)", deadline)}
        model.save_pretrained(str(stage1))  # kept so stage 2 can be re-run without stage 1
    if cfg.onpolicy_steps > 0 and cfg.onpolicy_problems > 0:
        from lynx.organism.onpolicy import onpolicy_examples

        model = AutoModelForCausalLM.from_pretrained(str(stage1)).eval()
        onp = onpolicy_examples(model, tokenizer, cfg)
        mixed = onp + random.Random(cfg.seed + 7).sample(examples, min(len(examples), len(onp)))
        history["onpolicy_loss"] = fit(model, mixed, cfg.onpolicy_steps, cfg, "stage 2 (on-policy)", deadline, lr=cfg.lr / 4)
    history["seconds"] = round(time.monotonic() - t0, 1)
    history["loss_final"] = {k: sum(v[-50:]) / len(v[-50:]) for k, v in history.items() if isinstance(v, list)}
    save_checkpoint(
        model,
        tokenizer,
        out,
        cfg,
        {k: v for k, v in history.items() if not isinstance(v, list)} | {k: v[:: max(1, len(v) // 100)] for k, v in history.items() if isinstance(v, list)},
    )
    console.print(f"saved organism to {out} after {history['seconds']:.0f} s")
    return out


def chat_prompt_free(problem_text: str, assistant: str) -> str:
    """Tokenizer-training text: the roles' words and the trace, with no special tokens."""
    return "user\n" + user_message(problem_text) + "\nassistant\n" + assistant

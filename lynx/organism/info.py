"""``lynx organism info``: is the organism a fit test subject for a hidden-state method?

It samples the organism on held-out problems, finds every cue, forces an exit at each,
and measures what the issue requires of a model organism: accuracy, thinking length,
cue rate, the share of safe cue points, the oracle's saving, and — the point of it all —
whether a linear probe on the cue token's hidden states predicts a safe exit better than
a strong baseline that only sees the cue's *phase* (position, relative position, cue
word, cue index, whether an answer was already stated). The baseline gets the better of
a logistic regression and gradient-boosted trees, so the margin is not an artefact of a
weak baseline. All AUCs are out-of-fold over problem-grouped folds.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.progress import Progress

from lynx.config import Sampling
from lynx.cues import CueMatcher
from lynx.engines import hf
from lynx.errors import InvalidInput
from lynx.families import family_of, sample_problems
from lynx.grading import grade_integer
from lynx.layers import default_layers
from lynx.models import load_hf, resolve_model
from lynx.prompting import chat_prompt
from lynx.rollouts import Rollout, force_exits, make_rollouts

console = Console(stderr=True)
ANSWER_STATED = re.compile(r"answer is", re.IGNORECASE)


@dataclass
class CueTable:
    """One row per cue point: hidden features, phase features, label, group."""

    hidden: np.ndarray
    phase: np.ndarray
    label: np.ndarray
    after_answer: np.ndarray
    group: np.ndarray


def cue_table(model, tokenizer, rollouts: list[Rollout], layers) -> CueTable:
    words = sorted({cp.cue.word for r in rollouts for cp in r.cue_points}) or ["wait"]
    seqs, positions = [], []
    phase, label, after, group = [], [], [], []
    for gi, r in enumerate(rollouts):
        if not r.cue_points:
            continue
        seqs.append(r.ids)
        positions.append([cp.cue.position for cp in r.cue_points])
        total = max(1, r.thinking_tokens)
        assert r.think_open is not None  # cue points lie inside an opened thinking span (make_rollouts)
        for k, cp in enumerate(r.cue_points):
            before = tokenizer.decode(r.ids[r.think_open + 1 : cp.cue.position], skip_special_tokens=False)
            stated = bool(ANSWER_STATED.search(before))
            onehot = [float(cp.cue.word == w) for w in words]
            phase.append([cp.thinking_position, cp.thinking_position / total, k, float(stated), *onehot])
            assert cp.safe is not None  # organism problems have gold answers, and force_exits grades every cue
            label.append(int(cp.safe))
            after.append(stated)
            group.append(gi)
    states = hf.hidden_states_at(model, seqs, positions, layers)
    hidden = np.concatenate([s.reshape(s.shape[0], -1) for s in states]) if states else np.zeros((0, 1))
    return CueTable(hidden, np.asarray(phase, float), np.asarray(label), np.asarray(after), np.asarray(group))


def _oof_auc(X: np.ndarray, y: np.ndarray, groups: np.ndarray, make_model, folds: int = 5) -> float:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    if len(np.unique(y)) < 2 or len(np.unique(groups)) < folds:
        return float("nan")
    pred = np.zeros(len(y))
    for tr, te in GroupKFold(n_splits=folds).split(X, y, groups):
        if len(np.unique(y[tr])) < 2:
            pred[te] = y[tr].mean()
            continue
        m = make_model().fit(X[tr], y[tr])
        pred[te] = m.predict_proba(X[te])[:, 1]
    return float(roc_auc_score(y, pred))


def probe_vs_phase(table: CueTable) -> dict:
    """Out-of-fold AUC of the hidden-state probe and of the phase baseline, all cues and after-answer cues."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def probe():
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000))

    def phase_lr():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))

    def phase_trees():
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)

    out = {}
    for name, sel in (("all", np.ones(len(table.label), bool)), ("after_answer", table.after_answer)):
        y, g = table.label[sel], table.group[sel]
        p = _oof_auc(table.hidden[sel], y, g, probe)
        b = max(_oof_auc(table.phase[sel], y, g, phase_lr), _oof_auc(table.phase[sel], y, g, phase_trees))
        out[name] = {"probe_auc": p, "baseline_auc": b, "margin": p - b, "n_cues": int(sel.sum()), "safe_share": float(y.mean()) if len(y) else float("nan")}
    return out


def measure(
    model: str = "organism",
    n_problems: int = 500,
    temperature: float = Sampling.temperature,
    top_p: float = Sampling.top_p,
    seed: int = Sampling.seed,
    split: str = "test",
    max_new_tokens: int = Sampling.max_new_tokens,
    batch_size: int = 64,
    engine: str = "hf",
    family: str | None = None,
) -> dict:
    """Sample, label and score the organism; returns the figures of its model card.

    ``family`` is the problem family sampled (``organism`` or ``smollm2``, the word problems
    SmolLM2-reasoner was taught on); by default the one of the model (``smollm2*`` models get
    the word problems, any other the organism's chains).

    ``engine`` samples the traces: ``hf`` (transformers; the model card's figures) or ``vllm``
    (the same model and sampling settings, its own random streams: other traces from the same
    distribution, several times faster on CPU), and then also continues the forced exits (greedy,
    as transformers would). Hidden states are read with transformers either way."""
    if engine not in ("hf", "vllm"):
        raise InvalidInput(f"unknown engine {engine!r}: use hf or vllm")
    t0 = time.monotonic()
    ref = resolve_model(model)
    lm, tok = load_hf(ref)
    matcher = CueMatcher(tok)
    problems = sample_problems(family or family_of(model), split, n_problems, seed=seed)
    prompts = [tok(chat_prompt(tok, p.text), add_special_tokens=False)["input_ids"] for p in problems]
    force = None
    if engine == "vllm":
        from lynx.engines.vllm_engine import build_llm, generate_ids

        console.print(f"sampling {n_problems} traces (T={temperature}) with vLLM")
        llm = build_llm(ref, seed=seed)
        gens = generate_ids(llm, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)

        def force(prefixes, max_tokens, stop_ids):
            return generate_ids(llm, prefixes, max_new_tokens=max_tokens, stop_ids=stop_ids)

    else:
        gens = _sample_hf(lm, tok, prompts, n_problems, max_new_tokens, temperature, top_p, seed, batch_size)
    return _figures(lm, tok, matcher, problems, prompts, gens, model, temperature, top_p, seed, split, engine, t0, force)


def _sample_hf(lm, tok, prompts, n_problems, max_new_tokens, temperature, top_p, seed, batch_size) -> list[list[int]]:
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"sampling {n_problems} traces (T={temperature})", total=n_problems)
        return hf.generate(
            lm,
            tok,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            on_batch=lambda n: bar.advance(task, n),
        )


def _figures(lm, tok, matcher, problems, prompts, gens, model, temperature, top_p, seed, split, engine, t0, force=None) -> dict:
    rollouts = make_rollouts(tok, matcher, [p.problem_id for p in problems], [str(p.answer) for p in problems], prompts, gens, [grade_integer] * len(problems))
    n_cues = sum(len(r.cue_points) for r in rollouts)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"forcing exits at {n_cues} cues", total=n_cues)
        force_exits(lm, tok, rollouts, grade_integer, max_answer_tokens=16, batch_size=128, on_batch=lambda n: bar.advance(task, n), generate=force)
    layers = default_layers(lm.config.num_hidden_layers)
    table = cue_table(lm, tok, rollouts, layers)
    auc = probe_vs_phase(table)

    thinking = np.array([r.thinking_tokens for r in rollouts], float)
    saved = []
    for r in rollouts:
        first_safe = next((cp for cp in r.cue_points if cp.safe), None)
        saved.append(r.thinking_tokens - first_safe.thinking_position if first_safe else 0)
    n = len(rollouts)
    return {
        "accuracy": float(np.mean([r.final_correct for r in rollouts])),
        "mean_thinking_tokens": float(thinking.mean()),
        "cues_per_trace": n_cues / n,
        "safe_cue_fraction": float(table.label.mean()) if n_cues else 0.0,
        "oracle_saving": float(np.sum(saved) / max(1.0, thinking.sum())),
        "probe_auc_margin": float(min(auc["all"]["margin"], auc["after_answer"]["margin"])),
        "n_problems": n,
        "cues_before_answer_per_trace": float((~table.after_answer).sum() / n),
        "cues_after_answer_per_trace": float(table.after_answer.sum() / n),
        "traces_without_cue": float(np.mean([not r.cue_points for r in rollouts])),
        "truncated_traces": float(np.mean([r.think_close is None for r in rollouts])),
        "probe": auc,
        "layers": list(layers),
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "split": split,
        "engine": engine,
        "model": model,
        "seconds": round(time.monotonic() - t0, 1),
    }

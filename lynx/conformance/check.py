"""Conformance of lynx's hook on one architecture family, end to end, on a tiny local model.

What it checks, for a family of :data:`lynx.conformance.tiny_models.FAMILIES` (both engines
unless told otherwise):

1. **Hidden states.** ``lynx collect`` on the same problems, greedy, with the transformers engine
   (features = transformers' ``hidden_states`` at the probe's layers) and with the vLLM engine
   (features = what lynx's wrapper architecture hands the logits processor through vLLM's
   auxiliary hidden states): the same cue points (positions, labels, forced answers), and
   features equal to a stated tolerance (:data:`ATOL`, :data:`RTOL`; both run float32).
2. **Exits.** A random probe over those layers with a fixed threshold (in the widest gap of its scores
   near their median at the collected cues: some cues exit, some do not): greedy rollouts through both
   engines exit at the same cues and write the same tokens.
3. **Per-request alpha.** The random probe calibrated (``lynx calibrate``) on the vLLM collection;
   requests with ``lynx_alpha`` are served (and a bad alpha is refused before any generation).

The model is tiny and random, then taught a few scripted traces (:mod:`lynx.conformance.teach`)
so that its greedy output thinks with cues. ``python -m lynx.conformance.check FAMILY WORKDIR``
runs it (on a GPU machine too: the vLLM engine then runs the GPU build and its default runner)
and prints the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

#: hidden-state tolerance between the engines (float32 on both; vLLM's CPU kernels and transformers
#: sum in other orders, so equality holds to rounding, not bit for bit)
ATOL, RTOL = 1e-4, 1e-3
MAX_NEW_TOKENS = 192


def prepare(family: str, work: Path, seed: int = 0) -> tuple[Path, Path]:
    """(model folder, problems file): the family's tiny model, taught the scripted traces and
    marked as a conformance model; the scripted problems with their gold answers (JSONL)."""
    from lynx.conformance.teach import scripted_traces, teach
    from lynx.conformance.tiny_models import build_tiny
    from lynx.models import CONFORMANCE_KEY

    work.mkdir(parents=True, exist_ok=True)
    model, problems = work / "model", work / "problems.jsonl"
    script = scripted_traces(seed=seed)
    if not (model / "config.json").exists() or CONFORMANCE_KEY not in json.loads((model / "config.json").read_text()):
        build_tiny(family, model, seed=seed)
        taught = teach(model, script, seed=seed)
        config = json.loads((model / "config.json").read_text())
        config[CONFORMANCE_KEY] = {"family": family, "seed": seed, "taught": taught}
        (model / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    problems.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(script.problems, script.golds, strict=True)))
    return model, problems


def collect_with(engine: str, model: Path, problems: Path, out: Path) -> Path:
    from lynx.collect.pipeline import collect
    from lynx.config import CollectConfig

    collect(CollectConfig(model=str(model), dataset=str(problems), out=out, engine=engine, temperature=0.0, max_new_tokens=MAX_NEW_TOKENS, shard_size=64))
    return out


def compare_collections(a: Path, b: Path) -> dict:
    """The two collections' cue points side by side: counts, positions, labels, feature gaps."""
    import numpy as np

    from lynx.store.cue_data import load_cue_data

    x, y = load_cue_data(a), load_cue_data(b)
    assert x.token_position is not None and y.token_position is not None  # written by this lynx
    same_points = len(x) == len(y) and bool(np.array_equal(x.token_position, y.token_position)) and bool(np.array_equal(x.problem_id, y.problem_id))
    report = {"cues": [len(x), len(y)], "same_cue_points": same_points}
    if same_points and len(x):
        diff = np.abs(x.features - y.features)
        report |= {
            "same_labels": bool(np.array_equal(x.label, y.label)),
            "max_abs_diff": float(diff.max()),
            "max_rel_diff": float((diff / np.maximum(np.abs(y.features), 1e-6)).max()),
            "features_close": bool(np.allclose(x.features, y.features, atol=ATOL, rtol=RTOL)),
            "feature_width": int(x.features.shape[1]),
        }
    return report


def random_probe(collection: Path, out: Path, seed: int = 0) -> Path:
    """A v1 MLP probe with random weights over the collection's layers (what ``lynx train``
    writes, minus the training): exits then fall on some cues and not others."""
    import torch

    from lynx.probe.artifact import Probe, meta_from_manifest, save_probe
    from lynx.store.cue_data import load_cue_data

    data = load_cue_data(collection)
    m, width = data.manifest, data.features.shape[1]
    g = torch.Generator().manual_seed(seed)
    feats = torch.tensor(data.features)
    mean, scale = feats.mean(0), feats.std(0).clamp_min(1e-3)
    weights = [torch.randn(width, 16, generator=g) / width**0.5, torch.randn(16, 1, generator=g)]  # (in, out), as sklearn stores them
    biases = [torch.zeros(16), torch.zeros(1)]
    meta = meta_from_manifest(m) | {
        "target": "safe",
        "architecture": {"kind": "mlp", "hidden_layer_sizes": [16], "activation": "relu", "output": "sigmoid", "random": True},
        "data": {"folder": str(collection), "dataset": m["dataset"], "sampling": m["sampling"], "n_cues": len(data), "labels": data.labels},
    }
    save_probe(Probe(mean, scale, weights, biases, meta), out)
    return out


def split_threshold(probe: Path, collection: Path) -> float:
    """A threshold that splits the probe's scores at the collected cues near their median, in
    the middle of the widest gap between neighbouring scores there: some cues exit and some do
    not, and no score sits within float rounding of the threshold (the engines' scores agree
    only to rounding, so a score on the threshold would make them disagree for no reason)."""
    import numpy as np

    from lynx.exit_policy import ExitPolicy
    from lynx.probe.scoring import cue_scores
    from lynx.store.cue_data import load_cue_data

    s = np.unique(cue_scores(ExitPolicy.load(probe).probe, load_cue_data(collection)))
    if len(s) < 2:
        return float(s[0]) + 1e-3 if len(s) else 0.5
    lo, hi = max(0, len(s) // 4 - 1), min(len(s) - 1, (3 * len(s)) // 4 + 1)
    k = lo + int(np.argmax(np.diff(s[lo : hi + 1])))
    return float((s[k] + s[k + 1]) / 2)


def hf_exits(model: Path, probe: Path, questions: list[str], threshold: float) -> list[dict]:
    """Greedy rollouts through the transformers engine, exiting where the probe clears ``threshold``."""
    from lynx.run import generate

    gens = generate(questions, model=str(model), probe=str(probe), engine="hf", threshold=threshold, temperature=0.0, max_new_tokens=MAX_NEW_TOKENS)
    return [{"tokens": list(g.token_ids), "cue_position": (g.exit or {}).get("cue_position")} for g in gens]


def vllm_checks(model: Path, probe: Path, problems: Path, out: Path, questions: list[str], threshold: float) -> tuple[Path, list[dict], list[dict]]:
    """On one vLLM engine running lynx's hook with the probe: the collection (recording is per
    request), greedy rollouts exiting at ``threshold``, and requests asking for ``lynx_alpha``
    (0.5, and 0.2 for the same prompts). One engine start per family keeps the check cheap."""
    import uuid

    from lynx.collect.pipeline import VLLMCollector, collect
    from lynx.config import CollectConfig
    from lynx.engines.vllm_engine import build_lynx_llm, generate_ids, take_events
    from lynx.exit_policy import ExitPolicy
    from lynx.models import resolve_model
    from lynx.prompting import chat_prompt

    ref, policy = resolve_model(str(model)), ExitPolicy.load(probe)
    llm, tok = build_lynx_llm(ref, policy.hook_config({"keep_events": True}), seed=0)
    cfg = CollectConfig(model=str(model), dataset=str(problems), out=out, engine="vllm", temperature=0.0, max_new_tokens=MAX_NEW_TOKENS, shard_size=64)
    collect(cfg, engine=VLLMCollector.on_engine(ref, llm, cfg))
    ids = [tok(chat_prompt(tok, q, suffix=policy.prompt_suffix), add_special_tokens=False)["input_ids"] for q in questions]
    asks = [{"lynx_threshold": threshold}] * len(ids) + [{"lynx_alpha": 0.5}] * len(ids) + [{"lynx_alpha": 0.2}] * len(ids)
    tags = [uuid.uuid4().hex for _ in asks]
    outs = generate_ids(llm, ids * 3, max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, extra_args=[a | {"lynx_tag": t} for a, t in zip(asks, tags, strict=True)])
    events = take_events(llm, tags)
    runs = []
    for tag, toks in zip(tags, outs, strict=True):
        exits = [e for e in events[tag][0] if e["event"] == "exit"]
        runs.append({"tokens": list(toks), "cue_position": exits[0]["cue_position"] if exits else None, "exit": exits[0] if exits else None})
    n = len(ids)
    return out, runs[:n], runs[n:]


#: real models the check also runs on (lynx's SmolLM2 reasoner: a pretrained Llama, 30 layers,
#: BPE markers of three tokens), with the problems of their family instead of the scripted ones
REAL_MODELS = ("smollm2-reasoner",)
REAL_PROBLEMS = 8


def prepare_real(name: str, work: Path) -> tuple[Path, Path]:
    """(model folder, problems file) for a real model: the resolved folder, and the first
    test problems of the model's family with their gold answers."""
    from lynx.families import family_of, sample_problems
    from lynx.models import resolve_model

    work.mkdir(parents=True, exist_ok=True)
    problems = work / "problems.jsonl"
    rows = sample_problems(family_of(name), "test", REAL_PROBLEMS)
    problems.write_text("".join(json.dumps({"question": p.text, "answer": str(p.answer)}) + "\n" for p in rows))
    return Path(resolve_model(name).path), problems


def check(family: str, work: Path | str, seed: int = 0) -> dict:
    """Run every check for ``family`` (a tiny family, or a real model of :data:`REAL_MODELS`) in the
    folder ``work``; returns the report (see the module)."""
    from lynx.calibrate.pipeline import calibrate

    work = Path(work)
    t0 = time.monotonic()
    model, problems = prepare_real(family, work) if family in REAL_MODELS else prepare(family, work, seed)
    questions = [json.loads(line)["question"] for line in problems.read_text().splitlines()]
    report: dict = {"family": family, "tolerance": {"atol": ATOL, "rtol": RTOL}}
    hf = collect_with("hf", model, problems, work / "collect-hf")
    probe = random_probe(hf, work / "probe", seed)
    threshold = split_threshold(probe, hf)
    calibrate(probe, hf, alphas=(0.2, 0.5))
    hf_runs = hf_exits(model, probe, questions, threshold)
    vllm, vllm_runs, alpha_runs = vllm_checks(model, probe, problems, work / "collect-vllm", questions, threshold)
    report["collections"] = {"hf": _summary(hf), "vllm": _summary(vllm)}
    report["hidden_states"] = compare_collections(hf, vllm)
    report["exits"] = {
        "threshold": threshold,
        "per_engine": {"hf": [r["cue_position"] for r in hf_runs], "vllm": [r["cue_position"] for r in vllm_runs]},
        "exited": {"hf": sum(r["cue_position"] is not None for r in hf_runs), "vllm": sum(r["cue_position"] is not None for r in vllm_runs)},
        "same_exits": [r["cue_position"] for r in hf_runs] == [r["cue_position"] for r in vllm_runs],
        "same_tokens": [r["tokens"] for r in hf_runs] == [r["tokens"] for r in vllm_runs],
    }
    exited = next((r for r in vllm_runs if r["cue_position"] is not None), None)
    if exited is not None:  # what an exit looks like in this family's thinking format
        from transformers import AutoTokenizer

        report["exits"]["exit_text"] = AutoTokenizer.from_pretrained(str(model)).decode(exited["tokens"], skip_special_tokens=False)
    report["alpha"] = {"requests": len(alpha_runs), "exits": [r["exit"] for r in alpha_runs if r["exit"]]}
    report["seconds"] = round(time.monotonic() - t0, 1)
    return report


def _summary(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    from lynx.store.cue_data import load_cue_data

    data = load_cue_data(folder)
    return {"cues": len(data), "safe": int(data.label.sum()), "layers": manifest["layers"], "thinking": manifest.get("thinking", {}).get("name")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lynx.conformance.check", description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("work", type=Path)
    args = parser.parse_args(argv)
    from lynx.errors import InvalidInput

    try:
        report = check(args.family, args.work)
    except InvalidInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (args.work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

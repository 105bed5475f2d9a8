"""``lynx collect``: rollouts -> cue points -> forced exits -> labelled Parquet shards.

Per shard of problems: sample ``K`` rollouts per problem with the model's chat template
(thinking on), find cue tokens inside the thinking span, then — in one pass per batch of
traces — read the cue tokens' hidden states and force an exit at every cue from the
rollout's own KV cache (context up to and including the cue, then the exit string, then a
greedy answer), grade it — against the gold answer (``label``, when the dataset has answers)
and against the trace's own final answer (``agreement``, always; the label of an answerless
dataset) — and write the shard. Every rollout is
seeded from (seed, problem, sample) alone (:func:`lynx.config.rollout_seed`), so a resumed
run, another batch size or another split of the work produces exactly the rows an
uninterrupted one would.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lynx import __version__
from lynx.config import LABELS, SEEDING, CollectConfig, rollout_seed
from lynx.cues import CueMatcher
from lynx.datasets import load as load_dataset
from lynx.engines import hf
from lynx.errors import InvalidInput
from lynx.grading import grader_for
from lynx.layers import parse_layers
from lynx.models import load_hf, model_fingerprint, resolve_model
from lynx.prompting import chat_prompt
from lynx.rollouts import answer_stop_ids, grade_cue, make_rollouts, parse_forced_answer
from lynx.store.folders import LOCK_FILE, exclusive_writer
from lynx.store.manifest import check_compatible, tokenizer_hash, write_manifest
from lynx.store.shards import TRACE_SCHEMA, completed_shards, cue_schema, read_folder, write_shard

console = Console(stderr=True)


class NoCuesFound(InvalidInput):
    """The model produced no cue inside its thinking span."""


def _tables(rollouts, sample_ids, layers, hidden: int, labels: str = "gold") -> tuple[pa.Table, pa.Table]:
    cue_cols: dict[str, list] = {
        k: []
        for k in (
            "problem_id",
            "sample_id",
            "cue_index",
            "token_position",
            "thinking_position",
            "cue_text",
            "cue_word",
            "label",
            "forced_answer",
            "final_answer",
            "gold",
            "final_correct",
            "thinking_tokens_total",
            "agreement",
        )
    }
    feats: dict[int, list] = {layer: [] for layer in layers}
    trace_cols: dict[str, list] = {
        k: [] for k in ("problem_id", "sample_id", "n_cues", "final_answer", "final_correct", "gold", "thinking_tokens_total", "generated_tokens", "closed_thinking")
    }
    for r, sid in zip(rollouts, sample_ids, strict=True):
        for k, cp in enumerate(r.cue_points):
            for name, value in (
                ("problem_id", r.problem_id),
                ("sample_id", sid),
                ("cue_index", k),
                ("token_position", cp.cue.position),
                ("thinking_position", cp.thinking_position),
                ("cue_text", cp.cue.text),
                ("cue_word", cp.cue.word),
                ("label", int(cp.safe if labels == "gold" else cp.agrees)),
                ("forced_answer", cp.forced_answer),
                ("final_answer", r.final_answer),
                ("gold", r.gold),
                ("final_correct", r.final_correct),
                ("thinking_tokens_total", r.thinking_tokens),
                ("agreement", None if cp.agrees is None else int(cp.agrees)),
            ):
                cue_cols[name].append(value)
            for j, layer in enumerate(layers):
                feats[layer].append(cp.features[j])
        for name, value in (
            ("problem_id", r.problem_id),
            ("sample_id", sid),
            ("n_cues", len(r.cue_points)),
            ("final_answer", r.final_answer),
            ("final_correct", r.final_correct),
            ("gold", r.gold),
            ("thinking_tokens_total", r.thinking_tokens),
            ("generated_tokens", len(r.generated)),
            ("closed_thinking", r.think_close is not None),
        ):
            trace_cols[name].append(value)
    for layer in layers:
        flat = np.asarray(feats[layer], dtype=np.float32).reshape(-1)
        cue_cols[f"features_l{layer}"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), hidden)
    return pa.table(cue_cols, schema=cue_schema(layers, hidden)), pa.table(trace_cols, schema=TRACE_SCHEMA)


class ShardRunner:
    """One engine collecting whole shards of a collection: what ``lynx collect`` runs in its own
    process, and what each Ray worker runs (:mod:`lynx.collect.distributed`). A shard's rows
    depend only on the collection's settings and the shard index (every rollout is seeded by
    (seed, problem, sample)), never on which process, batch or retry ran it."""

    def __init__(self, cfg: CollectConfig, engine=None, records=None):
        self.cfg = cfg
        self.ref = resolve_model(cfg.model)
        self.records = (
            records
            if records is not None
            else load_dataset(cfg.dataset, n=cfg.n_problems, seed=cfg.seed, question_field=cfg.question_field, answer_field=cfg.answer_field, require_answer=False)
        )
        self.labels = resolve_labels(cfg.labels, self.records, cfg.dataset)
        if engine is None:
            engine = (HFCollector if cfg.engine == "hf" else VLLMCollector)(self.ref, cfg)
        else:
            engine.cfg = cfg
        self.engine = engine
        self.tok, self.mconf = engine.tokenizer, engine.config
        self.matcher = CueMatcher(self.tok, cues=cfg.cues, thinking=cfg.thinking)
        #: the exit forced at every cue: the one given, else the thinking format's
        self.exit_string = cfg.exit_string or self.matcher.format.exit_string
        self.layers = parse_layers(cfg.layers, self.mconf.num_hidden_layers)
        self._started = False

    @property
    def n_shards(self) -> int:
        return (len(self.records) + self.cfg.shard_size - 1) // self.cfg.shard_size

    def shard_jobs(self, index: int) -> int:
        """Rollouts of shard ``index``."""
        return min(self.cfg.shard_size, len(self.records) - index * self.cfg.shard_size) * self.cfg.samples_per_problem

    def manifest(self) -> dict:
        cfg, ref, tok, mconf = self.cfg, self.ref, self.tok, self.mconf
        return {
            "lynx_version": __version__,
            "model": cfg.model,
            "model_path": ref.path,
            "model_fingerprint": model_fingerprint(ref),
            "tokenizer_hash": tokenizer_hash(tok),
            "num_layers": mconf.num_hidden_layers,
            "hidden_size": mconf.hidden_size,
            "layers": list(self.layers),
            "cues": list(self.matcher.cues),
            "exit_string": self.exit_string,
            "thinking": self.matcher.format.to_dict(),
            "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed},
            "samples_per_problem": cfg.samples_per_problem,
            "answer_tokens": cfg.answer_tokens,
            "dataset": cfg.dataset,
            "n_problems": len(self.records),
            "shard_size": cfg.shard_size,
            "engine": cfg.engine,
            "question_field": cfg.question_field,
            "answer_field": cfg.answer_field,
            "prompt_suffix": cfg.prompt_suffix,
            "seeding": SEEDING,
            "labels": self.labels,
        }

    def start(self) -> None:
        if not self._started:
            exit_ids = self.tok(self.exit_string, add_special_tokens=False)["input_ids"]
            self.engine.start(self.layers, self.matcher, exit_ids, answer_stop_ids(self.tok))
            self._started = True

    def run(self, index: int, out: Path, before_write=None) -> dict:
        """Collect shard ``index`` and write it (atomically) into ``out``; returns its counts and times.
        ``before_write(index)``: called just before the write (fault injection in tests)."""
        self.start()
        cfg, tok, engine = self.cfg, self.tok, self.engine
        chunk = self.records[index * cfg.shard_size : (index + 1) * cfg.shard_size]
        jobs = [(rec, k) for rec in chunk for k in range(cfg.samples_per_problem)]
        prompts = [tok(chat_prompt(tok, rec.question, suffix=cfg.prompt_suffix), add_special_tokens=False)["input_ids"] for rec, _ in jobs]
        t = time.monotonic()
        gens = engine.generate(prompts, seeds=[rollout_seed(cfg.seed, rec.id, k) for rec, k in jobs])
        t_gen = time.monotonic() - t
        t = time.monotonic()
        rollouts = make_rollouts(tok, self.matcher, [rec.id for rec, _ in jobs], [rec.answer for rec, _ in jobs], prompts, gens, [grader_for(rec.kind) for rec, _ in jobs])
        engine.label(rollouts, [rec.kind for rec, _ in jobs])
        t_label = time.monotonic() - t
        cues, traces = _tables(rollouts, [k for _, k in jobs], self.layers, self.mconf.hidden_size, self.labels)
        if before_write is not None:
            before_write(index)
        write_shard(out, index, cues, traces)
        return {"shard": index, "rollouts": len(jobs), "cues": cues.num_rows, "generation_seconds": t_gen, "labelling_seconds": t_label}


def open_collection(cfg: CollectConfig, runner: ShardRunner) -> tuple[Path, dict]:
    """Check the options and the output folder, and write the manifest; returns (folder, manifest)."""
    manifest = runner.manifest()
    out = Path(cfg.out)
    if (out / "manifest.json").exists():
        check_compatible(out, manifest)
    elif out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise InvalidInput(f"output folder {out} is not empty and has no manifest.json; refusing to write into it")
    return out, manifest


def check_options(cfg: CollectConfig) -> None:
    if cfg.engine not in ("hf", "vllm"):
        raise InvalidInput(f"unknown engine {cfg.engine!r}: use hf or vllm")
    if cfg.samples_per_problem < 1 or cfg.max_new_tokens < 1 or cfg.answer_tokens < 1:
        raise InvalidInput("--samples-per-problem, --max-new-tokens and --answer-tokens must be >= 1")
    if cfg.exit_string is not None and not cfg.exit_string.strip():
        raise InvalidInput("--exit-string must not be empty: it is what forces the exit (default closes thinking and opens \\boxed{)")


def pending_shards(out: Path, manifest: dict, runner: ShardRunner) -> list[int]:
    """Write the manifest (the caller holds the folder's lock) and list the shards still to collect."""
    write_manifest(out, manifest)
    done = completed_shards(out)
    if done:
        console.print(f"resuming: {len(done)} of {runner.n_shards} shards already complete")
    return [i for i in range(runner.n_shards) if i not in done]


class ShardProgress:
    """The progress bar of a collection, fed one finished shard at a time (any process made it)."""

    def __init__(self, total_rollouts: int):
        cols = [TextColumn("[bold]collect"), BarColumn(), MofNCompleteColumn(), TextColumn("rollouts  {task.fields[rate]:.1f}/s  cues {task.fields[cues]}"), TimeElapsedColumn()]
        self.bar = Progress(*cols, console=console)
        self.task = self.bar.add_task("collect", total=total_rollouts, rate=0.0, cues=0)
        self.cues = 0
        self.t_gen = self.t_label = 0.0
        self.t0 = time.monotonic()

    def __enter__(self) -> ShardProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def done(self, res: dict) -> None:
        """A shard's result (:meth:`ShardRunner.run`): its rollouts, cues and times."""
        self.t_gen += res["generation_seconds"]
        self.t_label += res["labelling_seconds"]
        self.cues += res["cues"]
        done_now = self.bar.tasks[0].completed + res["rollouts"]  # the rate includes this shard
        self.bar.update(self.task, advance=res["rollouts"], cues=self.cues, rate=done_now / max(1e-9, time.monotonic() - self.t0))


def finish_summary(out: Path, model: str, todo, t_gen: float, t_label: float) -> dict:
    summary = summarize(out)
    if todo:
        summary["generation_seconds"] = round(t_gen, 1)
        summary["labelling_seconds"] = round(t_label, 1)
        summary["collection_vs_generation"] = round((t_gen + t_label) / max(t_gen, 1e-9), 3)
    if summary["cues"] == 0:
        raise NoCuesFound(f"no cues found in {summary['rollouts']} rollouts of {model}: check --cues and --max-new-tokens")
    return summary


def collect(cfg: CollectConfig, engine=None) -> dict:
    """Run (or resume) a collection; returns the summary it prints.

    ``engine``: a collector from an earlier call with the same model and engine kind, reused
    so that several collections (the demo's train and calibration sets) start one engine."""
    check_options(cfg)
    runner = ShardRunner(cfg, engine)
    out, manifest = open_collection(cfg, runner)
    with exclusive_writer(out):
        todo = pending_shards(out, manifest, runner)
        with ShardProgress(sum(runner.shard_jobs(i) for i in todo)) as progress:
            for index in todo:
                progress.done(runner.run(index, out))
    return finish_summary(out, cfg.model, todo, progress.t_gen, progress.t_label)


def resolve_labels(labels: str, records, dataset: str) -> str:
    """``gold`` or ``agreement`` for this dataset: ``auto`` is gold when every problem has an
    answer and agreement when none has; gold without answers is refused, and so is a dataset
    where only some problems have one (its labels would silently mix two meanings)."""
    if labels not in LABELS:
        raise InvalidInput(f"--labels must be one of {', '.join(LABELS)}, got {labels!r}")
    with_answer = sum(r.answer is not None for r in records)
    if 0 < with_answer < len(records) and labels != "agreement":
        raise InvalidInput(f"{dataset}: {len(records) - with_answer} of {len(records)} problems have no answer; give answers for all of them, or --labels agreement")
    if labels == "gold" and with_answer == 0:
        raise InvalidInput(f"{dataset} has no answer field, so --labels gold is impossible: use --labels agreement (or auto)")
    if labels == "auto":
        return "gold" if with_answer else "agreement"
    return labels


def _apply_labels(tok, rollouts, kinds, i_states_answers) -> None:
    for i, st, ans in i_states_answers:
        grade = grader_for(kinds[i])
        r = rollouts[i]
        for cp, feat, a in zip(r.cue_points, st, ans, strict=True):
            cp.forced_answer = parse_forced_answer(tok, a)
            grade_cue(cp, r, grade)
            cp.features = feat


class HFCollector:
    """transformers: sampling with ``generate``; hidden states and forced exits in one pass per
    batch of traces, continuing from the rollout's own KV cache."""

    def __init__(self, ref, cfg: CollectConfig):
        self.cfg = cfg
        self.model, self.tokenizer = load_hf(ref)
        self.config = self.model.config

    def start(self, layers, matcher, exit_ids, stops) -> None:
        self.layers, self.exit_ids, self.stops = layers, exit_ids, stops

    def generate(self, prompts, seeds: list[int]):
        c = self.cfg
        return hf.generate(self.model, self.tokenizer, prompts, max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p, seeds=seeds, batch_size=c.batch_size)

    def label(self, rollouts, kinds) -> None:
        with_cues = [i for i, r in enumerate(rollouts) if r.cue_points]
        step = max(1, self.cfg.batch_size // 4)  # traces per pass: each expands to one row per cue
        for start in range(0, len(with_cues), step):
            idx = with_cues[start : start + step]
            states, answers = hf.cue_states_and_exits(
                self.model,
                [rollouts[i].ids for i in idx],
                [[cp.cue.position for cp in rollouts[i].cue_points] for i in idx],
                self.layers,
                self.exit_ids,
                max_answer_tokens=self.cfg.answer_tokens,
                stop_ids=self.stops,
                pad_id=self.tokenizer.pad_token_id,
            )
            _apply_labels(self.tokenizer, rollouts, kinds, zip(idx, states, answers, strict=True))


class ModelFiles:
    """A model's tokenizer and config without its weights: what planning a collection (its
    manifest, its shards) needs, and what the vLLM collector holds before its engine starts."""

    def __init__(self, ref, cfg: CollectConfig):
        from transformers import AutoConfig, AutoTokenizer

        from lynx.models import ModelNotFound, quiet_hub

        self.cfg, self.ref = cfg, ref
        try:
            with quiet_hub():
                self.tokenizer = AutoTokenizer.from_pretrained(ref.path)
                self.config = AutoConfig.from_pretrained(ref.path)
        except OSError as e:
            raise ModelNotFound(f"cannot load model {ref.name!r}: {str(e).splitlines()[0]}") from None


class VLLMCollector(ModelFiles):
    """vLLM: rollouts through lynx's in-engine hook in record mode (the wrapper model exposes
    the configured layers, the logits processor keeps each cue token's features), then all
    forced exits of a shard as one greedy batch whose prefixes vLLM's prefix cache already
    holds from the rollouts. The engine runs in-process so the recorded features can be read.

    Each rollout runs one token past ``max_new_tokens`` and is cut back: the hidden state of
    a token only exists once it is fed back in, so this gives a cue on the last allowed token
    its features too (same rows as the transformers path).
    """

    _shared: bool  # set by on_engine: the engine is the caller's (never started here)

    @classmethod
    def on_engine(cls, ref, llm, cfg: CollectConfig | None = None) -> VLLMCollector:
        """A collector on an engine that is already running lynx's hook with the probe whose
        layers, cues and exit string the collection uses (``lynx recalibrate`` next to an
        evaluation): recording is per request, so no second engine is started."""
        self = cls(ref, cfg)  # type: ignore[arg-type]  # cfg None: collect() hands the collector its config (ShardRunner)
        self.llm, self._tags, self._shared = llm, [], True
        return self

    def start(self, layers, matcher, exit_ids, stops) -> None:
        from lynx.engines.vllm_engine import build_lynx_llm

        if getattr(self, "_shared", False):
            self.layers, self.exit_ids, self.stops = layers, exit_ids, sorted(stops)
            return
        key = (tuple(layers), tuple(matcher.cues), tuple(exit_ids))
        if getattr(self, "_key", None) == key:
            return  # already running with this configuration (a second collection on one engine)
        self._key = key
        self.layers, self.exit_ids, self.stops = layers, exit_ids, sorted(stops)
        self.llm, _ = build_lynx_llm(
            self.ref,
            {"layers": list(layers), "cues": list(matcher.cues), "thinking": matcher.format.to_dict(), "exit_ids": exit_ids, "keep_events": True},
            seed=self.cfg.seed,
            enable_prefix_caching=True,
        )
        self._tags: list[str] = []

    def generate(self, prompts, seeds: list[int]):
        import uuid

        from lynx.engines.vllm_engine import generate_ids

        c = self.cfg
        self._tags = [uuid.uuid4().hex for _ in prompts]
        outs = generate_ids(
            self.llm, prompts, max_new_tokens=c.max_new_tokens + 1, temperature=c.temperature, top_p=c.top_p, seeds=seeds, extra_args=[{"lynx_record": t} for t in self._tags]
        )
        return [o[: c.max_new_tokens] for o in outs]

    def label(self, rollouts, kinds) -> None:
        from lynx.engines.vllm_engine import take_events

        events = take_events(self.llm, self._tags)
        jobs, states = [], {}
        for i, (r, tag) in enumerate(zip(rollouts, self._tags, strict=True)):
            rec = {pos: feat for pos, feat, _ in events[tag][1]}
            if not r.cue_points:
                continue
            missing = [cp.cue.position for cp in r.cue_points if cp.cue.position not in rec]
            if missing:
                raise RuntimeError(f"vLLM hook recorded no features at cue positions {missing} of {r.problem_id}")
            states[i] = np.stack([rec[cp.cue.position].reshape(len(self.layers), -1) for cp in r.cue_points])
            jobs += [(i, r.ids[: cp.cue.position + 1] + self.exit_ids) for cp in r.cue_points]
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=self.cfg.answer_tokens, stop_token_ids=self.stops)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for _, p in jobs], params, use_tqdm=False) if jobs else []
        answers: dict[int, list] = {}
        for (i, _), o in zip(jobs, outs, strict=True):
            answers.setdefault(i, []).append(list(o.outputs[0].token_ids))
        _apply_labels(self.tokenizer, rollouts, kinds, ((i, states[i], answers[i]) for i in sorted(states)))


def summarize(out: Path) -> dict:
    cues = read_folder(out, "cues")
    traces = read_folder(out, "traces")
    labels = np.asarray(cues.column("label").to_pylist(), dtype=float)
    correct = [c for c in traces.column("final_correct").to_pylist() if c is not None]
    agreement = [a for a in cues.column("agreement").to_pylist() if a is not None] if "agreement" in cues.column_names else []
    return {
        "problems": len(set(traces.column("problem_id").to_pylist())),
        "rollouts": traces.num_rows,
        "cues": cues.num_rows,
        "cues_per_rollout": cues.num_rows / max(1, traces.num_rows),
        "safe_share": float(labels.mean()) if len(labels) else float("nan"),
        "agreement_share": float(np.mean(agreement)) if agreement else float("nan"),
        "full_cot_accuracy": float(np.mean(correct)) if correct else float("nan"),
        "mean_thinking_tokens": float(np.mean(traces.column("thinking_tokens_total").to_pylist())),
        "out": str(out),
    }


def summary_table(summary: dict) -> Table:
    t = Table(title=f"lynx collect -> {summary['out']}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for key, value in summary.items():
        if key != "out":
            t.add_row(key.replace("_", " "), f"{value:.3f}" if isinstance(value, float) else str(value))
    return t

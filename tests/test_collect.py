"""lynx collect on the organism: rows, manifest, resume, refusal, and prefix reuse."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from lynx.cli import app
from lynx.collect import CollectConfig, collect
from lynx.store.manifest import IncompatibleFolder
from lynx.store.shards import CorruptShard, read_folder, shard_paths

runner = CliRunner()


def _cfg(out, **kw):
    base = dict(model="organism", dataset="organism:test:16", out=out, shard_size=8, max_new_tokens=400, batch_size=16)
    return CollectConfig(**(base | kw))


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("collect") / "run"
    summary = collect(_cfg(out))
    return out, summary


@pytest.mark.slow  # a real collection (module fixture)
def test_rows_columns_and_manifest(collected):
    out, summary = collected
    cues = read_folder(out, "cues")
    traces = read_folder(out, "traces")
    manifest = json.loads((out / "manifest.json").read_text())
    assert traces.num_rows == 16 and cues.num_rows == summary["cues"] > 0
    for col in ("problem_id", "sample_id", "cue_index", "token_position", "cue_text", "label", "forced_answer", "final_answer", "gold", "final_correct", "thinking_tokens_total"):
        assert col in cues.column_names
    for layer in manifest["layers"]:
        feats = np.asarray(cues.column(f"features_l{layer}").to_pylist(), dtype=np.float32)
        assert feats.shape == (cues.num_rows, manifest["hidden_size"]) and np.isfinite(feats).all()
    assert set(cues.column("label").to_pylist()) <= {0, 1}
    assert {"model_fingerprint", "tokenizer_hash", "layers", "cues", "exit_string", "sampling", "dataset", "lynx_version"} <= set(manifest)
    # cue rows sit inside the thinking span, in order
    rows = cues.to_pylist()
    # the decision token completes the cue word: its letters end the word (a tokenizer may split the word)
    assert all(r["cue_word"].endswith(re.sub(r"[^a-z]", "", r["cue_text"].lower())) and re.search("[a-z]", r["cue_text"].lower()) for r in rows)
    assert all(r["thinking_position"] <= r["thinking_tokens_total"] for r in rows)


@pytest.mark.slow  # collections (~5 s)
def test_resume_after_interruption_gives_identical_rows(collected, tmp_path):
    out, _ = collected
    partial = tmp_path / "partial"
    collect(_cfg(partial))
    shard_paths(partial, 1)[1].unlink()  # as if stopped before shard 1 committed
    collect(_cfg(partial))
    collect(_cfg(partial))  # a finished folder: nothing duplicated
    assert read_folder(partial, "cues").equals(read_folder(out, "cues"))
    assert read_folder(partial, "traces").num_rows == 16


@pytest.mark.slow  # the module's collection
def test_other_config_is_refused_without_touching_data(collected):
    out, _ = collected
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(IncompatibleFolder, match="differs in: layers"):
        collect(_cfg(out, layers="1,last"))
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_corrupt_shard_is_named(tmp_path):
    out = tmp_path / "c"
    collect(_cfg(out, dataset="organism:test:8"))
    bad = shard_paths(out, 0)[0]
    bad.write_bytes(b"not parquet")
    with pytest.raises(CorruptShard, match="shard-00000.cues.parquet"):
        collect(_cfg(out, dataset="organism:test:8"))


@pytest.mark.slow  # generation (~5 s)
def test_prefix_reuse_matches_reencoding(organism):
    """Forced exits from the rollout's KV cache equal re-encoding prefix + exit string."""
    from lynx.config import DEFAULT_EXIT
    from lynx.cues import CueMatcher
    from lynx.engines import hf
    from lynx.grading import grade_integer
    from lynx.organism.problems import sample_problems
    from lynx.prompting import chat_prompt
    from lynx.rollouts import answer_stop_ids, force_exits, make_rollouts

    model, tok = organism
    ps = sample_problems("test", 12, seed=4)
    prompts = [tok(chat_prompt(tok, p.text), add_special_tokens=False)["input_ids"] for p in ps]
    gens = hf.generate(model, tok, prompts, max_new_tokens=400, temperature=0.6, top_p=0.95, seed=1)
    rs = [r for r in make_rollouts(tok, CueMatcher(tok), [p.problem_id for p in ps], [str(p.answer) for p in ps], prompts, gens, [grade_integer] * len(ps)) if r.cue_points]
    assert rs
    exit_ids = tok(DEFAULT_EXIT, add_special_tokens=False)["input_ids"]
    stops = answer_stop_ids(tok)
    states, answers = hf.cue_states_and_exits(
        model, [r.ids for r in rs], [[c.cue.position for c in r.cue_points] for r in rs], (1, 2, 4), exit_ids, max_answer_tokens=16, stop_ids=stops, pad_id=tok.pad_token_id
    )
    ref_states = hf.hidden_states_at(model, [r.ids for r in rs], [[c.cue.position for c in r.cue_points] for r in rs], (1, 2, 4))
    for a, b in zip(states, ref_states, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    force_exits(model, tok, rs, grade_integer, max_answer_tokens=16)
    from lynx.rollouts import parse_forced_answer

    for r, ans in zip(rs, answers, strict=True):
        for cp, a in zip(r.cue_points, ans, strict=True):
            assert parse_forced_answer(tok, a) == cp.forced_answer


def test_cli_bad_input_is_one_line(tmp_path):
    out = ["--out", str(tmp_path / "x")]
    for args, msg in (
        (["--model", "organism", "--dataset", "gsm9k"], "unknown dataset 'gsm9k'"),
        (["--model", "organism", "--dataset", "organism:test:4", "--layers", "9"], "out of range"),
        (["--model", "nope", "--dataset", "organism:test:4"], "unknown model 'nope'"),
    ):
        r = runner.invoke(app, ["collect", *args, *out])
        assert r.exit_code == 2, r.output
        assert msg in r.output and "Traceback" not in r.output

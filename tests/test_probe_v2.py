"""Probe v2 and the context-only baseline: pickle-free trees equal scikit-learn's, the online
score the engine compares with the threshold equals the offline score calibration replays,
artifacts round-trip and refuse inconsistencies, and the baseline runs as its own scorer."""

import json

import numpy as np
import pytest
import torch

from lynx.errors import InvalidInput
from lynx.models import ORGANISM_PROBE_DIR


def test_exported_trees_equal_sklearn_and_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file
    from sklearn.ensemble import HistGradientBoostingClassifier

    from lynx.probe.trees import TreeEnsemble

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 6))
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values take the learned side
    y = ((np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 3]) + rng.normal(0, 0.5, 600)) > 0).astype(int)
    Xt = rng.normal(size=(300, 6))
    Xt[rng.random(Xt.shape) < 0.05] = np.nan
    for leaves in (2, 7, 40, 64, 9):  # stumps, the default, deep and the largest trees the engine takes; 9 is kept below
        model = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=leaves, min_samples_leaf=2, early_stopping=False, random_state=0).fit(X, y)
        trees = TreeEnsemble.from_sklearn(model)
        np.testing.assert_allclose(trees.predict(Xt), model.predict_proba(Xt)[:, 1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(trees.raw(Xt), model.decision_function(Xt), rtol=0, atol=1e-12)
        np.testing.assert_allclose(trees.raw(Xt[:1]), model.decision_function(Xt[:1]), rtol=0, atol=1e-12)  # one row, as at a cue
    big = HistGradientBoostingClassifier(max_iter=2, max_leaf_nodes=100, min_samples_leaf=2, early_stopping=False).fit(X, y)
    with pytest.raises(InvalidInput, match="at most 64"):
        TreeEnsemble.from_tensors(TreeEnsemble.from_sklearn(big).tensors(), TreeEnsemble.from_sklearn(big).scalars())
    save_file(trees.tensors(), str(tmp_path / "t.safetensors"))
    back = TreeEnsemble.from_tensors(load_file(str(tmp_path / "t.safetensors")), trees.scalars())
    np.testing.assert_array_equal(back.predict(Xt), trees.predict(Xt))
    with pytest.raises(InvalidInput, match="take 6 features"):
        trees.raw(Xt[:, :5])
    broken = trees.tensors() | {"head.left": torch.full_like(trees.tensors()["head.left"], 10**6)}
    with pytest.raises(InvalidInput, match="inconsistent"):
        TreeEnsemble.from_tensors(broken, trees.scalars())


def _chain(n_leaves: int, missing_left: bool = False):
    """One tree as deep as ``n_leaves`` leaves can make it: split d sends ``x[0] <= d`` to a leaf worth d."""
    from lynx.probe.trees import TreeEnsemble

    n_splits = n_leaves - 1
    n = 2 * n_splits + 1  # split d at 2d, its left leaf at 2d + 1, the last leaf at the end
    feature, threshold = np.zeros(n, np.int64), np.zeros(n)
    left, right, leaf, value = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n)
    for d in range(n_splits):
        threshold[2 * d], left[2 * d], right[2 * d] = d, 2 * d + 1, 2 * d + 2
        leaf[2 * d + 1], value[2 * d + 1] = True, d
    leaf[-1], value[-1] = True, n_splits
    return TreeEnsemble(
        feature=feature,
        threshold=threshold,
        left=left,
        right=right,
        leaf=leaf,
        value=value,
        missing_left=np.full(n, missing_left),
        roots=np.array([0]),
        baseline=0.5,
        depth=n_splits,
        n_features=2,
    )


def test_compiled_trees_take_the_deepest_tree_nans_and_refuse_malformed_ones():
    """The engine's scorer is generated Python (nested conditions): a 64-leaf chain, 63 deep, still
    compiles and scores right; NaN goes where the split sends training NaNs; more leaves, a cycle,
    negative children or features are refused at load with one clear error, never a crash later."""
    from lynx.probe.trees import TreeEnsemble

    deep = _chain(64)
    assert deep.raw_rows([[10.5, 0.0], [-1.0, 0.0], [100.0, 0.0], [float("nan"), 0.0]]) == [11.5, 0.5, 63.5, 63.5]  # NaN goes right
    assert _chain(64, missing_left=True).raw_rows([[float("nan"), 0.0]]) == [0.5]  # ...or left, as trained
    back = TreeEnsemble.from_tensors(deep.tensors(), deep.scalars())
    np.testing.assert_array_equal(back.raw(np.array([[10.5, 0.0], [3.0, 1.0]])), [11.5, 3.5])
    assert back.predict_rows([[10.5, 0.0]]) == [float(back.predict(np.array([[10.5, 0.0]]))[0])]  # the engine's call = offline, exactly
    with pytest.raises(InvalidInput, match="at most 64"):
        TreeEnsemble.from_tensors(_chain(65).tensors(), _chain(65).scalars())
    import pickle  # in-memory transport only (multiprocessing, Ray actors): the compiled function is rebuilt

    moved = pickle.loads(pickle.dumps(back))
    assert moved.raw_rows([[10.5, 0.0], [3.0, 1.0]]) == [11.5, 3.5]
    t = deep.tensors()
    cyclic = t | {"head.right": t["head.right"].clone().index_fill_(0, torch.tensor([10]), 0)}  # split 5 points back at the root
    with pytest.raises(InvalidInput, match="at most 64"):
        TreeEnsemble.from_tensors(cyclic, deep.scalars())
    for name in ("left", "feature"):
        bad = t | {f"head.{name}": t[f"head.{name}"].clone().index_fill_(0, torch.tensor([0]), -1)}
        with pytest.raises(InvalidInput, match="inconsistent"):
            TreeEnsemble.from_tensors(bad, deep.scalars())
    nan_value = t | {"head.value": t["head.value"].clone().index_fill_(0, torch.tensor([1]), float("nan"))}
    with pytest.raises(InvalidInput, match="NaN"):
        TreeEnsemble.from_tensors(nan_value, deep.scalars())


def test_history_and_context_columns_look_only_backwards():
    from lynx.probe.context import context_matrix, context_names, history_matrix, logit, previous_positions

    cue_index = np.array([0, 1, 2, 0, 1])
    pos = np.array([5, 9, 30, 7, 8])
    p = np.array([0.2, 0.9, 0.5, 0.6, 0.1])
    h = history_matrix(cue_index, p)
    lg = logit(p)
    np.testing.assert_allclose(h[0], [lg[0], 0, 0, 0, 1])
    np.testing.assert_allclose(h[2], [lg[2], max(lg[0], lg[1]), (lg[0] + lg[1]) / 2, lg[1], 0])
    np.testing.assert_allclose(h[3], [lg[3], 0, 0, 0, 1])  # a new trace forgets the previous one
    np.testing.assert_array_equal(previous_positions(cue_index, pos), [0, 5, 9, 0, 7])
    c = context_matrix(cue_index, pos, previous_positions(cue_index, pos), [40] * 5, ["wait", "hmm", "wait", "x", "hmm"], ["hmm", "wait"])
    assert c.shape == (5, len(context_names(["hmm", "wait"])))
    np.testing.assert_array_equal(c[:, 3], [5, 4, 21, 7, 1])  # tokens since the previous cue
    np.testing.assert_array_equal(c[:, -2:], [[0, 1], [1, 0], [0, 1], [0, 0], [1, 0]])


@pytest.fixture(scope="module")
def v2_probe(organism_collections, tmp_path_factory):
    """A stacked probe (and its context-only baseline) trained and calibrated on the organism."""
    from lynx.calibrate.pipeline import calibrate
    from lynx.probe.train import ProbeTrainConfig, train_probe

    out = tmp_path_factory.mktemp("v2") / "probe"
    meta = train_probe(organism_collections["train"], out, ProbeTrainConfig(max_epochs=40, kind="stacked", target="harm"))
    rows = calibrate(out, organism_collections["calibration"], alphas=(0.1, 0.2))
    return out, meta, rows


@pytest.mark.slow  # the organism collections (built once per run, ~2 min) and a trained probe
def test_train_writes_a_stacked_probe_its_baseline_and_the_comparison(v2_probe):
    from lynx.exit_policy import ExitPolicy

    out, meta, rows = v2_probe
    assert meta["architecture"]["kind"] == "stacked" and meta["target"] == "harm"
    assert set(meta["selection"]["out_of_fold"]) == {"mlp", "stacked", "context-only"}
    assert set(meta["selection"]["test"]) == {"mlp", "stacked", "context-only"}
    for fig in meta["selection"]["out_of_fold"].values():
        assert 0.0 <= fig["saving"] <= 1.0 and fig["risk_measured"] <= 0.2  # CRC at 0.1 on held-out halves
    card = (out / "README.md").read_text()
    assert "Operating figures at alpha 0.1" in card and "context-only" in card
    policy = ExitPolicy.load(out)
    assert policy.probe.kind == "stacked" and policy.baselines["context-only"].probe.kind == "context-only"
    assert {r["scorer"] for r in rows} == {"probe", "context-only"}  # calibrate calibrated both
    assert policy.baselines["context-only"].is_calibrated
    with pytest.raises(InvalidInput, match="reads no hidden states"):
        policy.baselines["context-only"].probe(torch.zeros(1, 4))


@pytest.mark.slow  # the organism collections (built once per run, ~2 min) and a trained probe
def test_auto_keeps_v1_when_the_collection_predates_cue_words(organism_collections, tmp_path):
    """Without cue words (an older collection) auto trains the v1 MLP and says why no baseline."""
    import shutil

    import pyarrow.parquet as pq

    from lynx.probe.train import ProbeTrainConfig, train_probe

    old = tmp_path / "old"
    shutil.copytree(organism_collections["train"], old)
    for f in old.glob("shard-*.cues.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.drop(["cue_word", "token_position"]), f)
    meta = train_probe(old, tmp_path / "p", ProbeTrainConfig(max_epochs=20))
    assert meta["architecture"]["kind"] == "mlp" and not (tmp_path / "p" / "baselines").exists()
    with pytest.raises(InvalidInput, match="predates cue words"):
        train_probe(old, tmp_path / "q", ProbeTrainConfig(max_epochs=20, kind="stacked"))


def assert_online_equals_offline(policy, tok, problems, prompts, outs, records, scorer) -> int:
    """``records[i]``: the engine's recorded cues of row i (position, features, final score).
    Rebuild the cue rows as collection would (make_rollouts), score them offline with
    cue_scores, and compare; returns the number of cues compared."""
    from lynx.cues import CueMatcher
    from lynx.probe.scoring import cue_scores
    from lynx.rollouts import make_rollouts
    from lynx.store.cue_data import CueData

    matcher = CueMatcher(tok, cues=tuple(policy.cues))
    rolls = make_rollouts(tok, matcher, [p.problem_id for p in problems], [p.answer for p in problems], prompts, outs, [lambda a, b: a == b] * len(problems))
    feats, online, cols = [], [], {k: [] for k in ("problem_id", "cue_index", "thinking_position", "token_position", "cue_word")}
    for r, rec, o in zip(rolls, records, outs, strict=True):
        cps = [cp for cp in r.cue_points if cp.cue.position < len(r.prompt_ids) + len(o) - 1]  # the last token is never fed back in
        assert [pos for pos, _, _ in rec] == [cp.cue.position for cp in cps]  # the same cues online and offline
        for k, ((_pos, f, s), cp) in enumerate(zip(rec, cps, strict=True)):
            feats.append(np.asarray(f, np.float32).reshape(-1))
            online.append(s)
            for name, v in (
                ("problem_id", r.problem_id),
                ("cue_index", k),
                ("thinking_position", cp.thinking_position),
                ("token_position", cp.cue.position),
                ("cue_word", cp.cue.word),
            ):
                cols[name].append(v)
    n = len(online)
    data = CueData(
        features=np.stack(feats),
        label=np.ones(n, np.int8),
        problem_id=np.array(cols["problem_id"]),
        sample_id=np.zeros(n, int),
        cue_index=np.array(cols["cue_index"]),
        thinking_position=np.array(cols["thinking_position"]),
        thinking_tokens_total=np.zeros(n, int),
        final_correct=np.ones(n, bool),
        manifest={"cues": policy.cues},
        folder=policy.folder,
        token_position=np.array(cols["token_position"]),
        cue_word=np.array(cols["cue_word"]),
    )
    offline = cue_scores(policy.scorer(scorer).probe, data)
    np.testing.assert_allclose(online, offline, atol=2e-4, err_msg=scorer)  # float32 hidden states in a batch vs alone
    return n


@pytest.mark.slow  # the organism collections (built once per run, ~2 min) and a trained probe
def test_online_scores_equal_the_offline_scores_calibration_uses(v2_probe, organism):
    """The engine's final score at every cue (context and history kept per request) equals
    lynx.probe.scoring.cue_scores on the same cues' recorded hidden states and positions."""
    from lynx.engines.exit_control import ExitController
    from lynx.engines.hf_exit import generate_with_exit
    from lynx.exit_policy import ExitPolicy
    from lynx.organism.problems import sample_problems
    from lynx.prompting import chat_prompt

    out, _, _ = v2_probe
    lm, tok = organism
    policy = ExitPolicy.load(out)
    ctl = ExitController(policy.hook_config({"keep_events": True}), tok, policy)
    problems = sample_problems("test", 10, seed=11)
    prompts = [tok(chat_prompt(tok, p.text, suffix=policy.prompt_suffix), add_special_tokens=False)["input_ids"] for p in problems]
    for scorer in ("probe", "context-only"):
        args = [{"lynx_record": f"{scorer}{i}", "lynx_threshold": 2.0, "lynx_scorer": scorer} for i in range(len(prompts))]
        outs = generate_with_exit(lm, tok, prompts, ctl, args, max_new_tokens=300, temperature=0.6, top_p=0.95, seeds=list(range(10)))
        records = [ctl.events.take([f"{scorer}{i}"])[f"{scorer}{i}"][1] for i in range(len(prompts))]
        assert assert_online_equals_offline(policy, tok, problems, prompts, outs, records, scorer) >= 10


@pytest.mark.slow  # the organism collections (built once per run, ~2 min) and a trained probe
def test_a_request_for_a_missing_baseline_is_refused_alone(organism_probe, organism_tokenizer, tmp_path):
    import shutil

    from lynx.engines.exit_control import ExitController
    from lynx.exit_policy import ExitPolicy, RequestOptions

    with pytest.raises(InvalidInput, match="lynx_scorer must be one of"):
        RequestOptions.parse({"lynx_alpha": 0.1, "lynx_scorer": "oracle"})
    with pytest.raises(InvalidInput, match="without lynx_alpha"):
        RequestOptions.parse({"lynx_scorer": "context-only"})
    folder = tmp_path / "v1"
    shutil.copytree(organism_probe, folder)
    shutil.rmtree(folder / "baselines", ignore_errors=True)
    policy = ExitPolicy.load(folder)
    ctl = ExitController(policy.hook_config({"keep_events": True}), organism_tokenizer, policy)
    state = ctl.new_request({"lynx_threshold": 0.5, "lynx_scorer": "context-only", "lynx_tag": "t"}, [1, 2], [])
    assert state.disabled
    assert "no 'context-only' baseline" in ctl.events.take(["t"])["t"][0][0]["reason"]
    ok = ctl.new_request({"lynx_threshold": 0.5, "lynx_tag": "u"}, [1, 2], [])
    assert not ok.disabled  # the engine and other requests are untouched


@pytest.mark.slow  # the organism collections (built once per run, ~2 min) and a trained probe
def test_a_probe_folder_with_a_tampered_kind_is_refused(v2_probe, tmp_path):
    import shutil

    from lynx.probe.artifact import load_probe

    out, _, _ = v2_probe
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    meta = json.loads((bad / "probe.json").read_text())
    meta["architecture"]["kind"] = "mlp"  # claims v1 but carries a tree head
    (bad / "probe.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidInput, match="inconsistent"):
        load_probe(bad)


def test_a_steps_cues_are_scored_in_one_pass_exactly_as_each_alone(organism_tokenizer):
    """ExitController.final_scores batches a step's cues per probe (the shipped v2 probe and its
    context-only baseline, mixed in one step); every request's score and memory must be what
    scoring its cues one at a time gives, and a missing MLP score stays missing for that row only."""

    from lynx.engines.exit_control import ExitController
    from lynx.exit_policy import ExitPolicy

    policy = ExitPolicy.load(ORGANISM_PROBE_DIR)
    ctl = ExitController(policy.hook_config(), organism_tokenizer, policy)
    think = ctl.matcher.think_open_id
    words = list(policy.cues)
    rng = np.random.default_rng(0)

    def fresh(n):
        states = [ctl.new_request({"lynx_threshold": 2.0, "lynx_scorer": ("probe", "context-only")[i % 2]}, [5, 6, think][: 1 + i % 3], []) for i in range(n)]
        assert all(s.head is not None for s in states)
        return states

    batched, alone = fresh(6), fresh(6)
    for step in range(4):  # four steps, every request at a cue in each; rows 2 (probe) and 3 (baseline) have no MLP score at step 1
        pos = [10 + 20 * step + 3 * i for i in range(6)]
        mlp = rng.uniform(0.01, 0.99, 6).tolist()
        if step == 1:
            mlp[2] = mlp[3] = None
        for s, s2 in zip(batched, alone, strict=True):
            s.cue_word = s2.cue_word = words[int(rng.integers(len(words)))]
        got = ctl.final_scores(list(zip(batched, pos, strict=True)), mlp)
        one = [ctl.final_scores([(s, p)], [m])[0] for s, p, m in zip(alone, pos, mlp, strict=True)]
        if step == 1:
            assert got[2] is None and one[2] is None  # the probe row without its MLP score is left to decide() to disable
            assert got[3] is not None  # the context-only baseline needs no MLP score
        np.testing.assert_allclose([g for g in got if g is not None], [o for o in one if o is not None], rtol=0, atol=1e-12)
        assert [s.online.n_cues for s in batched] == [s.online.n_cues for s in alone]
        # the context-only baseline scores even without the MLP's score; the stacked probe does not
        assert all(0.0 < g < 1.0 for g in got if g is not None)


def test_train_refuses_trees_the_engine_cannot_hold(tmp_path):
    from lynx.probe.train import ProbeTrainConfig, train_probe

    with pytest.raises(InvalidInput, match=r"tree_leaves must be in \[2, 64\]"):
        train_probe(tmp_path / "no-data-read", tmp_path / "p", ProbeTrainConfig(tree_leaves=65))

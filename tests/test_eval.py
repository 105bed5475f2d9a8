"""``lynx eval``: the table's arithmetic, and every method's behaviour on the organism in vLLM
(paired with vanilla through per-request seeds) and transformers."""

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from lynx.cli import app
from lynx.evaluate.methods import Sample
from lynx.evaluate.table import acceptance, context_comparison, context_markdown, pareto_comparison, regret, row, to_markdown, wilson
from lynx.models import ORGANISM_PROBE_DIR

PROBE = ORGANISM_PROBE_DIR
runner = CliRunner()


def _s(correct, think, exited=False, extra=0):
    return Sample("p", [], None, correct, think, exited, extra)


def test_row_pairs_every_figure_with_vanilla():
    base = [_s(True, 100), _s(True, 100), _s(False, 100), _s(True, 100)]
    meth = [_s(True, 50, True), _s(False, 40, True), _s(True, 60, True), _s(True, 100)]
    r = row("lynx", "alpha=0.1", meth, base, 1.0, 0.1)
    assert r["accuracy"] == 0.75 and r["accuracy_vs_vanilla"] == 0.0
    assert r["premature_exit_rate"] == 0.25  # problem 2: vanilla right, lynx wrong; problem 3 (the reverse) is not premature
    assert (r["premature_ci_low"], r["premature_ci_high"]) == wilson(1, 4)
    (check,) = [m for name, _, m in acceptance(pd.DataFrame([row("vanilla", "", base, base, 1.0), r]), 0.1) if name.startswith("premature")]
    assert check.startswith("0.250 (95% ") and check.endswith(", n 4)")
    assert r["saving"] == pytest.approx(1 - 62.5 / 100) and r["exit_rate"] == 0.75 and r["median_thinking_tokens"] == 55
    lo, hi = wilson(3, 4)
    assert lo < 0.75 < hi and 0 <= lo and hi <= 1
    assert wilson(0, 10)[0] == pytest.approx(0, abs=1e-12) and wilson(10, 10)[1] == pytest.approx(1)


def test_pareto_interpolates_lynx_at_equal_tokens_and_acceptance_reads_the_rows():
    df = pd.DataFrame(
        [
            {
                "method": "vanilla",
                "setting": "",
                "alpha": None,
                "mean_thinking_tokens": 100.0,
                "accuracy": 0.8,
                "saving": 0.0,
                "premature_exit_rate": 0.0,
                "accuracy_vs_vanilla": 0.0,
                "accuracy_vs_vanilla_ci": 0.0,
            },
            {
                "method": "lynx",
                "setting": "a",
                "alpha": 0.1,
                "mean_thinking_tokens": 60.0,
                "accuracy": 0.78,
                "saving": 0.4,
                "premature_exit_rate": 0.05,
                "accuracy_vs_vanilla": -0.02,
                "accuracy_vs_vanilla_ci": 0.03,
            },
            {
                "method": "deer",
                "setting": "d",
                "alpha": None,
                "mean_thinking_tokens": 80.0,
                "accuracy": 0.7,
                "saving": 0.2,
                "premature_exit_rate": 0.1,
                "accuracy_vs_vanilla": -0.1,
                "accuracy_vs_vanilla_ci": 0.03,
            },
            {
                "method": "budget",
                "setting": "b",
                "alpha": None,
                "mean_thinking_tokens": 30.0,
                "accuracy": 0.2,
                "saving": 0.7,
                "premature_exit_rate": 0.6,
                "accuracy_vs_vanilla": -0.6,
                "accuracy_vs_vanilla_ci": 0.03,
            },
            {
                "method": "oracle",
                "setting": "o",
                "alpha": None,
                "mean_thinking_tokens": 50.0,
                "accuracy": 0.85,
                "saving": 0.5,
                "premature_exit_rate": 0.0,
                "accuracy_vs_vanilla": 0.05,
                "accuracy_vs_vanilla_ci": 0.03,
            },
        ]
    )
    cmp = {c["method"]: c for c in pareto_comparison(df)}
    assert cmp["deer"]["lynx_accuracy"] == pytest.approx(0.79) and cmp["deer"]["delta"] == pytest.approx(0.09)
    assert cmp["budget"]["lynx_accuracy"] is None  # cheaper than any lynx point: outside lynx's range
    checks = {name: ok for name, ok, _ in acceptance(df, 0.1)}
    assert checks == {"premature-exit rate <= 0.1": True, "accuracy >= vanilla - 0.1": True, "thinking-token saving >= 30%": True, "saving >= 70% of the oracle's": True}
    df.loc[df.method == "lynx", "saving"] = 0.3
    assert dict((n, ok) for n, ok, _ in acceptance(df, 0.1))["saving >= 70% of the oracle's"] is False


def test_context_comparison_pairs_lynx_with_the_baseline_problem_by_problem():
    """The hidden state's contribution comes with a paired interval: a difference the problems'
    own spread swamps is shown as such, and the acceptance line carries it."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 200
    base = [_s(True, 100) for _ in range(n)]
    think_c = rng.integers(20, 100, n)
    ly = [_s(True, int(t) - (3 if i % 2 else 0), True) for i, t in enumerate(think_c)]  # 1.5 tokens fewer on average, per problem
    co = [_s(True, int(t), True) for t in think_c]
    df = pd.DataFrame([row("vanilla", "", base, base, 1.0), row("lynx", "a", ly, base, 1.0, 0.1), row("context-only", "c", co, base, 1.0, 0.1)])
    (c,) = context_comparison(df, {("vanilla", None): base, ("lynx", 0.1): ly, ("context-only", 0.1): co}, base)
    assert c["saving_delta"] == pytest.approx(0.015)
    assert 0 < c["saving_delta_ci"] < 0.015  # paired: the shared per-problem spread cancels, the 1.5-point gain is resolved
    unpaired = 1.96 * np.sqrt(2 * np.var(think_c / 100.0, ddof=1) / n)
    assert c["saving_delta_ci"] < unpaired / 5
    assert "+1.5% ± " in context_markdown([c])
    (plain,) = context_comparison(df)  # no samples: the point figures only
    assert math.isnan(plain["saving_delta_ci"]) and "±" not in context_markdown([plain]).split("\n")[2]
    line = {n_: v for n_, _ok, v in acceptance(df, 0.1, [c])}["saving >= the context-only baseline's (the hidden state adds something)"]
    assert "difference +1.5% ± " in line


def test_regret_is_the_oracle_at_lynx_tokens_problem_by_problem():
    """The oracle may exit only at a cue lynx had already read (thinking tokens at most lynx's)
    or, where lynx did not exit, anywhere in the trace or at its end; lynx's own answer counts."""
    cases = [  # (lynx: correct, thinking, exited), (oracle: correct, thinking, exited), oracle at lynx's tokens right?
        ((True, 50, True), (True, 50, True), True),  # lynx exited right
        ((False, 50, True), (True, 40, True), True),  # a right cue before lynx's exit: regret
        ((False, 50, True), (True, 50, True), True),  # the same cue: its greedy forced answer right, lynx's sampled one wrong
        ((False, 50, True), (True, 80, True), False),  # the first right cue came after lynx's exit
        ((False, 50, True), (True, 100, False), False),  # only the full trace's answer is right: lynx had not read it
        ((False, 100, False), (True, 80, True), True),  # lynx never exited: any cue of the trace
        ((False, 100, False), (False, 100, False), False),  # no right cue, the trace's answer wrong
        ((True, 100, False), (True, 100, False), True),  # lynx never exited and the trace's answer is right
    ]
    for ly, orc, want in cases:
        r = regret([_s(*ly)], [_s(*orc)])
        assert r["oracle_at_lynx_tokens"] == float(want) and r["regret"] == float(want) - float(ly[0]), (ly, orc)
    ly, orc = [_s(*c[0]) for c in cases], [_s(*c[1]) for c in cases]
    r = regret(ly, orc)
    assert r == {"oracle_at_lynx_tokens": 5 / 8, "regret": 3 / 8}
    base = [_s(True, 100) for _ in cases]
    df = pd.DataFrame([row("vanilla", "full CoT", base, base, 1.0), row("lynx", "alpha=0.1", ly, base, 1.0, 0.1) | r])
    lines = to_markdown(df).splitlines()
    assert "oracle at its tokens (regret)" in lines[0] and "| 0.625 (+0.375) |" in lines[3] and "| - |" in lines[2]


def test_eval_refuses_bad_input_in_one_line():
    r = runner.invoke(app, ["eval", "--baselines", "vanilla,magic", "--probe", str(PROBE)])
    assert r.exit_code == 2 and "unknown baseline(s) ['magic']" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["eval", "--alphas", "0.1"])
    assert r.exit_code == 2 and "needs --probe" in r.output
    r = runner.invoke(app, ["eval", "--probe", str(PROBE), "--alphas", "2"])
    assert r.exit_code == 2 and "alpha must be strictly between 0 and 1" in r.output
    r = runner.invoke(app, ["demo", "--size", "huge"])
    assert r.exit_code == 2 and "unknown demo size 'huge'" in r.output


# --- vLLM: every method, paired with vanilla -------------------------------------------------

N = 32


@pytest.fixture(scope="module")
def vctx():
    pytest.importorskip("vllm", reason="the vLLM engine is an optional extra")
    from lynx.cues import CueMatcher
    from lynx.datasets import load
    from lynx.evaluate import build_backend
    from lynx.evaluate.methods import EvalContext
    from lynx.probe import load_probe
    from lynx.prompting import chat_prompt

    probe = load_probe(PROBE)
    backend = build_backend("vllm", "organism", str(PROBE))
    tok = backend.tokenizer
    recs = load("organism:test", n=N)
    prompts = [tok(chat_prompt(tok, r.question, suffix=probe.meta["prompt_suffix"]), add_special_tokens=False)["input_ids"] for r in recs]
    return EvalContext(
        backend,
        recs,
        prompts,
        [1_000_003 * 3 + i for i in range(N)],
        CueMatcher(tok, cues=tuple(probe.meta["cues"])),
        tok(probe.meta["exit_string"], add_special_tokens=False)["input_ids"],
        max_new_tokens=400,
    )


@pytest.fixture(scope="module")
def vanilla_v(vctx):
    from lynx.evaluate import methods as M

    return M.vanilla(vctx)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_vanilla_is_plain_vllm_and_lynx_follows_it_until_its_exit(vctx, vanilla_v):
    from lynx.engines.vllm_engine import generate_ids
    from lynx.evaluate import methods as M

    plain = generate_ids(vctx.backend.llm, vctx.prompts, max_new_tokens=400, temperature=0.6, top_p=0.95, seed=3)
    assert [s.generated for s in vanilla_v] == plain
    ly = M.lynx(vctx, 0.1)
    n_exit = 0
    for s, v in zip(ly, vanilla_v, strict=True):
        if not s.exited:
            assert s.generated == v.generated  # same seed, never exited: exactly vanilla
            continue
        n_exit += 1
        k = s.exit["output_tokens"]
        assert s.generated[:k] == v.generated[:k]  # same trace up to and including the cue ...
        assert s.generated[k : k + len(vctx.exit_ids)] == vctx.exit_ids  # ... then the exit string
        assert s.thinking_tokens <= v.thinking_tokens and s.exit["alpha"] == 0.1
    assert n_exit >= N // 3


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_oracle_and_budget(vctx, vanilla_v):
    from lynx.evaluate import methods as M

    orc = M.oracle(vctx, vanilla_v)
    assert all(s.correct for s in orc if s.exited) and any(s.exited for s in orc)
    assert all(o.thinking_tokens <= v.thinking_tokens for o, v in zip(orc, vanilla_v, strict=True))
    assert sum(o.correct for o in orc) >= sum(v.correct for v in vanilla_v)
    n = 80
    bud = M.budget(vctx, n)
    for b, v in zip(bud, vanilla_v, strict=True):
        assert b.thinking_tokens <= n + 1
        if v.thinking_tokens < n - 1:  # never reached the budget: vLLM left it alone
            assert b.generated == v.generated and not b.exited
    assert any(b.exited for b in bud)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_deer_and_dynasor_exit_only_at_their_decision_points(vctx, vanilla_v):
    from lynx.evaluate import methods as M

    always = M.deer(vctx, threshold=0.0)  # any parseable trial exits: DEER stops at its first cue
    for s in always:
        if s.exited:
            cut = _exit_at(s.generated, vctx.exit_ids)
            assert vctx.matcher.match_at(s.generated[:cut], cut - 1) is not None  # the token before the exit string is a cue
            assert s.extra_tokens > 0
    assert sum(s.exited for s in always) >= N // 2
    never = M.deer(vctx, threshold=1.01)
    assert not any(s.exited for s in never)
    dyn = M.dynasor(vctx, k=2, chunk=32)
    for s in dyn:
        if s.exited:
            assert _exit_at(s.generated, vctx.exit_ids) % 32 == 0  # probes only every 32 tokens
    assert any(s.exited for s in dyn)


def _exit_at(gen, exit_ids):
    """Index where the exit string starts (its last occurrence)."""
    for i in range(len(gen) - len(exit_ids), -1, -1):
        if gen[i : i + len(exit_ids)] == exit_ids:
            return i
    raise AssertionError("no exit string in an exited sample")


@pytest.mark.slow
@pytest.mark.vllm
def test_eval_cli_writes_table_plot_and_json(tmp_path):
    out = tmp_path / "ev"
    r = runner.invoke(
        app,
        [
            "eval",
            "--probe",
            str(PROBE),
            "--n-problems",
            "24",
            "--out",
            str(out),
            "--engine",
            "vllm",
            "--alphas",
            "0.1,0.2",
            "--deer-thresholds",
            "0.95",
            "--dynasor-k",
            "2",
            "--budgets",
            "60,120",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout.strip().splitlines()[-1])
    got = {(x["method"], x["setting"]) for x in recs}
    assert got == {
        ("vanilla", "full CoT"),
        ("lynx", "alpha=0.1"),
        ("lynx", "alpha=0.2"),
        ("context-only", "alpha=0.1"),
        ("context-only", "alpha=0.2"),
        ("oracle", "first right cue"),
        ("budget", "N=60"),
        ("budget", "N=120"),
        ("deer", "p>0.95"),
        ("dynasor", "k=2/32"),
    }
    for x in recs:
        assert 0 <= x["accuracy"] <= 1 and x["n"] == 24 and not math.isnan(x["mean_thinking_tokens"])
    assert all(x["exit_rate"] > 0 for x in recs if x["method"] == "lynx")  # the hook's audits reached the table
    for f in ("results.csv", "results.parquet", "results.md", "pareto.png", "samples.parquet", "eval.json"):
        assert (out / f).stat().st_size > 0
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 24 * len(recs)
    assert "## Acceptance at alpha = 0.1" in (out / "results.md").read_text()


# --- transformers ------------------------------------------------------------------------------


@pytest.mark.slow
def test_hf_eval_runs_every_method(tmp_path):
    from lynx.evaluate import EvalConfig, evaluate

    res = evaluate(
        EvalConfig(probe=str(PROBE), out=tmp_path / "hf", n_problems=6, alphas=(0.1,), engine="hf", budgets=(60,), deer_thresholds=(0.95,), dynasor_k=(2,), max_new_tokens=300)
    )
    df = res["table"]
    assert list(df.method) == ["vanilla", "lynx", "context-only", "oracle", "budget", "deer", "dynasor"]
    ctx = df[df.method == "context-only"].iloc[0]  # the baseline beside the shipped probe, at lynx's alpha
    assert ctx.alpha == 0.1 and ctx.n == 6
    assert (df.n == 6).all() and df.accuracy.between(0, 1).all()
    samples = pd.read_parquet(tmp_path / "hf" / "samples.parquet")
    assert (samples[samples.method == "budget"].thinking_tokens <= 61).all()
    orc = samples[samples.method == "oracle"]
    assert orc[orc.exited].correct.all()
    for m in ("lynx", "context-only"):  # the oracle at the policy's tokens: at least the policy's accuracy, at most 1
        r = df[df.method == m].iloc[0]
        assert r.accuracy <= r.oracle_at_lynx_tokens <= 1 and r.regret == pytest.approx(r.oracle_at_lynx_tokens - r.accuracy)
    assert df[~df.method.isin(["lynx", "context-only"])].regret.isna().all()
    assert "oracle at its tokens (regret)" in (tmp_path / "hf" / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.vllm
def test_a_killed_local_eval_resumes_its_finished_methods_and_equals_an_uninterrupted_one(vctx, tmp_path, monkeypatch):
    """A kill after some methods (here: the oracle fails) loses none of them: the rerun reads
    vanilla and lynx back (neither runs again) and its table and samples equal those of a run
    that was never interrupted. Other settings into the same folder start afresh, with a note."""
    from lynx.evaluate import EvalConfig, evaluate
    from lynx.evaluate import methods as M

    def cfg(out, **kw):
        return EvalConfig(probe=str(PROBE), out=out, n_problems=8, alphas=(0.1,), engine="vllm", baselines=("vanilla", "oracle"), max_new_tokens=400, **kw)

    whole = evaluate(cfg(tmp_path / "whole"), backend=vctx.backend)
    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        m.setattr(M, "oracle", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
        with pytest.raises(KeyboardInterrupt):
            evaluate(cfg(out), backend=vctx.backend)
    assert sorted(p.name for p in (out / "runs").glob("*.parquet")) == ["00-vanilla-full_CoT.parquet", "01-lynx-alpha=0.1.parquet"]
    assert not (out / "results.csv").exists()

    ran = []
    for name in ("vanilla", "lynx", "oracle"):
        real = getattr(M, name)
        monkeypatch.setattr(M, name, lambda *a, _real=real, _name=name, **k: ran.append(_name) or _real(*a, **k))
    resumed = evaluate(cfg(out), backend=vctx.backend)
    assert ran == ["oracle"] and resumed["meta"]["resumed_runs"] == 2
    cols = ["method", "setting", "accuracy", "mean_thinking_tokens", "saving", "exit_rate", "premature_exit_rate"]
    pd.testing.assert_frame_equal(resumed["table"][cols], whole["table"][cols])
    a, b = pd.read_parquet(out / "samples.parquet"), pd.read_parquet(tmp_path / "whole" / "samples.parquet")
    assert a.drop(columns=["exit"]).equals(b.drop(columns=["exit"]))

    def audit(x):  # the exit's audit record, without what differs between runs (its tag and clock)
        return None if not isinstance(x, str) else {k: v for k, v in json.loads(x).items() if k not in ("tag", "time")}

    assert [audit(x) for x in a.exit] == [audit(x) for x in b.exit] and a.exit.notna().any()

    ran.clear()
    other = evaluate(cfg(out, temperature=0.0), backend=vctx.backend)  # another evaluation: nothing reused
    assert ran == ["vanilla", "lynx", "oracle"] and "resumed_runs" not in other["meta"]

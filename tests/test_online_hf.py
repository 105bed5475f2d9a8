"""Online early exit in the transformers engine: untouched rows, exits, audit, consistency."""

import numpy as np
import pytest
import torch

from lynx.config import DEFAULT_EXIT
from lynx.cues import CueMatcher
from lynx.engines import hf
from lynx.engines.exit_control import ExitController
from lynx.engines.hf_exit import generate_with_exit
from lynx.layers import default_layers
from lynx.organism.problems import sample_problems
from lynx.probe.artifact import Probe
from lynx.prompting import chat_prompt


def random_probe(n_in: int, layers, seed: int = 0) -> Probe:
    g = torch.Generator().manual_seed(seed)
    w = [torch.randn(n_in, 16, generator=g) / n_in**0.5, torch.randn(16, 1, generator=g)]
    return Probe(torch.zeros(n_in), torch.ones(n_in), w, [torch.zeros(16), torch.zeros(1)], {"layers": list(layers)})


def _audits(ctl, tag):
    return ctl.events.take([tag])[tag][0]


def _records(ctl, tag):
    return ctl.events.take([tag])[tag][1]


@pytest.fixture(scope="module")
def setup(organism):
    lm, tok = organism
    layers = list(default_layers(lm.config.num_hidden_layers))
    probe = random_probe(len(layers) * lm.config.hidden_size, layers)
    problems = sample_problems("test", 8, seed=4)
    prompts = [tok(chat_prompt(tok, p.text), add_special_tokens=False)["input_ids"] for p in problems]
    ctl = ExitController({"exit_string": DEFAULT_EXIT, "keep_events": True}, tok)
    return lm, tok, layers, probe, prompts, ctl


@pytest.mark.slow  # generation (~3 s)
def test_rows_that_do_not_opt_in_are_untouched(setup):
    lm, tok, layers, probe, prompts, ctl = setup
    vanilla = hf.generate(lm, tok, prompts, max_new_tokens=400, temperature=0.6, top_p=0.95, seed=3)
    args = [{"lynx_threshold": 0.0, "lynx_tag": f"u{i}"} if i % 2 else None for i in range(len(prompts))]
    mixed = generate_with_exit(lm, tok, prompts, ctl, args, probe=probe, max_new_tokens=400, temperature=0.6, top_p=0.95, seed=3)
    for i in range(0, len(prompts), 2):
        assert mixed[i] == vanilla[i]
    exit_ids = tok(DEFAULT_EXIT, add_special_tokens=False)["input_ids"]
    exited = 0
    for i in range(1, len(prompts), 2):
        audit = _audits(ctl, f"u{i}")
        if audit:
            exited += 1
            a = audit[0]
            cut = a["output_tokens"]  # the cue is the last token before the exit string
            assert mixed[i][cut : cut + len(exit_ids)] == exit_ids
            assert {"cue_position", "score", "threshold", "alpha", "mode"} <= set(a)
            assert len(mixed[i]) < len(vanilla[i]) or mixed[i] != vanilla[i]
    assert exited >= 2  # threshold 0: every trace with a cue exits at its first one


@pytest.mark.slow  # generation (~4 s)
def test_hooked_features_equal_offline_hidden_states_and_replay(setup):
    """Greedy: the states the hook scores are the collection's states, and the online exit
    happens at the same cue as an offline replay of the vanilla trace."""
    lm, tok, layers, probe, prompts, ctl = setup
    matcher = CueMatcher(tok)
    vanilla = hf.generate(lm, tok, prompts, max_new_tokens=300)
    args = [{"lynx_record": f"rec{i}"} for i in range(len(prompts))]
    again = generate_with_exit(lm, tok, prompts, ctl, args, probe=probe, max_new_tokens=300)
    assert again == vanilla  # recording never changes the output
    seqs = [p + v for p, v in zip(prompts, vanilla, strict=True)]
    cue_pos = [[c.position for c in matcher.find(s, start=len(p))] for s, p in zip(seqs, prompts, strict=True)]
    n_cues = 0
    for i, (s, pos) in enumerate(zip(seqs, cue_pos, strict=True)):
        rec = _records(ctl, f"rec{i}")
        assert [r[0] for r in rec] == pos
        if pos:
            offline = hf.hidden_states_at(lm, [s], [pos], layers)[0].reshape(len(pos), -1)
            online = np.stack([r[1] for r in rec])
            np.testing.assert_allclose(online, offline, atol=2e-5)
            n_cues += len(pos)
    assert n_cues >= 3
    # replay: each trace exits at its first cue whose offline score clears the threshold
    all_scores = {}
    for i, (s, pos) in enumerate(zip(seqs, cue_pos, strict=True)):
        if pos:
            feats = torch.from_numpy(hf.hidden_states_at(lm, [s], [pos], layers)[0].reshape(len(pos), -1))
            all_scores[i] = probe(feats).numpy()
    # a threshold in the middle of the scores, half-way between two of them, so that no cue sits on it
    # (online and offline scores agree to ~1e-6, not bit for bit)
    ss = np.sort(np.concatenate(list(all_scores.values())))
    k = max(range(len(ss) // 4, max(len(ss) // 4 + 1, 3 * len(ss) // 4)), key=lambda j: ss[j + 1] - ss[j])
    assert ss[k + 1] - ss[k] > 1e-4
    t = float(ss[k] + ss[k + 1]) / 2
    args = [{"lynx_threshold": t, "lynx_tag": f"rp{i}"} for i in range(len(prompts))]
    generate_with_exit(lm, tok, prompts, ctl, args, probe=probe, max_new_tokens=300)
    for i, pos in enumerate(cue_pos):
        audit = _audits(ctl, f"rp{i}")
        expect = next((p for p, sc in zip(pos, all_scores.get(i, []), strict=True) if sc >= t), None)
        assert (audit[0]["cue_position"] - len(prompts[i]) if audit else None) == (expect - len(prompts[i]) if expect is not None else None)


@pytest.mark.slow  # generation (~4 s each)
@pytest.mark.parametrize("fault", ["wrong_width", "nan"])
def test_a_failing_probe_disables_lynx_and_never_aborts_generation(setup, fault):
    """Safety, as in the vLLM hook: a probe that raises (wrong input width) or returns NaN
    switches lynx off for the rows at a cue, with a ``disabled`` audit entry; generation goes
    on and every row's output is the plain one (threshold 0 would otherwise exit at once)."""
    lm, tok, layers, probe, prompts, ctl = setup
    vanilla = hf.generate(lm, tok, prompts, max_new_tokens=300, temperature=0.6, top_p=0.95, seed=5)
    d = probe.input_dim
    if fault == "wrong_width":
        broken = Probe(torch.zeros(d + 1), torch.ones(d + 1), [torch.ones(d + 1, 1)], [torch.zeros(1)], probe.meta)
    else:
        broken = Probe(torch.zeros(d), torch.ones(d), [torch.full((d, 1), float("nan"))], [torch.zeros(1)], probe.meta)
    args = [{"lynx_threshold": 0.0, "lynx_tag": f"hf-{fault}{i}"} if i % 2 else None for i in range(len(prompts))]
    out = generate_with_exit(lm, tok, prompts, ctl, args, probe=broken, layers=layers, max_new_tokens=300, temperature=0.6, top_p=0.95, seed=5)
    assert out == vanilla
    audits = [_audits(ctl, f"hf-{fault}{i}") for i in range(1, len(prompts), 2)]
    assert sum(1 for a in audits if a) >= 2
    assert all(e["event"] == "disabled" and "probe score" in e["reason"] for a in audits for e in a)

"""The wrapper model's two hand-offs of the probe's layers to compute_logits ("output": packed
into the model output; "direct": by reference, gathered at ``query_start_loc[r + 1] - 1``)
give every logits row the same features and the lm_head the same final state, for any
layer choice, with prefill chunks in the batch. A stand-in base model replaces vLLM's, so
this pins the layout logic itself; tests/test_vllm_lynx.py runs both inside vLLM."""

import pytest
import torch

from lynx.engines.vllm_plugin import model
from lynx.engines.vllm_plugin.worker_state import StepFeatures, StepHandoff

H, L = 8, 4


class _Config:
    num_hidden_layers, hidden_size = L, H


class _Base:
    """vLLM's model with ``set_aux_hidden_state_layers``: (final, [aux in sorted order]) or final."""

    states: dict[int, torch.Tensor]

    def forward(self):
        final = self.states[L]
        return (final, [self.states[x] for x in self.lynx_aux]) if self.lynx_aux else final

    def compute_logits(self, hidden_states):
        return hidden_states  # what the lm_head would receive


class _Wrapper(model._LynxMixin, _Base):
    def __init__(self, layers, handoff, probe=None, probe_rows="cues"):
        self.lynx_n_layers, self.lynx_hidden, self.lynx_layers = _Config.num_hidden_layers, _Config.hidden_size, layers
        self.lynx_aux = tuple(sorted({x for x in layers if x != L}))
        self.lynx_probe, self._lynx_device_probe, self.lynx_probe_rows, self.lynx_handoff = probe, None, probe_rows, handoff
        self.lynx_handoff_state = StepHandoff()


QUERY_LENS = [5, 1, 3, 1]  # two prefill chunks and two decode rows
QSL = torch.tensor([0, 5, 6, 9, 10])
LOGITS_INDICES = QSL[1:] - 1  # the runner's rule without speculative decoding


def _run(wrapper, qsl, monkeypatch):
    g = torch.Generator().manual_seed(0)
    wrapper.states = {x: torch.randn(int(QSL[-1]), H, generator=g) for x in range(L + 1)}
    monkeypatch.setattr(model, "_query_start_loc", lambda: qsl)
    out = wrapper.forward()
    final = wrapper.compute_logits(out[LOGITS_INDICES])  # the runner's selection, then compute_logits
    return wrapper.lynx_handoff_state, wrapper.states, out, final


@pytest.mark.parametrize("layers", [[1, 2, 4], [3, 1], [4], [2]])
@pytest.mark.parametrize("handoff", ["output", "direct"])
def test_both_handoffs_give_each_logits_row_its_features(layers, handoff, monkeypatch):
    shared, states, out, final = _run(_Wrapper(layers, handoff), QSL, monkeypatch)
    torch.testing.assert_close(final, states[L][LOGITS_INDICES])
    expected = torch.cat([states[x][LOGITS_INDICES] for x in layers], dim=-1)
    feats = shared.features_for(len(QUERY_LENS))
    assert feats is not None and feats.shape == expected.shape
    torch.testing.assert_close(feats.dense(), expected)
    torch.testing.assert_close(feats[[3, 0]], expected[[3, 0]])
    torch.testing.assert_close(feats[2], expected[2])
    # direct: the model output is the base model's own (no copy per token); output: packed
    packed = handoff == "output" and layers != [L]
    assert out.shape[-1] == (H * (len(layers) + (L not in layers)) if packed else H)


def test_direct_falls_back_to_the_packed_output_without_attention_metadata(monkeypatch):
    shared, states, out, final = _run(_Wrapper([3, 1], "direct"), None, monkeypatch)
    assert out.shape[-1] == 3 * H and shared.layer_states is None
    torch.testing.assert_close(final, states[L][LOGITS_INDICES])
    torch.testing.assert_close(shared.features.dense(), torch.cat([states[3], states[1]], -1)[LOGITS_INDICES])


def test_padded_query_start_loc_reads_the_real_rows(monkeypatch):
    """Padded requests (no tokens) come after the real ones; their entries are ignored."""
    padded = torch.cat([QSL, QSL[-1:].repeat(3)])
    shared, states, _, _ = _run(_Wrapper([1, 4], "direct"), padded, monkeypatch)
    torch.testing.assert_close(shared.features.dense(), torch.cat([states[1], states[4]], -1)[LOGITS_INDICES])


def test_layers_of_another_step_are_never_scored(monkeypatch):
    """A query_start_loc with fewer rows than the logits (not this step's): no features, so
    the processor leaves the logits alone and the requests at a cue are disabled."""
    shared, _, _, _ = _run(_Wrapper([1, 4], "direct"), QSL[:3], monkeypatch)
    assert shared.features is None and shared.features_for(len(QUERY_LENS)) is None


def test_dense_scores_every_row_with_either_handoff(monkeypatch):
    from lynx.probe.artifact import Probe

    d = 2 * H
    g = torch.Generator().manual_seed(2)
    probe = Probe(
        torch.zeros(d), torch.ones(d), [torch.randn(d, 4, generator=g), torch.randn(4, 1, generator=g)], [torch.zeros(4), torch.zeros(1)], {"layers": [2, 4], "hidden_size": H}
    )
    got = {}
    for handoff in ("output", "direct"):
        shared, states, _, _ = _run(_Wrapper([2, 4], handoff, probe=probe, probe_rows="all"), QSL, monkeypatch)
        got[handoff] = shared.scores.clone()
        assert shared.scores_for([1, 3], len(QUERY_LENS)) == got[handoff][[1, 3]].tolist()
    expected = probe(torch.cat([states[2], states[4]], -1)[LOGITS_INDICES])
    torch.testing.assert_close(got["output"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["direct"], expected, rtol=1e-5, atol=1e-6)


def test_rows_whose_latest_token_is_watched_are_found_from_the_input_ids():
    """The processor's row table: logits row r is watched iff the token at
    query_start_loc[r + 1] - 1 (its latest) is marked; padded entries are ignored."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 50, (int(QSL[-1]),), generator=g)
    watched = torch.zeros(50, dtype=torch.bool)
    latest = ids[LOGITS_INDICES]
    watched[latest[[0, 2]]] = True  # rows 0 and 2 (and any other row sharing their tokens)
    expected = [r for r in range(len(QUERY_LENS)) if watched[latest[r]]]
    padded = torch.cat([QSL, QSL[-1:].repeat(3)])
    feats = StepFeatures([(torch.zeros(len(QUERY_LENS), H), False)], len(QUERY_LENS), padded, ids)
    assert feats.rows_with_last_token_in(watched) == expected and {0, 2} <= set(expected)
    assert StepFeatures.of(torch.zeros(4, H)).rows_with_last_token_in(watched) is None  # ids unknown

"""The probe artifact: torch scoring equals scikit-learn, safetensors round trip, refusals."""

import json

import numpy as np
import pytest
import torch

from lynx.probe import ProbeModelMismatch, load_probe, score
from lynx.probe.train import ProbeTrainConfig, fit_mlp, split_problems, to_probe


def _toy(n=600, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.1, 10, size=d).astype(np.float32) + 3
    y = ((X[:, 0] - 3) / 5 + 0.5 * rng.normal(size=n) > 0.3).astype(int)
    return X, y


def test_torch_scores_equal_sklearn():
    X, y = _toy()
    scaler, clf, history = fit_mlp(X[:400], y[:400], X[400:500], y[400:500], ProbeTrainConfig(hidden_layer_sizes=(32, 16), max_epochs=30))
    probe = to_probe(scaler, clf, {})
    want = clf.predict_proba(scaler.transform(X[500:]))[:, 1]
    got = score(probe, torch.from_numpy(X[500:])).numpy()
    assert np.max(np.abs(got - want)) <= 1e-5
    assert len(history) >= 1


def test_early_stopping_keeps_best_validation_loss():
    X, y = _toy(seed=1)
    cfg = ProbeTrainConfig(hidden_layer_sizes=(64,), max_epochs=80, patience=3, learning_rate=1e-2)
    scaler, clf, history = fit_mlp(X[:300], y[:300], X[300:], y[300:], cfg)
    assert len(history) < cfg.max_epochs  # stopped early ...
    assert min(history[-cfg.patience :]) > min(history[: -cfg.patience]) - 1e-4  # ... after `patience` epochs without gain
    from lynx.probe.train import _log_loss, _weights

    kept = _log_loss(clf.predict_proba(scaler.transform(X[300:]))[:, 1], y[300:], _weights(y[300:], True))
    assert kept == pytest.approx(min(history), abs=1e-9)  # the best epoch's weights are the ones kept


def test_split_problems_is_disjoint_and_complete():
    ids = np.array([f"p{i}" for i in range(100)])
    a, b, c = split_problems(ids, (0.2, 0.15), seed=3)
    assert (len(a), len(b), len(c)) == (20, 15, 65)
    assert set(a) | set(b) | set(c) == set(ids) and not (set(a) & set(b) or set(a) & set(c) or set(b) & set(c))


@pytest.mark.slow
def test_trained_probe_folder(organism_probe, organism_collections):
    probe = load_probe(organism_probe)
    meta = json.loads((organism_probe / "probe.json").read_text())
    assert meta["model"] == "organism" and meta["layers"] == probe.layers
    assert (organism_probe / "README.md").read_text().startswith("# lynx probe")
    assert (organism_probe / "reliability.png").stat().st_size > 1000
    # held-out problems exist and the probe ranks them better than chance
    assert meta["metrics"]["test"]["n_problems"] >= 20 and meta["metrics"]["test"]["auc"] > 0.6
    # the artifact holds no pickle: the weights file is safetensors (JSON header + raw tensors)
    raw = (organism_probe / "probe.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_len])  # parses as the safetensors JSON header
    with pytest.raises(ProbeModelMismatch, match="fingerprint"):
        probe.check_model("0" * 16, "some other model")


@pytest.mark.slow
def test_corrupt_and_missing_probe_files(organism_probe, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(organism_probe, bad)
    (bad / "probe.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="corrupt"):
        load_probe(bad)
    (bad / "probe.json").unlink()
    with pytest.raises(FileNotFoundError, match="probe.json is missing"):
        load_probe(bad)


def test_device_probe_equals_score():
    """The engine's folded, fused probe is the same function as the artifact's scoring."""
    from lynx.probe.artifact import DeviceProbe, Probe

    g = torch.Generator().manual_seed(0)
    d = 24
    probe = Probe(
        torch.randn(d, generator=g),
        torch.rand(d, generator=g) + 0.5,
        [torch.randn(d, 16, generator=g), torch.randn(16, 8, generator=g), torch.randn(8, 1, generator=g)],
        [torch.randn(16, generator=g), torch.randn(8, generator=g), torch.randn(1, generator=g)],
        {"layers": [1]},
    )
    x = torch.randn(50, d, generator=g) * 3
    torch.testing.assert_close(DeviceProbe(probe)(x), score(probe, x), rtol=1e-5, atol=1e-6)
    assert DeviceProbe(probe)(x[:1]).shape == (1,)

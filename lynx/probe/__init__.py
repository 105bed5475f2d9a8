"""The probe: a small MLP on cue-token hidden states that predicts "safe to exit here"."""

from lynx.probe.artifact import Probe, ProbeModelMismatch, load_probe, score

__all__ = ["Probe", "ProbeModelMismatch", "load_probe", "score"]

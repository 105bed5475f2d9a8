"""The settings of every stage, and the one place their defaults live.

Why one module: collection, calibration, serving and evaluation must agree on how rollouts
are sampled and which risk levels are reported, or a probe is calibrated under other
conditions than it is served under. Every stage's function and every command-line option
reads its default from these dataclasses (``CollectConfig.temperature``,
``CalibrateConfig.alphas``, ...); nothing else spells a default out. The module is light
(no torch, no engine) so the command line can read it at start-up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from lynx.cues import DEFAULT_CUES
from lynx.prompting import INSTRUCTION

#: Appended after a cue token to force an exit: close thinking, open the boxed answer.
#: The organism was trained to answer after exactly this string; for real models it is the
#: natural continuation their chat formats end with.
DEFAULT_EXIT = "\n</think>\n\nFinal answer: \\boxed{"


def rollout_seed(seed: int, problem_id: str, sample: int) -> int:
    """The random seed of one rollout: a function of (run seed, problem, sample) only.

    Why: a rollout must not depend on which batch, shard, resume point or worker generated it,
    so that a resumed, re-batched or distributed collection has exactly the rows of an
    uninterrupted one. Both engines seed each request (vLLM) or row (transformers) with it.
    """
    digest = hashlib.sha256(f"{seed}\0{problem_id}\0{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


#: how collections seed their rollouts (recorded in the manifest: a folder is only resumed
#: under the scheme that wrote it)
SEEDING = "per-rollout-sha256-v1"


@dataclass(frozen=True)
class Sampling:
    """How a reasoning model is sampled: LYNX's defaults (temperature 0.6, top-p 0.95), the
    thinking budget, and the seed every per-problem seed derives from."""

    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 0


@dataclass
class CollectConfig:
    """``lynx collect``: which model and problems, which layers and cues, how to sample."""

    model: str
    dataset: str
    out: Path
    layers: str | None = None
    cues: tuple[str, ...] = DEFAULT_CUES
    engine: str = "hf"
    n_problems: int | None = None
    samples_per_problem: int = 1
    max_new_tokens: int = Sampling.max_new_tokens
    temperature: float = Sampling.temperature
    top_p: float = Sampling.top_p
    seed: int = Sampling.seed
    exit_string: str = DEFAULT_EXIT
    answer_tokens: int = 64
    shard_size: int = 64
    batch_size: int = 64
    question_field: str | None = None
    answer_field: str | None = None
    prompt_suffix: str = INSTRUCTION
    labels: str = "auto"  # one of LABELS


@dataclass
class ProbeTrainConfig:
    """``lynx train``: the MLP probe and its problem-grouped splits."""

    hidden_layer_sizes: tuple[int, ...] = (256, 64)
    learning_rate: float = 1e-3
    l2: float = 1e-4
    batch_size: int = 200
    max_epochs: int = 200
    patience: int = 10
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    class_balanced: bool = True
    seed: int = 0


@dataclass(frozen=True)
class CalibrateConfig:
    """``lynx calibrate``: the guarantee stored as the probe's default, and the risk levels the
    report shows (any alpha can be asked for later)."""

    alphas: tuple[float, ...] = (0.05, 0.1, 0.2)
    mode: str = "per-problem"
    method: str = "crc"
    risk: str = "premature"  # with gold labels; agreement-labelled data defaults to AGREEMENT_RISK
    delta: float = 0.1
    n_splits: int = 100
    #: what a request outside every calibrated condition gets (lynx.calibrate.conditions.FALLBACKS)
    fallback: str = "conservative"


#: the risk of a calibration without gold answers (and of ``lynx recalibrate``)
AGREEMENT_RISK = "answer-change"
#: how ``lynx collect`` labels a cue: auto = gold when the dataset has answers, else agreement
LABELS = ("auto", "gold", "agreement")


@dataclass(frozen=True)
class RunConfig:
    """``lynx run`` / :func:`lynx.generate`: the model, the engine and how to sample."""

    model: str = "organism"
    engine: str = "hf"
    max_new_tokens: int = Sampling.max_new_tokens
    temperature: float = Sampling.temperature
    top_p: float = Sampling.top_p
    seed: int = Sampling.seed
    batch_size: int = 64


#: every method ``lynx eval`` can compare lynx with
BASELINES = ("vanilla", "budget", "deer", "dynasor", "oracle")


@dataclass
class EvalConfig:
    """``lynx eval``: lynx and the baselines on the same problems, sampling and seeds."""

    model: str = "organism"
    probe: str | None = None
    dataset: str = "organism:test"
    out: Path = Path("runs/eval")
    n_problems: int | None = 300
    alphas: tuple[float, ...] = CalibrateConfig.alphas
    baselines: tuple[str, ...] = BASELINES
    budgets: tuple[int, ...] | None = None  # default: 25/50/75% of vanilla's mean thinking
    deer_thresholds: tuple[float, ...] = (0.9, 0.95, 0.99)
    dynasor_k: tuple[int, ...] = (2, 3)
    dynasor_chunk: int = 32
    engine: str = "auto"
    temperature: float = Sampling.temperature
    top_p: float = Sampling.top_p
    max_new_tokens: int = Sampling.max_new_tokens
    seed: int = Sampling.seed
    question_field: str | None = None
    answer_field: str | None = None
    domain: str | None = None  # the calibrated condition's domain tag lynx's requests ask for
    fallback: str = CalibrateConfig.fallback
    title: str | None = None
    extra: dict = field(default_factory=dict)

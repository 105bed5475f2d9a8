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
from typing import overload

from lynx.cues import DEFAULT_CUES
from lynx.prompting import INSTRUCTION
from lynx.thinking import FORMATS

#: Appended after a cue token to force an exit: close thinking, open the boxed answer.
#: The organism was trained to answer after exactly this string; for real models it is the
#: natural continuation their chat formats end with.
DEFAULT_EXIT = FORMATS["think"].exit_string


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
    exit_string: str | None = None  # None: the thinking format's (DEFAULT_EXIT for <think>)
    thinking: str | None = None  # a format name or "OPEN,CLOSE" (lynx.thinking); None: detected from the chat template
    answer_tokens: int = 64
    shard_size: int = 64
    batch_size: int = 64
    question_field: str | None = None
    answer_field: str | None = None
    prompt_suffix: str = INSTRUCTION
    labels: str = "auto"  # one of LABELS


@dataclass
class ProbeTrainConfig:
    """``lynx train``: the probe (v1 MLP or v2 stacked), its target, its problem-grouped
    splits, and the context-only baseline trained beside it."""

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
    kind: str = "auto"  # mlp (v1) | stacked (v2) | auto: the better at the operating point (see select_alpha)
    target: str = "safe"  # safe: the forced answer is right | harm: exiting does not turn a right full answer wrong
    baseline: bool = True  # also train the context-only baseline (baselines/context-only)
    select_alpha: float = 0.1  # auto: compare kinds by the saving CRC allows at this alpha, on out-of-fold scores
    folds: int = 5  # problem-grouped folds for out-of-fold scores (stacking, selection)
    # the tree head (HistGradientBoosting), regularised: on the organism's 340 training problems it
    # is what let the stacked head match the context-only one (docs/train-calibrate.md)
    tree_iterations: int = 150
    tree_learning_rate: float = 0.05
    tree_leaves: int = 7
    tree_min_leaf: int = 40
    tree_l2: float = 1.0


PROBE_KINDS = ("auto", "mlp", "stacked")
TARGETS = ("safe", "harm")
#: the baselines ``lynx train`` writes under ``<probe>/baselines/`` and ``lynx eval`` can run
PROBE_BASELINES = ("context-only",)


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


#: what a monitor does when its alarm fires (lynx.monitor): log it, serve the most conservative
#: calibrated threshold until the alarm clears, or recalibrate on the latest audited requests
RESPONSES = ("warn", "conservative", "recalibrate")


@dataclass(frozen=True)
class MonitorConfig:
    """The live monitor of an engine (``HookConfig.monitor`` / ``--monitor``; see :mod:`lynx.monitor`).

    ``audit_fraction`` of the requests that ask for lynx at some alpha are *shadow audits*:
    they run to the end without exiting, and their cues are labelled afterwards by agreement
    (no gold answer). ``test_level`` bounds the chance of a false alarm of each test over
    the whole stream (time-uniformly): the risk alarm (split over ``alphas``) and the drift
    alarm, each."""

    audit_fraction: float = 0.05
    seed: int = 0  # audits are chosen by a seeded hash of the request (its tag, else its prompt and seed)
    alphas: tuple[float, ...] = CalibrateConfig.alphas  # the risk levels whose live risk is bounded
    test_level: float = 0.05
    tolerance: float = 0.0  # margin over the calibration's upper bound before the risk alarm fires
    risk_horizon: int = 200  # audits at which the live risk bound is tightest (any value keeps it valid)
    response: str = "warn"  # one of RESPONSES
    min_audits: int = 40  # audited requests since the alarm before ``recalibrate`` calibrates on them
    window: int = 400  # at most this many latest audits are kept (and calibrated on)
    answer_tokens: int = 64  # budget of each forced-exit answer (as lynx collect)
    drift_bins: int = 4096  # the drift statistic (a thinking position) is counted exactly below this, lumped above (bounded memory)
    grader: str = "math"  # how forced answers are compared with the request's own: math, integer (organism), choice


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
BASELINES = ("vanilla", "budget", "deer", "dynasor", "oracle", "context-only")


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
    monitor: dict | None = None  # a live monitor on lynx's requests (MonitorConfig settings)
    audit_path: str | None = None  # the engine's audit file (and the monitor's log)
    title: str | None = None
    extra: dict = field(default_factory=dict)


@overload
def parse_monitor(settings: dict | MonitorConfig) -> MonitorConfig: ...
@overload
def parse_monitor(settings: dict | MonitorConfig | None) -> MonitorConfig | None: ...
def parse_monitor(settings: dict | MonitorConfig | None) -> MonitorConfig | None:
    """A monitor's settings, checked (an unknown key or a bad value is one clear error)."""
    from dataclasses import fields

    from lynx.errors import InvalidInput

    if settings is None or isinstance(settings, MonitorConfig):
        return settings
    if not isinstance(settings, dict):
        raise InvalidInput(f"the lynx monitor settings must be a JSON object, got {type(settings).__name__}")
    known = {f.name for f in fields(MonitorConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InvalidInput(f"unknown lynx monitor setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    d = dict(settings)
    if "alphas" in d and isinstance(d["alphas"], (list, tuple)):
        d["alphas"] = tuple(d["alphas"])
    cfg = MonitorConfig(**d)

    def number(name, lo, hi, integer=False):
        v = getattr(cfg, name)
        ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float)) and lo <= v <= hi
        if not ok:
            raise InvalidInput(f"lynx monitor {name} must be {'an integer' if integer else 'a number'} in [{lo}, {hi}], got {v!r}")

    number("audit_fraction", 0.0, 1.0)
    number("test_level", 1e-9, 0.5)
    number("tolerance", 0.0, 1.0)
    number("seed", 0, 2**63 - 1, integer=True)
    number("min_audits", 1, 10**7, integer=True)
    number("risk_horizon", 1, 10**9, integer=True)
    number("window", 1, 10**7, integer=True)
    number("answer_tokens", 1, 10**6, integer=True)
    number("drift_bins", 2, 10**6, integer=True)
    if not (isinstance(cfg.alphas, tuple) and cfg.alphas and all(not isinstance(a, bool) and isinstance(a, (int, float)) and 0 < a < 1 for a in cfg.alphas)):
        raise InvalidInput(f"lynx monitor alphas must be a non-empty list of numbers strictly between 0 and 1, got {cfg.alphas!r}")
    if cfg.response not in RESPONSES:
        raise InvalidInput(f"lynx monitor response must be one of {', '.join(RESPONSES)}, got {cfg.response!r}")
    if cfg.grader not in ("math", "integer", "choice"):
        raise InvalidInput(f"lynx monitor grader must be math, integer or choice, got {cfg.grader!r}")
    if cfg.min_audits > cfg.window:
        raise InvalidInput(f"lynx monitor min_audits ({cfg.min_audits}) cannot exceed window ({cfg.window})")
    return cfg

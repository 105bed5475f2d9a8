"""``lynx recalibrate``: get the promise back for a deployment's condition, without gold answers.

Why a command of its own: a probe is trained once per model and reused at other sampling
temperatures and on other kinds of prompts, where its calibration no longer holds (the
demo's probe, calibrated at T = 0.6, exits prematurely 14% of the time at alpha 0.1 when
served at T = 1.0). Real traffic has no gold answers, so recalibration labels each cue by
*agreement*: does exiting there give the answer the same trace reaches when it thinks to the
end? Calibrating the answer-change risk on those labels needs no gold, and controls the
premature-exit rate too (see ``lynx.calibrate.policy.GOLD_RISKS``).

One call = ``lynx collect`` with the probe's model, layers, cues, exit string and prompt
format, agreement labels, at the deployment's temperature (resumable, with progress) +
``lynx calibrate`` of that collection, stored as a new condition of the probe folder (the
others are kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lynx.calibrate.conditions import Condition, check_domain
from lynx.calibrate.pipeline import calibrate
from lynx.calibrate.procedures import METHODS, check_alpha
from lynx.config import AGREEMENT_RISK, CalibrateConfig, CollectConfig, Sampling
from lynx.errors import InvalidInput
from lynx.exit_policy import ExitPolicy
from lynx.models import resolve_probe_folder


@dataclass
class RecalibrateConfig:
    """What ``lynx recalibrate`` collects and how it calibrates (defaults: one source, config.py)."""

    probe: Path
    prompts: str  # a dataset spec: a .jsonl of prompts (answers not needed), organism:<split>, a hub id
    temperature: float
    domain: str | None = None
    n_problems: int | None = None
    work: Path | None = None  # the collection folder (default: next to the probe folder)
    engine: str = CollectConfig.engine
    top_p: float = Sampling.top_p
    max_new_tokens: int = Sampling.max_new_tokens
    seed: int = Sampling.seed
    samples_per_problem: int = CollectConfig.samples_per_problem
    batch_size: int = CollectConfig.batch_size
    shard_size: int = CollectConfig.shard_size
    question_field: str | None = None
    alphas: tuple[float, ...] = CalibrateConfig.alphas
    method: str = CalibrateConfig.method
    delta: float = CalibrateConfig.delta
    n_splits: int = CalibrateConfig.n_splits

    def condition(self) -> Condition:
        return Condition(self.temperature, check_domain(self.domain))

    def work_folder(self) -> Path:
        """Default: ``<probe>-recalibration/<condition>`` (collections hold hidden states: they do
        not belong in the probe folder, which ships)."""
        probe = resolve_probe_folder(self.probe)
        return Path(self.work) if self.work else probe.parent / f"{probe.name}-recalibration" / self.condition().key


def collect_config(cfg: RecalibrateConfig, policy: ExitPolicy) -> CollectConfig:
    """The collection that measures ``cfg``'s condition for ``policy``'s probe: its model, layers,
    cues, exit string and prompt format, agreement labels."""
    return CollectConfig(
        model=policy.model,
        dataset=cfg.prompts,
        out=cfg.work_folder(),
        layers=",".join(map(str, policy.layers)),
        cues=tuple(policy.cues),
        engine=cfg.engine,
        n_problems=cfg.n_problems,
        samples_per_problem=cfg.samples_per_problem,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
        exit_string=policy.exit_string,
        shard_size=cfg.shard_size,
        batch_size=cfg.batch_size,
        question_field=cfg.question_field,
        prompt_suffix=policy.prompt_suffix,
        labels="agreement",
    )


def recalibrate(cfg: RecalibrateConfig, collector=None) -> dict:
    """Collect (or resume) agreement-labelled data under ``cfg``'s condition and store its
    calibration in the probe folder. Returns the collection summary, the condition and the
    calibration report rows. ``collector``: an engine from an earlier collection to reuse."""
    from lynx.collect.pipeline import collect

    condition = cfg.condition()
    # everything the calibration step would refuse is refused before the collection runs
    if cfg.method not in METHODS:
        raise InvalidInput(f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if not 0 < cfg.delta < 1:
        raise InvalidInput(f"delta must be strictly between 0 and 1, got {cfg.delta}")
    alphas = [check_alpha(a) for a in cfg.alphas]
    if not alphas:
        raise InvalidInput("give at least one alpha to report")
    policy = ExitPolicy.load(cfg.probe)
    if policy.probe.meta.get("model_fingerprint") is None:
        raise InvalidInput(f"{cfg.probe} records no model fingerprint; retrain it with this lynx")
    ccfg = collect_config(cfg, policy)
    summary = collect(ccfg, engine=collector)
    rows = calibrate(cfg.probe, ccfg.out, cfg.alphas, method=cfg.method, risk=AGREEMENT_RISK, delta=cfg.delta, n_splits=cfg.n_splits, domain=condition.domain)
    return {"condition": condition.key, "collection": summary, "rows": rows, "work": str(ccfg.out)}

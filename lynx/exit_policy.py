"""``ExitPolicy``: a probe folder as one object, and ``HookConfig``: how an engine runs it.

Why one object: a probe is only meaningful together with what it was trained and calibrated
on — the model (fingerprint), the layers it reads, the cue words it fires at, the exit string
it forces and the prompt suffix the training data used — and with the calibration that turns
its score into a promise. Every engine, :func:`lynx.generate`, ``lynx eval`` and the command
line take an :class:`ExitPolicy`, so the folder is read once and those facts have one source.

:class:`HookConfig` is the typed form of ``additional_config={"lynx": {...}}``, the settings
an engine's hook runs with (vLLM needs them as a JSON-able dict: they travel to the engine's
worker processes and are part of its compile-cache key). :meth:`ExitPolicy.engine_config`
writes one, :meth:`ExitPolicy.from_engine_config` reads the policy back on the other side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lynx.calibrate.conditions import DEFAULT_FALLBACK, CalibrationSet, Condition, check_domain, check_fallback, load_calibrations
from lynx.calibrate.procedures import METHODS, MODES, check_alpha
from lynx.calibrate.store import Calibration, Decision
from lynx.config import PROBE_BASELINES, Sampling, parse_monitor
from lynx.errors import InvalidInput, MissingInput
from lynx.models import resolve_probe_folder
from lynx.probe.artifact import BASELINES_DIR, Probe, ProbeModelMismatch, load_probe
from lynx.prompting import INSTRUCTION


def _calibrations_of(folder: Path) -> CalibrationSet | None:
    try:
        return load_calibrations(folder)
    except MissingInput:
        return None


class NotCalibrated(InvalidInput):
    """A threshold at some alpha was asked of a probe folder without a calibration."""


@dataclass(frozen=True)
class HookConfig:
    """Settings of lynx's hook inside an engine (``additional_config={"lynx": ...}`` on vLLM).

    Parameters
    ----------
    probe : str, optional
        Probe folder. Without it the hook can only record cue features (collection) or exit
        at a per-request raw ``lynx_threshold`` of a probe given otherwise.
    layers, cues, exit_string
        What the hook reads and forces; filled from the probe when one is given (and refused
        if they disagree with it).
    thinking : dict, optional
        The thinking format (:class:`~lynx.thinking.ThinkingFormat` as a dict): filled from the
        probe (refused if it disagrees); without a probe, detected from the model's chat template.
    exit_ids : list of int, optional
        The exit string already tokenized (collection passes it to avoid a re-tokenization).
    audit_path : str, optional
        A JSONL file every exit / disabled event is appended to (a server's record).
    keep_events : bool, default False
        Keep audits and recorded features per ``lynx_tag`` for an in-process reader
        (:func:`lynx.generate`, ``lynx eval``, ``lynx collect``), who takes them after each
        batch. Off in a server, where nobody would, so nothing accumulates there.
    max_kept_requests : int, default 10000
        Bound on the requests whose events are kept; the oldest are dropped beyond it.
    probe_rows : {"cues", "all"}
        Score only the rows at a cue (default) or every row each step (the dense variant).
    handoff : {"auto", "output", "direct"}
        How the model's layers reach the logits processor on vLLM (see the vLLM plugin).
    fallback : {"conservative", "no-exit"}
        What a request whose temperature / ``lynx_domain`` matches no calibrated condition
        gets (:mod:`lynx.calibrate.conditions`); it is flagged ``uncalibrated_condition``.
    monitor : dict, optional
        The live monitor's settings (:class:`~lynx.config.MonitorConfig`, e.g.
        ``{"audit_fraction": 0.05, "response": "conservative"}``): shadow audits, a summary
        of every lynx request at its end, and the responses a monitor asks for. Needs
        ``audit_path`` behind a server (the monitor reads that file); in-process the events
        are kept for :mod:`lynx.monitor`.

    Recording cue features is asked per request (``lynx_record``), not here.
    """

    probe: str | None = None
    layers: tuple[int, ...] | None = None
    cues: tuple[str, ...] | None = None
    exit_string: str | None = None
    thinking: dict | None = None
    exit_ids: tuple[int, ...] | None = None
    audit_path: str | None = None
    keep_events: bool = False
    max_kept_requests: int = 10_000
    probe_rows: str = "cues"
    handoff: str = "auto"
    fallback: str = DEFAULT_FALLBACK
    monitor: dict | None = None

    def __post_init__(self):
        check_fallback(self.fallback)
        parse_monitor(self.monitor)
        if self.probe_rows not in ("cues", "all"):
            raise InvalidInput(f"lynx probe_rows must be 'cues' or 'all', got {_short(self.probe_rows)}")
        if self.handoff not in ("auto", "output", "direct"):
            raise InvalidInput(f"lynx handoff must be 'auto', 'output' or 'direct', got {_short(self.handoff)}")
        if not (isinstance(self.max_kept_requests, int) and self.max_kept_requests >= 1):
            raise InvalidInput(f"lynx max_kept_requests must be a positive integer, got {_short(self.max_kept_requests)}")

    @classmethod
    def from_dict(cls, cfg: dict | None) -> HookConfig:
        """Parse an engine's lynx settings; an unknown key is an error naming the known ones."""
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise InvalidInput(f"unknown lynx engine setting(s) {', '.join(map(_short, unknown))}; known: {', '.join(sorted(known))}")
        for key in ("layers", "cues", "exit_ids"):
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        return cls(**{k: v for k, v in cfg.items() if v is not None})

    def to_dict(self) -> dict:
        """JSON-able, without unset fields (vLLM hashes it into its compile-cache key)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ExitPolicy:
    """A trained probe and its calibration: when lynx may end a model's thinking early.

    Parameters
    ----------
    folder : Path
        The probe folder (``probe.safetensors`` + ``probe.json``, and the calibration files
        once ``lynx calibrate`` ran).
    probe : Probe
        Scaler + MLP weights and the metadata they were trained with.
    calibrations : CalibrationSet or None
        One calibration per condition (sampling temperature, optional domain), each holding
        the calibration traces (scores and labels) from which :meth:`threshold` computes the
        threshold for any alpha; None for an uncalibrated folder.

    Notes
    -----
    The promise at ``alpha`` (see :meth:`threshold` and ``Decision.promise``) holds for
    problems *exchangeable* with the calibration problems of the condition the request
    matches: the same model (checked through its fingerprint by :meth:`check_model`), the
    same layers, cues and exit string (fixed by the probe), the same prompt format
    (:attr:`prompt_suffix`), the same sampling temperature and the same kind of problems
    (the domain tag names it; lynx cannot check it). A request at a temperature or domain no
    calibration covers gets the fallback (:mod:`lynx.calibrate.conditions`), flagged
    ``uncalibrated_condition``; ``lynx recalibrate`` adds the condition without gold answers.
    Shifts inside a condition (another benchmark under the same tag) are not detected.

    Examples
    --------
    >>> policy = ExitPolicy.load("probes/organism")
    >>> decision = policy.threshold(0.1, temperature=0.6)  # the calibration of T = 0.6 requests
    >>> decision.threshold, decision.promise  # doctest: +SKIP
    """

    folder: Path
    probe: Probe
    calibrations: CalibrationSet | None = None
    baselines: dict[str, ExitPolicy] = field(default_factory=dict)  # name -> the baseline trained beside the probe

    @classmethod
    def load(cls, folder: Path | str) -> ExitPolicy:
        """Read a probe folder once: the probe (safetensors + JSON), its calibrations if any, and
        the baselines ``lynx train`` wrote beside it (``baselines/<name>``, each a probe folder).
        ``organism`` names the probe shipped with the bundled organism."""
        folder = resolve_probe_folder(folder)
        probe = load_probe(folder)
        calibrations = _calibrations_of(folder)  # first: a stale calibration of the probe itself is the error to report
        baselines = {name: cls.load(folder / BASELINES_DIR / name) for name in PROBE_BASELINES if (folder / BASELINES_DIR / name / "probe.json").exists()}
        for b in baselines.values():
            if b.model_fingerprint != probe.meta.get("model_fingerprint") or b.cues != list(probe.meta.get("cues", [])):
                raise InvalidInput(f"{b.folder} is not a baseline of {folder} (another model or other cues): train the probe again")
        return cls(folder, probe, calibrations, baselines)

    def reloaded(self) -> ExitPolicy:
        """This policy with its folder's calibrations read again (the same probe object): how an
        engine picks up a condition ``lynx calibrate`` / ``lynx recalibrate`` added while it runs.
        A folder whose probe changed since is refused (its calibrations are bound to the probe)."""
        return ExitPolicy(self.folder, self.probe, _calibrations_of(self.folder), {k: b.reloaded() for k, b in self.baselines.items()})

    def scorer(self, name: str | None) -> ExitPolicy:
        """The policy a request asking for ``lynx_scorer=name`` runs: this one (``probe`` /
        None) or a baseline trained beside it (``context-only``); a missing baseline is one clear error."""
        if name in (None, PROBE_SCORER):
            return self
        if name not in self.baselines:
            raise InvalidInput(f"{self.folder} has no {name!r} baseline (train the probe with this lynx: lynx train writes it)")
        return self.baselines[name]

    # -- what the probe was trained with ---------------------------------------------
    @property
    def layers(self) -> list[int]:
        return self.probe.layers

    @property
    def cues(self) -> list[str]:
        return list(self.probe.meta["cues"])

    @property
    def exit_string(self) -> str:
        return self.probe.meta["exit_string"]

    @property
    def thinking(self) -> dict | None:
        """The thinking format the probe was trained in (None: a folder from before formats were
        recorded, whose model used ``<think>``; it is detected from the model then)."""
        return self.probe.meta.get("thinking")

    @property
    def prompt_suffix(self) -> str:
        """The instruction appended to every question in the probe's training data."""
        return self.probe.meta.get("prompt_suffix") or INSTRUCTION

    @property
    def model(self) -> str:
        return self.probe.meta["model"]

    @property
    def model_fingerprint(self) -> str:
        return self.probe.meta["model_fingerprint"]

    @property
    def hidden_size(self) -> int:
        return int(self.probe.meta["hidden_size"])

    @property
    def is_calibrated(self) -> bool:
        return self.calibrations is not None

    @property
    def conditions(self) -> dict[str, Condition]:
        """The calibrated conditions by key (``T0.6``, ``T1-gsm8k``); empty when uncalibrated."""
        return dict(self.calibrations.conditions) if self.calibrations is not None else {}

    @property
    def calibration(self) -> Calibration | None:
        """The folder's calibration when it has exactly one condition (None: uncalibrated)."""
        if self.calibrations is None:
            return None
        if len(self.calibrations) > 1:
            raise InvalidInput(f"{self.folder} is calibrated for several conditions ({', '.join(self.calibrations)}): use policy.calibrations[key]")
        return next(iter(self.calibrations.values()))

    @property
    def calibrated_sampling(self) -> dict | None:
        """The sampling settings of the calibration collection (temperature, top_p, ...) when
        the folder has one condition."""
        cal = self.calibration
        return ((cal.meta.get("data") or {}).get("sampling")) if cal is not None else None

    # -- using it ---------------------------------------------------------------------
    def threshold(
        self,
        alpha: float,
        mode: str | None = None,
        method: str | None = None,
        risk: str | None = None,
        delta: float | None = None,
        *,
        temperature: float | None = None,
        domain: str | None = None,
        fallback: str = DEFAULT_FALLBACK,
    ) -> Decision:
        """The exit threshold at risk level ``alpha`` and the promise that comes with it.

        Parameters
        ----------
        alpha : float in (0, 1)
            The risk level the user accepts.
        mode, method, risk, delta
            The guarantee (default: the one stored by ``lynx calibrate``): ``per-problem``
            with ``crc`` (expected share of problems harmed <= alpha) or ``ltt`` (with
            probability >= 1 - delta), or the paper's ``per-cue`` rule.
        temperature, domain
            The request's condition: the calibration measured at this sampling temperature
            (and domain tag) gives the threshold. ``temperature`` None means the temperature
            lynx samples at by default (``Sampling.temperature``, 0.6, what ``lynx.generate``
            and ``lynx run`` use when none is given): a folder with one calibration of
            ``domain`` gives that one; a folder with several gives the one at the default
            temperature, and an error naming them when none is at it (a guess between
            conditions would be a promise for the wrong requests). The decision's
            ``condition`` says which calibration answered.
        fallback : {"conservative", "no-exit"}
            What a request outside every calibrated condition gets: the most conservative
            calibrated threshold at ``alpha``, or no exit. Either way the decision says
            ``uncalibrated_condition`` and its promise says no guarantee holds.

        Returns
        -------
        Decision
            ``threshold`` (exit at a cue iff score >= it; ``inf`` = never exit),
            ``attainable`` (False when too few calibration problems certify this alpha) and
            ``promise``, the guarantee in words.

        Raises
        ------
        NotCalibrated
            The folder has no calibration (run ``lynx calibrate``).
        """
        if self.calibrations is None:
            raise NotCalibrated(f"{self.folder} is not calibrated; run lynx calibrate --probe {self.folder} --data ... (or give a raw threshold, which carries no guarantee)")
        if temperature is None and sum(c.domain == check_domain(domain) for c in self.calibrations.conditions.values()) > 1:
            temperature = Sampling.temperature  # several conditions: the one lynx.generate samples at by default
            if self.calibrations.select(temperature, domain) is None:
                raise InvalidInput(
                    f"{self.folder} is calibrated for several conditions ({self.calibrations.describe()}), none at the default temperature {temperature}: "
                    "give the request's temperature"
                )
        return self.calibrations.threshold(alpha, mode, method, risk, delta, temperature=temperature, domain=domain, fallback=fallback)

    def check_model(self, model) -> None:
        """Raise :class:`~lynx.probe.ProbeModelMismatch` unless ``model`` (a name or path as
        lynx takes it, or a :class:`~lynx.models.ModelRef`) is the model the probe was trained on."""
        from lynx.models import ModelRef, model_fingerprint, resolve_model

        ref = model if isinstance(model, ModelRef) else resolve_model(model)
        self.probe.check_model(model_fingerprint(ref), f"model {ref.name!r}")

    def request_args(
        self, alpha: float | None = None, threshold: float | None = None, mode: str | None = None, method: str | None = None, tag: str | None = None, domain: str | None = None
    ) -> dict | None:
        """Per-request switches (vLLM ``extra_args`` / HTTP ``vllm_xargs``) asking for this
        policy's exit at ``alpha`` (or a raw ``threshold``, no guarantee) under the calibrated
        condition ``domain`` (with the request's temperature); None = plain generation."""
        return request_args(alpha=alpha, threshold=threshold, mode=mode, method=method, tag=tag, domain=domain)

    def engine_config(self, **settings) -> dict:
        """``additional_config["lynx"]`` for an engine running this policy (``settings``: other
        :class:`HookConfig` fields, e.g. ``audit_path``)."""
        return self.hook_config(settings).to_dict()

    @classmethod
    def resolve(cls, cfg: dict | HookConfig | None, policy: ExitPolicy | None = None) -> tuple[ExitPolicy | None, HookConfig]:
        """(policy, settings) of an engine: the policy given, else the one its settings name (read
        once), and the settings completed with the probe's layers, cues and exit string
        (contradictions refused). The one way every engine turns its lynx settings into both."""
        hook = cfg if isinstance(cfg, HookConfig) else HookConfig.from_dict(cfg)
        if policy is None:
            policy = cls.from_engine_config(hook)
        return policy, (policy.hook_config(hook) if policy is not None else hook)

    @classmethod
    def from_engine_config(cls, cfg: dict | HookConfig) -> ExitPolicy | None:
        """The policy an engine's lynx settings name (None without a probe); settings that
        contradict the probe (other layers, cues or exit string) are refused."""
        hook = cfg if isinstance(cfg, HookConfig) else HookConfig.from_dict(cfg)
        if not hook.probe:
            return None
        policy = cls.load(hook.probe)
        policy.check_hook(hook)
        return policy

    def check_hook(self, hook: HookConfig) -> None:
        """Refuse engine settings that contradict the probe."""
        for key, mine in (("layers", self.layers), ("cues", self.cues), ("exit_string", self.exit_string), ("thinking", self.thinking)):
            given = getattr(hook, key)
            if given is None or mine is None:
                continue
            if (given != mine) if isinstance(mine, str | dict) else (list(given) != list(mine)):
                raise ProbeModelMismatch(f"the engine was configured with {key} {_short(given)} but the probe in {self.folder} uses {_short(mine)}")

    def hook_config(self, hook: HookConfig | dict | None = None) -> HookConfig:
        """``hook`` completed with the probe's layers, cues and exit string."""
        hook = hook if isinstance(hook, HookConfig) else HookConfig.from_dict(hook)
        self.check_hook(hook)
        d = hook.to_dict() | {"probe": str(self.folder), "layers": self.layers, "cues": self.cues}
        if self.thinking is not None:
            d["thinking"] = self.thinking
        if hook.exit_ids is None:
            d["exit_string"] = self.exit_string
        return HookConfig.from_dict(d)


#: per-request keys in SamplingParams.extra_args (flat, so they work as HTTP vllm_xargs)
ALPHA, THRESHOLD, MODE, METHOD, TAG, RECORD = "lynx_alpha", "lynx_threshold", "lynx_mode", "lynx_method", "lynx_tag", "lynx_record"
DOMAIN, SCORER = "lynx_domain", "lynx_scorer"
REQUEST_KEYS = (ALPHA, THRESHOLD, MODE, METHOD, TAG, RECORD, DOMAIN, SCORER)
#: ``lynx_scorer``: the probe itself (default) or a baseline trained beside it
SCORERS = (PROBE_SCORER := "probe", *PROBE_BASELINES)
#: longest tag (and recorded tag) a request may carry: tags go into logs and audit files
MAX_TAG = 200


@dataclass(frozen=True)
class RequestOptions:
    """One request's lynx switches, checked. Why one parser: vLLM's ``validate_params`` (which
    turns a bad value into HTTP 400 at admission) and the engine's per-request state must
    agree on what a request asked for."""

    alpha: float | None = None
    threshold: float | None = None
    mode: str | None = None
    method: str | None = None
    tag: str | None = None
    record: bool = False
    domain: str | None = None  # the calibrated condition's domain tag (with the request's temperature)
    scorer: str | None = None  # a baseline of the probe (e.g. context-only) instead of the probe: lynx eval's baselines

    @classmethod
    def parse(cls, extra_args: dict | None) -> RequestOptions | None:
        """None when the request did not opt in (no ``lynx_alpha`` / ``lynx_threshold`` /
        ``lynx_record``); :class:`~lynx.errors.InvalidInput` for a bad or unknown ``lynx_`` key."""
        args = extra_args or {}
        unknown = sorted(k for k in args if isinstance(k, str) and k.startswith("lynx_") and k not in REQUEST_KEYS)
        if unknown:
            raise InvalidInput(f"unknown lynx request key(s) {', '.join(map(_short, unknown))}; known: {', '.join(REQUEST_KEYS)}")
        if not any(k in args for k in (ALPHA, THRESHOLD, RECORD)):
            if any(k in args for k in (MODE, METHOD, TAG, DOMAIN, SCORER)):
                raise InvalidInput(
                    f"{', '.join(k for k in (MODE, METHOD, TAG, DOMAIN, SCORER) if k in args)} given without {ALPHA} or {THRESHOLD}: the request would silently run without lynx"
                )
            return None
        if ALPHA in args and THRESHOLD in args:
            raise InvalidInput(f"give {ALPHA} or {THRESHOLD}, not both")
        alpha = threshold = None
        if ALPHA in args:
            alpha = _number(args[ALPHA], ALPHA)
            try:
                check_alpha(alpha)
            except InvalidInput:
                raise InvalidInput(f"{ALPHA} must be a number strictly between 0 and 1, got {_short(args[ALPHA])}") from None
        if THRESHOLD in args:
            threshold = _number(args[THRESHOLD], THRESHOLD)
            if not math.isfinite(threshold):
                raise InvalidInput(f"{THRESHOLD} must be a finite number, got {_short(args[THRESHOLD])}")
        mode, method = args.get(MODE), args.get(METHOD)
        if mode is not None and mode not in MODES:
            raise InvalidInput(f"{MODE} must be one of {', '.join(MODES)}, got {_short(mode)}")
        if method is not None and method not in METHODS:
            raise InvalidInput(f"{METHOD} must be one of {', '.join(METHODS)}, got {_short(method)}")
        record = args.get(RECORD, False)
        if not isinstance(record, (bool, str)):
            raise InvalidInput(f"{RECORD} must be true/false or a tag string, got {_short(record)}")
        tag = args.get(TAG) or (record if isinstance(record, str) else None)
        if tag is not None and (not isinstance(tag, str) or len(tag) > MAX_TAG):
            raise InvalidInput(f"{TAG} must be a string of at most {MAX_TAG} characters, got {_short(tag)}")
        domain = args.get(DOMAIN)
        if domain is not None:
            try:
                check_domain(domain)
            except InvalidInput:
                raise InvalidInput(f"{DOMAIN} must be 1-64 letters, digits or _.+-, got {_short(domain)}") from None
        scorer = args.get(SCORER)
        if scorer is not None and scorer not in SCORERS:
            raise InvalidInput(f"{SCORER} must be one of {', '.join(SCORERS)}, got {_short(scorer)}")
        return cls(alpha, threshold, mode, method, tag, bool(record), domain, scorer)


def request_args(
    alpha: float | None = None,
    threshold: float | None = None,
    mode: str | None = None,
    method: str | None = None,
    tag: str | None = None,
    record: bool | str = False,
    domain: str | None = None,
    scorer: str | None = None,
) -> dict | None:
    """The ``extra_args`` of a request asking for lynx (checked by :class:`RequestOptions`)."""
    args: dict = {}
    if threshold is not None:
        args[THRESHOLD] = float(threshold)
    if alpha is not None:
        args[ALPHA] = float(alpha)  # both given: refused below (the threshold would silently win)
    if record:
        args[RECORD] = record
    if not args:
        return None
    for key, value in ((MODE, mode), (METHOD, method), (TAG, tag), (DOMAIN, domain), (SCORER, scorer)):
        if value is not None:
            args[key] = value
    RequestOptions.parse(args)
    return args


def _number(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{key} must be a number, got {_short(value)}")
    return float(value)


def _short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: user values go into errors and logs, never whole."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'" + f" ({len(text)} chars)"

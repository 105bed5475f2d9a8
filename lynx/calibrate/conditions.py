"""Several calibrations in one probe folder, one per *condition*, and the choice among them.

Why: a conformal promise holds for requests exchangeable with the calibration problems. One
probe per model is reused at several sampling temperatures and on several kinds of problems,
and each of those shifts the score distribution (the demo's probe, calibrated at T = 0.6 and
served at T = 1.0, breaks its promise at every alpha). So a folder keeps one calibration per
condition — the sampling temperature it was collected at and an optional domain tag — and a
request gets the threshold of the calibration whose condition it matches. A request outside
every calibrated condition gets a documented fallback, flagged, never a silent reuse:

* ``conservative`` (default): the most conservative threshold any calibrated condition gives
  at that alpha (the largest). It keeps lynx useful, but no guarantee is claimed for it.
* ``no-exit``: lynx does not exit (the request runs like plain generation).

Layout: ``<probe>/calibrations/<key>/`` holds one calibration (data, ``calibration.json``,
report, plots); ``<key>`` is ``T<temperature>`` plus ``-<domain>`` when tagged. A folder
calibrated before conditions existed keeps its calibration in the probe folder itself; it
loads as the condition its data was collected under, and moves into ``calibrations/`` the
first time ``lynx calibrate`` adds another condition.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from lynx.calibrate.store import (
    CALIBRATION_FILES,
    META_FILE,
    Calibration,
    Decision,
    load_calibration_files,
)
from lynx.config import CalibrateConfig
from lynx.errors import InvalidInput, MissingInput
from lynx.models import resolve_probe_folder

CONDITIONS_DIR = "calibrations"
#: what a request outside every calibrated condition gets (the first is the default)
FALLBACKS = {
    "conservative": "the most conservative threshold of any calibrated condition at that alpha (no guarantee claimed)",
    "no-exit": "no early exit (plain generation)",
}
DEFAULT_FALLBACK = CalibrateConfig.fallback
_DOMAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
#: temperatures closer than this are the same condition (a JSON round trip, 0.6 vs 0.6000001)
TEMPERATURE_TOLERANCE = 1e-6


def check_domain(domain: str | None) -> str | None:
    """A domain tag names a folder and travels in requests: letters, digits, ``_.+-``, <= 64 chars."""
    if domain is None:
        return None
    if not isinstance(domain, str) or not _DOMAIN.fullmatch(domain):
        text = repr(domain)
        raise InvalidInput(f"a domain must be 1-64 letters, digits or _.+- (starting with a letter or digit), got {text[:60]}")
    return domain


def check_fallback(fallback: str) -> str:
    if fallback not in FALLBACKS:
        raise InvalidInput(f"unknown fallback {fallback!r}: choose {' or '.join(FALLBACKS)}")
    return fallback


@dataclass(frozen=True)
class Condition:
    """What a calibration was measured under: the sampling temperature and an optional domain."""

    temperature: float
    domain: str | None = None

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise InvalidInput(f"a condition's temperature must be a finite number >= 0, got {t!r}")
        object.__setattr__(self, "temperature", float(t))
        check_domain(self.domain)

    @property
    def key(self) -> str:
        """The folder name: ``T0.6``, ``T1-gsm8k``."""
        return f"T{self.temperature:g}" + (f"-{self.domain}" if self.domain else "")

    def describe(self) -> str:
        return f"temperature {self.temperature:g}" + (f", domain {self.domain}" if self.domain else "")

    def matches(self, temperature: float, domain: str | None) -> bool:
        return abs(self.temperature - float(temperature)) <= TEMPERATURE_TOLERANCE and self.domain == domain

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "domain": self.domain}

    @classmethod
    def of(cls, meta: dict) -> Condition:
        """The condition a calibration's metadata records (older ones: their data's temperature)."""
        c = meta.get("condition")
        if c is not None:
            return cls(c["temperature"], c.get("domain"))
        sampling = (meta.get("data") or {}).get("sampling") or {}
        if "temperature" not in sampling:
            raise InvalidInput("a calibration records no sampling temperature; rerun lynx calibrate to redo it")
        return cls(sampling["temperature"], None)


class CalibrationSet(Mapping):
    """The calibrations of one probe folder, by condition key, and the threshold a request gets."""

    def __init__(self, folder: Path, calibrations: dict[str, Calibration]):
        self.folder = Path(folder)
        self._cals = dict(sorted(calibrations.items()))
        self.conditions = {k: Condition.of(c.meta) for k, c in self._cals.items()}

    def __getitem__(self, key: str) -> Calibration:
        return self._cals[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cals)

    def __len__(self) -> int:
        return len(self._cals)

    def describe(self) -> str:
        return "; ".join(c.describe() for c in self.conditions.values())

    def select(self, temperature: float | None, domain: str | None = None) -> str | None:
        """Key of the calibration whose condition the request matches, else None.

        ``temperature`` None (a caller that does not know it) matches when exactly one
        calibration has ``domain``; with several it is an error naming them."""
        domain = check_domain(domain)
        if temperature is None:
            same = [k for k, c in self.conditions.items() if c.domain == domain]
            if len(same) == 1:
                return same[0]
            if not same:
                return None
            raise InvalidInput(f"{self.folder} is calibrated for several conditions ({self.describe()}): give the request's temperature")
        for key, cond in self.conditions.items():
            if cond.matches(temperature, domain):
                return key
        return None

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
        """The threshold of the calibration matching (temperature, domain), else the fallback's."""
        check_fallback(fallback)
        key = self.select(temperature, domain)
        if key is not None:
            return replace(self._cals[key].threshold(alpha, mode, method, risk, delta), condition=key)
        asked = Condition(temperature, domain).describe() if temperature is not None else f"domain {domain}"
        if fallback == "no-exit":
            d = self._any_decision(alpha, mode, method, risk, delta)
            return replace(d, threshold=math.inf, condition=None, uncalibrated_condition=True, fallback=f"no-exit: {asked} is not calibrated (calibrated: {self.describe()})")
        key, d = max(self._decisions(alpha, mode, method, risk, delta), key=lambda kd: kd[1].threshold)
        return replace(
            d,
            condition=key,
            uncalibrated_condition=True,
            fallback=f"conservative: {asked} is not calibrated; threshold of {self.conditions[key].describe()}, the most conservative of {self.describe()}",
        )

    def _decisions(self, alpha, mode, method, risk, delta) -> list[tuple[str, Decision]]:
        out, errors = [], []
        for key, cal in self._cals.items():
            try:
                out.append((key, cal.threshold(alpha, mode, method, risk, delta)))
            except InvalidInput as e:  # e.g. a gold-only risk asked of an agreement-labelled calibration
                errors.append(str(e))
        if not out:
            raise InvalidInput(f"no calibration in {self.folder} supports this request: {errors[0]}")
        return out

    def _any_decision(self, alpha, mode, method, risk, delta) -> Decision:
        return self._decisions(alpha, mode, method, risk, delta)[0][1]


def condition_dir(probe_dir: Path, condition: Condition) -> Path:
    return Path(probe_dir) / CONDITIONS_DIR / condition.key


def _has_legacy(folder: Path) -> bool:
    return (folder / META_FILE).exists()


def load_calibrations(folder: Path | str) -> CalibrationSet:
    """Every calibration of a probe folder (``calibrations/*`` and a legacy one in the folder)."""
    folder = resolve_probe_folder(folder)
    cals: dict[str, Calibration] = {}
    root = folder / CONDITIONS_DIR
    for sub in sorted(root.iterdir()) if root.is_dir() else []:
        if sub.is_dir() and (sub / META_FILE).exists():
            cal = load_calibration_files(sub, probe_folder=folder)
            cals[Condition.of(cal.meta).key] = cal
    if _has_legacy(folder):
        cal = load_calibration_files(folder, probe_folder=folder)
        key = Condition.of(cal.meta).key
        if key in cals:
            raise InvalidInput(
                f"{folder} has two calibrations for {Condition.of(cal.meta).describe()} (one in the folder, one in "
                f"{CONDITIONS_DIR}/{key}); delete the stale one or rerun lynx calibrate"
            )
        cals[key] = cal
    if not cals:
        raise MissingInput(f"{folder} is not calibrated (no calibration files); run lynx calibrate --probe {folder} --data ...")
    return CalibrationSet(folder, cals)


def load_calibration(folder: Path | str, condition: str | None = None) -> Calibration:
    """One calibration of a probe folder: the one for ``condition`` (a key such as ``T0.6``), or
    the only one; a folder with several needs the key."""
    cals = load_calibrations(folder)
    if condition is None:
        if len(cals) > 1:
            raise InvalidInput(f"{folder} holds calibrations for several conditions ({', '.join(cals)}): name one")
        condition = next(iter(cals))
    if condition not in cals:
        raise InvalidInput(f"{folder} has no calibration for condition {condition!r} (it has {', '.join(cals)})")
    return cals[condition]


def prepare_condition_dir(probe_dir: Path, condition: Condition) -> Path:
    """The folder a new calibration for ``condition`` goes to, emptied; a legacy calibration in the
    probe folder is moved into ``calibrations/`` first (or dropped when it is this condition)."""
    probe_dir = Path(probe_dir)
    if _has_legacy(probe_dir):
        legacy = Condition.of(json.loads((probe_dir / META_FILE).read_text()))
        target = condition_dir(probe_dir, legacy)
        if legacy != condition:
            target.mkdir(parents=True, exist_ok=True)
        for name in CALIBRATION_FILES:
            if (probe_dir / name).exists():
                if legacy == condition:
                    (probe_dir / name).unlink()
                else:
                    (probe_dir / name).replace(target / name)
    out = condition_dir(probe_dir, condition)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def remove_calibrations(probe_dir: Path) -> list[str]:
    """Delete every calibration of a probe folder (they hold only for the probe they scored)."""
    probe_dir = Path(probe_dir)
    removed = [name for name in CALIBRATION_FILES if (probe_dir / name).exists()]
    for name in removed:
        (probe_dir / name).unlink()
    if (probe_dir / CONDITIONS_DIR).is_dir():
        removed.append(CONDITIONS_DIR + "/")
        shutil.rmtree(probe_dir / CONDITIONS_DIR)
    return removed

"""The two sequential tests of the live monitor, as glue over MAPIE's implementations with
memory that does not grow with the stream.

* :class:`RiskBound` — Podkopaev & Ramdas' harmful-shift test, as MAPIE's
  ``exchangeability_testing.RiskMonitoring`` runs it: an upper bound on the reference
  (calibration) risk by Hoeffding (MAPIE's ``hoeffding_bound``) plus a tolerance is the alarm
  level, and the alarm fires when a time-uniform *lower* confidence sequence on the live risk
  (conjugate-mixture empirical Bernstein, MAPIE's ``GammaExponentialMixtureBound``) exceeds
  it. ``RiskMonitoring`` keeps the whole stream and recomputes the sequence from scratch at
  every update (memory and time grow with the stream); the bound at time t depends on the
  stream only through (t, sum of losses, sum of squared deviations from the running mean),
  so this class keeps those three numbers and the running intersection, and gives exactly
  ``RiskMonitoring``'s values (``tests/test_monitor.py`` checks it). One parameter differs by
  default: the mixture's ``v_opt`` (where the bound is tightest), which ``RiskMonitoring`` fixes at
  1 (a handful of observations); the monitor tunes it to ``risk_horizon`` audits (0.25 per audit,
  the largest variance of a 0/1 loss), which on 0/1 losses at 0.3 against a 0.19 level alarms
  after a median 254 audits instead of 392 (any ``v_opt`` gives a valid sequence). It also gives the
  matching time-uniform *upper* bound, the number a user reads ("the live risk is at most").
* :class:`DriftTest` — MAPIE's ``OnlineMartingaleTest`` (simple jumper martingale over
  conformal p-values) for a label-free statistic of every request against the calibration's.
  MAPIE's p-values rank each new value among all earlier ones, kept in a list; here the
  statistic is a non-negative integer (a token count) counted in a fixed number of bins (the
  last one lumps everything beyond), so the earlier values are a histogram (ties are broken at
  random by the same formula), and the martingale's history is not kept.

Both are valid at any stopping time (Ville's inequality): under the null (live risk at most
the reference's / live requests exchangeable with calibration ones) the chance of *ever*
alarming on an unbounded stream is at most the test level.
"""

from __future__ import annotations

import numpy as np


class RiskBound:
    """Time-uniform bounds on the running mean of a stream of losses in [0, 1], and the
    harmful-shift alarm against a reference set of losses (MAPIE's ``RiskMonitoring`` rule)."""

    def __init__(self, reference_losses, test_level: float = 0.05, tolerance: float = 0.0, v_opt: float = 1.0):
        from mapie.exchangeability_testing.bounds import GammaExponentialMixtureBound, hoeffding_bound

        ref = np.asarray(reference_losses, dtype=float)
        if ref.size == 0:
            raise ValueError("the reference has no losses")
        # as RiskMonitoring: half the level for the reference bound, half for the online sequence
        self.level_reference = self.level_online = test_level / 2
        self.reference_risk = float(ref.mean())
        self.reference_upper = float(hoeffding_bound(ref, self.level_reference, bound_side="upper"))
        self.alarm_level = self.reference_upper + tolerance
        # v_opt: the intrinsic time (sum of variances) where the bound is tightest; RiskMonitoring fixes it at 1
        self._mixture = GammaExponentialMixtureBound(v_opt=v_opt, c=1, alpha_opt=self.level_online / 2)
        self.n, self._sum, self._var = 0, 0.0, 0.0
        self.lower, self.upper = 0.0, 1.0

    def update(self, loss: float) -> None:
        loss = float(loss)
        prev_mean = self._sum / self.n if self.n else 0.5
        self.n += 1
        self._sum += loss
        self._var += (loss - prev_mean) ** 2
        radius = self._mixture(v=self._var, alpha=self.level_online / 2) / self.n
        mean = self._sum / self.n
        self.lower = max(self.lower, max(mean - radius, 0.0))  # running intersection
        self.upper = min(self.upper, min(mean + radius, 1.0))

    def restarted(self) -> RiskBound:
        """A fresh sequence against the same reference and alarm level (e.g. from an alarm on)."""
        fresh = RiskBound.__new__(RiskBound)
        fresh.__dict__.update(self.__dict__)
        fresh.n, fresh._sum, fresh._var, fresh.lower, fresh.upper = 0, 0.0, 0.0, 0.0, 1.0
        return fresh

    @property
    def rate(self) -> float | None:
        return self._sum / self.n if self.n else None

    @property
    def alarm(self) -> bool:
        """The live risk is above the reference's upper bound (+ tolerance), with confidence."""
        return self.n > 0 and self.lower > self.alarm_level

    @property
    def clear(self) -> bool:
        """The live risk is below the alarm level, with confidence (how a response ends)."""
        return self.n > 0 and self.upper <= self.alarm_level

    def state(self) -> dict:
        return {
            "n": self.n,
            "rate": self.rate,
            "lower": self.lower if self.n else None,
            "upper": self.upper if self.n else None,
            "reference": self.reference_risk,
            "reference_upper": self.reference_upper,
            "alarm_level": self.alarm_level,
            "alarm": self.alarm,
        }


class DriftTest:
    """MAPIE's jumper-martingale exchangeability test of a live statistic against a reference
    sample, with a histogram of earlier values instead of their list.

    Values are non-negative integers; value ``v`` is bin ``min(v, bins - 1)`` (a conformity
    score: larger = further out)."""

    def __init__(self, reference_values, test_level: float = 0.05, bins: int = 4096, seed: int = 0):
        from mapie.exchangeability_testing import OnlineMartingaleTest

        self.test = OnlineMartingaleTest(test_method="jumper_martingale", test_level=test_level, warn=False, random_state=seed)
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, dtype=np.int64)
        for b in self._bin(np.asarray(reference_values, dtype=float)):
            self.counts[b] += 1
        self.n_reference = int(self.counts.sum())
        self.n = 0
        self.alarm = False  # once the martingale crossed 1 / test_level (Ville), it stays raised
        self.max_value = 1.0

    def _bin(self, values: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(values, dtype=np.int64), 0, self.bins - 1)

    def update(self, value: float) -> float:
        """Add one live value; returns its conformal p-value."""
        b = int(self._bin(np.array([value]))[0])
        total = int(self.counts.sum())
        greater = int(self.counts[b + 1 :].sum())
        u = self.test.rng.uniform()
        p = (greater + u * (self.counts[b] + 1)) / (total + 1.0) if total else float(self.test.rng.uniform())
        self.test.update_simple_jumper_martingale(float(p))
        self.test.martingale_value_history.clear()  # MAPIE appends every value; the monitor keeps its own bounded history
        self.counts[b] += 1
        self.n += 1
        self.max_value = max(self.max_value, self.value)
        self.alarm = self.alarm or self.value > self.test.reject_threshold
        return float(p)

    @property
    def value(self) -> float:
        return float(self.test.current_martingale_value)

    @property
    def reject_threshold(self) -> float:
        return float(self.test.reject_threshold)

    def state(self) -> dict:
        return {
            "n": self.n,
            "n_reference": self.n_reference,
            "martingale": self.value,
            "max_martingale": self.max_value,
            "reject_above": self.reject_threshold,
            "alarm": self.alarm,
        }

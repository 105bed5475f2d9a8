"""The guarantees, as threshold-choosing procedures over a fixed grid.

``per-cue`` (paper-faithful, upstream LYNX): class-conditional split conformal prediction on
calibration cues. With ``k = ceil((n + 1)(1 - alpha))`` per class, ``q_neg`` is the k-th
smallest score among unsafe cues and ``q_pos`` the k-th smallest ``1 - score`` among safe
ones; a cue exits only if its prediction set is ``{safe}``, i.e. ``score > q_neg`` and
``1 - score <= q_pos``. Promise: for an unsafe cue exchangeable with the calibration cues,
P(exit) <= alpha. It says nothing about a whole trace, which has many cues.

``per-problem`` (default): the threshold is chosen on whole calibration traces replayed
with the real policy (exit at the first passing cue), so the promise is about problems:

* ``crc`` (default) — conformal risk control (Angelopoulos et al. 2022): the largest step
  along the grid with ``(n R(lambda) + 1) / (n + 1) <= alpha`` for the per-problem loss.
  CRC needs a loss that is monotone in the threshold, and "first passing cue was unsafe"
  is not (lowering the threshold can move the exit to an earlier, safe cue), so we control
  the loss's monotone envelope ``max over all more conservative thresholds``, which is
  monotone and bounds the real loss from above. Promise: E[share of problems harmed] <= alpha.
  Chosen as default because it states exactly the user's promise ("at most alpha of
  answers") with no extra confidence parameter and is the least conservative valid choice.
* ``ltt`` — Learn-then-Test (Angelopoulos et al. 2021) with Hoeffding-Bentkus p-values and
  fixed-sequence testing from the most conservative threshold onward (MAPIE). Valid for
  non-monotone losses as the order is fixed before seeing data. Promise: with probability
  >= 1 - delta over the calibration draw, the problem-level risk is <= alpha.

CRC is written here because MAPIE 1.6 offers it only inside its multi-label controller, not
for an arbitrary per-problem loss; LTT uses MAPIE's p-values and FWER procedure.
"""

from __future__ import annotations

import math

import numpy as np

from lynx.errors import InvalidInput

MODES = ("per-problem", "per-cue")
METHODS = ("crc", "ltt")


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
        raise InvalidInput(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    return float(alpha)


def per_cue_threshold(scores: np.ndarray, labels: np.ndarray, alpha: float) -> float:
    """Smallest score that upstream LYNX's class-conditional conformal rule lets exit (inf: never)."""
    check_alpha(alpha)
    neg, pos = np.sort(scores[labels == 0]), np.sort(1.0 - scores[labels == 1])

    def kth(sorted_vals: np.ndarray) -> float:
        k = math.ceil((len(sorted_vals) + 1) * (1 - alpha))
        return float(sorted_vals[k - 1]) if k <= len(sorted_vals) else math.inf

    q_neg, q_pos = kth(neg), kth(pos)
    if math.isinf(q_neg):
        return math.inf  # too few unsafe cues to bound their exit rate at this alpha
    # score > q_neg  <=>  score >= nextafter(q_neg); and score >= 1 - q_pos (q_pos = inf: no constraint)
    return max(float(np.nextafter(q_neg, np.inf)), 1.0 - q_pos if math.isfinite(q_pos) else -math.inf)


def crc_index(losses: np.ndarray, alpha: float) -> int | None:
    """Grid index chosen by CRC on ``(P, K)`` per-problem losses (grid most conservative
    first); None if even "never exit" cannot be certified (too few problems)."""
    check_alpha(alpha)
    n = losses.shape[0]
    envelope = np.maximum.accumulate(losses, axis=1).mean(0)
    ok = (n * envelope + 1.0) / (n + 1.0) <= alpha
    if not ok[0]:
        return None
    bad = np.flatnonzero(~ok)
    return int(bad[0] - 1) if len(bad) else losses.shape[1] - 1


def ltt_index(losses: np.ndarray, alpha: float, delta: float) -> int | None:
    """Grid index chosen by Learn-then-Test with fixed-sequence testing; None if no
    threshold (not even "never exit") is certified."""
    from mapie.risk_control import FWERFixedSequenceTesting
    from mapie.risk_control.fwer_control import control_fwer
    from mapie.risk_control.methods import compute_hoeffding_bentkus_p_value

    check_alpha(alpha)
    if not 0.0 < delta < 1.0:
        raise InvalidInput(f"delta must be strictly between 0 and 1, got {delta!r}")
    n = losses.shape[0]
    binary = bool(np.all((losses == 0) | (losses == 1)))
    p = compute_hoeffding_bentkus_p_value(losses.mean(0), n, alpha, binary=binary)[:, 0]
    valid = control_fwer(p, delta, fwer_method=FWERFixedSequenceTesting())
    return int(np.max(valid)) if len(valid) else None

"""Calibration: turn probe scores into an exit threshold with a guarantee the user picks (alpha)."""

from lynx.calibrate.store import Calibration, load_calibration

__all__ = ["Calibration", "load_calibration"]

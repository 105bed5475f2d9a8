"""Calibration: turn probe scores into an exit threshold with a guarantee the user picks (alpha)."""

from lynx.calibrate.conditions import CalibrationSet, Condition, load_calibration, load_calibrations
from lynx.calibrate.store import Calibration

__all__ = ["Calibration", "CalibrationSet", "Condition", "load_calibration", "load_calibrations"]

"""lynx: calibrated early exit for reasoning LLMs."""

__version__ = "0.1.0"

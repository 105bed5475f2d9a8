"""``lynx eval``: lynx against vanilla, static budgets, DEER, Dynasor-CoT and the oracle."""

from lynx.evaluate.pipeline import BASELINES, EvalConfig, build_backend, engine_choice, evaluate

__all__ = ["BASELINES", "EvalConfig", "build_backend", "engine_choice", "evaluate"]

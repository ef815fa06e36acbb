"""Optuna studies over the backtest: search space, duplicate cache, resume signature, artifacts."""

from genesis_core.optimizer._config import OptimizerConfig, load_optimizer_config
from genesis_core.optimizer._runner import RunOptions, load_study_spec, optimize
from genesis_core.optimizer._signature import ResumeBlocked
from genesis_core.optimizer._space import SearchSpace

__all__ = ["OptimizerConfig", "ResumeBlocked", "RunOptions", "SearchSpace", "load_optimizer_config", "load_study_spec", "optimize"]

"""Strategies: typed parameters -> per-bar decisions and a trace of why."""

from genesis_core.strategy._base import (
    Decisions,
    Strategy,
    StrategyTrace,
    Training,
    checked_decisions,
    checked_resources,
    checked_trained,
    checked_warmup,
    get_strategy,
    register_strategy,
)
from genesis_core.strategy.reference import ReferenceStrategy
from genesis_core.strategy.sma_cross import SmaCrossStrategy

__all__ = [
    "Decisions",
    "ReferenceStrategy",
    "SmaCrossStrategy",
    "Strategy",
    "StrategyTrace",
    "Training",
    "checked_decisions",
    "checked_resources",
    "checked_trained",
    "checked_warmup",
    "get_strategy",
    "register_strategy",
]

"""The classic SMA crossover, kept for comparison with other backtesting libraries."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit
from pydantic import Field, model_validator

from genesis_core.config import StrictModel
from genesis_core.features import FeatureStore, warmup_bars
from genesis_core.strategy._base import Decisions, Strategy, StrategyTrace, register_strategy


class SmaCrossParams(StrictModel):
    fast: int = Field(10, ge=1)
    slow: int = Field(20, ge=2)
    size: float = Field(1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> SmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        return self


@register_strategy
class SmaCrossStrategy(Strategy):
    """Long when the fast SMA crosses above the slow one, short when it crosses below (always in)."""

    name = "sma_cross"
    Params = SmaCrossParams

    def warmup_bars(self, params: SmaCrossParams, timeframe_seconds: int) -> int:
        return warmup_bars(f"sma:{params.slow}", timeframe_seconds) + 1

    def decide(self, features: FeatureStore, params: SmaCrossParams, start: int) -> Decisions:
        fast = features.get(f"sma:{params.fast}")
        n = len(fast)
        side, size, cold, signals = _crossings(fast, features.get(f"sma:{params.slow}"), start, params.size)
        trace = StrategyTrace(n - min(max(start, 0), n) - cold, cold, signals, signals, {})
        return replace(Decisions.empty(n, trace), side=side, size=size)


@njit(cache=True)
def _crossings(fast: np.ndarray, slow: np.ndarray, start: int, size: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """+1 where the fast average crosses above the slow one at a bar from ``start`` on, -1 where it
    crosses below (a comparison with NaN is false, as before either average exists), each with
    ``size``; how many of those bars had no slow average the bar before (cold), and how many
    crossed. One compiled pass for what took NumPy thirteen array operations."""
    n = len(fast)
    side = np.zeros(n, np.int8)
    sizes = np.zeros(n)
    cold = signals = 0
    for i in range(max(start, 0), n):
        prev_fast = fast[i - 1] if i > 0 else np.nan
        prev_slow = slow[i - 1] if i > 0 else np.nan
        if np.isnan(prev_slow):
            cold += 1
        if prev_fast < prev_slow and fast[i] > slow[i]:
            side[i] = 1
        elif prev_fast > prev_slow and fast[i] < slow[i]:
            side[i] = -1
        else:
            continue
        sizes[i] = size
        signals += 1
    return side, sizes, cold, signals

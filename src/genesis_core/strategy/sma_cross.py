"""The classic SMA crossover, kept for comparison with other backtesting libraries."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
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
        slow = features.get(f"sma:{params.slow}")
        n = len(fast)
        prev_f = np.concatenate(([np.nan], fast[:-1]))  # np.r_ takes 3x as long
        prev_s = np.concatenate(([np.nan], slow[:-1]))
        up = (prev_f < prev_s) & (fast > slow)
        down = (prev_f > prev_s) & (fast < slow)
        acted = np.arange(n) >= start
        cold = int((np.isnan(prev_s) & acted).sum())
        signals = int(((up | down) & acted).sum())
        side = np.where(up & acted, 1, np.where(down & acted, -1, 0)).astype(np.int8)
        trace = StrategyTrace(int(acted.sum()) - cold, cold, signals, signals, {})
        return replace(Decisions.empty(n, trace), side=side, size=np.where(side != 0, params.size, 0.0))

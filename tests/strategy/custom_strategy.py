"""A user strategy defined outside the package, selected as ``tests.strategy.custom_strategy:RsiReversion``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from genesis_core.config import StrictModel
from genesis_core.features import FeatureStore, warmup_bars
from genesis_core.strategy import Decisions, Strategy, StrategyTrace


class RsiParams(StrictModel):
    period: int = 14
    oversold: float = 30.0
    overbought: float = 70.0
    size: float = 0.5  # unbounded, as a user may leave it: the engine refuses what it cannot take


class RsiReversion(Strategy):
    name = "rsi_reversion"
    Params = RsiParams

    def warmup_bars(self, params: RsiParams, timeframe_seconds: int) -> int:
        return warmup_bars(f"rsi:{params.period}", timeframe_seconds)

    def decide(self, features: FeatureStore, params: RsiParams, start: int) -> Decisions:
        rsi = features.get(f"rsi:{params.period}")
        live = np.arange(len(rsi)) >= start
        side = np.where(live & (rsi < params.oversold), 1, np.where(live & (rsi > params.overbought), -1, 0)).astype(np.int8)
        n_sig = int((side != 0).sum())
        trace = StrategyTrace(int(live.sum()), 0, n_sig, n_sig)
        return replace(Decisions.empty(len(rsi), trace), side=side, size=np.where(side != 0, params.size, 0.0))

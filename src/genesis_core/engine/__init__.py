"""Execution: strategy decisions -> fills, trades and an equity curve (see ``_kernel`` for the rules)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from genesis_core.config import StrictModel
from genesis_core.data import Candles
from genesis_core.engine._kernel import COUNTER_DTYPE, COUNTERS, EXIT_REASONS, TRADE_DTYPE, CostRates, Orders, Prices, run_bars
from genesis_core.strategy import Decisions


class Costs(StrictModel):
    """Trading costs, each in basis points of notional per fill, and the starting equity."""

    fee_bps: float = Field(10.0, ge=0.0, le=1000.0)
    slippage_bps: float = Field(5.0, ge=0.0, le=1000.0)
    initial_equity: float = Field(10_000.0, gt=0.0)


@dataclass(frozen=True)
class EngineResult:
    """``equity[0]`` is the initial equity, ``equity[i]`` the equity at the close of decision bar i-1."""

    equity: np.ndarray
    trades: np.ndarray  # one record per closed trade, fields TRADE_DTYPE
    counters: dict[str, int]  # COUNTER_DTYPE's fields


def run_engine(candles: Candles, decisions: Decisions, start: int, costs: Costs) -> EngineResult:
    """Simulate bars ``start``.. of ``candles`` under ``decisions`` and ``costs``."""
    d = decisions
    equity, counters, trades = run_bars(
        Prices(candles.open, candles.high, candles.low, candles.close), start,
        Orders(d.side, d.size, d.stop_dist, d.take_dist, d.trail_dist, d.exit_long, d.exit_short, d.cooldown_bars, d.max_bars_held),
        CostRates(costs.fee_bps / 1e4, costs.slippage_bps / 1e4, costs.initial_equity),
    )
    return EngineResult(equity, trades, {name: int(counters[0][name]) for name in COUNTERS})


__all__ = ["COUNTERS", "COUNTER_DTYPE", "EXIT_REASONS", "TRADE_DTYPE", "Costs", "EngineResult", "run_engine"]

from __future__ import annotations

import math

import numpy as np
import pytest

from genesis_core.engine import TRADE_DTYPE, EngineResult
from genesis_core.metrics import DD_FLOOR, PF_CAP, compute_metrics


def _result(equity, pnls, held=None, bars_in_position=0) -> EngineResult:
    trades = np.zeros(len(pnls), TRADE_DTYPE)
    trades["pnl"] = pnls
    trades["exit_bar"] = held if held is not None else 0
    trades["fees"] = 1.5
    counters = {"bars_in_position": bars_in_position}
    return EngineResult(np.asarray(equity, dtype=float), trades, counters)


def test_hand_computed_metrics():
    m = compute_metrics(_result([100, 110, 99, 121], [10, -11, 22], held=[2, 1, 3], bars_in_position=2), 86400)
    r = np.array([0.1, -0.1, 22 / 99])
    assert m["total_return"] == pytest.approx(0.21)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(365))
    assert m["sortino"] == pytest.approx(r.mean() / math.sqrt(0.01 / 3) * math.sqrt(365))
    assert m["max_drawdown"] == pytest.approx(0.1)
    assert m["return_to_dd"] == pytest.approx(2.1)
    assert m["win_rate"] == pytest.approx(2 / 3)
    assert m["profit_factor"] == pytest.approx(32 / 11)
    assert (m["num_trades"], m["max_loss_streak"]) == (3, 1)
    assert m["avg_bars_held"] == pytest.approx(2.0)
    assert m["exposure"] == pytest.approx(2 / 3)
    assert m["total_fees"] == pytest.approx(4.5)
    assert m["classic_score"] == pytest.approx(m["sharpe"] + 0.21 + 0.25 * 2.1 + 0.2)


def test_annualisation_follows_the_timeframe():
    eq = [100, 101, 100.5, 102]
    daily = compute_metrics(_result(eq, []), 86400)["sharpe"]
    hourly = compute_metrics(_result(eq, []), 3600)["sharpe"]
    assert hourly == pytest.approx(daily * math.sqrt(24))


def test_bounds_hold_in_degenerate_cases():
    flat = compute_metrics(_result([100, 100, 100], []), 3600)
    assert (flat["sharpe"], flat["sortino"], flat["profit_factor"], flat["win_rate"], flat["return_to_dd"]) == (0, 0, 0, 0, 0)
    # a 1% gain with no drawdown: the floor keeps return/drawdown at 0.5, not infinity
    up = compute_metrics(_result([100, 100.5, 101], [1.0]), 3600)
    assert up["max_drawdown"] == 0 and up["return_to_dd"] == pytest.approx(0.01 / DD_FLOOR)
    assert up["profit_factor"] == PF_CAP and up["sortino"] == 0
    streak = compute_metrics(_result([100, 90], [-1, -2, 3, -1, -1, -1, 2]), 3600)
    assert streak["max_loss_streak"] == 3
    assert compute_metrics(_result([100, 90], [-1, -2]), 3600)["profit_factor"] == 0
    assert compute_metrics(_result([100, 90], [100, -1]), 3600)["profit_factor"] == PF_CAP

from __future__ import annotations

import math

import pytest

from genesis_core.scoring import VALID_MAX, VALID_MIN, Constraints, Outcome, Scoring, classify, score

BASE_METRICS = {"total_return": 0.1, "sharpe": 1.0, "sortino": 1.2, "max_drawdown": 0.1, "return_to_dd": 1.0,
                "win_rate": 0.5, "profit_factor": 1.5, "num_trades": 50, "avg_bars_held": 5.0, "max_loss_streak": 4,
                "exposure": 0.3, "total_fees": 10.0, "final_equity": 11000.0, "classic_score": 2.0}
BASE_TRACE = {"bars_in_window": 5000, "signals": 900, "candidates": 300}


def _m(**kw):
    return {**BASE_METRICS, **kw}


def test_each_outcome_class_and_its_penalty():
    s, c = Scoring(), Constraints()
    cases = [
        (_m(sharpe=math.nan), BASE_TRACE, Outcome.INVALID_NUMERIC, -5000),
        (_m(num_trades=0), {**BASE_TRACE, "signals": 0, "candidates": 0}, Outcome.ZERO_TRADES_SIGNAL_DEAD, -1500),
        (_m(num_trades=0), {**BASE_TRACE, "candidates": 0}, Outcome.ZERO_TRADES_BLOCKED, -2000),
        (_m(num_trades=0), BASE_TRACE, Outcome.EXECUTION_BLOCKED, -2200),
    ]
    for metrics, trace, outcome, penalty in cases:
        assert classify(metrics, trace) is outcome
        result = score(metrics, trace, s, c)
        assert result.outcome is outcome and result.feasibility == result.production == penalty


def test_production_score_hand_computed_and_bounded():
    r = score(BASE_METRICS, BASE_TRACE, Scoring(), Constraints())
    assert r.outcome is Outcome.VALID and r.constraints_failed == ()
    assert r.production == pytest.approx(100 * 0.1 - 60 * 0.1 + 10 * math.log1p(1.5))
    # trade rate 10 per 1000 bars inside [2, 40], DD under 0.25, hold 5 >= 2: fully feasible
    assert r.feasibility == 1.0
    worst = score(_m(total_return=-1.0, max_drawdown=1.0, profit_factor=0.0, max_loss_streak=500, num_trades=4999),
                  BASE_TRACE, Scoring(), Constraints(max_drawdown=0.5, min_profit_factor=1.0))
    assert VALID_MIN <= worst.production < -100 and worst.constraints_failed == ("min_profit_factor", "max_drawdown")
    assert worst.production > max(Scoring().penalties.model_dump().values())  # any real result beats every penalty
    best = score(_m(total_return=1e6), BASE_TRACE, Scoring(), Constraints())
    assert best.production <= VALID_MAX


def test_feasibility_falls_off_outside_targets_and_classic_objective():
    slow = score(_m(num_trades=5, max_drawdown=0.5, avg_bars_held=1.0), BASE_TRACE, Scoring(), Constraints(min_trades=0))
    # rate 1/1000 vs lo 2 -> 0.5; dd 0.5 vs 0.25 -> 0.5; hold 1 vs 2 -> 0.5
    assert slow.feasibility == pytest.approx(0.5)
    classic = score(BASE_METRICS, BASE_TRACE, Scoring(objective="classic"), Constraints())
    assert classic.production == BASE_METRICS["classic_score"]
    few = score(_m(num_trades=5), BASE_TRACE, Scoring(), Constraints(min_trades=10))
    assert few.constraints_failed == ("min_trades",)
    assert few.production == pytest.approx(score(_m(num_trades=5), BASE_TRACE, Scoring(), Constraints(min_trades=0)).production - 100)


def test_checkpoints_use_only_their_prefix():
    import numpy as np

    from genesis_core.scoring import Pruning, checkpoints, prune_reason

    equity = np.array([100.0, 110.0, 99.0, 99.0, 120.0])  # 4 decision bars
    exit_bars = np.array([0, 1, 3])
    pnls = np.array([-1.0, -2.0, 5.0])
    p1, p2 = checkpoints(equity, exit_bars, pnls, 2)
    assert (p1.bar, p1.trades, p1.max_loss_streak) == (2, 2, 2)  # trades exiting on bars 0 and 1
    assert p1.total_return == pytest.approx(-0.01) and p1.max_drawdown == pytest.approx(0.1)
    assert (p2.bar, p2.trades, p2.total_return) == (4, 3, pytest.approx(0.2))
    assert prune_reason([p1, p2], 10, Pruning()) is None  # off unless enabled
    assert prune_reason([p1, p2], 0, Pruning(enabled=True)) == (0, "no signals")
    assert prune_reason([p1, p2], 10, Pruning(enabled=True, max_drawdown=0.05))[0] == 0
    assert prune_reason([p1, p2], 10, Pruning(enabled=True, max_loss_streak=1))[1] == "2 losses in a row by bar 2 (limit 1)"
    assert prune_reason([p1, p2], 10, Pruning(enabled=True, audit_bars=2)) is None  # two trades by bar 2

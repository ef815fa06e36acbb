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


def test_a_best_trial_that_lost_money_is_said_with_what_the_score_paid_it(tmp_path):
    """The default score pays any config that trades 10·log1p(PF) for its profit factor, and its
    return and drawdown terms shrink with the position size: an SMA crossover in 2022 swept with its
    size at 1% and 100% of equity is best at 1%, losing money. `genesis sweep` (as `optimize`) says
    so after its search, and `runs show` and the run's page say it again (the MCP server's
    `show_run` says what `runs show` does: tests/test_mcp_server.py)."""
    import html

    import yaml

    from genesis_core.records import RunFolder
    from genesis_core.report import run_report
    from tests.optimizer.test_optimizer import ROOT
    from tests.runs import genesis

    space = {"fast": {"type": "categorical", "choices": [10, 20]}, "slow": {"type": "categorical", "choices": [50, 100]},
             "size": {"type": "categorical", "choices": [0.01, 1.0]}}

    def swept(name: str, min_profit_factor: float):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "meta": {"base_config": str(ROOT / "configs" / "sma_cross.yaml"), "data": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                     "sample_start": "2022-01-01", "sample_end": "2022-12-31", "study_name": name,
                     "results_dir": str(tmp_path / "results"), "stop": {"max_trials": 100}},
            "parameters": space, "constraints": {"min_trades": 10, "min_profit_factor": min_profit_factor}}))
        proc = genesis("sweep", str(path), "--method", "grid", "--workers", "1", "--skip-preflight")
        assert proc.returncode == 0, proc.stderr
        return proc, RunFolder(tmp_path / "results" / "runs" / name)

    proc, folder = swept("sizes", 0.0)
    best = folder.read_best()
    metrics = best.result.metrics
    full = [r for r in folder.read_trials_table() if r.params["size"] == 1.0]
    assert best.params["size"] == 0.01 and metrics["total_return"] < 0 and len(full) == 4  # every full-size config scored lower
    assert all(r.production_score < best.production_score for r in full)
    line = (f"warning: the best trial, #{best.number}, lost money (total_return {metrics['total_return']:+.2%}, profit factor "
            f"{metrics['profit_factor']:.4f}) and still scored {best.production_score:.4f}: the production score pays a losing "
            f"config {10 * math.log1p(metrics['profit_factor']):+.2f} for its profit factor (10·log1p(PF)), and its return and "
            "drawdown terms shrink with the position size; constraints.min_profit_factor: 1.0 (it is 0.0) counts losing configs "
            "as failing")
    assert line in proc.stderr.splitlines()
    assert line in genesis("runs", "show", str(folder.path)).stderr.splitlines()
    assert html.escape(line.removeprefix("warning: ")) in run_report(folder)  # under "Read with care"

    proc, folder = swept("floored", 1.0)  # losing configs fail the constraint: the best still lost, nothing to set
    assert f"and still scored {folder.read_best().production_score:.4f}: the production score pays" in proc.stderr
    assert "counts losing configs as failing" not in proc.stderr

from __future__ import annotations

import math
import warnings

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
    m = compute_metrics(_result([100, 110, 99, 121], [10, -11, 22], held=[2, 1, 3], bars_in_position=2), 365)
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


def test_annualisation_follows_the_bars_a_year():
    eq = [100, 101, 100.5, 102]
    daily = compute_metrics(_result(eq, []), 365)["sharpe"]
    hourly = compute_metrics(_result(eq, []), 8760)["sharpe"]
    assert hourly == pytest.approx(daily * math.sqrt(24))


def test_bounds_hold_in_degenerate_cases():
    flat = compute_metrics(_result([100, 100, 100], []), 8760)
    assert (flat["sharpe"], flat["sortino"], flat["profit_factor"], flat["win_rate"], flat["return_to_dd"]) == (0, 0, 0, 0, 0)
    # a 1% gain with no drawdown: the floor keeps return/drawdown at 0.5, not infinity
    up = compute_metrics(_result([100, 100.5, 101], [1.0]), 8760)
    assert up["max_drawdown"] == 0 and up["return_to_dd"] == pytest.approx(0.01 / DD_FLOOR)
    assert up["profit_factor"] == PF_CAP and up["sortino"] == 0
    streak = compute_metrics(_result([100, 90], [-1, -2, 3, -1, -1, -1, 2]), 8760)
    assert streak["max_loss_streak"] == 3
    assert compute_metrics(_result([100, 90], [-1, -2]), 8760)["profit_factor"] == 0
    assert compute_metrics(_result([100, 90], [100, -1]), 8760)["profit_factor"] == PF_CAP


def _numpy_max_drawdown(equity: np.ndarray) -> float:
    """The definition, as NumPy computed it before the compiled pass."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.max(1.0 - equity / np.maximum.accumulate(equity)))


def _numpy_max_streak(losing: np.ndarray) -> int:
    padded = np.zeros(len(losing) + 2, np.int8)
    padded[1:-1] = losing
    edges = np.diff(padded)
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max(initial=0))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


def test_max_drawdown_and_max_streak_are_numpy_s_bit_for_bit_on_real_curves_and_absurd_ones(btc):
    """The compiled passes give NumPy's bits: on the real BTC/USD closes (all 49,724 and each
    year), the equity of real SMA backtests and their losing-trade flags, and curves with a NaN, an
    infinity, zeros and negative values, where NaN anywhere after it is the answer."""
    from genesis_core.backtest import Backtester, build_config
    from genesis_core.config import read_config_file
    from genesis_core.metrics import max_drawdown, max_streak
    from tests.conftest import ROOT

    curves = [btc.close, *(btc.close[i:i + 8760] for i in range(0, len(btc.close), 8760))]
    flags = []
    bt = Backtester()
    base = read_config_file(str(ROOT / "configs/sma_cross.yaml"))
    for fast, slow in ((5, 20), (10, 50), (24, 100), (50, 200)):
        result = bt.run(build_config(base, overrides={"params": {"fast": fast, "slow": slow}}))
        curves.append(result.engine.equity)
        flags.append(result.engine.trades["pnl"] < 0)
    assert min(_numpy_max_drawdown(c) for c in curves) > 0.05 and max(_numpy_max_streak(f) for f in flags) >= 5
    absurd = [np.array([1.0]), np.array([0.0]), np.array([0.0, 1.0, 0.5]), np.array([-1.0, -2.0, 3.0, -1.0]),
              np.array([1.0, 2.0, np.nan, 3.0, 1.0]), np.array([np.nan, 1.0]), np.array([1.0, np.inf, 2.0]),
              np.array([1.0, 0.5, -np.inf]), np.array([2.0, 1.0, 0.0, -0.0]), np.array([-0.0, 0.0, 1.0])]
    for curve in curves + absurd:
        assert _same(max_drawdown(curve), _numpy_max_drawdown(curve)), curve
    rng = np.random.default_rng(7)
    flags += [np.array([], bool), np.ones(9, bool), np.zeros(9, bool), *(rng.random(n) < 0.6 for n in range(1, 200))]
    for f in flags:
        assert max_streak(f) == _numpy_max_streak(f)
    with pytest.raises(ValueError):
        max_drawdown(np.array([]))


def _numpy_return_and_trade_metrics(result: EngineResult, periods: float) -> dict[str, float]:
    """The definitions, as NumPy computed them before the compiled passes."""
    eq, pnl = result.equity, result.trades["pnl"]
    bars = len(eq) - 1
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = np.where(eq[:-1] != 0.0, eq[1:] / eq[:-1] - 1.0, 0.0)  # 0 from an equity of 0 (liquidated)
        std = float(r.std(ddof=1)) if bars >= 2 else 0.0
        mean = r.mean() if bars else np.nan
        downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))) if bars else 0.0
    wins, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    return {
        "sharpe": float(mean / std * math.sqrt(periods)) if std > 0 else 0.0,
        "sortino": float(mean / downside * math.sqrt(periods)) if downside > 0 else 0.0,
        "win_rate": float((pnl > 0).mean()) if len(pnl) else 0.0,
        "profit_factor": 0.0 if wins <= 0 else PF_CAP if losses <= 0 else float(min(wins / losses, PF_CAP)),
        "total_fees": float(result.trades["fees"].sum()),
        "avg_bars_held": float((result.trades["exit_bar"] - result.trades["entry_bar"]).mean()) if len(pnl) else 0.0,
        "max_loss_streak": _numpy_max_streak(pnl < 0),
    }


def test_return_and_trade_metrics_are_numpy_s_bit_for_bit_on_real_backtests_and_absurd_curves(btc):
    """Sharpe, Sortino, win rate, profit factor, fees, bars held and the losing streak from the
    compiled passes equal NumPy's definitions bit for bit: on real SMA backtests over each year of BTC/USD (their equity and
    trades), on the closes themselves as equity at four timeframes, and on curves of one to a few
    hundred bars with NaN, infinity, zeros, negatives and flat stretches; and the compiled sum is
    ``np.add.reduce`` at every length across its block and halving boundaries, strided and of -0.0s."""
    from genesis_core.backtest import Backtester, build_config
    from genesis_core.config import read_config_file
    from genesis_core.metrics import _sum
    from tests.conftest import ROOT

    results = []
    bt = Backtester()
    base = read_config_file(str(ROOT / "configs/sma_cross.yaml"))
    for year in range(2019, 2024):
        for fast, slow in ((5, 20), (10, 50), (24, 100)):
            over = {"params": {"fast": fast, "slow": slow}, "data": {"start": f"{year}-01-01", "end": f"{year}-12-31"}}
            results.append(bt.run(build_config(base, overrides=over)).engine)
    assert min(len(r.trades) for r in results) > 20 and {(r.trades["pnl"] > 0).any() for r in results} == {True}
    no_trades = np.zeros(0, TRADE_DTYPE)
    results += [EngineResult(btc.close[i:i + 8760], no_trades, {"bars_in_position": 0}) for i in range(0, len(btc.close), 8760)]
    rng = np.random.default_rng(11)
    absurd = [[100.0], [100.0, 100.0], [100.0, 90.0], [100.0, 100.0, 100.0], [1.0, 2.0, np.nan, 3.0], [np.nan, 1.0, 2.0],
              [1.0, np.inf, 2.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 2.0, -3.0], [2.0, 1.0, 0.0, -0.0],
              *(100 * np.cumprod(1 + rng.normal(0, 0.01, n)) for n in (2, 3, 8, 9, 127, 128, 129, 130, 255, 257, 1000))]
    trades = [results[0].trades, no_trades, results[1].trades[:3]]
    for i, curve in enumerate(absurd):
        t = trades[i % 3].copy()
        t["pnl"][: len(t) // 2] = np.where(rng.random(len(t) // 2) < 0.2, np.nan, t["pnl"][: len(t) // 2])
        t["pnl"][len(t) // 2:] = np.where(rng.random(len(t) - len(t) // 2) < 0.3, 0.0, t["pnl"][len(t) // 2:])  # break-evens
        results.append(EngineResult(np.asarray(curve, dtype=float), t, {"bars_in_position": 0}))
    for result in results:
        for periods in (8760, 365):
            with np.errstate(all="ignore"):  # absurd curves: a total return of 0 / 0
                mine = compute_metrics(result, periods)
            for name, value in _numpy_return_and_trade_metrics(result, periods).items():
                assert _same(mine[name], value), (name, mine[name], value, len(result.equity))
    structured = np.zeros(4000, TRADE_DTYPE)
    structured["pnl"] = rng.standard_normal(4000) * 10.0 ** rng.integers(-6, 6, 4000)
    for n in [*range(0, 300), 1000, 1024, 1031, 8756, 8757, 16384, 49723]:
        for a in (rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n), structured["pnl"][: min(n, 4000)], -np.zeros(n)):
            assert np.add.reduce(a).tobytes() == np.float64(_sum(a)).tobytes(), n

"""SMA(10/20) crossover against backtesting.py on its own bundled GOOG daily data.

Fill rules compared (documented in README):
- both fill market orders at the next bar's open and reverse a position at one open;
- both size so that notional plus commission equals the equity committed; backtesting.py trades
  whole shares, Genesis-Core fractional units, so sizes agree to 0.01%;
- a position still open at the end: backtesting.py (finalize_trades) closes it at the last bar's
  open, Genesis-Core at the last bar's close. So every trade matches except that last exit
  price, and equity agrees to whole-share rounding until the last trade's entry.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tqdm.std
from backtesting import Backtest  # a dev dependency: installed wherever the tests run
from backtesting.test import GOOG

from genesis_core.backtest import Backtester, build_config
from genesis_core.records import backtest_record
from tests.sma_cross_backtesting_py import SmaCross

CASH = 1_000_000_000  # large, so whole-share rounding is negligible
# backtesting.py's progress bar would start tqdm's monitor thread, which outlives the test: a later
# test's session then spawns its workers (forking is safe only with no other thread) and the tests
# that assert a fork fail when run after this module
tqdm.std.tqdm.monitor_interval = 0


@pytest.fixture(scope="module")
def goog_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("goog") / "goog.csv"
    GOOG.rename(columns=str.lower).rename_axis("timestamp").to_csv(path)
    return path


@pytest.mark.parametrize("commission", [0.0, 0.002])
def test_sma_cross_matches_backtesting_py(goog_csv, commission):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(GOOG, SmaCross, cash=CASH, commission=commission, finalize_trades=True).run()
    theirs = stats._trades
    cfg = build_config({
        "strategy": "sma_cross", "params": {"fast": 10, "slow": 20}, "data": {"path": str(goog_csv)},
        "costs": {"fee_bps": commission * 1e4, "slippage_bps": 0, "initial_equity": CASH},
    })
    result = Backtester().run(cfg)
    ours = [t.model_dump() for t in backtest_record(result).trades or []]

    assert len(ours) == len(theirs) == 94
    assert [t["entry_time"][:10] for t in ours] == [str(x.date()) for x in theirs["EntryTime"]]
    assert [t["exit_time"][:10] for t in ours] == [str(x.date()) for x in theirs["ExitTime"]]
    assert np.array_equal([t["entry_price"] for t in ours], theirs["EntryPrice"].to_numpy())
    assert np.array_equal([t["exit_price"] for t in ours][:-1], theirs["ExitPrice"].to_numpy()[:-1])
    # whole shares there, fractional units here; after 90 compounding trades sizes still agree to 0.01%
    assert np.allclose([t["units"] for t in ours], theirs["Size"].abs().to_numpy(), rtol=1e-4)
    # equity at the last trade's entry: within 0.01% (whole shares vs fractional units)
    last_entry = theirs["EntryBar"].iloc[-1]
    their_eq = stats._equity_curve["Equity"].iloc[last_entry]
    our_eq = result.engine.equity[last_entry - result.window.start_index + 1]
    assert our_eq == pytest.approx(their_eq, rel=1e-4)
    # final equity: theirs plus the last position's move from the last open (their exit) to the
    # last close (ours), the exit fee taken on our exit price
    units, side = abs(theirs["Size"].iloc[-1]), np.sign(theirs["Size"].iloc[-1])
    last_open, last_close = GOOG["Open"].iloc[-1], GOOG["Close"].iloc[-1]
    expected = stats["Equity Final [$]"] + units * (side * (last_close - last_open) - commission * (last_close - last_open))
    assert result.metrics["final_equity"] == pytest.approx(expected, rel=1e-4)
    assert result.metrics["total_return"] == pytest.approx(expected / CASH - 1, rel=1e-4)

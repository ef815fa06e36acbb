"""Hand-computed engine cases: every number below is worked out from the rules in engine/_kernel.py."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from genesis_core.data import Candles
from genesis_core.engine import EXIT_REASONS, Costs, run_engine
from genesis_core.errors import StrategyError
from genesis_core.strategy import Decisions, StrategyTrace
from tests.conftest import make_candles

NO_COST = Costs(fee_bps=0, slippage_bps=0, initial_equity=10_000)


def _decisions(n: int, **bars) -> Decisions:
    """Decisions with entries given as {bar: (side, size, stop, take, trail)} and exit bar lists."""
    d = Decisions.empty(n, StrategyTrace(n, 0, 0, 0))
    side, size = d.side.copy(), d.size.copy()
    stop, take, trail = d.stop_dist.copy(), d.take_dist.copy(), d.trail_dist.copy()
    for t, (s, f, sd, td, tr) in bars.get("entries", {}).items():
        side[t], size[t], stop[t], take[t], trail[t] = s, f, sd, td, tr
    el, es = d.exit_long.copy(), d.exit_short.copy()
    el[bars.get("exit_long", [])] = True
    es[bars.get("exit_short", [])] = True
    return replace(d, side=side, size=size, stop_dist=stop, take_dist=take, trail_dist=trail, exit_long=el, exit_short=es,
                   cooldown_bars=bars.get("cooldown", 0), max_bars_held=bars.get("max_hold", 0))


def _trades(result):
    names = ("entry_bar", "exit_bar", "side", "entry_price", "exit_price", "units", "pnl", "fees", "exit_reason", "carry")
    return [dict(zip(names, row, strict=True)) for row in result.trades.tolist()]


NAN = np.nan


def test_long_round_trip_with_fees_and_slippage():
    c = make_candles([100, 100, 110, 120], [101, 106, 116, 121], [99, 99, 109, 119], [100, 105, 115, 120])
    d = _decisions(4, entries={0: (1, 1.0, NAN, NAN, NAN)}, exit_long=[2])
    r = run_engine(c, d, 0, Costs(fee_bps=10, slippage_bps=10, initial_equity=10_000))
    (t,) = _trades(r)
    units = 10_000 / (100.1 * 1.001)  # notional + fee = the whole equity
    entry_fee = units * 100.1 * 0.001
    exit_px = 120 * 0.999
    exit_fee = units * exit_px * 0.001
    assert t["entry_bar"] == 1 and t["exit_bar"] == 3
    assert t["entry_price"] == pytest.approx(100.1) and t["exit_price"] == pytest.approx(exit_px)
    assert t["pnl"] == pytest.approx(units * (exit_px - 100.1) - entry_fee - exit_fee)
    assert t["fees"] == pytest.approx(entry_fee + exit_fee)
    assert EXIT_REASONS[int(t["exit_reason"])] == "exit_signal"
    assert r.equity[0] == 10_000 and r.equity[1] == 10_000  # nothing held during bar 0
    assert r.equity[2] == pytest.approx(10_000 - units * 100.1 - entry_fee + units * 105)  # marked at bar 1's close
    assert r.equity[-1] == pytest.approx(10_000 + t["pnl"])
    assert r.counters["orders"] == 2 and r.counters["fills"] == 2 and r.counters["bars_in_position"] == 2


def test_short_profits_when_price_falls():
    c = make_candles([100, 100, 90, 80], [101, 101, 91, 81], [99, 89, 79, 79], [100, 90, 80, 80])
    d = _decisions(4, entries={0: (-1, 0.5, NAN, NAN, NAN)}, exit_short=[2])
    r = run_engine(c, d, 0, Costs(fee_bps=0, slippage_bps=20, initial_equity=10_000))
    (t,) = _trades(r)
    entry = 100 * (1 - 0.002)
    exit_ = 80 * (1 + 0.002)
    units = 5_000 / entry
    assert t["side"] == -1 and t["entry_price"] == pytest.approx(entry) and t["exit_price"] == pytest.approx(exit_)
    assert t["pnl"] == pytest.approx(units * (entry - exit_))
    assert r.equity[-1] == pytest.approx(10_000 + t["pnl"])


def test_carry_is_paid_at_each_close_a_position_is_held_through_by_its_side_s_rate():
    """A short pays borrow (or funding) on its value at each close it is held through; a long may
    receive it. 24 bps a day is 1 bp an hourly bar. The trade's pnl is net of it, and so the equity."""
    c = make_candles([100, 100, 90, 80, 80, 80], [101, 101, 91, 81, 81, 81], [99, 89, 79, 79, 79, 79],
                     [100, 90, 80, 80, 80, 80])
    costs = Costs(fee_bps=0, slippage_bps=0, initial_equity=10_000, carry_bps_per_day={"long": -12, "short": 24})
    r = run_engine(c, _decisions(6, entries={0: (-1, 0.5, NAN, NAN, NAN), 3: (1, 1.0, NAN, 0.5, NAN)}, exit_short=[2]), 0, costs)
    short, long_ = _trades(r)
    units = 5_000 / 100
    paid = units * (90 + 80) * 1e-4  # held through the closes of bars 1 and 2, out at bar 3's open
    assert (short["entry_bar"], short["exit_bar"]) == (1, 3) and short["carry"] == pytest.approx(paid)
    assert short["pnl"] == pytest.approx(units * (100 - 80) - paid)
    assert r.equity[2] == pytest.approx(10_000 + units * (100 - 90) - units * 90 * 1e-4)  # bar 1's close, its carry paid
    # the long enters at bar 4's open and its target (80.5) is hit inside bar 4: no close held through, no carry
    assert (long_["entry_bar"], long_["exit_bar"], EXIT_REASONS[int(long_["exit_reason"])], long_["carry"]) == (4, 4, "take_profit", 0)
    assert r.equity[-1] == pytest.approx(10_000 + short["pnl"] + long_["pnl"])
    held = run_engine(c, _decisions(6, entries={3: (1, 1.0, NAN, NAN, NAN)}), 0, costs)
    (t,) = _trades(held)  # held through the close of bar 4, out at the last bar's close: received for one bar
    units = 10_000 / 80
    assert (t["exit_bar"], EXIT_REASONS[int(t["exit_reason"])]) == (5, "end_of_window")
    assert t["carry"] == pytest.approx(-units * 80 * 0.5e-4) and t["pnl"] == pytest.approx(-t["carry"])


def test_carry_is_paid_for_the_time_held_over_a_gap_in_the_data_and_a_weekend():
    """Borrow and funding accrue by the day, not by the bar: a short held over five missing hours
    paid for one, and a stock's short held over a weekend on daily bars paid for one day of three
    (252 trading days a year undercharged a year's borrow by 31%)."""
    hour, day = 3600, 86_400
    gapped = Candles(1_640_995_200 + hour * np.array([0, 1, 2, 7, 8, 9]), *(np.full(6, 100.0),) * 4, np.ones(6), hour)
    costs = Costs(fee_bps=0, slippage_bps=0, initial_equity=10_000, carry_bps_per_day={"short": 24, "long": 48})
    r = run_engine(gapped, _decisions(6, entries={0: (-1, 1.0, NAN, NAN, NAN)}, exit_short=[3]), 0, costs)
    (t,) = _trades(r)
    assert (t["entry_bar"], t["exit_bar"]) == (1, 4)  # held through the closes of bars 1, 2 (5 h to the next) and 3
    assert t["carry"] == pytest.approx(100 * 100 * 24e-4 * 7 / 24)  # 7 hours from its entry's open to its exit's
    assert r.equity[3] == pytest.approx(10_000 - 100 * 100 * 24e-4 * 6 / 24)  # bar 2's close paid 5 hours
    thursday = 1_704_326_400  # 2024-01-04, daily bars of a market closed at weekends: Thu, Fri, Mon, Tue, Wed
    closes = np.array([100.0, 101.0, 102.0, 103.0, 104.0])
    stock = Candles(thursday + day * np.array([0, 1, 4, 5, 6]), closes, closes + 1, closes - 1, closes, np.ones(5), day)
    r = run_engine(stock, _decisions(5, entries={0: (1, 1.0, NAN, NAN, NAN)}), 0, costs)
    (t,) = _trades(r)  # in at Friday's open, out at the last bar's close: held through Friday's, Monday's and Tuesday's
    units = 10_000 / 101
    assert t["carry"] == pytest.approx(units * (101 * 3 + 102 + 103) * 48e-4)


def test_a_carry_that_takes_the_last_of_the_equity_liquidates_at_that_close():
    """A short of all the equity at 100, no fees: the equity is gone at 200. Bar 1 rises to 199.995
    and closes at 199.99, leaving 1 of equity; its carry (100 bps a day, 1/24 of it an hour: 8.33)
    marked the account at -7.33, below zero, until the next bar's open liquidated it."""
    c = make_candles([100, 100, 199.99, 199.99], [101, 199.995, 200.5, 200.5], [99, 99, 199, 199], [100, 199.99, 199.99, 199.99])
    costs = Costs(fee_bps=0, slippage_bps=0, initial_equity=10_000, carry_bps_per_day={"short": 100})
    r = run_engine(c, _decisions(4, entries={0: (-1, 1.0, NAN, NAN, NAN)}), 0, costs)
    (t,) = _trades(r)
    paid = 100 * 199.99 * 100 / 1e4 / 24
    assert (t["exit_bar"], t["exit_price"], EXIT_REASONS[int(t["exit_reason"])]) == (1, 199.99, "liquidation")
    assert t["carry"] == pytest.approx(paid) and t["pnl"] == pytest.approx(100 * (100 - 199.99) - paid)
    assert list(r.equity) == [10_000, 10_000, 0, 0, 0] and r.counters["fills"] == 2


def test_no_carry_is_serialised_and_fingerprinted_as_configs_were_before_carry():
    """A config without carry must read, fingerprint and sign as before carry was modelled: its
    study resumes and its trials re-run identical. With carry it is another config."""
    from genesis_core.backtest import Backtester, build_config

    assert set(Costs().model_dump()) == {"fee_bps", "slippage_bps", "initial_equity"}
    base = build_config({"data": {"start": "2022-03-01", "end": "2022-03-31"}})
    assert "carry_bps_per_day" not in base.model_dump(mode="json")["costs"]
    carried = build_config({"data": {"start": "2022-03-01", "end": "2022-03-31"}, "costs": {"carry_bps_per_day": {"short": 5}}})
    assert carried.model_dump(mode="json")["costs"]["carry_bps_per_day"] == {"long": 0.0, "short": 5.0}
    assert build_config(carried.model_dump(mode="json")) == carried
    bt = Backtester()
    assert bt.plan(base).config_fingerprint != bt.plan(carried).config_fingerprint


@pytest.mark.parametrize(
    ("bar1", "expected_px", "reason"),
    [
        ((100, 101, 94, 96), 95.0, "stop_loss"),  # low crosses the stop
        ((100, 106, 99, 104), 105.0, "take_profit"),  # high crosses the target
        ((100, 106, 94, 100), 95.0, "stop_loss"),  # both inside one bar: the stop is assumed first
    ],
)
def test_stop_and_target_inside_the_entry_bar(bar1, expected_px, reason):
    o, h, lo, cl = bar1
    c = make_candles([100, o, 100], [100, h, 100], [100, lo, 100], [100, cl, 100])
    r = run_engine(c, _decisions(3, entries={0: (1, 1.0, 5.0, 5.0, NAN)}), 0, NO_COST)
    (t,) = _trades(r)
    assert t["exit_bar"] == 1 and t["exit_price"] == expected_px and EXIT_REASONS[int(t["exit_reason"])] == reason


def test_a_gap_through_the_stop_fills_at_the_open():
    c = make_candles([100, 100, 90, 90], [100, 101, 91, 91], [100, 99, 89, 89], [100, 100, 90, 90])
    r = run_engine(c, _decisions(4, entries={0: (1, 1.0, 5.0, NAN, NAN)}), 0, NO_COST)
    (t,) = _trades(r)
    assert (t["exit_bar"], t["exit_price"], EXIT_REASONS[int(t["exit_reason"])]) == (2, 90.0, "stop_loss")


def test_short_stop_is_above_the_entry():
    c = make_candles([100, 100, 100], [100, 104, 108], [100, 99, 99], [100, 103, 107])
    r = run_engine(c, _decisions(3, entries={0: (-1, 1.0, 5.0, NAN, NAN)}), 0, NO_COST)
    (t,) = _trades(r)
    assert (t["exit_bar"], t["exit_price"], EXIT_REASONS[int(t["exit_reason"])]) == (2, 105.0, "stop_loss")
    assert t["pnl"] == pytest.approx(-100 * 5.0)


def test_trailing_stop_moves_after_the_close_and_not_within_the_bar():
    # entry at 100 with a 5-wide trail (95); bar 1 reaches 110 and dips to 104: no exit, the level
    # only moves to 105 after bar 1; bar 2 dips to 104 and exits at 105.
    c = make_candles([100, 100, 108, 108], [100, 110, 109, 109], [100, 104, 104, 104], [100, 108, 106, 106])
    r = run_engine(c, _decisions(4, entries={0: (1, 1.0, 20.0, NAN, 5.0)}), 0, NO_COST)
    (t,) = _trades(r)
    assert (t["exit_bar"], t["exit_price"], EXIT_REASONS[int(t["exit_reason"])]) == (2, 105.0, "trailing_stop")


def test_max_bars_held_exits_at_the_next_open():
    c = make_candles([100] * 6, [101] * 6, [99] * 6, [100] * 6)
    r = run_engine(c, _decisions(6, entries={0: (1, 1.0, NAN, NAN, NAN)}, max_hold=2), 0, NO_COST)
    (t,) = _trades(r)
    assert (t["entry_bar"], t["exit_bar"], EXIT_REASONS[int(t["exit_reason"])]) == (1, 3, "max_bars_held")


def test_opposite_candidate_reverses_at_one_open():
    c = make_candles([100, 100, 102, 104, 103], [101, 101, 103, 105, 104], [99, 99, 101, 103, 102], [100, 101, 103, 104, 103])
    d = _decisions(5, entries={0: (1, 1.0, NAN, NAN, NAN), 2: (-1, 1.0, NAN, NAN, NAN)})
    r = run_engine(c, d, 0, NO_COST)
    first, second = _trades(r)
    assert (first["side"], first["exit_bar"], EXIT_REASONS[int(first["exit_reason"])]) == (1, 3, "reverse")
    assert (second["side"], second["entry_bar"], second["exit_bar"]) == (-1, 3, 4)
    assert EXIT_REASONS[int(second["exit_reason"])] == "end_of_window"
    assert second["exit_price"] == 103.0  # closed at the last close


def test_in_position_and_cooldown_blocks():
    c = make_candles([100] * 8, [101] * 8, [99] * 8, [100] * 8)
    long = (1, 1.0, NAN, NAN, NAN)
    d = _decisions(8, entries={0: long, 1: long, 2: long, 3: long}, exit_long=[1], cooldown=2)
    r = run_engine(c, d, 0, NO_COST)
    trades = _trades(r)
    # bar 1: exit ordered; the long candidate would fill at the exit's bar 2 -> cooldown
    # bar 2: fills at 3, one bar after the exit -> cooldown; bar 3: fills at 4, two bars -> allowed
    assert [(t["entry_bar"], t["exit_bar"]) for t in trades] == [(1, 2), (4, 7)]
    assert r.counters["blocked_cooldown"] == 2 and r.counters["blocked_in_position"] == 0
    d2 = _decisions(8, entries={0: long, 1: long, 2: long})
    r2 = run_engine(c, d2, 0, NO_COST)
    assert r2.counters["blocked_in_position"] == 2 and len(_trades(r2)) == 1


def test_decisions_before_start_and_on_the_last_bar_never_fill():
    c = make_candles([100] * 5, [101] * 5, [99] * 5, [100] * 5)
    long = (1, 1.0, NAN, NAN, NAN)
    r = run_engine(c, _decisions(5, entries={0: long, 4: long}), 2, NO_COST)
    assert len(r.trades) == 0 and r.counters["orders"] == 0 and len(r.equity) == 4
    assert np.all(r.equity == 10_000)


@pytest.mark.parametrize(("bar3", "stop", "expected_px", "reason"), [
    ((140, 210, 135, 195), NAN, 200.0, "liquidation"),  # the high reaches where the equity is gone
    ((250, 260, 240, 255), NAN, 250.0, "liquidation"),  # it opens beyond: filled at the open, the rest not owed
    ((140, 210, 135, 195), 50.0, 150.0, "stop_loss"),  # a stop before it closes the short first
    ((140, 210, 135, 195), 150.0, 200.0, "liquidation"),  # a stop beyond it comes too late
])
def test_a_short_that_would_lose_more_than_the_equity_is_liquidated_and_the_account_trades_no_more(bar3, stop, expected_px,
                                                                                                    reason):
    """A short of all the equity at 100, no costs: cash 20,000 for 100 units, so the equity is gone
    at 200. It used to be marked on: BTC/USD shorted from 2020-10 lost 4.3 times the equity, and
    the returns of a negative equity gave a Sharpe of +2.1 (see the next test)."""
    c = make_candles([100, 100, 120, bar3[0], 150, 150], [101, 101, 130, bar3[1], 151, 151], [99, 99, 110, bar3[2], 149, 149],
                     [100, 100, 120, bar3[3], 150, 150])
    d = _decisions(6, entries={0: (-1, 1.0, stop, NAN, NAN), 4: (1, 1.0, NAN, NAN, NAN)})
    r = run_engine(c, d, 0, NO_COST)
    t = _trades(r)[0]
    assert (t["side"], t["entry_price"], t["exit_bar"], t["exit_price"]) == (-1, 100.0, 3, expected_px)
    assert EXIT_REASONS[int(t["exit_reason"])] == reason and t["pnl"] == pytest.approx(-100 * (expected_px - 100))
    if reason == "liquidation":  # nothing after: the long decided at bar 4 never fills
        assert list(r.equity) == [10_000, 10_000, 10_000, 8_000, 0, 0, 0] and r.counters["fills"] == 2
    else:  # the long at bar 5's open, closed at its close
        assert r.equity[-1] == 10_000 - 100 * 50 and r.counters["fills"] == 4


def test_an_exit_ordered_for_a_bar_that_opens_beyond_the_liquidation_level_comes_too_late():
    """The same short, its exit signalled at bar 2's close: bar 3 opens at 250, beyond 200. The exit
    filled there and left the account at -5,000, marked on below zero; now the bar's open
    liquidates it first, and the equity is 0."""
    c = make_candles([100, 100, 120, 250, 150], [101, 101, 130, 260, 151], [99, 99, 110, 240, 149], [100, 100, 120, 255, 150])
    r = run_engine(c, _decisions(5, entries={0: (-1, 1.0, NAN, NAN, NAN)}, exit_short=[2]), 0, NO_COST)
    (t,) = _trades(r)
    assert (t["exit_bar"], t["exit_price"], EXIT_REASONS[int(t["exit_reason"])]) == (3, 250.0, "liquidation")
    assert list(r.equity) == [10_000, 10_000, 10_000, 8_000, 0, 0]


def test_a_short_of_btc_through_its_2020_rise_loses_the_equity_once_with_costs_and_a_negative_sharpe(btc):
    """Short all the equity at 2020-10-01's open and hold: the kernel closes it on the first bar
    whose high reaches the price where the exit, with its slippage and fee, leaves nothing. The
    account ends at 0, down 100%, and its Sharpe and Sortino are negative."""
    from genesis_core.metrics import bar_returns, compute_metrics

    candles = btc.slice(int(np.searchsorted(btc.timestamps, 1_601_510_400)) - 1, int(np.searchsorted(btc.timestamps, 1_619_827_200)))
    n = len(candles)
    side = np.zeros(n, np.int8)
    side[0] = -1
    costs = Costs(fee_bps=10, slippage_bps=5, initial_equity=10_000)
    r = run_engine(candles, replace(Decisions.empty(n, StrategyTrace(n, 0, 1, 1)), side=side, size=np.ones(n)), 0, costs)
    (t,) = _trades(r)
    entry = candles.open[1] * (1 - 0.0005)
    units = 10_000 / (entry * 1.001)
    cash = 10_000 + units * entry - units * entry * 0.001
    level = cash / (units * 1.001 * 1.0005)
    gone = 2 + int(np.flatnonzero(candles.high[2:] >= level)[0])
    assert t["entry_bar"] == 1 and t["exit_bar"] == gone and EXIT_REASONS[int(t["exit_reason"])] == "liquidation"
    assert t["exit_price"] == pytest.approx(max(level, candles.open[gone]) * 1.0005, rel=1e-12)
    assert r.equity[gone + 1] == 0.0 and not r.equity[gone + 1:].any() and r.equity[gone] > 0
    metrics = compute_metrics(r, candles.bars_per_year)
    assert metrics["total_return"] == -1.0 and metrics["max_drawdown"] == 1.0 and metrics["final_equity"] == 0.0
    assert metrics["sharpe"] < 0 and metrics["sortino"] < 0
    returns = bar_returns(r.equity)  # what validation's DSR and PBO take: 0 after the liquidation, not 0 / 0
    assert np.isfinite(returns).all() and returns[gone] == -1.0 and not returns[gone + 1:].any()
    assert metrics["sharpe"] == returns.mean() / returns.std(ddof=1) * math.sqrt(candles.bars_per_year)


START = 30  # the decisions of bars before it are never read


def _orders_on(candles: Candles) -> Decisions:
    """Real bars traded as a user's strategy might: long after an up bar, short after a down bar,
    half the equity, stops 2% away, from bar START on (NaN sizes and stops while warming up)."""
    n = len(candles)
    side = np.sign(candles.close - candles.open).astype(np.int8)
    side[:START] = 0
    distance = np.where(side != 0, 0.02 * candles.close, np.nan)
    size = np.where(np.arange(n) >= START, 0.5, np.nan)
    return replace(Decisions.empty(n, StrategyTrace(n - START, START, 0, 0)), side=side, size=size, stop_dist=distance,
                   take_dist=2 * distance)


def _at(candles: Candles, bar: int) -> str:
    return f"at {datetime.fromtimestamp(int(candles.timestamps[bar]), UTC):%Y-%m-%dT%H:%M:%SZ} (bar {bar} of the window)"


def _first_order(d: Decisions, side: int = 0) -> int:
    return START + int(np.flatnonzero(d.side[START:] if side == 0 else d.side[START:] == side)[0])


def _set(array: np.ndarray, bar: int, value) -> np.ndarray:
    out = array.astype(np.result_type(array, np.asarray(value)), copy=True)
    out[bar] = value
    return out


RULE_SIZE = "a fraction of equity above 0 and at most 1"
REFUSED = {  # a strategy's bug: (its decisions from the good ones, what the refusal says, the bar it names or None)
    "side 2": (lambda d, b: replace(d, side=_set(d.side, b, 2)), r"side is 2 {at}: 1 \(long\), -1 \(short\) or 0", 0),
    "side -1.5": (lambda d, b: replace(d, side=_set(d.side, b, -1.5)), r"side is -1.5 {at}: 1 \(long\)", 0),
    "side NaN (np.sign of a warm-up)": (lambda d, b: replace(d, side=_set(d.side, b, np.nan)), "side is nan {at}", 0),
    "negative size": (lambda d, b: replace(d, size=_set(d.size, b, -0.5)), r"size is -0.5 for an order of side -?1 {at}: " + RULE_SIZE, 0),
    "NaN size": (lambda d, b: replace(d, size=_set(d.size, b, np.nan)), "size is nan for an order of side -?1 {at}", 0),
    "no size": (lambda d, b: replace(d, size=_set(d.size, b, 0.0)), "size is 0.0 for an order", 0),
    "leverage": (lambda d, b: replace(d, size=_set(d.size, b, 1.5)), r"size is 1.5 .*\(no leverage is modelled", 0),
    "stop on the wrong side": (lambda d, b: replace(d, stop_dist=_set(d.stop_dist, b, -250.0)), "stop_dist is -250.0 for an order", 0),
    "take -inf": (lambda d, b: replace(d, take_dist=_set(d.take_dist, b, -np.inf)), "take_dist is -inf for an order", 0),
    "trail negative": (lambda d, b: replace(d, trail_dist=_set(d.trail_dist, b, -1.0)), "trail_dist is -1.0 for an order", 0),
    "exit 0.5": (lambda d, b: replace(d, exit_long=_set(d.exit_long.astype(float), b, 0.5)), "exit_long is 0.5 {at}: true or false", 0),
    "an array short of the window": (lambda d, b: replace(d, side=d.side[:-100].copy()),
                                     r"side has shape \(\d+,\): one value for each of the window's", None),
    "a 2-D array": (lambda d, b: replace(d, size=d.size[:, None]), r"size has shape \(\d+, 1\)", None),
    "text": (lambda d, b: replace(d, side=d.side.astype(str)), "side holds <U4 values", None),
    "negative cooldown": (lambda d, b: replace(d, cooldown_bars=-1), "cooldown_bars is -1: a whole number of bars", None),
    "fractional hold": (lambda d, b: replace(d, max_bars_held=2.5), "max_bars_held is 2.5: a whole number of bars", None),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_decisions_the_engine_cannot_take_are_refused_naming_the_array_the_value_and_its_bar(sample, case):
    """A strategy's bug was read as its result: a negative size traded each signal the other way, a
    side of 2 doubled the position, a NaN size gave a Sharpe of 0 and an array shorter than the
    window was read past its end. Each is refused at the first order it spoils, naming its bar."""
    good = _orders_on(sample)
    assert run_engine(sample, good, START, NO_COST).counters["trades_opened"] > 50
    bar = _first_order(good) + 7  # not the first bar: the bar named is the one at fault
    while good.side[bar] == 0:
        bar += 1
    change, words, named = REFUSED[case]
    with pytest.raises(StrategyError, match="decided what the engine cannot take: " + words.format(at=re.escape(_at(sample, bar)))):
        run_engine(sample, change(good, bar), START, NO_COST)


def test_values_the_engine_never_reads_pass_and_numbers_of_other_types_run_as_the_same_orders(sample):
    """What a strategy leaves where the engine reads nothing (a size, a negative stop or a side of 5
    before the window's start or where there is no order) is never refused, and a side of floats or
    int64, lists, an infinite distance for none: each gives the run of the engine's own types."""
    good = _orders_on(sample)
    expected = run_engine(sample, good, START, NO_COST)
    flat = good.side == 0
    loose = [
        replace(good, side=_set(good.side, 3, 5), size=np.where(flat, -7.0, good.size),
                stop_dist=np.where(flat, -1.0, good.stop_dist)),
        replace(good, side=good.side.astype(float), exit_long=good.exit_long.astype(int)),
        replace(good, side=good.side.astype(np.int64), cooldown_bars=np.int64(0)),
        replace(good, side=good.side.tolist(), size=good.size.tolist()),
        replace(good, trail_dist=np.full(len(sample), np.inf)),
    ]
    for d in loose:
        r = run_engine(sample, d, START, NO_COST)
        assert np.array_equal(r.equity, expected.equity) and np.array_equal(r.trades, expected.trades)
        assert r.counters == expected.counters

"""Hand-computed engine cases: every number below is worked out from the rules in engine/_kernel.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from genesis_core.engine import EXIT_REASONS, Costs, run_engine
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
    names = ("entry_bar", "exit_bar", "side", "entry_price", "exit_price", "units", "pnl", "fees", "exit_reason")
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

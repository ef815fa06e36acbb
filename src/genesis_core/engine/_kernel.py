"""The compiled bar loop. Plain arrays and scalars in, plain arrays out.

Rules (each has a hand-computed test in tests/engine):
- A decision at bar t's close fills at bar t+1's open; nothing fills beyond the last bar.
- Fill prices carry slippage against the trader: buy at price * (1 + slip), sell at price * (1 - slip);
  each fill pays fee = notional * fee rate.
- A position pays carry (borrow, funding) at each close it is held through: its value at that close
  times its side's rate a day, for the days from that bar's open to the next bar's (negative:
  received), so a trade pays for the time from its entry bar's open to its exit bar's, gaps and
  weekends included. A trade's pnl is net of its fees and carry. A carry that takes the last of the
  equity liquidates the position at that close.
- Entry size: notional plus entry fee equal the fraction of equity marked at the fill bar's open
  (no hidden leverage from fees); units of the asset are fractional.
- Stop, take-profit and trailing levels are set from the entry bar's raw open and the distances
  decided at the signal bar; they are checked from the entry bar on, against the bar's low/high.
- Within one bar: a gap through a level fills at the open; otherwise, if both the stop and the
  take-profit lie inside the bar's range the stop is assumed hit first (the conservative choice).
- The trailing level moves after each bar's close with that bar's extreme, so it is never used
  on the bar that moved it.
- An opposite-side candidate closes the position and opens the new one at the same open;
  a same-side candidate while in position is blocked (``in_position``).
- ``cooldown`` bars must pass between an exit fill and the next entry fill (``cooldown``).
- A position still open at the last bar is closed at its close (``end_of_window``).
- An account cannot lose more than it holds: a position is closed (``liquidation``) at the price
  where its loss, with the exit's slippage and fee, takes all the equity (a short's, as the price
  rises: a long of at most all the equity cannot lose more), within the bar as a stop is, and
  first when it lies before the stop. If the bar opens beyond it, it fills at the open, before an
  exit ordered for that open, and what the gap loses beyond the equity is not owed: the equity is
  0 from then on and nothing fills.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

EXIT_REASONS = ("stop_loss", "take_profit", "trailing_stop", "exit_signal", "max_bars_held", "reverse", "end_of_window",
                "liquidation")
_STOP, _TAKE, _TRAIL, _SIGNAL, _MAXHOLD, _REVERSE, _END, _RUIN = range(len(EXIT_REASONS))

# One record per closed trade; the kernel writes fields by name (book[k].pnl), so no reader counts columns.
TRADE_DTYPE = np.dtype([
    ("entry_bar", np.int64), ("exit_bar", np.int64), ("side", np.int64), ("entry_price", np.float64),
    ("exit_price", np.float64), ("units", np.float64), ("pnl", np.float64), ("fees", np.float64), ("exit_reason", np.int64),
    ("carry", np.float64),
], align=True)
COUNTERS = ("orders", "fills", "trades_opened", "trades_closed", "blocked_in_position", "blocked_cooldown", "bars_in_position")
# The engine's counters, one record (an array of length 1, since numba returns arrays, not records).
COUNTER_DTYPE = np.dtype([(name, np.int64) for name in COUNTERS], align=True)


class Prices(NamedTuple):
    """The candles' open times (epoch seconds) and price columns."""

    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray


class Orders(NamedTuple):
    """Per-bar decisions (see ``genesis_core.strategy.Decisions``) and the two per-run limits."""

    side: np.ndarray
    size: np.ndarray
    stop_dist: np.ndarray
    take_dist: np.ndarray
    trail_dist: np.ndarray
    exit_long: np.ndarray
    exit_short: np.ndarray
    cooldown_bars: int
    max_bars_held: int


class CostRates(NamedTuple):
    """Costs as fractions of notional per fill, the starting equity, and carry as a fraction of a
    position's value a day, long and short."""

    fee_rate: float
    slippage: float
    initial_equity: float
    long_carry: float
    short_carry: float


# The arrays of an order whose values run_bars cannot take, in the order first_fault checks them.
ORDER_ARRAYS = ("side", "size", "stop_dist", "take_dist", "trail_dist")


@njit(cache=True)
def first_fault(side, size, stop, take, trail, start):  # pragma: no cover - compiled
    """(index in ORDER_ARRAYS, bar) of the first order from bar ``start`` on that run_bars cannot
    take, or (-1, -1): a side other than 1, -1 or 0; a size not above 0 and at most 1 (no leverage
    is modelled); a negative distance. Values at bars without an order are never read, so any pass."""
    for t in range(start, len(side)):
        s = side[t]
        if s == 0:
            continue
        if s != 1 and s != -1:
            return 0, t
        if not (size[t] > 0.0 and size[t] <= 1.0):
            return 1, t
        if stop[t] < 0.0:
            return 2, t
        if take[t] < 0.0:
            return 3, t
        if trail[t] < 0.0:
            return 4, t
    return -1, -1


@njit(cache=True, inline="always")
def _ruin(cash, pos, units, costs):
    """The price where closing the position leaves no equity: cash + pos * units * fill - fee = 0,
    fill and fee as ``_close`` makes them (at or below 0 for a long of at most all the equity)."""
    return -cash / (units * (pos - costs.fee_rate) * (1.0 - pos * costs.slippage))


@njit(cache=True, inline="always")
def _close(book, counters, k, entry_bar, t, pos, entry_px, units, entry_fee, carry, raw_price, reason, costs):
    """Write trade ``k`` for closing at ``raw_price``, ``carry`` paid while held; count the fill;
    return the cash it brings in."""
    counters[0].fills += 1
    counters[0].trades_closed += 1
    fill = raw_price * (1.0 - pos * costs.slippage)
    fee = units * fill * costs.fee_rate
    trade = book[k]
    trade.entry_bar = entry_bar
    trade.exit_bar = t
    trade.side = pos
    trade.entry_price = entry_px
    trade.exit_price = fill
    trade.units = units
    trade.pnl = pos * units * (fill - entry_px) - entry_fee - fee - carry
    trade.fees = entry_fee + fee
    trade.exit_reason = reason
    trade.carry = carry
    return pos * units * fill - fee


@njit(cache=True)
def run_bars(prices, start, orders, costs):  # pragma: no cover - compiled
    """Returns (equity curve with the initial equity first, counters (COUNTER_DTYPE, length 1),
    closed trades (TRADE_DTYPE))."""
    open_, high, low, close = prices.open, prices.high, prices.low, prices.close
    n = len(close)
    equity = np.empty(n - start + 1)
    equity[0] = costs.initial_equity
    book = np.empty(n, TRADE_DTYPE)
    counters = np.zeros(1, COUNTER_DTYPE)
    c = counters[0]
    k = 0

    cash = costs.initial_equity
    pos = 0
    units = 0.0
    entry_bar = 0
    entry_px = 0.0
    entry_fee = 0.0
    carry = 0.0
    sl = np.nan
    tp = np.nan
    trail = np.nan
    trail_d = np.nan
    last_exit = -(1 << 40)
    pend_exit = False
    pend_reason = 0
    pend_side = 0
    pend_i = 0

    for t in range(start, n):
        # 0. a bar that opens beyond the level where the equity is gone liquidates there, before any order
        if pos != 0 and pos * (open_[t] - _ruin(cash, pos, units, costs)) <= 0.0:
            _close(book, counters, k, entry_bar, t, pos, entry_px, units, entry_fee, carry, open_[t], _RUIN, costs)
            k += 1
            equity[t - start + 1:] = 0.0  # nothing left to trade with, nor owed
            break
        # 1. orders decided at the previous close fill at this open
        if pend_exit and pos != 0:
            cash += _close(book, counters, k, entry_bar, t, pos, entry_px, units, entry_fee, carry, open_[t], pend_reason, costs)
            k += 1
            pos = 0
            units = 0.0
            last_exit = t
        if pend_side != 0:
            mark = cash + pos * units * open_[t]
            if mark > 0.0:
                ref = open_[t]
                entry_px = ref * (1.0 + pend_side * costs.slippage)
                units = mark * orders.size[pend_i] / (entry_px * (1.0 + costs.fee_rate))
                entry_fee = units * entry_px * costs.fee_rate
                carry = 0.0
                cash -= pend_side * units * entry_px + entry_fee
                pos = pend_side
                entry_bar = t
                sl = ref - pos * orders.stop_dist[pend_i]
                tp = ref + pos * orders.take_dist[pend_i]
                trail_d = orders.trail_dist[pend_i]
                trail = ref - pos * trail_d
                c.fills += 1
                c.trades_opened += 1
        pend_exit = False
        pend_side = 0

        # 2. stops inside this bar (NaN levels never trigger: comparisons with NaN are false)
        if pos != 0:
            c.bars_in_position += 1
            level = sl
            lreason = _STOP
            if not np.isnan(trail) and (np.isnan(sl) or pos * (trail - sl) > 0.0):
                level = trail
                lreason = _TRAIL
            ruin = _ruin(cash, pos, units, costs)
            if np.isnan(level) or pos * (ruin - level) > 0.0:
                level = ruin
                lreason = _RUIN
            raw = np.nan
            reason = 0
            if pos == 1:
                if open_[t] <= level:
                    raw, reason = open_[t], lreason
                elif open_[t] >= tp:
                    raw, reason = open_[t], _TAKE
                elif low[t] <= level:
                    raw, reason = level, lreason
                elif high[t] >= tp:
                    raw, reason = tp, _TAKE
            else:
                if open_[t] >= level:
                    raw, reason = open_[t], lreason
                elif open_[t] <= tp:
                    raw, reason = open_[t], _TAKE
                elif high[t] >= level:
                    raw, reason = level, lreason
                elif low[t] <= tp:
                    raw, reason = tp, _TAKE
            if t == n - 1 and np.isnan(raw):
                raw, reason = close[t], _END
            if not np.isnan(raw):
                cash += _close(book, counters, k, entry_bar, t, pos, entry_px, units, entry_fee, carry, raw, reason, costs)
                k += 1
                pos = 0
                units = 0.0
                last_exit = t
                if reason == _RUIN:  # nothing left to trade with, nor owed
                    equity[t - start + 1:] = 0.0
                    break

        # 3. carry for holding through this close, and the mark to market there; 4. the trailing
        # level follows this bar's extreme
        rate = 0.0 if pos == 0 else costs.long_carry if pos == 1 else costs.short_carry
        if rate != 0.0:
            days = (prices.time[t + 1] - prices.time[t]) / 86_400.0  # t < n - 1: a position is closed at the last bar
            paid = units * close[t] * rate * days
            cash -= paid
            carry += paid
            if paid > 0.0 and pos * (close[t] - _ruin(cash, pos, units, costs)) <= 0.0:  # it took what the bar left
                _close(book, counters, k, entry_bar, t, pos, entry_px, units, entry_fee, carry, close[t], _RUIN, costs)
                k += 1
                equity[t - start + 1:] = 0.0
                break
        equity[t - start + 1] = cash + pos * units * close[t]
        if pos != 0 and not np.isnan(trail_d):
            if pos == 1:
                trail = max(trail, high[t] - trail_d)
            else:
                trail = min(trail, low[t] + trail_d)

        # 5. decisions at this close, for the next open
        if t == n - 1:
            break
        if pos != 0:
            if (pos == 1 and orders.exit_long[t]) or (pos == -1 and orders.exit_short[t]):
                pend_exit, pend_reason = True, _SIGNAL
            elif orders.max_bars_held > 0 and t - entry_bar + 1 >= orders.max_bars_held:
                pend_exit, pend_reason = True, _MAXHOLD
        s = orders.side[t]
        if s != 0:
            if pos == s and not pend_exit:
                c.blocked_in_position += 1
            else:
                if pos != 0 and not pend_exit:
                    pend_exit, pend_reason = True, _REVERSE
                exit_bar = t + 1 if pend_exit else last_exit
                if t + 1 - exit_bar < orders.cooldown_bars:
                    c.blocked_cooldown += 1
                else:
                    pend_side = s
                    pend_i = t
                    c.orders += 1
        if pend_exit:
            c.orders += 1

    return equity, counters, book[:k].copy()

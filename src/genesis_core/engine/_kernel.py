"""The compiled bar loop. Plain arrays and scalars in, plain arrays out.

Rules (each has a hand-computed test in tests/engine):
- A decision at bar t's close fills at bar t+1's open; nothing fills beyond the last bar.
- Fill prices carry slippage against the trader: buy at price * (1 + slip), sell at price * (1 - slip);
  each fill pays fee = notional * fee rate.
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
"""

from __future__ import annotations

import numpy as np
from numba import njit

EXIT_REASONS = ("stop_loss", "take_profit", "trailing_stop", "exit_signal", "max_bars_held", "reverse", "end_of_window")
TRADE_COLUMNS = ("entry_bar", "exit_bar", "side", "entry_price", "exit_price", "units", "pnl", "fees", "exit_reason")
COUNTERS = ("orders", "fills", "trades_opened", "trades_closed", "blocked_in_position", "blocked_cooldown", "bars_in_position")
_STOP, _TAKE, _TRAIL, _SIGNAL, _MAXHOLD, _REVERSE, _END = range(7)


@njit(cache=True, inline="always")
def _close(book, counters, k, entry_bar, t, pos, entry_px, units, entry_fee, raw_price, reason, slip, fee_rate):
    """Write trade row ``k`` for closing at ``raw_price``, count the fill; return the cash it brings in."""
    counters[1] += 1
    counters[3] += 1
    fill = raw_price * (1.0 - pos * slip)
    fee = units * fill * fee_rate
    book[k, 0] = entry_bar
    book[k, 1] = t
    book[k, 2] = pos
    book[k, 3] = entry_px
    book[k, 4] = fill
    book[k, 5] = units
    book[k, 6] = pos * units * (fill - entry_px) - entry_fee - fee
    book[k, 7] = entry_fee + fee
    book[k, 8] = reason
    return pos * units * fill - fee


@njit(cache=True)
def run_bars(
    open_, high, low, close, start,
    side, size, stop_dist, take_dist, trail_dist, exit_long, exit_short,
    cooldown, max_hold, fee_rate, slip, initial_equity,
):  # pragma: no cover - compiled
    """Returns (equity curve with the initial equity first, counters, trade table)."""
    n = len(close)
    equity = np.empty(n - start + 1)
    equity[0] = initial_equity
    book = np.empty((n, 9))
    counters = np.zeros(7, np.int64)
    k = 0

    cash = initial_equity
    pos = 0
    units = 0.0
    entry_bar = 0
    entry_px = 0.0
    entry_fee = 0.0
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
        # 1. orders decided at the previous close fill at this open
        if pend_exit and pos != 0:
            cash += _close(book, counters, k, entry_bar, t, pos, entry_px, units, entry_fee, open_[t], pend_reason, slip, fee_rate)
            k += 1
            pos = 0
            units = 0.0
            last_exit = t
        if pend_side != 0:
            mark = cash + pos * units * open_[t]
            if mark > 0.0:
                ref = open_[t]
                entry_px = ref * (1.0 + pend_side * slip)
                units = mark * size[pend_i] / (entry_px * (1.0 + fee_rate))
                entry_fee = units * entry_px * fee_rate
                cash -= pend_side * units * entry_px + entry_fee
                pos = pend_side
                entry_bar = t
                sl = ref - pos * stop_dist[pend_i]
                tp = ref + pos * take_dist[pend_i]
                trail_d = trail_dist[pend_i]
                trail = ref - pos * trail_d
                counters[1] += 1
                counters[2] += 1
        pend_exit = False
        pend_side = 0

        # 2. stops inside this bar (NaN levels never trigger: comparisons with NaN are false)
        if pos != 0:
            counters[6] += 1
            level = sl
            lreason = _STOP
            if not np.isnan(trail) and (np.isnan(sl) or pos * (trail - sl) > 0.0):
                level = trail
                lreason = _TRAIL
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
                cash += _close(book, counters, k, entry_bar, t, pos, entry_px, units, entry_fee, raw, reason, slip, fee_rate)
                k += 1
                pos = 0
                units = 0.0
                last_exit = t

        # 3. mark to market at the close; 4. the trailing level follows this bar's extreme
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
            if (pos == 1 and exit_long[t]) or (pos == -1 and exit_short[t]):
                pend_exit, pend_reason = True, _SIGNAL
            elif max_hold > 0 and t - entry_bar + 1 >= max_hold:
                pend_exit, pend_reason = True, _MAXHOLD
        s = side[t]
        if s != 0:
            if pos == s and not pend_exit:
                counters[4] += 1
            else:
                if pos != 0 and not pend_exit:
                    pend_exit, pend_reason = True, _REVERSE
                exit_bar = t + 1 if pend_exit else last_exit
                if t + 1 - exit_bar < cooldown:
                    counters[5] += 1
                else:
                    pend_side = s
                    pend_i = t
                    counters[0] += 1
        if pend_exit:
            counters[0] += 1

    return equity, counters, book[:k].copy()

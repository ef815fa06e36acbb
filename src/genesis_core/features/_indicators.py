"""Causal indicator kernels: value t depends on inputs 0..t only; NaN until an indicator is warm.

Plain float64 arrays in and out (numba), so the same kernels serve one bar or fifty thousand.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NAN = np.nan


@njit(cache=True)
def sma(x: np.ndarray, period: int) -> np.ndarray:
    """Simple moving average, summed afresh per bar (no running sum, so no drift)."""
    n = len(x)
    out = np.full(n, _NAN)
    for t in range(period - 1, n):
        s = 0.0
        for j in range(t - period + 1, t + 1):
            s += x[j]
        out[t] = s / period
    return out


@njit(cache=True)
def ema(x: np.ndarray, period: int) -> np.ndarray:
    """Exponential moving average (alpha = 2 / (period + 1)) seeded with the SMA of the first period."""
    n = len(x)
    out = np.full(n, _NAN)
    if n < period:
        return out
    alpha = 2.0 / (period + 1.0)
    s = 0.0
    for j in range(period):
        s += x[j]
    v = s / period
    out[period - 1] = v
    for t in range(period, n):
        v = v + alpha * (x[t] - v)
        out[t] = v
    return out


@njit(cache=True)
def wilder(x: np.ndarray, period: int, first: int) -> np.ndarray:
    """Wilder's smoothing (RMA) of x[first:], seeded with the mean of its first ``period`` values."""
    n = len(x)
    out = np.full(n, _NAN)
    if n - first < period:
        return out
    s = 0.0
    for j in range(first, first + period):
        s += x[j]
    v = s / period
    out[first + period - 1] = v
    for t in range(first + period, n):
        v = (v * (period - 1) + x[t]) / period
        out[t] = v
    return out


@njit(cache=True)
def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    n = len(close)
    out = np.empty(n)
    if n == 0:
        return out
    out[0] = high[0] - low[0]
    for t in range(1, n):
        out[t] = max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
    return out


@njit(cache=True)
def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Average true range with Wilder's smoothing (the first bar's range has no previous close)."""
    return wilder(true_range(high, low, close), period, 1)


@njit(cache=True)
def rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's RSI in [0, 100]; 50 when there was no movement at all."""
    n = len(close)
    gain = np.zeros(n)
    loss = np.zeros(n)
    for t in range(1, n):
        d = close[t] - close[t - 1]
        if d > 0:
            gain[t] = d
        else:
            loss[t] = -d
    ag = wilder(gain, period, 1)
    al = wilder(loss, period, 1)
    out = np.full(n, _NAN)
    for t in range(n):
        if np.isnan(ag[t]):
            continue
        if al[t] == 0.0:
            out[t] = 50.0 if ag[t] == 0.0 else 100.0
        else:
            out[t] = 100.0 - 100.0 / (1.0 + ag[t] / al[t])
    return out


@njit(cache=True)
def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's average directional index in [0, 100] (trend strength, not direction)."""
    n = len(close)
    pdm = np.zeros(n)
    mdm = np.zeros(n)
    for t in range(1, n):
        up = high[t] - high[t - 1]
        down = low[t - 1] - low[t]
        if up > down and up > 0:
            pdm[t] = up
        if down > up and down > 0:
            mdm[t] = down
    tr = wilder(true_range(high, low, close), period, 1)
    sp = wilder(pdm, period, 1)
    sm = wilder(mdm, period, 1)
    dx = np.full(n, _NAN)
    first = -1
    for t in range(n):
        if np.isnan(tr[t]):
            continue
        if first < 0:
            first = t
        if tr[t] == 0.0:
            dx[t] = 0.0
            continue
        pdi = sp[t] / tr[t]
        mdi = sm[t] / tr[t]
        dx[t] = 0.0 if pdi + mdi == 0.0 else 100.0 * abs(pdi - mdi) / (pdi + mdi)
    if first < 0:
        return dx
    return wilder(dx, period, first)


@njit(cache=True)
def rolling_percentile(x: np.ndarray, window: int) -> np.ndarray:
    """Share of the last ``window`` values (current included) that are <= the current one, in (0, 1]."""
    n = len(x)
    out = np.full(n, _NAN)
    for t in range(window - 1, n):
        v = x[t]
        if np.isnan(v):
            continue
        count = 0
        ok = True
        for j in range(t - window + 1, t + 1):
            if np.isnan(x[j]):
                ok = False
                break
            if x[j] <= v:
                count += 1
        if ok:
            out[t] = count / window
    return out


@njit(cache=True)
def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """(x - mean) / population std over the last ``window`` values; 0 when the window is flat."""
    n = len(x)
    out = np.full(n, _NAN)
    mean = sma(x, window)
    for t in range(window - 1, n):
        m = mean[t]
        q = 0.0
        for j in range(t - window + 1, t + 1):
            q += (x[j] - m) * (x[j] - m)
        sd = np.sqrt(q / window)
        out[t] = 0.0 if sd == 0.0 else (x[t] - m) / sd
    return out


@njit(cache=True)
def swings(high: np.ndarray, low: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Last confirmed swing high and low at each bar.

    Bar i is a swing high when its high is the maximum of bars i-k .. i+k; that is known only at
    bar i+k, so the value at t uses swings confirmed by t (no lookahead).
    """
    n = len(high)
    sh = np.full(n, _NAN)
    sl = np.full(n, _NAN)
    last_h = _NAN
    last_l = _NAN
    for t in range(2 * k, n):
        i = t - k
        is_h = True
        is_l = True
        for j in range(i - k, t + 1):
            if high[j] > high[i]:
                is_h = False
            if low[j] < low[i]:
                is_l = False
        if is_h:
            last_h = high[i]
        if is_l:
            last_l = low[i]
        sh[t] = last_h
        sl[t] = last_l
    return sh, sl


@njit(cache=True)
def fib_distance(price: np.ndarray, swing_high: np.ndarray, swing_low: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Distance from price to the nearest 38.2/50/61.8% retracement of the swing range, in ``scale`` units."""
    n = len(price)
    out = np.full(n, _NAN)
    for t in range(n):
        h = swing_high[t]
        lo = swing_low[t]
        if np.isnan(h) or np.isnan(lo) or np.isnan(scale[t]) or scale[t] <= 0.0 or h <= lo:
            continue
        best = np.inf
        for r in (0.382, 0.5, 0.618):
            d = abs(price[t] - (lo + r * (h - lo)))
            best = min(best, d)
        out[t] = best / scale[t]
    return out

"""Higher-timeframe bars built without lookahead: a base bar sees only completed HTF bars."""

from __future__ import annotations

import numpy as np

from genesis_core.data._candles import MONDAY, WEEK, Candles, parse_timeframe
from genesis_core.errors import DataError


def resample(candles: Candles, timeframe: str) -> tuple[Candles, np.ndarray]:
    """Aggregate into ``timeframe`` bars aligned to the epoch, weeks to Monday 00:00 UTC as
    exchanges' weekly candles are (aligned to the epoch they ran Thursday to Wednesday); return them
    and the as-of map.

    ``asof[t]`` is the index of the last HTF bar that is complete when base bar ``t`` closes
    (-1 if none): an HTF bar [T, T + htf) is complete once ``ts[t] + base >= T + htf``. Because a
    complete bucket only holds bars that opened before its end, its values never depend on bars
    after ``t``.
    """
    htf = parse_timeframe(timeframe)
    base = candles.timeframe_seconds
    if htf <= base or htf % base:
        raise DataError(f"higher timeframe {timeframe} must be a multiple of the data's {candles.timeframe}")
    ts = candles.timestamps
    origin = MONDAY if htf % WEEK == 0 else 0
    buckets = ts - (ts - origin) % htf
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(ts)] - 1
    htf_candles = Candles(
        buckets[starts].copy(),
        candles.open[starts].copy(),
        np.maximum.reduceat(candles.high, starts),
        np.minimum.reduceat(candles.low, starts),
        candles.close[ends].copy(),
        np.add.reduceat(candles.volume, starts),
        htf,
        candles.source,
    )
    asof = np.searchsorted(buckets[starts] + htf, ts + base, side="right") - 1
    return htf_candles, asof.astype(np.int64)

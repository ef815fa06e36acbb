from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from genesis_core.data import format_ts, parse_ts, resample
from genesis_core.errors import DataError


def test_start_and_end_are_inclusive_and_a_bare_end_date_is_the_whole_day(btc):
    w = btc.window("2022-01-01", "2022-12-31", 100)
    assert w.first_bar == "2022-01-01T00:00:00Z"
    assert w.last_bar == "2022-12-31T23:00:00Z"
    assert w.bars == 365 * 24 - 4  # four bars missing on 2022-10-12
    w2 = btc.window("2022-01-01T05:00Z", "2022-01-02T05:00:00Z", 0)
    assert (w2.first_bar, w2.last_bar, w2.bars) == ("2022-01-01T05:00:00Z", "2022-01-02T05:00:00Z", 25)


def test_warmup_comes_from_before_start(btc):
    w = btc.window("2022-01-01", "2022-01-31", 300)
    assert w.start_index == 300
    assert format_ts(w.candles.timestamps[0]) == format_ts(parse_ts("2022-01-01") - 300 * 3600)


def test_window_is_refused_when_data_cannot_supply_it(btc):
    with pytest.raises(DataError, match="needs 500 warm-up bars .* has only 17"):
        btc.window("2018-05-16", "2018-06-30", 500)
    with pytest.raises(DataError, match=r"^window end 2024-06-30 is after the data's last bar 2024-01-16T15:00:00Z: the data "
                       r"does not cover the window$"):
        btc.window("2023-06-01", "2024-06-30", 10)
    # the last bar's day, given as a date: a date is its whole day (to 23:00), which the bundled data ends at 15:00 of
    with pytest.raises(DataError, match=r"^window end 2024-01-16 is after .*: the data does not cover the window \(a date alone "
                       r"means its whole day: end at 2024-01-16T15:00:00Z, or give no end\)$"):
        btc.window("2023-06-01", "2024-01-16", 10)
    assert btc.window("2023-06-01", "2024-01-16T15:00:00Z", 10).last_bar == "2024-01-16T15:00:00Z"
    with pytest.raises(DataError, match="holds no bars"):  # inside the 5-hour hole after 07:00
        btc.window("2022-10-12T08:00Z", "2022-10-12T11:00Z", 10)
    with pytest.raises(DataError, match=r"^window 2023-01-01 .. 2022-01-01 ends before it starts$"):  # was "holds no bars"
        btc.window("2023-01-01", "2022-01-01", 10)


def test_window_fingerprint_covers_warmup(btc):
    a = btc.window("2022-01-01", "2022-01-31", 300)
    b = btc.window("2022-01-01", "2022-01-31", 301)
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == btc.window("2022-01-01", "2022-01-31", 300).fingerprint


def test_resample_matches_pandas_on_complete_buckets(btc_year):
    htf, _ = resample(btc_year, "4h")
    frame = pd.DataFrame(
        {"open": btc_year.open, "high": btc_year.high, "low": btc_year.low, "close": btc_year.close, "volume": btc_year.volume},
        index=pd.to_datetime(btc_year.timestamps, unit="s", utc=True),
    )
    expected = frame.resample("4h").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
    assert np.array_equal(htf.timestamps, expected.index.as_unit("s").asi8)
    for col in ("open", "high", "low", "close"):
        assert np.array_equal(getattr(htf, col), expected[col].to_numpy())
    assert np.allclose(htf.volume, expected["volume"].to_numpy())


def test_weeks_run_monday_to_sunday_as_exchanges_weekly_candles_do(btc_year):
    """Aligned to the epoch, a 1w bar ran Thursday to Wednesday: its trend was not the one a user's
    weekly chart or an exchange's 1w candles show."""
    htf, _ = resample(btc_year, "1w")
    frame = pd.DataFrame(
        {"open": btc_year.open, "high": btc_year.high, "low": btc_year.low, "close": btc_year.close, "volume": btc_year.volume},
        index=pd.to_datetime(btc_year.timestamps, unit="s", utc=True),
    )
    weeks = frame.resample("W-MON", closed="left", label="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna()
    assert {d.weekday() for d in weeks.index} == {0} and len(htf) == len(weeks) >= 52
    assert np.array_equal(htf.timestamps, weeks.index.as_unit("s").asi8)
    for col in ("open", "high", "low", "close"):
        assert np.array_equal(getattr(htf, col), weeks[col].to_numpy())
    assert np.allclose(htf.volume, weeks["volume"].to_numpy())


@pytest.mark.parametrize("timeframe", ["4h", "1d", "1w"])
def test_a_bar_sees_only_completed_higher_timeframe_bars(btc_year, timeframe):
    htf, asof = resample(btc_year, timeframe)
    ends = htf.timestamps + htf.timeframe_seconds
    closes = btc_year.timestamps + btc_year.timeframe_seconds
    seen = asof >= 0
    assert np.all(ends[asof[seen]] <= closes[seen])  # the mapped bar is complete
    nxt = np.minimum(asof + 1, len(htf) - 1)
    assert np.all((ends[nxt] > closes) | (asof + 1 >= len(htf)))  # and it is the latest complete one
    rng = np.random.default_rng(7)
    for t in rng.integers(100, len(btc_year), 40):
        part, part_asof = resample(btc_year.slice(0, t + 1), timeframe)
        if asof[t] >= 0:
            k = part_asof[t]
            assert k == asof[t]
            assert (part.high[k], part.low[k], part.close[k]) == (htf.high[k], htf.low[k], htf.close[k])


def test_resample_refuses_a_lower_timeframe(btc_year):
    with pytest.raises(DataError, match="must be a multiple"):
        resample(btc_year, "30m")


@pytest.mark.parametrize("text", [
    "2022-01-01", "2022-01-01T05:00Z", "2022-01-01T05:00:00Z", "2022-01-01 05:00", "2022-01-01T05:00:00+02:00",
    "2022-01-01T05:00:00.5-03:30", "2022-01-01T05", "1677-09-22T00:00:01Z", "2262-04-11", " 2022-01-01",
    "2022-01-01 05:00 UTC", "2022-01-01T05:00:00.123456789Z", "1600-01-01", "2022-13-01", datetime(2022, 3, 1, 12, tzinfo=UTC), datetime(2022, 3, 1, 12),
])
def test_dates_read_without_pandas_are_read_as_pandas_reads_them(text):
    """The standard library reads what it can (a worker then never imports pandas); pandas the rest:
    each spelling is the instant pandas' Timestamp names, or refused when pandas refuses it."""
    try:
        ts = pd.Timestamp(text)
        expected: int | None = int((ts.tz_localize("UTC") if ts.tzinfo is None else ts).timestamp())
    except (ValueError, OverflowError):
        expected = None
    if expected is None:
        with pytest.raises(DataError, match="cannot parse date"):
            parse_ts(text)
    else:
        assert parse_ts(text) == expected


def test_times_formatted_at_once_are_each_as_format_ts_writes_it(btc):
    """A backtest's equity series has a time a bar, formatted one at a time (2.5 s of a million 1m
    bars' backtest): at once, each is the same text, over every second the loader takes (1900..2200)."""
    from genesis_core.data import format_times

    edges = [parse_ts("1900-01-01"), parse_ts("1970-01-01") - 1, 0, parse_ts("2000-02-29T23:59:59Z"), parse_ts("2200-12-31", end_of_day=True)]
    spread = np.random.default_rng(0).integers(edges[0], edges[-1], 100_000)
    for seconds in (np.asarray(edges, np.int64), spread, btc.timestamps):
        assert format_times(seconds) == [format_ts(s) for s in seconds]
    assert format_times(np.array([], np.int64)) == []

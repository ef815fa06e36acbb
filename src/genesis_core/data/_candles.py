"""The read-only candle container, timeframes, gaps and date windows with warm-up."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache, cached_property
from typing import Annotated
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import AfterValidator

from genesis_core.errors import DataError, clip
from genesis_core.fingerprint import fingerprint_arrays

CANDLE_ARRAYS = ("timestamps", "open", "high", "low", "close", "volume")  # Candles' arrays, in field order
DAY, WEEK = 86_400, 7 * 86_400
_TF_UNITS = {"m": 60, "h": 3600, "d": DAY, "w": WEEK}
YEAR_SECONDS = 365 * DAY
MONDAY = 4 * DAY  # the first Monday 00:00 UTC after the epoch (a Thursday)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_START = re.compile(r"\s*\d{4}-\d{2}-\d{2}")  # pandas also reads 'now' and 'tomorrow': a config must not


def _weekend_seconds(t: np.ndarray) -> np.ndarray:
    """Seconds of Saturdays and Sundays (UTC) from the first Monday after the epoch to each time."""
    weeks, rest = np.divmod(t - MONDAY, WEEK)
    return weeks * 2 * DAY + np.maximum(rest - 5 * DAY, 0)


def parse_timeframe(text: str) -> int:
    """'15m', '1h', '4h', '1d', '1w' -> seconds. ``M`` is refused: exchanges and ccxt read '1M' as a
    month, which was taken here for a minute (monthly candles passed as 1-minute bars)."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhdwHDW])\s*", text)
    if m is None and re.fullmatch(r"\s*\d+\s*M\s*", text):
        raise DataError(f"bad timeframe {text!r}: M is a month, as exchanges read it, and a month has no fixed length; "
                        "a minute is m (e.g. '1m', '15m')")
    if not m or int(m.group(1)) <= 0:
        raise DataError(f"bad timeframe {text!r}: expected a number and a unit m/h/d/w, e.g. '1h' or '4h'")
    return int(m.group(1)) * _TF_UNITS[m.group(2).lower()]


def _valid_timeframe(text: str) -> str:
    try:
        parse_timeframe(text)
    except DataError as exc:
        raise ValueError(str(exc)) from None
    return text


Timeframe = Annotated[str, AfterValidator(_valid_timeframe)]  # a config's timeframe, checked as it is read: the error names its key


def format_timeframe(seconds: int) -> str:
    """Inverse of parse_timeframe, choosing the largest whole unit."""
    for unit, size in sorted(_TF_UNITS.items(), key=lambda kv: -kv[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def format_ts(seconds: int | np.integer) -> str:
    """Epoch seconds -> ISO-8601 UTC, the one text form of a timestamp in outputs."""
    return datetime.fromtimestamp(int(seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_times(seconds: np.ndarray) -> list[str]:
    """``format_ts`` of each of ``seconds`` (1900..2200, as candles hold), in a tenth of the time: a
    backtest's equity series has one a bar (a million 1m bars took 2.5 s one at a time)."""
    return np.char.add(np.datetime_as_string(np.asarray(seconds, np.int64).astype("datetime64[s]"), unit="s"), "Z").tolist()


def parse_ts(text: str | datetime, *, end_of_day: bool = False) -> int:
    """ISO date or datetime (UTC unless an offset is given) -> epoch seconds.

    With ``end_of_day`` a bare date means its last second, which is what makes an inclusive
    ``end: 2022-12-31`` include every bar of that day. What the standard library reads between
    1678 and 2261 is read by it; the rest by pandas, which a worker then need not import.
    """
    hint = "use ISO-8601, e.g. 2022-01-01 or 2022-01-01T06:00Z"
    if isinstance(text, str) and not _ISO_START.match(text):
        raise DataError(f"cannot parse date {clip(text)!r}: {hint}")
    try:
        when = text if isinstance(text, datetime) else datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or not 1677 < when.year < 2262:
        import pandas as pd

        try:
            when = pd.Timestamp(text)
        except (ValueError, TypeError, OverflowError):
            raise DataError(f"cannot parse date {clip(str(text))!r}: {hint}, between 1677 and 2262") from None
    seconds = int((when.replace(tzinfo=UTC) if when.tzinfo is None else when).timestamp())
    if end_of_day and isinstance(text, str) and _DATE_ONLY.match(text.strip()):
        seconds += DAY - 1
    return seconds


def same_symbol(a: str, b: str) -> bool:
    """Whether two spellings name one market: BTC/USD, btc-usd and BTCUSD do."""
    return re.sub(r"[^A-Z0-9]", "", a.upper()) == re.sub(r"[^A-Z0-9]", "", b.upper())


def check_span(start: str, end: str) -> None:
    """Both dates parse and ``start`` is not after ``end`` (a bare-date end means its whole day);
    ValueError saying why, for config validators."""
    try:
        first, last = parse_ts(start), parse_ts(end, end_of_day=True)
    except DataError as exc:
        raise ValueError(str(exc)) from None
    if first > last:
        raise ValueError(f"start {start} is after end {end}")


# Clocks that keep daylight saving, one a rule and local hour of change: a file written in one of
# them, not in UTC, repeats an hour each autumn and skips one each spring (crypto trades through both).
LOCAL_CLOCKS = (("Europe/London", "the UK's"), ("Europe/Berlin", "central Europe's"), ("Europe/Athens", "eastern Europe's"),
                ("America/New_York", "North America's"), ("Australia/Sydney", "south-east Australia's"),
                ("Pacific/Auckland", "New Zealand's"))
_HOUR = 3600


def _wall(seconds: int) -> datetime:
    """A timestamp read as UTC, as the wall-clock time it reads as."""
    return datetime(1970, 1, 1) + timedelta(seconds=int(seconds))


def _repeated(zone: ZoneInfo, seconds: int) -> bool:
    """Whether the wall-clock time ``seconds`` reads as comes twice in ``zone`` (its autumn hour)."""
    t = _wall(seconds)
    return t.replace(tzinfo=zone, fold=0).utcoffset() != t.replace(tzinfo=zone, fold=1).utcoffset()


def _skipped(zone: ZoneInfo, seconds: int) -> bool:
    """Whether the wall-clock time ``seconds`` reads as never comes in ``zone`` (its spring hour)."""
    t = _wall(seconds).replace(tzinfo=zone)
    return t.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != t.replace(tzinfo=None)


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def repeated_local_hours(times: np.ndarray) -> str | None:
    """Why ``times`` (timestamps read as UTC, each given twice or out of order by a file) came
    twice, when each is in the hour one of ``LOCAL_CLOCKS`` repeats as its daylight saving ends:
    the file's clock is that local time; None otherwise. For the loader's error."""
    for name, label in LOCAL_CLOCKS:
        zone = _zone(name)
        if len(times) and all(_repeated(zone, t) for t in times):
            first = _wall(times[0])
            before, after = (first.replace(tzinfo=zone, fold=f).isoformat() for f in (0, 1))
            return (f"{'each' if len(times) > 1 else 'it'} is in the hour {label} clocks ({name}) repeat as daylight saving ends, "
                    f"so the timestamps are that local time, not UTC: write them in UTC, or with their offset ({before}, "
                    f"then {after})")
    return None


def _springs(zone: ZoneInfo, first: int, last: int) -> list[int]:
    """The first wall-clock time (a timestamp read as UTC) of each hour ``zone`` skips between ``first`` and ``last``."""
    out, day = [], _wall(first).replace(hour=12, minute=0, second=0)
    offset = day.replace(tzinfo=zone).utcoffset()
    while (day := day + timedelta(days=1)) <= _wall(last):
        now = day.replace(tzinfo=zone).utcoffset()
        if now is not None and offset is not None and now > offset:
            midnight = int(day.replace(hour=0, tzinfo=UTC).timestamp())
            out += [h for h in range(midnight, midnight + 12 * _HOUR, _HOUR) if _skipped(zone, h)][:1]
        offset = now
    return out


GAPS_BY_CHANCE = 1e-6  # the most likely that a file's gaps fall on each of a clock's spring hours by chance, for them to be its


def skipped_local_hours(timestamps: np.ndarray, timeframe_seconds: int) -> str | None:
    """When bars are missing at each hour one of ``LOCAL_CLOCKS`` skips as its daylight saving
    begins (two springs or more, the bars either side there), and the file's other gaps are too
    few for that to be chance: its timestamps are that local time, not UTC; None otherwise."""
    ts, tf = timestamps, timeframe_seconds
    if len(ts) < 2 or _HOUR % tf:
        return None
    diffs = np.diff(ts)
    hour_gaps = ts[:-1][diffs == _HOUR + tf] + tf  # the first missing bar of each gap of exactly an hour
    rate = float((diffs[diffs > tf] - tf).sum()) / max(float(ts[-1] - ts[0]), 1.0)  # the share of the span missing
    for name, label in LOCAL_CLOCKS:
        zone = _zone(name)
        if sum(_skipped(zone, t) for t in hour_gaps) < 2:
            continue
        springs = _springs(zone, int(ts[0]), int(ts[-1]))
        if len(springs) < 2 or rate ** len(springs) > GAPS_BY_CHANCE:
            continue
        if np.isin(springs, hour_gaps).all():
            dates = [format_ts(h)[:10] for h in springs]
            return (f"{len(springs)} of them are the hour {label} clocks ({name}) skip as daylight saving begins, each "
                    f"spring from {dates[0]} to {dates[-1]}: the timestamps look like that local time, not UTC (so each "
                    "bar is an hour or two off, and an hour each autumn is doubled or dropped); write them in UTC")
    return None


@dataclass(frozen=True)
class GapReport:
    """Gaps (missing bars) in a candle series; reported as a warning, never an error."""

    count: int
    missing_bars: int
    largest_seconds: int
    largest_at: str | None  # timestamp of the last bar before the largest gap
    local_clock: str | None = None  # why the gaps say the file's clock is a local time (``skipped_local_hours``)

    def describe(self, timeframe_seconds: int) -> str:
        if self.count == 0:
            return "no gaps"
        return (
            f"{self.count} gap(s), {self.missing_bars} missing bar(s), largest "
            f"{format_timeframe(self.largest_seconds)} after {self.largest_at}"
        ) + (f"; {self.local_clock}" if self.local_clock else "")


SPIKE = 2.0  # no bar of the bundled BTC/USD 1h data moves a third as far from the previous close (the most: 30%, 2020-03-12)


@dataclass(frozen=True)
class SpikeReport:
    """Bars whose high is ``SPIKE`` times the previous close or more, or whose low is that
    fraction of it or less: a bad tick or a misplaced decimal, which would trigger stops, targets
    and liquidations in the engine. A warning, never an error: a real crash can do it too."""

    count: int
    largest: float  # the largest such factor
    largest_at: str | None  # that bar's open time
    price: str | None  # e.g. "high 40,301,000 after a close of 40,241"

    def describe(self) -> str:
        return (f"{self.count} bar(s) whose high or low is at least {SPIKE:g}x above or below the previous close (a bad "
                f"tick?), the largest {self.largest:,.4g}x at {self.largest_at} ({self.price})")  # 1e300's: 4 figures, not 300


@dataclass(frozen=True, eq=False)
class Candles:
    """OHLCV bars as read-only numpy arrays; timestamps are bar open times in epoch seconds (UTC)."""

    timestamps: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    timeframe_seconds: int
    source: str = ""
    symbol: str | None = None  # the market, when the file says (Parquet metadata ``genesis.market``)

    def __post_init__(self) -> None:
        for name in CANDLE_ARRAYS:
            getattr(self, name).flags.writeable = False

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def timeframe(self) -> str:
        return format_timeframe(self.timeframe_seconds)

    @cached_property
    def closes_at_weekends(self) -> bool:
        """Whether the market closes at weekends, as stock markets do (crypto trades every day), by
        backtesting.py's test: its bars hold under 60% of the weekend bars a 7-day week would."""
        ts = self.timestamps
        return bool(len(ts)) and float(((ts - MONDAY) % WEEK >= 5 * DAY).mean()) <= 0.6 * 2 / 7

    @cached_property
    def bars_per_year(self) -> float:
        """Bars a year of this market, what annualised metrics scale by: 365 days of the timeframe
        for one that trades every day; for one closed at weekends, the bars this file holds per 365
        days. A year of 365 trading days overstated a stock's Sharpe by about 20% (GOOG's daily
        bars: 251.5 a year)."""
        ts = self.timestamps
        if not self.closes_at_weekends:
            return YEAR_SECONDS / self.timeframe_seconds
        return len(ts) * YEAR_SECONDS / (int(ts[-1] - ts[0]) + self.timeframe_seconds)

    @cached_property
    def fingerprint(self) -> str:
        """Content hash: the same bars give the same fingerprint whatever file format held them."""
        return fingerprint_arrays(
            self.timestamps, self.open, self.high, self.low, self.close, self.volume,
            label=f"candles/{self.timeframe_seconds}",
        )

    def through(self, end: str | None) -> Candles:
        """The bars up to ``end`` (inclusive; None: all): what results of a window ending there can read."""
        stop = len(self) if end is None else int(np.searchsorted(self.timestamps, parse_ts(end, end_of_day=True), side="right"))
        return self.slice(0, stop)

    def slice(self, first: int, stop: int) -> Candles:
        """Bars ``first`` .. ``stop - 1`` as a new container (views, no copy)."""
        return Candles(
            self.timestamps[first:stop], self.open[first:stop], self.high[first:stop],
            self.low[first:stop], self.close[first:stop], self.volume[first:stop],
            self.timeframe_seconds, self.source, self.symbol,
        )

    def gaps(self) -> GapReport:
        """Missing bars. Where the market closes at weekends, a weekend's bars are not missing: a
        stock's daily bars reported a gap every weekend (GOOG.csv: 463 gaps, 77 of them holidays)."""
        ts, tf = self.timestamps, self.timeframe_seconds
        diffs = np.diff(ts)
        over = np.flatnonzero(diffs > tf)
        missing = diffs[over] // tf - 1
        if self.closes_at_weekends and tf <= DAY:
            missing -= (_weekend_seconds(ts[over + 1]) - _weekend_seconds(ts[over] + tf)) // tf
            over, missing = over[missing > 0], missing[missing > 0]
        if len(over) == 0:
            return GapReport(0, 0, 0, None)
        worst = over[np.argmax(diffs[over])]
        return GapReport(len(over), int(missing.sum()), int(diffs[worst]), format_ts(ts[worst]), self.local_clock)

    @cached_property
    def local_clock(self) -> str | None:
        """Why the gaps say these bars' clock is a local time, not UTC (``skipped_local_hours``)."""
        return skipped_local_hours(self.timestamps, self.timeframe_seconds)

    def spikes(self) -> SpikeReport:
        """Bars far from the previous close (``SpikeReport``); a bar after a gap is left out, its move
        being over more than one bar."""
        previous = self.close[:-1]
        up, down = self.high[1:] / previous, previous / self.low[1:]
        factor = np.where(np.diff(self.timestamps) > self.timeframe_seconds, 0.0, np.maximum(up, down))
        hits = np.flatnonzero(factor >= SPIKE)
        if len(hits) == 0:
            return SpikeReport(0, 0.0, None, None)
        worst = int(hits[np.argmax(factor[hits])])
        field, value = ("high", self.high[worst + 1]) if up[worst] >= down[worst] else ("low", self.low[worst + 1])
        return SpikeReport(len(hits), float(factor[worst]), format_ts(self.timestamps[worst + 1]),
                           f"{field} {value:,.8g} after a close of {previous[worst]:,.8g}")

    def window(self, start: str | None, end: str | None, warmup_bars: int) -> Window:
        """Bars from ``start`` to ``end`` (both inclusive) plus ``warmup_bars`` bars before ``start``.

        Warm-up bars always come from before ``start`` so the window's first decision already has
        warm indicators; if the data cannot supply them the window is refused, never shortened.
        """
        ts = self.timestamps
        if len(ts) == 0:
            raise DataError(f"{self.source or 'candles'}: no bars")
        if start is None:
            first = min(warmup_bars, len(ts) - 1)
        else:
            s = parse_ts(start)
            if s > ts[-1]:
                raise DataError(f"window start {start} is after the data's last bar {format_ts(ts[-1])}")
            first = int(np.searchsorted(ts, s, side="left"))
        if end is None:
            last = len(ts) - 1
        else:
            e = parse_ts(end, end_of_day=True)
            if e > ts[-1] + self.timeframe_seconds - 1:
                day = parse_ts(end) <= ts[-1]  # a bare date: its whole day, of which the data holds the start
                raise DataError(
                    f"window end {end} is after the data's last bar {format_ts(ts[-1])}: "
                    "the data does not cover the window" + (f" (a date alone means its whole day: end at "
                                                            f"{format_ts(ts[-1])}, or give no end)" if day else "")
                )
            last = int(np.searchsorted(ts, e, side="right")) - 1
        if last < first:  # an end before the start said only this, as a hole in the bars does
            backwards = start is not None and end is not None and parse_ts(end, end_of_day=True) < parse_ts(start)
            raise DataError(f"window {start} .. {end} " + ("ends before it starts" if backwards else "holds no bars"))
        if first < warmup_bars:
            raise DataError(
                f"window start {format_ts(ts[first])} needs {warmup_bars} warm-up bars before it but the data "
                f"({self.source or 'candles'}) has only {first}; start later or lower warmup_bars"
            )
        return Window(self.slice(first - warmup_bars, last + 1), warmup_bars, self, first - warmup_bars)


@dataclass(frozen=True, eq=False)
class Window:
    """A backtest window: warm-up bars followed by the decision bars from ``start_index`` on."""

    candles: Candles
    start_index: int
    source: Candles | None = None  # the candles it was cut from (``Candles.window``), from their bar ``first`` on
    first: int = 0

    @property
    def bars(self) -> int:
        return len(self.candles) - self.start_index

    @cached_property
    def decisions(self) -> Candles:
        """The decision bars, without the warm-up: what a window's gaps and span are of."""
        return self.candles.slice(self.start_index, len(self.candles))

    @cached_property
    def held(self) -> np.ndarray:
        """What 1 bought at the first decision bar's open is worth at each decision bar's close: the
        market's own course over the window, which a strategy's is read against."""
        d = self.decisions
        return d.close / d.open[0]

    @property
    def held_return(self) -> float:
        """What buying at the first decision bar's open and holding to the last close made (``held``)."""
        return float(self.held[-1]) - 1.0

    def gaps(self) -> GapReport:
        """The decision bars' gaps, and what the gaps of the bars it was cut from say of their clock
        (a window of a year holds one spring, too few to tell)."""
        report = self.decisions.gaps()
        return replace(report, local_clock=self.source.local_clock) if report.count and self.source is not None else report

    @property
    def span(self) -> tuple[int, int]:
        """The first decision bar's and the last bar's open times, epoch seconds."""
        return int(self.candles.timestamps[self.start_index]), int(self.candles.timestamps[-1])

    @cached_property
    def first_bar(self) -> str:
        """The first decision bar's time (every backtest's record of the window has it: formatted once)."""
        return format_ts(self.candles.timestamps[self.start_index])

    @cached_property
    def last_bar(self) -> str:
        return format_ts(self.candles.timestamps[-1])

    @cached_property
    def fingerprint(self) -> str:
        """Covers every bar the result can depend on, warm-up included, and where decisions start."""
        return fingerprint_arrays(np.array([self.start_index]), label=self.candles.fingerprint)


# Gaps an exchange is known to have (outages, maintenance): a gap overlapping one is named, not
# left to look like a broken download. Sources: data/PROVENANCE.md.
KNOWN_OUTAGES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "binance": (
        ("2018-02-08T01:00:00Z", "2018-02-09T09:00:00Z", "Binance's February 2018 outage"),
        ("2019-05-15T03:00:00Z", "2019-05-15T12:00:00Z", "Binance maintenance"),
        ("2020-02-19T12:00:00Z", "2020-02-19T16:00:00Z", "Binance maintenance"),
        ("2021-04-25T05:00:00Z", "2021-04-25T07:00:00Z", "Binance maintenance"),
        ("2023-03-24T13:00:00Z", "2023-03-24T13:00:00Z", "Binance spot trading halt"),
    ),
}


def describe_gaps(candles: Candles, exchange: str | None, most: int = 5) -> list[str]:
    """The largest gaps, each with the exchange's known outage it falls in, if any."""
    ts, tf = candles.timestamps, candles.timeframe_seconds
    diffs = np.diff(ts)
    over = np.flatnonzero(diffs > tf)
    known = [(parse_ts(a), parse_ts(b), why) for a, b, why in KNOWN_OUTAGES.get(exchange or "", ())]
    lines = []
    for i in over[np.argsort(-diffs[over], kind="stable")][:most]:
        first, last = int(ts[i]) + tf, int(ts[i + 1]) - tf  # the missing bars
        why = next((w for a, b, w in known if first <= b and a <= last), None)
        lines.append(f"{(last - first) // tf + 1} bar(s) missing {format_ts(first)} .. {format_ts(last)}"
                     + (f" ({why})" if why else ""))
    return lines

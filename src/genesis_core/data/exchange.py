"""Candles from exchanges through ccxt: ``genesis data download``, ``update`` and ``list``.

The network edge of the data layer. A download walks the exchange's pages from the start (its
page limit, ccxt's rate limiter, retries with backoff on 429, 5xx and timeouts) and keeps each
page in ``<file>.part/`` the moment it arrives, written atomically: an interrupted download (Ctrl-C,
a kill, a lost network) loses at most the page in flight, and the same command resumes it. The
bars then pass every check of the loader and the file is written at once, the market (exchange,
symbol, timeframe, first/last bar, when fetched, ccxt version) in its metadata: Parquet's schema
metadata ``genesis.market``, or ``<file>.market.json`` beside a CSV. The still-open last candle is
never stored, nor one closed in the last ``SETTLED_MS`` by this machine's clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import functools
import gzip
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from genesis_core.data._candles import Candles, format_times, format_ts, parse_timeframe, parse_ts
from genesis_core.data._load import MARKET_KEY, file_market, load_candles, market_sidecar
from genesis_core.errors import DataError, clip
from genesis_core.files import atomic_write

RETRIES = 5  # per page, after the first try; waits 1, 2, 4, 8, 16 s (or what Retry-After says)
BACKOFF_SECONDS = 1.0
SUFFIXES = (".parquet", ".csv.gz")
SETTLED_MS = 120_000  # a candle is stored once it closed this long ago by this machine's clock: one that runs fast, or an
# exchange that settles a candle just after its close, would store one still trading, and an update never asks for it again

OnProgress = Callable[[int, int], None]  # bars fetched so far, bars expected in all


@dataclass(frozen=True)
class Fetched:
    """A candle file written by ``download`` or ``update``."""

    path: Path
    candles: Candles
    market: dict[str, Any]
    new_bars: int
    resumed_bars: int  # of the new bars, those an interrupted run had already fetched
    revised: str | None = None  # how the file's last bar differed from the exchange's, asked again by an update


def connect(exchange: str, api_url: str | None = None) -> ccxt.Exchange:
    """The ccxt client of ``exchange`` (spot markets), its REST API moved to ``api_url`` if given
    (a proxy, a mirror, a test server: each API root keeps its path below the new root)."""
    cls = getattr(ccxt, exchange, None) if exchange in ccxt.exchanges else None
    if cls is None:
        close = difflib.get_close_matches(exchange.lower(), ccxt.exchanges, n=5)
        raise DataError(f"unknown exchange {clip(exchange)!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                                    " (see ccxt's list of exchanges)"))
    ex = cls({"enableRateLimit": True, "options": {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"}})
    if api_url is not None:
        root = urlsplit(api_url)
        ex.urls["api"] = {k: urlunsplit((root.scheme, root.netloc, root.path.rstrip("/") + urlsplit(v).path, "", ""))
                          if isinstance(v, str) else v for k, v in ex.urls["api"].items()}
    _remember_status(ex)
    return ex


def _remember_status(ex: ccxt.Exchange) -> None:
    """Keep each response's HTTP status in ``ex.genesis_status``: ccxt classifies some exchanges'
    5xx answers as a plain ExchangeError (Bitfinex's ``["error", 10000, ...]``), which the status
    shows to be the server's trouble, worth a retry, not a refusal."""
    handle = ex.handle_errors

    def handle_errors(code: int, *args: Any) -> Any:
        ex.genesis_status = code
        return handle(code, *args)

    ex.handle_errors = handle_errors


def _retrying(ex: ccxt.Exchange, what: str, call: Callable[[], Any], retries: int) -> Any:
    """``call()``, retried with exponential backoff while the exchange is busy or away (429, 5xx,
    timeouts, lost connections); a refusal (an unknown symbol, a bad request) is not retried."""
    for attempt in range(retries + 1):
        ex.genesis_status = 0
        try:
            return call()
        except ccxt.BaseError as exc:
            status = getattr(ex, "genesis_status", 0)
            if not (isinstance(exc, ccxt.NetworkError) or status == 429 or status >= 500):
                raise DataError(f"{ex.id}: {what}: {type(exc).__name__}: {clip(str(exc))}") from None
            if attempt == retries:
                raise DataError(f"{ex.id}: {what} failed {retries + 1} times; last: {type(exc).__name__}: {clip(str(exc))}. "
                                "Run the same command again to resume") from None
            headers = {k.lower(): v for k, v in (ex.last_response_headers or {}).items()}
            after = headers.get("retry-after", "")
            time.sleep(min(60.0, float(after) if after.replace(".", "", 1).isdigit() else BACKOFF_SECONDS * 2 ** attempt))
    raise AssertionError("unreachable")


def market_symbol(ex: ccxt.Exchange, symbol: str, timeframe: str, retries: int = RETRIES) -> str:
    """The exchange's unified symbol for ``symbol`` (BTC/USD, or BTCUSD spelled without the slash);
    DataError listing close matches for a market or timeframe it does not offer."""
    _retrying(ex, "loading its markets", ex.load_markets, retries)
    if symbol not in ex.markets:
        same = [s for s in ex.symbols if s.replace("/", "").upper() == symbol.replace("/", "").replace("-", "").upper()]
        if len(same) != 1:
            close = difflib.get_close_matches(symbol.upper(), ex.symbols, n=5, cutoff=0.5)
            raise DataError(f"{ex.id} has no spot market {clip(symbol)!r}" + (f"; close matches: {', '.join(close)}" if close else
                            f" ({len(ex.symbols)} markets, e.g. {', '.join(ex.symbols[:5])})"))
        symbol = same[0]
    timeframes = ex.timeframes or {}
    if timeframe not in timeframes:
        raise DataError(f"{ex.id} offers no {clip(timeframe)} candles; it offers {', '.join(timeframes)}")
    try:
        parse_timeframe(timeframe)
    except DataError:
        raise DataError(f"timeframe {timeframe}: genesis works with minutes, hours, days and weeks (e.g. 1h, 4h, 1d)") from None
    return symbol


@contextlib.contextmanager
def _only_writer(path: Path) -> Iterator[None]:
    """One download or update of ``path`` at a time, across processes (a lock on ``.<name>.lock``
    beside it while it runs, released by the system if the holder dies): a second one read the
    first's pages as the first removed them and ended in a traceback, or wrote a page into the
    folder just removed, which the next run of the command took for where the download stood."""
    lock = path.with_name(f".{path.name}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(lock, "a")  # held open until the end, below
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise DataError(f"{path}: another `genesis data download` or `update` of it is running; run this when it "
                            "has ended") from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fh.fileno()), os.stat(lock)):
                break
        fh.close()  # the lock file of a run that removed it as it ended: take a new one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before the lock is released: whoever opened it since takes a new one
        fh.close()


class _Parts:
    """The pages of one download, kept in ``<file>.part/`` as they arrive: ``request.json`` says
    what is being fetched, ``page-NNNNNN.csv`` each page, written atomically."""

    def __init__(self, target: Path, request: dict[str, Any]) -> None:
        self.folder = target.with_name(target.name + ".part")
        stored = self.folder / "request.json"
        if stored.exists():
            before = json.loads(stored.read_text())
            if before != request:
                raise DataError(f"{self.folder} holds an interrupted download of another request ({clip(json.dumps(before), 300)});"
                                f" re-run that command to finish it, or delete the folder")
        else:
            atomic_write(stored, json.dumps(request, sort_keys=True))
        self.pages = sorted(self.folder.glob("page-*.csv"))

    def rows(self) -> np.ndarray:
        """Every stored bar: time (ms), open, high, low, close, volume."""
        frames = [np.loadtxt(p, delimiter=",", ndmin=2) for p in self.pages]
        return np.concatenate(frames) if frames else np.empty((0, 6))

    def add(self, rows: list[list[float]]) -> None:
        text = "".join(",".join(str(int(x)) if i == 0 else repr(float("nan") if x is None else float(x)) for i, x in enumerate(r[:6]))
                       + "\n" for r in rows)
        page = self.folder / f"page-{len(self.pages) + 1:06d}.csv"
        atomic_write(page, text)
        self.pages.append(page)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _fetch(ex: ccxt.Exchange, symbol: str, timeframe: str, since_ms: int, until_ms: int | None, parts: _Parts,
           on_progress: OnProgress | None, retries: int) -> tuple[np.ndarray, int]:
    """The closed bars from ``since_ms`` to ``until_ms`` (open times, inclusive), page by page
    into ``parts`` from where it stopped: the stored and the new ones, and how many were stored before.

    Each request asks for one page's span of time from where the file stops, which every exchange
    answers whole; asked for all the rest, OKX answers its newest page (a download of years held
    its last 300 bars) and Coinbase refuses. Bars that start later than asked follow a gap or are
    the newest of the span (an exchange answering newest first): the bars before them are asked for
    until there are none. A span with no bar is a gap where an exchange answers only the span asked
    (Bitstamp, OKX, Coinbase), unless the exchange's last bar is before it: the download goes on
    past it instead of ending there."""
    tf_ms = parse_timeframe(timeframe) * 1000
    last_closed = ((ex.milliseconds() - SETTLED_MS) // tf_ms - 1) * tf_ms  # the open time of the last candle surely closed
    until = last_closed if until_ms is None else min(until_ms, last_closed)
    stored = parts.rows()
    since = int(stored[-1, 0]) + tf_ms if len(stored) else since_ms
    origin = int(stored[0, 0]) if len(stored) else since_ms
    expected = max(1, (until - origin) // tf_ms + 1)
    limit = ex.features.get("spot", {}).get("fetchOHLCV", {}).get("limit") or 1000
    fetched = len(stored)
    latest: int | None = None  # the open time of the exchange's last bar, asked once a span comes back empty

    def bars(first: int, last: int, keep: int) -> list[list[float]]:
        """The bars from ``first`` to ``keep`` of the exchange's answer for ``first`` to ``last`` (Kraken
        answers what it has after ``first``, whatever ``last``)."""
        page = _retrying(ex, f"candles from {format_ts(first // 1000)}",
                         functools.partial(ex.fetch_ohlcv, symbol, timeframe, since=first, limit=limit, params={"until": last}),
                         retries)
        return [r for r in page if first <= r[0] <= keep]

    if on_progress is not None:
        on_progress(fetched, expected)
    while since <= until:
        rows = bars(since, min(since + (limit - 1) * tf_ms, until), until)
        while rows and rows[0][0] > since and (head := bars(since, int(rows[0][0]) - tf_ms, int(rows[0][0]) - tf_ms)):
            rows = head + rows
        if not rows:
            if latest is None:
                last = _retrying(ex, "its last candle", functools.partial(ex.fetch_ohlcv, symbol, timeframe, limit=1), retries)
                latest = int(last[-1][0]) if last else since - tf_ms
            if latest < since:
                break  # nothing more up to ``until``: the exchange has no later bars
            since += limit * tf_ms
            continue
        if not fetched:  # the exchange's first bar may come long after the start asked for
            expected = max(1, (until - int(rows[0][0])) // tf_ms + 1)
        parts.add(rows)
        fetched += len(rows)
        since = int(rows[-1][0]) + tf_ms
        if on_progress is not None:
            on_progress(fetched, expected)
    return parts.rows(), len(stored)


def _frame(rows: np.ndarray, iso: bool) -> pd.DataFrame:
    """The bars as a table: time as a UTC timestamp (Parquet) or ISO text (CSV), like the bundled files."""
    seconds = rows[:, 0].astype(np.int64) // 1000
    times = format_times(seconds) if iso else pd.to_datetime(seconds, unit="s", utc=True).as_unit("s")
    return pd.DataFrame({"timestamp": times, **{name: rows[:, i + 1] for i, name in enumerate(("open", "high", "low", "close", "volume"))}})


def _write(path: Path, rows: np.ndarray, market: dict[str, Any], timeframe: str) -> Candles:
    """Write ``rows`` to ``path`` with its market, atomically, after the loader's checks passed on
    exactly what is written (a bad bar is named and nothing is replaced)."""
    tmp = path.with_name(f".{path.name}.new{''.join(path.suffixes)}")
    try:
        if path.name.endswith(".parquet"):
            table = pa.Table.from_pandas(_frame(rows, iso=False), preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), MARKET_KEY: json.dumps(market).encode()})
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            atomic_write(tmp, buf.getvalue())
        else:
            text = _frame(rows, iso=True).to_csv(index=False)
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
                gz.write(text.encode())
            atomic_write(tmp, buf.getvalue())
            atomic_write(market_sidecar(tmp), json.dumps(market, indent=1) + "\n")
        candles = load_candles(tmp, timeframe)
        if not path.name.endswith(".parquet"):
            market_sidecar(tmp).replace(market_sidecar(path))
        tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
        with contextlib.suppress(OSError):
            market_sidecar(tmp).unlink()
    return dataclasses.replace(candles, source=str(path))


def default_path(folder: Path, exchange: str, symbol: str, timeframe: str) -> Path:
    """``<folder>/<exchange>_<BASEQUOTE>_<timeframe>.parquet``."""
    return folder / f"{exchange}_{symbol.replace('/', '').replace(':', '-')}_{timeframe}.parquet"


def download(exchange: str, symbol: str, timeframe: str, start: str, end: str | None, out: Path | None = None,
             api_url: str | None = None, on_progress: OnProgress | None = None, retries: int = RETRIES) -> Fetched:
    """Candles of ``symbol`` from ``start`` to ``end`` (inclusive; default: the last closed bar) into
    ``out`` (Parquet unless it ends in .csv.gz), resuming an interrupted run of the same request."""
    since = parse_ts(start) * 1000
    until = None if end is None else parse_ts(end, end_of_day=True) * 1000
    if until is not None and until < since:  # it asked the exchange, then said it had no candles "from 2023-01-01 to 2022-01-01"
        raise DataError(f"--end {end} is before --start {start}")
    if since > time.time() * 1000:  # asked too: a wait on the exchange's markets, then "no candles"
        raise DataError(f"--start {start} is in the future (by this machine's clock): no candle has closed since")
    if out is not None and not out.name.endswith(SUFFIXES):  # before the exchange is asked: its markets are a wait
        raise DataError(f"{out}: write .parquet (default) or .csv.gz")
    ex = connect(exchange, api_url)
    unified = market_symbol(ex, symbol, timeframe, retries)
    path = out or default_path(Path("data"), ex.id, unified, timeframe)
    with _only_writer(path):
        parts = _Parts(path, {"exchange": ex.id, "symbol": unified, "timeframe": timeframe, "start": since, "end": until})
        rows, resumed = _fetch(ex, unified, timeframe, since, until, parts, on_progress, retries)
        if len(rows) == 0:
            parts.remove()
            raise DataError(f"{ex.id} has no {unified} {timeframe} candles from {start}" + (f" to {end}" if end else ""))
        market = _market(ex, unified, timeframe, rows)
        candles = _write(path, rows, market, timeframe)
        parts.remove()
    return Fetched(path, candles, market, len(rows), resumed)


def update(path: Path, api_url: str | None = None, on_progress: OnProgress | None = None, retries: int = RETRIES) -> Fetched:
    """Append the bars closed since ``path``'s last one, re-validate the whole file and replace it
    atomically; its market metadata says where from. The file's last bar is asked for again and
    replaced when the exchange's differs (``Fetched.revised``): one stored before it settled (by an
    older genesis, or a clock more than ``SETTLED_MS`` fast) stayed as it was then."""
    if not path.name.endswith(SUFFIXES):  # what it writes: for a renamed x.csv it wrote gzip, then failed to read it back
        raise DataError(f"{path}: update writes .parquet or .csv.gz, as download does; give the file such a name "
                        "(and its .market.json beside a CSV the same)")
    market = file_market(path)
    if market is None or not {"exchange", "symbol", "timeframe"} <= set(market):
        raise DataError(f"{path}: no exchange market in its metadata (written by `genesis data download`?); "
                        "download it with `genesis data download` first")
    with _only_writer(path):
        old = load_candles(path)  # the bars' timeframe, which the metadata's must be
        ex = connect(market["exchange"], api_url)
        unified = market_symbol(ex, market["symbol"], market["timeframe"], retries)
        last = int(old.timestamps[-1]) * 1000
        parts = _Parts(path, {"exchange": ex.id, "symbol": unified, "timeframe": market["timeframe"], "start": last, "end": None})
        new, resumed = _fetch(ex, unified, market["timeframe"], last, None, parts, on_progress, retries)
        before = np.column_stack([old.timestamps * 1000, old.open, old.high, old.low, old.close, old.volume])
        again = len(new) > 0 and int(new[0, 0]) == last  # the file's last bar, as the exchange gives it now
        revised = None
        if again and np.array_equal(new[0], before[-1]):
            new = new[1:]  # as stored
        elif again:
            revised = (f"the file's last bar {format_ts(last // 1000)} held open, high, low, close, volume "
                       f"{', '.join(f'{v:g}' for v in before[-1, 1:])}; the exchange now gives "
                       f"{', '.join(f'{v:g}' for v in new[0, 1:])} (stored before it settled, or revised since): replaced")
            before = before[:-1]  # for the exchange's
        if len(new) == 0:
            parts.remove()
            return Fetched(path, old, market, 0, 0)
        rows = np.concatenate([before, new])
        updated = _market(ex, unified, market["timeframe"], rows)
        candles = _write(path, rows, updated, market["timeframe"])
        parts.remove()
    return Fetched(path, candles, updated, len(new) - (revised is not None), max(0, resumed - again), revised)


def _market(ex: ccxt.Exchange, symbol: str, timeframe: str, rows: np.ndarray) -> dict[str, Any]:
    return {"exchange": ex.id, "symbol": symbol, "timeframe": timeframe, "first_bar": format_ts(int(rows[0, 0]) // 1000),
            "last_bar": format_ts(int(rows[-1, 0]) // 1000), "bars": len(rows),
            "fetched_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "ccxt_version": ccxt.__version__}

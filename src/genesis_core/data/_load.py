"""Reading candle files (CSV, CSV.gz, Parquet) and refusing the ones that cannot be trusted; a
disk cache of the candles that passed, so a process that finds them there never imports pandas or
pyarrow (imported where a file is parsed: 0.3 s of a worker's start, and as long again to parse)."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genesis_core.data._candles import CANDLE_ARRAYS, Candles, format_timeframe, parse_timeframe
from genesis_core.errors import DataError, clip
from genesis_core.files import atomic_write

if TYPE_CHECKING:
    import pandas as pd

_PRICE_COLUMNS = ("open", "high", "low", "close")
_TIME_ALIASES = ("timestamp", "time", "date", "datetime", "open_time")
_CSV, _PARQUET, _FEATHER = (".csv", ".txt", ".csv.gz", ".txt.gz"), (".parquet", ".pq"), (".feather",)
CANDLE_FILES = (*_CSV, *_PARQUET, *_FEATHER)  # what load_candles reads, by how a file's name ends
MAX_BARS = 5_000_000  # 9.5 years of 1-minute bars
MAX_CSV_BYTES = MAX_BARS * 128  # a candle line is 50-150 bytes: more text than this is not a candle file (or a bomb)
FIRST_SECOND, LAST_SECOND = -2_208_988_800, 7_258_118_400  # 1900-01-01 .. 2200-01-01 UTC


def _csv_bytes(path: Path, gzipped: bool) -> bytes:
    """The CSV text of ``path``, decompressed, refused past ``MAX_CSV_BYTES`` before more is read."""
    if not gzipped:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise DataError(f"{path}: {path.stat().st_size:,} bytes is more than {MAX_CSV_BYTES:,} "
                            f"(about {MAX_BARS:,} bars); split the file")
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as fh:  # count first, keeping nothing: a bomb costs time, not memory
            size = 0
            while chunk := fh.read(1 << 20):
                size += len(chunk)
                if size > MAX_CSV_BYTES:
                    raise DataError(f"{path}: decompresses to more than {MAX_CSV_BYTES:,} bytes (about {MAX_BARS:,} "
                                    "bars); refused before reading on (a corrupt file or a decompression bomb)")
        with gzip.open(path, "rb") as fh:
            return fh.read(MAX_CSV_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file: {clip(str(exc))}") from None


MARKET_KEY = b"genesis.market"  # Parquet metadata: JSON {"exchange", "symbol", "timeframe", ...}


def market_sidecar(path: Path) -> Path:
    """Where a CSV file's market is declared (``genesis data download`` writes it): ``<file>.market.json``."""
    return path.with_name(path.name + ".market.json")


def file_market(path: Path) -> dict[str, Any] | None:
    """The market a file declares, if any: Parquet's metadata, or a CSV's ``market_sidecar``."""
    try:
        if "".join(path.suffixes).lower().endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            raw = (pq.read_schema(path).metadata or {}).get(MARKET_KEY)
        else:
            sidecar = market_sidecar(path)
            raw = sidecar.read_bytes() if sidecar.is_file() else None
        market = json.loads(raw) if raw else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable market metadata: {clip(str(exc))}") from None
    symbol = market.get("symbol") if isinstance(market, dict) else None
    if market is not None and not (isinstance(symbol, str) and 0 < len(symbol) <= 64 and symbol.isprintable()):
        # what a hostile file holds there is echoed in every market check's message, whole
        raise DataError(f"{path}: market metadata without a market's symbol (1 to 64 printable characters): {clip(str(market))}")
    return market


def _time_index_as_column(frame: pd.DataFrame) -> pd.DataFrame:
    """A table saved from a frame indexed by time (``df.set_index("timestamp").to_parquet()``, as
    pandas users keep candles) holds its times as the index: that index as a column, when no
    column is the time. Another index (the row numbers of a filtered frame) is left out."""
    import pandas as pd

    if not {str(c).strip().lower() for c in frame.columns}.isdisjoint(_TIME_ALIASES):
        return frame
    index = frame.index
    named = str(index.name).strip().lower() in _TIME_ALIASES
    if named or isinstance(index, pd.DatetimeIndex):
        return frame.rename_axis(index.name if named else "timestamp").reset_index()
    return frame


def _unnamed_time(frame: pd.DataFrame) -> str | None:
    """The first column when its header is empty, as ``df.to_csv()`` writes an unnamed index
    (backtesting.py's own GOOG.csv: ``,Open,High,...``), unless it holds the row numbers 0, 1, 2 ...
    of a frame that had no times."""
    if len(frame.columns) == 0 or not str(frame.columns[0]).startswith("Unnamed: 0"):
        return None
    first = frame.iloc[:, 0].astype(str).str.strip()
    return None if first.tolist() == [str(i) for i in range(len(first))] else str(frame.columns[0]).strip().lower()


def _read_frame(path: Path) -> tuple[pd.DataFrame, bool]:
    """Return the raw table and whether rows map to file lines (CSV) for error messages."""
    import pandas as pd
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    if not path.exists():  # a relative path is read from where genesis runs, not from the config's folder: say where
        where = "" if path.is_absolute() else f" in {Path.cwd()}"
        raise DataError(f"data file not found: {path}{where} (candles from an exchange: `genesis data download`)")
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith(_PARQUET + _FEATHER):  # counted before they are read: a compressed table may be a bomb
            parquet = suffixes.endswith(_PARQUET)
            rows = pq.ParquetFile(path).metadata.num_rows if parquet else ipc.open_file(path).count_rows()
            if rows > MAX_BARS:
                raise DataError(f"{path}: {rows:,} rows is more than {MAX_BARS:,}; split the file")
            return _time_index_as_column(pd.read_parquet(path) if parquet else pd.read_feather(path)), False
        if suffixes.endswith(_CSV):
            text = _csv_bytes(path, suffixes.endswith(".gz"))
            header = pd.read_csv(io.BytesIO(text), dtype=str, header=None, nrows=1, keep_default_na=False)
            names = [str(c).strip().lower() for c in header.iloc[0]] if len(header) else []
            twice = sorted({c for c in names if names.count(c) > 1})
            if twice:
                raise DataError(f"{path}: column(s) {', '.join(map(clip, twice))} given twice; keep one of each")
            return pd.read_csv(io.BytesIO(text), dtype=str, keep_default_na=False), True
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types; the user needs the file and the cause
        raise DataError(f"{path}: cannot read file: {clip(str(exc), 300)}") from None
    raise DataError(f"{path}: unknown file type {suffixes or '(none)'}; expected .csv, .csv.gz, .parquet or .feather")


def _where(path: Path, i: int, is_csv: bool, raw_ts: object) -> str:
    line = f", line {i + 2}" if is_csv else ""
    return f"{path}: row {i + 1}{line} (timestamp {clip(str(raw_ts))})"


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    """Index of the first True and how many more there are."""
    bad = np.flatnonzero(mask)
    return int(bad[0]), len(bad) - 1


def _more(n: int) -> str:
    return f" (and {n} more row(s))" if n else ""


def _parse_timestamps(col: pd.Series, path: Path, is_csv: bool) -> np.ndarray:
    """ISO-8601 strings, datetimes, or epoch seconds/milliseconds -> int64 epoch seconds; whole
    seconds only, in one unit, between 1900 and 2200."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(col):
        dt = pd.to_datetime(col, utc=True)
    else:
        text = col.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().all():
            return _epoch_seconds(numeric.to_numpy(dtype=np.float64), text, path, is_csv)
        dt = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = dt.isna().to_numpy()
    if bad.any():
        i, n = _first_bad(bad)
        raise DataError(f"{_where(path, i, is_csv, col.iloc[i])}: unparseable timestamp{_more(n)}")
    micros = dt.dt.as_unit("us").astype("int64").to_numpy()
    _check_seconds(micros / 1e6, col, path, is_csv)
    return micros // 1_000_000


def _epoch_seconds(values: np.ndarray, text: pd.Series, path: Path, is_csv: bool) -> np.ndarray:
    # Epoch milliseconds are > 1e11 for any date after 1973; seconds stay below until year 5138.
    millis = np.abs(values) > 1e11
    if millis.any() and not millis.all():
        minority = ~millis if millis.sum() > len(millis) / 2 else millis
        i, n = _first_bad(minority)
        unit = "seconds" if millis[i] == 0 else "milliseconds"
        raise DataError(f"{_where(path, i, is_csv, text.iloc[i])}: mixed units: epoch {unit} among epoch "
                        f"{'milliseconds' if unit == 'seconds' else 'seconds'}{_more(n)}")
    seconds = values / 1000.0 if millis.all() else values
    _check_seconds(seconds, text, path, is_csv)
    return seconds.astype(np.int64)


def _check_seconds(seconds: np.ndarray, raw: pd.Series, path: Path, is_csv: bool) -> None:
    outside = ~((seconds >= FIRST_SECOND) & (seconds < LAST_SECOND))
    if outside.any():
        i, n = _first_bad(outside)
        raise DataError(f"{_where(path, i, is_csv, raw.iloc[i])}: timestamp outside 1900..2200{_more(n)}")
    fractional = seconds != np.floor(seconds)
    if fractional.any():
        i, n = _first_bad(fractional)
        raise DataError(f"{_where(path, i, is_csv, raw.iloc[i])}: timestamp is not a whole second{_more(n)}")


def load_candles(path: str | Path, timeframe: str | None = None) -> Candles:
    """Load and validate OHLCV candles; raise DataError naming the first bad row.

    Checked: required columns, timestamps (parseable, strictly increasing, on the timeframe's
    grid), prices finite and positive, volume finite and non-negative, high >= max(open, close)
    and low <= min(open, close). Gaps are allowed (see ``Candles.gaps``).
    """
    import pandas as pd

    path = Path(path)
    frame, is_csv = _read_frame(path)
    columns = {str(c).strip().lower(): c for c in frame.columns}
    if len(columns) < len(frame.columns):
        names = [str(c).strip().lower() for c in frame.columns]
        twice = sorted({c for c in names if names.count(c) > 1})
        raise DataError(f"{path}: column(s) {', '.join(map(clip, twice))} given twice; keep one of each")
    time_key = next((a for a in _TIME_ALIASES if a in columns), None) or _unnamed_time(frame)
    missing = [c for c in (*_PRICE_COLUMNS, "volume") if c not in columns]
    if time_key is None:
        missing.insert(0, "timestamp")
    if missing or time_key is None:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {clip(', '.join(map(str, frame.columns)), 300)}")
    if len(frame) == 0:
        raise DataError(f"{path}: no rows")
    raw_ts = frame[columns[time_key]]
    ts = _parse_timestamps(raw_ts, path, is_csv)

    values = {}
    for name in (*_PRICE_COLUMNS, "volume"):
        col = pd.to_numeric(frame[columns[name]], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(col).all():
            i, n = _first_bad(~np.isfinite(col))
            raw = frame[columns[name]].iloc[i]
            raise DataError(f"{_where(path, i, is_csv, raw_ts.iloc[i])}: {name} is {clip(repr(raw))}, not a finite number{_more(n)}")
        values[name] = col
    o, h, lo, c, v = (values[k] for k in ("open", "high", "low", "close", "volume"))
    for name in _PRICE_COLUMNS:
        if (values[name] <= 0).any():
            i, n = _first_bad(values[name] <= 0)
            raise DataError(f"{_where(path, i, is_csv, raw_ts.iloc[i])}: {name} {values[name][i]} is not positive{_more(n)}")
    if (v < 0).any():
        i, n = _first_bad(v < 0)
        raise DataError(f"{_where(path, i, is_csv, raw_ts.iloc[i])}: volume {v[i]} is negative{_more(n)}")
    if (h < np.maximum(o, c)).any():
        i, n = _first_bad(h < np.maximum(o, c))
        raise DataError(f"{_where(path, i, is_csv, raw_ts.iloc[i])}: high {h[i]} < max(open, close) {max(o[i], c[i])}{_more(n)}")
    if (lo > np.minimum(o, c)).any():
        i, n = _first_bad(lo > np.minimum(o, c))
        raise DataError(f"{_where(path, i, is_csv, raw_ts.iloc[i])}: low {lo[i]} > min(open, close) {min(o[i], c[i])}{_more(n)}")

    diffs = np.diff(ts)
    if (diffs == 0).any():
        i, n = _first_bad(diffs == 0)
        raise DataError(f"{_where(path, i + 1, is_csv, raw_ts.iloc[i + 1])}: duplicate timestamp (same as row {i + 1}){_more(n)}")
    if (diffs < 0).any():
        i, n = _first_bad(diffs < 0)
        raise DataError(f"{_where(path, i + 1, is_csv, raw_ts.iloc[i + 1])}: timestamps not sorted (earlier than row {i + 1}){_more(n)}")
    steps, counts = np.unique(diffs, return_counts=True)
    common = int(steps[np.argmax(counts)]) if len(steps) else None  # the bars' own timeframe
    if timeframe is not None:
        tf = parse_timeframe(timeframe)
        if common is not None and tf not in steps:  # 30m given for 1h bars passed as 30m bars, every other one missing
            raise DataError(f"{path}: timeframe {timeframe} given, but no two bars are {timeframe} apart (most are "
                            f"{format_timeframe(common)}): give {format_timeframe(common)}, or none (it is read from the bars)")
    elif common is not None:
        tf = common
    else:
        raise DataError(f"{path}: a single bar has no timeframe; pass the timeframe explicitly")
    off_grid = (diffs % tf) != 0
    if off_grid.any():
        i, n = _first_bad(off_grid)
        raise DataError(
            f"{_where(path, i + 1, is_csv, raw_ts.iloc[i + 1])}: {diffs[i]} s after the previous bar, "
            f"not a multiple of the {tf} s timeframe{_more(n)}"
        )
    market = file_market(path)
    return Candles(ts, o, h, lo, c, v, tf, str(path), market["symbol"] if market else None)


def cache_candles(candles: Candles, file: Path) -> None:
    """Keep candles that passed ``load_candles`` in ``file`` for ``cached_candles``; a disk that
    refuses (full, read-only) only costs the next process a parse."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: getattr(candles, name) for name in CANDLE_ARRAYS},
             timeframe_seconds=np.int64(candles.timeframe_seconds), symbol=np.str_(candles.symbol or ""))
    with contextlib.suppress(OSError):
        atomic_write(file, buffer.getvalue(), durable=False)


def cached_candles(file: Path, source: str) -> Candles | None:
    """The candles ``cache_candles`` kept in ``file``, or None if it is absent or damaged (a zip
    member carries a CRC, checked as it is read)."""
    try:
        with np.load(file, allow_pickle=False) as saved:
            arrays = [saved[name] for name in CANDLE_ARRAYS]
            timeframe, symbol = int(saved["timeframe_seconds"]), str(saved["symbol"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if len({len(a) for a in arrays}) != 1:
        return None
    ts, o, h, lo, c, v = arrays
    return Candles(ts, o, h, lo, c, v, timeframe, source, symbol or None)


@dataclass(frozen=True)
class CandleFile:
    """A candle file as ``genesis data list`` shows it; ``error`` when it does not load."""

    path: Path
    market: dict[str, Any] | None
    candles: Candles | None
    error: str | None


def candle_files(folder: Path) -> list[CandleFile]:
    """Every candle file in ``folder`` (``CANDLE_FILES``), loaded and checked; a file given instead
    of a folder is listed alone. A folder that is not there is a DataError: a mistyped name listed
    no file, as an empty folder does."""
    if not folder.exists():
        raise DataError(f"{folder}: no such folder (candles from an exchange: `genesis data download`)")
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else [folder]:
        name = path.name.lower()
        if path != folder and (not path.is_file() or name.startswith(".") or not name.endswith(CANDLE_FILES)):
            continue
        try:
            found.append(CandleFile(path, file_market(path), load_candles(path), None))
        except DataError as exc:
            found.append(CandleFile(path, None, None, str(exc)))
    return found

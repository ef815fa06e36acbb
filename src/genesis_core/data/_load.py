"""Reading candle files (CSV, CSV.gz, Parquet) and refusing the ones that cannot be trusted; a
disk cache of the candles that passed, so a process that finds them there never imports pandas or
pyarrow (imported where a file is parsed: 0.3 s of a worker's start, and as long again to parse)."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genesis_core.data._candles import (
    CANDLE_ARRAYS,
    Candles,
    format_timeframe,
    parse_timeframe,
    repeated_local_hours,
    same_symbol,
)
from genesis_core.errors import DataError, clip
from genesis_core.files import atomic_write, capped_bytes, not_a_file, not_found_where, read_file

if TYPE_CHECKING:
    import pandas as pd

_PRICE_COLUMNS = ("open", "high", "low", "close")
_TIME_ALIASES = ("timestamp", "time", "unix", "date", "datetime", "open_time")  # by precedence: CryptoDataDownload's
# files give both unix and date
_CSV, _PARQUET, _FEATHER = (".csv", ".txt", ".csv.gz", ".txt.gz"), (".parquet", ".pq"), (".feather",)
_JSON = (".json", ".json.gz")  # Freqtrade's json and jsongz data formats
CANDLE_FILES = (*_CSV, *_PARQUET, *_FEATHER, *_JSON)  # what load_candles reads, by how a file's name ends
MAX_BARS = 5_000_000  # 9.5 years of 1-minute bars
MAX_CSV_BYTES = MAX_BARS * 128  # a candle line is 50-150 bytes: more text than this is not a candle file (or a bomb)
FIRST_SECOND, LAST_SECOND = -2_208_988_800, 7_258_118_400  # 1900-01-01 .. 2200-01-01 UTC


def _text_bytes(path: Path, gzipped: bool) -> bytes:
    """The text of ``path`` (a CSV or JSON file), decompressed, refused past ``MAX_CSV_BYTES`` before more is read."""
    if not gzipped:
        text, size = capped_bytes(path, MAX_CSV_BYTES)
        if max(size, len(text)) > MAX_CSV_BYTES:
            raise DataError(f"{path}: {max(size, len(text)):,} bytes is more than {MAX_CSV_BYTES:,} "
                            f"(about {MAX_BARS:,} bars); split the file")
        return text
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
MAX_SIDECAR_BYTES = 1 << 20  # a market's metadata is a few hundred bytes


_SIDECAR = ".market.json"


def market_sidecar(path: Path) -> Path:
    """Where a CSV file's market is declared (``genesis data download`` writes it): ``<file>.market.json``."""
    return path.with_name(path.name + _SIDECAR)


def file_market(path: Path) -> dict[str, Any] | None:
    """The market a file declares, if any: Parquet's metadata, or a CSV's ``market_sidecar``."""
    try:
        if "".join(path.suffixes).lower().endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            raw = (pq.read_schema(path).metadata or {}).get(MARKET_KEY)
        else:
            sidecar = market_sidecar(path)
            raw = read_file(sidecar, MAX_SIDECAR_BYTES) if sidecar.exists() else None
        market = json.loads(raw) if raw else None
    except (OSError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: unreadable market metadata: {clip(str(exc))}") from None
    symbol = market.get("symbol") if isinstance(market, dict) else None
    if market is not None and not (isinstance(symbol, str) and 0 < len(symbol) <= 64 and symbol.isprintable()):
        # what a hostile file holds there is echoed in every market check's message, whole
        raise DataError(f"{path}: market metadata without a market's symbol (1 to 64 printable characters): {clip(str(market))}")
    return market


def _column_name(column: object) -> str:
    """A header's name as looked up: trimmed, lower case, without the angle brackets MetaTrader's and
    Stooq's exports put around each (``<DATE>``, ``<OPEN>``)."""
    return str(column).strip().strip("<>").strip().lower()


def _time_index_as_column(frame: pd.DataFrame) -> pd.DataFrame:
    """A table saved from a frame indexed by time (``df.set_index("timestamp").to_parquet()``, as
    pandas users keep candles) holds its times as the index: that index as a column, when no
    column is the time. Another index (the row numbers of a filtered frame) is left out."""
    import pandas as pd

    if not {_column_name(c) for c in frame.columns}.isdisjoint(_TIME_ALIASES):
        return frame
    index = frame.index
    named = _column_name(index.name) in _TIME_ALIASES
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
    return None if first.tolist() == [str(i) for i in range(len(first))] else _column_name(frame.columns[0])


SHOWN_BESIDE = 5  # candle files named when a file is not found


def _named_as_candles(name: str) -> bool:
    """Whether a file's name is a candle file's (``CANDLE_FILES``): not hidden, nor a CSV's market sidecar."""
    name = name.lower()
    return not name.startswith(".") and name.endswith(CANDLE_FILES) and not name.endswith(_SIDECAR)


def _name_parts(name: str) -> set[str]:
    """A file name's words but its type's: exchange, symbol and timeframe, in whatever order."""
    return set(re.findall(r"[a-z0-9]+", name.lower())) - {"csv", "txt", "gz", "parquet", "pq", "feather", "json"}


def _beside(path: Path) -> str:
    """The candle files in a missing file's folder, those sharing most words with its name first:
    the bundled BTCUSDT_1h_binance.csv.gz for a config's binance_BTCUSDT_1h.parquet, on a machine
    that cannot download it."""
    folder = path.parent
    try:
        names = [p.name for p in folder.iterdir() if _named_as_candles(p.name)] if folder.is_dir() else []
    except OSError:  # a folder this user may not list: the error without them
        return ""
    if not names:
        return ""
    mine = _name_parts(path.name)
    shown = sorted(names, key=lambda name: (-len(_name_parts(name) & mine), name))[:SHOWN_BESIDE]
    return f"; {folder} holds {', '.join(shown)}" + (f" and {len(names) - len(shown)} more" if len(names) > len(shown) else "")


def _read_frame(path: Path, notes: list[str]) -> tuple[pd.DataFrame, int, bool]:
    """The raw table, the file line of its first row (a CSV's, for error messages; 0: no lines) and
    whether its decimal mark is a comma; ``notes`` has how a CSV was read where it was not plain."""
    import pandas as pd
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    if path.is_symlink() and not path.exists():  # "not found" beside a listing that held it
        raise DataError(f"{path}: a link to {os.readlink(path)}, where there is no file (moved, not mounted, or a loop of links)")
    if not path.exists():  # a relative path is read from where genesis runs, not from the config's folder: say where
        raise DataError(f"data file not found: {path}{not_found_where(str(path))} (candles from an exchange: `genesis data download`)" + _beside(path))
    kind = not_a_file(path.stat().st_mode)  # a pipe waited for a writer for ever; /dev/zero was read until memory ran out
    if kind is not None:
        raise DataError(f"{path}: {kind}, not a file; candles are read from a CSV, Parquet, Feather or JSON file")
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith(_PARQUET + _FEATHER):  # counted before they are read: a compressed table may be a bomb
            parquet = suffixes.endswith(_PARQUET)
            rows = pq.ParquetFile(path).metadata.num_rows if parquet else ipc.open_file(path).count_rows()
            if rows > MAX_BARS:
                raise DataError(f"{path}: {rows:,} rows is more than {MAX_BARS:,}; split the file")
            return _time_index_as_column(pd.read_parquet(path) if parquet else pd.read_feather(path)), 0, False
        if suffixes.endswith(_JSON):
            return _json_rows(_text_bytes(path, suffixes.endswith(".gz")), path), 0, False
        if suffixes.endswith(_CSV):
            text = _text_bytes(path, suffixes.endswith(".gz"))
            sep, banner, comma = _layout(text)
            notes += [f"{banner} line(s) above the table passed over"] if banner else []
            notes += [f"separated by {_SEPARATORS[sep]}" + (", with decimal commas" if comma else "")] if sep != "," else []
            read = {"dtype": str, "sep": sep, "skiprows": banner, "keep_default_na": False}
            header = pd.read_csv(io.BytesIO(text), header=None, nrows=1, **read)
            names = [_column_name(c) for c in header.iloc[0]] if len(header) else []
            if _a_bar(names):  # no header
                frame, how = _headerless(pd.read_csv(io.BytesIO(text), header=None, **read), path)
                first_line = banner + 1
                notes.append(how)
            else:
                twice = sorted({c for c in names if names.count(c) > 1})
                if twice:
                    raise DataError(f"{path}: column(s) {', '.join(map(clip, twice))} given twice; keep one of each")
                frame, first_line = pd.read_csv(io.BytesIO(text), **read), banner + 2
            return frame, first_line, comma
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types; the user needs the file and the cause
        raise DataError(f"{path}: cannot read file: {clip(str(exc), 300)}") from None
    raise DataError(f"{path}: unknown file type {suffixes or '(none)'}; expected .csv, .csv.gz, .parquet, .feather, .json or "
                    ".json.gz")


def _json_rows(text: bytes, path: Path) -> pd.DataFrame:
    """Candles as Freqtrade's json and jsongz formats and ccxt's ``fetch_ohlcv`` keep them: an array
    of ``[time, open, high, low, close, volume]`` arrays, read as a CSV's text is."""
    import pandas as pd

    try:
        rows = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested 100,000 deep
        raise DataError(f"{path}: not valid JSON: {clip(str(exc))}") from None
    if not isinstance(rows, list):
        kind = "object" if isinstance(rows, dict) else "string" if isinstance(rows, str) else "value"
        raise DataError(f"{path}: a JSON {kind}, not an array of [time, open, high, low, close, volume] arrays")
    bad = next((i for i, row in enumerate(rows) if not (isinstance(row, list) and len(row) == 6)), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad + 1} is {clip(json.dumps(rows[bad]))}, not [time, open, high, low, close, volume]")
    values = [[v if isinstance(v, str) else json.dumps(v) for v in row] for row in rows]  # each as the file has it
    return pd.DataFrame(values, columns=["timestamp", *_PRICE_COLUMNS, "volume"], dtype=str)


_SEPARATORS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "bars"}


def _layout(text: bytes) -> tuple[str, int, bool]:
    """How a CSV is laid out, from its first lines: the separator (a comma, or the semicolon, tab or
    bar on most lines at least five times: a spreadsheet in a European locale writes ``;`` and
    decimal commas), how many lines before the table hold no separator (a title or a link, as
    CryptoDataDownload's files open with), and whether its decimal mark is a comma."""
    lines = text[:4096].splitlines()[:12]
    lines = lines[:-1] if len(lines) > 1 else lines  # the last may be cut short
    sep = max(_SEPARATORS, key=lambda c: sum(line.count(c.encode()) >= 5 for line in lines))  # ties: the comma
    banner = next((i for i, line in enumerate(lines[:4]) if sep.encode() in line), 0)
    comma = sep != "," and any(b"," in line for line in lines[banner:])
    return sep, banner, comma


def _headerless(frame: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, str]:
    """A CSV without a header row, as exchanges' bulk files come (Binance's data.binance.vision
    klines: 12 columns, the 7th each bar's close time; Kraken's OHLCVT files: 7, the 7th each bar's
    trade count), as MetaTrader 4 exports them (7: a date and a time of day, then the rest) and as
    ccxt's candles are dumped (6): the first six columns are time, open, high, low, close and
    volume. Any other count is refused: the order of its columns cannot be known (Kraken's API
    answers its VWAP where the volume is). The frame, and how it was read."""
    import pandas as pd

    def number(k: int) -> pd.Series:
        return pd.to_numeric(frame[k], errors="coerce")

    columns = len(frame.columns)
    metatrader = columns == 7 and (joined := _dates_and_times(frame[0], frame[1])) is not None
    if metatrader:
        frame, columns = pd.concat([joined, frame.iloc[:, 2:]], axis=1).set_axis(range(6), axis=1), 6
    binance = columns == 12 and bool((number(6) > number(0)).all())
    kraken = False
    if columns == 7:  # a count, not a time; a volume, not a VWAP
        time, high, low, volume, count = (number(k) for k in (0, 2, 3, 5, 6))
        kraken = bool(((count >= 0) & (count % 1 == 0) & (count < time)).all() and not volume.between(low, high).all())
    if columns != 6 and not binance and not kraken:
        raise DataError(f"{path}: no header row, and {columns} columns (its first line: {clip(', '.join(frame.iloc[0]))}): a "
                        "file without one is read only with 6 columns (time, open, high, low, close, volume), as Kraken's "
                        "7-column OHLCVT (with the trade count), as MetaTrader's 7 (date, time, open, high, low, close, "
                        "volume) or as Binance's 12-column klines; add a header line naming the columns "
                        "(timestamp,open,high,low,close,volume)")
    how = ("Kraken's OHLCVT: time, open, high, low, close, volume and the trade count" if kraken
           else f"MetaTrader's date, time, open, high, low, close, volume, {_AS_UTC}" if metatrader
           else "its first six columns read as time, open, high, low, close, volume")
    return frame.iloc[:, :6].set_axis(["timestamp", *_PRICE_COLUMNS, "volume"], axis=1), f"no header: {how}"


_DAY = r"\d{4}[-./]?\d{2}[-./]?\d{2}"  # 2018-05-15, MetaTrader's 2018.05.15, Stooq's 20180515
_TIME_OF_DAY = r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?|\d{6}"  # 07:00, 07:00:00, 07:00:00.000, Stooq's 070000
_YEAR_LAST = r"\d{1,2}[-./]\d{1,2}[-./]\d{4}\b"  # 15.05.2018 (Dukascopy's), 05/15/2018
_AS_UTC = "read as UTC (an export's clock is often its broker's: MetaTrader's is its server's, often UTC+2 or +3)"


def _a_bar(fields: list[str]) -> bool:
    """Whether a CSV's first line is a bar, not a header: numbers, or MetaTrader 4's date and time
    of day and then numbers."""
    import pandas as pd

    if len(fields) > 2 and re.fullmatch(_DAY, fields[0]) and re.fullmatch(_TIME_OF_DAY, fields[1]):
        fields = fields[2:]
    return bool(fields) and bool(pd.to_numeric(pd.Series(fields), errors="coerce").notna().all())


def _dates_and_times(dates: pd.Series, times: pd.Series, named: bool = False) -> pd.Series | None:
    """Each row's date and time of day joined into one timestamp's text, where a file gives them in
    two columns, as MetaTrader's and Stooq's exports and many brokers' do (read alone, the times of
    day were refused as unparseable timestamps); None when its first row holds no such pair. A
    later row that is not one is then refused by name, as any unparseable timestamp. Columns
    ``named`` date and time need only the time of day: a date in another order (15.05.2018) is
    then refused with the whole timestamp quoted, not the time of day alone."""
    day, time = (column.astype(str).str.strip() for column in (dates, times))
    if not (re.fullmatch(_TIME_OF_DAY, time.iloc[0]) and (named or re.fullmatch(_DAY, day.iloc[0]))):
        return None
    return day + " " + time


def _where(path: Path, i: int, first_line: int, raw_ts: object) -> str:
    line = f", line {i + first_line}" if first_line else ""
    return f"{path}: row {i + 1}{line} (timestamp {clip(str(raw_ts))})"


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    """Index of the first True and how many more there are."""
    bad = np.flatnonzero(mask)
    return int(bad[0]), len(bad) - 1


def _more(n: int) -> str:
    return f" (and {n} more row(s))" if n else ""


def _parse_timestamps(col: pd.Series, path: Path, first_line: int) -> np.ndarray:
    """ISO-8601 strings, datetimes, or epoch seconds, milliseconds or microseconds -> int64 epoch
    seconds; whole seconds only, in one unit, between 1900 and 2200."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(col):
        dt = pd.to_datetime(col, utc=True)
    else:
        text = col.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().all():
            return _epoch_seconds(numeric.to_numpy(dtype=np.float64), text, path, first_line)
        dt = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = dt.isna().to_numpy()
    if bad.any():
        i, n = _first_bad(bad)
        order = (": a date with the year last (15.05.2018, 05/15/2018) is not read, its day and month a guess where both are "
                 "12 or less; write dates year first (2018-05-15)") if re.match(_YEAR_LAST, str(col.iloc[i]).strip()) else ""
        raise DataError(f"{_where(path, i, first_line, col.iloc[i])}: unparseable timestamp{_more(n)}{order}")
    micros = dt.dt.as_unit("us").astype("int64").to_numpy()
    _check_seconds(micros / 1e6, col, path, first_line)
    return micros // 1_000_000


_EPOCH_UNITS = ("seconds", "milliseconds", "microseconds")  # Binance's bulk klines count microseconds since 2025
_EPOCH_STEPS = (1e11, 1e14, 1e17)  # where each unit begins and the last ends: a date of 1973..5138 is 1e11..1e14 ms


def _epoch_seconds(values: np.ndarray, text: pd.Series, path: Path, first_line: int) -> np.ndarray:
    units = np.searchsorted(_EPOCH_STEPS, np.abs(values), side="right")
    unit = int(np.bincount(units, minlength=4)[:3].argmax())  # the file's unit: most of its rows'; a value
    mixed = (units != unit) & (units < 3)  # past every unit's dates is one outside 1900..2200, said below
    if mixed.any():
        i, n = _first_bad(mixed)
        raise DataError(f"{_where(path, i, first_line, text.iloc[i])}: mixed units: epoch {_EPOCH_UNITS[units[i]]} among "
                        f"epoch {_EPOCH_UNITS[unit]}{_more(n)}")
    seconds = values / 1000.0 ** unit
    _check_seconds(seconds, text, path, first_line)
    return seconds.astype(np.int64)


def _check_seconds(seconds: np.ndarray, raw: pd.Series, path: Path, first_line: int) -> None:
    outside = ~((seconds >= FIRST_SECOND) & (seconds < LAST_SECOND))
    if outside.any():
        i, n = _first_bad(outside)
        raise DataError(f"{_where(path, i, first_line, raw.iloc[i])}: timestamp outside 1900..2200{_more(n)}")
    fractional = seconds != np.floor(seconds)
    if fractional.any():
        i, n = _first_bad(fractional)
        raise DataError(f"{_where(path, i, first_line, raw.iloc[i])}: timestamp is not a whole second{_more(n)}")


def load_candles(path: str | Path, timeframe: str | None = None, notes: list[str] | None = None) -> Candles:
    """Load and validate OHLCV candles; raise DataError naming the first bad row. ``notes``, if given,
    has how the file was read where it was not plain (a banner passed over, semicolons, a volume
    column chosen, newest first), for ``genesis data check`` to say.

    Checked: required columns, timestamps (parseable, strictly increasing, or decreasing throughout
    for a file newest first, on the timeframe's grid), prices finite and positive, volume finite and
    non-negative, high >= max(open, close) and low <= min(open, close), one symbol if a column
    names it. Gaps are allowed (see ``Candles.gaps``).
    """
    path, notes = Path(path), [] if notes is None else notes
    frame, first_line, comma = _read_frame(path, notes)
    columns = {_column_name(c): c for c in frame.columns}
    if len(columns) < len(frame.columns):
        names = [_column_name(c) for c in frame.columns]
        twice = sorted({c for c in names if names.count(c) > 1})
        raise DataError(f"{path}: column(s) {', '.join(map(clip, twice))} given twice; keep one of each")
    time_key = next((a for a in _TIME_ALIASES if a in columns), None) or _unnamed_time(frame)
    if "volume" not in columns and (traded := _traded_volume(frame, columns, path, comma) or _bracketed_vol(columns)) is not None:
        columns["volume"] = traded
        notes.append(f"volume from the column {traded}")
    missing = [c for c in (*_PRICE_COLUMNS, "volume") if c not in columns]
    if time_key is None:
        missing.insert(0, "timestamp")
    if missing or time_key is None:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {clip(', '.join(map(str, frame.columns)), 300)}")
    if len(frame) == 0:
        raise DataError(f"{path}: no rows")
    raw_ts = frame[columns[time_key]]
    if time_key == "time" and "date" in columns and (joined := _dates_and_times(frame[columns["date"]], raw_ts, named=True)) is not None:
        raw_ts = joined
        notes.append(f"each bar's time from the columns {columns['date']} and {columns['time']}, {_AS_UTC}")
    ts = _parse_timestamps(raw_ts, path, first_line)

    values = {}
    for name in (*_PRICE_COLUMNS, "volume"):
        col = _numbers(frame[columns[name]], comma)
        if not np.isfinite(col).all():
            i, n = _first_bad(~np.isfinite(col))
            raw = frame[columns[name]].iloc[i]
            raise DataError(f"{_where(path, i, first_line, raw_ts.iloc[i])}: {name} is {clip(repr(raw))}, not a finite number{_more(n)}")
        values[name] = col
    o, h, lo, c, v = (values[k] for k in ("open", "high", "low", "close", "volume"))
    for name in _PRICE_COLUMNS:
        if (values[name] <= 0).any():
            i, n = _first_bad(values[name] <= 0)
            raise DataError(f"{_where(path, i, first_line, raw_ts.iloc[i])}: {name} {values[name][i]} is not positive{_more(n)}")
    if (v < 0).any():
        i, n = _first_bad(v < 0)
        raise DataError(f"{_where(path, i, first_line, raw_ts.iloc[i])}: volume {v[i]} is negative{_more(n)}")
    if (h < np.maximum(o, c)).any():
        i, n = _first_bad(h < np.maximum(o, c))
        raise DataError(f"{_where(path, i, first_line, raw_ts.iloc[i])}: high {h[i]} < max(open, close) {max(o[i], c[i])}{_more(n)}")
    if (lo > np.minimum(o, c)).any():
        i, n = _first_bad(lo > np.minimum(o, c))
        raise DataError(f"{_where(path, i, first_line, raw_ts.iloc[i])}: low {lo[i]} > min(open, close) {min(o[i], c[i])}{_more(n)}")

    diffs = np.diff(ts)
    rows = np.arange(len(ts))  # each bar's row in the file
    if len(ts) > 1 and (diffs < 0).all():  # newest first, as CryptoDataDownload's files are: read oldest first
        rows, ts, o, h, lo, c, v = (a[::-1].copy() for a in (rows, ts, o, h, lo, c, v))
        diffs = -diffs[::-1]
        notes.append("newest bar first: read oldest first")
    for bad, what in ((diffs == 0, "duplicate timestamp (same as row {})"), (diffs < 0, "timestamps not sorted (earlier than row {})")):
        if bad.any():
            i, n = _first_bad(bad)
            local = repeated_local_hours(ts[1:][bad])
            raise DataError(f"{_where(path, rows[i + 1], first_line, raw_ts.iloc[rows[i + 1]])}: {what.format(rows[i] + 1)}{_more(n)}"
                            + (f": {local}" if local else ""))
    steps, counts = np.unique(diffs, return_counts=True)
    common = int(steps[np.argmax(counts)]) if len(steps) else None  # the bars' own timeframe
    if timeframe is not None:
        tf = parse_timeframe(timeframe)
        # 30m given for 1h bars passed as 30m bars, every other one missing; 4h given for 1h bars was
        # refused at their second row as "not a multiple of the 14400 s timeframe"
        if common is not None and (tf not in steps or common < tf):
            some = int(counts[steps == tf].sum())
            head = (f"only {some:,} of the {len(diffs):,} steps between its bars {'is' if some == 1 else 'are'} {timeframe}" if some
                    else f"no two bars are {timeframe} apart")
            raise DataError(f"{path}: timeframe {timeframe} given, but {head} (most are {format_timeframe(common)}): give "
                            f"{format_timeframe(common)}, or none (it is read from the bars)"
                            + (f"; a file's bars are not resampled: download {timeframe} bars (genesis data download "
                               f"--timeframe {timeframe})" if common < tf else ""))
    elif common is not None:
        tf = common
    else:  # a single bar: its metadata's timeframe, where it says one (a download of one bar, updated)
        tf = _declared_timeframe(path)
    off_grid = (diffs % tf) != 0
    if off_grid.any():
        i, n = _first_bad(off_grid)
        raise DataError(
            f"{_where(path, rows[i + 1], first_line, raw_ts.iloc[rows[i + 1]])}: {diffs[i]} s after the previous bar, "
            f"not a multiple of the {tf} s timeframe{_more(n)}"
        )
    return Candles(ts, o, h, lo, c, v, tf, str(path), _file_symbol(frame, columns, path, first_line, raw_ts, tf))


def _declared_timeframe(path: Path) -> int:
    """The timeframe a single bar's file declares in its metadata (``file_market``)."""
    market = file_market(path)
    said = market.get("timeframe") if market else None
    if isinstance(said, str):
        with contextlib.suppress(DataError):
            return parse_timeframe(said)
    raise DataError(f"{path}: a single bar has no timeframe, and no market metadata says one; pass the timeframe explicitly")


def _numbers(column: pd.Series, comma: bool) -> np.ndarray:
    """A column's values as numbers, NaN where one is not; ``comma``: the decimal mark is one."""
    import pandas as pd

    text = column.str.replace(",", ".", regex=False) if comma else column  # a CSV's column: text
    return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)


def _bracketed_vol(columns: dict[str, Any]) -> Any:
    """MetaTrader's and Stooq's ``<VOL>``, the volume, where a file names none ``volume`` (MetaTrader's
    ``<TICKVOL>`` counts price changes, not trades); a plain ``vol`` may be anything (a volatility)."""
    column = columns.get("vol")
    return column if str(column).strip().startswith("<") else None


def _traded_volume(frame: pd.DataFrame, columns: dict[str, Any], path: Path, comma: bool) -> Any:
    """The column of volume in the traded asset where a file gives two and names neither ``volume``
    (CryptoDataDownload's ``Volume BTC`` and ``Volume USD``, CryptoCompare's ``volumefrom`` and
    ``volumeto``): the one that times the close is the other, within 20% on most bars. None when
    the file names fewer than two; a DataError when its volumes cannot be told apart."""
    named = [name for name in columns if name.startswith("volume")]
    if len(named) < 2 or "close" not in columns:  # one alone is named among the columns found, volume missing
        return None
    close = _numbers(frame[columns["close"]], comma)
    volume = {name: _numbers(frame[columns[name]], comma) for name in named}
    if not any(v.any() for v in volume.values()):  # no volume in any: either says so
        return columns[named[0]]

    def times_close_is(a: str, b: str) -> bool:
        both = (volume[a] > 0) & (volume[b] > 0)  # bars with trades (NaN compares false)
        with np.errstate(divide="ignore", invalid="ignore"):
            return bool(both.any()) and 0.8 <= float(np.median(volume[b][both] / (volume[a][both] * close[both]))) <= 1.25

    traded = [a for a in named for b in named if a != b and times_close_is(a, b)]
    if len(traded) != 1:
        raise DataError(f"{path}: no volume column, and {', '.join(str(columns[n]) for n in named)} could not be told apart "
                        "(the traded asset's volume times the close is the other): name the one counted in the traded "
                        "asset volume")
    return columns[traded[0]]


def _file_symbol(frame: pd.DataFrame, columns: dict[str, Any], path: Path, first_line: int, raw_ts: pd.Series,
                 timeframe_seconds: int) -> str | None:
    """The market the file says it holds: its metadata's (``file_market``), or one value of a
    ``symbol`` column (CryptoDataDownload's ``BTC/USD``) on every row; they must agree, and the
    metadata's timeframe must be the bars' (a sidecar copied beside other bars was read as the bars'
    market, whatever timeframe it said)."""
    market = file_market(path)
    declared = market["symbol"] if market else None
    said = market.get("timeframe") if market else None
    try:
        same = said is None or (isinstance(said, str) and parse_timeframe(said) == timeframe_seconds)
    except DataError:  # no timeframe at all
        same = False
    if not same:
        raise DataError(f"{path}: its market metadata says {clip(str(said))} bars, but its bars are "
                        f"{format_timeframe(timeframe_seconds)} apart: a metadata file of other bars")
    if "symbol" not in columns:
        return declared
    symbols = frame[columns["symbol"]].astype(str).str.strip()
    other = (symbols != symbols.iloc[0]).to_numpy()
    if other.any():
        i, n = _first_bad(other)
        raise DataError(f"{_where(path, i, first_line, raw_ts.iloc[i])}: symbol {clip(symbols.iloc[i])} where row 1's is "
                        f"{clip(symbols.iloc[0])}{_more(n)}: a file holds one market's bars")
    symbol = symbols.iloc[0]
    if not symbol:
        return declared
    if not (len(symbol) <= 64 and symbol.isprintable()):
        raise DataError(f"{path}: symbol column holds {clip(symbol)}, not a market's symbol (1 to 64 printable characters)")
    if declared is not None and not same_symbol(declared, symbol):
        raise DataError(f"{path}: its symbol column says {symbol}, its market metadata {declared}")
    return declared or symbol


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


def _json_array(path: Path) -> bool:
    """Whether a JSON file holds an array, as candles do (not a market's metadata or a result)."""
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")) as fh:
            return fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")  # a byte order mark and spaces before
    except (OSError, EOFError, zlib.error):
        return True  # listed with what is wrong with it


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
        if path != folder and (not path.is_file() or not _named_as_candles(path.name)
                               or path.name.lower().endswith(_JSON) and not _json_array(path)):  # a backtest's JSON
            continue
        try:
            found.append(CandleFile(path, file_market(path), load_candles(path), None))
        except DataError as exc:
            found.append(CandleFile(path, None, None, str(exc)))
    return found

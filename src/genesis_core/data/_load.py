"""Reading candle files (CSV, CSV.gz, Parquet) and refusing the ones that cannot be trusted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genesis_core.data._candles import Candles, parse_timeframe
from genesis_core.errors import DataError

_PRICE_COLUMNS = ("open", "high", "low", "close")
_TIME_ALIASES = ("timestamp", "time", "date", "datetime", "open_time")


def _read_frame(path: Path) -> tuple[pd.DataFrame, bool]:
    """Return the raw table and whether rows map to file lines (CSV) for error messages."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith(".parquet") or suffixes.endswith(".pq"):
            return pd.read_parquet(path), False
        if ".csv" in suffixes or suffixes.endswith(".txt"):
            return pd.read_csv(path, dtype=str, keep_default_na=False), True
    except Exception as exc:  # pandas/pyarrow raise many types; the user needs the file and the cause
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    raise DataError(f"{path}: unknown file type {suffixes or '(none)'}; expected .csv, .csv.gz or .parquet")


def _where(path: Path, i: int, is_csv: bool, raw_ts: object) -> str:
    line = f", line {i + 2}" if is_csv else ""
    return f"{path}: row {i + 1}{line} (timestamp {raw_ts})"


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    """Index of the first True and how many more there are."""
    bad = np.flatnonzero(mask)
    return int(bad[0]), len(bad) - 1


def _more(n: int) -> str:
    return f" (and {n} more row(s))" if n else ""


def _parse_timestamps(col: pd.Series, path: Path, is_csv: bool) -> np.ndarray:
    """ISO-8601 strings, datetimes, or epoch seconds/milliseconds -> int64 epoch seconds."""
    if pd.api.types.is_datetime64_any_dtype(col):
        dt = pd.to_datetime(col, utc=True)
        bad = dt.isna().to_numpy()
    else:
        text = col.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().all():
            values = numeric.to_numpy(dtype=np.float64)
            # Epoch milliseconds are > 1e11 for any date after 1973; seconds stay below until year 5138.
            scale = 1000.0 if np.nanmax(np.abs(values)) > 1e11 else 1.0
            seconds = values / scale
            if not np.all(seconds == np.floor(seconds)):
                i, n = _first_bad(seconds != np.floor(seconds))
                raise DataError(f"{_where(path, i, is_csv, text.iloc[i])}: timestamp is not a whole second{_more(n)}")
            return seconds.astype(np.int64)
        dt = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        bad = dt.isna().to_numpy()
    if bad.any():
        i, n = _first_bad(bad)
        raise DataError(f"{_where(path, i, is_csv, col.iloc[i])}: unparseable timestamp{_more(n)}")
    return (dt.astype("datetime64[ns, UTC]").astype("int64").to_numpy() // 1_000_000_000).astype(np.int64)


def load_candles(path: str | Path, timeframe: str | None = None) -> Candles:
    """Load and validate OHLCV candles; raise DataError naming the first bad row.

    Checked: required columns, timestamps (parseable, strictly increasing, on the timeframe's
    grid), prices finite and positive, volume finite and non-negative, high >= max(open, close)
    and low <= min(open, close). Gaps are allowed (see ``Candles.gaps``).
    """
    path = Path(path)
    frame, is_csv = _read_frame(path)
    columns = {str(c).strip().lower(): c for c in frame.columns}
    time_key = next((a for a in _TIME_ALIASES if a in columns), None)
    missing = [c for c in (*_PRICE_COLUMNS, "volume") if c not in columns]
    if time_key is None:
        missing.insert(0, "timestamp")
    if missing or time_key is None:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}")
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
            raise DataError(f"{_where(path, i, is_csv, raw_ts.iloc[i])}: {name} is {raw!r}, not a finite number{_more(n)}")
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
    if timeframe is not None:
        tf = parse_timeframe(timeframe)
    elif len(diffs):
        steps, counts = np.unique(diffs, return_counts=True)
        tf = int(steps[np.argmax(counts)])
    else:
        raise DataError(f"{path}: a single bar has no timeframe; pass the timeframe explicitly")
    off_grid = (diffs % tf) != 0
    if off_grid.any():
        i, n = _first_bad(off_grid)
        raise DataError(
            f"{_where(path, i + 1, is_csv, raw_ts.iloc[i + 1])}: {diffs[i]} s after the previous bar, "
            f"not a multiple of the {tf} s timeframe{_more(n)}"
        )
    return Candles(ts, o, h, lo, c, v, tf, str(path))

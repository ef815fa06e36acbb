from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genesis_core.data import format_ts, load_candles
from genesis_core.errors import DataError
from tests.conftest import SAMPLE_FILE


def _sample_frame() -> pd.DataFrame:
    with gzip.open(SAMPLE_FILE, "rt") as fh:
        return pd.read_csv(fh, dtype=str)


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "c.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_bundled_file_matches_provenance(btc):
    assert len(btc) == 49_724
    assert btc.timeframe == "1h"
    assert format_ts(btc.timestamps[0]) == "2018-05-15T07:00:00Z"
    assert format_ts(btc.timestamps[-1]) == "2024-01-16T15:00:00Z"
    gaps = btc.gaps()
    assert (gaps.count, gaps.missing_bars, gaps.largest_seconds) == (6, 13, 5 * 3600)
    assert gaps.largest_at == "2022-10-12T07:00:00Z"
    # spot checks from PROVENANCE.md
    for when, close in [("2018-12-15T00:00:00Z", 3307), ("2020-03-12T12:00:00Z", 6071),
                        ("2021-01-03T00:00:00Z", 32474), ("2024-01-10T00:00:00Z", 45978)]:
        i = int(np.searchsorted(btc.timestamps, pd.Timestamp(when).timestamp()))
        assert round(btc.close[i]) == close


def test_arrays_are_read_only(sample):
    with pytest.raises(ValueError):
        sample.close[0] = 1.0


def test_parquet_and_epoch_timestamps_give_the_same_fingerprint(tmp_path, sample):
    frame = _sample_frame()
    parquet = tmp_path / "c.parquet"
    as_dt = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], utc=True), **{c: frame[c].astype(float) for c in ("open", "high", "low", "close", "volume")})
    as_dt.to_parquet(parquet)
    ms = frame.assign(timestamp=(pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("ms").astype("int64")).astype(str))
    s = frame.assign(timestamp=(pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("s").astype("int64")).astype(str))
    fps = {load_candles(p).fingerprint for p in (parquet, _write(tmp_path, ms, "ms.csv"), _write(tmp_path, s, "s.csv"))}
    assert fps == {sample.fingerprint}


def test_fingerprint_changes_with_any_value(tmp_path, sample):
    frame = _sample_frame()
    frame.loc[100, "volume"] = str(float(frame.loc[100, "volume"]) + 0.001)
    assert load_candles(_write(tmp_path, frame)).fingerprint != sample.fingerprint


def _broken(kind: str) -> tuple[pd.DataFrame, str]:
    f = _sample_frame()
    if kind == "missing_column":
        return f.drop(columns=["low"]), r"missing column\(s\) low"
    if kind == "unparseable":
        f.loc[41, "timestamp"] = "yesterday"
        return f, r"row 42, line 43 \(timestamp yesterday\): unparseable timestamp"
    if kind == "nan":
        f.loc[9, "close"] = "nan"
        return f, r"row 10, line 11 .*close is 'nan', not a finite number"
    if kind == "inf":
        f.loc[9, "open"] = "inf"
        return f, r"row 10, .*open is 'inf'"
    if kind == "empty_cell":
        f.loc[9, "volume"] = ""
        return f, r"row 10, .*volume is '', not a finite number"
    if kind == "non_positive":
        f.loc[5, ["open", "low"]] = "0"
        return f, r"row 6, .*open 0.0 is not positive"
    if kind == "high_below":
        f.loc[7, "high"] = str(float(f.loc[7, "close"]) - 1)
        return f, r"row 8, line 9 .*high .* < max\(open, close\)"
    if kind == "low_above":
        f.loc[7, "low"] = str(float(f.loc[7, "open"]) + 100)
        return f, r"row 8, .*low .* > min\(open, close\)"
    if kind == "duplicate":
        f.loc[50, "timestamp"] = f.loc[49, "timestamp"]
        return f, r"row 51, .*duplicate timestamp \(same as row 50\)"
    if kind == "unsorted":
        f.loc[[60, 61]] = f.loc[[61, 60]].to_numpy()
        return f, r"row 62, .*timestamps not sorted"
    if kind == "off_grid":
        f.loc[70, "timestamp"] = f.loc[70, "timestamp"].replace(":00:00Z", ":30:00Z")
        return f, r"row 71, .*not a multiple of the 3600 s timeframe"
    if kind == "negative_volume":
        f.loc[3, "volume"] = "-1"
        return f, r"row 4, .*volume -1.0 is negative"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing_column", "unparseable", "nan", "inf", "empty_cell", "non_positive", "high_below",
                                  "low_above", "duplicate", "unsorted", "off_grid", "negative_volume"])
def test_each_bad_input_is_refused_naming_the_row(tmp_path, kind):
    frame, pattern = _broken(kind)
    with pytest.raises(DataError, match=pattern):
        load_candles(_write(tmp_path, frame))


def test_more_bad_rows_are_counted(tmp_path):
    f = _sample_frame()
    f.loc[[3, 4, 5], "close"] = "nan"
    with pytest.raises(DataError, match=r"row 4,.*\(and 2 more row\(s\)\)"):
        load_candles(_write(tmp_path, f))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_candles(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        load_candles(tmp_path / "x.xlsx")


def test_explicit_timeframe_is_checked(sample):
    assert load_candles(SAMPLE_FILE, "1h").fingerprint == sample.fingerprint
    with pytest.raises(DataError, match="not a multiple of the 14400 s"):
        load_candles(SAMPLE_FILE, "4h")

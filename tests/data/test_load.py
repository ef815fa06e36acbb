from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from genesis_core.config import read_config_file
from genesis_core.data import MARKET_KEY, format_ts, load_candles
from genesis_core.errors import DataError
from tests.conftest import BTC_FILE, ROOT, SAMPLE_FILE
from tests.runs import genesis


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


def test_each_bundled_file_declares_its_market_so_a_config_of_another_is_refused(tmp_path):
    """The bundled CSVs said no market, so `backtest -c configs/reference.yaml --data
    data/BTCUSDT_1h_binance.csv.gz` ran the model trained on Bitfinex's BTC/USD on Binance's BTC/USDT
    as BTCUSD, with no word: each now has the ``.market.json`` a download writes beside a CSV."""
    from genesis_core.data import file_market

    for name, exchange, symbol in (("BTCUSD_1h_bitfinex.csv.gz", "bitfinex", "BTC/USD"), ("BTCUSDT_1h_binance.csv.gz", "binance", "BTC/USDT"),
                                   ("tBTCUSD_1h_sample.csv.gz", "bitfinex", "BTC/USD")):
        candles = load_candles(ROOT / "data" / name)
        market = file_market(ROOT / "data" / name)
        assert candles.symbol == symbol and market is not None
        assert (market["exchange"], market["timeframe"], market["first_bar"], market["last_bar"], market["bars"]) == \
            (exchange, candles.timeframe, format_ts(candles.timestamps[0]), format_ts(candles.timestamps[-1]), len(candles))
    listed = genesis("data", "list", "--json")
    assert {(Path(f["path"]).name, f["exchange"], f["symbol"]) for f in json.loads(listed.stdout)} >= \
        {("BTCUSD_1h_bitfinex.csv.gz", "bitfinex", "BTC/USD"), ("BTCUSDT_1h_binance.csv.gz", "binance", "BTC/USDT")}

    out = tmp_path / "r.json"
    refused = genesis("backtest", "-c", "configs/reference.yaml", "--data", "data/BTCUSDT_1h_binance.csv.gz", "--out", str(out))
    assert refused.returncode == 2 and not out.exists()
    assert refused.stderr.strip() == ("error: data.symbol BTCUSD but data/BTCUSDT_1h_binance.csv.gz says it holds BTC/USDT: declare "
                                      "data.symbol BTC/USDT, or use a file of BTCUSD")
    declared = tmp_path / "usdt.yaml"
    declared.write_text((ROOT / "configs" / "reference.yaml").read_text().replace("symbol: BTCUSD ", "symbol: BTC/USDT "))
    ran = genesis("backtest", "-c", str(declared), "--data", "data/BTCUSDT_1h_binance.csv.gz", "--out", str(out))
    assert ran.returncode == 0 and "warning: model builtin:btcusd_1h was trained on BTCUSD 1h, the data is BTC/USDT 1h" in ran.stderr

    import shutil

    from genesis_core.data import market_sidecar

    copied = tmp_path / "BTCUSD_1h_bitfinex.csv.gz"  # with a 4h file's metadata beside it
    shutil.copyfile(ROOT / "data" / copied.name, copied)
    market_sidecar(copied).write_text(json.dumps({**file_market(ROOT / "data" / copied.name), "timeframe": "4h"}))
    for command in ("check", "update"):  # update said "timeframe 4h given, ...: give 1h, or none", of a word no one gave
        checked = genesis("data", command, str(copied))
        assert (checked.returncode, checked.stderr.strip()) == (2, f"error: {copied}: its market metadata says 4h bars, but its "
                                                                   "bars are 1h apart: a metadata file of other bars")
    one = tmp_path / "one.csv"  # a single bar says no timeframe: its metadata's is read, as update read it
    one.write_text("\n".join(gzip.open(copied, "rt").read().splitlines()[:2]) + "\n")
    market_sidecar(one).write_text(json.dumps(file_market(ROOT / "data" / copied.name)))
    assert load_candles(one).timeframe == "1h" and len(load_candles(one)) == 1
    market_sidecar(one).unlink()
    with pytest.raises(DataError, match="a single bar has no timeframe, and no market metadata says one"):
        load_candles(one)


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


def test_binance_s_headerless_klines_in_milli_or_microseconds_and_ccxt_s_six_columns_load_as_the_same_candles(tmp_path):
    """data.binance.vision's bulk klines have no header row and 12 columns (the 7th each bar's close
    time), their times in epoch milliseconds until 2024 and microseconds since 2025; a dump of ccxt's
    candles has 6. Each was refused as missing every column, naming its first bar as the header."""
    from tests.conftest import ROOT

    binance = load_candles(ROOT / "data" / "BTCUSDT_1h_binance.csv.gz").slice(0, 500)
    rows = [[repr(float(getattr(binance, k)[i])) for k in ("open", "high", "low", "close", "volume")] for i in range(500)]

    def headerless(name: str, unit: int, columns: int, bad: int | None = None) -> Path:
        lines = []
        for i, (t, row) in enumerate(zip(binance.timestamps.tolist(), rows, strict=True)):
            opened = t * unit
            row = [row[0], row[2] if i == bad else row[1], *row[2:]]  # ``bad``: a high at its low
            extra = [str(opened + 3600 * unit - 1), "40512.2", "1402", "23.1", "935877.1", "0"]
            lines.append(",".join([str(opened), *row, *extra][:columns]) + "\n")
        (tmp_path / name).write_text("".join(lines))
        return tmp_path / name

    for name, unit, columns in (("ms.csv", 1_000, 12), ("us.csv", 1_000_000, 12), ("ccxt.csv", 1_000, 6)):
        notes: list[str] = []
        assert load_candles(headerless(name, unit, columns), None, notes).fingerprint == binance.fingerprint, name
        assert notes == ["no header: its first six columns read as time, open, high, low, close, volume"]
    seven = headerless("seven.csv", 1, 7)  # Binance's klines cut after the close time: not Kraken's trade count
    with pytest.raises(DataError, match=r"seven.csv: no header row, and 7 columns \(its first line: 1502942400, 4261.48, .*\): "
                                        r"a file without one is read only with 6 columns \(time, open, high, low, close, "
                                        r"volume\), as Kraken's 7-column OHLCVT \(with the trade count\), as MetaTrader's 7 "
                                        r"\(date, time, open, high, low, close, volume\) or as Binance's 12-column klines; add a "
                                        r"header line"):
        load_candles(seven)
    with pytest.raises(DataError, match=rf"row 42, line 42 \(timestamp {binance.timestamps[41] * 1_000_000}\): high "
                                        rf"{binance.low[41]} <"):
        load_candles(headerless("bad.csv", 1_000_000, 12, bad=41))  # a line is a row: no header before it
    mixed = headerless("mixed.csv", 1_000_000, 12).read_text().splitlines()
    mixed[9] = mixed[9].replace(str(binance.timestamps[9] * 1_000_000), str(binance.timestamps[9] * 1_000), 1)
    (tmp_path / "mixed.csv").write_text("\n".join(mixed))
    with pytest.raises(DataError, match="row 10, line 10 .*: mixed units: epoch milliseconds among epoch microseconds"):
        load_candles(tmp_path / "mixed.csv")


def test_kraken_s_headerless_ohlcvt_files_load_as_the_same_candles_and_its_api_s_vwap_is_not_taken_for_the_volume(tmp_path, btc):
    """Kraken's downloadable OHLCVT files (``XBTUSD_60.csv``) have no header and 7 columns: time in
    epoch seconds, open, high, low, close, volume and the bar's trade count. They were refused for
    their column count. Its API's candles, dumped, hold a VWAP between the close and the volume: 8
    columns, still refused, and a 7-column file whose 6th column lies within every bar's range (a
    VWAP, not a volume) is refused too rather than read as volumes."""
    bars = btc.slice(0, 1000)
    trades = np.random.default_rng(0).integers(0, 5000, len(bars))

    def write(name: str, sixth: np.ndarray, *more: np.ndarray) -> Path:
        columns = [bars.timestamps, bars.open, bars.high, bars.low, bars.close, sixth, *more]
        (tmp_path / name).write_text("".join(",".join(repr(c[i].item()) for c in columns) + "\n" for i in range(len(bars))))
        return tmp_path / name

    notes: list[str] = []
    kraken = load_candles(write("XBTUSD_60.csv", bars.volume, trades), None, notes)
    assert kraken.fingerprint == bars.fingerprint and np.array_equal(kraken.volume, bars.volume)
    assert notes == ["no header: Kraken's OHLCVT: time, open, high, low, close, volume and the trade count"]
    vwap = (bars.high + bars.low + bars.close) / 3
    for name, columns in (("api.csv", (vwap, bars.volume, trades)), ("vwap.csv", (vwap, trades))):
        with pytest.raises(DataError, match=rf"{name}: no header row, and {len(columns) + 5} columns"):
            load_candles(write(name, *columns))


def test_cryptodatadownload_s_files_newest_first_under_a_banner_load_as_the_same_candles_with_their_market(tmp_path, btc):
    """CryptoDataDownload's files (``Bitfinex_BTCUSD_1h.csv``, the reference market) open with a
    line holding its address, give the time as ``unix`` and ``date``, the volume in both currencies
    and none named ``volume``, and run newest first: each was refused, the address taken for the
    header. Their ``symbol`` column is the market checked against a model's."""
    from genesis_core.backtest import training_problems
    from genesis_core.strategy import Training

    bars = btc.slice(30_000, 31_000)
    t = pd.to_datetime(bars.timestamps, unit="s", utc=True)
    table = pd.DataFrame({"unix": bars.timestamps * 1000, "date": t.strftime("%Y-%m-%d %H:%M:%S"), "symbol": "BTC/USD",
                          **{k: getattr(bars, k) for k in ("open", "high", "low", "close")},
                          "Volume BTC": bars.volume, "Volume USD": (bars.volume * bars.close).round(2)})

    def cdd(name: str, frame: pd.DataFrame) -> Path:
        (tmp_path / name).write_text("https://www.CryptoDataDownload.com\n" + frame.iloc[::-1].to_csv(index=False))
        return tmp_path / name

    for name, frame in (("cdd.csv", table), ("usd_first.csv", table[[*table.columns[:7], "Volume USD", "Volume BTC"]])):
        loaded = load_candles(cdd(name, frame))
        assert loaded.fingerprint == bars.fingerprint and loaded.symbol == "BTC/USD", name
        assert all(np.array_equal(getattr(loaded, k), getattr(bars, k)) for k in ("timestamps", "close", "volume")), name
    checked = genesis("data", "check", str(tmp_path / "cdd.csv"), "--json")  # what was read, said
    assert checked.returncode == 0 and {k: v for k, v in json.loads(checked.stdout).items() if k in ("read", "symbol", "fingerprint")} == {
        "read": ["1 line(s) above the table passed over", "volume from the column Volume BTC", "newest bar first: read oldest first"],
        "symbol": "BTC/USD", "fingerprint": bars.fingerprint}
    off = table.copy()
    off.loc[500, "unix"] += 60_000  # the 501st bar by time, row 500 of the file (newest first), line 502 under the banner and header
    with pytest.raises(DataError, match=rf"row 500, line 502 \(timestamp {off.loc[500, 'unix']}\): 3660 s after the previous bar"):
        load_candles(cdd("off.csv", off))
    two = table.copy()
    two.loc[:9, "symbol"] = "ETH/USD"  # the oldest ten bars: the file's last ten rows
    with pytest.raises(DataError, match=r"row 991, line 993 .*: symbol ETH/USD where row 1's is BTC/USD \(and 9 more row\(s\)\): "
                                        r"a file holds one market's bars"):
        load_candles(cdd("two.csv", two))
    euro = table.assign(**{"Volume USD": table["Volume USD"] * 0.5})
    with pytest.raises(DataError, match=r"euro.csv: no volume column, and Volume BTC, Volume USD could not be told apart"):
        load_candles(cdd("euro.csv", euro))
    with warnings.catch_warnings():  # a file without volume in either column: read as such, not a median of nothing
        warnings.simplefilter("error")
        assert not load_candles(cdd("none.csv", table.assign(**{"Volume BTC": 0.0, "Volume USD": 0.0}))).volume.any()

    eth = load_candles(cdd("eth.csv", table.assign(symbol="ETH/USD")))
    model = Training("model m", "BTCUSD", "1h", "2018-06-01T00:00:00Z", "2021-12-31T23:00:00Z")
    assert training_problems([model], eth, eth.symbol, [])[1] == ["model m was trained on BTCUSD 1h, the data is ETH/USD 1h"]


def test_a_spreadsheet_s_csv_with_semicolons_and_decimal_commas_or_tabs_loads_as_the_same_candles(tmp_path, btc):
    """A spreadsheet in a European locale saves its CSV with semicolons and decimal commas
    (``8739,5``); others save tabs. Each was refused as one column; a title line above the header
    took the header with it."""
    bars = btc.slice(1_000, 1_500)
    table = pd.DataFrame({"timestamp": [format_ts(t) for t in bars.timestamps],
                          **{k: getattr(bars, k) for k in ("open", "high", "low", "close", "volume")}})
    table.to_csv(tmp_path / "excel.csv", sep=";", decimal=",", index=False)
    (tmp_path / "titled.csv").write_text("Bitfinex BTCUSD 1h\n" + (tmp_path / "excel.csv").read_text())
    table.to_csv(tmp_path / "tabs.txt", sep="\t", index=False)
    assert f"{format_ts(bars.timestamps[0])};{float(bars.open[0])}".replace(".", ",") in (tmp_path / "excel.csv").read_text()
    for name, read in (("excel.csv", ["separated by semicolons, with decimal commas"]),
                       ("titled.csv", ["1 line(s) above the table passed over", "separated by semicolons, with decimal commas"]),
                       ("tabs.txt", ["separated by tabs"])):
        notes: list[str] = []
        assert load_candles(tmp_path / name, None, notes).fingerprint == bars.fingerprint and notes == read, name
    bad = (tmp_path / "titled.csv").read_text().splitlines()
    bad[12] = bad[12].replace(";", ";x", 1)  # row 11's open, line 13 under the title and the header
    (tmp_path / "bad.csv").write_text("\n".join(bad))
    written = str(float(bars.open[10])).replace(".", ",")  # the value quoted as the file has it
    with pytest.raises(DataError, match=rf"bad.csv: row 11, line 13 \(timestamp .*\): open is 'x{written}', not a finite number"):
        load_candles(tmp_path / "bad.csv")


def test_a_date_and_a_time_of_day_in_two_columns_as_metatrader_and_stooq_export_them_load_as_the_same_candles(tmp_path, btc):
    """MetaTrader 5 exports ``<DATE>`` (2018.05.15) and ``<TIME>`` tab-separated, ``<TICKVOL>`` and
    ``<VOL>`` where the volume is; MetaTrader 4 the same without a header; Stooq ``<DATE>``
    20180515 and ``<TIME>`` 070000; many brokers ``Date,Time``. Each was refused, the time of day
    taken for the timestamp (``row 1, line 2 (timestamp 07:00): unparseable timestamp``) or the first
    bar for the header. Each is read as UTC, which the notes say (a broker's clock often is not)."""
    bars = btc.slice(2_000, 2_500)
    t = pd.to_datetime(bars.timestamps, unit="s", utc=True)
    prices = {k: getattr(bars, k) for k in ("open", "high", "low", "close")}
    day, minute, second = t.strftime("%Y.%m.%d"), t.strftime("%H:%M"), t.strftime("%H:%M:%S")
    pd.DataFrame({"<DATE>": day, "<TIME>": second, **{f"<{k.upper()}>": v for k, v in prices.items()}, "<TICKVOL>": 100,
                  "<VOL>": bars.volume, "<SPREAD>": 0}).to_csv(tmp_path / "mt5.csv", sep="\t", index=False)
    pd.DataFrame({"d": day, "t": minute, **prices, "v": bars.volume}).to_csv(tmp_path / "mt4.csv", header=False, index=False)
    pd.DataFrame({"<TICKER>": "BTCUSD", "<PER>": 60, "<DATE>": t.strftime("%Y%m%d"), "<TIME>": t.strftime("%H%M%S"),
                  **{f"<{k.upper()}>": v for k, v in prices.items()}, "<VOL>": bars.volume, "<OPENINT>": 0}).to_csv(
        tmp_path / "stooq.csv", index=False)
    pd.DataFrame({"Date": t.strftime("%Y-%m-%d"), "Time": minute, **prices, "Volume": bars.volume}).to_csv(
        tmp_path / "broker.csv", index=False)
    utc = "read as UTC (an export's clock is often its broker's: MetaTrader's is its server's, often UTC+2 or +3)"
    for name, read in (("mt5.csv", ["separated by tabs", "volume from the column <VOL>",
                                    f"each bar's time from the columns <DATE> and <TIME>, {utc}"]),
                       ("mt4.csv", [f"no header: MetaTrader's date, time, open, high, low, close, volume, {utc}"]),
                       ("stooq.csv", ["volume from the column <VOL>", f"each bar's time from the columns <DATE> and <TIME>, {utc}"]),
                       ("broker.csv", [f"each bar's time from the columns Date and Time, {utc}"])):
        notes: list[str] = []
        loaded = load_candles(tmp_path / name, None, notes)
        assert loaded.fingerprint == bars.fingerprint and notes == read, name
    bad = (tmp_path / "mt4.csv").read_text().splitlines()
    bad[6] = bad[6].replace(minute[6], "9h", 1)  # row 7, line 7: no header
    (tmp_path / "bad.csv").write_text("\n".join(bad))
    with pytest.raises(DataError, match=rf"bad.csv: row 7, line 7 \(timestamp {day[6]} 9h\): unparseable timestamp$"):
        load_candles(tmp_path / "bad.csv")
    european = pd.DataFrame({"Date": t.strftime("%d.%m.%Y"), "Time": minute, **prices, "Volume": bars.volume})
    european.to_csv(tmp_path / "european.csv", index=False)  # day first: refused, the whole timestamp quoted, not 07:00 alone
    with pytest.raises(DataError, match=rf"european.csv: row 1, line 2 \(timestamp {t[0]:%d.%m.%Y} {minute[0]}\): unparseable timestamp "
                                        r"\(and 499 more row\(s\)\): a date with the year last \(15.05.2018, 05/15/2018\) is not read, its "
                                        r"day and month a guess where both are 12 or less; write dates year first \(2018-05-15\)$"):
        load_candles(tmp_path / "european.csv")
    plain = pd.DataFrame({"timestamp": bars.timestamps, **prices, "vol": bars.volume})  # a plain vol may be a volatility
    plain.to_csv(tmp_path / "vol.csv", index=False)
    with pytest.raises(DataError, match=r"vol.csv: missing column\(s\) volume; found timestamp, open, high, low, close, vol$"):
        load_candles(tmp_path / "vol.csv")
    stamped = pd.DataFrame({"date": t.strftime("%Y-%m-%d"), "time": bars.timestamps, **prices, "volume": bars.volume})
    stamped.to_csv(tmp_path / "stamped.csv", index=False)  # a time column of whole timestamps is read as before, alone
    notes = []
    assert load_candles(tmp_path / "stamped.csv", None, notes).fingerprint == bars.fingerprint and notes == []


def test_a_pipe_a_device_or_a_folder_named_as_a_candle_file_is_refused_at_once(tmp_path):
    """A pipe named bars.csv waited for a writer for ever; a link to /dev/zero (its size 0, under the
    limit) was read until memory ran out. Each is refused in one line, exit 2, as it is looked at."""
    import os
    import resource
    import subprocess
    import sys

    from tests.conftest import ROOT

    os.mkfifo(tmp_path / "fifo.csv")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    (tmp_path / "folder.parquet").mkdir()

    def four_gib() -> None:  # what /dev/zero takes is this process's memory, not the machine's
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    for name, kind in (("fifo.csv", "a pipe"), ("zero.csv", "a device"), ("folder.parquet", "a folder")):
        proc = subprocess.run([sys.executable, "-m", "genesis_core", "data", "check", str(tmp_path / name)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, preexec_fn=four_gib)
        assert (proc.returncode, proc.stderr.strip()) == (2, f"error: {tmp_path / name}: {kind}, not a file; candles are read "
                                                             "from a CSV, Parquet, Feather or JSON file")


def test_a_parquet_file_indexed_by_time_gives_the_same_candles(tmp_path, sample):
    """Candles saved from a frame indexed by time (``df.set_index("timestamp").to_parquet()``, as
    pandas users keep them) have their times as the index, not a column: they were refused with
    "missing column(s) timestamp". An index that is not the time (rows filtered) is left out."""
    frame = _sample_frame()
    times = pd.to_datetime(frame["timestamp"], utc=True)
    prices = frame.drop(columns="timestamp").astype(float)
    files = {"named.parquet": prices.set_index(times.rename("timestamp")),
             "date.parquet": prices.set_index(times.rename("Date")),
             "unnamed.parquet": prices.set_index(pd.DatetimeIndex(times.to_numpy())),
             "naive.parquet": prices.set_index(times.dt.tz_localize(None).rename("timestamp")),
             "rows.parquet": prices.assign(timestamp=times).iloc[1:].set_axis([2 * i for i in range(1, len(prices))])}
    for name, table in files.items():
        assert not isinstance(table.index, pd.RangeIndex)  # each keeps an index in the file
        table.to_parquet(tmp_path / name)
    fps = {name: load_candles(tmp_path / name).fingerprint for name in files}
    assert fps == {**dict.fromkeys(files, sample.fingerprint), "rows.parquet": sample.slice(1, len(sample)).fingerprint}


def test_fingerprint_changes_with_any_value(tmp_path, sample):
    frame = _sample_frame()
    frame.loc[100, "volume"] = str(float(frame.loc[100, "volume"]) + 0.001)
    assert load_candles(_write(tmp_path, frame)).fingerprint != sample.fingerprint


def _epochs(f: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(f["timestamp"]).map(lambda t: int(t.timestamp()))


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
    if kind == "year_9999":  # beyond pandas' nanosecond range: refused, not a crash
        f.loc[12, "timestamp"] = "9999-01-01T00:00:00Z"
        return f, r"row 13, .*timestamp outside 1900..2200"
    if kind == "far_epoch":
        f["timestamp"] = (_epochs(f) * 1000).astype(str)
        f.loc[12, "timestamp"] = str(10**18)
        return f, r"row 13, .*timestamp outside 1900..2200"
    if kind == "sub_second_iso":  # refused as a fractional epoch is, never floored
        f.loc[20, "timestamp"] = f.loc[20, "timestamp"].replace(":00:00Z", ":00:00.5Z")
        return f, r"row 21, .*timestamp is not a whole second"
    if kind == "fractional_epoch":
        f["timestamp"] = _epochs(f).astype(str)
        f.loc[20, "timestamp"] += ".5"
        return f, r"row 21, .*timestamp is not a whole second"
    if kind == "mixed_units":
        f["timestamp"] = _epochs(f).astype(str)
        f.loc[30, "timestamp"] += "000"
        return f, r"row 31, .*mixed units: epoch milliseconds among epoch seconds"
    if kind == "duplicate_column":
        f.insert(2, "close ", f["close"])
        return f, r"column\(s\) close given twice"
    if kind == "huge_value":  # echoed cut to ~100 characters, not whole
        f.loc[5, "timestamp"] = "7" * 5_000_000
        return f, r"row 6, line 7 \(timestamp 7{100}\.\.\. \(5,000,000 characters\)\): unparseable timestamp"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing_column", "unparseable", "nan", "inf", "empty_cell", "non_positive", "high_below",
                                  "low_above", "duplicate", "unsorted", "off_grid", "negative_volume", "year_9999", "far_epoch",
                                  "sub_second_iso", "fractional_epoch", "mixed_units", "duplicate_column", "huge_value"])
def test_each_bad_input_is_refused_naming_the_row(tmp_path, kind):
    frame, pattern = _broken(kind)
    with pytest.raises(DataError, match=pattern):
        load_candles(_write(tmp_path, frame))


def test_a_duplicate_column_is_refused_as_pandas_would_rename_it(tmp_path):
    path = tmp_path / "dup.csv"
    lines = gzip.open(SAMPLE_FILE, "rt").read().splitlines()
    path.write_text("\n".join([lines[0] + ",close"] + [line + ",1" for line in lines[1:50]]) + "\n")
    with pytest.raises(DataError, match=r"dup.csv: column\(s\) close given twice; keep one of each"):
        load_candles(path)


def test_a_decompression_bomb_stops_at_the_limit_without_holding_it(tmp_path, monkeypatch):
    from genesis_core.data import _load

    monkeypatch.setattr(_load, "MAX_CSV_BYTES", 50_000_000)  # the real limit is 640 MB: the same code, faster
    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wb") as fh:
        fh.write(b"timestamp,open,high,low,close,volume\n")
        for _ in range(8):
            fh.write(b"0" * 10_000_000)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DataError, match=r"bomb.csv.gz: decompresses to more than 50,000,000 bytes"):
        load_candles(bomb)
    ok = tmp_path / "ok.csv.gz"  # a real file under the limit still loads, bar for bar
    ok.write_bytes(SAMPLE_FILE.read_bytes())
    assert load_candles(ok).fingerprint == load_candles(SAMPLE_FILE).fingerprint
    big = tmp_path / "big.csv"
    big.write_bytes(b"timestamp,open,high,low,close,volume\n" + b"0" * 50_000_001)
    with pytest.raises(DataError, match=r"big.csv: 50,000,0\d\d bytes is more than 50,000,000"):
        load_candles(big)


def test_a_csv_whose_time_column_has_no_name_loads_as_pandas_wrote_it(tmp_path):
    """``df.to_csv()`` writes an unnamed index under an empty header (backtesting.py's own GOOG.csv:
    ``,Open,High,...``): those are the times. Row numbers 0, 1, 2 ... there are not."""
    import backtesting
    from backtesting.test import GOOG

    theirs = Path(backtesting.__file__).parent / "test" / "GOOG.csv"
    assert theirs.read_text().startswith(",Open,High,Low,Close,Volume\n")
    named = tmp_path / "named.csv"
    GOOG.rename(columns=str.lower).rename_axis("timestamp").to_csv(named)
    assert load_candles(theirs).fingerprint == load_candles(named).fingerprint
    assert len(load_candles(theirs)) == len(GOOG) == 2_148
    rows = tmp_path / "rows.csv"
    GOOG.reset_index(drop=True).to_csv(rows)
    with pytest.raises(DataError, match=r"missing column\(s\) timestamp; found Unnamed: 0, Open"):
        load_candles(rows)


def test_freqtrade_s_feather_candles_load_as_the_same_candles_and_are_listed(tmp_path, sample):
    """Freqtrade keeps candles as Feather (``BTC_USDT-1h.feather``: ``date`` as UTC times, then the
    prices): the same bars as the CSV, and ``genesis data list`` shows the file."""
    from genesis_core.data import candle_files

    frame = _sample_frame()
    ft = frame.drop(columns="timestamp").astype(float)
    ft.insert(0, "date", pd.to_datetime(frame["timestamp"], utc=True))
    ft.to_feather(tmp_path / "BTC_USDT-1h.feather")
    assert load_candles(tmp_path / "BTC_USDT-1h.feather").fingerprint == sample.fingerprint
    listed = candle_files(tmp_path)
    assert [(f.path.name, f.candles is not None and f.candles.fingerprint) for f in listed] == [("BTC_USDT-1h.feather",
                                                                                                sample.fingerprint)]


def test_freqtrade_s_json_and_jsongz_candles_load_as_the_same_candles_and_are_listed(tmp_path, sample):
    """Freqtrade's json and jsongz data formats (``BTC_USDT-1h.json``: ``[[ms, open, high, low,
    close, volume], ...]``, as ccxt's ``fetch_ohlcv`` answers) were an unknown file type."""
    from genesis_core.data import candle_files

    rows = [[int(t) * 1000, *(float(getattr(sample, k)[i]) for k in ("open", "high", "low", "close", "volume"))]
            for i, t in enumerate(sample.timestamps)]
    (tmp_path / "BTC_USDT-1h.json").write_text(json.dumps(rows))
    with gzip.open(tmp_path / "BTC_USDT-4h.json.gz", "wt") as fh:  # jsongz
        json.dump(rows, fh)
    (tmp_path / "b.csv.market.json").write_text(json.dumps({"symbol": "BTC/USD"}))  # a CSV's market, not candles
    (tmp_path / "result.json").write_text(json.dumps({"metrics": {}}))  # nor a backtest's result
    (tmp_path / "BTC_USDT-1d.json").write_bytes(b"\xef\xbb\xbf " + json.dumps(rows).encode())  # saved with a byte order mark
    listed = candle_files(tmp_path)
    assert [(f.path.name, f.error, f.candles and f.candles.fingerprint) for f in listed] == [
        ("BTC_USDT-1d.json", None, sample.fingerprint), ("BTC_USDT-1h.json", None, sample.fingerprint),
        ("BTC_USDT-4h.json.gz", None, sample.fingerprint)]
    for name, text, why in (("five.json", json.dumps([*rows[:41], rows[41][:5], *rows[42:]]),
                             rf"row 42 is \[{rows[41][0]}, .*\], not \[time, open, high, low, close, volume\]"),
                            ("none.json", json.dumps([*rows[:9], [*rows[9][:4], None, rows[9][5]], *rows[10:]]),
                             r"row 10 \(timestamp \d+\): close is 'null', not a finite number"),
                            ("object.json", json.dumps({"data": rows}), "a JSON object, not an array of"),
                            ("deep.json", "[" * 100_000 + "]" * 100_000, "not valid JSON: maximum recursion depth")):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=f"{name}: {why}"):
            load_candles(tmp_path / name)


@pytest.mark.parametrize("name", ["big.parquet", "big.feather"])
def test_a_table_of_too_many_rows_is_refused_by_its_count_before_it_is_read(tmp_path, monkeypatch, name):
    from genesis_core.data import _load

    monkeypatch.setattr(_load, "MAX_BARS", 150)  # the real limit is 5,000,000 bars: the same code, faster
    frame = _sample_frame().astype({c: float for c in ("open", "high", "low", "close", "volume")})
    path = tmp_path / name
    (frame.to_parquet if name.endswith("parquet") else frame.to_feather)(path, compression="zstd")
    read = []
    for reader in ("read_parquet", "read_feather"):
        monkeypatch.setattr(pd, reader, lambda *a, _r=reader, **k: read.append(_r))
    with pytest.raises(DataError, match=rf"{name}: {len(frame)} rows is more than 150; split the file"):
        load_candles(path)
    assert read == [] and len(frame) > 150


def test_more_bad_rows_are_counted(tmp_path):
    f = _sample_frame()
    f.loc[[3, 4, 5], "close"] = "nan"
    with pytest.raises(DataError, match=r"row 4,.*\(and 2 more row\(s\)\)"):
        load_candles(_write(tmp_path, f))


def test_a_link_to_no_file_is_said_to_be_one_not_a_file_not_found_beside_a_listing_that_holds_it(tmp_path):
    """A data folder linked to a disk not mounted, or a loop of links: 'data file not found: x.csv;
    <folder> holds x.csv, ...'."""
    (tmp_path / "btc.csv").symlink_to(tmp_path / "gone" / "btc.csv")
    (tmp_path / "a.csv").symlink_to("b.csv")
    (tmp_path / "b.csv").symlink_to("a.csv")
    for name, target in (("btc.csv", tmp_path / "gone" / "btc.csv"), ("a.csv", "b.csv")):
        with pytest.raises(DataError) as refused:
            load_candles(tmp_path / name)
        assert str(refused.value) == f"{tmp_path / name}: a link to {target}, where there is no file (moved, not mounted, or a loop of links)"


def test_missing_file_and_unknown_type(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not found"):
        load_candles(tmp_path / "nope.csv")
    monkeypatch.chdir(tmp_path)  # a config's relative path, run from another folder than the config's: where it looked
    with pytest.raises(DataError) as relative:
        load_candles("data/BTCUSD_1h_bitfinex.csv.gz")
    assert str(relative.value).startswith(f"data file not found: data/BTCUSD_1h_bitfinex.csv.gz in {tmp_path} (")
    # the candle files beside it, the closest names first: on a machine that cannot download the file a
    # config names (configs/optimize_sma_cross.yaml's), the bundled one of its market is found by eye
    (tmp_path / "data").mkdir()
    for name in ("BTCUSDT_1h_binance.csv.gz", "ETHUSD_1d.parquet", "BTCUSD_1h_bitfinex.csv.gz", "BTCUSDT_1h_binance.csv.gz.market.json",
                 "notes.txt.bak", ".hidden.csv"):
        (tmp_path / "data" / name).write_text("x")
    with pytest.raises(DataError) as beside:
        load_candles("data/binance_BTCUSDT_1h.parquet")
    assert str(beside.value) == (f"data file not found: data/binance_BTCUSDT_1h.parquet in {tmp_path} (candles from an exchange: "
                                 "`genesis data download`); data holds BTCUSDT_1h_binance.csv.gz, BTCUSD_1h_bitfinex.csv.gz, "
                                 "ETHUSD_1d.parquet")
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        load_candles(tmp_path / "x.xlsx")


def test_explicit_timeframe_is_checked(tmp_path, sample):
    assert load_candles(SAMPLE_FILE, "1h").fingerprint == sample.fingerprint
    # 1h bars given as 30m passed as 30m bars, every other one missing: a Sharpe annualised sqrt(2) too high
    for wrong in ("30m", "4h"):
        with pytest.raises(DataError, match=rf"timeframe {wrong} given, but no two bars are {wrong} apart \(most are 1h\): give 1h"):
            load_candles(SAMPLE_FILE, wrong)
    # 1h bars with a 3-bar hole (one step of 4h) given as 4h were refused at their second row, as
    # "3600 s after the previous bar, not a multiple of the 14400 s timeframe"
    holed = _write(tmp_path, _sample_frame().drop(index=[10, 11, 12]))
    with pytest.raises(DataError) as coarser:
        load_candles(holed, "4h")
    assert str(coarser.value) == (f"{holed}: timeframe 4h given, but only 1 of the {len(_sample_frame()) - 4:,} steps between its bars is 4h "
                                  "(most are 1h): give 1h, or none (it is read from the bars); a file's bars are not resampled: "
                                  "download 4h bars (genesis data download --timeframe 4h)")
    sparse = _sample_frame().drop(index=range(1, 150, 2))  # most bars 2h apart, the rest 1h: 1h bars with gaps
    assert load_candles(_write(tmp_path, sparse), "1h").gaps().count == 75


def test_a_month_is_not_taken_for_a_minute(tmp_path, sample):
    """'1M' is a month to exchanges and ccxt; read here as a minute, monthly bars passed the grid check
    (every month is a whole number of minutes) and went on as 1-minute bars."""
    monthly = tmp_path / "monthly.csv"
    days = pd.date_range("2021-01-01", periods=6, freq="MS", tz="UTC")
    pd.DataFrame({"timestamp": days.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5,
                  "volume": 1.0}).to_csv(monthly, index=False)
    with pytest.raises(DataError, match="'1M': M is a month"):
        load_candles(monthly, "1M")
    assert load_candles(SAMPLE_FILE, "60m").fingerprint == sample.fingerprint  # minutes are m


def test_a_market_closed_at_weekends_has_no_weekend_gaps(btc):
    """backtesting.py's GOOG.csv (daily, weekdays): a gap is a weekday with no bar (a holiday),
    counted against NumPy's business days; a weekend is not one (463 were reported, 77 are).
    Crypto trades every day: its gaps are every missing bar, weekends included, as before."""
    import backtesting

    goog = load_candles(Path(backtesting.__file__).parent / "test" / "GOOG.csv")
    days = goog.timestamps.astype("datetime64[s]").astype("datetime64[D]")
    weekdays_between = np.busday_count(days[:-1] + 1, days[1:])
    report = goog.gaps()
    assert goog.closes_at_weekends and not btc.closes_at_weekends
    assert (report.count, report.missing_bars) == ((weekdays_between > 0).sum(), weekdays_between.sum()) == (77, 79)
    diffs = np.diff(btc.timestamps)
    assert (btc.gaps().count, btc.gaps().missing_bars) == ((diffs > 3600).sum(), (diffs // 3600 - 1)[diffs > 3600].sum())


@pytest.mark.parametrize("meta,message", [
    (b"{not json", "unreadable market metadata: "),
    (b'{"exchange": "x"}', "market metadata without a market's symbol (1 to 64 printable characters): {'exchange': 'x'}"),
    (json.dumps({"symbol": "A" * 100_000}).encode(), "market metadata without a market's symbol"),
    (json.dumps({"symbol": "BTC\x1b[2J"}).encode(), "market metadata without a market's symbol"),
])
def test_a_parquet_file_s_hostile_market_metadata_is_refused_in_one_short_line(tmp_path, sample, meta, message):
    """A symbol of 100,000 characters was taken as the file's market, and echoed whole by every
    market check (preflight, backtest: "data.symbol BTCUSD but ... says it holds AAAA...")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "m.parquet"
    table = pa.table({"timestamp": sample.timestamps, "open": sample.open, "high": sample.high, "low": sample.low,
                      "close": sample.close, "volume": sample.volume})
    pq.write_table(table.replace_schema_metadata({MARKET_KEY: meta}), path)
    with pytest.raises(DataError) as caught:
        load_candles(path)
    assert str(caught.value).startswith(f"{path}: {message}") and len(str(caught.value)) < 300


def _local_clock_frame(zone: str) -> pd.DataFrame:
    """The bundled Bitfinex bars with their timestamps written in ``zone``'s wall clock, no offset."""
    frame = pd.read_csv(BTC_FILE, dtype=str)
    utc = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.assign(timestamp=utc.dt.tz_convert(zone).dt.strftime("%Y-%m-%d %H:%M:%S"))


def test_timestamps_in_a_local_clock_with_daylight_saving_are_told_by_its_repeated_and_skipped_hours(tmp_path, btc):
    """A file written in local time, not UTC, repeats an hour each autumn, refused as a duplicate
    that said nothing of why; with the repeated hour dropped, it loaded silently with every bar an
    hour or two off, its springs' skipped hours among the gaps."""
    for zone, label, first, offsets in (("Europe/Berlin", "central Europe's", "2018-10-28 02:00:00", ("+02:00", "+01:00")),
                                        ("America/New_York", "North America's", "2018-11-04 01:00:00", ("-04:00", "-05:00"))):
        frame = _local_clock_frame(zone)
        naive = pd.to_datetime(frame["timestamp"]).to_numpy()
        repeats = np.flatnonzero(naive[1:] == naive[:-1]) + 1  # the second of each pair
        assert frame["timestamp"][repeats[0]] == first
        path = _write(tmp_path, frame, f"{zone.replace('/', '_')}.csv")
        with pytest.raises(DataError) as caught:
            load_candles(path)
        stamp = first.replace(" ", "T")
        assert str(caught.value) == (
            f"{path}: row {repeats[0] + 1}, line {repeats[0] + 2} (timestamp {first}): duplicate timestamp (same as row "
            f"{repeats[0]}) (and {len(repeats) - 1} more row(s)): each is in the hour {label} clocks ({zone}) repeat as "
            f"daylight saving ends, so the timestamps are that local time, not UTC: write them in UTC, or with their "
            f"offset ({stamp}{offsets[0]}, then {stamp}{offsets[1]})")

    # a duplicate the clocks do not explain is refused as before
    utc = pd.read_csv(BTC_FILE, dtype=str)
    twice = pd.concat([utc.iloc[:101], utc.iloc[100:]])
    with pytest.raises(DataError) as caught:
        load_candles(_write(tmp_path, twice, "twice.csv"))
    assert str(caught.value).endswith(f"(timestamp {utc['timestamp'][100]}): duplicate timestamp (same as row 101)")

    # the repeated hour dropped: 5 springs' skipped hours are gaps, told apart from the 6 of the UTC file
    dropped = _local_clock_frame("Europe/Berlin").drop_duplicates("timestamp")
    local = load_candles(_write(tmp_path, dropped, "dropped.csv"))
    said = ("5 of them are the hour central Europe's clocks (Europe/Berlin) skip as daylight saving begins, each spring "
            "from 2019-03-31 to 2023-03-26: the timestamps look like that local time, not UTC (so each bar is an hour or "
            "two off, and an hour each autumn is doubled or dropped); write them in UTC")
    gaps = local.gaps()
    assert (gaps.count, gaps.local_clock) == (btc.gaps().count + 5, said)
    springs = ["2019-03-31", "2020-03-29", "2021-03-28", "2022-03-27", "2023-03-26"]
    for day in springs:
        before = np.searchsorted(local.timestamps, pd.Timestamp(f"{day}T01:00Z").timestamp())
        assert local.timestamps[before + 1] - local.timestamps[before] == 2 * 3600
    assert btc.gaps().local_clock is None
    shown = genesis("data", "check", str(tmp_path / "dropped.csv"))
    assert shown.returncode == 0 and shown.stderr == f"warning: {gaps.describe(3600)}\n"
    assert json.loads(genesis("data", "check", str(tmp_path / "dropped.csv"), "--json").stdout)["local_clock"] == said

    # a year's window holds one spring: it is told from the whole file; and not from its own bars
    window = local.window("2022-01-01", "2022-12-31", 0)
    assert (window.gaps().local_clock, window.decisions.gaps().local_clock) == (said, None)
    config = read_config_file(ROOT / "configs" / "reference.yaml")
    config["data"]["path"] = str(tmp_path / "dropped.csv")
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(config))
    ran = genesis("backtest", "--config", str(tmp_path / "local.yaml"))
    assert ran.returncode == 0 and f"window has {window.gaps().describe(3600)}" in " ".join(ran.stderr.split())

    # the same gaps at another hour of those days are the file's own
    elsewhere = utc[~utc["timestamp"].isin([f"{day}T05:00:00Z" for day in springs])]
    moved = load_candles(_write(tmp_path, elsewhere, "elsewhere.csv")).gaps()
    assert (moved.count, moved.local_clock) == (btc.gaps().count + 5, None)

"""`genesis data download / update / list` through ccxt's real code path, its API URLs pointed at a
local server that answers in Bitfinex's and Binance's own REST formats with the bundled real candles
(tests/fake_exchange.py): pages, retries, a kill mid-download, the still-open candle, the market
recorded in the file."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from genesis_core.data import Candles, file_market, format_ts, load_candles, market_sidecar, parse_ts
from tests.fake_exchange import Exchange, serving
from tests.runs import ctrl_c_until_it_ends, genesis

ROOT = Path(__file__).resolve().parents[2]
FILES = {"bitfinex": ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz", "binance": ROOT / "data" / "BTCUSDT_1h_binance.csv.gz"}
SYMBOLS = {"bitfinex": "BTC/USD", "binance": "BTC/USDT", "okx": "BTC/USDT", "bitstamp": "BTC/USD"}


def _bars(exchange: str, first: int, stop: int) -> Candles:
    return load_candles(FILES[exchange]).slice(first, stop)


def _genesis(*args: str, root: str, name: str) -> SimpleNamespace:
    """`genesis data ...` run in this process, against the exchange ``name`` of the server at ``root``
    (the kill test runs a real process)."""
    return genesis("data", *args, "--api-url", f"{root}/{name}")


def _download(out: Path, name: str, root: str, *extra: str, start: str = "2017-01-01") -> SimpleNamespace:
    return _genesis("download", "--exchange", name, "--symbol", SYMBOLS[name], "--start", start, "--out", str(out),
                    "--json", *extra, root=root, name=name)


def _first(ex: Exchange) -> str:
    """The exchange's first bar, as a --start: no span before it to walk through."""
    return format_ts(ex.candles.timestamps[0])


def _same_bars(path: Path, expected: Candles) -> None:
    got = load_candles(path)
    for field in ("timestamps", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(got, field), getattr(expected, field)), field
    assert got.fingerprint == expected.fingerprint


def _candle_requests(ex: Exchange) -> list[str]:
    return [r for r in ex.requests if any(k in r for k in ("candles", "klines", "ohlc/"))]


@pytest.mark.parametrize("name,out", [("bitfinex", "btc.parquet"), ("binance", "btc.csv.gz")])
def test_a_multi_page_download_equals_the_exchange_bar_for_bar_with_its_market_recorded(tmp_path, name, out):
    ex = Exchange(_bars(name, 0, 4_500), page_rows=1_000)  # 5 pages: the server's cap, not the client's limit
    with serving(**{name: ex}) as root:
        proc = _download(tmp_path / out, name, root, start=_first(ex))
    assert proc.returncode == 0, proc.stderr
    _same_bars(tmp_path / out, ex.candles)
    assert len(_candle_requests(ex)) == 7  # 5 pages, the empty span after them, and the exchange's last bar: before it
    market = file_market(tmp_path / out)
    assert market is not None
    assert {k: market[k] for k in ("exchange", "symbol", "timeframe", "bars")} == {"exchange": name, "symbol": SYMBOLS[name],
                                                                                     "timeframe": "1h", "bars": 4_500}
    import ccxt

    assert market["ccxt_version"] == ccxt.__version__ and market["fetched_at"].endswith("Z")
    assert market["first_bar"] == "2018-05-15T07:00:00Z" if name == "bitfinex" else market["first_bar"] == "2017-08-17T04:00:00Z"
    assert load_candles(tmp_path / out).symbol == SYMBOLS[name]  # what the optimizer's market checks read
    assert market_sidecar(tmp_path / out).exists() == out.endswith(".csv.gz")
    result = json.loads(proc.stdout)
    assert result["bars"] == result["new_bars"] == 4_500 and result["fingerprint"] == ex.candles.fingerprint
    assert result["gaps"] == ex.candles.gaps().count and len(result["largest_gaps"]) == min(5, result["gaps"])
    if name == "binance":  # its 33-hour gap of February 2018 is the exchange's, and said so
        assert result["largest_gaps"][0] == ("33 bar(s) missing 2018-02-08T01:00:00Z .. 2018-02-09T09:00:00Z "
                                             "(Binance's February 2018 outage)")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out] + ([market_sidecar(tmp_path / out).name]
                                                                         if out.endswith(".csv.gz") else []))  # no part left


@pytest.mark.parametrize("name", ["bitfinex", "binance"])
def test_a_429_and_a_500_are_retried_and_the_file_is_whole(tmp_path, name):
    ex = Exchange(_bars(name, 0, 2_500), page_rows=1_000, failures=[429, 500])
    with serving(**{name: ex}) as root:
        proc = _download(tmp_path / "b.parquet", name, root, start=_first(ex))
    assert proc.returncode == 0, proc.stderr
    _same_bars(tmp_path / "b.parquet", ex.candles)
    asked = _candle_requests(ex)
    assert len(asked) == 5 + 2 and asked[0] == asked[1] == asked[2]  # the first page asked three times, 2 more, and the end (2)


def test_ctrl_c_then_kill_9_mid_download_lose_at_most_the_page_in_flight_and_a_rerun_gives_the_same_file(tmp_path):
    ex = Exchange(_bars("binance", 10_000, 16_000), page_rows=500, delay=0.25)  # 12 pages
    out = tmp_path / "b.parquet"
    part = tmp_path / "b.parquet.part"
    with serving(binance=ex) as root:
        kept = []
        for sig in (signal.SIGINT, signal.SIGKILL):
            proc = subprocess.Popen([sys.executable, "-m", "genesis_core", "data", "download", "--exchange", "binance", "--symbol",
                                     "BTC/USDT", "--start", _first(ex), "--out", str(out), "--api-url", f"{root}/binance"],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            before = len(list(part.glob("page-*.csv"))) if part.exists() else 0
            deadline = time.monotonic() + 60
            while (len(list(part.glob("page-*.csv"))) if part.exists() else 0) < before + 3:
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
                time.sleep(0.02)
            if sig == signal.SIGINT:
                ctrl_c_until_it_ends(proc, group=False)  # pressed again and again while it stops: 130 all the same
            else:
                os.kill(proc.pid, sig)
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), stderr
            if sig == signal.SIGINT:
                assert "run the same command again to resume" in stderr
            assert not out.exists()
            pages = sorted(part.glob("page-*.csv"))
            kept.append(sum(len(p.read_text().splitlines()) for p in pages))
            assert kept[-1] == 500 * len(pages)  # whole pages only: a page is written at once or not at all
        asked_before = len(_candle_requests(ex))
        ex.delay = 0.0
        proc = _download(out, "binance", root, start=_first(ex))
    assert proc.returncode == 0, proc.stderr
    _same_bars(out, ex.candles)
    assert not part.exists()
    assert json.loads(proc.stdout)["resumed_bars"] == kept[-1]
    rerun = _candle_requests(ex)[asked_before:]
    assert len(rerun) == (6_000 - kept[-1]) // 500 + 2  # only the pages not kept, then the end (2)
    assert f"startTime={int(ex.candles.timestamps[kept[-1]]) * 1000}" in rerun[0]
    assert asked_before <= kept[-1] // 500 + 2  # each interruption lost at most the page in flight


def test_a_disk_full_at_the_file_s_write_keeps_every_page_says_so_and_the_same_command_then_writes_the_file(tmp_path):
    """The disk fills as the downloaded file is written (a file size limit, as a full disk refuses
    a write): one line naming the file, its pages kept, as Ctrl-C says; the same command then asks
    only for what is after them and writes the exchange's bars."""
    import resource

    ex = Exchange(_bars("binance", 10_000, 16_000), page_rows=500)  # 12 pages of 30 kB; the Parquet file 150 kB
    out, part = tmp_path / "b.parquet", tmp_path / "b.parquet.part"

    def full_at_100_kb() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    with serving(binance=ex) as root:
        full = subprocess.run([sys.executable, "-m", "genesis_core", "data", "download", "--exchange", "binance", "--symbol",
                               "BTC/USDT", "--start", _first(ex), "--out", str(out), "--api-url", f"{root}/binance"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, preexec_fn=full_at_100_kb)
        assert full.returncode == 2 and full.stderr.strip() == (
            f"error: {tmp_path}/.b.parquet.new.parquet: File too large; the pages fetched are kept in <file>.part/: free some "
            "space, then run the same command again to resume"), full.stderr
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b.parquet.part"]
        assert sum(len(p.read_text().splitlines()) for p in part.glob("page-*.csv")) == 6_000
        asked = len(_candle_requests(ex))
        again = _download(out, "binance", root, start=_first(ex))
    assert again.returncode == 0 and json.loads(again.stdout)["resumed_bars"] == 6_000, again.stderr
    _same_bars(out, ex.candles)
    assert len(_candle_requests(ex)) - asked <= 2 and not part.exists()  # only past the pages kept


@pytest.mark.parametrize("name", ["okx", "bitstamp", "binance", "bitfinex"])
def test_every_exchange_s_paging_gives_every_bar_across_a_gap_longer_than_a_page(tmp_path, name):
    """Each exchange answers a span of time its own way. Asked for everything from the start to the
    last bar, OKX answers the newest 300 bars: a download of years held its last 300. Bitstamp
    (and OKX, and Coinbase) answer only the span of a page from the start asked: a gap longer than a
    page (1,000 bars of Bitstamp's 1m candles are 17 hours; its outage of January 2015 lasted four
    days) answered nothing, and the download ended there as if the market had. Here 1,200 hours
    are missing from the real Binance candles, and the download starts seven months before them."""
    bars = _bars("binance", 0, 4_000)
    keep = np.r_[0:1_500, 2_700:4_000]
    holed = Candles(*(getattr(bars, f)[keep] for f in ("timestamps", "open", "high", "low", "close", "volume")), 3600)
    ex = Exchange(holed, page_rows=1_000)
    with serving(**{name: ex}) as root:
        proc = _download(tmp_path / "b.parquet", name, root)
    assert proc.returncode == 0, proc.stderr
    _same_bars(tmp_path / "b.parquet", holed)
    result = json.loads(proc.stdout)
    assert result["bars"] == 2_800 and result["largest_gaps"][0].startswith(
        f"1200 bar(s) missing {format_ts(bars.timestamps[1_500])} .. {format_ts(bars.timestamps[2_699])}")


def test_update_appends_exactly_the_new_bars_and_replaces_the_file_atomically(tmp_path):
    """On Binance's candles: ccxt's rate limiter waits 50 ms between their requests, about 675 ms
    for Bitfinex's (13 s of this test; Bitfinex's paging is the multi-page and gap tests')."""
    everything = _bars("binance", 20_000, 23_000)
    ex = Exchange(everything.slice(0, 2_000), page_rows=1_000)
    out = tmp_path / "b.parquet"
    with serving(binance=ex) as root:
        assert _download(out, "binance", root).returncode == 0
        first = file_market(out)
        ex.candles = everything  # the exchange has moved on by 1,000 bars
        before = len(ex.requests)
        proc = _genesis("update", str(out), "--json", root=root, name="binance")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["new_bars"] == 1_000
        asked = [r for r in ex.requests[before:] if "klines" in r]
        assert f"startTime={int(everything.timestamps[1_999]) * 1000}" in asked[0]  # from the file's last bar, asked again
        _same_bars(out, everything)
        market = file_market(out)
        assert market["bars"] == 3_000 and market["last_bar"] == format_ts(everything.timestamps[-1])
        assert market["first_bar"] == first["first_bar"] and market["last_bar"] != first["last_bar"]
        again = _genesis("update", str(out), "--json", root=root, name="binance")
    assert again.returncode == 0 and json.loads(again.stdout)["new_bars"] == 0
    _same_bars(out, everything)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.parquet"]


def test_a_second_update_or_download_of_a_file_while_one_runs_is_refused_and_the_first_writes_every_bar(tmp_path):
    """A cron job's update and one typed by hand, at once: the second read the first's pages as the
    first removed them (a traceback), or left a page in a folder the next run took for the download's
    start. Now the second is refused in one line, exit 2, and the first's file is the exchange's."""
    everything = _bars("binance", 0, 4_000)
    ex = Exchange(everything.slice(0, 1_000), page_rows=200)
    out = tmp_path / "b.parquet"
    part = tmp_path / "b.parquet.part"
    with serving(binance=ex) as root:
        assert _download(out, "binance", root, start=_first(ex)).returncode == 0
        ex.candles, ex.delay = everything, 0.2  # 15 pages to add, a fifth of a second each
        first = subprocess.Popen([sys.executable, "-m", "genesis_core", "data", "update", str(out), "--api-url", f"{root}/binance"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (part.exists() and list(part.glob("page-*.csv"))):
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.02)
        refused = f"error: {out}: another `genesis data download` or `update` of it is running; run this when it has ended"
        download = ("download", "--exchange", "binance", "--symbol", "BTC/USDT", "--start", _first(ex), "--out", str(out))
        for args in (("update", str(out)), download):
            second = _genesis(*args, root=root, name="binance")
            assert (second.returncode, second.stderr.strip()) == (2, refused)
        assert first.poll() is None  # the refusals were made while it ran
        _, stderr = first.communicate(timeout=120)
        assert first.returncode == 0, stderr
        _same_bars(out, everything)
        ex.delay = 0.0
        again = _genesis("update", str(out), "--json", root=root, name="binance")
    assert again.returncode == 0 and json.loads(again.stdout)["new_bars"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.parquet"]  # no lock and no page left


def test_an_update_replaces_the_file_s_last_bar_when_the_exchange_s_differs_and_says_so(tmp_path):
    """A file whose last bar was stored before it settled (by an older genesis, or a clock more than
    2 minutes fast), or that the exchange revised since: an update asked only for later bars, so the
    file kept it. It now asks for that bar again, replaces it with the exchange's and says so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    everything = _bars("binance", 0, 1_500)
    ex = Exchange(everything.slice(0, 1_000), page_rows=1_000)
    out = tmp_path / "b.parquet"
    with serving(binance=ex) as root:
        assert _download(out, "binance", root, start=_first(ex)).returncode == 0
        ex.candles = everything  # 500 bars later, and the file's last bar as an older genesis stored it,
        table = pq.read_table(out)  # before it settled: its close its open, half its volume
        columns = {name: table.column(name).to_numpy().copy() for name in ("open", "close", "volume")}
        columns["close"][-1], columns["volume"][-1] = columns["open"][-1], columns["volume"][-1] / 2
        for name in ("close", "volume"):
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(columns[name]))
        pq.write_table(table.replace_schema_metadata(pq.read_schema(out).metadata), out)
        unsettled = load_candles(out)
        assert unsettled.symbol == "BTC/USDT" and unsettled.close[-1] != everything.close[999]
        proc = _genesis("update", str(out), "--json", root=root, name="binance")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        again = _genesis("update", str(out), "--json", root=root, name="binance")
    _same_bars(out, everything)
    i = 999
    held = ", ".join(f"{v:g}" for v in (unsettled.open[i], unsettled.high[i], unsettled.low[i], unsettled.close[i], unsettled.volume[i]))
    given = ", ".join(f"{v:g}" for v in (everything.open[i], everything.high[i], everything.low[i], everything.close[i],
                                          everything.volume[i]))
    assert (result["new_bars"], result["revised"]) == (500, f"the file's last bar {format_ts(everything.timestamps[i])} held open, "
                                                            f"high, low, close, volume {held}; the exchange now gives {given} "
                                                            "(stored before it settled, or revised since): replaced")
    assert json.loads(again.stdout)["new_bars"] == 0 and json.loads(again.stdout)["revised"] is None  # the same bar: kept


def test_update_of_a_downloaded_file_unpacked_to_csv_is_refused_saying_why(tmp_path):
    """A downloaded .csv.gz unpacked to .csv keeps its market beside it; update wrote gzip under
    a temporary .csv name, then stopped reading it back: "cannot read file: .b.csv.new.csv: 'utf-8'
    codec can't decode byte 0x8b", a file the user never named."""
    ex = Exchange(_bars("binance", 0, 1_500), page_rows=1_000)
    with serving(binance=ex) as root:
        assert _download(tmp_path / "b.csv.gz", "binance", root).returncode == 0
        plain = tmp_path / "b.csv"
        plain.write_bytes(gzip.decompress((tmp_path / "b.csv.gz").read_bytes()))
        market_sidecar(tmp_path / "b.csv.gz").rename(market_sidecar(plain))
        (tmp_path / "b.csv.gz").unlink()
        ex.candles = _bars("binance", 0, 2_000)
        before = plain.read_bytes()
        proc = _genesis("update", str(plain), root=root, name="binance")
    assert proc.returncode == 2 and "update writes .parquet or .csv.gz" in proc.stderr, proc.stderr
    assert plain.read_bytes() == before
    _same_bars(plain, _bars("binance", 0, 1_500))


def _clock_at(monkeypatch: pytest.MonkeyPatch, seconds: int) -> None:
    """ccxt's clock (``Exchange.milliseconds``) set to ``seconds`` now, running on from there: its
    rate limiter measures the time between requests by it, and slept a full interval each on a clock
    held still."""
    import ccxt

    offset = seconds * 1000 - time.time_ns() // 1_000_000
    monkeypatch.setattr(ccxt.Exchange, "milliseconds", staticmethod(lambda: time.time_ns() // 1_000_000 + offset))


def test_the_still_open_candle_is_never_stored(tmp_path, monkeypatch):
    """The exchange's last bar opened this hour: it is not stored by a download, nor by an update.
    (Binance's candles: ccxt's rate limiter waits 50 ms between their requests, about 675 ms for Bitfinex's.)"""
    real = _bars("binance", 0, 1_000)
    now_bar = int(time.time()) // 3600 * 3600
    _clock_at(monkeypatch, now_bar + 1800)  # half past: the hour before closed long enough ago, whenever the test runs
    shifted = Candles(real.timestamps - real.timestamps[-1] + now_bar, real.open, real.high, real.low, real.close, real.volume,
                      3600)
    ex = Exchange(shifted, page_rows=1_000)
    out = tmp_path / "b.parquet"
    with serving(binance=ex) as root:
        assert _download(out, "binance", root).returncode == 0
        _same_bars(out, shifted.slice(0, 999))
        assert json.loads(_genesis("update", str(out), "--json", root=root, name="binance").stdout)["new_bars"] == 0
    _same_bars(out, shifted.slice(0, 999))


def test_a_candle_closed_seconds_ago_by_this_machine_s_clock_is_left_until_the_exchange_has_surely_closed_it(tmp_path,
                                                                                                         monkeypatch):
    """This machine's clock 30 s past the hour while the exchange is not there yet (a clock that runs
    fast, or an exchange that settles a candle just after its close): the hour's candle is still
    trading there. Stored, it stayed as it was then, since an update asks only for later bars."""
    real = _bars("binance", 0, 1_001)
    hour = (int(time.time()) // 3600 + 1) * 3600  # the next hour by the real clock: the exchange's last candle ends then
    times = real.timestamps - real.timestamps[-2] + hour - 3600
    so_far = np.append(real.close[:-2], real.open[-2])  # the open candle so far: its close is its open
    trading = Candles(times[:-1], real.open[:-1], real.high[:-1], real.low[:-1], so_far, real.volume[:-1], 3600)
    ex = Exchange(trading, page_rows=1_000)
    _clock_at(monkeypatch, hour + 30)
    out = tmp_path / "b.parquet"
    with serving(binance=ex) as root:
        assert _download(out, "binance", root).returncode == 0
        _same_bars(out, trading.slice(0, 999))  # not the candle that closed 30 s ago by this clock
        ex.candles = Candles(times, real.open, real.high, real.low, real.close, real.volume, 3600)  # it closed as it did
        _clock_at(monkeypatch, hour + 3600 + 300)  # and the next one 5 minutes ago
        update = json.loads(_genesis("update", str(out), "--json", root=root, name="binance").stdout)
    assert update["new_bars"] == 2
    _same_bars(out, ex.candles)


def test_a_bar_the_loader_refuses_names_it_and_writes_no_file(tmp_path):
    bars = _bars("binance", 0, 1_200)
    high = bars.high.copy()
    high[700] = bars.low[700] / 2  # the exchange sends a bar whose high is below its low
    ex = Exchange(Candles(bars.timestamps, bars.open, high, bars.low, bars.close, bars.volume, 3600), page_rows=1_000)
    with serving(binance=ex) as root:
        proc = _download(tmp_path / "b.parquet", "binance", root)
    assert proc.returncode == 2
    assert "row 701" in proc.stderr and f"high {high[700]}" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.parquet").exists() and len(list((tmp_path / "b.parquet.part").glob("page-*"))) == 2


@pytest.mark.parametrize("args,message", [
    (["--exchange", "bitfinx", "--symbol", "BTC/USD"], "unknown exchange 'bitfinx'; did you mean bitfinex"),
    (["--exchange", "bitfinex", "--symbol", "BTC/USDX"], "bitfinex has no spot market 'BTC/USDX'; close matches: BTC/USD"),
    (["--exchange", "binance", "--symbol", "BTCUSDX"], "binance has no spot market 'BTCUSDX'; close matches: BTC/USDT"),
    (["--exchange", "bitfinex", "--symbol", "BTC/USD", "--timeframe", "7m"], "bitfinex offers no 7m candles; it offers 1m, 5m"),
    # a month on the exchange, once read here as a minute: monthly candles were fetched and stored as 1-minute bars
    (["--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1M"], "timeframe 1M: genesis works with minutes, hours"),
])
def test_an_exchange_symbol_or_timeframe_not_offered_is_one_clear_line(tmp_path, args, message):
    ex = {"bitfinex": Exchange(_bars("bitfinex", 0, 10)), "binance": Exchange(_bars("binance", 0, 10))}
    with serving(**ex) as root:
        proc = _genesis("download", *args, "--start", "2018-01-01", "--out", str(tmp_path / "x.parquet"), root=root, name=args[1])
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not any(_candle_requests(e) for e in ex.values()) and list(tmp_path.iterdir()) == []


def test_a_bundled_file_is_brought_up_to_date_by_update_as_a_downloaded_one(tmp_path):
    """The bundled CSVs declare their market beside them as a download does (exchange, symbol,
    timeframe), so `genesis data update` appends what the exchange has since: here the Binance file,
    cut 500 bars short, with its sidecar as shipped, becomes the whole file again."""
    import shutil

    source = FILES["binance"]
    whole = load_candles(source)
    lines = gzip.open(source, "rt").read().splitlines()
    cut = tmp_path / source.name
    with gzip.open(cut, "wt") as fh:
        fh.write("\n".join(lines[:-500]) + "\n")
    shutil.copyfile(market_sidecar(source), market_sidecar(cut))
    ex = Exchange(whole.slice(len(whole) - 2_000, len(whole)), page_rows=1_000)
    with serving(binance=ex) as root:
        proc = _genesis("update", str(cut), "--json", root=root, name="binance")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["new_bars"] == 500
    _same_bars(cut, whole)
    assert file_market(cut)["last_bar"] == format_ts(whole.timestamps[-1])


def test_an_end_before_the_start_a_start_to_come_or_a_file_it_cannot_write_is_refused_before_the_exchange_is_asked(tmp_path):
    """It asked the exchange, then said it had no candles "from 2023-01-01 to 2022-01-01" (or from a
    start a year ahead); and it loaded the exchange's markets before refusing `--out x.csv` (with
    no network, 31 s of retries, then a network error that did not name the file)."""
    ex = Exchange(_bars("binance", 0, 10))
    ahead = f"{datetime.now(UTC).year + 1}-01-01"
    for dates, said, out in ((("--start", "2023-01-01", "--end", "2022-01-01"), "error: --end 2022-01-01 is before --start 2023-01-01",
                              "x.parquet"),
                             (("--start", ahead), f"error: --start {ahead} is in the future (by this machine's clock): no candle "
                                                  "has closed since", "x.parquet"),
                             (("--start", "2022-01-01"), f"error: {tmp_path / 'x.csv'}: write .parquet (default) or .csv.gz", "x.csv")):
        with serving(binance=ex) as root:
            proc = _genesis("download", "--exchange", "binance", "--symbol", "BTC/USDT", *dates, "--out", str(tmp_path / out),
                            root=root, name="binance")
        assert proc.returncode == 2 and proc.stderr.strip() == said, proc.stderr
        assert ex.requests == [] and list(tmp_path.iterdir()) == []


def test_data_list_shows_each_file_with_its_market_span_and_fingerprint(tmp_path):
    ex = Exchange(_bars("binance", 0, 1_500), page_rows=1_000)
    with serving(binance=ex) as root:
        assert _download(tmp_path / "b.csv.gz", "binance", root).returncode == 0
    (tmp_path / "broken.csv").write_text("timestamp,open,high,low,close,volume\n2020-01-01,1,0.5,1,1,1\n")
    proc = genesis("data", "list", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {Path(r["path"]).name: r for r in json.loads(proc.stdout)}
    assert set(listed) == {"b.csv.gz", "broken.csv"}
    b = listed["b.csv.gz"]
    assert (b["exchange"], b["symbol"], b["timeframe"], b["bars"], b["fingerprint"]) == ("binance", "BTC/USDT", "1h", 1_500,
                                                                                       ex.candles.fingerprint)
    assert b["gaps"] == ex.candles.gaps().count >= 1 and b["first_bar"] == "2017-08-17T04:00:00Z"
    assert "high 0.5 < max(open, close)" in listed["broken.csv"]["error"]
    alone = genesis("data", "list", str(tmp_path / "b.csv.gz"), "--json")  # a file given: that file alone
    assert alone.returncode == 0 and json.loads(alone.stdout) == [b]
    missing = genesis("data", "list", str(tmp_path / "dat"))  # a mistyped folder listed no file, exit 0, as an empty one does
    assert (missing.returncode, missing.stdout) == (2, "") and missing.stderr.startswith(f"error: {tmp_path / 'dat'}: no such folder")


def test_the_readme_flow_download_a_market_then_optimize_on_it(tmp_path):
    """configs/optimize_sma_cross.yaml on a Binance BTC/USDT download: the market comes from the
    file's metadata (the base config's BTCUSD does not apply to another file), preflight passes, the
    run explores and validates on exactly the downloaded bars."""
    import yaml

    first = int(np.searchsorted(load_candles(FILES["binance"]).timestamps, parse_ts("2021-11-01")))
    last = int(np.searchsorted(load_candles(FILES["binance"]).timestamps, parse_ts("2024-01-01")))
    ex = Exchange(_bars("binance", first, last), page_rows=1_000)
    data = tmp_path / "data" / "binance_BTCUSDT_1h.parquet"
    with serving(binance=ex) as root:
        proc = _genesis("download", "--exchange", "binance", "--symbol", "BTC/USDT", "--start", "2021-11-01", "--out", str(data),
                        root=root, name="binance")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load((ROOT / "configs" / "optimize_sma_cross.yaml").read_text())
    cfg["meta"].update(base_config=str(ROOT / "configs" / "sma_cross.yaml"), data=str(data), results_dir=str(tmp_path / "results"),
                       stop={"max_trials": 12})
    path = tmp_path / "opt.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = genesis("optimize", str(path), "--json")
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "results" / "runs" / "sma-binance-2022" / "run.json").read_text())
    checks = {c["name"]: c for c in run["sessions"][0]["preflight"]["checks"]}
    assert checks["market"]["status"] == "pass" and "BTC/USDT" in checks["market"]["detail"], checks["market"]
    assert run["signature"]["data"] and run["fixed_config"]["data"]["path"] == str(data)
    assert run["cache"]["unique_backtests"] >= 1 and (tmp_path / "results" / "runs" / "sma-binance-2022" / "validation.json").exists()
    trial = json.loads(next((tmp_path / "results" / "runs" / "sma-binance-2022" / "trials").iterdir()).read_text())
    assert trial["fingerprints"]["data_file"] == ex.candles.fingerprint  # the bars downloaded, exactly

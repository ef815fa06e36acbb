"""The backtest path as a user meets it: the CLI, its result JSON, determinism and re-runs."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from genesis_core import backtest
from genesis_core.backtest import BacktestConfig, Backtester, build_config
from genesis_core.config import read_config_file
from genesis_core.data import Candles, load_candles, market_sidecar
from genesis_core.files import TRIMMED, trim_least_recently_used
from genesis_core.fingerprint import canonical_json, code_version, fingerprint
from genesis_core.records import backtest_record
from genesis_core.scoring import Constraints, Outcome, Scoring, score
from tests.conftest import BTC_FILE, SAMPLE_FILE, held_in_file
from tests.runs import genesis

ROOT = Path(__file__).resolve().parents[1]
GENESIS = [sys.executable, "-m", "genesis_core"]


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run([*GENESIS, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def short_config(tmp_path_factory) -> Path:
    cfg = read_config_file(ROOT / "configs" / "reference.yaml")
    cfg["data"].update(path=str(ROOT / cfg["data"]["path"]), start="2022-03-01", end="2022-05-31")
    path = tmp_path_factory.mktemp("cfg") / "strategy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_same_command_twice_gives_byte_identical_metrics(short_config, tmp_path):
    """The config given with -c, then as the command's argument as `genesis optimize` takes its own."""
    outs = []
    for i, given in enumerate((["-c", str(short_config)], [str(short_config)])):
        out = tmp_path / f"r{i}.json"
        proc = _cli("backtest", *given, "--out", str(out), "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == json.loads(out.read_text())
        outs.append(json.loads(out.read_text()))
    a, b = outs
    assert canonical_json(a["metrics"]) == canonical_json(b["metrics"])
    assert a == b
    both = _cli("backtest", str(short_config), "-c", str(short_config))
    assert both.returncode == 2 and "give one of CONFIG (or --config), --champion or --trial" in both.stderr
    # and the same numbers in this process, with another feature cache state
    inproc = backtest_record(Backtester().run(build_config(read_config_file(short_config)))).model_dump(mode="json")
    assert inproc["metrics"] == a["metrics"] and inproc["fingerprints"] == a["fingerprints"]


def test_a_short_s_borrow_is_paid_on_its_value_at_each_close_it_is_held_through(short_config):
    """The reference strategy on 2022-03..05 with shorts paying 30 bps a day (a margin short's
    borrow): the same trades at the same bars, each short's carry its units times each close held
    through times 1.25 bps (an hour's share), none on the longs; the equity the sum of the pnls.
    And in October 2021, where a long is held over four missing hours (2021-10-13), longs paying 30
    bps a day pay for the hours held, not the bars."""
    import numpy as np

    cfg = read_config_file(short_config)
    bt = Backtester()
    free = bt.run(build_config(cfg))
    paid = bt.run(build_config({**cfg, "costs": {**cfg["costs"], "carry_bps_per_day": {"short": 30}}}))
    a, b = free.engine.trades, paid.engine.trades
    assert len(a) == len(b) and (a["side"] == -1).sum() >= 10
    assert (a[["entry_bar", "exit_bar", "side"]] == b[["entry_bar", "exit_bar", "side"]]).all()
    close = paid.window.candles.close
    expected = [t["units"] * close[t["entry_bar"]:t["exit_bar"]].sum() * 30 / 24 / 1e4 if t["side"] == -1 else 0.0 for t in b]
    np.testing.assert_allclose(b["carry"], expected, rtol=1e-12)
    assert (a["carry"] == 0).all() and b["carry"].sum() > 0
    np.testing.assert_allclose(b["pnl"], b["side"] * b["units"] * (b["exit_price"] - b["entry_price"]) - b["fees"] - b["carry"],
                               rtol=1e-12)
    assert paid.engine.equity[-1] == pytest.approx(paid.engine.equity[0] + b["pnl"].sum(), rel=1e-12)
    assert paid.metrics["total_return"] < free.metrics["total_return"]
    record = backtest_record(paid).model_dump(mode="json")
    assert [t["carry"] for t in record["trades"]] == pytest.approx(list(b["carry"]))

    october = bt.run(build_config({**cfg, "data": {**cfg["data"], "start": "2021-10-01", "end": "2021-10-31"},
                                   "costs": {**cfg["costs"], "carry_bps_per_day": {"long": 30}}}))
    times, close = october.window.candles.timestamps, october.window.candles.close
    held = [np.arange(t["entry_bar"], t["exit_bar"]) for t in october.engine.trades]
    expected = [t["units"] * (close[h] * np.diff(times)[h]).sum() / 86_400 * 30 / 1e4 if t["side"] == 1 else 0.0
                for t, h in zip(october.engine.trades, held, strict=True)]
    np.testing.assert_allclose(october.engine.trades["carry"], expected, rtol=1e-12)
    over_gap = [(t, h[np.diff(times)[h] > 3600]) for t, h in zip(october.engine.trades, held, strict=True)
                if t["side"] == 1 and (np.diff(times)[h] > 3600).any()]
    assert len(over_gap) == 1
    ((t, (gap,)),) = over_gap  # the close before four hours: three bars missing
    by_bar = t["units"] * close[t["entry_bar"]:t["exit_bar"]].sum() * 30 / 24 / 1e4
    assert t["carry"] == pytest.approx(by_bar + t["units"] * close[gap] * 3 * 30 / 24 / 1e4, rel=1e-12)


def test_result_json_holds_what_proves_and_reproduces_it(short_config, tmp_path):
    out = tmp_path / "r.json"
    proc = _cli("backtest", "-c", str(short_config), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "result written to" in proc.stdout and "Decision trace" in proc.stdout
    result = json.loads(out.read_text())
    eff = result["effective_config"]
    assert eff["data"]["warmup_bars"] == result["window"]["warmup_bars"] > 0
    assert eff["params"]["exits"]["trailing_stop_atr"] is None  # defaults are filled in, not left out
    assert eff["params"]["gates"]["fib"]["swing_bars"] == 3
    assert result["code_version"] == code_version()
    assert result["window"]["first_bar"] == "2022-03-01T00:00:00Z" and result["window"]["last_bar"] == "2022-05-31T23:00:00Z"
    assert len(result["trades"]) == result["metrics"]["num_trades"] > 0
    assert result["metrics"]["final_equity"] == pytest.approx(10_000 + sum(t["pnl"] for t in result["trades"]))
    # re-run from the stored effective config alone: same fingerprints, same metrics, bit for bit
    rerun = backtest_record(Backtester().run(build_config(eff))).model_dump(mode="json")
    assert rerun["fingerprints"] == result["fingerprints"]
    assert canonical_json(rerun["metrics"]) == canonical_json(result["metrics"])
    assert fingerprint(rerun["trades"]) == fingerprint(result["trades"])


def test_cli_window_flags_override_the_config(short_config, tmp_path):
    out = tmp_path / "r.json"
    proc = _cli("backtest", "-c", str(short_config), "--start", "2022-04-01", "--end", "2022-04-30", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    w = json.loads(proc.stdout)["window"]
    assert (w["first_bar"], w["last_bar"], w["bars"]) == ("2022-04-01T00:00:00Z", "2022-04-30T23:00:00Z", 720)


def test_bad_data_exits_2_naming_the_row_and_writes_nothing(short_config, tmp_path):
    with gzip.open(ROOT / "data" / "tBTCUSD_1h_sample.csv.gz", "rt") as fh:
        lines = fh.read().splitlines()
    fields = lines[5].split(",")
    fields[2] = str(float(fields[4]) - 50)  # high below close
    lines[5] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "never.json"
    proc = _cli("backtest", "-c", str(short_config), "--data", str(bad), "--out", str(out))
    assert proc.returncode == 2
    assert "row 5, line 6" in proc.stderr and "high" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    proc = _cli("data", "check", str(bad))
    assert proc.returncode == 2 and "row 5, line 6" in proc.stderr


def test_unknown_config_key_exits_2_with_a_suggestion(short_config, tmp_path):
    cfg = yaml.safe_load(short_config.read_text())
    cfg["params"]["exits"]["stop_los_atr"] = 1.0
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = _cli("backtest", "-c", str(path), "--out", str(tmp_path / "never.json"))
    assert proc.returncode == 2
    assert "params.exits.stop_los_atr: unknown key; did you mean 'stop_loss_atr'?" in proc.stderr
    assert not (tmp_path / "never.json").exists()
    proc = _cli("backtest", "-c", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "cannot read config" in proc.stderr


def test_data_check_summarises_the_bundled_file():
    proc = _cli("data", "check", "data/BTCUSD_1h_bitfinex.csv.gz", "--json")
    assert proc.returncode == 0
    summary = json.loads(proc.stdout)
    assert (summary["bars"], summary["gaps"], summary["missing_bars"], summary["timeframe"]) == (49_724, 6, 13, "1h")
    assert (summary["exchange"], summary["symbol"]) == ("bitfinex", "BTC/USD")  # from the file's .market.json
    binance = json.loads(_cli("data", "check", "data/BTCUSDT_1h_binance.csv.gz", "--json").stdout)
    assert binance["largest_gaps"][:3] == [  # each with the exchange's known outage it falls in, as a download says them
        "33 bar(s) missing 2018-02-08T01:00:00Z .. 2018-02-09T09:00:00Z (Binance's February 2018 outage)",
        "10 bar(s) missing 2018-06-26T02:00:00Z .. 2018-06-26T11:00:00Z",
        "10 bar(s) missing 2019-05-15T03:00:00Z .. 2019-05-15T12:00:00Z (Binance maintenance)"]
    shown = _cli("data", "check", "data/BTCUSDT_1h_binance.csv.gz").stdout
    assert "│ exchange          │ binance" in shown and "(Binance's February 2018 outage)" in shown


def _strict(text: str):
    """Parse as strict JSON: NaN, Infinity and -Infinity are refused, as any strict parser does."""
    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_absurd_prices_give_invalid_numeric_in_strict_json_never_a_number(tmp_path):
    """Prices of 1e-307 pass every candle check (finite, positive) but overflow the arithmetic:
    the metrics that are not finite are null and named, the outcome INVALID_NUMERIC."""
    lines = gzip.open(ROOT / "data" / "tBTCUSD_1h_sample.csv.gz", "rt").read().splitlines()
    header = lines[0].split(",")
    prices = [header.index(c) for c in ("open", "high", "low", "close")]
    rows = [[repr(float(v) * 1e-310) if i in prices else v for i, v in enumerate(line.split(","))] for line in lines[1:]]
    data = tmp_path / "tiny.csv"
    data.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"strategy": "sma_cross", "params": {"fast": 10, "slow": 30}, "data": {"path": str(data)}}))
    proc = _cli("backtest", "-c", str(config), "--out", str(tmp_path / "r.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    record = _strict(proc.stdout)
    assert record == _strict((tmp_path / "r.json").read_text())
    assert set(record["not_finite"]) >= {"total_return", "final_equity"}
    assert all(record["metrics"][k] is None for k in record["not_finite"]) and record["metrics"]["num_trades"] > 0
    assert any(t["pnl"] is None for t in record["trades"])
    human = _cli("backtest", "-c", str(config), "--out", str(tmp_path / "r2.json"))
    assert human.returncode == 0 and "INVALID_NUMERIC: total_return" in human.stderr
    result = Backtester().run(build_config(read_config_file(config)))
    assert score(result.metrics, result.trace, Scoring(), Constraints()).outcome is Outcome.INVALID_NUMERIC


def test_out_to_a_pipe_or_device_writes_into_it_never_replaces_it(short_config, tmp_path):
    """`--out /dev/null` is a habit; run as root, replacing the device by a file breaks the machine.
    A named pipe stands in for the device here: it must still be a pipe, and have carried the JSON."""
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    proc = _cli("backtest", "-c", str(short_config), "--out", str(fifo))
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and json.loads(received[0])["metrics"]["num_trades"] >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file left beside it


def test_the_result_holds_its_series_and_trades_export_as_csv(short_config, tmp_path):
    """Equity and drawdown per decision bar in the result, and both tables as CSV, all from one run."""
    import csv

    proc = _cli("backtest", "-c", str(short_config), "--out", str(tmp_path / "r.json"), "--json",
                "--trades-csv", str(tmp_path / "trades.csv"), "--equity-csv", str(tmp_path / "equity.csv"))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    series = record["series"]
    assert len(series["time"]) == len(series["equity"]) == len(series["drawdown"]) == record["window"]["bars"]
    assert series["time"][0] == record["window"]["first_bar"] and series["time"][-1] == record["window"]["last_bar"]
    assert series["equity"][-1] == pytest.approx(record["metrics"]["final_equity"])
    assert -min(series["drawdown"]) == pytest.approx(record["metrics"]["max_drawdown"])
    with open(tmp_path / "equity.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["equity"]) for r in rows] == series["equity"] and rows[0]["time"] == series["time"][0]
    with open(tmp_path / "trades.csv") as fh:
        trades = list(csv.DictReader(fh))
    assert len(trades) == record["metrics"]["num_trades"] == len(record["trades"])
    assert trades == [{k: "" if v is None else str(v) for k, v in t.items()} for t in record["trades"]]  # cell for cell
    assert [[r["time"], float(r["equity"]), float(r["drawdown"])] for r in rows] == \
        [list(x) for x in zip(series["time"], series["equity"], series["drawdown"], strict=True)]
    assert sum(float(t["pnl"]) for t in trades) == pytest.approx(record["metrics"]["final_equity"] - 10_000.0)


def test_the_drawdown_axis_of_a_small_drawdown_says_its_ticks_apart(tmp_path):
    """An SMA crossover at 1% of equity draws down 2% at most: its axis' ticks, half a percent
    apart, were each rounded to a whole percent (-2%, -2%, -1%, -1%, 0%)."""
    import re

    from tests.browser import render, rendered_figures

    cfg = read_config_file(ROOT / "configs" / "sma_cross.yaml")
    cfg["data"]["path"] = str(ROOT / cfg["data"]["path"])
    cfg["params"]["size"] = 0.01
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(cfg))
    page = tmp_path / "small.html"
    proc = _cli("backtest", "-c", str(tmp_path / "small.yaml"), "--out", str(tmp_path / "r.json"), "--report", str(page))
    assert proc.returncode == 0, proc.stderr
    assert 0.01 < json.loads((tmp_path / "r.json").read_text())["metrics"]["max_drawdown"] < 0.03
    ticks = re.findall(r'class="y3tick"><text[^>]*>([^<]*)</text>', rendered_figures(render(page)[0])["1"])
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks) and ticks[-1] == "0%", ticks


def test_backtest_report_renders_in_a_browser_and_plots_what_the_result_holds(short_config, tmp_path):
    """`--report`: price with every entry and exit, equity, drawdown, buying and holding, and the
    decision trace, each plot rendered by a real browser without a JavaScript error, their data equal
    to the result's; the market's return beside the strategy's, on the command line too."""
    from datetime import datetime

    from tests.browser import figure_data, render, rendered_figures

    page = tmp_path / "bt.html"
    proc = _cli("backtest", "-c", str(short_config), "--out", str(tmp_path / "r.json"), "--report", str(page))
    assert proc.returncode == 0, proc.stderr
    assert f"report written to {page}" in proc.stdout
    record = json.loads((tmp_path / "r.json").read_text())
    dom, console = render(page)
    assert not console, console
    figures = rendered_figures(dom)
    assert sorted(figures) == ["1", "2"] and all('class="main-svg"' in body for body in figures.values())
    text = page.read_text()
    close, longs, shorts, exits, equity, drawdown, held = figure_data(text, 1)
    ms = [int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000) for t in record["series"]["time"]]
    assert equity["x"] == drawdown["x"] == close["x"] == held["x"] == ms
    assert Path(yaml.safe_load(short_config.read_text())["data"]["path"]) == BTC_FILE
    holding = held_in_file("2022-03-01", "2022-05-31")
    assert list(holding.index[[0, -1]]) == ["2022-03-01T00:00:00Z", "2022-05-31T23:00:00Z"] == record["series"]["time"][::len(ms) - 1]
    market = holding.iloc[-1] - 1
    assert record["buy_and_hold"] == pytest.approx(market, rel=1e-12)  # in the result JSON too
    assert held["name"] == "buy and hold" and held["y"] == pytest.approx(list(10_000.0 * holding), rel=1e-12)
    assert f"<td class='l'>buy and hold</td><td>{market:+.2%} (bought at the first bar&#x27;s open)</td>" in text
    m = record["metrics"]  # the fractions beside it as percentages too, where the page showed -0.3623 under -64.15%
    assert (f"<td class='l'>total_return</td><td>{m['total_return']:+.2%}</td></tr><tr><td class='l'>sharpe</td>"
            f"<td>{m['sharpe']:,.4g}</td>") in text
    assert all(f"<td class='l'>{k}</td><td>{m[k]:.2%}</td>" in text for k in ("max_drawdown", "win_rate", "exposure"))
    assert re.search(rf"│ total_return +│ {re.escape(format(m['total_return'], '+.2%'))} +│", proc.stdout)  # and the command's table
    assert (f"market: buying at the first bar's open and holding made {market:+.2%} over the window; this strategy "
            f"{record['metrics']['total_return']:+.2%} (total_return)") in proc.stdout
    assert equity["y"] == record["series"]["equity"] and drawdown["y"] == record["series"]["drawdown"]
    trades = record["trades"]
    for trace, side in ((longs, "long"), (shorts, "short")):
        assert trace["y"] == [t["entry_price"] for t in trades if t["side"] == side]
    assert exits["y"] == [t["exit_price"] for t in trades] and len(trades) == record["metrics"]["num_trades"] > 0
    funnel, blocked = figure_data(text, 2)
    assert dict(zip(funnel["y"], funnel["x"], strict=True))["trades_closed"] == record["metrics"]["num_trades"]
    assert dict(zip(blocked["y"], blocked["x"], strict=True)) == record["trace"]["blocked"]
    assert f"Trades ({len(trades)})" in dom and dom.count("<tr>") >= len(trades) + len(record["metrics"])


def _settled(path: Path, seconds_ago: float = 3600.0) -> Path:
    when = time.time() - seconds_ago
    os.utime(path, (when, when))
    return path


def _load_elsewhere(path: Path, cache: Path) -> dict:
    """What a fresh process (a worker) loads through ``Backtester(cache)``, and whether it imported pandas."""
    code = ("import json, sys; from pathlib import Path; from genesis_core.backtest import Backtester, BacktestConfig; "
            "c = Backtester(Path(sys.argv[2])).candles(BacktestConfig.model_validate({'data': {'path': sys.argv[1]}})); "
            "print(json.dumps({'fp': c.fingerprint, 'symbol': c.symbol, 'pandas': 'pandas' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(cache)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_checked_candles_are_read_by_the_next_process_without_parsing(tmp_path):
    path = tmp_path / "btc.csv.gz"
    shutil.copy(SAMPLE_FILE, path)
    market_sidecar(path).write_text(json.dumps({"exchange": "bitfinex", "symbol": "BTC/USD", "timeframe": "1h"}))
    _settled(path), _settled(market_sidecar(path))
    parsed = load_candles(path)
    first, second = _load_elsewhere(path, tmp_path / "cache"), _load_elsewhere(path, tmp_path / "cache")
    assert first == {"fp": parsed.fingerprint, "symbol": "BTC/USD", "pandas": True}
    assert second == {"fp": parsed.fingerprint, "symbol": "BTC/USD", "pandas": False}  # 0.6 s off a worker's start


def test_the_candle_cache_never_serves_a_changed_or_damaged_file(tmp_path, monkeypatch):
    frame = pd.read_csv(SAMPLE_FILE, dtype=str)
    path = tmp_path / "c.csv"
    frame.to_csv(path, index=False)
    cache = tmp_path / "cache"

    def load() -> Candles:
        monkeypatch.setattr(backtest, "_LOADED", {})  # a new process
        return Backtester(cache).candles(BacktestConfig.model_validate({"data": {"path": str(path)}}))

    assert load().fingerprint == load_candles(path).fingerprint
    assert not list(cache.rglob("*.npz"))  # just written: a second write in the same mtime tick would look the same
    _settled(path)
    before = load()
    assert len(list(cache.rglob("*.npz"))) == 1
    volume = frame.loc[10, "volume"]
    frame.loc[10, "volume"] = volume[:-1] + ("1" if volume[-1] != "1" else "2")  # the same size
    frame.to_csv(path, index=False)
    _settled(path, 1800.0)
    edited = load()
    assert edited.volume[10] != before.volume[10] and edited.fingerprint == load_candles(path).fingerprint
    for damaged in cache.rglob("*.npz"):
        raw = bytearray(damaged.read_bytes())
        raw[len(raw) // 2:len(raw) // 2 + 64] = b"\xff" * 64  # inside an array: its CRC no longer matches
        damaged.write_bytes(bytes(raw))
    assert load().fingerprint == load_candles(path).fingerprint


def _window_config(start: str, end: str) -> backtest.BacktestConfig:
    cfg = read_config_file(ROOT / "configs" / "reference.yaml")
    cfg["data"].update(path=str(ROOT / cfg["data"]["path"]), start=start, end=end)
    return build_config(cfg)


def test_a_cache_over_its_limit_loses_its_least_recently_used_files_first_and_a_backtest_after_gives_the_same_numbers(
        tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(backtest, "_LOADED", {})  # a new process: the candles go through the cache
    old, new = _window_config("2021-03-01", "2021-05-31"), _window_config("2022-03-01", "2022-05-31")
    bt = Backtester(cache)
    old_metrics, new_metrics = bt.run(old).metrics, bt.run(new).metrics
    windows = {bt.features(bt.plan(c).window): c for c in (old, new)}
    old_dir, new_dir = (cache / "features" / store.candles.fingerprint[:32] for store, _ in
                        sorted(windows.items(), key=lambda kv: kv[1] is new))
    [candles] = (cache / "candles").iterdir()
    stale = candles.with_name("0" * 32 + ".npz")  # the candles an earlier version of the code kept
    shutil.copyfile(candles, stale)
    now = time.time()
    for path, days in [(stale, 3), *((f, 2) for f in old_dir.iterdir())]:
        os.utime(path, (now - days * 86400, now - days * 86400))
    size = {p: p.stat().st_size for p in cache.rglob("*") if p.is_file()}
    going = [stale, *old_dir.iterdir()]
    kept = sum(size.values()) - sum(size[p] for p in going)
    limit = int(kept / 0.8) + 1  # room for all but the stale candles and the old window's features
    assert sum(size.values()) > limit and kept + min(size[p] for p in going) > 0.8 * limit

    removed = trim_least_recently_used(cache, limit, 0)

    assert sorted(removed) == sorted(going) and not old_dir.exists() and not stale.exists()
    assert sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and p.name != TRIMMED) == kept
    assert candles.exists() and len(list(new_dir.iterdir())) == len([p for p in size if p.parent == new_dir])
    assert trim_least_recently_used(cache, 0, 3600) == [] and candles.exists()  # looked at less than an hour ago
    monkeypatch.setattr(backtest, "_LOADED", {})
    again = Backtester(cache)
    assert again.run(old).metrics == old_metrics and again.run(new).metrics == new_metrics
    assert sorted(p.name for p in old_dir.iterdir()) == sorted(p.name for p in going[1:])  # made again


def test_genesis_cache_mb_bounds_the_cache_of_the_command_line_and_a_bad_value_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(backtest, "_LOADED", {})
    cfg = read_config_file(ROOT / "configs" / "reference.yaml")
    cfg["data"]["path"] = str(ROOT / cfg["data"]["path"])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))

    def run(start: str, end: str, limit: str | None = None) -> SimpleNamespace:
        if limit is None:
            monkeypatch.delenv(backtest.CACHE_LIMIT_ENV, raising=False)
        else:
            monkeypatch.setenv(backtest.CACHE_LIMIT_ENV, limit)
        return genesis("backtest", "-c", "c.yaml", "--start", start, "--end", end, "--json", "--out", f"{start}.json")

    features, stamp = tmp_path / ".cache" / "genesis" / "features", tmp_path / ".cache" / "genesis" / TRIMMED
    first = run("2021-03-01", "2021-05-31")
    assert first.returncode == 0, first.stderr
    assert not stamp.exists()  # nothing to look at as it started
    [old_window] = features.iterdir()
    bad = run("2022-03-01", "2022-05-31", "1GB")
    assert bad.returncode == 2 and "GENESIS_CACHE_MB='1GB'" in bad.stderr and "whole number" in bad.stderr
    assert not (tmp_path / "results" / "backtests" / "2022-03-01.json").exists() and list(features.iterdir()) == [old_window]
    written = {p: p.stat().st_mtime_ns for p in old_window.iterdir()}
    again = run("2021-03-01", "2021-05-31", "0")  # emptied as it starts, then holds this run's files alone
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["metrics"] == json.loads(first.stdout)["metrics"]
    assert all(p.stat().st_mtime_ns > when for p, when in written.items())  # made again
    assert time.time() - stamp.stat().st_mtime < 60
    other = run("2022-03-01", "2022-05-31", "0")  # looked at less than an hour ago: not emptied
    assert other.returncode == 0, other.stderr
    assert len(list(features.iterdir())) == 2
    _settled(stamp, 2 * backtest.TRIM_EVERY_SECONDS)  # last looked at two hours ago
    monkeypatch.setattr(backtest, "_LOADED", {})
    later = run("2022-03-01", "2022-05-31", "0")
    assert later.returncode == 0, later.stderr
    assert json.loads(later.stdout)["metrics"] == json.loads(other.stdout)["metrics"]
    [new_window] = features.iterdir()
    assert new_window != old_window


def test_a_backtester_keeps_the_features_of_its_most_recent_windows_only_and_the_numbers_never_depend_on_it():
    """Forty windows of the reference strategy, each with its own warm-up, as a study over an
    indicator's period makes: one Backtester keeps the features of its FEATURE_STORES most recent
    windows, not of all forty (each kept its own EMAs, ATRs and ADX for the whole run). Every
    backtest's metrics equal those of a Backtester of its own, and a window used again after its
    features were dropped gives the same numbers again."""
    cfg = read_config_file(ROOT / "configs" / "reference.yaml")
    cfg["data"]["path"] = str(ROOT / cfg["data"]["path"])
    configs = [build_config(cfg, overrides={"data": {"warmup_bars": 513 + 7 * k}}) for k in range(40)]
    bt = Backtester()
    first = [bt.run(c).metrics for c in configs]
    assert len({bt.plan(c).window.fingerprint for c in configs}) == 40
    assert len(bt._features) == backtest.FEATURE_STORES < 40
    assert all(store._cache for store in bt._features.values())  # each holds its non-local features
    assert bt.run(configs[0]).metrics == first[0] == Backtester().run(configs[0]).metrics  # made again
    for k in (1, 20, 39):
        assert first[k] == Backtester().run(configs[k]).metrics, k


def test_a_market_closed_at_weekends_is_annualised_over_the_bars_it_trades_a_year(btc):
    """Crypto trades every day: P is 365 days of bars, gaps or not. A stock market closes at
    weekends (backtesting.py's own GOOG.csv, daily): P is the bars the file holds a year, 251.5,
    where 365 made its Sharpe about 20% too high (the same test of weekends as backtesting.py's)."""
    import math

    import backtesting

    assert btc.gaps().count > 0 and btc.bars_per_year == 8760.0
    goog = Path(backtesting.__file__).parent / "test" / "GOOG.csv"
    candles = load_candles(goog)
    span_days = (candles.timestamps[-1] - candles.timestamps[0]) / 86_400 + 1
    assert candles.bars_per_year == pytest.approx(len(candles) * 365 / span_days) and 250 < candles.bars_per_year < 253
    result = Backtester().run(build_config({"strategy": "sma_cross", "params": {"fast": 10, "slow": 20},
                                            "data": {"path": str(goog), "start": "2006-01-01", "end": "2012-12-31"}}))
    r = result.engine.equity[1:] / result.engine.equity[:-1] - 1
    assert result.metrics["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(candles.bars_per_year), rel=1e-12)
    assert result.metrics["sharpe"] > 0 and math.sqrt(365 / candles.bars_per_year) > 1.2  # what 365 days made it


def test_a_liquidated_account_is_said_by_the_backtest_and_its_numbers_are_a_total_loss(tmp_path, monkeypatch):
    """RSI above 50 shorts all the equity and nothing closes it: BTC/USD from 2020-10 doubles within
    weeks. The backtest says when the account was liquidated and that nothing traded after; its
    numbers are a total loss (the run was marked on to -434% with a Sharpe of +2.1)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump({"strategy": "tests.strategy.custom_strategy:RsiReversion",
                                    "params": {"oversold": 0, "overbought": 50, "size": 1.0},
                                    "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                                             "start": "2020-10-01", "end": "2021-04-30"}}))
    result = json.loads(genesis("backtest", "--config", str(path), "--json").stdout)
    m, (ruin,) = result["metrics"], [t for t in result["trades"] if t["exit_reason"] == "liquidation"]
    assert (m["total_return"], m["final_equity"], m["max_drawdown"]) == (-1.0, 0.0, 1.0) and m["sharpe"] < 0
    assert ruin["side"] == "short" and ruin["exit_price"] > 1.9 * ruin["entry_price"] and result["trace"]["exits"]["liquidation"] == 1
    assert ruin == result["trades"][-1]  # nothing after it
    shown = " ".join(genesis("backtest", "--config", str(path)).stderr.split())
    assert (f"warning: the account was liquidated at {ruin['exit_time']}: its short from {ruin['entry_time']} lost all the "
            f"equity at {ruin['exit_price']:,.2f} (entry {ruin['entry_price']:,.2f}); nothing traded after it") in shown


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_backtest_stopped_by_a_signal_says_what_became_of_each_file_and_leaves_no_piece(short_config, tmp_path, sig):
    """Ctrl-C during `genesis backtest` ended it without a word (exit 130), SIGTERM killed it: a
    temporary file could stay beside an output, and nothing said which outputs were written.
    Stopped as the trades CSV is flushed (the third file's flush: the result JSON's is the first):
    one line, exit 128 + the signal, the JSON written, the CSV not, the page as it was (SIGINT: one
    was there) or not written, no other file; the same command then writes them all."""
    from tests.runs import genesis_killed_after

    out, trades, page = tmp_path / "r.json", tmp_path / "trades.csv", tmp_path / "bt.html"
    if sig == signal.SIGINT:
        page.write_text("an earlier page")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["backtest", "-c", str(short_config), "--out", str(out), "--trades-csv", str(trades), "--report", str(page)]
    stopped = genesis_killed_after("genesis_core.files:os.fsync", 3, *args, sig=sig)
    kept = "is as it was" if sig == signal.SIGINT else "was not written"
    assert (stopped.returncode, stopped.stderr) == (128 + sig, f"interrupted: {out} was written before the stop; {trades} was not "
                                                                f"written; {page} {kept}; run the same command again\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "r.json"])  # no temporary beside them
    assert json.loads(out.read_text())["effective_config"]["data"]["start"] == "2022-03-01"
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads(out.read_text())["metrics"]["num_trades"] == len(trades.read_text().splitlines()) - 1 > 0
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_candles_read_once_a_process_are_named_as_each_config_names_their_file(monkeypatch, tmp_path):
    """A file's candles are read once a process; they kept the first config's name for it, so a
    later config that named the same file otherwise (an MCP server's next call, a walk-forward's
    fold) had its preflight data check, and its errors, name it as the first had. Each spelling now
    keeps its own name, on the same arrays."""
    from genesis_core.preflight import preflight_file
    from tests.optimizer.test_accounting import _crashing_config
    from tests.validation.test_preflight import _by_name

    monkeypatch.chdir(BTC_FILE.parents[1])
    absolute, relative = str(BTC_FILE), str(BTC_FILE.relative_to(BTC_FILE.parents[1]))
    for cache in (None, tmp_path / "cache"):
        named = {p: Backtester(cache).candles(build_config({"data": {"path": p}})) for p in (relative, absolute, relative)}
        assert {p: c.source for p, c in named.items()} == {absolute: absolute, relative: relative}
        assert named[absolute].fingerprint == named[relative].fingerprint
        assert named[absolute].close is named[relative].close  # the file read once a process, not once a name
    path = _crashing_config(tmp_path, "none", (10, 20))  # its data: the absolute path
    assert _by_name(preflight_file(path))["data"].detail.startswith(f"{absolute}: 49,724 bars ")

"""Never fool the user about what a result was measured on: a model's training span, the market a
data file holds, and a champion measured elsewhere."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genesis_core.data import MARKET_KEY, load_candles, parse_ts
from genesis_core.errors import ConfigError
from genesis_core.preflight import preflight
from genesis_core.strategy.model import load_model
from genesis_core.study import load_study_config
from tests.conftest import BTC_FILE
from tests.optimizer.test_optimizer import ROOT, write_config
from tests.runs import promote
from tests.validation.conftest import VALIDATION, validated_config


def _checks(path: Path) -> dict:
    return {c.name: c for c in preflight(load_study_config(path))}


def _genesis(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genesis_core", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _parquet(tmp_path: Path, symbol: str | None, name: str = "c.parquet") -> Path:
    """The bundled candles as Parquet, with the market in the file's metadata when given."""
    c = load_candles(BTC_FILE)
    table = pa.table({"timestamp": c.timestamps, "open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume})
    if symbol:
        table = table.replace_schema_metadata({MARKET_KEY: json.dumps({"exchange": "bitfinex", "symbol": symbol, "timeframe": "1h"})})
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def test_a_window_inside_the_models_training_span_fails_preflight(tmp_path):
    model = load_model("builtin:btcusd_1h")[0].training
    assert (model["symbol"], model["timeframe"], model["last_bar"]) == ("BTCUSD", "1h", "2021-12-31T23:00:00Z")
    leaky = validated_config(tmp_path, validation={**VALIDATION, "walk_forward": {"folds": 2, "start": "2021-06-01", "end": "2022-12-31"}})
    check = _checks(leaky)["model training"]
    assert check.status == "fail" and "walk-forward 2021-06-01..2022-12-31 overlaps the training span of model builtin:btcusd_1h" in check.detail
    windows = validated_config(tmp_path, "v.yaml", validation={**VALIDATION, "windows": [{"start": "2021-12-01", "end": "2022-01-31"}]})
    assert "validation 1 2021-12-01..2022-01-31 overlaps the training span" in _checks(windows)["model training"].detail
    explore = write_config(tmp_path, "e.yaml", meta={"sample_start": "2021-10-01", "sample_end": "2021-12-31"})
    assert "explore 2021-10-01..2021-12-31 overlaps" in _checks(explore)["model training"].detail
    clean = _checks(validated_config(tmp_path, "ok.yaml"))["model training"]
    assert clean.status == "pass" and "no window inside model builtin:btcusd_1h's 2018-06-01..2021-12-31" in clean.detail
    bundled = {c.name: c for c in preflight(load_study_config(ROOT / "configs" / "optimize_reference.yaml"))}
    assert bundled["model training"].status == "pass"  # the bundled walk-forward now starts after the training span


def test_a_backtest_inside_the_training_span_warns(tmp_path):
    out = str(tmp_path / "r.json")
    proc = _genesis("backtest", "-c", "configs/reference.yaml", "--start", "2021-11-01", "--end", "2021-11-30", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "warning: the backtest window 2021-11-01..2021-11-30 overlaps the training span of model builtin:btcusd_1h" in proc.stderr
    clean = _genesis("backtest", "-c", "configs/reference.yaml", "--out", out)
    assert "training span" not in clean.stderr


def test_data_of_another_market_fails_unless_allowed_and_then_is_recorded(tmp_path):
    eth = _parquet(tmp_path, "ETH/USD")
    assert load_candles(eth).symbol == "ETH/USD"
    path = write_config(tmp_path, meta={"data": str(eth)})
    check = _checks(path)["market"]
    assert check.status == "fail" and "meta.symbol BTCUSD but the data" in check.detail and "holds ETH/USD" in check.detail
    assert "model builtin:btcusd_1h was trained on BTCUSD 1h, the data is ETH/USD 1h" in check.detail
    refused = _genesis("optimize", str(path))
    assert refused.returncode == 1 and "market: meta.symbol BTCUSD" in refused.stderr
    allowed = write_config(tmp_path, "allowed.yaml", meta={"data": str(eth), "allow_cross_market": True})
    assert _checks(allowed)["market"].status == "warn"
    done = _genesis("optimize", str(allowed))
    assert done.returncode == 0, done.stderr
    assert "warning: preflight market: allowed by meta.allow_cross_market" in done.stderr  # said, not only stored
    recorded = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["sessions"][-1]["preflight"]["checks"]
    market = next(c for c in recorded if c["name"] == "market")
    assert market["status"] == "warn" and market["detail"].startswith("allowed by meta.allow_cross_market: meta.symbol BTCUSD")
    same = write_config(tmp_path, "same.yaml", meta={"data": str(_parquet(tmp_path, "BTC/USD", "btc.parquet"))})
    assert _checks(same)["market"].status == "pass"  # BTC/USD and BTCUSD are one market
    base = tmp_path / "declared.yaml"
    base.write_text((ROOT / "configs" / "reference.yaml").read_text().replace("symbol: BTCUSD", "symbol: ETHUSD"))
    contradicted = write_config(tmp_path, "c.yaml", meta={"base_config": str(base), "data": None})
    assert _checks(contradicted)["market"].detail == (  # the file named as the base config writes it
        f"data.symbol ETHUSD but data/{BTC_FILE.name} says it holds BTC/USD: declare data.symbol BTC/USD, or use a file of ETHUSD")
    bare = tmp_path / "bare.csv.gz"  # a CSV that declares no market: the base config's data.symbol says it
    shutil.copyfile(BTC_FILE, bare)
    base.write_text(base.read_text().replace("data/BTCUSD_1h_bitfinex.csv.gz", str(bare)))
    assert "meta.symbol BTCUSD but the data" in _checks(contradicted)["market"].detail


def test_a_champion_measured_on_other_data_or_of_another_strategy_is_not_merged_silently(validated_run, tmp_path):
    run = tmp_path / "results" / "runs" / "t"
    shutil.copytree(validated_run, run)
    assert promote(run).promoted
    other = tmp_path / "binance.csv.gz"  # other bars (another exchange's), declared as the same market
    shutil.copyfile(ROOT / "data" / "BTCUSDT_1h_binance.csv.gz", other)
    path = validated_config(tmp_path, "o.yaml", meta={"data": str(other), "stop": {"max_trials": 16}})
    check = _checks(path)["market"]
    assert check.status == "fail" and "the BTCUSD 1h champion was measured on" in check.detail and str(other) in check.detail
    assert "whose bars in its explore window 2022-03-01..2022-05-31 this study's data" in check.detail
    lines = gzip.open(BTC_FILE, "rt").read().splitlines()
    for name, kept in (("updated.csv", [*lines, "2024-01-16T16:00:00Z,43000.0,43100.0,42900.0,43050.0,12.5"]),  # `data update`
                       ("shorter.csv", [line for line in lines if not line.startswith("2018")])):  # the champion's bars all there
        same = tmp_path / name
        same.write_text("\n".join(kept) + "\n")
        checks = _checks(validated_config(tmp_path, f"{name}.yaml", meta={"data": str(same), "stop": {"max_trials": 16}}))
        assert checks["market"].status == "pass", (name, checks["market"].detail)  # it failed: another file's fingerprint
    sma = tmp_path / "sma.yaml"
    sma.write_text((ROOT / "configs" / "sma_cross.yaml").read_text())
    cross = write_config(tmp_path, "x.yaml", meta={"base_config": str(sma)}, parameters={"fast": {"type": "int", "low": 5, "high": 9}})
    with pytest.raises(ConfigError, match=r"champion in .* is a 'reference' config, this study's base config .* is 'sma_cross'"):
        load_study_config(cross).spec()
    assert _checks(cross)["config"].status == "fail"


def test_a_trained_model_records_its_market_span_and_code(tmp_path):
    bare = tmp_path / "bare.csv.gz"  # a CSV that declares no market
    shutil.copyfile(BTC_FILE, bare)
    refused = _genesis("model", "train", "--data", str(bare), "--out", str(tmp_path / "m.json"), "--start", "2019-01-01",
                       "--end", "2019-06-30")
    assert refused.returncode == 2 and "does not say which market it holds: give --symbol" in refused.stderr
    wrong = _genesis("model", "train", "--symbol", "ETHUSD", "--out", str(tmp_path / "m.json"), "--start", "2019-01-01")
    assert wrong.returncode == 2 and f"--symbol ETHUSD but data/{BTC_FILE.name} holds BTC/USD" in wrong.stderr
    said = _genesis("model", "train", "--out", str(tmp_path / "m.json"), "--start", "2019-01-01", "--end", "2019-06-30")
    assert said.returncode == 0 and json.loads((tmp_path / "m.json").read_text())["training"]["symbol"] == "BTC/USD"
    done = _genesis("model", "train", "--out", str(tmp_path / "m.json"), "--symbol", "BTCUSD", "--start", "2019-01-01",
                    "--end", "2019-06-30")
    assert done.returncode == 0, done.stderr
    training = json.loads((tmp_path / "m.json").read_text())["training"]
    assert (training["symbol"], training["timeframe"], training["first_bar"][:10], training["last_bar"][:10]) == \
        ("BTCUSD", "1h", "2019-01-01", "2019-06-30")
    assert len(training["code"]) == 64 and training["source"].endswith("BTCUSD_1h_bitfinex.csv.gz")
    shown = _genesis("model", "show", str(tmp_path / "m.json"))
    assert shown.returncode == 0 and "trained on BTCUSD 1h 2019-01-01T00:00:00Z .. 2019-06-30T23:00:00Z" in shown.stdout
    assert json.loads(_genesis("model", "show", str(tmp_path / "m.json"), "--json").stdout)["training"] == training


def test_a_window_before_a_model_s_training_span_is_not_out_of_sample(tmp_path):
    """A model fitted on 2021-01..2022-06 knows how the market went then; validating on 2020 with it
    passed preflight and validation as out of sample, though no trader of 2020 had that model.
    Validation windows (and the backtest's) before a training span now count as leakage, named
    "precedes"; an explore window there only chooses parameters, and is left alone."""
    import yaml

    from genesis_core.optimizer import SweepOptions, sweep
    from genesis_core.records import ValidationReport
    from tests.runs import validate

    model = tmp_path / "m.json"
    trained = _genesis("model", "train", "--out", str(model), "--symbol", "BTCUSD", "--start", "2021-01-01", "--end", "2022-06-30")
    assert trained.returncode == 0, trained.stderr
    base = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text())
    base["params"]["model"] = str(model)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    span = f"the training span of model {model} (2021-01-01..2022-06-30, BTCUSD 1h)"
    before = {"start": "2020-06-01", "end": "2020-08-31"}
    path = validated_config(tmp_path, meta={"base_config": str(tmp_path / "base.yaml"), "sample_start": "2020-01-01",
                                             "sample_end": "2020-03-31", "stop": {"max_trials": 3}},
                            validation={**VALIDATION, "windows": [before, {"start": "2022-09-01", "end": "2022-11-30"}]})
    check = _checks(path)["model training"]
    precedes = (f"validation 1 2020-06-01..2020-08-31 precedes {span}: a model fitted on later bars knows the market to "
                "come, so it is not out of sample")
    assert check.status == "fail" and check.detail == precedes, check.detail  # the explore window (2020-01..03) is not named

    sweep(load_study_config(path).spec(), SweepOptions("random", points=3, seed=1))
    report = ValidationReport.model_validate(validate(tmp_path / "results" / "runs" / "t"))
    assert report.candidates and not report.passed
    for c in report.candidates:  # the early window fails every candidate, the late one is judged as before
        early, late = c.windows
        assert f"not out of sample: {precedes.replace('validation 1', 'the window')}" in early.reasons and not early.passed
        assert not any("not out of sample" in r for r in late.reasons)

    out = str(tmp_path / "r.json")
    warned = _genesis("backtest", "-c", str(tmp_path / "base.yaml"), "--start", "2020-06-01", "--end", "2020-08-31", "--out", out)
    assert warned.returncode == 0 and f"warning: the backtest window 2020-06-01..2020-08-31 precedes {span}" in warned.stderr
    after = _genesis("backtest", "-c", str(tmp_path / "base.yaml"), "--start", "2022-09-01", "--end", "2022-11-30", "--out", out)
    assert after.returncode == 0 and "training span" not in after.stderr


def test_a_model_trained_on_another_market_or_timeframe_still_makes_its_days_in_sample(tmp_path):
    """The bundled model learnt Bitfinex BTCUSD 1h up to 2021-12-31. On Binance's BTCUSDT, with
    ``meta.allow_cross_market``, a validation window in 2021 passed preflight ("no window inside
    model builtin:btcusd_1h's 2018-06-01..2021-12-31") and validation as out of sample: a model of
    another market was not checked for its span at all, though bitcoin on another venue, or on 4h
    bars, moved as it did on those days."""
    from genesis_core.backtest import training_problems
    from genesis_core.optimizer import SweepOptions, sweep
    from genesis_core.records import ValidationReport
    from genesis_core.strategy import Training
    from tests.runs import validate

    inside = {"start": "2021-06-01", "end": "2021-08-31"}
    path = validated_config(tmp_path, meta={"data": str(ROOT / "data" / "BTCUSDT_1h_binance.csv.gz"), "symbol": "BTCUSDT",
                                             "allow_cross_market": True, "stop": {"max_trials": 3}},
                            validation={**VALIDATION, "windows": [inside, VALIDATION["windows"][1]]})
    checks = _checks(path)
    assert checks["market"].status == "warn" and "trained on BTCUSD 1h, the data is BTC/USDT 1h" in checks["market"].detail
    span = "the training span of model builtin:btcusd_1h (2018-06-01..2021-12-31, BTCUSD 1h, another market on the same days)"
    overlaps = f"validation 1 2021-06-01..2021-08-31 overlaps {span}: in-sample for the model"
    assert checks["model training"].status == "fail" and checks["model training"].detail == overlaps

    sweep(load_study_config(path).spec(), SweepOptions("random", points=3, seed=1))
    report = ValidationReport.model_validate(validate(tmp_path / "results" / "runs" / "t"))
    assert report.candidates
    for c in report.candidates:  # the 2021 window fails every candidate, the 2022 one is judged as before
        early, late = c.windows
        assert f"not out of sample: {overlaps.replace('validation 1', 'the window')}" in early.reasons and not early.passed
        assert not any("not out of sample" in r for r in late.reasons)

    four_hours = [Training("model m", "BTCUSD", "4h", "2021-01-01T00:00:00Z", "2021-12-31T20:00:00Z")]
    candles = load_candles(BTC_FILE)
    window = [("the window", parse_ts("2021-03-01"), parse_ts("2021-03-31", end_of_day=True), True)]
    leaks, others = training_problems(four_hours, candles, "BTCUSD", window)
    assert others == ["model m was trained on BTCUSD 4h, the data is BTCUSD 1h"]
    assert leaks == ["the window 2021-03-01..2021-03-31 overlaps the training span of model m (2021-01-01..2021-12-31, BTCUSD 4h, "
                     "another market on the same days): in-sample for the model"]
    after = [("the window", parse_ts("2022-03-01"), parse_ts("2022-03-31", end_of_day=True), True)]
    assert training_problems(four_hours, candles, "BTCUSD", after)[0] == []


def test_a_model_fed_a_constant_by_a_file_without_volume_is_named_by_preflight_and_backtest(tmp_path):
    """A venue that stopped reporting volume (every bar's 0 from 2022-08-25 on, as exports of indices and
    FX often give): the model's volume_z:48 is 0 on every bar of a window after that, and the model
    answers what it was never fitted on, with no error."""
    c = load_candles(BTC_FILE)
    volume = c.volume.copy()
    volume[c.timestamps >= parse_ts("2022-08-25")] = 0.0
    silent = tmp_path / "silent.parquet"
    pq.write_table(pa.table({"timestamp": c.timestamps, "open": c.open, "high": c.high, "low": c.low, "close": c.close,
                             "volume": volume}), silent)
    model = load_model("builtin:btcusd_1h")[0]
    spread = model.std[model.features.index("volume_z:48")]
    line = (f"model builtin:btcusd_1h's input volume_z:48 is 0 on every bar (the file gives no volume: every bar's is 0), "
            f"where it varied over its training bars (standard deviation {spread:.3g}): its output there is not what it "
            "was fitted to give")
    check = _checks(validated_config(tmp_path, meta={"data": str(silent)}))["model inputs"]
    assert (check.status, check.detail) == ("warn", f"validation 2 2022-09-01..2022-11-30: {line}")  # not the windows before
    clean = _checks(validated_config(tmp_path, "clean.yaml"))["model inputs"]
    assert (clean.status, clean.detail) == ("pass", f"each of the {len(model.features)} inputs of the strategy's models varies "
                                                    "over every window")

    def backtest(data: Path, start: str, end: str) -> tuple[str, dict]:
        out = tmp_path / "r.json"
        proc = _genesis("backtest", "-c", "configs/reference.yaml", "--data", str(data), "--start", start, "--end", end,
                        "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        return proc.stderr, json.loads(out.read_text())["metrics"]

    said, fed_zeros = backtest(silent, "2022-09-01", "2022-11-30")
    assert f"warning: {line}" in said.splitlines()
    _, fed_volume = backtest(BTC_FILE, "2022-09-01", "2022-11-30")
    assert fed_zeros != fed_volume  # the same bars, the model's answers moved by the constant alone
    before, _ = backtest(silent, "2022-06-01", "2022-08-24")
    assert "volume_z" not in before

    from genesis_core.errors import StrategyError
    from genesis_core.strategy import Training, checked_trained
    for inputs in ((("volume_z:48", 0.0),), (("no_such:1", 1.0),), (("rsi:14",),), [("rsi:14", 1.0)]):
        with pytest.raises(StrategyError, match="returned a Training whose inputs are .*, not a tuple of"):
            checked_trained([Training("model m", "BTCUSD", "1h", "2021-01-01T00:00:00Z", "2021-12-31T23:00:00Z", inputs)])

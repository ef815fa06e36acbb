"""Configs a careless user or an attacker writes: each refused with one line naming the file and
key, with nothing written; or, where the config is legitimate, run as written."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml

from genesis_core.backtest import Backtester, build_config
from genesis_core.config import read_config_file
from genesis_core.errors import ConfigError
from genesis_core.optimizer import RunOptions
from genesis_core.records import RunFolder
from genesis_core.study import load_study_config
from tests.optimizer.test_optimizer import ROOT, write_config
from tests.runs import genesis_apart as genesis
from tests.runs import optimize


def _refused_in_one_line(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert all(f in proc.stderr for f in fragments), proc.stderr


def test_a_study_name_cannot_lead_out_of_the_results_folder(tmp_path):
    results = tmp_path / "deep" / "results"
    for name in ("../../../escaped", "/tmp/x", ".hidden", "a/b", "", "x" * 101):
        path = write_config(tmp_path, meta={"study_name": name, "results_dir": str(results)})
        with pytest.raises(ConfigError, match="meta.study_name: .*is not a name: use letters, digits"):
            optimize(path)
    _refused_in_one_line(genesis("optimize", str(path)), "meta.study_name", "is not a name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.yaml"]  # nothing written anywhere
    for field, refusal in (("symbol", "is not a name"), ("timeframe", "bad timeframe")):  # they name the champion's files
        with pytest.raises(ConfigError, match=f"meta.{field}: .*{refusal}"):
            load_study_config(write_config(tmp_path, meta={field: "../x"}))


def test_libyaml_reads_configs_as_python_s_parser_does_and_its_errors_are_python_s(tmp_path):
    """Configs are parsed by libyaml (ten times faster) with the same checks on top: the same
    values of the same types as Python's parser for every shipped config and for YAML's corners; a
    file libyaml cannot parse is parsed again by Python's parser, whose message says where."""
    from genesis_core.config import _FastLoader, _Loader

    corners = ("a: &x {b: [1, 2.5, -3e-2, .inf, null, ~, true, no, 'yes', 0o17, 0x1f, 1_000]}\nc:\n  <<: *x\n  d: 2021-01-01\n"
               "e: 2021-01-01T10:00:00Z\nf: |\n  two\n  lines\ng: >-\n  folded\n  text\nh: 'é ü ✓'\n")
    for text in [p.read_text() for p in sorted((ROOT / "configs").glob("*.yaml"))] + [corners]:
        python_s, libyaml_s = yaml.load(text, Loader=_Loader), yaml.load(text, Loader=_FastLoader)  # noqa: S506
        assert json.dumps(libyaml_s, sort_keys=True, default=repr) == json.dumps(python_s, sort_keys=True, default=repr)
        assert repr(libyaml_s) == repr(python_s)
    with pytest.raises(ConfigError, match="a key must be a plain value, not a list"):
        yaml.load("? [1, 2]\n: i\n", Loader=_FastLoader)  # noqa: S506
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: reference\nparams:\n  exits: {stop_loss_atr: 2.0\n  other: 1\n")
    with pytest.raises(yaml.MarkedYAMLError) as python_s:
        yaml.load(bad.read_text(), Loader=_Loader)  # noqa: S506
    mark = python_s.value.problem_mark
    with pytest.raises(ConfigError, match=rf"bad.yaml: not valid YAML at line {mark.line + 1}, column {mark.column + 1}: ") as ours:
        read_config_file(bad)
    assert str(ours.value).endswith("expected ',' or '}', but got ':'")  # libyaml: "did not find expected ',' or '}'"


def test_duplicate_keys_are_refused_naming_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("strategy: reference\nparams:\n  exits:\n    stop_loss_atr: 2.0\n    stop_loss_atr: 3.0\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: key 'stop_loss_atr' given twice \(lines 4 and 5\); keep one"):
        read_config_file(path)
    path.write_text("{a: 1, a: 2}\n")  # on one line too
    with pytest.raises(ConfigError, match=r"key 'a' given twice \(lines 1 and 1\)"):
        read_config_file(path)
    _refused_in_one_line(genesis("backtest", "-c", str(path)), "given twice")
    merged = tmp_path / "merge.yaml"  # a YAML merge key overriding is not a duplicate
    merged.write_text("base: &b {fast: 10, slow: 30}\nparams:\n  <<: *b\n  fast: 12\n")
    assert read_config_file(merged)["params"] == {"fast": 12, "slow": 30}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n", "---\n"])
def test_an_empty_config_is_refused_not_run_with_every_default(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    _refused_in_one_line(genesis("backtest", "-c", str(path), "--out", str(tmp_path / "r.json")), "empty.yaml: the config is empty")
    assert not (tmp_path / "r.json").exists()


def test_types_are_strict(tmp_path):
    """A refused value is named as YAML gave it: `fast: "10"`, `fast: 10.5` and `fast: ~` each said
    `Input should be a valid integer` alone, and a quoted number looks like a number in the file."""
    base = read_config_file(ROOT / "configs" / "sma_cross.yaml")
    for value, given in [(True, "true"), ("10", "'10' (a number in quotes, read as text)"), (10.5, "10.5"), (None, "null"),
                         ("ten", "'ten' (text)"), ([10], "a list"), ({"a": 1}, "a mapping")]:
        with pytest.raises(ConfigError) as refused:
            build_config({**base, "params": {**base["params"], "fast": value}})
        assert str(refused.value) == f"invalid configuration: params.fast: Input should be a valid integer, not {given}"
    assert build_config({**base, "params": {**base["params"], "fast": 10}}).params["fast"] == 10
    assert build_config(base, overrides={"costs": {"fee_bps": 5}}).costs.fee_bps == 5.0  # an int is a float
    with pytest.raises(ConfigError, match="meta.n_workers: Input should be a valid integer"):
        load_study_config(write_config(tmp_path, meta={"n_workers": "2"}))
    with pytest.raises(ConfigError, match=r"meta.stop.max_trials: Input should be a valid integer"):
        load_study_config(write_config(tmp_path, meta={"stop": {"max_trials": True}}))


def test_numbers_are_read_as_yaml_1_2_reads_them(tmp_path):
    """YAML 1.1 read 1e6, 1.0e6 and 1e-4 as text (it wants a dot and a signed exponent), which
    strict types then refused as "not a valid number": what Optuna's users write for a log range.
    And it read 010 as 8 (octal) and 1:30 as 90 (base 60), silently: 010 is 10, 1:30 text."""
    path = tmp_path / "e.yaml"
    path.write_text("a: [1e6, 1.0e6, 1E+6, -3e-2, 1e-4, .5, -.5, 10, 1_000, 2021-01-01, 1.2.3, 1e6x, 12e]\n"
                    "b: [010, 09, -010, 0o17, 0x1f, 0b101, 1:30, 1:30.5, 0x]\n")
    read = read_config_file(path)
    assert read["a"] == [1e6, 1e6, 1e6, -0.03, 1e-4, 0.5, -0.5, 10, 1000, "2021-01-01", "1.2.3", "1e6x", "12e"]
    assert [type(v) for v in read["a"][7:9]] == [int, int]
    assert read["b"] == [10, 9, -10, 15, 31, 5, "1:30", "1:30.5", "0x"]
    sma = (ROOT / "configs" / "sma_cross.yaml").read_text().replace("initial_equity: 10000", "initial_equity: 1e6")
    (tmp_path / "sma.yaml").write_text(sma.replace("data/", f"{ROOT}/data/"))
    assert build_config(read_config_file(tmp_path / "sma.yaml")).costs.initial_equity == 1_000_000.0
    opt = tmp_path / "opt.yaml"
    opt.write_text(write_config(tmp_path).read_text().replace("parameters:", "parameters:\n  thresholds.min_edge: {type: float, low: 1e-3, high: 1e-1, log: true}", 1))
    assert load_study_config(opt).parameters["thresholds.min_edge"].low == 0.001


def test_a_word_yaml_reads_as_a_boolean_is_refused_saying_so(tmp_path):
    """YAML reads an unquoted yes, no, on or off as true or false (the "Norway problem": a symbol
    NO, a choice on): refused with "Input should be a valid string" alone, the user saw no
    string missing. Said now, where a word was expected; a boolean key takes them as before."""
    reference = (ROOT / "configs" / "reference.yaml").read_text()
    path = tmp_path / "on.yaml"
    path.write_text(reference.replace("symbol: BTCUSD ", "symbol: ON ").replace("data/", f"{ROOT}/data/"))
    with pytest.raises(ConfigError) as refused:
        build_config(read_config_file(path))
    assert str(refused.value) == ("invalid configuration: data.symbol: Input should be a valid string, not true: YAML reads an "
                                  "unquoted yes, no, on or off as true or false: quote it")
    path.write_text(reference.replace("symbol: BTCUSD ", "symbol: 'ON' ").replace("data/", f"{ROOT}/data/"))
    assert build_config(read_config_file(path)).data.symbol == "ON"
    pruner = tmp_path / "pruner.yaml"  # one of some words: pruning turned "off"
    pruner.write_text(write_config(tmp_path).read_text().replace("meta:", "meta:\n  pruner: {name: off}", 1))
    with pytest.raises(ConfigError, match=r"meta.pruner.name: Input should be 'none', 'median' or 'hyperband', not false: YAML reads "
                                          r"an unquoted yes, no, on or off as true or false: quote it$"):
        load_study_config(pruner)
    with pytest.raises(ConfigError, match=r"params.fast: Input should be a valid integer, not true$"):  # a number expected: no word
        build_config({**read_config_file(ROOT / "configs" / "sma_cross.yaml"), "params": {"fast": True, "slow": 20}})


def test_paths_a_config_names_from_the_home_folder_are_read_as_a_shell_reads_them(tmp_path, monkeypatch):
    """`data.path: ~/candles.csv.gz` was "not found", and `results_dir: ~/results` made a folder
    named `~` where genesis ran (the next `rm -rf ~/...` typed to clear it is the user's home)."""
    import shutil

    from tests.conftest import BTC_FILE

    home, work = tmp_path / "home", tmp_path / "work"
    (home / "candles").mkdir(parents=True)
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    shutil.copyfile(BTC_FILE, home / "candles" / "btc.csv.gz")
    model = home / "m.json"
    shutil.copyfile(ROOT / "src" / "genesis_core" / "strategy" / "models" / "btcusd_1h.json", model)
    base = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text())
    base["data"]["path"], base["params"]["model"] = "~/candles/btc.csv.gz", "~/m.json"
    (home / "base.yaml").write_text(yaml.safe_dump(base))
    built = build_config(read_config_file(home / "base.yaml"))
    assert (built.data.path, built.params["model"]) == (str(home / "candles" / "btc.csv.gz"), str(model))
    assert build_config({**base, "workdir": "~"}).workdir == str(home)  # where its relative paths are read from
    path = write_config(tmp_path, meta={"base_config": "~/base.yaml", "data": "~/candles/btc.csv.gz", "results_dir": "~/results",
                                        "stop": {"max_trials": 3}})
    study = load_study_config(path)
    assert (study.meta.base_config, study.meta.data, study.meta.results_dir) == \
        (str(home / "base.yaml"), str(home / "candles" / "btc.csv.gz"), str(home / "results"))
    summary = optimize(path)
    assert summary["run_dir"] == str(home / "results" / "runs" / "t") and summary["cache"]["total_trials"] == 3
    assert list(work.iterdir()) == [work / ".cache"]  # no folder named ~ here; the candles' and features' cache, as always


def test_a_path_holding_a_nul_character_is_refused_naming_its_key(tmp_path):
    """YAML's "\\0" puts a NUL character in a string, which no path can hold: a backtest of such a
    data.path ended in a traceback, `ValueError: embedded null byte`."""
    config = tmp_path / "nul.yaml"
    config.write_text('strategy: sma_cross\ndata: {path: "data/a\\0b.csv"}\nparams: {fast: 10, slow: 20}\n')
    _refused_in_one_line(genesis("backtest", "-c", str(config)),
                         "error: invalid configuration: data.path: 'data/a\\x00b.csv' holds a NUL character (\\0), which no path can")
    for key in ("base_config", "data", "results_dir", "storage"):  # a storage's passed preflight, then ended optimize so
        with pytest.raises(ConfigError, match=re.escape(f"meta.{key}: {'x' + chr(0)!r} holds a NUL character")):
            load_study_config(write_config(tmp_path, meta={key: "x\0"}))


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_a_config_not_in_utf8_is_refused_naming_the_file(tmp_path, encoding):
    path = tmp_path / "enc.yaml"
    path.write_bytes("strategy: reference  # Größe\nparams: {}\n".encode(encoding))
    with pytest.raises(ConfigError, match=r"enc.yaml: not UTF-8 text \(line 1, byte \d+\); save it as UTF-8"):
        read_config_file(path)
    _refused_in_one_line(genesis("backtest", "-c", str(path)), "not UTF-8 text")
    path.write_bytes("\ufeffstrategy: sma_cross\n".encode())  # a byte-order mark is still UTF-8
    assert read_config_file(path) == {"strategy": "sma_cross"}


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN"])
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path, value):
    path = tmp_path / "nf.yaml"
    path.write_text(f"strategy: reference\nparams:\n  risk:\n    risk_map: [[0.5, 0.2], [0.6, {value}]]\n")
    with pytest.raises(ConfigError, match=r"nf.yaml: params.risk.risk_map.1.1: NaN and infinity are not config values"):
        read_config_file(path)
    opt = write_config(tmp_path, constraints={"max_drawdown": float(value.replace(".", "", 1).replace("NaN", "nan"))})
    _refused_in_one_line(genesis("optimize", str(opt)), "constraints.max_drawdown: NaN and infinity")


def test_an_integer_past_64_bits_is_refused_naming_the_key_and_the_largest_runs_as_written(tmp_path):
    """A 31-digit ``max_bars_held`` ended `genesis backtest` in numba's TypingError ("Int value is
    too large") with a 60-line traceback, and a space reaching past 2**63 ended preflight in
    orjson's "Integer exceeds 64-bit range" (its crash record's key), as it would a sweep's batch."""
    reference = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text())
    reference["data"]["path"] = str(ROOT / reference["data"]["path"])
    reference["data"].update(start="2022-01-01", end="2022-06-30")
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(reference).replace("max_bars_held: 24", f"max_bars_held: {10**30}"))
    key = f"params.exits.max_bars_held: {10**30} is past the 64-bit integers Genesis-Core computes with"
    with pytest.raises(ConfigError, match=f"big.yaml: {key}"):
        read_config_file(path)
    _refused_in_one_line(genesis("backtest", "-c", str(path)), f"big.yaml: {key}")
    with pytest.raises(ConfigError, match=f"^invalid configuration: {key}"):  # data from a program or an assistant: no file
        build_config(reference, overrides={"params": {"exits": {"max_bars_held": 10**30}}})
    opt = write_config(tmp_path, parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 2**63}})
    _refused_in_one_line(genesis("optimize", str(opt)), f"parameters.exits.max_bars_held.high: {2**63} is past the 64-bit")
    path.write_text(yaml.safe_dump(reference).replace("max_bars_held: 24", f"max_bars_held: {2**63 - 1}"))
    held = build_config(reference, overrides={"params": {"exits": {"max_bars_held": 10**6}}})  # longer than the window
    assert Backtester().run(build_config(read_config_file(path))).metrics == Backtester().run(held).metrics


def test_a_run_whose_time_is_up_before_its_first_trial_says_so_and_its_study_goes_on(tmp_path):
    """A session that ran no trial wrote trials.csv as an empty line, which its own end then read
    as 'line 1 names no number column: not a trials table' (exit 2), as did `runs show`, `report`
    and `validate` of the run until a later session ran a trial; `backtest --trial` said its
    trials were '0..-1'."""
    proc = genesis("optimize", str(write_config(tmp_path, meta={"stop": {"max_trials": 6, "timeout_seconds": 0.001}})))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    said = " ".join(proc.stderr.split())
    assert ("error: the study has no evaluated trial (none ran: the run's time (meta.stop: timeout_seconds or end_at) was up "
            "before its first); nothing to validate or promote") in said, said
    run = tmp_path / "results" / "runs" / "t"
    assert RunFolder(run).read_trials_table() == [] and (run / "trials.csv").read_text().startswith("number,state,")
    shown = genesis("runs", "show", str(run))
    assert shown.returncode == 0 and "0 trials" in shown.stdout, shown.stdout + shown.stderr
    assert genesis("report", str(run)).returncode == 0 and (run / "report.html").exists()
    _refused_in_one_line(genesis("backtest", "--trial", f"{run}:0"), "has no trial 0 (it has none yet)")  # not "0..-1"
    later = optimize(write_config(tmp_path, meta={"stop": {"max_trials": 6}}))
    assert later["cache"]["total_trials"] == 6 and len(RunFolder(run).read_trials_table()) == 6


def test_alias_bombs_and_huge_files_are_refused(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    (tmp_path / "bomb.yaml").write_text(laughs)
    with pytest.raises(ConfigError, match="more than 100,000 values once aliases are expanded"):
        read_config_file(tmp_path / "bomb.yaml")
    (tmp_path / "big.yaml").write_text("a: " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1,048,576 bytes"):
        read_config_file(tmp_path / "big.yaml")


def _journal_studies(results: Path) -> list[str]:
    journal = results / "optuna.journal"
    if not journal.exists():
        return []
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return [s.study_name for s in storage.get_all_studies()]


@pytest.mark.parametrize(("stop", "message"), [
    ({"end_at": "tomorrow"}, "meta.stop.end_at: cannot parse date 'tomorrow'"),
    ({"max_trials": 5, "end_at": "2020-01-01T00:00:00Z"}, "meta.stop.end_at 2020-01-01T00:00:00Z has passed"),
    ({"max_trials": None}, "meta.stop: set max_trials, timeout_seconds or end_at, or the run never ends"),
])
def test_the_stop_policy_is_checked_before_a_study_exists(tmp_path, stop, message):
    path = write_config(tmp_path, meta={"stop": stop})
    proc = genesis("preflight", str(path), "--json")
    assert proc.returncode == 1
    failed = [c for c in json.loads(proc.stdout)["checks"] if c["status"] == "fail"]
    assert len(failed) == 1 and message in failed[0]["detail"]
    for extra in ([], ["--skip-preflight"]):
        refused = genesis("optimize", str(path), *extra)
        assert refused.returncode in (1, 2) and message in refused.stderr and "Traceback" not in refused.stderr
    assert _journal_studies(tmp_path / "results") == [] and not (tmp_path / "results" / "runs").exists()
    if "max_trials" in stop and stop["max_trials"] is None:  # the command line can give the budget
        assert optimize(path, RunOptions(max_trials=3))["cache"]["total_trials"] == 3


@pytest.mark.parametrize(("args", "message"), [
    (("sweep", "--method", "grid", "--levels", "1"), "--levels must be 2 or more"),  # was a ZeroDivisionError
    (("sweep", "--method", "grid", "--levels", "0"), "--levels must be 2 or more"),  # was an empty run, exit 0
    (("sweep", "--seed", "-1"), "--seed must be 0 or more, not -1"),  # was numpy's ValueError for Sobol
    (("sweep", "--method", "latin"), "--method latin: use grid, random, sobol"),
    (("sweep", "--workers", "0"), "--workers must be 1 or more, not 0"),  # was every core
    (("optimize", "--workers", "-1"), "--workers must be 1 or more, not -1"),  # was a session "with -1 worker(s)"
    (("optimize", "--max-trials", "0"), "--max-trials must be 1 or more, not 0"),
    (("walk-forward", "--max-trials", "-2"), "--max-trials must be 1 or more, not -2"),
])
def test_a_count_that_would_run_nothing_or_fail_midway_is_refused_before_anything_is_written(tmp_path, args, message):
    command, *options = args
    path = write_config(tmp_path)
    _refused_in_one_line(genesis(command, str(path), *options, cwd=tmp_path), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.yaml"]


def _batched(**kwargs) -> dict:
    return {"sampler": {"name": "tpe-batched", "kwargs": kwargs}}


_REFUSED = "meta.sampler: tpe-batched does not accept these kwargs: batch must be a whole number, 1 or more, not "


@pytest.mark.parametrize(("meta", "message"), [
    (_batched(batch=0), _REFUSED + "0"),
    (_batched(batch="x"), _REFUSED + "'x'"),  # was "'<' not supported between instances of 'str' and 'int'"
    (_batched(batch=True), _REFUSED + "True"),
    (_batched(bach=4), "meta.sampler.kwargs.bach: tpe-batched takes no such argument; did you mean 'batch'?"),  # was TPE's TypeError
    (_batched(n_startup=4), "meta.sampler.kwargs.n_startup: tpe-batched takes no such argument; did you mean 'n_startup_trials'?"),
    ({"pruner": {"name": "median", "kwargs": {"n_warmup": 3}}},
     "meta.pruner.kwargs.n_warmup: median takes no such argument; did you mean 'n_warmup_steps'?"),
])
def test_bad_sampler_or_pruner_kwargs_are_refused_in_one_line_with_no_progress_bar_and_nothing_written(tmp_path, meta, message):
    path = write_config(tmp_path, meta=meta)
    proc = genesis("optimize", str(path), "--skip-preflight", cwd=tmp_path)
    _refused_in_one_line(proc, message)
    assert proc.stderr.startswith("error:") and len(proc.stderr.splitlines()) == 1  # the bar drawn before the refusal is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.yaml"]


def test_categorical_choices_may_be_whole_mappings(tmp_path):
    zones = [{"low": {"entry_conf_overall": lo, "regime_proba": {}}, "mid": {"entry_conf_overall": mid, "regime_proba": {}},
              "high": {"entry_conf_overall": hi, "regime_proba": {"bull": 0.55}}}
             for lo, mid, hi in [(0.52, 0.54, 0.56), (0.55, 0.57, 0.6)]]
    path = write_config(tmp_path, parameters={
        "thresholds.signal_adaptation.zones": {"type": "categorical", "choices": zones},
        "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 3.0, "step": 0.5}}, meta={"stop": {"max_trials": 8}})
    summary = optimize(path)
    folder = Path(summary["run_dir"])
    seen = set()
    for artifact in sorted((folder / "trials").iterdir()):
        trial = json.loads(artifact.read_text())
        chosen = trial["params"]["thresholds.signal_adaptation.zones"]
        applied = trial["effective_config"]["params"]["thresholds"]["signal_adaptation"]["zones"]
        assert chosen in zones and all(applied[z]["entry_conf_overall"] == chosen[z]["entry_conf_overall"] for z in chosen)
        assert applied["high"]["regime_proba"]["bull"] == 0.55 and applied["low"]["regime_proba"]["bull"] == 0.5
        seen.add(json.dumps(chosen, sort_keys=True))
    assert len(seen) == 2  # both mappings were tried, each applied whole
    with pytest.raises(ConfigError, match="is given twice"):
        load_study_config(write_config(tmp_path, parameters={
            "thresholds.signal_adaptation.zones": {"type": "categorical", "choices": [zones[0], dict(zones[0])]},
            "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 3.0}}))
    text = yaml.safe_dump({"type": "categorical", "choices": ["[1,2]", [1, 2]]})
    clash = write_config(tmp_path, parameters={"risk.risk_map.0": yaml.safe_load(text),
                                               "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 3.0}})
    with pytest.raises(ConfigError, match="a choice and another's JSON text are the same"):
        load_study_config(clash).spec()


@pytest.mark.parametrize("timeframe", ["7x", "1M"])
def test_a_bad_timeframe_is_refused_as_the_config_is_read_naming_its_key(tmp_path, timeframe):
    """A timeframe was checked only when the candles were loaded: "error: bad timeframe '7x'", no
    key, no file, and preflight stopped with that line instead of its table."""
    backtest = tmp_path / "bt.yaml"
    backtest.write_text(yaml.safe_dump({**read_config_file(ROOT / "configs" / "sma_cross.yaml"),
                                        "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                                                 "timeframe": timeframe}}))
    _refused_in_one_line(genesis("backtest", str(backtest)), f"data.timeframe: bad timeframe '{timeframe}'")
    study = write_config(tmp_path, meta={"timeframe": timeframe})
    _refused_in_one_line(genesis("sweep", str(study), "--skip-preflight", cwd=tmp_path), f"meta.timeframe: bad timeframe '{timeframe}'")
    checked = genesis("preflight", str(study), "--json", cwd=tmp_path)
    assert checked.returncode == 1, checked.stderr
    config = next(c for c in json.loads(checked.stdout)["checks"] if c["name"] == "config")
    assert config["status"] == "fail" and f"meta.timeframe: bad timeframe '{timeframe}'" in config["detail"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bt.yaml", "opt.yaml"]


def test_an_output_path_a_file_or_folder_blocks_is_one_line_naming_it(tmp_path):
    """`--out` under a file, `--out` a folder, a results_dir that is a file: each ended in a
    NotADirectoryError, IsADirectoryError or FileExistsError traceback, naming a writer's temporary
    file at best. Now one line naming the path in the way, exit 2, and the file as it was."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    cases = [
        (("backtest", "configs/sma_cross.yaml", "--out", str(blocker / "r.json")),
         f"error: {blocker} is a file, where a folder is needed (for {blocker / 'r.json'})\n"),
        (("backtest", "configs/sma_cross.yaml", "--out", str(tmp_path)), f"error: {tmp_path} is a folder, where a file is needed\n"),
        (("optimize", str(write_config(tmp_path, meta={"results_dir": str(blocker)})), "--skip-preflight"),
         f"error: {blocker} is a file, where a folder is needed\n"),
        (("sweep", str(tmp_path / "opt.yaml"), "--points", "2", "--skip-preflight"), f"error: {blocker} is a file, where a folder is needed\n"),
        (("backtest", "configs/sma_cross.yaml", "--out", "/proc/genesis-r.json"),  # a folder no file can be made in
         "error: /proc/genesis-r.json: No such file or directory\n"),
    ]
    for args, line in cases:
        proc = genesis(*args)
        assert (proc.returncode, proc.stderr) == (2, line), proc.stderr[-3000:]
    assert blocker.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "opt.yaml"]

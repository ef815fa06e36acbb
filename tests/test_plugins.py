"""Plugins by name: score functions, samplers and features, each with an error listing the known names."""

from __future__ import annotations

import csv
import html
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from genesis_core.errors import ConfigError
from genesis_core.features import FeatureStore, feature_names, register_feature
from genesis_core.optimizer import RunOptions, SamplerConfig, StudySpec, SweepOptions, sweep
from genesis_core.optimizer._samplers import PhasedSampler
from genesis_core.scoring import Constraints, Scoring, score
from genesis_core.study import load_study_config
from tests.optimizer.test_optimizer import ROOT, _trials, write_config
from tests.runs import genesis, optimize
from tests.scoring_functions import return_over_drawdown

METRICS = {"total_return": 0.12, "max_drawdown": 0.08, "profit_factor": 1.4, "num_trades": 40, "max_loss_streak": 3,
           "avg_bars_held": 6.0, "classic_score": 1.7, "sharpe": 1.1}
TRACE = {"bars_in_window": 2000, "signals": 100, "candidates": 50}


def test_a_user_score_function_by_module_and_name(tmp_path):
    user = Scoring(objective="tests.scoring_functions:return_over_drawdown")
    assert score(METRICS, TRACE, user, Constraints()).production == pytest.approx(150.0)
    assert score(METRICS, TRACE, user, Constraints(min_trades=50)).production == pytest.approx(150.0 - 100.0)  # penalties apply
    path = write_config(tmp_path, scoring={"phase1": {"trials": 2}, "objective": "tests.scoring_functions:return_over_drawdown"})
    rows = [r for r in _trials(optimize(path)) if r["cached"] == "False"]
    for r in rows:  # the optimizer's phase-2 scores are the user's function of each trial's metrics
        expected = return_over_drawdown({"total_return": float(r["total_return"]), "max_drawdown": float(r["max_drawdown"])},
                                        {}, Scoring())
        assert float(r["production_score"]) == pytest.approx(expected)


def test_score_function_errors_name_the_known_ones_and_refuse_non_numbers():
    with pytest.raises(ConfigError, match=r"unknown score function 'prodution'; did you mean 'production'\? known: classic, production"):
        Scoring(objective="prodution")
    with pytest.raises(ConfigError, match="cannot import nope from tests.scoring_functions"):
        Scoring(objective="tests.scoring_functions:nope")
    with pytest.raises(ConfigError, match="returned nan; a score must be a finite number"):
        score(METRICS, TRACE, Scoring(objective="tests.scoring_functions:not_a_number"), Constraints())
    # sys.exit() in a user's function is a fault of the trial too: it ended the run, its trials unrecorded
    with pytest.raises(ConfigError, match=r"^scoring.objective 'tests.scoring_functions:exits' raised SystemExit: an even trade "
                                          r"count at \S+/tests/scoring_functions.py:\d+, in exits$"):
        score({**METRICS, "num_trades": 4}, TRACE, Scoring(objective="tests.scoring_functions:exits"), Constraints())


def test_a_user_score_function_that_raises_fails_those_trials_saying_where_and_the_run_keeps_its_records(tmp_path):
    """A score function that divides by zero for some metrics (an even trade count): the exception
    ended `genesis optimize` with a traceback and no run folder. Now each such trial fails with the
    exception and the user's line, the others complete with the user's score, and the records are written."""
    path = write_config(tmp_path, meta={"fail_streak_limit": 10},
                        scoring={"phase1": {"trials": 2}, "objective": "tests.scoring_functions:per_odd_trade"})
    rows = _trials(summary := optimize(path))
    failed = [r for r in rows if r["state"] == "FAIL"]
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["cached"] == "False"]
    raised = (r"scoring.objective 'tests.scoring_functions:per_odd_trade' raised ZeroDivisionError: float division by zero "
              r"at \S+/tests/scoring_functions.py:\d+, in per_odd_trade")
    assert failed and all(re.fullmatch(raised, r["fail_reason"]) for r in failed)
    assert complete and all(int(r["num_trades"]) % 2 == 1 for r in complete)
    assert all(float(r["production_score"]) == pytest.approx(100.0 * float(r["total_return"])) for r in complete if int(r["phase"]) == 2)
    assert re.search(f"{len(failed)} trial\\(s\\) failed \\(trials.csv fail_reason\\): {len(failed)}× {raised}", summary["warnings"][0])


def test_samplers_by_name_or_class_with_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown sampler 'tpee'; did you mean 'tpe'\? known: cmaes, gp, grid, qmc, random, tpe"):
        SamplerConfig(name="tpee")
    with pytest.raises(ConfigError, match="is the class optuna.pruners._median.MedianPruner, not an optuna.samplers.BaseSampler subclass"):
        SamplerConfig(name="optuna.pruners:MedianPruner")
    path = write_config(tmp_path, meta={"sampler": {"name": "optuna.samplers:TPESampler", "kwargs": {"seed": 3}}})
    spec: StudySpec = load_study_config(path).spec()
    phased = spec.sampler()  # phase 1 chooses in a companion study, with a sampler of the same kind
    assert isinstance(phased, PhasedSampler) and isinstance(phased.main, optuna.samplers.TPESampler)
    assert isinstance(phased.feasibility, optuna.samplers.TPESampler)
    blind = write_config(tmp_path, "random.yaml", meta={"sampler": {"name": "optuna.samplers:RandomSampler", "kwargs": {"seed": 3}}})
    assert isinstance(load_study_config(blind).spec().sampler(), optuna.samplers.RandomSampler)  # reads no score: no companion
    qmc = write_config(tmp_path, "qmc.yaml", meta={"sampler": {"name": "qmc", "kwargs": {"seed": 3}}},
                       scoring={"phase1": {"trials": 0}})
    assert isinstance(load_study_config(qmc).spec().sampler(), optuna.samplers.QMCSampler)  # no phase 1: unwrapped


def test_a_user_sampler_s_keywords_are_checked_only_where_its_signature_names_them(tmp_path):
    """A keyword a class's signature does not name is refused before the run with the closest one it
    does; a user class taking ``**kwargs`` (it may take any keyword from them) or one without a
    readable signature is given its keywords and says itself what it refuses."""
    def sampler(name: str, kwargs: dict) -> optuna.samplers.BaseSampler:
        path = write_config(tmp_path, meta={"sampler": {"name": f"tests.user_samplers:{name}", "kwargs": kwargs}},
                            scoring={"phase1": {"trials": 0}})
        return load_study_config(path).spec().sampler()

    assert sampler("TakesAnyKeyword", {"jitter": 0.5, "seed": 1}).jitter == 0.5
    assert sampler("NoSignature", {"seed": 1}).__class__.__name__ == "NoSignature"
    assert sampler("NamesItsKeywords", {"jitter": 0.25}).jitter == 0.25
    with pytest.raises(ConfigError, match=r"meta.sampler.kwargs.jiter: tests.user_samplers:NamesItsKeywords takes no such "
                                          r"argument; did you mean 'jitter'\?"):
        sampler("NamesItsKeywords", {"jiter": 0.25})
    with pytest.raises(ConfigError, match="does not accept these kwargs: .*unexpected keyword argument 'jiter'"):
        sampler("NoSignature", {"jiter": 0.25})


def test_a_user_feature_through_the_public_decorator(btc_year):
    @register_feature("close_over_open", "close_over_open:bars", lambda base_seconds, bars: bars - 1)
    def close_over_open(store: FeatureStore, bars: int) -> np.ndarray:
        c, o = store.candles.close, store.candles.open
        out = np.full(len(c), np.nan)
        out[bars - 1:] = c[bars - 1:] / o[: len(o) - bars + 1] - 1.0
        return out

    assert feature_names()["close_over_open"] == "close_over_open:bars"
    values = FeatureStore(btc_year).get("close_over_open:3")
    assert math.isnan(values[1]) and values[2] == pytest.approx(btc_year.close[2] / btc_year.open[0] - 1.0)
    with pytest.raises(ConfigError, match="feature 'rsi' is already registered"):
        register_feature("rsi", "rsi:period", lambda b, p: p)(close_over_open)
    with pytest.raises(ConfigError, match="unknown feature 'close_over_opn'"):
        FeatureStore(btc_year).get("close_over_opn:3")


def test_a_user_feature_declared_local_is_cut_from_the_widest_window_and_one_that_is_not_local_is_refused(btc_year):
    """Windows that end at the same bar cut a local feature from the widest. A user's feature that is
    truly local gives the same values either way; one declared local that carries state from where
    the candles start (an exponential average) is refused, naming it, the first time a window cuts
    it, instead of giving results that depend on which window came first."""
    from genesis_core.features import Span

    @register_feature("hl_range", "hl_range:bars", lambda base_seconds, bars: bars - 1, local=True)
    def hl_range(store: FeatureStore, bars: int) -> np.ndarray:
        c = store.candles
        out = np.full(len(c), np.nan)
        for t in range(bars - 1, len(c)):
            out[t] = c.high[t - bars + 1:t + 1].max() / c.low[t - bars + 1:t + 1].min() - 1.0
        return out

    @register_feature("decayed_close", "decayed_close:alpha", lambda base_seconds, alpha: 0, local=True)
    def decayed_close(store: FeatureStore, alpha: float) -> np.ndarray:
        out = np.empty(len(store.candles))
        level = store.candles.close[0]
        for t, close in enumerate(store.candles.close):
            level = alpha * close + (1 - alpha) * level
            out[t] = level
        return out

    span = Span()
    FeatureStore(btc_year.slice(0, 800), span=span, first=0)
    narrow = FeatureStore(btc_year.slice(300, 800), span=span, first=300)
    assert narrow.get("hl_range:24").tobytes() == FeatureStore(btc_year.slice(300, 800)).get("hl_range:24").tobytes()
    assert span.checked == {"hl_range:24"}
    with pytest.raises(ConfigError, match=r"feature 'decayed_close:0.1' is registered local=True, but .*\(first at the "
                                          r"window's bar 0\): .* register it without local=True"):
        narrow.get("decayed_close:0.1")


def test_a_user_feature_of_another_length_than_the_candles_is_refused_naming_it(btc_year):
    """A strategy reads a feature bar by bar: one shorter than the candles was read past its end."""
    @register_feature("clipped_close", "clipped_close:bars", lambda base_seconds, bars: 0)
    def clipped_close(store: FeatureStore, bars: int) -> np.ndarray:
        return store.candles.close[:-bars] if bars else np.stack([store.candles.close] * 2)

    n = len(btc_year)
    with pytest.raises(ConfigError, match=rf"feature 'clipped_close:3' computed values of shape \({n - 3},\) for {n:,} bars: "
                                          "one value a bar"):
        FeatureStore(btc_year).get("clipped_close:3")
    with pytest.raises(ConfigError, match=rf"shape \(2, {n}\) for {n:,} bars"):
        FeatureStore(btc_year).get("clipped_close:0")


MISBEHAVING = {
    "a tuple": "returned a tuple from decide, not a genesis_core.strategy.Decisions",
    "None": "returned None from decide, not a genesis_core.strategy.Decisions",
    "a trace of a dict": "returned a dict as its decisions' trace, not a genesis_core.strategy.StrategyTrace",
    "candidates 3.5": "counted 3.5 as its trace's candidates: a whole number, 0 or more",
    "signals -1": "counted -1 as its trace's signals: a whole number, 0 or more",
    "blocked list": r"counted \[\('cooldown', 1\)\] as its trace's blocked: a dict of counts by reason",
    "blocked 'many'": r"counted 'many' as its trace's blocked\['cooldown'\]: a whole number, 0 or more",
    "warmup -5": "returned -5 from warmup_bars: a whole number of bars, 0 or more",
    "warmup 20.5": "returned 20.5 from warmup_bars: a whole number of bars, 0 or more",
    "warmup True": "returned True from warmup_bars: a whole number of bars, 0 or more",
    "raises": r"raised ZeroDivisionError: division by zero at \S+/tests/strategy/misbehaving_strategy.py:\d+, in decide",
    "exits": r"raised SystemExit: 3 at \S+/tests/strategy/misbehaving_strategy.py:\d+, in decide",
    "warmup raises": r"raised KeyError: 'ema' at \S+/tests/strategy/misbehaving_strategy.py:\d+, in warmup_bars",
    "resources raises": r"raised KeyError: 'model' at \S+/tests/strategy/misbehaving_strategy.py:\d+, in resources",
    "resources ints": r"returned a dict from resources, not a dict of names to fingerprints \(str to str\)",
}


@pytest.mark.parametrize("bug", list(MISBEHAVING))
def test_what_a_user_strategy_returns_that_is_not_what_it_must_is_refused_in_one_line_naming_it(tmp_path, monkeypatch, bug):
    """Each ended in a traceback from inside Genesis-Core (an AttributeError in the engine, a
    TypeError slicing the window, a pydantic error about the result record), or, for a negative
    warm-up, in a backtest run from bar -5: the window's last five bars first. An exception the
    strategy raises is said in one line naming its line. The same strategy without the bug runs."""
    monkeypatch.chdir(tmp_path)
    strategy = "tests.strategy.misbehaving_strategy:Misbehaving"

    def backtest(params: dict) -> object:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"strategy": strategy, "params": params,
                                        "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                                                 "start": "2022-03-01", "end": "2022-05-31"}}))
        return genesis("backtest", "--config", str(path), "--json")

    good = backtest({})
    assert good.returncode == 0 and json.loads(good.stdout)["metrics"]["num_trades"] > 10
    out = backtest({"bug": bug})
    assert out.returncode == 1 and re.fullmatch(f"error: strategy '{strategy}' {MISBEHAVING[bug]}\n", out.stderr), out.stderr


@pytest.mark.parametrize("bug", ["peeks at the next bar", "the window's mean"])
def test_a_strategy_that_reads_bars_after_the_one_it_decides_on_fails_preflight_and_the_backtest_warns(tmp_path, monkeypatch, bug):
    """A user strategy that decides a bar on the next bar's close (a shift the wrong way), or on the
    mean of the window's closes (a statistic of bars to come): its backtests are fiction (the first
    returns several times the market's moves), and neither preflight nor the backtest said so. Each
    is now decided again on the window cut short; the first decision that changes is named."""
    from genesis_core.data import format_ts, load_candles

    monkeypatch.chdir(tmp_path)
    strategy = "tests.strategy.misbehaving_strategy:Misbehaving"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"strategy": strategy, "params": {"bug": bug},
                                    "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                                             "start": "2022-03-01", "end": "2022-05-31"}}))
    ran = genesis("backtest", "--config", str(path), "--out", str(tmp_path / "r.json"))
    window = load_candles(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz").window("2022-03-01", "2022-05-31", 20).decisions
    half = format_ts(window.timestamps[len(window) // 2 - 1])  # the first cut: after half the decision bars
    said = re.search(r"warning: lookahead: its side at (\S+) is (-?\d) on the window's bars up to 2022-05-31T23:00:00Z, "
                     rf"(-?\d) on those up to {half}: a decision read bars after its own", ran.stderr.replace("\n", ""))
    assert ran.returncode == 0 and said, ran.stderr
    assert said[2] != said[3] and said[1] <= half
    if bug == "peeks at the next bar":  # it knew the next close: the cut's last bar, which has none, is where it differs
        assert said[1] == half and said[3] == "0"
        assert json.loads((tmp_path / "r.json").read_text())["metrics"]["total_return"] > 10  # +1,000% in three months
    base = tmp_path / "bug.yaml"
    for choice in (bug, "none"):
        base.write_text(yaml.safe_dump({"strategy": strategy, "params": {"bug": choice}}))
        config = write_config(tmp_path, meta={"base_config": str(base)}, parameters={"period": {"type": "categorical", "choices": [10, 20]}})
        checks = {c["name"]: c for c in json.loads(genesis("preflight", str(config), "--json").stdout)["checks"]}
        check = checks["lookahead"]
        if choice == "none":
            assert check["status"] == "pass" and "at 3 point(s) of the space" in check["detail"]
            assert "cut short after 50% and 80% of its bars" in check["detail"]
        else:
            assert check["status"] == "fail" and check["detail"].startswith(f"at the base point, its side at {said[1]} is {said[2]}"), check
    # a strategy that peeks for some values only: the base point (bug none) does not, a seeded random point of the space does
    config = write_config(tmp_path, meta={"base_config": str(base)}, parameters={
        "bug": {"type": "categorical", "choices": ["none", bug]}, "period": {"type": "int", "low": 10, "high": 40, "step": 10}})
    check = next(c for c in json.loads(genesis("preflight", str(config), "--json").stdout)["checks"] if c["name"] == "lookahead")
    assert check["status"] == "fail" and check["detail"].startswith(f"at a random point of the space (bug {bug!r}, period "), check
    clean = genesis("backtest", "--config", str(base), "--data", str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                    "--start", "2022-03-01", "--end", "2022-05-31", "--out", str(tmp_path / "c.json"))
    assert clean.returncode == 0 and "lookahead" not in clean.stderr


def test_a_strategy_whose_decisions_are_not_deterministic_is_said_so_not_taken_for_lookahead(tmp_path, monkeypatch):
    """A user strategy drawing unseeded random numbers decides differently on the same bars each
    time: no result of it can be reproduced, and the lookahead check, which compares two decisions,
    would name it a peek. The whole window is decided twice first, and that is what is said."""
    monkeypatch.chdir(tmp_path)
    strategy = "tests.strategy.misbehaving_strategy:Misbehaving"
    base = tmp_path / "bug.yaml"
    base.write_text(yaml.safe_dump({"strategy": strategy, "params": {"bug": "coin flips"},
                                    "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                                             "start": "2022-03-01", "end": "2022-05-31"}}))
    ran = genesis("backtest", "--config", str(base), "--out", str(tmp_path / "r.json"))
    said = re.search(r"warning: lookahead: its side at 2022-0\S+ is (-?\d) in one run and (-?\d) in another on the same bars: "
                     r"its decisions are not deterministic \(no result of it can be reproduced\)", ran.stderr)
    assert ran.returncode == 0 and said and said[1] != said[2], ran.stderr
    config = write_config(tmp_path, meta={"base_config": str(base)}, parameters={"period": {"type": "categorical", "choices": [10, 20]}})
    check = next(c for c in json.loads(genesis("preflight", str(config), "--json").stdout)["checks"] if c["name"] == "lookahead")
    assert check["status"] == "fail" and "its decisions are not deterministic" in check["detail"], check


TRAINED_ON = {
    "trained_on raises": r"raised KeyError: 'fitted' at \S+/tests/strategy/misbehaving_strategy.py:\d+, in trained_on",
    "trained_on None": "returned None from trained_on, not a list of genesis_core.strategy.Training",
    "trained_on dicts": "returned a list from trained_on, not a list of genesis_core.strategy.Training",
}


@pytest.mark.parametrize("bug", list(TRAINED_ON))
def test_what_a_user_strategy_says_it_was_trained_on_that_is_no_training_is_refused_in_one_line(tmp_path, monkeypatch, bug):
    """``trained_on`` is read by the leakage checks of `genesis backtest`, preflight and validation;
    what a user's strategy raised or returned there ended each in a traceback (an AttributeError of
    ``t.symbol``). Now each says it in one line naming the strategy; without the bug, all pass."""
    monkeypatch.chdir(tmp_path)
    strategy = "tests.strategy.misbehaving_strategy:Misbehaving"
    line = f"strategy '{strategy}' {TRAINED_ON[bug]}"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"strategy": strategy, "params": {"bug": bug},
                                    "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                                             "start": "2022-03-01", "end": "2022-05-31"}}))
    ran = genesis("backtest", "--config", str(path))
    assert ran.returncode == 1 and re.fullmatch(f"error: {line}", ran.stderr.strip().splitlines()[-1]), ran.stderr
    base = tmp_path / "bug.yaml"
    for choice, status in ((bug, "fail"), ("none", "pass")):
        base.write_text(yaml.safe_dump({"strategy": strategy, "params": {"bug": choice}}))
        config = write_config(tmp_path, meta={"base_config": str(base)},
                              parameters={"period": {"type": "categorical", "choices": [10, 20]}})
        checked = genesis("preflight", str(config), "--json")
        training = next(c for c in json.loads(checked.stdout)["checks"] if c["name"] == "model training")
        assert training["status"] == status and (status == "pass" or re.fullmatch(line, training["detail"])), training


def test_with_json_what_a_user_strategy_prints_goes_to_stderr_and_stdout_holds_the_json_alone(tmp_path):
    """A user's strategy that prints while it decides (Python's print, and a compiled kernel's
    printf to the process's stdout): its lines came before the JSON of `backtest --json` and
    `optimize --json` (forked workers' too), which then read as no JSON at all."""
    import subprocess
    import sys

    base = tmp_path / "prints.yaml"
    base.write_text(yaml.safe_dump({"strategy": "tests.strategy.misbehaving_strategy:Misbehaving", "params": {"bug": "prints"},
                                    "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                                             "start": "2022-03-01", "end": "2022-05-31"}}))
    path = write_config(tmp_path, meta={"base_config": str(base), "stop": {"max_trials": 4}, "n_workers": 2, "parallel": "free"},
                        parameters={"period": {"type": "categorical", "choices": [10, 20, 30, 40]}})
    for args in (["backtest", str(base), "--out", str(tmp_path / "b.json")], ["optimize", str(path), "--skip-preflight"]):
        run = subprocess.run([sys.executable, "-m", "genesis_core", *args, "--json"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        printed = json.loads(run.stdout)  # the JSON alone
        assert "deciding on" in run.stderr and "a kernel's printf" in run.stderr
        assert printed["metrics"]["num_trades"] > 10 if args[0] == "backtest" else printed["explore"]["states"]["COMPLETE"] == 4
    inside = genesis("backtest", str(base), "--out", str(tmp_path / "b.json"), "--json")  # in this process, as tests run commands
    assert json.loads(inside.stdout) == json.loads((tmp_path / "b.json").read_text()) and "deciding on" in inside.stderr


def test_a_user_strategy_s_exception_fails_its_trials_saying_where_and_the_run_keeps_its_records(tmp_path):
    """A strategy that raises for one choice of its parameters: the exception ended the run with two
    tracebacks (one a worker's) and no records of the trials done. Now each such trial fails with
    the exception and its line as its reason, the others complete, the records are written and
    the summary and the HTML report say how many failed and why; a sweep notes the point as refused,
    with the reason."""
    base = tmp_path / "bug.yaml"
    base.write_text(yaml.safe_dump({"strategy": "tests.strategy.misbehaving_strategy:Misbehaving", "params": {}}))
    space = {"bug": {"type": "categorical", "choices": ["none", "raises"]}}
    raised = (r"strategy 'tests.strategy.misbehaving_strategy:Misbehaving' raised ZeroDivisionError: division by zero "
              r"at \S+/tests/strategy/misbehaving_strategy.py:\d+, in decide")
    path = write_config(tmp_path, meta={"base_config": str(base), "stop": {"max_trials": 6},
                                        "sampler": {"name": "random", "kwargs": {"seed": 1}}}, parameters=space)
    summary = optimize(path, RunOptions(workers=2))
    rows = _trials(summary)
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert failed and all(r["param:bug"] == "raises" and re.fullmatch(raised, r["fail_reason"]) for r in failed)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert len(complete) == 6 and {r["param:bug"] for r in complete} == {"none"}
    assert int(complete[0]["num_trades"]) > 10
    assert re.fullmatch(f"{len(failed)} trial\\(s\\) failed \\(trials.csv fail_reason\\): {len(failed)}× {raised}",
                        summary["warnings"][0]), summary["warnings"]
    with warnings.catch_warnings(record=True) as caught:  # every completed trial scored the same: Optuna warned of it
        warnings.simplefilter("always")
        report = genesis("report", summary["run_dir"])  # the report says what failed too, as the search warned of it
    assert report.returncode == 0 and not [w.message for w in caught if issubclass(w.category, UserWarning)]
    page = html.unescape((Path(summary["run_dir"]) / "report.html").read_text())
    cautions = page.split("<h2>Read with care</h2>")[1].split("<h2>")[0]
    assert f"<p class='note'>{summary['warnings'][0]}</p>" in cautions
    shown = genesis("runs", "show", summary["run_dir"])  # and so does runs show
    assert f"warning: {summary['warnings'][0]}" in " ".join(shown.stderr.split())
    assert "Parameter importances</h2><p class='note'>not available: the top 10% of the completed trials by score" in page
    swept = sweep(load_study_config(write_config(tmp_path, "sweep.yaml", meta={"base_config": str(base), "study_name": "s"},
                                                 parameters=space)).spec(), SweepOptions("grid"))
    assert "1 added" in swept.session.notes[-2]
    assert re.fullmatch(f"sweep: the strategy refused 1 point\\(s\\) \\(not added\\), the first: {raised}",
                        swept.session.notes[-1])


def test_a_run_whose_every_trial_fails_exits_1_saying_so_with_its_records_written(tmp_path):
    """A strategy that raises for every choice: `genesis optimize` ended its fail streak with exit 0
    and `genesis sweep` pointed to the trials to go on from, when there was none; a script then
    validated nothing as if all went well. Now both exit 1, saying the study has no evaluated trial;
    the failed trials are still recorded with their reasons."""
    base = tmp_path / "bug.yaml"
    base.write_text(yaml.safe_dump({"strategy": "tests.strategy.misbehaving_strategy:Misbehaving", "params": {}}))
    space = {"bug": {"type": "categorical", "choices": ["raises", "warmup raises"]}}
    path = write_config(tmp_path, meta={"base_config": str(base), "fail_streak_limit": 6, "stop": {"max_trials": 20}}, parameters=space)
    ran = genesis("optimize", str(path), "--skip-preflight")
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines()[-1] == ("error: the study has no evaluated trial (every trial failed: see the warning "
                                                   "above); nothing to validate or promote")
    with open(tmp_path / "results" / "runs" / "t" / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and all(r["state"] == "FAIL" and " raised " in r["fail_reason"] for r in rows)
    swept = genesis("sweep", str(write_config(tmp_path, "s.yaml", meta={"base_config": str(base), "study_name": "s"}, parameters=space)),
                    "--method", "grid", "--skip-preflight")
    assert swept.returncode == 1 and "next:" not in swept.stdout
    assert " ".join(swept.stderr.split()).endswith("error: the study has no evaluated trial (the strategy refused every point: "
                                                   "see the note above); nothing to validate or promote")
    ok = genesis("sweep", str(write_config(tmp_path, "k.yaml", meta={"base_config": str(base), "study_name": "k"},
                                           parameters={"bug": {"type": "categorical", "choices": ["raises", "none"]}})),
                 "--method", "grid", "--skip-preflight")
    assert ok.returncode == 0 and "next:" in ok.stdout and "1 added" in ok.stderr

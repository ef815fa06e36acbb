"""Explore -> validate on the bundled data: candidates, constraints on every window, ranking, report."""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genesis_core.backtest import BacktestConfig, Backtester, build_config
from genesis_core.errors import ConfigError
from genesis_core.optimizer import SweepOptions, sweep
from genesis_core.optimizer._config import flatten_parameters
from genesis_core.records import RunFolder, ScoreRecord, TrialArtifact, ValidationReport
from genesis_core.study import load_run, load_study_config
from genesis_core.validation import ValidationConfig, WindowSpec, evaluate_candidate, select_candidates
from genesis_core.workflow import validate_run
from tests.conftest import held_in_file
from tests.optimizer.test_optimizer import ROOT, write_config
from tests.runs import artifacts, genesis, genesis_apart, optimize, validate
from tests.validation.conftest import FIRST_HALF_2023, ONE_TRADE, PARAMETERS, VALIDATION, validated_config


def evaluated_trials(run_dir: Path) -> list[dict]:
    return [t.model_dump(mode="json") for t in artifacts(RunFolder(run_dir))]


def test_candidates_are_the_top_distinct_valid_trials_by_explore_score(validated_run):
    trials = evaluated_trials(validated_run)
    report = json.loads((validated_run / "validation.json").read_text())
    valid = [t for t in trials if t["score"]["outcome"] == "VALID" and not t["score"]["constraints_failed"]]
    expected, outcomes = [], set()
    for t in sorted(valid, key=lambda t: (-t["score"]["production"], t["trial_number"])):  # one per distinct outcome
        outcome = json.dumps([t["metrics"], t["trace"]], sort_keys=True)
        if outcome not in outcomes:
            outcomes.add(outcome)
            expected.append(t)
    assert sorted(c["trial"] for c in report["candidates"]) == sorted(t["trial_number"] for t in expected[: VALIDATION["top_n"]])
    assert len({c["config_fingerprint"] for c in report["candidates"]}) == len(report["candidates"])
    assert len({json.dumps(c["explore"]["metrics"], sort_keys=True) for c in report["candidates"]}) == len(report["candidates"])
    assert report["evaluated_trials"] == len(trials) and report["missing_artifacts"] == []


def test_trials_evaluated_elsewhere_are_reported_not_silently_dropped(fresh_run):
    """Artifacts are written where a trial ran: another machine's trials are named, not ignored."""
    artifacts = sorted((fresh_run / "trials").glob("*.json"))
    gone = artifacts[:2]
    for path in gone:
        path.unlink()
    read: list[tuple[int, int]] = []  # what a progress bar is told: each artifact read of those there are
    report = validate_run(RunFolder(fresh_run), on_read=lambda done, total: read.append((done, total))).model_dump(mode="json")
    assert report["missing_artifacts"] == [int(p.stem) for p in gone]
    assert report["evaluated_trials"] == len(artifacts) - 2
    assert read == [(i, len(artifacts) - 2) for i in range(1, len(artifacts) - 1)]
    assert not {c["trial"] for c in report["candidates"]} & set(report["missing_artifacts"])
    proc = subprocess.run([sys.executable, "-m", "genesis_core", "validate", str(fresh_run)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert ("warning: 2 evaluated trial(s) have no artifact in this run folder (evaluated on another machine?) and were not "
            "considered; run `genesis validate` where they ran, or copy their trials/NNNNNN.json here") in proc.stderr.splitlines()
    assert re.search(r"^deflated Sharpe ratio of trial \d+ given .+ expected from luck alone\)$", proc.stdout, re.M)  # whole lines in a log


def test_each_window_is_a_rerun_of_the_same_effective_config_on_that_window(validated_run):
    report = json.loads((validated_run / "validation.json").read_text())
    c = report["candidates"][0]
    artifact = json.loads((validated_run / "trials" / f"{c['trial']:06d}.json").read_text())
    for w in c["windows"]:
        effective = build_config(artifact["effective_config"], overrides={"data": {"start": w["start"], "end": w["end"]}})
        assert effective.params == artifact["effective_config"]["params"]  # only the window moved
        result = Backtester().run(effective)
        assert result.metrics == w["metrics"] and result.window.fingerprint == w["data_window"]
        assert w["first_bar"] == f"{w['start']}T00:00:00Z" and w["last_bar"] == f"{w['end']}T23:00:00Z"


def test_a_candidate_passes_only_if_every_constraint_holds_on_every_window(validated_run):
    report = json.loads((validated_run / "validation.json").read_text())
    limit = VALIDATION["constraints"]["max_drawdown"]
    for c in report["candidates"]:
        breaks = [w for w in c["windows"] if w["metrics"]["max_drawdown"] > limit or w["metrics"]["num_trades"] < 5]
        assert c["passed"] == (not breaks)
        for w in breaks:
            assert any(r.startswith(f"{w['start']}..{w['end']}: max_drawdown") or "min_trades" in r for r in c["reasons"])
    passed = [c for c in report["candidates"] if c["passed"]]
    failed = [c for c in report["candidates"] if not c["passed"]]
    assert passed and failed  # this data gives both, so the test shows the split
    assert report["passed"] == [c["trial"] for c in passed] and report["best"] == passed[0]["trial"]
    # the in-sample favourite is among those that fail out of sample
    explore_best = max(report["candidates"], key=lambda c: c["explore"]["production_score"])
    assert not explore_best["passed"] and any("max_drawdown" in r for r in explore_best["reasons"])


def test_a_window_whose_profit_rests_on_one_trade_fails_naming_the_trade_and_its_share(tmp_path):
    """A config of the bundled reference run's top 40 (``ONE_TRADE``) made money in 2023-H1 with 43
    trades and passed every validation constraint there; without the trade it entered on
    2023-03-22, its trades together lost. 12 of the 13 windows of those configs that made money in
    2023 rest on one trade so."""
    from genesis_core.backtest import ConfigBuilder, one_trade
    from genesis_core.data import format_ts

    study = load_study_config(ROOT / "configs" / "optimize_reference.yaml")
    base = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text())
    config = ConfigBuilder(base, None, {"data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"), "start": "2022-01-01",
                                                 "end": "2022-12-31"}})(ONE_TRADE)
    window = WindowSpec(**FIRST_HALF_2023)
    validation = study.validation.model_copy(update={"windows": [window]})
    backtester = Backtester()
    single = backtester.run(build_config(config.model_dump(mode="json"), overrides={"data": {"start": window.start, "end": window.end}}))
    pnl = single.engine.trades["pnl"]
    best, net = float(pnl.max()), float(pnl.sum())
    assert 0 < net < best and len(pnl) >= validation.constraints.min_trades  # it made money, and all of it on one trade
    when = format_ts(single.window.candles.timestamps[int(single.engine.trades["entry_bar"][pnl.argmax()])])
    assert when == "2023-03-22T20:00:00Z"

    result = evaluate_candidate(backtester, config, study.scoring, validation, "BTCUSD")
    assert not result.passed and result.reasons == [
        f"2023-01-01..2023-06-30: max_best_trade_share: {best / net:.3g} > 0.5 (one trade, entered {when}, made {best:,.2f}, more "
        f"than the net profit of {net:,.2f}: the others together lost {best - net:,.2f})"]
    assert result.windows[0].metrics == single.metrics  # the same run, judged

    lenient = validation.model_copy(update={"constraints": validation.constraints.model_copy(
        update={"max_best_trade_share": best / net + 0.01})})
    assert evaluate_candidate(backtester, config, study.scoring, lenient, "BTCUSD").passed  # nothing else held it back

    path = tmp_path / "h1.yaml"  # `genesis backtest` of it says so too, and of 2022 (23% on its best trade) does not
    path.write_text(yaml.safe_dump(single.config.model_dump(mode="json")))
    shown = genesis("backtest", "-c", str(path), "--json", "--out", str(tmp_path / "h1.json"))
    assert shown.returncode == 0 and (f"warning: the profit rests on one trade (one trade, entered {when}, made {best:,.2f}, more "
                                      f"than the net profit of {net:,.2f}: the others together lost {best - net:,.2f}): a validation "
                                      "window like this fails (validation.constraints.max_best_trade_share: 0.5)"
                                      ) in " ".join(shown.stderr.split())
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    shown = genesis("backtest", "-c", str(path), "--json", "--out", str(tmp_path / "2022.json"))
    assert shown.returncode == 0 and "rests on one trade" not in shown.stderr
    explore = backtester.run(config)  # its best 2022 trade made a share of the profit the others added to
    pnl = explore.engine.trades["pnl"]
    best, net = float(pnl.max()), float(pnl.sum())
    when = format_ts(explore.window.candles.timestamps[int(explore.engine.trades["entry_bar"][pnl.argmax()])])
    assert one_trade(explore, best / net - 0.01) == (best / net, f"one trade, entered {when}, made {best:,.2f} of the net profit "
                                                                 f"of {net:,.2f}; the others together made {net - best:,.2f}")
    assert one_trade(explore) is None and 0 < best / net < 0.5


def test_ranking_worst_mean_robust_and_ties_by_explore_score(validated_run):
    _, cfg = load_run(RunFolder(validated_run))
    artifact = json.loads(next((validated_run / "trials").glob("*.json")).read_text())
    bt = Backtester()
    scores = {}
    for ranking in ("worst", "mean", "robust"):
        v = cfg.validation.model_copy(update={"ranking": ranking, "robust_weight": 0.25})
        result = evaluate_candidate(bt, BacktestConfig.model_validate(artifact["effective_config"]), cfg.scoring, v, cfg.meta.symbol)
        scores[ranking] = result.validation_score
        window_scores = [w.production_score for w in result.windows]
    assert scores["worst"] == min(window_scores)
    assert scores["mean"] == pytest.approx(sum(window_scores) / 2)
    assert scores["robust"] == pytest.approx(0.75 * scores["mean"] + 0.25 * scores["worst"])
    report = json.loads((validated_run / "validation.json").read_text())
    keys = [(not c["passed"], -c["validation_score"], -c["explore"]["production_score"]) for c in report["candidates"]]
    assert keys == sorted(keys) and [c["rank"] for c in report["candidates"]] == list(range(1, len(keys) + 1))
    for c in report["candidates"]:
        assert c["gap"] == pytest.approx(c["explore"]["production_score"] - c["validation_score"])


def test_include_scoring_failures_widens_the_candidates():
    def trial(number: int, outcome: str, production: float, failed: list[str], pruned: str | None, fp: str) -> TrialArtifact:
        return TrialArtifact.model_construct(  # only the fields selection reads
            trial_number=number, pruned=pruned, fingerprints={"config": fp}, metrics={"num_trades": number}, trace={},
            score=ScoreRecord(outcome=outcome, feasibility=0.0, production=production, constraints_failed=failed))

    trials = [
        trial(0, "VALID", 5.0, ["min_trades"], None, "a"),
        trial(1, "VALID", 3.0, [], None, "b"),
        trial(2, "ZERO_TRADES_BLOCKED", -2000.0, [], None, "c"),
        trial(3, "VALID", 9.0, [], "drawdown 0.4 above 0.3 by bar 100", "d"),
    ]
    assert [t.trial_number for t in select_candidates(trials, 5, False)] == [1]
    assert [t.trial_number for t in select_candidates(trials, 5, True)] == [0, 1]


def test_overfitting_statistics_are_reported(validated_run):
    report = json.loads((validated_run / "validation.json").read_text())
    dsr = report["overfitting"]["deflated_sharpe"]
    assert dsr["trial"] == report["candidates"][0]["trial"]
    assert dsr["n_trials"] == report["evaluated_trials"] and dsr["bars"] > 2000
    assert 0.0 <= dsr["dsr"] <= 1.0 and dsr["sr0_per_bar"] > 0
    assert report["overfitting"]["mean_gap"] == pytest.approx(
        sum(c["gap"] for c in report["candidates"]) / len(report["candidates"]))


def test_validate_cli_writes_the_report_and_a_table(fresh_run):
    (fresh_run / "validation.json").unlink()
    proc = subprocess.run([sys.executable, "-m", "genesis_core", "validate", str(fresh_run), "--top-n", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((fresh_run / "validation.json").read_text())
    assert len(report["candidates"]) == 2 and report["validation"]["top_n"] == 2
    spans = [("explore", "2022-03-01", "2022-05-31"), *((f"{w['start']}..{w['end']}", w["start"], w["end"]) for w in VALIDATION["windows"])]
    assert report["buy_and_hold"] == pytest.approx({label: held_in_file(a, b).iloc[-1] - 1 for label, a, b in spans}, rel=1e-12)  # beside them
    _shows_every_figure_whole(proc.stdout, ValidationReport.model_validate(report), 120, piped=True)


def test_another_machine_of_a_fleet_re_runs_every_trial_and_validates_them_to_the_last_digit(fresh_run):
    """A fleet's machines differ in CPU, and so in how NumPy computes exp, log and powers (the SIMD
    path it finds), glibc's libm (its FMA variants), OpenBLAS (its kernels) and numba (the CPU it
    compiles for): here a process told to compute as a plain x86-64 would. Its re-runs of every
    trial and its validation report must be this machine's to the last digit. They were not: the
    report's skewness (``z**3``), mean correlation and effective trials (np.corrcoef's BLAS)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    plain = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f)),
             "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F", "OPENBLAS_CORETYPE": "Prescott", "NUMBA_CPU_NAME": "generic"}
    exp = "import hashlib, numpy as np; print(hashlib.sha256(np.exp(np.linspace(-30, 30, 100_001)).tobytes()).hexdigest())"
    if plain["NPY_DISABLE_CPU_FEATURES"]:  # else NumPy found no SIMD extension here: this machine is a plain one
        assert (subprocess.run([sys.executable, "-c", exp], capture_output=True, text=True, env=plain).stdout
                != subprocess.run([sys.executable, "-c", exp], capture_output=True, text=True).stdout)  # another machine indeed

    def there(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "genesis_core", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env=plain)

    evaluated = len(evaluated_trials(fresh_run))
    reruns = there("check-equivalence", str(fresh_run))
    assert reruns.returncode == 0 and f"{evaluated} of {evaluated} identical" in reruns.stdout, reruns.stdout + reruns.stderr
    here = json.loads((fresh_run / "validation.json").read_text())
    assert there("validate", str(fresh_run)).returncode == 0
    assert {**json.loads((fresh_run / "validation.json").read_text()), "created": None} == {**here, "created": None}


def _shows_every_figure_whole(text: str, report: ValidationReport, width: int, piped: bool = False) -> None:
    """Every window's figures and every failed constraint in full in ``text``, no line wider than
    ``width`` and nothing cut short (a column of reasons showed ``min_pro…`` in 120 columns, and
    scores ``-11…`` in 100 and ``-7.…`` in 80). ``piped``: no line of the table wider, the others
    each whole, as a log's lines must be (the DSR's was cut in two)."""
    lines = text.splitlines()
    drawn = [line for line in lines if line[:1] in "┏┃┡│├└"] if piped else lines
    assert "…" not in text and max(map(len, drawn)) <= width
    if piped:
        assert any(line.startswith("deflated Sharpe ratio of trial ") and line.endswith("expected from luck alone)") for line in lines)
    assert report.candidates and any(c.reasons for c in report.candidates)  # something to show
    rows = [line.replace("│", " ").split() for line in lines]  # cells, with the table's lines or without
    assert report.buy_and_hold is not None and len(report.buy_and_hold) == 1 + len(report.validation["windows"])
    market = next(i for i, r in enumerate(rows) if r[:2] == ["market", "explore"])
    for label, made in report.buy_and_hold.items():  # the market's rows, first: each window's return, nothing else
        cells = next(r for r in rows[market:] if label.split("..")[0] in r)
        assert cells[-1] == f"{made:+.2%}" and set(cells[:-1]) <= {"market", *label.split(".."), "..", f"..{label.split('..')[-1]}"}
    for c in report.candidates:
        for label, sc, m in [("explore", c.explore.production_score, c.explore.metrics),
                             *((w.start, w.production_score, w.metrics) for w in c.windows)]:
            cells = next(r for r in rows if label in r and f"{sc:.2f}" in r)
            at = cells.index(f"{sc:.2f}", cells.index(label))
            assert cells[at:at + 5] == [f"{sc:.2f}", f"{m['total_return']:+.2%}", f"{m['max_drawdown']:.2%}",
                                        f"{m['profit_factor']:.2f}", str(m["num_trades"])]
        assert any(f"#{c.trial}" in r and f"{c.validation_score:.2f}" in r for r in rows)
        for reason in c.reasons:
            assert f"  #{c.trial} {reason}" in lines


@pytest.mark.parametrize("width", [100, 80])
def test_the_validate_table_shows_every_figure_whole_in_a_terminal_of_100_or_80_columns(validated_run, width):
    from rich.console import Console

    from genesis_core import cli

    report = ValidationReport.model_validate_json((validated_run / "validation.json").read_text())
    recorded = Console(width=width, record=True, file=io.StringIO())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "out", recorded)
        cli._print_validation(report)
    _shows_every_figure_whole(recorded.export_text(), report, width)


def test_a_run_without_validation_windows_is_a_clear_error(tmp_path):
    run_dir = Path(optimize(write_config(tmp_path, meta={"stop": {"max_trials": 2}}))["run_dir"])
    with pytest.raises(ConfigError, match="no validation windows"):
        validate(run_dir)
    # ... unless another config's validation section is given
    report = validate(run_dir, ValidationConfig.model_validate(VALIDATION))
    assert report["candidates"]


def test_validation_without_windows_or_promotion_without_validation_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="windows: give at least one"):
        load_study_config(validated_config(tmp_path, validation={**VALIDATION, "windows": []}))
    with pytest.raises(ConfigError, match="promotion.enabled needs validation.enabled"):
        load_study_config(write_config(tmp_path, promotion={"enabled": True}))


def test_walk_forward_runs_each_fold_and_aggregates(tmp_path):
    from genesis_core.workflow import walk_forward

    path = validated_config(tmp_path, meta={"stop": {"max_trials": 6}},
                            validation={**VALIDATION, "walk_forward": {"folds": 2, "start": "2022-01-01", "end": "2022-09-30"}})
    done = walk_forward(load_study_config(path))
    record, report_path = done.report, done.path
    assert done.signal is None
    report = record.model_dump(mode="json")
    assert report["complete"] and len(report["folds"]) == 2
    for f in report["folds"]:  # each fold was preflighted before it ran
        preflight = json.loads((Path(f["run_dir"]) / "run.json").read_text())["sessions"][0]["preflight"]
        assert preflight["ok"] and "skipped" not in preflight and len(preflight["checks"]) == 14
    blocks = report["blocks"]
    assert blocks[0][0] == "2022-01-01" and blocks[-1][1] == "2022-09-30"
    for f, (explore, validation) in zip(report["folds"], itertools.pairwise(blocks), strict=True):
        assert f["explore"] == list(explore) and f["validation"] == list(validation)
        v = json.loads((Path(f["run_dir"]) / "validation.json").read_text())
        assert v["validation"]["windows"] == [{"start": validation[0], "end": validation[1]}]
        assert Path(f["config"]).exists() and f["evaluated_trials"] >= 1
    picked_otherwise = 0
    for f in report["folds"]:  # each fold's top is its explore best, not the best of top_n on the block it is scored on
        candidates = json.loads((Path(f["run_dir"]) / "validation.json").read_text())["candidates"]
        best = max(candidates, key=lambda c: (c["explore"]["production_score"], -c["trial"]))
        assert (f["top"]["trial"], f["top"]["validation_score"], f["top"]["explore_score"]) == \
            (best["trial"], best["validation_score"], best["explore"]["production_score"])
        picked_otherwise += candidates[0]["trial"] != best["trial"]
    assert picked_otherwise  # the rule is tested: some fold's validation favourite is not its explore best
    assert record.top_chosen_by == "explore" and record.biased() is None
    tops = [f["top"] for f in report["folds"] if f["top"]]
    assert report["aggregate"]["worst_validation_score"] == min(t["validation_score"] for t in tops)
    # the tops' passes, out of sample, beside the folds where any of top_n passed (a best of several on the block)
    assert report["aggregate"]["tops_passed"] == sum(t["passed"] for t in tops) <= report["aggregate"]["folds_with_a_pass"]
    # each top's return on its block and buying and holding the block, compounded over the folds alike
    for f in report["folds"]:
        assert f["buy_and_hold"] == pytest.approx(held_in_file(*f["validation"]).iloc[-1] - 1, rel=1e-12)
        top = next(c for c in json.loads((Path(f["run_dir"]) / "validation.json").read_text())["candidates"]
                   if c["trial"] == f["top"]["trial"])
        assert f["top"]["validation_return"] == top["windows"][0]["metrics"]["total_return"]
    chained = (math.prod(1 + f["top"]["validation_return"] for f in report["folds"]) - 1,
               math.prod(1 + f["buy_and_hold"] for f in report["folds"]) - 1)
    assert (report["aggregate"]["chained_return"], report["aggregate"]["chained_buy_and_hold"]) == pytest.approx(chained, rel=1e-12)
    assert json.loads(report_path.read_text())["folds"] == report["folds"]
    _assert_walk_forward_report(report_path.parent, report, done.cautions)
    from tests.runs import genesis  # runs show and runs list know a walk-forward (they said "no run at ...")

    results = str(tmp_path / "results")
    shown = genesis("runs", "show", "t-walk-forward", "--results-dir", results, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout) == json.loads(report_path.read_text())
    text = genesis("runs", "show", "t-walk-forward", "--results-dir", results).stdout
    a = report["aggregate"]
    assert f"{a['folds_with_a_pass']} of 2 folds with a candidate passing; the tops (each fold's explore best) of 2 folds on " \
           f"their validation blocks: {a['tops_passed']} passed, mean score" in " ".join(text.split())
    assert (f"traded each on its block in turn, the tops made {a['chained_return']:+.2%}; buying and holding those blocks made "
            f"{a['chained_buy_and_hold']:+.2%}") in " ".join(text.split())
    listed = genesis("runs", "list", "--results-dir", results).stdout
    assert re.search(rf"│ t-walk-forward +│ +2 of 2 │ +{a['folds_with_a_pass']} │ +{a['tops_passed']} │ +{a['mean_validation_score']:.2f} │ "
                     rf"+{a['worst_validation_score']:.2f} │", listed), listed


def test_a_walk_forward_interrupted_in_a_fold_says_so_exits_130_and_goes_on_from_there_when_run_again(tmp_path):
    """Ctrl-C in fold 2 of 3 printed a walk-forward of 1 fold, its table and aggregate, as the result,
    and exited 0; run again, it said nothing of what each fold resumed. Now it says it was
    interrupted and how to go on, exits 130, and the run again ends with every fold at its budget."""
    import signal
    import time

    from tests.runs import genesis

    trials = 600
    path = validated_config(tmp_path, meta={"stop": {"max_trials": trials}, "duplicate_streak_limit": trials,
                                            "sampler": {"name": "random", "kwargs": {"seed": 1}}},
                            parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                        "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0}},
                            validation={**VALIDATION, "walk_forward": {"folds": 3, "start": "2022-01-01", "end": "2022-12-31"}})
    command = [sys.executable, "-m", "genesis_core", "walk-forward", str(path), "--skip-preflight"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    second = tmp_path / "results" / "runs" / "t-wf2" / "trials"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(second.glob("*.json"))) < 10:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Walk-forward of t: 1 of 3 folds (interrupted)" in out
    assert f"interrupted in fold 2 of 3; resume with: genesis walk-forward {path} --skip-preflight (each fold's study " \
           "resumes where it stopped; SIGINT)" in " ".join(err.split())
    stored = json.loads((tmp_path / "results" / "runs" / "t-walk-forward" / "walk_forward.json").read_text())
    assert not stored["complete"] and len(stored["folds"]) == 1
    interrupted = json.loads((tmp_path / "results" / "runs" / "t-wf2" / "run.json").read_text())["sessions"]
    assert [(s["interrupted"], s["signal"]) for s in interrupted] == [(True, "SIGINT")]

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Walk-forward of t: 3 of 3 folds" in again.stdout and "(interrupted)" not in again.stdout
    said = " ".join(again.stderr.split())
    assert f"fold 1: the study's {trials:,} evaluated trials meet its budget of {trials:,} already" in said
    warned = [line.removeprefix("warning: ") for line in again.stderr.splitlines() if line.startswith("warning: fold ")]
    assert any(line.startswith("fold 1: the study's") for line in warned)
    page = tmp_path / "wf.html"  # the page says what the command warned of, each fold's run read again
    assert genesis("report", str(tmp_path / "results" / "runs" / "t-walk-forward"), "--out", str(page)).returncode == 0
    cautions = page.read_text().split("<h2>Read with care</h2>")[1].split("<h2>")[0]
    assert all(f"<p class='note'>{html.escape(line)}</p>" in cautions for line in warned), (warned, cautions)
    shown = genesis("runs", "show", "t-walk-forward", "--results-dir", str(tmp_path / "results"))  # and so does runs show
    assert shown.returncode == 0 and all(" ".join(f"warning: {line}".split()) in " ".join(shown.stderr.split()) for line in warned)
    (tmp_path / "results" / "runs" / "t-wf2").rename(tmp_path / "t-wf2")  # a fold's run lost: runs show ended with an error there
    lost = genesis("runs", "show", "t-walk-forward", "--results-dir", str(tmp_path / "results"))
    assert lost.returncode == 0 and lost.stdout == shown.stdout
    assert [line for line in lost.stderr.splitlines() if "fold 2: " in line] == [
        f"warning: fold 2: what its run warned of is not known: {tmp_path / 'results' / 'runs' / 't-wf2' / 'run.json'}: cannot read: "
        "No such file or directory"]
    assert [line for line in lost.stderr.splitlines() if "fold 2: " not in line] == [
        line for line in shown.stderr.splitlines() if "fold 2: " not in line]
    page_lost = tmp_path / "wf-lost.html"  # and its page: it ended in that one-line error, no page written
    made = genesis("report", str(tmp_path / "results" / "runs" / "t-walk-forward"), "--out", str(page_lost))
    assert made.returncode == 0, made.stderr
    wf = json.loads((tmp_path / "results" / "runs" / "t-walk-forward" / "walk_forward.json").read_text())
    top = next(f["top"]["trial"] for f in wf["folds"] if f["fold"] == 2)
    text = page_lost.read_text()
    assert text.split("<h2>Read with care</h2>")[1].split("<h2>")[0] == "".join(
        f"<p class='note'>{html.escape(line.removeprefix('warning: '))}</p>" for line in lost.stderr.splitlines()
        if line.startswith("warning: fold "))
    assert text.split("<h2>Out-of-sample equity</h2>")[1].split("<p class='note'>genesis-core ")[0] == (
        "<p class='note'>not drawn: the chain re-runs each fold&#x27;s top, and these cannot be read (restore their run "
        f"folders)</p><p class='note'>fold 2: {tmp_path / 'results' / 'runs' / 't-wf2' / 'trials' / f'{top:06d}.json'}: "
        "cannot read: No such file or directory</p>")
    assert text.split("<h2>Fold tops</h2>")[1].count("<tr") == 4  # the table, from walk_forward.json, whole
    (tmp_path / "t-wf2").rename(tmp_path / "results" / "runs" / "t-wf2")
    stored = json.loads((tmp_path / "results" / "runs" / "t-walk-forward" / "walk_forward.json").read_text())
    assert stored["complete"] and [f["fold"] for f in stored["folds"]] == [1, 2, 3]
    for i in (1, 2, 3):  # every fold at its budget, no trial lost or run twice
        rows = list(csv.DictReader((tmp_path / "results" / "runs" / f"t-wf{i}" / "trials.csv").open()))
        assert sum(r["state"] == "COMPLETE" for r in rows) == trials == stored["folds"][i - 1]["evaluated_trials"]
        assert len({r["config_fingerprint"] for r in rows if r["state"] == "COMPLETE"}) == trials


def _assert_walk_forward_report(folder: Path, report: dict, cautions: list[str]) -> None:
    """`genesis report STUDY-walk-forward`: rendered by a real browser, its folds, scores and chained
    out-of-sample equity equal to what walk_forward.json and the folds' validation.json hold, and
    ``cautions``, what the walk-forward warned of."""
    from tests.browser import figure_data, render, rendered_figures
    from tests.runs import genesis

    page = folder.parent / "wf.html"
    result = genesis("report", str(folder), "--out", str(page))
    assert result.returncode == 0, result.stderr
    dom, console = render(page)
    assert not console, console
    figures = rendered_figures(dom)
    assert len(figures) == 2 and all('class="main-svg"' in body for body in figures.values())
    text = page.read_text()
    said = "".join(f"<p class='note'>{html.escape(line)}</p>" for line in cautions)  # what each fold's run warned of, led by its fold
    assert (text.split("<h2>Read with care</h2>")[1].split("<h2>")[0] == said) if cautions else "Read with care" not in text
    traces = figure_data(text, 1)
    blocks = [t for t in traces if t["mode"] == "lines"]
    assert [t["y"][0] for t in blocks] == [f"fold {f['fold']}" for f in report["folds"]] * 2
    explore, validation = (t for t in traces if t["mode"] == "markers+text")
    tops = [f["top"] for f in report["folds"]]
    assert explore["y"] == [t["explore_score"] for t in tops] and validation["y"] == [t["validation_score"] for t in tops]
    growth = 1.0
    for f in report["folds"]:  # the chained curve ends where the fold tops' validation returns compound to
        v = json.loads((Path(f["run_dir"]) / "validation.json").read_text())
        top = next(c for c in v["candidates"] if c["trial"] == f["top"]["trial"])
        growth *= 1 + top["windows"][0]["metrics"]["total_return"]
    *chained, held = figure_data(text, 2)
    assert chained[-1]["y"][-1] == pytest.approx(growth, rel=1e-12)
    assert held["name"] == "buy and hold" and held["y"][-1] == pytest.approx(  # and buying and holding each block, chained alike
        math.prod(held_in_file(*f["validation"]).iloc[-1] for f in report["folds"]), rel=1e-12)
    assert held["x"] == [x for t in chained for x in t["x"]]
    for f in report["folds"]:
        assert f'<td class="l">{f["fold"]}</td><td class="l">{" .. ".join(f["explore"])}</td>' in dom
        assert f'<td>{f["top"]["validation_return"]:+.2%}</td><td>{f["buy_and_hold"]:+.2%}</td>' in dom  # the top's, the market's
    a = report["aggregate"]
    for label, value in (("the fold tops traded each on its block in turn", a["chained_return"]),
                         ("buying and holding those blocks", a["chained_buy_and_hold"])):
        assert f'<td class="l">{label} (compounded return)</td><td>{value:+.2%}</td>' in dom


def test_each_candidate_s_neighbours_are_one_step_away_and_scored_as_single_backtests(validated_run):
    """The robustness map: every candidate's neighbours are the choices either side of each of
    its parameters (nothing outside the space), each scored on the explore window exactly as a
    single backtest of that config scores; plateau and worst are their median and minimum over
    the candidate's own score (of those that change a fill), and the flag follows validation.min_plateau."""
    from genesis_core.scoring import score

    report = json.loads((validated_run / "validation.json").read_text())
    run, cfg = load_run(RunFolder(validated_run))
    choices = {path: spec["choices"] for path, spec in PARAMETERS.items()}
    bt = Backtester()
    for c in report["candidates"]:
        r = c["robustness"]
        expected = sorted((path, values[j]) for path, values in choices.items()
                          for j in (values.index(c["params"][path]) - 1, values.index(c["params"][path]) + 1)
                          if 0 <= j < len(values))
        assert sorted((n["param"], n["value"]) for n in r["neighbours"]) == expected
        for n in r["neighbours"]:  # the config a trial of those params is
            result = bt.run(build_config(run.fixed_config.model_dump(mode="json"),
                                         trial_params={**c["params"], n["param"]: n["value"]}))
            assert n["production_score"] == score(result.metrics, result.trace, cfg.scoring, cfg.constraints).production
        own, scores = c["explore"]["production_score"], sorted(n["production_score"] for n in r["neighbours"] if not n["unchanged"])
        if own > 0:
            assert r["plateau"] == pytest.approx(statistics.median(scores) / own, rel=1e-12)
            assert r["worst"] == pytest.approx(scores[0] / own, rel=1e-12)
            assert r["flagged"] == (r["plateau"] < cfg.validation.min_plateau)
        else:
            assert r["plateau"] is None and not r["flagged"]


def test_a_plateau_not_measured_says_why_under_the_table_and_in_the_report(tmp_path):
    """SMA crossovers swept over 2021 with fees all lose on explore: a share of a score of 0 or
    less means nothing, so no plateau is given; the table shows ``-`` and says why under it for
    exactly those candidates (a bare ``-`` read as a missing measurement), and so does the HTML
    report. Their neighbours are still scored and recorded."""
    from tests.runs import genesis

    path = write_config(tmp_path, meta={"base_config": str(ROOT / "configs" / "sma_cross.yaml"),
                                        "sample_start": "2021-01-01", "sample_end": "2021-12-31"},
                        parameters={"fast": {"type": "categorical", "choices": [2, 5, 8]},
                                    "slow": {"type": "categorical", "choices": [70, 110, 150]}},
                        constraints={"min_trades": 5, "min_profit_factor": 0.0, "max_drawdown": 0.9},
                        validation={**VALIDATION, "top_n": 3, "constraints": {"min_trades": 1, "min_profit_factor": 0.0,
                                                                              "max_drawdown": 0.9}})
    assert genesis("sweep", str(path), "--method", "grid", "--skip-preflight").returncode == 0
    run_dir = tmp_path / "results" / "runs" / "t"
    shown = genesis("validate", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    report = ValidationReport.model_validate_json((run_dir / "validation.json").read_text())
    assert len(report.candidates) == 3
    for c in report.candidates:
        assert c.explore.production_score <= 0 and c.robustness is not None  # what this test is about
        assert c.robustness.plateau is None and len(c.robustness.neighbours) >= 2 and not c.robustness.flagged
    rows = [line.replace("│", " ").split() for line in shown.stdout.splitlines()]
    for c in report.candidates:
        row = next(r for r in rows if f"#{c.trial}" in r)
        assert row[-2:] == ["-", "pass" if c.passed else "fail"]
    why = "an explore score of 0 or less, of which a share means nothing"
    assert f"plateau -: {', '.join(f'#{c.trial}' for c in report.candidates)}: {why}" in shown.stdout.splitlines()
    assert genesis("report", str(run_dir)).returncode == 0
    page = (run_dir / "report.html").read_text()
    assert page.count(f"<td>{report.candidates[0].validation_score:.2f}</td><td>-</td>") == 1
    assert f"<p>plateau -: {', '.join(f'#{c.trial}' for c in report.candidates)}: {why}</p>" in page


def test_a_neighbour_that_makes_the_candidate_s_own_backtest_is_left_out_of_its_plateau(tmp_path):
    """Trial 233 of the reference run, its neighbours in the reference space on 2022: a holding
    limit no trade reaches, a minimum edge or a zone threshold no entry is near leave the backtest
    as it is, fill for fill. Counted as neighbours, they were 9 of its 20 and held the median at
    99.9% of the candidate's score (97.1% without them). They are recorded and
    said under the table and in the report, and plateau and worst are over the others."""
    parameters = yaml.safe_load((ROOT / "configs" / "optimize_reference.yaml").read_text())["parameters"]
    path = write_config(tmp_path, meta={"sample_start": "2022-01-01", "sample_end": "2022-12-31"}, parameters=parameters,
                        constraints={"min_trades": 30, "min_profit_factor": 1.0, "max_drawdown": 0.35},
                        validation={**VALIDATION, "top_n": 1, "windows": [FIRST_HALF_2023]})
    sweep(load_study_config(path).spec(), SweepOptions("grid"), points=[ONE_TRADE])
    run_dir = tmp_path / "results" / "runs" / "t"
    shown = genesis("validate", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    (c,) = ValidationReport.model_validate_json((run_dir / "validation.json").read_text()).candidates
    run, cfg = load_run(RunFolder(run_dir))
    bt = Backtester()

    def engine(params: dict) -> tuple[bytes, bytes]:
        e = bt.run(build_config(run.fixed_config.model_dump(mode="json"), trial_params=params)).engine
        return e.trades.tobytes(), e.equity.tobytes()

    own = engine(c.params)
    r = c.robustness
    assert r is not None and len(r.neighbours) == 20
    for n in r.neighbours:
        assert n.unchanged == (engine({**c.params, n.param: n.value}) == own), n
    same = [n for n in r.neighbours if n.unchanged]
    moved = sorted(n.production_score for n in r.neighbours if not n.unchanged)
    assert len(same) == 9 and len(moved) == 11  # what this test is about: both kinds
    assert all(n.production_score == c.explore.production_score for n in same)
    everyone = statistics.median(n.production_score for n in r.neighbours) / c.explore.production_score
    assert r.plateau == pytest.approx(statistics.median(moved) / c.explore.production_score, rel=1e-12)
    assert r.plateau < everyone - 0.02
    assert r.worst == pytest.approx(moved[0] / c.explore.production_score, rel=1e-12)
    params = ", ".join(dict.fromkeys(n.param for n in same))
    line = f"plateau #{c.trial} 9 of 20 neighbours left out, the same backtest as the candidate's ({params})"
    assert line in shown.stdout.splitlines()
    assert genesis("report", str(run_dir)).returncode == 0
    page = (run_dir / "report.html").read_text()  # the page says it as the command does: the shares, the line under them
    assert f"<td>{c.validation_score:.2f}</td><td>{r.plateau:.0%} ({r.worst:.0%})</td>" in page
    assert f"<p>{html.escape(line)}</p>" in page

    # searched in those parameters alone, the candidate has no neighbour that changes a fill: no plateau, and why
    inert = {k: flatten_parameters(parameters)[k] for k in dict.fromkeys(n.param for n in same)}
    (tmp_path / "inert").mkdir()
    alone = write_config(tmp_path / "inert", meta={"sample_start": "2022-01-01", "sample_end": "2022-12-31"},
                         parameters={**{k: {"type": "categorical", "choices": [v]} for k, v in ONE_TRADE.items()}, **inert},
                         validation={**VALIDATION, "top_n": 1, "windows": [FIRST_HALF_2023]})
    sweep(load_study_config(alone).spec(), SweepOptions("grid"), points=[ONE_TRADE])
    shown = genesis("validate", str(tmp_path / "inert" / "results" / "runs" / "t"))
    (c,) = ValidationReport.model_validate_json((tmp_path / "inert" / "results" / "runs" / "t" / "validation.json").read_text()).candidates
    assert c.robustness is not None and len(c.robustness.neighbours) == 9 and all(n.unchanged for n in c.robustness.neighbours)
    assert c.robustness.plateau is None and c.robustness.worst is None and not c.robustness.flagged
    why = "no neighbour changes a fill: one step in any parameter leaves the backtest as it is"
    assert f"plateau -: #{c.trial}: {why}" in shown.stdout.splitlines()


def test_a_neighbour_warms_up_as_its_trial_does_and_scores_what_that_trial_scored(tmp_path):
    """The robustness map built each neighbour on the candidate's effective config, whose warm-up
    was resolved for the candidate's params: a neighbour with a longer 4h EMA started with an EMA of
    fewer bars, one with a shorter EMA warmed up for longer, and each scored other than the same
    config as a trial (18.7 for a neighbour whose trial scored 7.5, on this grid). In a grid sweep
    every neighbour is a trial of the run: each must score exactly what that trial scored."""
    path = write_config(tmp_path, parameters={"gates.htf.ema_period": {"type": "categorical", "choices": [100, 200, 300]},
                                              "exits.max_bars_held": {"type": "categorical", "choices": [12, 24]}},
                        constraints={"min_trades": 1, "min_profit_factor": 0.0, "max_drawdown": 0.9},
                        validation={**VALIDATION, "top_n": 4})
    sweep(load_study_config(path).spec(), SweepOptions("grid"))
    run_dir = tmp_path / "results" / "runs" / "t"
    report = ValidationReport.model_validate(validate(run_dir))
    trials = {tuple(sorted(t.params.items())): t for t in artifacts(RunFolder(run_dir))}
    assert len(trials) == 6 and len(report.candidates) == 4
    warmups = set()
    for c in report.candidates:
        assert c.robustness is not None and len(c.robustness.neighbours) >= 2
        own = trials[tuple(sorted(c.params.items()))].effective_config.data.warmup_bars
        for n in c.robustness.neighbours:
            trial = trials[tuple(sorted({**c.params, n.param: n.value}.items()))]
            assert (n.production_score, n.outcome) == (trial.score.production, trial.score.outcome), (c.trial, n)
            warmups.add((own, trial.effective_config.data.warmup_bars))
    assert any(a < b for a, b in warmups) and any(a > b for a, b in warmups)  # neighbours warming up longer and shorter


def _swept_with_a_bug_on_2023(tmp_path: Path, bug: str) -> tuple[Path, list[dict]]:
    """A run of three points of the misbehaving strategy, the second with ``bug``, validated on a
    window of 2022 and one of 2023 (its three candidates); its folder and the points."""
    base = tmp_path / "bug.yaml"
    base.write_text(yaml.safe_dump({"strategy": "tests.strategy.misbehaving_strategy:Misbehaving", "params": {}}))
    windows = [{"start": "2022-06-01", "end": "2022-08-31"}, {"start": "2023-01-01", "end": "2023-03-31"}]
    path = write_config(tmp_path, meta={"base_config": str(base)},
                        parameters={"bug": {"type": "categorical", "choices": ["none", bug]},
                                    "period": {"type": "int", "low": 10, "high": 40, "step": 10}},
                        validation={**VALIDATION, "top_n": 3, "windows": windows})
    points = [{"bug": "none", "period": 10}, {"bug": bug, "period": 30}, {"bug": "none", "period": 40}]
    sweep(load_study_config(path).spec(), SweepOptions("grid"), points=points)
    return tmp_path / "results" / "runs" / "t", points


def test_a_candidate_refused_on_a_window_fails_with_the_reason_and_the_others_are_validated(tmp_path):
    """A user strategy that raises on 2023's bars only: validation stopped at the first such
    candidate with the exception, and validated none. Now that candidate is listed apart, refused on
    that window with the reason (in validation.json, the table, the report and promotion's answer),
    and the other candidates are validated; data that covers no window is still one error, before any."""
    from tests.runs import genesis

    run_dir, points = _swept_with_a_bug_on_2023(tmp_path, "raises on 2023")
    shown = genesis("validate", str(run_dir))
    assert shown.returncode == 0, shown.stdout
    report = ValidationReport.model_validate_json((run_dir / "validation.json").read_text())
    raised = (r"strategy 'tests.strategy.misbehaving_strategy:Misbehaving' raised ZeroDivisionError: division by zero "
              r"at \S+/tests/strategy/misbehaving_strategy.py:\d+, in decide")
    assert [c.params for c in sorted(report.candidates, key=lambda c: c.trial)] == [points[0], points[2]]
    assert all(len(c.windows) == 2 and c.windows[1].bars > 2000 for c in report.candidates)
    assert len(report.refused) == 1
    refused = report.refused[0]
    assert (refused.params, refused.start, refused.end) == (points[1], "2023-01-01", "2023-03-31")
    assert re.fullmatch(raised, refused.reason) and refused.trial not in report.passed
    assert refused.explore.metrics["num_trades"] > 10
    why = shown.stdout.split("why they failed:\n")[1].splitlines()
    assert [line for line in why if re.fullmatch(f"  #{refused.trial} 2023-01-01..2023-03-31: refused: {raised}", line)]
    assert re.search(f"#{refused.trial} .* refused .*\n.* 2023-01-01 .. 2023-03-31 .* refused", shown.stdout)
    assert genesis("report", str(run_dir)).returncode == 0
    page = html.unescape((run_dir / "report.html").read_text())
    assert re.search(f"<td class='l'>2023-01-01 .. 2023-03-31</td>{'<td>-</td>' * 7}<td class='fail'>refused</td>", page)
    assert re.search(f"<li>#{refused.trial} 2023-01-01..2023-03-31: refused: {raised}</li>", page)
    listed = genesis("runs", "list", "--results-dir", str(tmp_path / "results"))  # passed of the 3 candidates, the refused one too
    assert re.search(f"│ t +│ +3 │ .* │ +yes │ {len(report.passed)} of 3 │", listed.stdout), listed.stdout
    refusal = genesis("champion", "promote", str(run_dir), "--trial", str(refused.trial))
    assert refusal.returncode == 1
    assert re.search(f"trial {refused.trial} could not be validated on the window 2023-01-01..2023-03-31: {raised}",
                     " ".join(refusal.stdout.split()))
    late = write_config(tmp_path, "late.yaml", validation={**VALIDATION, "windows": [{"start": "2030-01-01", "end": "2030-03-31"}]})
    uncovered = genesis("validate", str(run_dir), "--config", str(late))
    assert uncovered.returncode == 2 and "window start 2030-01-01 is after the data's last bar" in uncovered.stdout + uncovered.stderr


CRASHED = ("its {} process died of SIGSEGV (Segmentation fault) evaluating it: a crash of compiled code (a strategy's, "
           "a feature's or a library's), refused from then on, for this code on these bars")


def test_a_candidate_that_crashes_validation_s_process_on_a_window_is_refused_and_the_others_are_validated(tmp_path):
    """A user strategy whose compiled code crashes on 2023's bars (it reads address 0): `genesis
    validate` died of SIGSEGV, and so did every later one, at the same candidate: the run could not be
    validated. Then the first still died, and the next refused that candidate. Now the backtests run
    in a process of its own: the first validation refuses that candidate on that window with the
    reason, records it in the run folder and validates the others, each window's numbers as a
    validation of it alone gives them. The next refuses it without running it."""
    from tests.optimizer.test_accounting import _crash_dump

    run_dir, points = _swept_with_a_bug_on_2023(tmp_path, "crashes on 2023")
    first = genesis_apart("validate", str(run_dir))
    assert first.returncode == 0 and _crash_dump(first.stderr), first.stderr[-3000:]  # the stack of the process it crashed
    assert first.stderr.count("Fatal Python error") == 1 and not list(run_dir.glob("*.inflight"))
    report = ValidationReport.model_validate_json((run_dir / "validation.json").read_text())
    crashed = CRASHED.format("validation")
    assert [(r.params, r.start, r.end, r.reason) for r in report.refused] == [(points[1], "2023-01-01", "2023-03-31", crashed)]
    assert f"#{report.refused[0].trial} 2023-01-01..2023-03-31: refused: {crashed}" in " ".join(first.stdout.split())
    assert list(json.loads((run_dir / "crashes.json").read_text()).values()) == [crashed]
    candidates = sorted(report.candidates, key=lambda c: c.trial)
    assert [c.params for c in candidates] == [points[0], points[2]]
    folder = RunFolder(run_dir)
    run = load_run(folder)[1]
    for c in candidates:
        alone = evaluate_candidate(Backtester(), folder.read_trial(c.trial).effective_config, run.scoring, run.validation, "BTCUSD")
        assert ([w.model_dump() for w in c.windows], c.validation_score) == (
            [w.model_dump() for w in alone.windows], alone.validation_score)
        assert all(w.bars > 2000 and w.metrics["num_trades"] > 10 for w in c.windows)
    second = genesis_apart("validate", str(run_dir))
    assert second.returncode == 0 and "Fatal Python error" not in second.stderr, second.stderr[-3000:]
    again = ValidationReport.model_validate_json((run_dir / "validation.json").read_text())
    assert again.model_dump(exclude={"created"}) == report.model_dump(exclude={"created"})


def test_a_validation_that_meets_its_crash_limit_stops_saying_so_and_the_next_goes_on(tmp_path, monkeypatch):
    """At its crash limit a validation stops, writing no report, and says the crashes are recorded
    and to run it again: the next refuses them without running them and validates the rest."""
    from genesis_core.validation import _validate

    run_dir, points = _swept_with_a_bug_on_2023(tmp_path, "crashes on 2023")
    monkeypatch.setattr(_validate, "VALIDATION_CRASHES", 1)
    stopped = genesis("validate", str(run_dir))
    assert stopped.returncode == 1 and " ".join(stopped.stderr.split()) == (
        f"error: 1 backtests crashed the validation process, each recorded in {run_dir / 'crashes.json'}: run the same "
        "command again to go on (those are refused without being run)"), stopped.stderr
    assert not (run_dir / "validation.json").exists()
    assert list(json.loads((run_dir / "crashes.json").read_text()).values()) == [CRASHED.format("validation")]
    monkeypatch.undo()
    done = genesis("validate", str(run_dir))
    assert done.returncode == 0, done.stdout
    report = ValidationReport.model_validate_json((run_dir / "validation.json").read_text())
    assert [(r.params, r.reason) for r in report.refused] == [(points[1], CRASHED.format("validation"))]
    assert sorted(c.params["period"] for c in report.candidates) == [10, 40]


def test_validate_s_bar_on_a_terminal_leaves_it_forking_the_process_that_runs_its_backtests(monkeypatch):
    """`genesis validate` on a terminal drew its bar of artifacts read from a thread of its own, so
    the process that runs its backtests was spawned (everything imported again, 2.5 s more a
    validation) where a fork takes milliseconds. The bar is now drawn from the command's thread."""
    import io

    from rich.console import Console

    from genesis_core import cli
    from genesis_core.optimizer import child_context

    screen = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=screen, force_terminal=True, width=100))
    with cli._count_bar("artifacts read", True) as bar:
        assert bar is not None
        for done in range(1, 4):
            bar(done, 3)
        assert child_context().get_start_method() == "fork"
    assert "artifacts read" in screen.getvalue() and "3/3" in screen.getvalue()


def test_a_window_on_the_bars_a_candidate_was_fitted_on_is_not_out_of_sample_and_no_candidate_passes_on_it(fresh_run):
    """`genesis validate RUN --config OTHER` with a window that shares two months with the explore
    window, or lies in the bundled model's training span (2018-06..2021-12; preflight, which refuses
    or warns of both, does not run there): candidates passed on the bars they were chosen or fitted
    on, and one was promoted. Now each fails such a window, saying why, with its numbers still
    measured; the clean window is judged as before, and promotion refuses. The report draws the
    windows validated (it drew the run config's)."""
    from tests.runs import genesis

    clean = {"start": "2022-06-01", "end": "2022-08-31"}
    loose = ValidationConfig.model_validate({**VALIDATION, "windows": [clean], "constraints": {
        "min_trades": 1, "min_profit_factor": 0.0, "max_drawdown": 0.9}})
    before = validate(fresh_run, loose)
    assert before["passed"]  # what this test is about: candidates that pass on the clean window alone
    windows = [WindowSpec(start="2022-04-01", end="2022-07-31"), WindowSpec(start="2021-09-01", end="2021-11-30")]
    after = validate(fresh_run, loose.model_copy(update={"windows": loose.windows + windows}))
    assert after["passed"] == [] and after["best"] is None
    why = ["not out of sample: overlaps the explore window 2022-03-01..2022-05-31",
           "not out of sample: the window 2021-09-01..2021-11-30 overlaps the training span of model builtin:btcusd_1h "
           "(2018-06-01..2021-12-31, BTCUSD 1h): in-sample for the model"]
    for was, c in zip(sorted(before["candidates"], key=lambda c: c["trial"]), sorted(after["candidates"], key=lambda c: c["trial"]),
                      strict=True):
        assert c["windows"][0] == was["windows"][0]  # the clean window judged as before
        for w, reason in zip(c["windows"][1:], why, strict=True):
            assert reason in w["reasons"] and not w["passed"] and w["metrics"]["num_trades"] > 0
            assert f"{w['start']}..{w['end']}: {reason}" in c["reasons"]
        assert not c["passed"]
    refusal = genesis("champion", "promote", str(fresh_run), "--trial", str(before["passed"][0]),
                      "--results-dir", str(fresh_run.parents[1]))
    assert refusal.returncode == 1 and all(reason in " ".join(refusal.stdout.split()) for reason in why)
    assert genesis("report", str(fresh_run)).returncode == 0  # its curves are of the windows validated, not the run config's
    drawn = re.findall(r"<h2>Equity and drawdown: validation window ([^<]*)</h2>", (fresh_run / "report.html").read_text())
    assert drawn == ["2022-06-01 .. 2022-08-31", "2022-04-01 .. 2022-07-31", "2021-09-01 .. 2021-11-30"]


def test_fewer_candidates_than_top_n_are_explained_by_counts_of_why_the_others_could_not_be(tmp_path):
    """A validation table with fewer candidates than validation.top_n, or none, said nothing of why:
    an empty table under "top 5 of 20 evaluated trials". Now the trials left out are counted by
    reason (outcome, pruned, each explore constraint, same outcome as a better trial) in
    validation.json and under the table; a walk-forward fold with no top says why."""
    from collections import Counter

    from tests.runs import genesis

    path = write_config(tmp_path, parameters=PARAMETERS, constraints={"min_trades": 40, "max_drawdown": 0.1},
                        validation={**VALIDATION, "top_n": 12})
    sweep(load_study_config(path).spec(), SweepOptions("grid"))  # the 12 points of the space
    run_dir = tmp_path / "results" / "runs" / "t"
    shown = genesis("validate", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    report = ValidationReport.model_validate_json((run_dir / "validation.json").read_text())
    rows = RunFolder(run_dir).read_trials_table()
    failing = [r for r in rows if r.outcome == "VALID" and r.constraints_failed]
    assert len(rows) == 12 and failing and report.left_out is not None and report.eligible is not None
    assert 0 < report.eligible == len(report.candidates) + len(report.refused) < 12
    assert report.left_out.failed_constraints == len(failing)
    assert report.left_out.constraints == dict(Counter(name for r in failing for name in r.constraints_failed))
    assert sum(report.left_out.outcomes.values()) == sum(r.outcome != "VALID" for r in rows)
    assert report.eligible + report.left_out.failed_constraints + sum(report.left_out.outcomes.values()) \
        + report.left_out.pruned + report.left_out.repeats == 12
    line = (f"only {report.eligible} of the 12 evaluated trials could be candidates (VALID, unpruned, distinct configs, "
            f"explore constraints met): {len(failing)} failed the explore constraints (")
    assert line in shown.stdout and report.short() in shown.stdout.replace("\n", "")

    none = write_config(tmp_path, "none.yaml", parameters=PARAMETERS, constraints={"min_profit_factor": 50.0},
                        meta={"study_name": "none", "stop": {"max_trials": 3}},
                        validation={**VALIDATION, "walk_forward": {"folds": 2, "start": "2022-01-01", "end": "2022-09-30"}})
    folds = genesis("walk-forward", str(none))
    assert folds.returncode == 0, folds.stderr
    wf = json.loads((tmp_path / "results" / "runs" / "none-walk-forward" / "walk_forward.json").read_text())
    for f in wf["folds"]:
        v = ValidationReport.model_validate_json((Path(f["run_dir"]) / "validation.json").read_text())
        assert f["top"] is None and v.eligible == 0 and v.left_out is not None
        assert f["no_top"] == v.short() == (f"no candidate: none of the {f['evaluated_trials']} evaluated trials could be one "
                                            f"(VALID, unpruned, distinct configs, explore constraints met): "
                                            f"{v.left_out.failed_constraints} failed the explore constraints "
                                            f"(min_profit_factor {v.left_out.failed_constraints})")
        assert f"fold {f['fold']}: {f['no_top']}" in folds.stdout.replace("\n", "")
    assert wf["aggregate"]["mean_validation_score"] is None and "the tops (each fold's explore best) of 0 folds" in folds.stdout
    # the config changed since: preflight's way on (--study NAME, or --force-resume) is walk-forward's too
    changed = none.read_text().replace("min_profit_factor: 50.0", "min_profit_factor: 40.0")
    assert changed != none.read_text()
    none.write_text(changed)
    blocked = genesis("walk-forward", str(none))
    assert blocked.returncode == 1 and "study 'none-wf1' (3 trials) was made with other settings" in blocked.stderr
    assert "--study NAME for a study of its own, or --force-resume to go on in this one" in blocked.stderr
    apart = genesis("walk-forward", str(none), "--study", "other")
    assert apart.returncode == 0, apart.stderr
    other = json.loads((tmp_path / "results" / "runs" / "other-walk-forward" / "walk_forward.json").read_text())
    assert other["study"] == "other" and [Path(f["run_dir"]).name for f in other["folds"]] == ["other-wf1", "other-wf2"]
    assert all(f["evaluated_trials"] == 3 for f in other["folds"])
    forced = genesis("walk-forward", str(none), "--force-resume", "--max-trials", "4")
    assert forced.returncode == 0, forced.stderr
    for f in json.loads((tmp_path / "results" / "runs" / "none-walk-forward" / "walk_forward.json").read_text())["folds"]:
        run = json.loads((Path(f["run_dir"]) / "run.json").read_text())
        assert f["evaluated_trials"] == 4 and any("--force-resume" in note for note in run["sessions"][-1]["notes"])


def test_a_walk_forward_fold_whose_every_candidate_is_refused_says_so(tmp_path):
    """A user strategy that raises on 2023's bars, walked forward into 2023: the fold's candidates
    are all refused on its validation block, and the fold says so with each reason, where it showed
    an empty row."""
    from tests.runs import genesis

    base = tmp_path / "bug.yaml"
    base.write_text(yaml.safe_dump({"strategy": "tests.strategy.misbehaving_strategy:Misbehaving", "params": {"bug": "raises on 2023"}}))
    path = write_config(tmp_path, meta={"base_config": str(base), "stop": {"max_trials": 3},
                                        "sampler": {"name": "random", "kwargs": {"seed": 1}}},
                        parameters={"period": {"type": "int", "low": 10, "high": 40, "step": 10}},
                        validation={**VALIDATION, "walk_forward": {"folds": 1, "start": "2022-05-01", "end": "2023-02-28"}})
    ran = genesis("walk-forward", str(path), "--json")
    assert ran.returncode == 0, ran.stderr
    (fold,) = json.loads(ran.stdout)["folds"]
    v = ValidationReport.model_validate_json((Path(fold["run_dir"]) / "validation.json").read_text())
    assert fold["top"] is None and not v.candidates and len(v.refused) == v.eligible >= 2
    assert v.short() is None  # fewer than top_n (4) because the run has fewer, not because any was left out
    assert fold["no_top"] == "every candidate was refused on the block: " + "; ".join(f"#{r.trial}: {r.reason}" for r in v.refused)
    assert all("raised ZeroDivisionError: division by zero" in r.reason for r in v.refused)


def test_a_validation_says_which_other_runs_of_its_market_were_validated_on_its_windows(validated_run, tmp_path):
    """Every study of a results folder may validate on the same windows, and choosing among them by
    those windows fits them; nothing said how often they had been looked at. validation.json now
    lists the other runs of the same market validated on a day of its windows, and the CLI and the
    report say so; runs on other windows or of another market are not counted."""
    import shutil

    from tests.runs import genesis

    runs = tmp_path / "results" / "runs"
    for name in ("t", "t2", "other-windows", "eth"):
        shutil.copytree(validated_run, runs / name)
    validate(runs / "other-windows", ValidationConfig.model_validate({**VALIDATION, "windows": [{"start": "2023-01-01", "end": "2023-03-31"}]}))
    run_json = runs / "eth" / "run.json"
    eth = json.loads(run_json.read_text())
    eth["config"]["meta"]["symbol"] = "ETHUSD"  # a run of another market on the same windows
    run_json.write_text(json.dumps(eth))
    shown = genesis("validate", str(runs / "t2"))
    assert shown.returncode == 0, shown.stderr
    report = ValidationReport.model_validate_json((runs / "t2" / "validation.json").read_text())
    assert report.looked_before == ["t"]
    assert ("note: 1 other run(s) of this market here were validated on days of these windows (t): each look makes them less "
            "out of sample; keep a last window none has seen for the final check") in shown.stderr.replace("\n", " ")
    alone = validate(runs / "other-windows", ValidationConfig.model_validate(
        {**VALIDATION, "windows": [{"start": "2023-01-01", "end": "2023-03-31"}]}))
    assert alone["looked_before"] == []


def test_a_validation_counts_the_configs_backtested_by_hand_on_its_windows(fresh_run):
    """Tuning a config by hand with `genesis backtest` on a validation window, then validating,
    made the window no more out of sample than choosing among runs by it, and nothing said so.
    validation.json counts the other configs backtested here on days of its windows (a candidate
    re-run there, or a config run on other days, does not count), and the CLI says so."""
    from tests.runs import genesis

    results = fresh_run.parent.parent
    report = ValidationReport.model_validate(validate(fresh_run))
    candidates = {c.trial for c in report.candidates}
    others = [n for n in RunFolder(fresh_run).evaluated_numbers() if n not in candidates
              and RunFolder(fresh_run).read_trial(n).fingerprints["config"] not in {c.config_fingerprint for c in report.candidates}]
    looks = [(others[0], "2022-07-01", "2022-07-31"), (others[1], "2022-11-01", "2022-12-31"), (others[1], "2022-06-15", "2022-06-20"),
             (others[2], "2022-03-01", "2022-05-31"), (min(candidates), "2022-06-01", "2022-08-31")]
    for i, (trial, start, end) in enumerate(looks):  # two configs on the windows' days, one before them, a candidate
        proc = genesis("backtest", "--trial", f"{fresh_run}:{trial}", "--start", start, "--end", end, "--out",
                       str(results / "backtests" / f"{i}.json"))
        assert proc.returncode == 0, proc.stderr
    (results / "backtests" / "junk.json").write_text("{not a result")
    shown = genesis("validate", str(fresh_run))
    assert shown.returncode == 0, shown.stderr
    again = ValidationReport.model_validate_json((fresh_run / "validation.json").read_text())
    assert again.backtested_before == 2 and report.backtested_before == 0
    assert ("note: 2 other config(s) were backtested here on days of these windows (genesis backtest: results/backtests): each "
            "look makes them less out of sample") in " ".join(shown.stderr.split())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_validation_stopped_by_a_signal_says_what_became_of_validation_json_and_leaves_no_piece(fresh_run, sig):
    """Ctrl-C during `genesis validate` ended it with exit 130 and not a word, and SIGTERM killed it
    (a temporary file it was writing would have stayed). Stopped in the robustness map of its second
    candidate, it now says validation.json is as it was (or was not written), exits 128 + the
    signal, and the run folder holds what it held."""
    from tests.runs import genesis_killed_after

    path = fresh_run / "validation.json"
    if sig == signal.SIGTERM:
        path.unlink()
    before = {p.name: p.read_bytes() for p in fresh_run.iterdir() if p.is_file()}
    stopped = genesis_killed_after("genesis_core.validation._validate:robustness", 2, "validate", str(fresh_run), sig=sig)
    kept = "is as it was" if sig == signal.SIGINT else "was not written"
    assert (stopped.returncode, stopped.stderr) == (128 + sig, f"interrupted: {path} {kept}; run the same command again to validate\n")
    assert {p.name: p.read_bytes() for p in fresh_run.iterdir() if p.is_file()} == before
    again = genesis("validate", str(fresh_run))  # and the same command then validates
    assert again.returncode == 0 and ValidationReport.model_validate_json(path.read_text()).candidates

"""Preflight on the bundled data: each check catches what it is for, and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from genesis_core.data import format_ts, parse_ts
from genesis_core.preflight import preflight as preflight_config
from genesis_core.study import load_study_config
from tests.optimizer.test_optimizer import ROOT, write_config
from tests.runs import genesis, genesis_apart, optimize, promote
from tests.validation.conftest import PARAMETERS, VALIDATION, validated_config


def preflight(path, **options):
    return preflight_config(load_study_config(path), **options)


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_good_config_passes_every_check_and_writes_nothing(tmp_path):
    checks = _by_name(preflight(validated_config(tmp_path), max_trials=12))  # the space's 12 points: none repeated
    assert {n: c.status for n, c in checks.items()} == {
        "config": "pass", "stop policy": "pass", "data": "pass", "windows covered": "pass", "gaps": "pass", "market": "pass",
        "model inputs": "pass", "model training": "pass", "champion in space": "pass", "smoke run": "pass", "lookahead": "pass",
        "warm-up": "pass", "inert parameters": "pass", "storage": "pass", "expected run time": "pass"}
    assert checks["stop policy"].detail == "stops at the first of: 12 trials"
    assert checks["warm-up"].detail == ("at 3 point(s) of the space each bar is decided as it was after 3 times the warm-up "
                                        "(up to 1,539 bars, as far as the data reaches before the explore window)")
    assert "will be created" in checks["storage"].detail and "for 12 trials on 1 worker(s):" in checks["expected run time"].detail
    assert not (tmp_path / "results").exists()


def test_the_zones_override_case_is_caught_as_inert(tmp_path):
    """Top-level entry thresholds are overridden by signal_adaptation.zones: searching them changes nothing."""
    path = validated_config(tmp_path, parameters={**PARAMETERS,
                                                  "thresholds.entry_conf_overall": {"type": "float", "low": 0.5, "high": 0.6},
                                                  "thresholds.regime_proba.balanced": {"type": "float", "low": 0.5, "high": 0.6}})
    inert = _by_name(preflight(path))["inert parameters"]
    assert inert.status == "fail"
    assert "2 of 5 searched parameters changed nothing" in inert.detail
    assert "thresholds.entry_conf_overall" in inert.detail and "thresholds.regime_proba.balanced" in inert.detail
    assert "exits.max_bars_held" not in inert.detail


def test_a_choice_refused_everywhere_is_named_with_its_reason_not_taken_for_an_inert_parameter(tmp_path):
    """``gates.htf.timeframe: 90m`` passes the config's checks on 1h bars and is refused only as the
    backtest asks for its HTF trend. Preflight said the parameter changed nothing (the refused choice
    was skipped, so one outcome was left) and sent the user to look for an override; it names the
    choice and why instead. A choice refused only at some points is the optimizer's FAIL, as before."""
    path = validated_config(tmp_path, parameters={**PARAMETERS, "gates.htf.timeframe": {"type": "categorical",
                                                                                         "choices": ["4h", "90m", "1d"]}})
    checks = _by_name(preflight(path))
    assert checks["refused choices"].status == "fail"
    assert checks["refused choices"].detail.endswith(
        "(each trial that draws one fails): gates.htf.timeframe = '90m' (higher timeframe 90m must be a multiple of the data's 1h)")
    assert checks["inert parameters"].status == "pass"
    (tmp_path / "good").mkdir()
    good = _by_name(preflight(validated_config(tmp_path / "good", parameters={
        **PARAMETERS, "gates.htf.timeframe": {"type": "categorical", "choices": ["4h", "1d"]}})))
    assert "refused choices" not in good and good["inert parameters"].status == "pass"


def test_a_budget_beyond_a_finite_space_is_named_with_the_grid_sweep_that_backtests_each_point_once(tmp_path):
    """5 whole numbers, 5 steps of a float (1.5 .. 2.5 by 0.25) and 2 choices make 50 points; past
    them a budget's trials can only repeat one. The grid sweep preflight names adds exactly those
    50 points, none twice."""
    from genesis_core.optimizer import SweepOptions, sweep

    space = {"exits.max_bars_held": {"type": "int", "low": 10, "high": 14},
             "exits.stop_loss_atr": {"type": "float", "low": 1.5, "high": 2.5, "step": 0.25},
             "gates.htf.enabled": {"type": "categorical", "choices": [True, False]}}
    path = validated_config(tmp_path, parameters=space, meta={"stop": {"max_trials": 60}})
    check = _by_name(preflight(path))["space size"]
    assert (check.status, check.detail) == ("warn", "the space holds 50 distinct points, fewer than the budget's 60 trials: the 10 "
                                            "past them can only repeat a point (answered from the score cache; 50 in a row end the "
                                            "run: meta.duplicate_streak_limit); `genesis sweep CONFIG --method grid --levels 5` "
                                            "backtests each point once")
    summary = sweep(load_study_config(path).spec(), SweepOptions("grid", levels=5, workers=1))
    assert (summary.cache.total_trials, summary.cache.unique_backtests) == (50, 50)
    assert "space size" not in _by_name(preflight(path, max_trials=50))
    (tmp_path / "log").mkdir()  # a log scale's grid spreads over the logarithm: no levels hold every point
    log = _by_name(preflight(validated_config(tmp_path / "log", parameters={
        **space, "exits.max_bars_held": {"type": "int", "low": 10, "high": 14, "log": True}}, meta={"stop": {"max_trials": 60}})))
    assert log["space size"].detail.endswith("(answered from the score cache; 50 in a row end the run: meta.duplicate_streak_limit)")
    (tmp_path / "free").mkdir()  # a float without a step: no end to the points
    free = validated_config(tmp_path / "free", parameters={**space, "exits.stop_loss_atr": {"type": "float", "low": 1.5, "high": 2.6}},
                            meta={"stop": {"max_trials": 60}})
    assert "space size" not in _by_name(preflight(free))


def test_workers_in_reproducible_batches_that_would_share_next_to_nothing_are_a_warning_with_the_measured_split(
        tmp_path, monkeypatch):
    """A seed on the journal runs two workers in reproducible batches: one process asks, records and
    tells every trial, the other takes backtests only. A reference backtest is a fraction of a trial,
    so the second worker adds next to nothing (1.20-1.28 s for the bundled 300 trials, against
    1.10-1.26 s on one worker); preflight says so with what it measured, and what to do instead.
    Measured on the bundled config the gain lies near the threshold (once just under 1.25, warned of, and
    printed rounded as 1.25), so the verdict is asserted against the figures printed, and each side of
    the threshold with the two times given (a trial of 4 ms, its backtest 0.8 ms or 3.6 ms). Free-running
    workers, and a single worker, are not warned of."""
    import re

    import pytest

    from genesis_core import preflight as preflight_module

    pattern = (r"for 16 trials on 2 workers in reproducible batches: ([\d.]+) ms a trial at first .*; the workers share "
               r"the backtests only \(([\d.]+) ms of a trial\), so they run at most ([\d.]+)x as fast as one")
    warning = ": one worker is as fast and as reproducible; meta.parallel: free runs them side by side"
    for backtest, verdict in ((None, None), (0.0008, "warn"), (0.0036, "pass")):
        if backtest is not None:
            monkeypatch.setattr(preflight_module, "_trial_seconds", lambda *a: 0.004)
            monkeypatch.setattr(preflight_module, "_measure_seconds", lambda *a, b=backtest: b)
        (tmp_path / str(backtest)).mkdir()
        check = _by_name(preflight(validated_config(tmp_path / str(backtest), meta={"n_workers": 2})))["expected run time"]
        found = re.search(pattern, check.detail)
        assert found, check.detail
        trial, shared, gain = map(float, found.groups())
        assert 0 < shared < trial and gain == pytest.approx(trial / (trial - shared / 2), abs=0.03)
        assert check.status == verdict or verdict is None, check.detail
        assert (warning in check.detail) == (check.status == "warn")
        assert gain <= preflight_module.WORTH_BATCHES if check.status == "warn" else gain >= preflight_module.WORTH_BATCHES
        monkeypatch.undo()
    for name, meta in (("free", {"n_workers": 2, "parallel": "free"}), ("one", {"n_workers": 1})):
        (tmp_path / name).mkdir()
        check = _by_name(preflight(validated_config(tmp_path / name, meta=meta)))["expected run time"]
        assert check.status == "pass" and f"for 16 trials on {meta['n_workers']} worker(s): " in check.detail


def test_a_window_outside_the_data_fails(tmp_path):
    path = validated_config(tmp_path, validation={**VALIDATION, "windows": [{"start": "2023-12-01", "end": "2024-03-31"}]})
    checks = _by_name(preflight(path))
    assert checks["windows covered"].status == "fail"
    assert "validation 1 2023-12-01..2024-03-31" in checks["windows covered"].detail
    assert "does not cover the window" in checks["windows covered"].detail
    assert "smoke run" not in checks  # nothing to run on
    early = write_config(tmp_path, "early.yaml", meta={"sample_start": "2018-05-16", "sample_end": "2018-06-30"})
    detail = _by_name(preflight(early))["windows covered"].detail
    assert "needs" in detail and "warm-up bars" in detail


def test_validation_overlapping_explore_is_a_warning(tmp_path):
    path = validated_config(tmp_path, validation={**VALIDATION, "windows": [{"start": "2022-05-01", "end": "2022-06-30"}]})
    check = _by_name(preflight(path))["out of sample"]
    assert check.status == "warn" and "overlap the explore window 2022-03-01..2022-05-31: not out of sample, so no candidate passes on them" in check.detail


def test_validation_windows_that_share_days_are_a_warning(tmp_path):
    """Two windows sharing August (a copied date) made every August day count twice in a
    candidate's mean score and its pass on both look like two, with nothing said."""
    windows = [{"start": "2022-06-01", "end": "2022-08-31"}, {"start": "2022-08-01", "end": "2022-09-30"},
               {"start": "2022-10-01", "end": "2022-11-30"}]
    check = _by_name(preflight(validated_config(tmp_path, validation={**VALIDATION, "windows": windows})))["validation windows"]
    assert check.status == "warn" and check.detail == (
        "validation windows 1 (2022-06-01..2022-08-31) and 2 (2022-08-01..2022-09-30) share days: each such day counts twice "
        "in a candidate's mean score, and a pass on both is one pass on those days")
    assert "validation windows" not in _by_name(preflight(validated_config(tmp_path, "apart.yaml")))  # the usual two, apart


def test_a_champion_outside_the_space_is_named(validated_run, tmp_path):
    import shutil

    run_dir = tmp_path / "results" / "runs" / "t"
    shutil.copytree(validated_run, run_dir)
    assert promote(run_dir).promoted
    narrow = {**PARAMETERS, "exits.stop_loss_atr": {"type": "float", "low": 3.0, "high": 4.0, "step": 0.5}}
    check = _by_name(preflight(validated_config(tmp_path, "narrow.yaml", parameters=narrow)))["champion in space"]
    assert check.status == "warn"
    assert "exits.stop_loss_atr: " in check.detail and "is outside 3.0 .. 4.0" in check.detail
    inside = _by_name(preflight(validated_config(tmp_path, "same.yaml")))["champion in space"]
    assert inside.status == "pass" and "base point: champion" in inside.detail


def test_an_existing_study_with_another_signature_fails_and_a_matching_one_passes(tmp_path):
    path = validated_config(tmp_path, meta={"stop": {"max_trials": 3}})
    optimize(path)
    assert "signature matches" in _by_name(preflight(path))["storage"].detail
    changed = validated_config(tmp_path, "changed.yaml", constraints={"min_trades": 99})
    storage = _by_name(preflight(changed))["storage"]
    assert storage.status == "fail" and "scoring:" in storage.detail
    assert _by_name(preflight(changed, force_resume=True))["storage"].status == "warn"


def test_a_journal_whose_other_studies_hold_many_trials_or_a_sweep_that_would_make_it_so_is_a_warning(tmp_path, monkeypatch):
    """Every process reads a journal whole as it starts, whatever study it runs: after sweeps of
    1.6 million trials into a results folder's journal, a 5-trial run of a new study took 71 s and
    6.5 GB, and nothing said why. Over ``SHARED_TRIALS`` other studies' trials (here 5) preflight
    says so, with the time it took and a journal of the study's own; so does a sweep of more
    points than that into the default journal, or one other studies share."""
    import re

    from genesis_core import preflight as preflight_module
    from genesis_core.optimizer import SweepOptions

    monkeypatch.setattr(preflight_module, "SHARED_TRIALS", 5)
    other = validated_config(tmp_path, "other.yaml", meta={"study_name": "other", "stop": {"max_trials": 6}})
    optimize(other)
    mine = validated_config(tmp_path)
    journal = f"journal:///{tmp_path / 'results' / 'optuna.journal'}"
    shared = _by_name(preflight(mine))["shared journal"]
    assert shared.status == "warn" and re.fullmatch(
        f"{re.escape(journal)} holds 10 trials of 2 other studies \\(other 6, other\\.feasibility 4\\), which every process of this run reads as it starts "
        f"\\(\\d+\\.\\d s here, and memory for each trial\\); a study in a journal of its own starts at once: --storage "
        f"journal:///{re.escape(str(tmp_path / 'results' / 't.journal'))} \\(or meta.storage\\)", shared.detail), shared.detail
    own = f"journal:///{tmp_path / 'results' / 't.journal'}"
    assert "shared journal" not in _by_name(preflight(mine, storage=own))  # its own: nothing else read
    grid = SweepOptions("grid", levels=2)  # every choice of the test space's categoricals: 12 points
    assert _by_name(preflight(mine, storage=own, sweep=grid)).get("shared journal") is None
    empty = tmp_path / "fresh"
    empty.mkdir()
    swept = _by_name(preflight(validated_config(empty), sweep=grid))["shared journal"]  # the default journal, none in it yet
    assert swept.detail == (f"this sweep adds 12 trials to journal:///{empty / 'results' / 'optuna.journal'}, which every process "
                            "of every other study in it then reads as it starts (the results folder's default journal); a study in a "
                            f"journal of its own starts at once: --storage journal:///{empty / 'results' / 't.journal'}")
    monkeypatch.setattr(preflight_module, "SHARED_TRIALS", 10)
    assert "shared journal" not in _by_name(preflight(mine))


def test_cli_exit_codes_json_and_optimize_refusing_to_start(tmp_path):
    bad = validated_config(tmp_path, "bad.yaml", parameters={**PARAMETERS, "thresholds.entry_conf_overall":
                                                             {"type": "float", "low": 0.5, "high": 0.6}})

    def genesis(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "genesis_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)

    proc = genesis("preflight", str(bad), "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["ok"] is False and report["failed"] == 1
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["inert parameters"]
    assert "Preflight: 1 failed" in genesis("preflight", str(bad)).stdout
    refused = genesis("optimize", str(bad))
    assert refused.returncode == 1 and "preflight failed (run not started" in refused.stderr
    assert not (tmp_path / "results").exists()
    skipped = genesis("optimize", str(bad), "--skip-preflight", "--max-trials", "2")
    assert skipped.returncode == 0, skipped.stderr
    run = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())
    assert run["sessions"][-1]["preflight"] == {"skipped": True}
    broken = write_config(tmp_path, "broken.yaml", meta={"sample_start": "not a date"})
    proc = genesis("preflight", str(broken), "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["checks"][0]["name"] == "config"


def test_a_hole_in_a_window_is_said_and_a_long_one_is_a_warning(tmp_path):
    """The bundled file with ten days of April 2022 cut out (an exchange outage a user's download
    may have): preflight said nothing, and the explore window's bars either side of the hole were
    traded as neighbours. Now the gaps check names each window's holes, a warning when one is a day
    long or more; the bundled file's own holes (hours) are named but pass."""
    import gzip

    lines = gzip.open(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz", "rt").read().splitlines()
    holed = tmp_path / "holed.csv"
    holed.write_text("\n".join(line for line in lines if not "2022-04-10" <= line[:10] <= "2022-04-19") + "\n")
    check = _by_name(preflight(validated_config(tmp_path, meta={"data": str(holed)})))["gaps"]
    assert check.status == "warn"
    assert check.detail.startswith("explore 2022-03-01..2022-05-31: 1 gap(s), 240 missing bar(s), largest 241h after "
                                   "2022-04-09T23:00:00Z; ")
    (tmp_path / "b").mkdir()
    bundled = _by_name(preflight(validated_config(tmp_path / "b")))["gaps"]  # its validation window holds 2022-10-12's 4 bars
    assert bundled.status == "pass" and "4 missing bar(s), largest 5h after 2022-10-12T07:00:00Z" in bundled.detail
    assert bundled.detail.endswith("(none a day long, none 1% of its window)")


def test_a_validation_window_on_the_bars_the_champion_s_unsearched_params_were_chosen_on_fails(validated_run, tmp_path):
    """A study that narrows the search after a promotion inherits the champion's other params,
    chosen on the champion's explore window (2022-03..05). Validating on those bars is not out of
    sample for them, and validation cannot see it (it knows only the trial's own explore window):
    preflight fails it, naming the params and the windows, and passes once they are searched, the
    merge is skipped, or the windows lie after."""
    import shutil

    from genesis_core.backtest import get_path

    run_dir = tmp_path / "results" / "runs" / "t"
    shutil.copytree(validated_run, run_dir)
    assert promote(run_dir).promoted
    champion = json.loads((tmp_path / "results" / "champions" / "BTCUSD_1h.json").read_text())
    base = __import__("yaml").safe_load((ROOT / "configs" / "reference.yaml").read_text())["params"]
    inherited = sorted(p for p in PARAMETERS if p != "exits.max_bars_held"
                       and get_path(champion["effective_config"]["params"], p) != get_path(base, p))
    assert inherited  # the champion's values differ from the base config's: what the narrowed study inherits
    narrow = {"exits.max_bars_held": PARAMETERS["exits.max_bars_held"]}
    before = {"start": "2022-01-01", "end": "2022-03-15"}  # shares March 2022 with the champion's explore window
    late = {"meta": {"sample_start": "2022-06-01", "sample_end": "2022-08-31", "study_name": "narrow"}}
    leaky = validated_config(tmp_path, "leaky.yaml", parameters=narrow, **late,
                             validation={**VALIDATION, "windows": [before, {"start": "2022-09-01", "end": "2022-11-30"}],
                                         "walk_forward": {"folds": 2, "start": "2021-12-01", "end": "2022-08-31"}})
    check = _by_name(preflight(leaky))["champion inherited"]
    assert check.status == "fail", check
    assert check.detail == (f"{len(inherited)} param(s) this study does not search come from the BTCUSD 1h champion "
                            f"({', '.join(inherited)}), chosen on its explore window 2022-03-01..2022-05-31; validation "
                            "2022-01-01..2022-03-15, walk-forward fold 1's 2022-03-02..2022-05-31 overlap(s) it: not out of "
                            "sample for them; search them too, set meta.skip_champion_merge: true, or validate after 2022-05-31")
    result = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(leaky)], capture_output=True, text=True)
    assert result.returncode == 1 and "champion inherited: " in result.stderr and not (tmp_path / "results" / "runs" / "narrow").exists()
    after = validated_config(tmp_path, "after.yaml", parameters=narrow, **late,
                             validation={**VALIDATION, "windows": [{"start": "2022-09-01", "end": "2022-11-30"}]})
    fine = _by_name(preflight(after))
    assert fine["champion inherited"].status == "pass" and "no validation window on those bars" in fine["champion inherited"].detail
    assert all(c.status != "fail" for c in fine.values())
    searched = _by_name(preflight(validated_config(tmp_path, "all.yaml", **late, validation={**VALIDATION, "windows": [before]})))
    assert searched["champion inherited"].status == "pass" and "are all searched" in searched["champion inherited"].detail
    skipped = validated_config(tmp_path, "skip.yaml", parameters=narrow, validation={**VALIDATION, "windows": [before]},
                               meta={**late["meta"], "skip_champion_merge": True})
    assert "champion inherited" not in _by_name(preflight(skipped))


def test_a_bad_tick_is_named_by_data_check_backtest_and_preflight(tmp_path):
    """The bundled file with one high slipped by three decimals (8,430 read as 8,430,000), as a bad
    tick in a download would be: data check, the backtest and preflight said nothing, and the
    engine read that high for stops, targets and liquidation. Each now names the bar and the factor;
    the bundled file has no such bar."""
    import gzip
    import html

    lines = gzip.open(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz", "rt").read().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("2022-04-12T10:00:00Z"))
    cells = lines[at].split(",")
    high, previous_close = float(cells[2]) * 1000, float(lines[at - 1].split(",")[4])
    cells[2] = repr(high)
    lines[at] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    described = (f"1 bar(s) whose high or low is at least 2x above or below the previous close (a bad tick?), the largest "
                 f"{high / previous_close:,.4g}x at 2022-04-12T10:00:00Z (high {high:,.8g} after a close of {previous_close:,.8g})")

    checked = genesis("data", "check", str(bad), "--json")
    summary = json.loads(checked.stdout)
    assert (summary["spikes"], summary["largest_spike_at"]) == (1, "2022-04-12T10:00:00Z")
    assert described in genesis("data", "check", str(bad)).stderr.replace("\n", "")
    assert json.loads(genesis("data", "check", str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"), "--json").stdout)["spikes"] == 0
    huge = tmp_path / "huge.csv"  # a price of 1e300: the factor was printed in its 297 figures
    huge.write_text("\n".join([*lines[:at], lines[at].replace(repr(high), "1e300"), *lines[at + 1:]]) + "\n")
    assert f"the largest {1e300 / previous_close:,.4g}x at 2022-04-12T10:00:00Z (high 1e+300 after" in \
        genesis("data", "check", str(huge)).stderr.replace("\n", "")

    shown = genesis("backtest", "-c", str(ROOT / "configs" / "reference.yaml"), "--data", str(bad), "--start", "2022-04-01",
                    "--end", "2022-04-30", "--out", str(tmp_path / "bt.json"))
    assert shown.returncode == 0 and f"warning: window has {described}" in shown.stderr.replace("\n", "")
    # --json said none of its warnings, and the page none: stdout stays the JSON, the page has them above the metrics
    page = tmp_path / "bt.html"
    quiet = genesis("backtest", "-c", str(ROOT / "configs" / "reference.yaml"), "--data", str(bad), "--start", "2022-04-01",
                    "--end", "2022-04-30", "--out", str(tmp_path / "bt.json"), "--json", "--report", str(page))
    assert quiet.returncode == 0 and json.loads(quiet.stdout)["window"]["first_bar"] == "2022-04-01T00:00:00Z"
    assert f"warning: window has {described}" in quiet.stderr.replace("\n", "")
    assert f"<h2>Read with care</h2><p class='note'>window has {html.escape(described)}</p>" in page.read_text()
    clean = genesis("backtest", "-c", str(ROOT / "configs" / "reference.yaml"), "--data", str(bad), "--start", "2022-05-01",
                    "--end", "2022-05-31", "--out", str(tmp_path / "bt2.json"))
    assert clean.returncode == 0 and "bad tick" not in clean.stderr

    config = validated_config(tmp_path, meta={"data": str(bad), "stop": {"max_trials": 3}})
    check = _by_name(preflight(config))["spikes"]
    assert check.status == "warn" and check.detail.startswith(f"explore 2022-03-01..2022-05-31: {described}: a bar's high")
    # a run's page said nothing of what preflight warned of before its sessions: it heads the page now
    assert genesis("optimize", str(config)).returncode == 0
    run_page = tmp_path / "run.html"
    assert genesis("report", str(tmp_path / "results" / "runs" / "t"), "--out", str(run_page)).returncode == 0
    assert f"<h2>Read with care</h2><p class='note'>preflight spikes: {html.escape(check.detail)}</p>" in run_page.read_text()
    (tmp_path / "b").mkdir()
    assert "spikes" not in _by_name(preflight(validated_config(tmp_path / "b")))


def _march_may(tmp_path, name: str, **costs: float) -> tuple[Path, SimpleNamespace, dict]:
    """The reference config over March-May 2022 with ``costs`` changed, written to ``name``: its
    path, `genesis backtest`'s run of it and its result."""
    import yaml

    base = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text())
    base["costs"] |= costs
    base["data"] |= {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"), "start": "2022-03-01", "end": "2022-05-31"}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base))
    ran = genesis("backtest", "-c", str(path), "--out", str(tmp_path / f"{name}.json"))
    return path, ran, json.loads((tmp_path / f"{name}.json").read_text())


def _march_may_as_bundled(tmp_path) -> SimpleNamespace:
    """`genesis backtest` of the bundled reference config (its costs) over March-May 2022."""
    return genesis("backtest", "-c", str(ROOT / "configs" / "reference.yaml"), "--start", "2022-03-01", "--end", "2022-05-31",
                   "--out", str(tmp_path / "bundled.json"))


def test_fills_larger_than_a_bar_s_traded_volume_are_said_by_the_backtest_and_preflight(tmp_path):
    """With 1,000,000 of equity the reference strategy's orders are a large share of the hour's
    Bitfinex volume on quiet nights, filled at the open with 5 bps of slippage; nothing said so.
    The backtest now counts the fills that took 10% or more of their bar's volume and names the
    largest, as preflight does at the base point; the default 10,000 takes far less."""
    from genesis_core.data import load_candles

    big, ran, result = _march_may(tmp_path, "big.yaml", initial_equity=1_000_000)
    trades = result["trades"]
    candles = load_candles(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz")
    volume = dict(zip(candles.timestamps.tolist(), candles.volume.tolist(), strict=True))
    shares = [(t["units"] / volume[parse_ts(t[at])], t["units"], t[at]) for t in trades for at in ("entry_time", "exit_time")]
    over = [s for s in shares if s[0] >= 0.1]
    share, units, at = max(shares)
    assert len(over) >= 10 and share > 0.5, (len(over), share)
    said = (f"warning: {len(over)} of {len(shares)} fills took 10% or more of their bar's traded volume, the largest "
            f"{share:.0%} ({units:,.6g} units of {volume[parse_ts(at)]:,.6g} at {at}): at that size the price moves more "
            "than 5 bps of slippage; lower costs.initial_equity (1,000,000) or the size, or raise costs.slippage_bps")
    assert ran.returncode == 0 and said in ran.stderr.replace("\n", ""), ran.stderr
    _, ran, result = _march_may(tmp_path, "huge.yaml", initial_equity=1e9)  # a share of a bar's volume past 10,000%: as a factor
    share, units, at = max((t["units"] / volume[parse_ts(t[at])], t["units"], t[at]) for t in result["trades"] for at in ("entry_time", "exit_time"))
    assert share > 100 and f"the largest {share:,.4g} times it ({units:,.6g} units of {volume[parse_ts(at)]:,.6g} at {at})" in \
        ran.stderr.replace("\n", ""), ran.stderr
    small = _march_may_as_bundled(tmp_path)
    assert small.returncode == 0 and "traded volume" not in small.stderr

    check = _by_name(preflight(validated_config(tmp_path, meta={"base_config": str(big)})))["liquidity"]
    assert check.status == "warn" and check.detail.startswith("the base point's ") and "of their bar's traded volume" in check.detail
    (tmp_path / "b").mkdir()
    assert "liquidity" not in _by_name(preflight(validated_config(tmp_path / "b")))


def test_trading_that_costs_nothing_is_said_by_the_backtest_and_preflight_with_what_it_would_pay(tmp_path):
    """fee_bps 0 and slippage_bps 0.5 (a copied vectorbt default, or costs left for later): every trade
    is free, and a search's best config is the one that trades most. The backtest and preflight
    say what the trades would pay at 10 bps a fill, the notional of their fills times 10 bps."""
    free, ran, result = _march_may(tmp_path, "free.yaml", fee_bps=0, slippage_bps=0.5)
    trades = result["trades"]
    notional = sum(t["units"] * (t["entry_price"] + t["exit_price"]) for t in trades)
    assert result["metrics"]["total_fees"] == 0 and len(trades) > 20 and notional > 10 * 10_000  # turned over 10x its equity
    said = (f"warning: {len(trades)} trades pay next to nothing to trade (fee 0 bps and slippage 0.5 bps a fill), so a search "
            f"favours the configs that trade most; at 10 bps a fill (a taker's fee with slippage at many venues) they would pay "
            f"{notional / 1e3:,.0f}, {notional / 1e3 / 10_000:.0%} of the initial equity (costs.fee_bps, costs.slippage_bps)")
    assert ran.returncode == 0 and said in ran.stderr.replace("\n", ""), ran.stderr
    paid = _march_may_as_bundled(tmp_path)
    assert paid.returncode == 0 and "next to nothing" not in paid.stderr

    check = _by_name(preflight(validated_config(tmp_path, meta={"base_config": str(free)})))["costs"]
    assert check.status == "warn" and check.detail.startswith("the base point's ") and "pay next to nothing" in check.detail
    assert "costs" not in _by_name(preflight(validated_config(tmp_path, "paid.yaml")))


def test_shorts_that_pay_nothing_to_borrow_are_said_by_the_backtest_and_preflight_with_what_borrowing_would_make(tmp_path):
    """costs.carry_bps_per_day unset (as every config was before carry was modelled): an SMA
    crossover, short half of 2022, paid nothing for 192 days of shorts. The backtest and preflight
    say what it returns with shorts paying 3 bps a day, which a backtest with that rate set gives;
    not for the reference strategy, whose shorts would cost it 1% of its equity, nor with a rate set."""
    import yaml

    sma = yaml.safe_load((ROOT / "configs" / "sma_cross.yaml").read_text())
    sma["data"]["path"] = str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz")
    (tmp_path / "sma.yaml").write_text(yaml.safe_dump(sma))
    sma["costs"]["carry_bps_per_day"] = {"short": 3}
    (tmp_path / "borrowed.yaml").write_text(yaml.safe_dump(sma))
    ran = genesis("backtest", "-c", str(tmp_path / "sma.yaml"), "--out", str(tmp_path / "sma.json"))
    borrowed = genesis("backtest", "-c", str(tmp_path / "borrowed.yaml"), "--out", str(tmp_path / "borrowed.json"))
    assert ran.returncode == borrowed.returncode == 0
    made, paid = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("sma", "borrowed"))
    shorts = [t for t in made["trades"] if t["side"] == "short"]
    days = sum(parse_ts(t["exit_time"]) - parse_ts(t["entry_time"]) for t in shorts) / 86_400
    m, b = made["metrics"]["total_return"], paid["metrics"]["total_return"]
    said = (f"warning: {len(shorts)} short trades held {days:,.0f} days in all paid nothing to borrow (costs.carry_bps_per_day "
            f"unset): at 3 bps a day (a margin short's borrow, about 11% a year; a perpetual's funding is often as much) this "
            f"backtest returns {b:+.2%}, not {m:+.2%} (total_return), ending with {1 - (1 + b) / (1 + m):.1%} less equity; set "
            "costs.carry_bps_per_day: {short: ...} to what the venue charges")
    assert days > 150 and said in ran.stderr.replace("\n", ""), ran.stderr
    assert "borrow" not in borrowed.stderr  # a rate set is what the config says
    sma["costs"] |= {"fee_bps": 100, "carry_bps_per_day": {"short": 0}}  # fees take the account down to dust
    (tmp_path / "dust.yaml").write_text(yaml.safe_dump(sma))
    dust = genesis("backtest", "-c", str(tmp_path / "dust.yaml"), "--out", str(tmp_path / "dust.json"))
    sma["costs"]["carry_bps_per_day"] = {"short": 3}
    (tmp_path / "dust-borrowed.yaml").write_text(yaml.safe_dump(sma))
    genesis("backtest", "-c", str(tmp_path / "dust-borrowed.yaml"), "--out", str(tmp_path / "dust-borrowed.json"))
    m, b = (json.loads((tmp_path / f"{n}.json").read_text())["metrics"]["total_return"] for n in ("dust", "dust-borrowed"))
    assert f"{m:+.3%}" == f"{b:+.3%}" == "-99.998%"  # it said "returns -100.00%, not -100.00%"
    assert f"this backtest returns {b:+.4%}, not {m:+.4%} (total_return)" in dust.stderr.replace("\n", ""), dust.stderr
    whole_year = genesis("backtest", "-c", str(ROOT / "configs" / "reference.yaml"), "--out", str(tmp_path / "ref.json"))
    assert whole_year.returncode == 0 and "borrow" not in whole_year.stderr

    config = validated_config(tmp_path, meta={"base_config": str(tmp_path / "sma.yaml"), "sample_start": "2022-01-01",
                                              "sample_end": "2022-12-31"},
                              parameters={"fast": {"type": "int", "low": 8, "high": 12}, "slow": {"type": "int", "low": 18, "high": 22}})
    check = _by_name(preflight(config))["costs"]
    assert check.status == "warn" and check.detail.startswith("the base point's ") and "paid nothing to borrow" in check.detail


def test_indicators_that_still_remember_where_their_warm_up_began_are_warned_of_by_the_backtest_and_preflight(tmp_path):
    """The reference strategy with a daily EMA of 100 as its HTF gate warms up 2,424 bars: enough for
    the EMA's first value, not for it to forget where it began. Decided after three times as many
    bars, as a live run with the market's history decides it, 2022 trades otherwise (-23.07%
    against -25.51%), and neither the backtest nor preflight said so. Both now name the first
    decision that differs, how many bars do, and the warm-up that decides them as the longer one."""
    import numpy as np
    import yaml

    from genesis_core.backtest import Backtester, build_config

    raw = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text())
    raw["data"]["path"] = str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz")
    raw["params"]["gates"]["htf"].update(timeframe="1d", ema_period=100)
    bt = Backtester()

    def decided(warmup: int | None):
        plan = bt.plan(build_config({**raw, "data": {**raw["data"], "warmup_bars": warmup}}))
        return plan, bt.decide(plan, cached=False)

    (short, one), (_, other) = decided(None), decided(3 * 2424)
    assert short.config.data.warmup_bars == 2424 and short.window.bars == 8756
    fields = ("side", "size", "stop_dist", "take_dist", "trail_dist", "exit_long", "exit_short")
    differ = {f: ~np.isclose(getattr(one, f)[2424:], getattr(other, f)[7272:], rtol=1e-9, equal_nan=True) for f in fields}
    first = next(f for f in fields if differ[f].any())
    bar = int(np.argmax(differ[first]))
    at = short.window.candles.timestamps[2424 + bar]
    expected = (f"warning: warm-up: its {first} at {format_ts(at)} is {getattr(one, first)[2424 + bar]} after 2,424 bars of "
                f"warm-up and {getattr(other, first)[7272 + bar]} after 7,272, and {int(np.logical_or.reduce(list(differ.values())).sum())} "
                "of the window's 8,756 bars are decided otherwise: an indicator that remembers every bar it saw (an EMA, "
                "Wilder's average) still carries where its warm-up began, which the live market's longer history does not; "
                "set data.warmup_bars: 7272 or more")

    def backtest(data: dict) -> SimpleNamespace:
        path = tmp_path / "daily.yaml"
        path.write_text(yaml.safe_dump({**raw, "data": {**raw["data"], **data}}))
        ran = genesis("backtest", "--config", str(path), "--json")
        assert ran.returncode == 0, ran.stderr
        return SimpleNamespace(stderr=ran.stderr.replace("\n", ""), total_return=json.loads(ran.stdout)["metrics"]["total_return"])

    warned, longer = backtest({}), backtest({"warmup_bars": 7272})
    assert expected in warned.stderr, warned.stderr
    assert round(warned.total_return, 4) == -0.2307 and round(longer.total_return, 4) == -0.2551  # what the warning is about
    assert "warm-up:" not in longer.stderr  # decided after 7,272 bars as after 21,816
    reference = genesis("backtest", "--config", str(ROOT / "configs" / "reference.yaml"), "--data", raw["data"]["path"], "--json")
    assert reference.returncode == 0 and "warm-up:" not in reference.stderr  # its 513 bars: every indicator has forgotten

    base = tmp_path / "daily.yaml"
    base.write_text(yaml.safe_dump(raw))
    config = write_config(tmp_path, meta={"base_config": str(base), "sample_start": "2022-01-01", "sample_end": "2022-12-31"})
    check = _by_name(preflight(config))["warm-up"]
    assert check.status == "warn" and check.detail.startswith("at the base point on the explore window, its "), check
    assert "after 2,424 bars of warm-up and" in check.detail and check.detail.endswith("set data.warmup_bars: 7272 or more")


def test_prices_beyond_the_arithmetic_fail_the_smoke_run_and_their_trials_are_not_taken_for_a_parameter_that_changes_nothing(tmp_path):
    """Prices of 1e-307 pass every candle check, and every backtest on them is INVALID_NUMERIC. The
    smoke run passed them ("1 trades, outcome INVALID_NUMERIC"), the inert-parameter check then ended
    `genesis optimize` in a traceback (a metric's NaN fingerprinted), and a run started anyway
    warned that its configs gave identical metrics, a searched parameter changing nothing."""
    import csv
    import gzip

    lines = gzip.open(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz", "rt").read().splitlines()[:3000]
    prices = [lines[0].split(",").index(c) for c in ("open", "high", "low", "close")]
    rows = [[repr(float(v) * 1e-310) if i in prices else v for i, v in enumerate(line.split(","))] for line in lines[1:]]
    data = tmp_path / "tiny.csv"
    data.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    path = write_config(tmp_path, meta={"base_config": str(ROOT / "configs" / "sma_cross.yaml"), "data": str(data),
                                        "sample_start": "2018-06-01", "sample_end": "2018-09-10",
                                        "sampler": {"name": "random", "kwargs": {"seed": 1}}, "stop": {"max_trials": 6}},
                        parameters={"fast": {"type": "int", "low": 3, "high": 9}, "slow": {"type": "int", "low": 20, "high": 40}})
    closes = [float(r[prices[3]]) for r in rows if "2018-06-01" <= r[0][:10] <= "2018-09-10"]
    smoke = _by_name(preflight(path))["smoke run"]
    assert smoke.status == "fail" and smoke.detail == (
        "the base point's total_return, max_drawdown, return_to_dd, total_fees, final_equity, classic_score are not finite "
        f"numbers (INVALID_NUMERIC): the prices or sizes are beyond what the arithmetic holds (the window's closes are "
        f"{min(closes):.4g} .. {max(closes):.4g})")
    refused = genesis("optimize", str(path))
    assert refused.returncode == 1 and f"smoke run: {smoke.detail}" in refused.stderr.replace("\n", "")
    assert not (tmp_path / "results").exists()

    ran = genesis("optimize", str(path), "--skip-preflight")
    assert ran.returncode == 0 and "gave exactly the metrics" not in ran.stderr, ran.stderr
    with open(tmp_path / "results" / "runs" / "t" / "trials.csv") as fh:
        trials = list(csv.DictReader(fh))
    assert [(t["outcome"], t["production_score"], t["total_return"], t["same_outcome_as"]) for t in trials] == \
        [("INVALID_NUMERIC", "-5000.0", "", "")] * 6
    assert json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["identical_outcomes"] == 0


def test_a_grid_sampler_s_study_is_preflighted_to_the_end(tmp_path):
    """Preflight times the sampler's asks on a study of its own. A grid sampler stops its study when
    the grid is done, which Optuna allows only inside an optimize loop: `genesis optimize` of any
    study with `sampler: grid` ended in preflight, in Optuna's RuntimeError and a traceback."""
    from tests.optimizer.test_accounting import _crashing_config

    checks = _by_name(preflight(_crashing_config(tmp_path, "none")))
    assert {c.status for c in checks.values()} == {"pass"}, checks
    assert checks["expected run time"].detail.startswith("~0.0 s for 3 trials on 1 worker(s): ")
    assert not (tmp_path / "results").exists()


def test_a_point_whose_backtest_crashes_preflight_s_process_is_refused_and_preflight_said_why(tmp_path):
    """A choice of period that crashes the process running its backtest (compiled code reading address
    0): preflight, which `genesis optimize` and `genesis sweep` run first, died of SIGSEGV, and so did
    they, every time, before the optimizer that fails such a trial began. Now preflight runs in a
    process of its own: the crash is that one's; the checks run again with that backtest refused, and
    preflight fails saying which, its other checks as for a space without that choice. Off the main
    thread (a server's) its process is spawned, and says the same."""
    from tests.optimizer.test_accounting import _crash_dump, _crashing_config

    path = _crashing_config(tmp_path, "crashes at period 17")
    run = genesis_apart("optimize", str(path))
    assert run.returncode == 1 and _crash_dump(run.stderr), run.stderr[-3000:]
    reason = ("its preflight process died of SIGSEGV (Segmentation fault) evaluating it: a crash of compiled code (a strategy's, "
              "a feature's or a library's), refused")
    said = " ".join(run.stderr.split())
    assert ("error: preflight failed (run not started; --skip-preflight to start anyway): refused choices: 1 searched choice(s) "
            f"refused at every one of the 3 points of the space tried (each trial that draws one fails): period = 17 ({reason}) "
            "crashes: 1 backtest(s) crashed the process running them (where: the stack Python's faulthandler wrote to stderr; "
            "each was then refused, and the checks run again): period 17 on 2022-03-01..2022-05-31: " + reason) in said, said
    assert not (tmp_path / "results").exists()  # preflight writes nothing
    code = ("import json, sys, threading; from genesis_core.preflight import preflight, report; from genesis_core.study import "
            f"load_study_config; out = []; t = threading.Thread(target=lambda: out.append(report(preflight(load_study_config("
            f"{str(path)!r}))))); t.start(); t.join(); print(out[0].model_dump_json())")
    threaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert threaded.returncode == 0 and _crash_dump(threaded.stderr), threaded.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(threaded.stdout)["checks"]}
    assert checks["crashes"]["status"] == "fail" and checks["crashes"]["detail"].endswith(f"2022-03-01..2022-05-31: {reason}. "
                                                                                          "A trial that does so fails; with one worker the first ends the run")
    (tmp_path / "without").mkdir()
    without = _by_name(preflight(_crashing_config(tmp_path / "without", "crashes at period 17", (10, 20, 30))))
    assert without["smoke run"].status == "pass"
    for name in ("smoke run", "data", "windows covered"):  # the base point's trades and score; the random points differ
        assert checks[name]["detail"] == without[name].detail, name

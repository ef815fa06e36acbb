"""The optimizer on the bundled BTC data: duplicates, phases, resume guard, artifacts, parity."""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import gc
import json
import os
import time
import types
from pathlib import Path

import optuna
import orjson
import pytest
import yaml

from genesis_core import optimizer as api
from genesis_core.backtest import BacktestConfig, Backtester, build_config
from genesis_core.errors import ConfigError, GenesisError
from genesis_core.fingerprint import canonical_json
from genesis_core.optimizer import ResumeBlocked, RunOptions, _worker, open_storage
from genesis_core.optimizer._storage import JournalFile, flush
from genesis_core.records import RunFolder, backtest_record
from genesis_core.study import load_study_config
from tests.runs import optimize

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, name: str = "opt.yaml", **changes) -> Path:
    cfg = {
        "meta": {
            "base_config": str(ROOT / "configs" / "reference.yaml"),
            "data": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
            "sample_start": "2022-03-01", "sample_end": "2022-05-31",
            "study_name": "t", "results_dir": str(tmp_path / "results"),
            "sampler": {"name": "tpe", "kwargs": {"seed": 7, "n_startup_trials": 5}},
            "stop": {"max_trials": 12},
        },
        "parameters": {
            "exits.max_bars_held": {"type": "categorical", "choices": [12, 24]},
            "thresholds.signal_adaptation.zones.mid.entry_conf_overall": {"type": "categorical", "choices": [0.53, 0.55]},
        },
        "scoring": {"phase1": {"trials": 4}},
    }
    for section, values in changes.items():  # parameters are replaced whole, other sections merged
        cfg[section] = values if section == "parameters" else {**cfg.get(section, {}), **values}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _trials(summary) -> list[dict]:
    with open(Path(summary["run_dir"]) / "trials.csv") as fh:
        return list(csv.DictReader(fh))


def test_duplicates_get_their_real_cached_score_and_are_never_rerun(tmp_path):
    summary = optimize(write_config(tmp_path))
    rows = _trials(summary)
    assert len(rows) == 12 and all(r["state"] == "COMPLETE" for r in rows)
    assert summary["cache"]["unique_backtests"] == 4  # a 2 x 2 space
    assert summary["cache"]["cache_hits"] == 8 and summary["cache"]["hit_rate"] == pytest.approx(8 / 12, abs=1e-4)
    first = {}
    for r in rows:
        key = r["config_fingerprint"]
        if r["cached"] == "False":
            first[key] = r
    for r in rows:
        orig = first[r["config_fingerprint"]]
        assert r["feasibility_score"] == orig["feasibility_score"] and r["production_score"] == orig["production_score"]
        if r["cached"] == "True":
            assert r["outcome"] == "DUPLICATE" and int(r["cache_reused_from"]) == int(orig["number"])
        assert r["phase"] == ("1" if int(r["number"]) < 4 else "2")
        assert float(r["objective"]) == float(r["production_score"])  # one scale in the study (phase 1 chose in its companion)
        assert float(r["objective"]) not in (0.0, -1e6)
    artifacts = sorted((Path(summary["run_dir"]) / "trials").glob("*.json"))
    assert len(artifacts) == 4  # one per evaluated parameter set


def test_duplicate_streak_ends_explore_cleanly(tmp_path):
    path = write_config(tmp_path, meta={"duplicate_streak_limit": 3, "stop": {"max_trials": 40}})
    summary = optimize(path)
    assert "3 duplicate parameter sets in a row" in summary["session"]["stopped_reason"]
    assert summary["cache"]["total_trials"] < 40
    assert (Path(summary["run_dir"]) / "best_trial.json").exists()


def test_resume_reuses_the_cache_and_extends_by_stop_policy(tmp_path):
    optimize(write_config(tmp_path, meta={"stop": {"max_trials": 4}}))
    summary = optimize(write_config(tmp_path, meta={"stop": {"max_trials": 10}}))
    assert summary["cache"]["total_trials"] == 10
    assert summary["cache"]["unique_backtests"] == 4  # no set evaluated again after the resume
    run = json.loads((Path(summary["run_dir"]) / "run.json").read_text())
    assert len(run["sessions"]) == 2


def test_signature_mismatch_blocks_resume_naming_what_changed(tmp_path):
    optimize(write_config(tmp_path, meta={"stop": {"max_trials": 3}}))
    changed = write_config(tmp_path, "changed.yaml", parameters={
        "exits.max_bars_held": {"type": "categorical", "choices": [12, 24, 48]},
        "thresholds.signal_adaptation.zones.mid.entry_conf_overall": {"type": "categorical", "choices": [0.53, 0.55]},
    })
    with pytest.raises(ResumeBlocked, match=r"(?s)resume blocked: study signature mismatch.*search_space: exits.max_bars_held"):
        optimize(changed)
    scoring = write_config(tmp_path, "scoring.yaml", scoring={"phase1": {"trials": 5}})
    with pytest.raises(ResumeBlocked, match=r"scoring: scoring.phase1.trials: 4 -> 5"):  # path by path, not hashes
        optimize(scoring)
    window = write_config(tmp_path, "window.yaml", meta={"sample_end": "2022-05-30", "stop": {"max_trials": 3}})
    with pytest.raises(ResumeBlocked, match=r'data: end: "2022-05-31" -> "2022-05-30"\n.*fixed_config: data.end: "2022-05-31" -> "2022-05-30"'):
        optimize(window)
    with pytest.raises(ResumeBlocked, match=r"cannot resume even with --force-resume: parameter exits.max_bars_held"):
        optimize(changed, RunOptions(force_resume=True))
    forced = optimize(scoring, RunOptions(force_resume=True, max_trials=5))
    assert "resumed despite signature mismatch" in forced["session"]["notes"][0]
    assert forced["cache"]["total_trials"] == 5


def test_a_failing_parameter_set_is_fail_not_a_number(tmp_path):
    path = write_config(tmp_path, parameters={
        "risk.risk_map.0.0": {"type": "categorical", "choices": [0.53, 0.9]},  # 0.9 breaks the ascending order
        "exits.max_bars_held": {"type": "categorical", "choices": [12, 24]},
    })
    summary = optimize(path)
    rows = _trials(summary)
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert failed and all(r["objective"] == "" and "risk_map confidences must ascend" in r["fail_reason"] for r in failed)
    assert all(r["param:risk.risk_map.0.0"] == "0.9" for r in failed)
    assert any(r["state"] == "COMPLETE" for r in rows)
    # trials.csv is written from each trial's fields without a model: the cells a validated row
    # makes, value for value and type for type, every field in them, and read back as those rows
    from genesis_core.optimizer._results import _same_outcomes, trial_fields
    from genesis_core.records import TrialRow

    spec = load_study_config(path).spec()
    trials = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage_url)).trials
    fields = [trial_fields(t, spec, _same_outcomes(trials).get(t.number)) for t in trials]
    assert fields and all(f.keys() == TrialRow.model_fields.keys() for f in fields)
    assert {r["cached"] for r in rows} >= {"True", "False", ""}  # duplicates, evaluations and failures among them
    for f in fields:
        model_s, direct = TrialRow.model_validate(f).to_csv(), TrialRow.cells(f)
        assert list(direct.items()) == list(model_s.items()) and [type(v) for v in direct.values()] == [type(v) for v in model_s.values()]
        assert TrialRow.model_fields.keys() - {"params", "metrics"} <= direct.keys()  # a new field gets its column
    assert RunFolder(Path(summary["run_dir"])).read_trials_table() == [TrialRow.model_validate(f) for f in fields]


def test_best_trial_reproduces_with_genesis_backtest(tmp_path):
    summary = optimize(write_config(tmp_path))
    best = json.loads((Path(summary["run_dir"]) / "best_trial.json").read_text())
    stored = best["result"]
    rerun = backtest_record(Backtester().run(build_config(stored["effective_config"]))).model_dump(mode="json")
    assert rerun["fingerprints"] == stored["fingerprints"]
    assert canonical_json(rerun["metrics"]) == canonical_json(stored["metrics"])


def test_two_worker_processes_share_the_study_and_cache(tmp_path):
    path = write_config(tmp_path, meta={"stop": {"max_trials": 10}}, parameters={
        "exits.max_bars_held": {"type": "int", "low": 6, "high": 60},
        "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 4.0, "step": 0.5},
    })
    summary = optimize(path, RunOptions(workers=2))
    rows = _trials(summary)
    assert len([r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]) == 10 and summary["session"]["failed_workers"] == []
    # a worker asked for a trial just as the other took the last one: refused before evaluation, never counted
    assert all("taken by other workers" in r["fail_reason"] for r in rows if r["state"] == "FAIL")
    evaluated = [r["config_fingerprint"] for r in rows if r["cached"] == "False"]
    assert len(evaluated) == len(set(evaluated))  # no parameter set evaluated twice
    storage = open_storage(f"journal:///{tmp_path / 'results' / 'optuna.journal'}")
    assert len(optuna.load_study(study_name="t", storage=storage).trials) == len(rows)


def test_bad_configs_are_refused_before_anything_is_written(tmp_path):
    cases = [
        ({"meta": {"study_nam": "x"}}, r"meta.study_nam: unknown key; did you mean 'study_name'"),
        ({"parameters": {"exits.stop_loss_atr": {"type": "float", "low": 3.0, "high": 1.0}}},  # no union tag in the path
         r"configuration: parameters.exits.stop_loss_atr: low \(3.0\) must be below high"),
        ({"parameters": {"exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 2.0, "step": 5}}},
         r"configuration: parameters.exits.stop_loss_atr: step \(5.0\) is larger"),
        # Optuna would search 1.0 .. 1.5 (and 6 .. 55) with a warning printed from its own source file
        ({"parameters": {"exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 1.6, "step": 0.25}}},
         r"1.0 .. 1.6 is not a whole number of steps of 0.25: the sampler would stop at 1.5 \(Optuna moves the high onto the grid\); "
         r"give high 1.5 or 1.75"),
        ({"parameters": {"exits.max_bars_held": {"type": "int", "low": 6, "high": 60, "step": 7}}}, r"would stop at 55 .*give high 55 or 62"),
        ({"parameters": {"exits.stop_los_atr": {"type": "float", "low": 1.0, "high": 2.0}}}, r"params.exits.stop_los_atr: unknown key; did you mean 'stop_loss_atr'"),
        ({"parameters": {"exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 2.0, "lg": True}}}, r"lg: unknown key; did you mean 'log'"),
        ({"parameters": {"exits": {"stop_loss_atr": 2.0}}}, r"parameters.exits.stop_loss_atr: expected a parameter spec"),
    ]
    for i, (change, pattern) in enumerate(cases):
        raw = yaml.safe_load(write_config(tmp_path, f"c{i}.yaml").read_text())
        for section, values in change.items():
            if section == "meta":
                raw["meta"].update(values)
            else:
                raw["parameters"] = values
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=pattern):
            optimize(path)
    assert not (tmp_path / "results").exists()


def test_dot_notation_and_nesting_mean_the_same(tmp_path):
    nested = write_config(tmp_path, "n.yaml", parameters={"exits": {"stop_loss_atr": {"type": "float", "low": 1.0, "high": 2.0}}})
    dotted = write_config(tmp_path, "d.yaml", parameters={"exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 2.0}})
    assert load_study_config(nested).parameters == load_study_config(dotted).parameters


def test_a_data_update_after_the_window_resumes_and_a_changed_bar_in_it_blocks(tmp_path):
    """`genesis data update` appends the exchange's new bars to the file a study explores: the
    signature held the file's fingerprint, so resuming was blocked ("data: file: ... -> ...") though
    no trial could read the new bars. Now it holds the bars up to the explore window's end: the
    study resumes; a bar changed inside the window still blocks, naming it. A study signed by the
    file before resumes on that same file, and is signed anew."""
    import gzip

    from genesis_core.fingerprint import fingerprint
    from genesis_core.optimizer._study import SIGNATURE_ATTR, SIGNED_ATTR

    data = tmp_path / "btc.csv.gz"
    lines = gzip.open(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz", "rt").read().splitlines()
    data.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    path = write_config(tmp_path, meta={"data": str(data), "stop": {"max_trials": 3}})
    optimize(path)
    data.write_bytes(gzip.compress(("\n".join([*lines, "2024-01-16T16:00:00Z,43000.0,43100.0,42900.0,43050.0,12.5"]) + "\n").encode()))
    assert optimize(path, RunOptions(max_trials=5))["cache"]["total_trials"] == 5  # resumed: no trial reads the new bar
    at = next(i for i, line in enumerate(lines) if line.startswith("2022-04-01T05:00:00Z"))
    t, o, h, low, c, v = lines[at].split(",")
    changed = [*lines[:at], ",".join([t, o, str(float(h) * 1.05), low, c, v]), *lines[at + 1:]]
    data.write_bytes(gzip.compress(("\n".join(changed) + "\n").encode()))
    with pytest.raises(ResumeBlocked, match=r"resume blocked: study signature mismatch\n  data: bars: "):
        optimize(path, RunOptions(max_trials=6))
    data.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    study = optuna.load_study(study_name="t", storage=open_storage(load_study_config(path).spec().storage_url, 60, 5))
    signed = study.user_attrs[SIGNED_ATTR]
    candles = Backtester().candles(BacktestConfig.model_validate({"data": {"path": str(data)}}))
    old = {**{k: v for k, v in signed["data"].items() if k != "bars"}, "file": candles.fingerprint}  # as signed before
    study.set_user_attr(SIGNED_ATTR, {**signed, "data": old})
    study.set_user_attr(SIGNATURE_ATTR, {**study.user_attrs[SIGNATURE_ATTR], "data": fingerprint(old)})
    assert optimize(path, RunOptions(max_trials=6))["cache"]["total_trials"] == 6
    assert "bars" in optuna.load_study(study_name="t", storage=study._storage).user_attrs[SIGNED_ATTR]["data"]  # signed anew


def test_kill_9_mid_run_then_resume_loses_and_corrupts_nothing(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    path = write_config(tmp_path, meta={"stop": {"max_trials": 2000}, "stale_trial_seconds": 1.0}, parameters={
        "exits.max_bars_held": {"type": "int", "low": 6, "high": 60},
        "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 4.0},
    })
    proc = subprocess.Popen([sys.executable, "-m", "genesis_core", "optimize", str(path), "--json"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "results" / "optuna.journal"
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "results" / "runs" / "t" / "trials" / "000020.json").exists():
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert journal.exists()
    time.sleep(1.5)  # past stale_trial_seconds: whatever was running belongs to a dead worker
    before = optuna.load_study(study_name="t", storage=open_storage(f"journal:///{journal}")).trials
    assert len(before) >= 20
    summary = optimize(path, RunOptions(max_trials=len(before) + 10))
    after = optuna.load_study(study_name="t", storage=open_storage(f"journal:///{journal}")).trials
    assert all(t.state.name != "RUNNING" for t in after)
    assert len([t for t in after if t.state.is_finished()]) >= len(before) + 10 - 1
    running_before = [t for t in before if t.state.name == "RUNNING"]
    if running_before:
        assert "queued again" in " ".join(summary["session"]["notes"])
        retried = {t.user_attrs.get("retry_of") for t in after}
        assert {t.number for t in running_before} <= retried
    for t in after:  # every evaluated trial's artifact is complete JSON (atomic writes)
        if t.state.name == "COMPLETE" and not t.user_attrs["cached"]:
            artifact = tmp_path / "results" / "runs" / "t" / "trials" / f"{t.number:06d}.json"
            assert json.loads(artifact.read_text())["trial_number"] == t.number


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.parametrize("scheme", ["journal", "sqlite"])
def test_a_trial_left_running_is_failed_and_queued_again(tmp_path, scheme):
    import time

    from genesis_core.optimizer import recover_stale_trials

    url = f"journal:///{tmp_path / 'x.journal'}" if scheme == "journal" else f"sqlite:///{tmp_path / 'x.db'}"
    storage = open_storage(url, grace_seconds=2.0, retry_seconds=0)  # no outage to ride out: heartbeats stale after 2 s
    study = optuna.create_study(storage=storage, study_name="s")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    orphan = study.ask(dist)
    if scheme == "sqlite":
        storage.record_heartbeat(orphan._trial_id)  # what study.optimize does while a trial runs
    else:  # a worker on another machine (its liveness unknown here): only the trial's age can tell
        orphan.set_user_attr("worker", {"host": "another-machine", "pid": 1})
    study.tell(study.ask(dist), 1.0)
    time.sleep(3.5)  # heartbeat times are stored to the second: stay clear of the 2 s grace
    assert recover_stale_trials(study, grace_seconds=2.0).queued == [orphan.number]
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "WAITING"]
    if scheme == "journal":  # the reason, for trials.csv (RDB storage's heartbeats fail it by Optuna's own code)
        assert study.trials[0].user_attrs["error"] == ("its worker gave no sign of finishing it for over 2 s "
                                                       "(meta.stale_trial_seconds): its parameters were queued again")
    again = study.ask(dist)
    assert again.number == 2 and again.params["x"] == orphan.params["x"]  # the same parameters run again


def test_a_trial_its_worker_finishes_while_it_is_judged_dead_stays_finished_and_is_not_queued(tmp_path, monkeypatch):
    """Recovery reads a RUNNING trial, finds its worker's process gone and fails it; a worker that
    finished the trial in between (one elsewhere, judged by age) wins: Optuna refuses the FAIL of a
    finished trial, and recovery leaves the trial as its worker told it and queues nothing."""
    from genesis_core.optimizer import _storage, recover_stale_trials

    url = f"journal:///{tmp_path / 'optuna.journal'}"
    mine = optuna.create_study(study_name="r", storage=open_storage(url))
    theirs = optuna.load_study(study_name="r", storage=open_storage(url))
    trial = theirs.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    flush(theirs)

    def ends_then_is_gone(worker) -> bool:
        theirs.tell(trial, 0.5)  # its last write, just before its process ends
        return False

    monkeypatch.setattr(_storage, "_alive", ends_then_is_gone)
    assert recover_stale_trials(mine).failed == []
    assert [(t.state.name, t.value) for t in mine.trials] == [("COMPLETE", 0.5)]
    assert [(t.state.name, t.value) for t in theirs.trials] == [("COMPLETE", 0.5)]


def test_pruning_rules_prune_with_a_reason_and_duplicates_stay_pruned(tmp_path):
    path = write_config(tmp_path, scoring={"phase1": {"trials": 4}, "pruning": {"enabled": True, "max_drawdown": 0.05}})
    summary = optimize(path)
    rows = _trials(summary)
    assert {r["state"] for r in rows} == {"PRUNED"}
    assert all("drawdown" in r["pruned"] and "above 0.05" in r["pruned"] for r in rows)
    assert summary["cache"]["unique_backtests"] == 4 and summary["cache"]["cache_hits"] == 8
    study = optuna.load_study(study_name="t", storage=open_storage(f"journal:///{tmp_path / 'results' / 'optuna.journal'}"))
    evaluated = [t for t in study.trials if not t.user_attrs["cached"]]
    assert all(t.intermediate_values for t in evaluated)  # checkpoint values were reported
    assert summary["best_trial"] is None


def test_median_pruner_works_when_configured(tmp_path):
    path = write_config(tmp_path, meta={"stop": {"max_trials": 25}, "pruner": {"name": "median", "kwargs": {"n_startup_trials": 3}}},
                        parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                    "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0}})
    rows = _trials(optimize(path))
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(r["pruned"].startswith("MedianPruner at bar") for r in pruned)
    assert any(r["state"] == "COMPLETE" for r in rows)


def test_ctrl_c_finishes_trials_in_flight_writes_everything_and_says_how_to_resume(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = write_config(tmp_path, meta={"stop": {"max_trials": 5000}}, parameters={
        "exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
        "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0},
    })
    proc = subprocess.Popen([sys.executable, "-m", "genesis_core", "optimize", str(path), "--workers", "2"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trials_dir = tmp_path / "results" / "runs" / "t" / "trials"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(trials_dir.glob("*.json"))) < 30:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # to the main process only: it passes the signal on to its worker
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; resume with: genesis optimize" in err
    rows = _trials({"run_dir": str(tmp_path / "results" / "runs" / "t")})
    assert len(rows) >= 30 and {r["state"] for r in rows} == {"COMPLETE"}  # nothing left running or failed
    run = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())
    assert run["sessions"][-1]["interrupted"] is True
    resumed = optimize(path, RunOptions(max_trials=len(rows) + 5))
    assert resumed["cache"]["total_trials"] >= len(rows) + 5


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_optuna_dashboard_opens_the_storage_unchanged(tmp_path, storage):
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    url = None if storage == "journal" else f"sqlite:///{tmp_path / 'results' / 'optuna.db'}"
    summary = optimize(write_config(tmp_path, meta={"stop": {"max_trials": 6}}), storage=url)
    app = wsgi(open_storage(url or f"journal:///{tmp_path / 'results' / 'optuna.journal'}"))

    def get(path: str) -> dict:
        environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
        setup_testing_defaults(environ)
        status: list[str] = []
        body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
        assert status[0].startswith("200"), (path, status)
        return json.loads(body)

    studies = {s["study_name"]: s for s in get("/api/studies")["study_summaries"]}
    assert set(studies) == {"t", "t.feasibility"}  # one scale each: production, and phase 1's feasibility
    detail = get(f"/api/studies/{studies['t']['study_id']}")
    assert len(detail["trials"]) == summary["cache"]["total_trials"] == 6
    assert {a["key"] for a in detail["trials"][0]["user_attrs"]} >= {"outcome", "cached", "feasibility_score", "production_score", "genesis"}
    phase1 = get(f"/api/studies/{studies['t.feasibility']['study_id']}")["trials"]
    assert len(phase1) == 4 and all(0.0 <= t["values"][0] <= 1.0 for t in phase1)


def test_a_study_without_signature_warns_and_can_be_backfilled(tmp_path):
    path = write_config(tmp_path, meta={"stop": {"max_trials": 3}})
    storage = open_storage(f"journal:///{tmp_path / 'results' / 'optuna.journal'}")
    legacy = optuna.create_study(storage=storage, study_name="t", direction="maximize")
    legacy.optimize(lambda t: t.suggest_categorical("exits.max_bars_held", [12, 24]) / 100, n_trials=1)
    warned = optimize(path)
    assert "has 1 trials but no signature" in warned["session"]["notes"][0]
    assert "genesis_signature" not in optuna.load_study(study_name="t", storage=storage).user_attrs
    filled = optimize(path, RunOptions(backfill_signature=True, max_trials=4))
    assert filled["session"]["notes"] == ["signature backfilled by --backfill-signature"]
    assert "genesis_signature" in optuna.load_study(study_name="t", storage=storage).user_attrs
    assert optimize(path, RunOptions(max_trials=5))["session"]["notes"] == []


def test_cli_optimize_json_and_exit_codes(tmp_path):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "genesis_core", "optimize", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    ok = cli(str(write_config(tmp_path, meta={"stop": {"max_trials": 4}})), "--json")
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["explore"]["cache"]["total_trials"] == 4 and summary["explore"]["best_trial"] is not None
    bad = write_config(tmp_path, "bad.yaml", meta={"stop": {"max_trial": 4}, "results_dir": str(tmp_path / "never")})
    proc = cli(str(bad))
    assert proc.returncode == 2 and "meta.stop.max_trial: unknown key; did you mean 'max_trials'?" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "never").exists()
    changed = write_config(tmp_path, "changed.yaml", scoring={"objective": "classic"})
    proc = cli(str(changed))  # preflight sees it first
    assert proc.returncode == 1 and "storage: study 't' (4 trials) was made with other settings: scoring:" in proc.stderr
    proc = cli(str(changed), "--skip-preflight")  # and the optimizer's own guard stops it too
    assert proc.returncode == 2 and "resume blocked: study signature mismatch" in proc.stderr and "scoring:" in proc.stderr


def test_grid_sampler_walks_the_grid_and_high_hit_rates_warn(tmp_path):
    grid = write_config(tmp_path, meta={"sampler": {"name": "grid"}, "stop": {"max_trials": 12}}, parameters={
        "exits.max_bars_held": {"type": "grid", "values": [12, 24]},
        "exits.stop_loss_atr": {"type": "grid", "values": [1.5, 2.5]},
    })
    done = ("the sampler (grid) stopped the study before its budget: a grid sampler does once every point of its grid "
            "has been tried")  # the run ended 8 trials short of its budget without a word
    # one worker, and two seeded ones on the journal (reproducible batches, where Optuna's Study.stop, which the grid
    # sampler calls, raised RuntimeError outside Study.optimize and ended the run in a traceback)
    for name, workers in [("one", 1), ("two", 2)]:
        summary = optimize(write_config(tmp_path, f"{name}.yaml", meta={
            "study_name": name, "n_workers": workers, "sampler": {"name": "grid", "kwargs": {"seed": 1}}, "stop": {"max_trials": 12}},
            parameters={"exits.max_bars_held": {"type": "grid", "values": [12, 24]},
                        "exits.stop_loss_atr": {"type": "grid", "values": [1.5, 2.5]}}))
        assert summary["session"]["stopped_reason"] == done and summary["states"] == {"COMPLETE": 4}
        assert sorted((r["param:exits.max_bars_held"], r["param:exits.stop_loss_atr"]) for r in _trials(summary)) == [
            ("12", "1.5"), ("12", "2.5"), ("24", "1.5"), ("24", "2.5")]  # each point once, then the grid is done
    rows = _trials(optimize(grid))
    assert sorted((r["param:exits.max_bars_held"], r["param:exits.stop_loss_atr"]) for r in rows) == [
        ("12", "1.5"), ("12", "2.5"), ("24", "1.5"), ("24", "2.5")]
    tiny = write_config(tmp_path, "tiny.yaml", meta={"study_name": "tiny", "stop": {"max_trials": 12}},
                        parameters={"exits.max_bars_held": {"type": "categorical", "choices": [12, 24]}})
    summary = optimize(tiny)
    assert summary["cache"]["hit_rate"] > 0.8 and "cache hit rate" in summary["warnings"][0]
    mixed = write_config(tmp_path, "mixed.yaml", meta={"study_name": "m", "sampler": {"name": "grid"}},
                         parameters={"exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 2.0}})
    with pytest.raises(ConfigError, match="every searched parameter must be categorical or grid"):
        optimize(mixed)


def test_the_champion_is_merged_unless_skipped(tmp_path):
    champions = tmp_path / "results" / "champions"
    champions.mkdir(parents=True)
    champion = json.loads((ROOT / "tests" / "records" / "fixtures" / "schema0" / "champions" / "BTCUSD_1h.json").read_text())
    champion["effective_config"]["params"]["exits"]["take_profit_atr"] = 5.5
    (champions / "BTCUSD_1h.json").write_text(json.dumps(champion))

    def take_profit_used(path: Path) -> set:
        summary = optimize(path)
        return {json.loads(f.read_text())["effective_config"]["params"]["exits"]["take_profit_atr"]
                for f in (Path(summary["run_dir"]) / "trials").glob("*.json")}

    assert take_profit_used(write_config(tmp_path, meta={"stop": {"max_trials": 3}})) == {5.5}
    skipped = write_config(tmp_path, "skip.yaml", meta={"study_name": "s", "skip_champion_merge": True, "stop": {"max_trials": 3}})
    assert take_profit_used(skipped) == {3.0}  # the base config's value


def test_bootstrap_random_trials_come_first(tmp_path):
    space = {"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
             "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0}}
    path = write_config(tmp_path, meta={"bootstrap_random_trials": 3, "stop": {"max_trials": 5},
                                        "sampler": {"name": "tpe", "kwargs": {"seed": 11, "n_startup_trials": 0}}},
                        parameters=space)
    rows = _trials(optimize(path))
    reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11))
    for r in rows[:3]:
        t = reference.ask()
        t.suggest_int("exits.max_bars_held", 6, 96)
        t.suggest_float("exits.stop_loss_atr", 0.5, 5.0)
        assert (int(r["param:exits.max_bars_held"]), float(r["param:exits.stop_loss_atr"])) == (
            t.params["exits.max_bars_held"], t.params["exits.stop_loss_atr"])
        reference.tell(t, 0.0)
    assert len(rows) == 5


def test_duplicate_streak_can_widen_before_it_stops(tmp_path):
    path = write_config(tmp_path, meta={"duplicate_streak_limit": 3, "duplicate_streak_action": "widen", "stop": {"max_trials": 40}},
                        parameters={"exits.max_bars_held": {"type": "categorical", "choices": [12, 24]}})
    summary = optimize(path)
    s = summary["session"]
    assert s["widened"] >= 1  # each time a streak of 3 duplicates came from the sampler, not from random sampling
    assert "even when sampling at random: the space looks exhausted" in s["stopped_reason"]
    assert summary["cache"]["unique_backtests"] == 2 and summary["cache"]["total_trials"] < 40
    rows = _trials(summary)
    assert [r["outcome"] for r in rows[-6:]] == ["DUPLICATE"] * 6  # a streak of 3, widening, 3 more, stop


def test_progress_best_score_ignores_a_half_written_running_trial():
    """A trial in flight elsewhere can have outcome=VALID before its score is written (crashed `make demo` once)."""
    from genesis_core.optimizer import best_score

    study = optuna.create_study(direction="maximize")
    done = study.ask()
    for name, value in {"outcome": "VALID", "feasibility_score": 0.9, "production_score": 12.5}.items():
        done.set_user_attr(name, value)
    study.tell(done, 12.5)
    running = study.ask()
    running.set_user_attr("outcome", "VALID")  # production_score not yet written
    assert best_score(study.get_trials(deepcopy=False)) == 12.5
    assert best_score([]) is None


def test_batched_tpe_with_a_batch_of_one_is_optuna_s_tpe_and_larger_batches_fit_once_per_batch(monkeypatch):
    """tpe-batched hands out one fit's best-ranked candidates: with batch 1 that is exactly TPE's
    choice (same seed, same trials); with batch 4 the 40 trials after the 8 random ones take 10 fits."""
    from genesis_core.optimizer import SAMPLERS

    def objective(trial: optuna.Trial) -> float:
        return -(trial.suggest_float("x", -3, 3) - 1) ** 2 - (trial.suggest_int("k", 0, 20) - 7) ** 2 / 10

    def run(sampler: optuna.samplers.BaseSampler) -> list[dict]:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=48)
        return [t.params for t in study.trials]

    assert run(SAMPLERS["tpe-batched"](seed=5, n_startup_trials=8, batch=1)) == \
        run(optuna.samplers.TPESampler(seed=5, n_startup_trials=8))
    fits = []
    fit = optuna.samplers.TPESampler._sample

    def counting(self, *args):
        fits.append(1)
        return fit(self, *args)

    monkeypatch.setattr(optuna.samplers.TPESampler, "_sample", counting)
    params = run(SAMPLERS["tpe-batched"](seed=5, n_startup_trials=8, batch=4))
    assert len(fits) == 10 and len({(p["x"], p["k"]) for p in params[8:]}) > 30


def test_distributions_read_back_from_the_journal_are_the_ones_written(tmp_path):
    """The journal's distribution JSON is memoised both ways: equal-comparing categoricals
    ((1, 2) and (True, 2)), a float and an int over the same bounds all come back as written,
    in a fresh process's replay as in the writer's."""
    url = f"journal:///{tmp_path / 'optuna.journal'}"
    written = {"ints": optuna.distributions.CategoricalDistribution((1, 2)),
               "bools": optuna.distributions.CategoricalDistribution((True, 2)),
               "float": optuna.distributions.FloatDistribution(1.0, 2.0),
               "int": optuna.distributions.IntDistribution(1, 2)}
    study = optuna.create_study(study_name="d", storage=open_storage(url))
    for name, dist in written.items():
        trial = study.ask({name: dist})
        study.tell(trial, 1.0)
    fresh = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal")))
    for trials in (study.trials, optuna.load_study(study_name="d", storage=fresh).trials):
        for trial, (name, dist) in zip(trials, written.items(), strict=True):
            got = trial.distributions[name]
            assert type(got) is type(dist) and got == dist
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                assert [type(c) for c in got.choices] == [type(c) for c in dist.choices]


def test_a_distribution_s_journal_json_is_optuna_s_for_an_object_seen_again_or_new():
    """The journal writes a distribution's JSON memoised by the object (a sweep passes its space's
    own with every trial) and by equality: either way Optuna's JSON, for the same object again, for
    an equal new one, and for thousands of new ones made and dropped (whose ids the system reuses)."""
    from optuna.distributions import FloatDistribution, IntDistribution, distribution_to_json

    from genesis_core.optimizer._storage import optuna_journal

    shared = FloatDistribution(0.0, 1.0, step=0.125)
    for dist in (shared, shared, FloatDistribution(0.0, 1.0, step=0.125), FloatDistribution(0.0, 1.0), shared,
                 IntDistribution(1, 64, log=True), IntDistribution(1, 64)):
        assert optuna_journal.distribution_to_json(dist) == distribution_to_json(dist)
    for i in range(3000):
        dist = FloatDistribution(0.0, i + 1.0) if i % 2 else IntDistribution(0, i + 1)
        assert optuna_journal.distribution_to_json(dist) == distribution_to_json(dist)


def test_a_trial_copy_is_what_copy_s_generic_path_makes(tmp_path, monkeypatch):
    """Trials are copied by a ``__copy__`` of ours (Optuna's replay copies one per entry it applies):
    a new trial whose attributes are the very values of the original's, as ``copy``'s generic path
    makes, and a replay of a journal with it equals one without it, trial by trial, in every state."""
    from genesis_core.optimizer._storage import _trial_copy

    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="c", storage=open_storage(f"journal:///{path}"))
    for i in range(12):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_int("n", 1, 9)
        trial.suggest_categorical("c", ["a", "b"])
        trial.set_user_attr("nested", {"i": i, "m": [1.5, {"k": None}]})
        trial.report(0.5, step=1)
        study.tell(trial, [1.0 * i, None, None][i % 3], state=[None, optuna.trial.TrialState.PRUNED,
                                                              optuna.trial.TrialState.FAIL][i % 3])
    study.enqueue_trial({"x": 0.25})
    logs = list(JournalFile(str(path)).read_logs(0))

    def replayed() -> list[dict]:
        replay = optuna.storages.journal._storage.JournalStorageReplayResult("reader")
        replay.apply_logs(copy.deepcopy(logs))
        return [vars(t) for t in replay._trials.values()]

    ours = replayed()
    original = study.trials[4]
    made = copy.copy(original)
    assert type(made) is type(original) and made is not original and made == original
    assert vars(made).keys() == vars(original).keys() and all(vars(made)[k] is vars(original)[k] for k in vars(original))
    monkeypatch.delattr(optuna.trial.FrozenTrial, "__copy__")  # copy's generic path: __reduce_ex__
    assert copy.copy(original) is not original and vars(copy.copy(original)) == vars(_trial_copy(original))
    generic = replayed()
    assert len(ours) == 13 and ours == generic


def test_the_replay_applies_entries_as_optuna_s_does_one_by_one_errors_included():
    """A run of one trial's parameter and attribute entries is applied to one copy of it, and the
    trial holding a parameter that a new distribution must be compatible with is remembered: the
    replay must end where Optuna's does, entry by entry, with the trials readers got unchanged,
    whoever wrote the entries and however they are cut into reads. The entries include everything Optuna refuses or ignores
    (an incompatible distribution, a finished or unknown trial, an index outside the choices, two
    attributes in one entry), a trial setting a parameter twice in one read, and trials holding a
    parameter with distributions that Optuna would not have let one set (added finished)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, distribution_to_json
    from optuna.storages.journal._storage import JournalOperation as Op
    from optuna.storages.journal._storage import JournalStorageReplayResult

    from genesis_core.optimizer._storage import _Replay

    me = JournalStorageReplayResult("me-").worker_id
    unit, wide, logged = (distribution_to_json(FloatDistribution(lo, h, log=lg)) for lo, h, lg in ((0.0, 1.0, False), (0.0, 2.0, False),
                                                                                                     (0.125, 1.0, True)))
    ab = distribution_to_json(CategoricalDistribution(("a", "b")))

    def entry(op: int, who: str = "other", **fields) -> dict:
        return {"op_code": op, "worker_id": who, **fields}

    def param(trial: int, name: str, value: float, dist: str, who: str = "other") -> dict:
        return entry(Op.SET_TRIAL_PARAM, who, trial_id=trial, param_name=name, param_value_internal=value, distribution=dist)

    def create(study: int, **fields) -> dict:
        return entry(Op.CREATE_TRIAL, study_id=study, datetime_start="2026-01-01T00:00:00", **fields)

    def attr(trial: int, key: str, who: str = "other", **values) -> dict:
        return entry(Op.SET_TRIAL_USER_ATTR if key == "user_attr" else Op.SET_TRIAL_SYSTEM_ATTR, who, trial_id=trial, **{key: values})

    def finish(trial: int) -> dict:
        return entry(Op.SET_TRIAL_STATE_VALUES, trial_id=trial, state=1, values=[1.0], datetime_complete="2026-01-01T01:00:00")

    logs = [entry(Op.CREATE_STUDY, study_name="s", directions=[1]), entry(Op.CREATE_STUDY, study_name="t", directions=[1]),
            create(0), create(0), create(1), create(0),
            param(1, "x", 0.5, unit), attr(1, "user_attr", a=1), attr(1, "system_attr", s=1),
            param(0, "x", 1.5, wide), param(1, "x", 0.25, logged), attr(0, "user_attr", b=2), attr(0, "user_attr", b=3),
            param(2, "x", 0.5, logged), param(2, "y", 1.0, ab), attr(2, "user_attr", c=1, d=2), param(2, "z", 0.5, unit),
            create(0, state=1, values=[0.0], datetime_complete="2026-01-01T01:00:00", params={"x": 1}, distributions={"x": ab}),
            param(3, "x", 0.0, ab), param(3, "y", 0.0, ab), param(3, "w", 5.0, ab), param(3, "v", 0.5, unit, who=me),
            param(3, "x", 1.0, ab, who=me), param(3, "u", 0.5, unit, who=me), attr(3, "user_attr", who=me, e=1),
            finish(1), param(1, "y", 0.0, ab), attr(1, "user_attr", f=1), param(1, "y", 0.0, ab, who=me),
            param(9, "x", 0.5, unit), attr(9, "system_attr", g=1), attr(9, "user_attr", who=me, g=1),
            param(0, "y", 1.0, ab, who=me), param(0, "x", 0.75, unit, who=me), attr(0, "system_attr", who=me, h=1),
            create(1), param(5, "q", 0.5, unit), param(5, "q", 1.0, ab), param(5, "q", 0.0, ab, who=me)]

    def replayed(cls: type, size: int) -> tuple[list, int, list]:
        replay = JournalStorageReplayResult("me-")
        replay = _Replay.adopt(replay) if cls is _Replay else replay
        raised, handed_out = [], []
        for start in range(0, len(logs), size):
            try:
                replay.apply_logs(logs[start:start + size])
                raised.append(None)
            except (KeyError, ValueError, IndexError, AssertionError, optuna.exceptions.UpdateFinishedTrialError) as exc:
                raised.append(type(exc))
            handed_out += [(t, copy.deepcopy(vars(t))) for t in replay._trials.values()]  # as readers got them
        assert all(vars(t) == then for t, then in handed_out)  # a trial read once never changes under its reader
        return raised, replay.log_number_read, [vars(t) for t in replay._trials.values()]

    for size in (1, 2, 3, 4, 7, len(logs)):
        optuna_s, ours = replayed(JournalStorageReplayResult, size), replayed(_Replay, size)
        assert ours == optuna_s, size
    raised = replayed(_Replay, 1)[0]
    assert {e for e in raised if e} == {KeyError, ValueError, IndexError, AssertionError, optuna.exceptions.UpdateFinishedTrialError}
    replay = _Replay.adopt(JournalStorageReplayResult("me-"))
    for log in logs:
        with contextlib.suppress(Exception):
            replay.apply_logs([log])
    t = replay._trials
    assert t[0].params == {"x": 0.75, "y": "b"} and t[1].params == {"x": 0.5} and t[2].params == {"x": 0.5, "y": "b", "z": 0.5}
    assert t[3].params == {"y": "a", "v": 0.5, "u": 0.5} and t[4].params == {"x": "b"} and t[5].params == {"q": 0.5}
    assert (t[0].user_attrs, t[0].system_attrs, t[1].user_attrs, t[3].user_attrs) == ({"b": 3}, {"h": 1}, {"a": 1}, {"e": 1})


def test_tpe_s_constant_liar_proposes_the_same_without_its_note_of_a_running_trial_s_parameters(tmp_path, monkeypatch):
    """TPE shares a running trial's parameters with other processes in a system attribute ahead of
    their own entries; the journal writes both together, so it leaves the note out: two interleaved
    writers, each seeing the other's running trial, propose the very parameters they propose with
    the note written (and it would be written otherwise)."""
    from genesis_core.optimizer import _storage

    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0), "n": optuna.distributions.IntDistribution(1, 30),
             "c": optuna.distributions.CategoricalDistribution(("a", "b", "c"))}

    def proposals(path: Path) -> list[dict]:
        url = f"journal:///{path}"
        studies = [optuna.create_study(study_name="l", storage=open_storage(url), load_if_exists=True,
                                       sampler=optuna.samplers.TPESampler(seed=s, n_startup_trials=4, multivariate=True))
                   for s in (1, 2)]
        asked = []
        for _ in range(12):
            running = []
            for study in studies:  # the second asks while the first's trial runs, its parameters written
                running.append((study, study.ask(space)))
                flush(study, durable=False)
            for study, trial in running:
                study.tell(trial, trial.params["x"] * trial.params["n"] + (trial.params["c"] == "b"))
                asked.append(trial.params)
        return asked

    without = proposals(tmp_path / "without.journal")
    monkeypatch.setattr(_storage, "SHARED_AHEAD", "\0")
    with_note = proposals(tmp_path / "with.journal")
    assert with_note == without and len({p["x"] for p in without}) == 24
    assert "tpe:relative_params" in (tmp_path / "with.journal").read_text()
    assert "tpe:relative_params" not in (tmp_path / "without.journal").read_text()


def test_two_writers_interleaving_see_what_optuna_s_own_reader_sees(tmp_path, monkeypatch):
    """Each writer applies its held writes (parameters, attributes, reports) as it holds them and
    only counts them when it reads them back, and applies its other writes as it makes them when
    nobody wrote in between (reads them back otherwise): its replay, and the other writer's, must be
    what Optuna's own journal storage replays from the file, trial by trial."""
    followed, real_follows = [], JournalFile.follows
    monkeypatch.setattr(JournalFile, "follows", lambda self, *a: followed.append(real_follows(self, *a)) or followed[-1])
    url = f"journal:///{tmp_path / 'optuna.journal'}"
    a = optuna.create_study(study_name="w", storage=open_storage(url))
    b = optuna.load_study(study_name="w", storage=open_storage(url))
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0), "n": optuna.distributions.IntDistribution(1, 9)}
    for i in range(6):
        ta, tb = a.ask(space), b.ask(space)  # both running at once: their writes interleave in the file
        for t, who in ((ta, "a"), (tb, "b")):
            t.set_user_attr("who", who)
            t.set_user_attr("i", i)
            t.report(float(i), step=1)
        b.set_user_attr("round", i)  # written at once ...
        flush(a, durable=False)  # ... before a writes what it held, without a read in between
        a.tell(ta, ta.params["x"])
        b.tell(tb, None, state=optuna.trial.TrialState.PRUNED) if i % 3 == 2 else b.tell(tb, tb.params["n"])
    for i in range(3):  # a alone: its writes follow its last read
        ta = a.ask(space)
        ta.set_user_attr("who", "a")
        a.tell(ta, float(i))
    assert True in followed and False in followed
    fresh = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal")))
    truth = [(t.number, t.state, t.values, t.params, t.user_attrs, t.intermediate_values)
             for t in optuna.load_study(study_name="w", storage=fresh).trials]
    assert len(truth) == 15 and {t[4]["who"] for t in truth} == {"a", "b"}
    for study in (a, b):
        assert [(t.number, t.state, t.values, t.params, t.user_attrs, t.intermediate_values) for t in study.trials] == truth


def test_ask_takes_queued_trials_in_order_whoever_queued_them_without_a_pass_over_the_study(tmp_path):
    """``ask`` looks for queued trials before every trial; the journal storage looks from the first
    trial that may still be queued, which moves on as they are taken: the same trials as Optuna's
    pass over the whole study, queued here or by another process, before or after the mark moved."""
    url = f"journal:///{tmp_path / 'optuna.journal'}"
    mine = optuna.create_study(study_name="q", storage=open_storage(url))
    theirs = optuna.load_study(study_name="q", storage=open_storage(url))
    space = {"x": optuna.distributions.IntDistribution(0, 100)}
    storage, sid = mine._storage, mine._study_id

    def queued() -> list[int]:
        fast = [t.number for t in storage.get_all_trials(sid, deepcopy=False, states=(optuna.trial.TrialState.WAITING,))]
        full = [t.number for t in optuna.storages.JournalStorage.get_all_trials(storage, sid, False, (optuna.trial.TrialState.WAITING,))]
        assert fast == full
        return fast

    asked = []
    for round_ in range(3):
        for _ in range(4):
            t = mine.ask(space)
            mine.tell(t, float(t.params["x"]))
        assert queued() == [] and storage._first_queued[sid] == len(mine.trials)  # the mark is past every trial
        theirs.enqueue_trial({"x": 7 + round_})  # by another process, after the mark moved
        mine.enqueue_trial({"x": 50 + round_})
        assert len(queued()) == 2
        for _ in range(3):
            t = mine.ask(space)
            asked.append((t.number, t.params["x"]))
            mine.tell(t, 0.0)
    assert [x for _, x in asked] == [7, 50, asked[2][1], 8, 51, asked[5][1], 9, 52, asked[8][1]]
    assert [n for n, _ in asked] == [4, 5, 6, 11, 12, 13, 18, 19, 20] and queued() == []
    optuna.delete_study(study_name="q", storage=storage)
    for read in (storage.get_all_trials, lambda *a: optuna.storages.JournalStorage.get_all_trials(storage, *a)):
        with pytest.raises(KeyError):  # a deleted study's queued trials: none to read, as Optuna says
            read(sid, False, (optuna.trial.TrialState.WAITING,))


def test_the_journal_read_gives_what_optuna_s_reader_gives_from_any_entry_while_written_or_damaged(tmp_path, monkeypatch):
    """New journal lines are parsed a slice at a time as one JSON array (by orjson): the same entries
    and line offsets as Optuna's line-by-line read, from the start or any entry on, values orjson
    refuses or reads otherwise among them (infinities, an integer beyond 64 bits, a lone
    surrogate); nothing of a line still being written; and Optuna's own error for a damaged line
    once another line follows it."""
    from optuna.storages.journal import JournalFileBackend

    from genesis_core.optimizer import _storage

    monkeypatch.setattr(_storage, "READ_SLICE", 7)  # several slices, one of them short
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="r", storage=open_storage(f"journal:///{path}"))
    special = {3: 2**64 + 3, 5: -(2**63) - 5, 6: float("inf"), 8: float("-inf"), 10: "\ud800"}
    for i in range(12):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
        trial.set_user_attr("i", special.get(i, i))
        study.tell(trial, float(i) / 7)
    by_orjson, orjson_loads = [], orjson.loads
    monkeypatch.setattr(_storage, "orjson", types.SimpleNamespace(
        loads=lambda data: by_orjson.append(orjson_loads(data)) or by_orjson[-1], JSONDecodeError=orjson.JSONDecodeError))
    ours, theirs = JournalFile(str(path)), JournalFileBackend(str(path))
    fallbacks, optuna_read = [], JournalFileBackend.read_logs  # where ours hands the read to Optuna's code
    monkeypatch.setattr(JournalFileBackend, "read_logs",
                        lambda self, n: (fallbacks.append(n) if self is ours else None) or optuna_read(self, n))

    def same(log_number: int) -> list[dict]:
        read = list(ours.read_logs(log_number))
        assert read == list(theirs.read_logs(log_number)) and ours._log_number_offset == theirs._log_number_offset
        return read

    entries = same(0)
    assert len(entries) > 40 and all(same(n) == entries[n:] for n in (1, 6, 7, 20, len(entries) - 1, len(entries)))
    got = [e["user_attr"]["i"] for e in entries if e["op_code"] == 8 and "i" in e["user_attr"]]
    assert got == [special.get(i, i) for i in range(12)] and [type(v) for v in got] == [type(special.get(i, i)) for i in range(12)]
    assert sum(len(logs) for logs in by_orjson) > len(entries)  # most slices were orjson's
    line = json.dumps({"op_code": 8, "worker_id": "w", "trial_id": 0, "user_attr": {"late": 1}}).encode() + b"\n"
    with path.open("ab") as f:
        f.write(line[:25])  # a line being written: neither reader gives it yet
        f.flush()
        assert same(len(entries)) == []
        f.write(line[25:])
    assert same(len(entries)) == [json.loads(line)] and fallbacks == []
    with path.open("ab") as f:
        f.write(b'{"op_code": 8, "worker_id"\n' + line)  # a damaged line, then a good one
    n = len(entries) + 1
    for reader in (ours, theirs):
        with pytest.raises(json.JSONDecodeError):
            list(reader.read_logs(n))
    assert fallbacks == [n]


@pytest.mark.parametrize(("text", "by_orjson"), [
    ('{"cache_key":"b00420fdfa6a6cd48c54804a773159240070108118696041c071e86934a526da"}', True),  # a real key's digit run
    ('{"s":"1234567890123456789012","t":"x1234567890123456789012"}', True),
    ('[0.12345678901234567890123,1234567890123456789012.5,12345678901234567890123e5]', True),
    ('{"i":18446744073709551619}', False),  # beyond 64 bits: orjson's would be a float
    ('[-9223372036854775813]', False),
    ('{"s":"id 1234567890123456789012 x"}', False),  # inside a string, but not told apart from a number
    ('[1.5e1234567890123456789]', False),  # orjson refuses an infinity
])
def test_a_journal_entry_goes_to_json_only_where_orjson_would_read_it_otherwise(text, by_orjson, monkeypatch):
    """Journal entries are parsed by orjson unless they may hold what it reads otherwise: an integer
    of 19 digits or more, told from a fraction's, an exponent's or a string's digits by what they touch
    (a digest's digit run sent a whole slice of the journal to ``json``). The values are ``json``'s."""
    from genesis_core.optimizer import _storage

    parsed = []  # what orjson gave

    def loads(data: bytes) -> object:
        parsed.append(orjson.loads(data))
        return parsed[-1]

    monkeypatch.setattr(_storage, "orjson", types.SimpleNamespace(loads=loads, JSONDecodeError=orjson.JSONDecodeError))
    got, want = _storage.parse_entries(text.encode()), json.loads(text)
    assert got == want and json.dumps(got) == json.dumps(want)  # the same values, ints as ints
    assert (parsed != []) == by_orjson


@pytest.mark.parametrize(("user_attr", "by_orjson"), [
    ({"genesis": {"metrics": {"sharpe": -0.241, "num_trades": 99, "tiny": 1e-05, "big": 1e16}, "pruned": None}, "note": "été"}, True),
    ({"x": float("nan")}, False),  # orjson writes null
    ({"x": [float("inf"), -float("inf")]}, False),
    ({"x": 2**70}, False),  # orjson refuses it
    ({"x": {1: 0.5}}, False),  # an integer key: orjson refuses it, json writes "1"
    ({"x": (1, 2)}, False),  # read back as a list, not the tuple written
])
def test_a_journal_entry_is_written_by_orjson_only_where_it_reads_back_as_the_entry(tmp_path, user_attr, by_orjson):
    """An entry's line is orjson's where it reads back as the entry, else the standard library's (as
    Optuna writes it): every reader, Optuna's too, reads what ``json``'s line gives, NaN, infinity
    and long integers as themselves."""
    from optuna.storages.journal import JournalFileBackend

    from genesis_core.optimizer._storage import JournalFile, entry_json

    entry = {"op_code": 8, "worker_id": "w", "trial_id": 3, "user_attr": user_attr}
    theirs = json.dumps(entry, separators=(",", ":")).encode()
    assert (entry_json(entry) != theirs) == by_orjson  # orjson's writes the accent as it is, json's escapes it
    path = tmp_path / "optuna.journal"
    JournalFile(str(path)).append([entry])
    for reader in (JournalFile(str(path)), JournalFileBackend(str(path))):
        assert repr(list(reader.read_logs(0))) == repr([json.loads(theirs)])  # values and their types alike


def test_a_running_trial_is_written_at_once_and_synced_to_disk_only_once_it_finishes(tmp_path, monkeypatch):
    """On the journal file a trial's start (ask, its parameters, a queued trial run again) is
    written where every process sees it, without an fsync; its end is fsync'd before tell returns,
    and that fsync carries the start with it (one file)."""
    synced, real = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    url = f"journal:///{tmp_path / 'optuna.journal'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    before = len(synced)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    flush(study, durable=False)
    assert len(synced) == before
    seen = optuna.load_study(study_name="s", storage=open_storage(url)).trials  # another process's replay
    assert [(t.state, t.params) for t in seen] == [(optuna.trial.TrialState.RUNNING, trial.params)]
    study.tell(trial, 0.5)
    assert len(synced) == before + 1
    study.enqueue_trial({"x": 0.25})  # queued: durable (a resume re-runs it)
    assert len(synced) == before + 2
    queued = study.ask()  # run again: a start
    assert queued.suggest_float("x", 0.0, 1.0) == 0.25 and len(synced) == before + 2
    study.tell(queued, 0.1)
    assert len(synced) == before + 3
    states = [t.state for t in optuna.load_study(study_name="s", storage=open_storage(url)).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2


def test_trials_run_with_the_start_up_heap_frozen_and_it_is_thawed_after(tmp_path, monkeypatch):
    """The garbage collector leaves a worker's start-up objects alone while its trials run (32
    workers collecting them together stalled a fleet) and while the session writes its records
    after (the worker's own settling, inside the session's, does not thaw it), without a full
    collection first (55-75 ms a run); a process that runs studies one after another gets them
    back to collect."""
    from genesis_core.optimizer import _run

    frozen, at_records, asked, measure, record, collect = [], [], [], _worker.measure, _run.record_results, gc.collect

    def counting(*args, **kwargs):
        frozen.append(gc.get_freeze_count())
        return measure(*args, **kwargs)

    def recording(*args, **kwargs):
        at_records.append(gc.get_freeze_count())
        return record(*args, **kwargs)

    monkeypatch.setattr(_worker, "measure", counting)
    monkeypatch.setattr(_run, "record_results", recording)
    monkeypatch.setattr(gc, "collect", lambda generation=2: asked.append(generation) or collect(generation))
    before = gc.get_freeze_count()
    summary = optimize(write_config(tmp_path))
    assert summary["cache"]["unique_backtests"] == len(frozen) == 4
    assert min(frozen) > before + 10_000 and at_records[0] > before + 10_000  # the modules, the study and the configs among them
    assert asked and 2 not in asked
    assert gc.get_freeze_count() == before


def test_worker_processes_fork_from_a_frozen_heap_which_is_thawed_after(tmp_path, monkeypatch):
    """The session's process freezes its heap before it forks the workers: a forked worker's first
    full collection then leaves what it inherited alone (it touched every object, copying each page
    of the parent's heap into the child: 14,000 of its 44,000 page faults in a 1,000-trial run)."""
    from genesis_core.optimizer import _run

    at_fork, start_all = [], _run._start_all

    def starting(procs):
        at_fork.append((len(procs), gc.get_freeze_count()))
        return start_all(procs)

    monkeypatch.setattr(_run, "_start_all", starting)
    before = gc.get_freeze_count()
    summary = optimize(write_config(tmp_path), RunOptions(workers=2))
    assert summary["cache"]["total_trials"] >= 4
    assert len(at_fork) == 1 and at_fork[0][0] == 1 and at_fork[0][1] > before + 10_000, at_fork
    assert gc.get_freeze_count() == before


def test_trials_reach_the_disk_in_group_commits_and_no_progress_report_comes_before_one(tmp_path, monkeypatch):
    """A worker puts its told trials (journal and artifacts) on disk together, at most
    COMMIT_SECONDS apart, instead of three fsyncs a trial; whatever a progress report counts and
    whatever the run's records list is on disk first."""
    spec = load_study_config(write_config(tmp_path, meta={"stop": {"max_trials": 80}}, parameters={
        "exits.max_bars_held": {"type": "int", "low": 6, "high": 60},
        "thresholds.signal_adaptation.zones.mid.entry_conf_overall": {"type": "float", "low": 0.5, "high": 0.6, "step": 0.01},
    })).spec()
    folder, real_sync, real_fsync = spec.folder, os.sync, os.fsync
    synced: list[set[int]] = []  # the artifacts on disk at each flush of the system's files
    fsyncs, reports = [0], []

    def sync() -> None:
        synced.append(set(folder.trial_numbers()))
        real_sync()

    def fsync(fd: int) -> None:
        fsyncs[0] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "sync", sync)
    monkeypatch.setattr(os, "fsync", fsync)
    on_progress = lambda p: reports.append((p.completed, set(folder.trial_numbers()) == synced[-1]))  # noqa: E731
    summary = api.optimize(spec, RunOptions(), on_progress)
    evaluated_here = summary.cache.unique_backtests
    assert evaluated_here >= 40 and summary.states == {"COMPLETE": 80}
    assert len(reports) >= 2 and all(on_disk for _, on_disk in reports) and reports[-1][0] == 80
    assert synced[-1] == set(folder.evaluated_numbers()) and len(synced[-1]) == evaluated_here
    assert len(synced) < evaluated_here / 2  # grouped: each flush carried several trials
    assert fsyncs[0] < 30  # the study's creation and the run's records; was three a trial (> 200)


def test_artifacts_a_power_loss_took_are_written_again_by_running_their_trials_on_resume(tmp_path, monkeypatch):
    """The journal may reach the disk before a trial's artifact (one group commit carries both, in
    no set order): a resume finds artifacts missing, empty or cut short and writes them again, as
    they were, by running the trial again; a re-run that disagrees with the study is an error."""
    path = write_config(tmp_path)
    folder = RunFolder(Path(optimize(path)["run_dir"]))
    numbers = folder.evaluated_numbers()
    before = {n: folder.trial_path(n).read_bytes() for n in numbers}
    gone, empty, cut = numbers[:3]
    folder.trial_path(gone).unlink()
    folder.trial_path(empty).write_bytes(b"")
    folder.trial_path(cut).write_bytes(before[cut][:len(before[cut]) // 2])
    measure = _worker.measure

    def drifted(*args, **kwargs):
        m = measure(*args, **kwargs)
        return dataclasses.replace(m, score=m.score.model_copy(update={"production": m.score.production + 1.0}))

    monkeypatch.setattr(_worker, "measure", drifted)
    with pytest.raises(GenesisError, match=f"trial {gone}'s artifact was lost .* the code or data differ"):
        optimize(path)
    assert folder.lost_trials(numbers) == [gone, empty, cut]
    monkeypatch.setattr(_worker, "measure", measure)
    resumed = optimize(path)  # the budget is met: nothing else runs
    from genesis_core.optimizer._worker import spans

    assert any(note.startswith("3 trial artifact(s) lost") and note.endswith(f": {spans([gone, empty, cut])}")
               for note in resumed["session"]["notes"])
    assert {n: folder.trial_path(n).read_bytes() for n in numbers} == before
    assert resumed["states"] == {"COMPLETE": 12}


def test_a_database_given_up_on_fails_the_next_calls_at_once_for_one_retry_period_only(monkeypatch):
    """After a call gave up on a database, the process's next calls to it within a retry period
    fail at once (a dying worker's way out is not one retry period a call), unless one gets
    through; a call made later (a long-lived MCP server's next run) rides the outage out again."""
    import sqlalchemy as sa

    from genesis_core.optimizer import _storage

    monkeypatch.setattr(_storage, "_GAVE_UP", {})
    url, retry = "postgresql://db.invalid/genesis", 0.5
    attempts: list[float] = []

    def down() -> None:
        attempts.append(time.monotonic())
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    def timed(call) -> tuple[float, int, str]:
        attempts.clear()
        start = time.monotonic()
        try:
            _storage.retrying(call, retry, url)
            message = ""
        except _storage.StorageUnavailable as exc:
            message = str(exc)
        return time.monotonic() - start, len(attempts), message

    took, tries, message = timed(down)
    assert 0.25 < took < 0.6 and tries >= 3 and "did not answer for 0.5 s" in message and "given up on" not in message
    took, tries, message = timed(down)  # within the retry period: at once
    assert took < 0.05 and tries == 1 and "given up on 0." in message
    assert _storage.retrying(lambda: attempts.append(0.0) or 7, retry, url) == 7  # one got through
    took, tries, _ = timed(down)  # so the next is retried again
    assert took > 0.25 and tries >= 3
    time.sleep(retry)  # a retry period after giving up: a new call retries in full
    took, tries, message = timed(down)
    assert took > 0.25 and tries >= 3 and "given up on" not in message


@pytest.mark.parametrize("command", [("optimize", "reproducible"), ("optimize", "free"), ("sweep", None)], ids=str)
def test_the_command_line_s_workers_are_forked_under_its_progress_bar_and_their_trials_are_the_api_s(tmp_path, monkeypatch,
                                                                                                    command):
    """The progress bar used to redraw from a thread of its own, and a process with another thread
    running spawns its workers (``process_context``): each imported everything and loaded its data
    again, 0.8-1.3 s before its first trial. 60 trials on two workers took 1.6 s from the command
    line and 0.55 s with --json; a 2,048-point sweep 2.7 s and 1.6 s. The bar now redraws with each
    progress report, from the main thread."""
    from typer.testing import CliRunner

    from genesis_core.cli import app
    from genesis_core.optimizer import _batch, _run, _sweep

    name, parallel = command
    started: list[str] = []

    def recorded(spec):
        context = _worker.process_context(spec)
        started.append(context.get_start_method())
        return context

    for module in (_run, _batch, _sweep):
        monkeypatch.setattr(module, "process_context", recorded)
    for folder in ("cli", "api"):
        (tmp_path / folder).mkdir()
    cli = write_config(tmp_path / "cli", meta={"n_workers": 2, "stop": {"max_trials": 12}, **({"parallel": parallel} if parallel else {})})
    n = 12 if name == "optimize" else 600  # a sweep's pool starts for more than one chunk (250 points)
    args = ["optimize", str(cli), "--skip-preflight"] if name == "optimize" else ["sweep", str(cli), "--points", str(n)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"{n}/{n} " in result.stderr  # the bar was drawn; it counts what the budget counts (a FAIL that lost the race for the
    assert started and set(started) == {"fork"}  # last slot made it 13/12 with free-running workers)
    if parallel == "reproducible":  # and the trials are what the API gives (no bar, no thread)
        api_run = optimize(write_config(tmp_path / "api", meta={"n_workers": 2, "stop": {"max_trials": 12}, "parallel": parallel}))
        with open(tmp_path / "cli" / "results" / "runs" / "t" / "trials.csv") as fh:
            cli_rows = list(csv.DictReader(fh))

        def same(row: dict) -> dict:
            return {k: v for k, v in row.items() if k == "number" or k.startswith("param:") or k.endswith("_score")}

        assert [same(r) for r in cli_rows] == [same(r) for r in _trials(api_run)] and len(cli_rows) == 12


@pytest.mark.parametrize("parallel, workers, sampler", [("free", 1, "tpe"), ("reproducible", 2, "tpe"), ("reproducible", 3, "random")])
def test_a_config_refused_as_its_backtest_runs_fails_its_trial_with_the_reason_and_holds_no_claim(tmp_path, parallel, workers,
                                                                                                   sampler):
    """``gates.htf.timeframe: 90m`` passes the config's checks on 1h bars and is refused only as the
    strategy asks for its HTF trend. Each such trial is a FAIL naming why, as a refused plan is, and
    its key's claim is released: a duplicate waited for it until it was stale (30 s a trial) and then
    failed the same way, and no reason was written. The same point drawn twice in a batch of the
    reproducible mode (random sampling makes it likely) failed the second time without a reason.
    The budget is met by the trials that run."""
    from genesis_core.optimizer._storage import ScoreCache, cache_url

    path = write_config(tmp_path, meta={"stop": {"max_trials": 6}, "parallel": parallel,
                                        "sampler": {"name": sampler, "kwargs": {"seed": 3} | (
                                            {"n_startup_trials": 5} if sampler == "tpe" else {})}},
                        parameters={"gates.htf.timeframe": {"type": "categorical", "choices": ["4h", "90m"]},
                                    "exits.max_bars_held": {"type": "categorical", "choices": [12, 24, 48]}})
    rows = _trials(optimize(path, RunOptions(workers=workers)))
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert failed and {r["param:gates.htf.timeframe"] for r in failed} == {"90m"}
    assert {r["fail_reason"] for r in failed} == {"higher timeframe 90m must be a multiple of the data's 1h"}
    assert sum(r["state"] == "COMPLETE" for r in rows) == 6
    assert max(float(r["duration_ms"]) for r in failed) < 10_000  # none waited for a stale claim (30 s)
    assert ScoreCache(cache_url(load_study_config(path).spec().storage_url)).running_claims("t") == {}

"""`genesis sweep`: grid, random and Sobol points of a study's space, evaluated in batches on several
processes and added to the study as its trials. The artifacts must be what a single backtest of
each config gives, bit for bit; the study must go on from them; an interrupted sweep keeps every
finished chunk and a second run evaluates only the rest."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
import yaml

from genesis_core import report as report_module
from genesis_core.backtest import Backtester
from genesis_core.optimizer import SweepOptions, open_storage, sweep, sweep_points
from genesis_core.optimizer import _sweep as sweep_module
from genesis_core.optimizer._storage import _CACHE, cache_url, make_engine, running
from genesis_core.optimizer._worker import spans
from genesis_core.records import RunFolder, ScoreRecord, ValidationReport, backtest_record
from genesis_core.scoring import score
from genesis_core.study import load_study_config
from tests.optimizer.test_optimizer import ROOT, _trials, write_config
from tests.runs import ctrl_c_until_it_ends, genesis, genesis_killed_after, optimize, validate
from tests.validation.conftest import VALIDATION

SPACE = {
    "exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
    "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 4.0, "step": 0.25},
    "thresholds.signal_adaptation.zones.mid.entry_conf_overall": {"type": "float", "low": 0.5, "high": 0.6},
    "gates.htf.enabled": {"type": "categorical", "choices": [True, False]},
}


def _config(tmp_path: Path, **meta) -> Path:
    return write_config(tmp_path, meta={"stop": {"max_trials": 1000}, "duplicate_streak_limit": 1000, **meta},
                        parameters=SPACE, validation=VALIDATION)


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="t", storage=open_storage(f"journal:///{tmp_path / 'results' / 'optuna.journal'}"))


_EVALUATE = sweep_module._evaluate
_HERE: list[int] = []  # first point of each chunk the sweep's own process evaluated


def _counted(chunk):
    _HERE.append(chunk[0][0])
    return _EVALUATE(chunk)


def test_a_sobol_sweep_on_two_processes_writes_what_single_backtests_give_bit_for_bit(tmp_path, monkeypatch):
    """40 points, fewer than a chunk's most (``CHUNK``), on two processes: chunks of 5, four for each
    (one chunk of ``CHUNK`` ran them on one core). The pool's process and the sweep's own each
    evaluate some of the 8. The sweep's own takes the first chunk no process has started while it
    waits (two are the pool's at once: one running, one queued), not the last, so none of its chunks
    waits to be committed at the end."""
    monkeypatch.setattr(sweep_module, "_evaluate", _counted)
    _HERE.clear()
    spec = load_study_config(_config(tmp_path)).spec()
    summary = sweep(spec, SweepOptions("sobol", points=40, seed=1, workers=2))
    assert 0 < len(_HERE) < 8 and all(i % 5 == 0 for i in _HERE) and _HERE[0] <= 2 * 5 and summary.session.workers == 2
    folder = RunFolder(Path(summary.run_dir))
    trials = _study(tmp_path).trials
    points = sweep_points(spec.space, SweepOptions("sobol", points=40, seed=1))
    assert [t.number for t in trials] == list(range(40)) and summary.cache.unique_backtests == 40
    assert {t.state.name for t in trials} == {"COMPLETE"}
    bt = Backtester()
    for t, point in zip(trials, points, strict=True):  # trial i is point i, each a config of its own
        artifact = folder.read_trial(t.number)
        assert artifact.params == point == spec.space.trial_params(t)
        result = bt.run(spec.build(point))
        single = backtest_record(result, trades=False)
        assert artifact.model_dump(include=set(type(single).model_fields) - {"score"}) == single.model_dump(exclude={"score"})
        assert artifact.score == ScoreRecord.of(score(result.metrics, result.trace, spec.config.scoring, spec.config.constraints))
        assert t.value == artifact.score.production == t.user_attrs["production_score"]
        assert t.user_attrs["genesis"]["config_fingerprint"] == result.config_fingerprint
    rows = folder.read_trials_table()
    assert [r.number for r in rows] == list(range(40)) and all(r.cached is False for r in rows)
    check = genesis("check-equivalence", summary.run_dir, "--all", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    results = json.loads(check.stdout)
    assert len(results) == 40 and all(r["ok"] for r in results)


def test_a_sweep_s_processes_keep_what_outlives_a_chunk_frozen_and_write_the_records_so(tmp_path, monkeypatch):
    """Full collections leave alone what a sweep keeps: the pool's process freezes what survives each
    of its chunks (its caches, made by the first), and the sweep's own process writes the run's
    records with its heap still frozen (the study's trials among it), then gets it back to collect."""
    log = tmp_path / "frozen.log"

    def logged(chunk):  # runs in both processes: the pool's is forked with this module patched
        with log.open("a") as fh:
            fh.write(f"{os.getpid()} {gc.get_freeze_count()}\n")
        return _EVALUATE(chunk)

    at_records: list[int] = []
    record = sweep_module.record_results

    def recording(*args):
        at_records.append(gc.get_freeze_count())
        return record(*args)

    monkeypatch.setattr(sweep_module, "CHUNK", 8)
    monkeypatch.setattr(sweep_module, "_evaluate", logged)
    monkeypatch.setattr(sweep_module, "record_results", recording)
    before = gc.get_freeze_count()
    summary = sweep(load_study_config(_config(tmp_path)).spec(), SweepOptions("sobol", points=160, seed=1, workers=2))
    assert summary.cache.unique_backtests == 160
    counts: dict[int, list[int]] = {}
    for line in log.read_text().splitlines():
        pid, count = map(int, line.split())
        counts.setdefault(pid, []).append(count)
    pool = [c for pid, c in counts.items() if pid != os.getpid()]
    assert len(pool) == 1 and len(pool[0]) >= 3, counts
    first, *later = pool[0]
    assert later[0] > first, pool  # the first chunk's survivors (its backtester's window and features at least)
    assert at_records[0] > before + 10_000 and gc.get_freeze_count() == before


def test_a_chunk_s_results_fit_in_the_pipe_they_come_back_through(tmp_path, monkeypatch):
    """A pool process writes a chunk's results into a pipe that this process's executor thread reads
    only when it gets the GIL: in Linux's default 64 KB pipe the pool's process sat blocked in that
    write, 30 ms a chunk on average (a fifth of its time in a 10k sweep)."""
    import fcntl
    import pickle

    sizes: list[int] = []
    roomy = sweep_module._roomy_results

    def measured(pool):
        roomy(pool)
        sizes.append(fcntl.fcntl(pool._result_queue._writer.fileno(), fcntl.F_GETPIPE_SZ))

    monkeypatch.setattr(sweep_module, "_roomy_results", measured)
    spec = load_study_config(_config(tmp_path)).spec()
    summary = sweep(spec, SweepOptions("sobol", points=sweep_module.CHUNK + 50, seed=2, workers=2))
    assert summary.cache.unique_backtests == sweep_module.CHUNK + 50 and summary.session.workers == 2
    sweep_module._start_process(spec, frozenset())  # a full chunk's results, as the pool's process sends them
    points = sweep_points(spec.space, SweepOptions("sobol", points=sweep_module.CHUNK, seed=3))
    chunk = len(pickle.dumps(sweep_module._evaluate(list(enumerate(points))), protocol=pickle.HIGHEST_PROTOCOL))
    assert len(sizes) == 1 and sizes[0] >= chunk > 64 * 1024, (sizes, chunk)


def test_a_grid_sweep_then_the_same_sweep_again_adds_nothing_and_optimize_goes_on_from_it(tmp_path):
    path = _config(tmp_path)
    spec = load_study_config(path).spec()
    grid = sweep_points(spec.space, SweepOptions("grid", levels=3))
    assert len(grid) == 3 * 3 * 3 * 2  # three values of each number, both choices of the categorical
    assert {p["exits.stop_loss_atr"] for p in grid} == {1.0, 2.5, 4.0} and {p["exits.max_bars_held"] for p in grid} == {6, 51, 96}
    first = sweep(spec, SweepOptions("grid", levels=3, workers=1))
    assert first.cache.total_trials == 54 and first.session.notes[-1].startswith("sweep: grid, 54 points")
    again = sweep(load_study_config(path).spec(), SweepOptions("grid", levels=3, workers=2))
    assert again.cache.total_trials == 54
    assert "0 added, 54 already in the study" in again.session.notes[-1]
    # the study goes on from the sweep: the sampler is told its 54 trials, the budget counts them
    resumed = optimize(path, storage=None, options=_options(64))
    trials = _study(tmp_path).trials
    assert resumed["cache"]["total_trials"] == 64 and len(trials) == 64
    assert [t.user_attrs["genesis"]["cache_key"] for t in trials[:54]] == \
        [t.user_attrs["genesis"]["cache_key"] for t in _study(tmp_path).trials[:54]]
    best = max((t for t in trials if t.user_attrs["outcome"] == "VALID"), key=lambda t: t.value)
    assert resumed["best_trial"]["number"] == best.number
    # the sweep's points are labelled as such, not by the phase their numbers fall in (the first
    # scoring.phase1.trials read "phase 1 (feasibility sampling)" in the report, the rest phase 2)
    assert [t.user_attrs["phase"] for t in trials] == [0] * 54 + [2] * 10
    rows = RunFolder(Path(resumed["run_dir"])).read_trials_table()
    assert [r.phase for r in rows] == [0] * 54 + [2] * 10
    assert [trace.name for trace in report_module._history(rows).data] == [
        "sweep points (grid, random or Sobol)", "phase 2 (production sampling)", "best so far"]
    report = validate(Path(resumed["run_dir"]))  # validation reads the sweep's trials as any run's
    assert report["evaluated_trials"] >= 54 and not report["missing_artifacts"]


def test_a_sweep_s_progress_tells_the_best_of_the_study_so_far_after_each_chunk(tmp_path, monkeypatch):
    """The best was the whole study's, scanned after each chunk: a 981,552-point sweep took 1,271 s,
    38% of its process's time in that scan (307,200 points: 153 s, 97 s without it). It is now the
    best of the study when the sweep started, then of each chunk added, and still says what the
    study's trials say: here a sweep into a study whose 54 grid trials hold its best, in chunks of 5."""
    from genesis_core.optimizer import best_score

    path = _config(tmp_path)
    sweep(load_study_config(path).spec(), SweepOptions("grid", levels=3, workers=1))
    before = _study(tmp_path).trials
    monkeypatch.setattr(sweep_module, "CHUNK", 5)
    told = []
    sweep(load_study_config(path).spec(), SweepOptions("sobol", points=40, seed=1, workers=1), on_progress=told.append)
    trials = _study(tmp_path).trials
    assert len(trials) == len(before) + 40 and [p.completed for p in told] == list(range(5, 45, 5))
    assert [p.best for p in told] == [best_score(trials[:len(before) + p.completed]) for p in told]
    assert told[0].best == best_score(before) != best_score(trials[len(before):len(before) + 5])  # the study's, not the chunk's


def test_the_sweep_s_next_command_goes_on_from_its_trials_within_the_budget_and_the_study_they_went_to(tmp_path):
    """The sweep's last line names the optimize command that goes on from its trials. The budget
    counts them, so where they meet it already the command raises it by the config's budget (it
    said `genesis optimize CONFIG`, which ran nothing and printed only 0/0; such a session now says
    why in a note); and a sweep into ``--study`` names that study, which optimize now takes too (it
    had no ``--study``: the command went on in ``meta.study_name``'s study)."""
    path = write_config(tmp_path, meta={"stop": {"max_trials": 20}, "duplicate_streak_limit": 1000}, parameters=SPACE,
                        validation={**VALIDATION, "enabled": False})

    def next_command(*args: str) -> list[str]:
        swept = genesis("sweep", str(path), *args)
        assert swept.returncode == 0, swept.stdout + swept.stderr
        said = " ".join(swept.stdout.split())
        command = said[said.index("next: ") + 6:said.index(" goes on from these trials")]
        assert command.startswith("genesis optimize "), said
        return command.split()[1:]

    def trials(study: str) -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=study, storage=open_storage(f"journal:///{tmp_path / 'results' / 'optuna.journal'}")).trials

    command = next_command("--points", "30")
    assert command == ["optimize", str(path), "--max-trials", "50"]  # the sweep's 30 trials meet the budget of 20
    as_the_config_says = genesis("optimize", str(path), "--skip-preflight")
    assert as_the_config_says.returncode == 0 and len(trials("t")) == 30, as_the_config_says.stderr
    assert "the study's 30 evaluated trials meet its budget of 20 already" in " ".join(as_the_config_says.stderr.split())
    went_on = genesis(*command, "--skip-preflight")
    assert went_on.returncode == 0, went_on.stderr
    assert len(trials("t")) == 50 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials("t"))
    assert "meet its budget" not in went_on.stderr

    command = next_command("--points", "12", "--study", "other")  # fewer than the budget: as the config says
    assert command == ["optimize", str(path), "--study", "other"]
    went_on = genesis(*command, "--skip-preflight")
    assert went_on.returncode == 0, went_on.stderr
    assert len(trials("other")) == 20 and len(trials("t")) == 50

    def sessions(study: str) -> list[int]:
        return [s["max_trials"] for s in json.loads((tmp_path / "results" / "runs" / study / "run.json").read_text())["sessions"]]

    assert sessions("other") == [None, 20] and sessions("t") == [None, 20, 50]  # the sweep's, then optimize's


def test_a_sweep_into_a_study_of_another_space_is_refused_naming_the_ways_on_and_force_resume_adds_to_it(tmp_path):
    """A sweep checks the study's signature as optimize does (in preflight, and again as it opens the
    study); its refusal named `--force-resume`, which the sweep did not take ("No such option"). It
    takes it now, records it as optimize does, and both refusals name `--study NAME` too, which both
    commands take."""
    path = _config(tmp_path)
    assert genesis("sweep", str(path), "--points", "20").returncode == 0
    wider = {**SPACE, "exits.stop_loss_atr": {**SPACE["exits.stop_loss_atr"], "high": 5.0}}
    assert write_config(tmp_path, meta={"stop": {"max_trials": 1000}, "duplicate_streak_limit": 1000}, parameters=wider,
                        validation=VALIDATION) == path
    refused = genesis("sweep", str(path), "--points", "20")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "preflight failed" in said, said
    assert ("storage: study 't' (20 trials) was made with other settings: search_space: exits.stop_loss_atr.high: 4.0 -> 5.0; "
            "--study NAME for a study of its own, or --force-resume to go on in this one") in said
    refused = genesis("sweep", str(path), "--points", "20", "--skip-preflight")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and "exits.stop_loss_atr.high: 4.0 -> 5.0" in said, said
    assert "(use a new study name, --study NAME, or --force-resume to continue anyway)" in said
    assert len(_study(tmp_path).trials) == 20
    forced = genesis("sweep", str(path), "--points", "20", "--force-resume")
    assert forced.returncode == 0, forced.stderr
    trials = _study(tmp_path).trials
    added = len(trials) - 20  # points of the wider range that fall on one of the first sweep's are already there
    assert added > 15 and max(t.params["exits.stop_loss_atr"] for t in trials[20:]) > 4.0
    session = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["sessions"][-1]
    assert {c["name"]: c["status"] for c in session["preflight"]["checks"]}["storage"] == "warn"
    notes = session["notes"]
    assert notes[0] == "resumed despite signature mismatch (--force-resume): search_space: exits.stop_loss_atr.high: 4.0 -> 5.0"
    assert f"{added} added, {20 - added} already in the study" in notes[-1]
    again = genesis("sweep", str(path), "--points", "20")  # the study took the new signature
    assert again.returncode == 0 and len(_study(tmp_path).trials) == 20 + added, again.stderr


def test_a_sweep_is_preflighted_as_optimize_is_and_one_inside_its_model_s_training_span_writes_nothing(tmp_path):
    """`genesis sweep` ran without preflight: a sweep over a window inside the model's training span
    (in-sample for the model, the leakage preflight exists to stop) or past the data's end ran to
    the end, and its results fed validation and promotion as any run's; the second added nothing
    and said so only in a note, exit 0. Now preflight runs first (without the budget's checks: a
    sweep has none) and is recorded in the session; ``--skip-preflight`` starts it anyway, recorded."""
    leak = write_config(tmp_path, "leak.yaml", meta={"sample_start": "2021-01-01", "sample_end": "2021-03-31"}, parameters=SPACE,
                        validation=VALIDATION)
    refused = genesis("sweep", str(leak), "--points", "20")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "preflight failed" in said, said
    assert ("model training: explore 2021-01-01..2021-03-31 overlaps the training span of model builtin:btcusd_1h "
            "(2018-06-01..2021-12-31, BTCUSD 1h): in-sample for the model") in said
    assert not (tmp_path / "results").exists()
    past = write_config(tmp_path, "past.yaml", meta={"sample_start": "2023-06-01", "sample_end": "2025-12-31"}, parameters=SPACE,
                        validation=VALIDATION)
    refused = genesis("sweep", str(past), "--points", "20")
    assert refused.returncode == 1 and "windows covered: explore 2023-06-01..2025-12-31: window end 2025-12-31 is after the " \
        "data's last bar" in " ".join(refused.stderr.split())
    assert not (tmp_path / "results").exists()

    anyway = genesis("sweep", str(leak), "--points", "20", "--skip-preflight")
    assert anyway.returncode == 0 and len(_study(tmp_path).trials) == 20, anyway.stderr
    assert json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["sessions"][-1]["preflight"] == {"skipped": True}

    checked = genesis("sweep", str(_config(tmp_path, study_name="u")), "--points", "300", "--workers", "2")
    assert checked.returncode == 0, checked.stderr
    session = json.loads((tmp_path / "results" / "runs" / "u" / "run.json").read_text())["sessions"][-1]
    checks = {c["name"]: (c["status"], c["detail"]) for c in session["preflight"]["checks"]}
    assert "stop policy" not in checks and "space size" not in checks and all(s == "pass" for s, _ in checks.values()), checks
    assert re.fullmatch(r"~\d+\.\d s of backtests for 300 points on 2 process\(es\): \d+\.\d ms a point \(plan, backtest, score, "
                        r"record\), measured at the base point; writing each point's trial, artifact and cache entry comes on top",
                        checks["expected run time"][1]), checks["expected run time"]


def test_a_sweep_into_a_study_without_a_signature_can_adopt_one_as_its_note_says(tmp_path):
    """A study made without this code's signature (plain Optuna, an old version) is swept into with a
    note naming `--backfill-signature`, which only optimize took: the sweep takes it now, and the
    study's signature then guards it as any study's."""
    path = _config(tmp_path)
    (tmp_path / "results").mkdir()
    plain = optuna.create_study(study_name="t", direction="maximize", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "results" / "optuna.journal"))))
    plain.add_trial(optuna.trial.create_trial(params={"exits.max_bars_held": 24}, value=1.0,
                                              distributions={"exits.max_bars_held": optuna.distributions.IntDistribution(6, 96)}))

    def notes() -> list[str]:
        return json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["sessions"][-1]["notes"]

    assert genesis("sweep", str(path), "--points", "10").returncode == 0
    assert "study 't' has 1 trials but no signature, so nothing proves they were made with this config; " \
           "--backfill-signature adopts the current one" in notes()
    adopted = genesis("sweep", str(path), "--points", "20", "--backfill-signature")
    assert adopted.returncode == 0, adopted.stderr
    assert notes()[0] == "signature backfilled by --backfill-signature" and len(_study(tmp_path).trials) == 21
    assert genesis("sweep", str(path), "--points", "30").returncode == 0 and "signature" not in " ".join(notes()[:-1])
    wider = {**SPACE, "exits.max_bars_held": {**SPACE["exits.max_bars_held"], "high": 120}}
    write_config(tmp_path, meta={"stop": {"max_trials": 1000}, "duplicate_streak_limit": 1000}, parameters=wider, validation=VALIDATION)
    guarded = genesis("sweep", str(path), "--points", "10", "--skip-preflight")
    assert guarded.returncode == 2 and "exits.max_bars_held.high: 96 -> 120" in " ".join(guarded.stderr.split())


def _options(max_trials: int):
    from genesis_core.optimizer import RunOptions

    return RunOptions(workers=1, max_trials=max_trials)


def test_ctrl_c_mid_sweep_keeps_the_finished_chunks_and_the_same_command_does_the_rest(tmp_path):
    """SIGINT to the whole process group while the pool works, and again every 20 ms till the process
    ends (a second Ctrl-C changes nothing): exit 130, every trial in the study has its artifact and a
    cache entry, and the re-run evaluates only the points not yet there."""
    path = _config(tmp_path, sample_start="2022-01-01", sample_end="2022-12-31")
    trials_dir = tmp_path / "results" / "runs" / "t" / "trials"
    proc = subprocess.Popen([sys.executable, "-m", "genesis_core", "sweep", str(path), "--points", "1500", "--workers", "2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    chunk = sweep_module.chunk_size(1500, 2)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(trials_dir.glob("*.json"))) < chunk and proc.poll() is None:
        time.sleep(0.02)
    ctrl_c_until_it_ends(proc)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    kept = _study(tmp_path).trials
    assert chunk <= len(kept) < 1500 and len(kept) % chunk == 0  # whole chunks only
    assert sorted(int(p.stem) for p in trials_dir.glob("*.json")) == [t.number for t in kept]
    run = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())
    assert run["sessions"][-1]["interrupted"] and run["sessions"][-1]["signal"] == "SIGINT"
    rest = genesis("sweep", str(path), "--points", "1500", "--workers", "2", "--json")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert f"{1500 - len(kept):,} added, {len(kept):,} already in the study" in json.loads(rest.stdout)["session"]["notes"][-1]
    trials = _study(tmp_path).trials
    assert len(trials) == 1500 and len({t.user_attrs["genesis"]["cache_key"] for t in trials}) == 1500
    assert not list(trials_dir.glob("*.tmp"))


def test_a_sweep_is_refused_while_a_trial_of_the_study_runs(tmp_path):
    path = _config(tmp_path)
    spec = load_study_config(path).spec()
    sweep(spec, SweepOptions("random", points=3, workers=1))
    study = _study(tmp_path)
    trial = study.ask()
    trial.set_user_attr("worker", {"host": "elsewhere", "pid": 1, "boot": None, "start": None})
    study._storage.flush()
    result = genesis("sweep", str(path), "--method", "random", "--points", "3")
    assert result.returncode != 0
    assert "1 running or queued trial(s)" in result.stderr
    assert len(_study(tmp_path).trials) == 4  # nothing added


def test_sobol_points_are_scipy_s_point_for_point_and_drawing_them_imports_no_scipy_stats(tmp_path):
    """Our Sobol' sequence is SciPy's scrambled one (same seed, same bits) in 1 to 256 dimensions,
    and a sweep's process draws it without importing scipy.stats (0.9 s)."""
    import warnings

    import numpy as np
    from scipy.stats import qmc

    from genesis_core.optimizer._sobol import MAX_DIMENSIONS, sobol

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # counts that are not powers of two
        for d in (1, 2, 7, 40, MAX_DIMENSIONS):
            for n in (1, 2, 3, 1000, 1024):
                for seed in (0, 12345):
                    assert np.array_equal(sobol(d, n, seed), qmc.Sobol(d, scramble=True, seed=seed).random(n)), (d, n, seed)
    code = (f"import sys; from genesis_core.optimizer import SweepOptions, sweep_points; "
            f"from genesis_core.study import load_study_config; "
            f"spec = load_study_config({str(_config(tmp_path))!r}).spec(); "
            f"points = sweep_points(spec.space, SweepOptions('sobol', points=100, seed=3)); "
            f"print(len(points), len({{str(p) for p in points}}), 'scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    assert out == ["100", "100", "False"]


def test_sobol_points_hold_python_numbers_rounded_as_every_other_point_is(tmp_path):
    """A Sobol point's values are Python numbers, as a sampled or grid point's are, on the 12-decimal
    grid as Python rounds (NumPy scalars rounded by NumPy's round differed in the last bit for 9 of
    100,000 coordinates, and went into trial params as NumPy scalars)."""
    import numpy as np

    spec = load_study_config(_config(tmp_path)).spec()
    points = sweep_points(spec.space, SweepOptions("sobol", points=500, seed=2))
    values = [v for p in points for v in p.values()]
    assert not [v for v in values if isinstance(v, np.generic)]
    floats = [v for v in values if type(v) is float]
    assert floats and all(round(v, 12) == v for v in floats)


def test_every_sweep_method_spreads_a_log_scale_parameter_over_its_logarithm_as_optuna_s_samplers_do(tmp_path):
    """A grid's levels of a log-scale range are geometric, and random and Sobol points fall evenly over
    its logarithm, each whole number of an int range taking the share of [n - 0.5, n + 0.5] Optuna's
    samplers give it (grid and random points were spread evenly over the range itself)."""
    import math
    import statistics

    space = load_study_config(write_config(tmp_path, parameters={
        "thresholds.min_edge": {"type": "float", "low": 0.0001, "high": 0.1, "log": True},
        "exits.max_bars_held": {"type": "int", "low": 1, "high": 100, "log": True},
    })).spec().space
    grid = sweep_points(space, SweepOptions("grid", levels=4))
    assert sorted({p["thresholds.min_edge"] for p in grid}) == [0.0001, 0.001, 0.01, 0.1]
    assert sorted({p["exits.max_bars_held"] for p in grid}) == [1, 5, 22, 100]  # 100 ** (k / 3), rounded
    share_of_1 = math.log(1.5 / 0.5) / math.log(100.5 / 0.5)  # 0.207; Optuna's RandomSampler: 0.207 of 4,000 draws
    for method in ("random", "sobol"):
        points = sweep_points(space, SweepOptions(method, points=2000, seed=1))
        edges, bars = [p["thresholds.min_edge"] for p in points], [p["exits.max_bars_held"] for p in points]
        assert 0.0001 <= min(edges) and max(edges) <= 0.1 and all(type(b) is int and 1 <= b <= 100 for b in bars)
        assert 0.45 < sum(e < (0.0001 * 0.1) ** 0.5 for e in edges) / 2000 < 0.55, method  # below the geometric middle
        assert abs(bars.count(1) / 2000 - share_of_1) < 0.03 and statistics.median(bars) in (7, 8), method


def test_an_artifact_and_a_cache_entry_made_from_the_record_s_json_are_the_models_json(tmp_path):
    """A sweep's process writes each point's artifact and cache entry from its record's JSON
    (``TrialArtifact.json_of``, ``CacheEntry.json_of``): byte for byte what the models write, for
    scores as measured and with non-finite values (written as null, as the models write them),
    pruned or not, another study's result or not; a record that already has a score is refused."""
    import math

    from genesis_core.optimizer._storage import CacheEntry
    from genesis_core.optimizer._worker import measure
    from genesis_core.records import CachedFrom, TrialArtifact

    spec = load_study_config(_config(tmp_path)).spec()
    backtester = Backtester()
    for point in sweep_points(spec.space, SweepOptions("sobol", points=24, seed=5)):
        m = measure(backtester, backtester.plan(*spec.build.validated(point)), spec, optuna.pruners.NopPruner())
        record_json = m.record.model_dump_json()
        scores = [m.score, m.score.model_copy(update={"production": -math.inf, "feasibility": math.nan})]
        for sc in scores:
            for pruned, origin in ((None, None), ("MedianPruner at bar 10", CachedFrom(study="other", trial=3))):
                model = TrialArtifact.of(m.record, 7, point, sc, pruned, origin)
                assert TrialArtifact.json_of(record_json, 7, point, sc, pruned, origin) == model.model_dump_json()
            entry = CacheEntry(study="t", trial_number=7, score=sc, metrics=m.metrics, record=m.record)
            assert CacheEntry.json_of("t", 7, sc, m.metrics, record_json) == entry.model_dump_json()
    assert "null" in CacheEntry.json_of("t", 7, scores[1], m.metrics, record_json).split('"metrics"')[0]
    with pytest.raises(ValueError, match="ends with a score"):
        TrialArtifact.json_of(model.model_dump_json(), 7, point, m.score)


def test_the_builder_s_validated_params_plan_as_the_config_s_own_would(tmp_path):
    """A trial's config and its params as the builder validated them plan exactly as the config
    alone does (``Backtester.plan`` validating its params again): the same params, effective
    config and fingerprint, for points over every kind of parameter of the space."""
    spec = load_study_config(_config(tmp_path)).spec()
    backtester = Backtester()
    points = sweep_points(spec.space, SweepOptions("sobol", points=64, seed=4))
    assert {p["gates.htf.enabled"] for p in points} == {True, False}
    for point in points:
        config, params = spec.build.validated(point)
        given, own = backtester.plan(config, params), backtester.plan(config)
        assert given.params == own.params and repr(given.params) == repr(own.params)
        assert given.config == own.config and given.config_fingerprint == own.config_fingerprint


_STEPS = {"add_finished": "genesis_core.optimizer._sweep:add_finished",  # the chunk's trials appended: the commit's first step
          "write_trials": "genesis_core.records._run:RunFolder.write_trials",  # their artifacts written
          "store_many": "genesis_core.optimizer._storage:ScoreCache.store_many"}  # their cache entries stored: the last step


@pytest.mark.parametrize(("step", "server"), [("add_finished", False), ("write_trials", False), ("store_many", False),
                                              ("add_finished", True), ("write_trials", True)])
def test_kill_9_at_each_step_of_a_chunk_s_commit_loses_nothing_and_the_same_command_finishes(tmp_path, step, server, request):
    """kill -9 of the sweep's process right after its second chunk's trials are appended, after
    their artifacts are written, or after their cache entries are stored (the first two also on
    ``journal+postgresql://``): the study keeps both chunks, and the same command writes what the
    kill left unwritten (the artifacts, by running those trials again; the entries, from the
    artifacts), then adds exactly the rest: every point once, each trial's artifact and cache entry
    its own."""
    path = _config(tmp_path, sample_start="2022-01-01", sample_end="2022-03-31")
    storage = "journal+" + request.getfixturevalue("postgres_url") if server else None
    args = [str(path), "--points", "600", "--workers", "1", *(["--storage", storage] if storage else [])]
    killed = genesis_killed_after(_STEPS[step], 2, "sweep", *args)  # the second chunk
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    def study() -> optuna.Study:
        return _study(tmp_path) if storage is None else optuna.load_study(study_name="t", storage=open_storage(storage))

    kept = study().trials
    assert len(kept) == 500
    rest = genesis("sweep", *args, "--json")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    notes = json.loads(rest.stdout)["session"]["notes"]
    assert "100 added, 500 already in the study" in notes[-1]
    second = "250-499"
    artifacts = ("250 trial artifact(s) lost before they reached the disk (a power loss, or a sweep stopped before writing them) "
                 f"were written again by running their trials again, with the scores the study recorded: {second}")
    entries = f"250 trial(s) told before a stopped worker or sweep wrote their score cache entries had them written from their artifacts: {second}"
    expected = {"add_finished": [artifacts, entries], "write_trials": [entries], "store_many": []}[step]
    assert [n for n in notes if "lost before" in n or "told before" in n] == expected
    trials = study().trials
    keys = [t.user_attrs["genesis"]["cache_key"] for t in trials]
    assert [t.number for t in trials] == list(range(600)) and len(set(keys)) == 600
    folder = RunFolder(tmp_path / "results" / "runs" / "t")
    with make_engine(cache_url(storage or load_study_config(path).spec().storage_url)).connect() as conn:
        rows = {r.key: r for r in conn.execute(sa.select(_CACHE).where(_CACHE.c.study == "t"))}
    assert set(rows) == set(keys)  # no entry of a point the study does not hold
    for t, key in zip(trials, keys, strict=True):
        artifact = folder.read_trial(t.number)
        assert artifact.trial_number == t.number and artifact.score.production == t.value
        row = rows[key]
        assert row.state == "done" and row.trial_number == t.number == json.loads(row.payload)["trial_number"], t.number
    assert not list((folder.path / "trials").glob("*.tmp"))


def test_a_full_disk_mid_sweep_ends_it_saying_how_to_finish_and_the_same_command_then_writes_what_is_missing(tmp_path):
    """The tenth artifact write of the first chunk is refused (a file size limit: the kernel cuts the
    write short, then refuses it, as a full disk does). The chunk's trials were appended first, so the
    study holds them, nine with their artifacts. The sweep ends at once, with one line saying so and
    what to do (it printed the bare OS error); the same command, with room, writes the missing
    artifacts by running their trials again and the cache entries from them, then adds the rest."""
    from tests.optimizer.test_accounting import _FULL_DISK

    path = _config(tmp_path, sample_start="2022-01-01", sample_end="2022-03-31")
    args = ["sweep", str(path), "--points", "600", "--workers", "1"]
    full = subprocess.run([sys.executable, "-c", _FULL_DISK, "artifact", "10", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert full.returncode == 2, full.stderr
    folder = RunFolder(tmp_path / "results" / "runs" / "t")
    assert full.stderr.strip().endswith(f"error: {folder.trial_path(9)}: File too large; the chunks committed before are kept: the "
                                        "same command, run again, writes what this one left unwritten and evaluates the rest")
    assert "Traceback" not in full.stderr
    assert len(_study(tmp_path).trials) == 250 and folder.lost_trials(list(range(250))) == list(range(9, 250))
    rest = genesis(*args, "--json")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    notes = json.loads(rest.stdout)["session"]["notes"]
    assert notes == [
        "241 trial artifact(s) lost before they reached the disk (a power loss, or a sweep stopped before writing them) were "
        "written again by running their trials again, with the scores the study recorded: 9-249",
        "250 trial(s) told before a stopped worker or sweep wrote their score cache entries had them written from their "
        "artifacts: 0-249",
        "sweep: sobol, 600 points (seed 0) with 1 process(es): 350 added, 250 already in the study, 0 repeated a configuration"]
    trials = _study(tmp_path).trials
    with make_engine(cache_url(load_study_config(path).spec().storage_url)).connect() as conn:
        rows = {r.key: r for r in conn.execute(sa.select(_CACHE).where(_CACHE.c.study == "t"))}
    assert len(trials) == len(rows) == 600
    for t in trials:
        artifact, key = folder.read_trial(t.number), t.user_attrs["genesis"]["cache_key"]
        assert (artifact.trial_number, artifact.score.production) == (t.number, t.value)
        assert rows[key].state == "done" and rows[key].trial_number == t.number == json.loads(rows[key].payload)["trial_number"]
    assert not list((folder.path / "trials").glob("*.tmp"))


@pytest.mark.parametrize("rdb", [False, True])  # the journal's one append; an RDB storage's create per trial
def test_a_trial_another_process_adds_during_a_commit_keeps_its_number_and_artifact_and_the_chunk_s_trials_go_after_it(
        tmp_path, monkeypatch, rdb):
    """Two sweeps of one study at once (the same command in two terminals), or a worker started
    during a sweep: another process's trial lands between the chunk's look at the study and its
    append. The chunk's trials take the numbers after it, and their artifacts and cache entries are
    written under those. Before, the artifacts were written first, under the numbers expected: the
    other's artifact was written over, and the sweep then stopped (two real sweeps of 3,000 points
    each: of the 3,250 trials they left, 393 carried another trial's artifact and 250 had none)."""
    path = _config(tmp_path, sample_start="2022-01-01", sample_end="2022-03-31")
    spec = load_study_config(path).spec(f"sqlite:///{tmp_path / 'results' / 'study.db'}" if rdb else None)
    folder, real, raced = spec.folder, sweep_module.add_finished, []

    def racing(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> list[int]:
        if not raced:  # the first chunk: the other process appends its own trial and writes its artifact first
            other = optuna.load_study(study_name="t", storage=open_storage(spec.storage_url))  # a view of its own
            distributions = dict(spec.space.distributions)
            params = {p: trials[-1].params[p] for p in distributions}
            other.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=-1e9))
            folder.trial_path(0).parent.mkdir(parents=True, exist_ok=True)
            folder.trial_path(0).write_text("the other process's artifact")
            raced.append(len(trials))
        return real(study, trials)

    monkeypatch.setattr(sweep_module, "add_finished", racing)
    summary = sweep(spec, SweepOptions("sobol", points=300, workers=1))
    assert raced == [250] and summary.session.notes[-1] == ("sweep: 250 of its trials took later numbers than expected: another "
                                                            "process added trials to the study meanwhile (a second sweep, or "
                                                            "workers started since)")
    trials = optuna.load_study(study_name="t", storage=open_storage(spec.storage_url)).trials
    assert len(trials) == 301 and trials[0].value == -1e9 and "genesis" not in trials[0].user_attrs
    assert folder.trial_path(0).read_text() == "the other process's artifact"
    with make_engine(cache_url(spec.storage_url)).connect() as conn:
        rows = {r.key: r for r in conn.execute(sa.select(_CACHE).where(_CACHE.c.study == "t"))}
    assert len(rows) == 300
    for t in trials[1:]:
        artifact, key = folder.read_trial(t.number), t.user_attrs["genesis"]["cache_key"]
        assert (artifact.trial_number, artifact.score.production, artifact.fingerprints["config"]) == (
            t.number, t.value, t.user_attrs["genesis"]["config_fingerprint"])
        assert rows[key].trial_number == t.number == json.loads(rows[key].payload)["trial_number"]


def test_a_point_refused_as_its_backtest_runs_is_noted_as_refused_and_the_sweep_adds_the_rest(tmp_path):
    """``gates.htf.timeframe: 90m`` passes the config's checks on 1h bars and is refused only as the
    strategy asks for its HTF trend. Those points are noted as refused, with the reason, and the others
    are added as trials with their artifacts (the refusal ended the whole sweep with it)."""
    path = write_config(tmp_path, meta={"stop": {"max_trials": 1000}},
                        parameters={"gates.htf.timeframe": {"type": "categorical", "choices": ["4h", "90m"]},
                                    "exits.max_bars_held": {"type": "categorical", "choices": [12, 24, 48]}})
    summary = sweep(load_study_config(path).spec(), SweepOptions("grid", workers=2))
    assert "3 added" in summary.session.notes[-2]
    assert summary.session.notes[-1] == ("sweep: the strategy refused 3 point(s) (not added), the first: "
                                         "higher timeframe 90m must be a multiple of the data's 1h")
    trials = _study(tmp_path).trials
    assert [t.params["gates.htf.timeframe"] for t in trials] == ["4h"] * 3
    assert all(RunFolder(Path(summary.run_dir)).read_trial(t.number).score.production == t.value for t in trials)


def test_a_strategy_that_never_ends_for_some_parameters_fails_those_trials_and_points_and_the_run_ends(tmp_path):
    """A user's loop whose end condition some parameters never meet: its trial held the worker for
    ever, and a Ctrl-C, which waits for the trials in flight, could not stop the run (kill -9 only).
    Now each such trial or point FAILs after meta.trial_timeout_seconds with the reason, and the
    others are what single backtests give."""
    strategy = "tests.strategy.misbehaving_strategy:Misbehaving"
    base = tmp_path / "bug.yaml"
    base.write_text(yaml.safe_dump({"strategy": strategy, "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz")}}))
    space = {"bug": {"type": "categorical", "choices": ["none", "never ends"]},
             "period": {"type": "categorical", "choices": [10, 20]}}
    path = write_config(tmp_path, meta={"base_config": str(base), "stop": {"max_trials": 4}, "trial_timeout_seconds": 1,
                                        "sampler": {"name": "grid"}}, parameters=space)
    run = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--skip-preflight"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # without the limit: never
    assert run.returncode == 0, run.stderr
    reason = (f"strategy '{strategy}' took longer than 1 s (meta.trial_timeout_seconds) to decide, and was stopped: a loop "
              "that never ends for these parameters?")
    rows = _trials({"run_dir": tmp_path / "results" / "runs" / "t"})
    assert sorted((r["param:bug"], r["state"]) for r in rows) == [("never ends", "FAIL")] * 2 + [("none", "COMPLETE")] * 2
    assert all(r["fail_reason"] == reason for r in rows if r["state"] == "FAIL")
    bt, spec = Backtester(), load_study_config(path).spec()
    for r in (r for r in rows if r["state"] == "COMPLETE"):
        result = bt.run(spec.build({"bug": "none", "period": int(r["param:period"])}))
        assert float(r["total_return"]) == result.metrics["total_return"] and int(r["num_trades"]) == result.metrics["num_trades"]

    # as the MCP server runs a study, in a thread of its own, where no signal can be set: every trial failed
    # as the strategy's ValueError; then, without a limit, this one never ended (its trials are now measured
    # in processes of their own: the same rows)
    threaded: dict = {}
    in_thread = threading.Thread(target=lambda: threaded.update(optimize(write_config(tmp_path, "th.yaml", meta={
        "base_config": str(base), "study_name": "th", "stop": {"max_trials": 4}, "trial_timeout_seconds": 1,
        "sampler": {"name": "grid"}}, parameters=space))), daemon=True)
    in_thread.start()
    in_thread.join(120)
    assert not in_thread.is_alive() and threaded
    assert [(r["param:bug"], r["param:period"], r["state"], r["fail_reason"], r["total_return"]) for r in _trials(threaded)] == \
        [(r["param:bug"], r["param:period"], r["state"], r["fail_reason"], r["total_return"]) for r in rows]

    summary = sweep(load_study_config(write_config(tmp_path, "s.yaml", meta={
        "base_config": str(base), "study_name": "s", "trial_timeout_seconds": 1}, parameters=space)).spec(),
        SweepOptions("grid", workers=2))
    assert "2 added" in summary.session.notes[-2]
    assert summary.session.notes[-1].startswith(f"sweep: the strategy refused 2 point(s) (not added), the first: {reason}")


def test_a_user_strategy_s_order_the_engine_cannot_take_ends_a_backtest_in_one_line_and_fails_only_its_trials(tmp_path):
    """A user's strategy whose ``size`` parameter is left unbounded, run at -0.5: the engine read it
    as an order the other way round and the backtest reported its result. Now a backtest ends with
    one line naming the strategy, the value and its bar; a sweep and a study over sizes fail just
    those points, with the reason, and add the others as single backtests give them."""
    strategy = "tests.strategy.custom_strategy:RsiReversion"
    base = tmp_path / "rsi.yaml"
    base.write_text(yaml.safe_dump({"strategy": strategy, "params": {"size": -0.5},
                                    "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                                             "start": "2022-03-01", "end": "2022-05-31"}}))
    out = genesis("backtest", "--config", str(base))
    refusal = (f"strategy '{strategy}' decided what the engine cannot take: size is -0.5 for an order of side -?1 "
               r"at 2022-\d\d-\d\dT\d\d:00:00Z \(bar \d+ of the window\): a fraction of equity above 0 and at most 1")
    assert out.returncode == 1 and re.fullmatch(f"error: {refusal}.*\n", out.stderr), out.stderr
    space = {"size": {"type": "categorical", "choices": [-0.5, 0.5, 1.0]},
             "period": {"type": "categorical", "choices": [10, 14]}}
    validation = {**VALIDATION, "constraints": {"min_trades": 1, "min_profit_factor": 0.0, "max_drawdown": 0.9}}
    path = write_config(tmp_path, meta={"base_config": str(base), "stop": {"max_trials": 1000}}, parameters=space,
                        validation=validation)
    summary = sweep(load_study_config(path).spec(), SweepOptions("grid", workers=2))
    assert "4 added" in summary.session.notes[-2]
    assert re.fullmatch(f"sweep: the strategy refused 2 point\\(s\\) \\(not added\\), the first: {refusal}.*",
                        summary.session.notes[-1]), summary.session.notes
    bt, spec, run = Backtester(), load_study_config(path).spec(), RunFolder(Path(summary.run_dir))
    trials = _study(tmp_path).trials
    assert sorted((t.params["size"], t.params["period"]) for t in trials) == [(0.5, 10), (0.5, 14), (1.0, 10), (1.0, 14)]
    for t in trials:
        result = bt.run(spec.build(t.params))
        assert result.metrics["num_trades"] > 10
        assert run.read_trial(t.number).score == ScoreRecord.of(score(result.metrics, result.trace, spec.config.scoring,
                                                                      spec.config.constraints))
    shown = genesis("validate", summary.run_dir)  # the robustness map leaves out a neighbour at size -0.5, as one refused
    assert shown.returncode == 0, shown.stderr
    report = ValidationReport.model_validate_json((Path(summary.run_dir) / "validation.json").read_text())
    assert report.candidates
    for c in report.candidates:
        size, period = (run.read_trial(c.trial).params[p] for p in ("size", "period"))
        assert c.robustness is not None and sorted((n.param, n.value) for n in c.robustness.neighbours) == [
            ("period", 24 - period), ("size", 1.0 if size == 0.5 else 0.5)]

    studied = optimize(write_config(tmp_path, "tpe.yaml", meta={"base_config": str(base), "study_name": "tpe",
                                                                "stop": {"max_trials": 15}}, parameters=space))
    rows = _trials(studied)
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert failed and all(r["param:size"] == "-0.5" and re.fullmatch(refusal + ".*", r["fail_reason"]) for r in failed)
    assert all(r["param:size"] != "-0.5" for r in rows if r["state"] == "COMPLETE")


CRASHED = ("its sweep process died of SIGSEGV (Segmentation fault) evaluating it: a crash of compiled code (a strategy's, "
           "a feature's or a library's), failed in the study, and skipped by later sweeps")


def _sweep_crashes(tmp_path: Path, config: Path, workers: int) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """`genesis sweep CONFIG --method grid` in a process of its own, which Python's faulthandler says
    crashed at the strategy's line; and the trials.csv rows of its study, if any."""
    from tests.optimizer.test_accounting import _crash_dump

    run = subprocess.run([sys.executable, "-m", "genesis_core", "sweep", str(config), "--method", "grid", "--workers", str(workers),
                          "--skip-preflight"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert _crash_dump(run.stderr) and "Traceback" not in run.stderr, run.stderr[-3000:]
    run_dir = tmp_path / "results" / "runs" / "t"
    return run, _trials({"run_dir": run_dir}) if (run_dir / "trials.csv").exists() else []


def _evaluated_as_single_backtests(run_dir: Path, n: int) -> None:
    """Each of the ``n`` evaluated trials, re-run from its artifact alone, gives its numbers (check-equivalence)."""
    check = genesis("check-equivalence", str(run_dir), "--all", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    results = json.loads(check.stdout)
    assert len(results) == n and all(r["ok"] for r in results), results


def test_a_point_that_crashes_the_pool_s_process_fails_in_the_study_and_the_sweep_evaluates_the_rest(tmp_path):
    """A pool process that segfaulted (compiled code with a bug) broke the pool: the sweep stopped
    (exit 1), the points after the crash not evaluated, and the same command, run again, met the
    same point and stopped again. Now each point the pool's processes were evaluating is evaluated
    alone, in a process of its own: one that crashes that too fails in the study with the reason, the
    others are added, and the sweep goes on in a new pool to its last point (exit 0). The strategy
    here crashes every process but the sweep's own, which leaves points to the pool (it is slow)."""
    from tests.optimizer.test_accounting import _crashing_config

    periods = [10, 17, 20, 30, 40, 50]
    path = _crashing_config(tmp_path, "crashes in a worker process", tuple(periods))
    run, rows = _sweep_crashes(tmp_path, path, 2)
    assert run.returncode == 0, run.stderr[-2000:]
    failed = [r for r in rows if r["state"] == "FAIL"]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert failed and complete and len(failed) + len(complete) == len(rows) == 6, rows
    assert sorted(int(r["param:period"]) for r in rows) == periods and all(r["fail_reason"] == CRASHED for r in failed)
    numbers = spans([int(r["number"]) for r in failed])  # as runs: 1-2, 5 (the sweep's own process evaluates points between)
    said = " ".join(run.stderr.split())
    assert (f"note: sweep: grid, 6 points with 2 process(es): {len(complete)} added, 0 already in the study, 0 repeated a "
            f"configuration, {len(failed)} crashed their process") in said
    assert (f"note: sweep: {len(failed)} point(s) ended the process evaluating them, then a process of their own (a crash of "
            f"compiled code: where, Python's faulthandler wrote to stderr): trial(s) {numbers}, failed in the study, and "
            "skipped by later sweeps; the others were evaluated") in said, run.stderr[-2000:]
    run_dir = tmp_path / "results" / "runs" / "t"
    session = json.loads((run_dir / "run.json").read_text())["sessions"][-1]
    assert session["stopped_reason"] is None and not list(run_dir.glob("*.inflight"))
    _evaluated_as_single_backtests(run_dir, len(complete))
    again = genesis("sweep", str(path), "--method", "grid", "--workers", "2", "--skip-preflight")
    assert again.returncode == 0 and "Fatal Python error" not in again.stderr, again.stderr
    assert "note: sweep: grid, 6 points with 2 process(es): 0 added, 6 already in the study" in again.stderr
    assert _trials({"run_dir": run_dir}) == rows


def test_a_point_that_crashes_the_sweep_s_own_process_is_evaluated_alone_first_by_the_next_sweep_which_fails_it(tmp_path):
    """The sweep's own process segfaulted: the sweep died without a word but the crash's stack, and
    the same command died on the same point again, for ever. It still dies, but the file saying
    which point it was evaluating stays: the next sweep evaluates that point alone first, fails it
    in the study with the reason (it crashed that process too), and evaluates the others."""
    from tests.optimizer.test_accounting import _crashing_config

    path = _crashing_config(tmp_path, "crashes at period 17", (10, 12, 17, 20, 30))
    run, rows = _sweep_crashes(tmp_path, path, 1)
    run_dir = tmp_path / "results" / "runs" / "t"
    assert run.returncode == -signal.SIGSEGV and rows == [] and len(list(run_dir.glob("*.inflight"))) == 1
    again, rows = _sweep_crashes(tmp_path, path, 1)
    assert again.returncode == 0
    assert [(r["number"], r["state"], r["param:period"], r["fail_reason"]) for r in rows] == [
        ("0", "FAIL", "17", CRASHED), *((str(n), "COMPLETE", str(p), "") for n, p in enumerate([10, 12, 20, 30], 1))]
    said = " ".join(again.stderr.split())
    assert ("note: an earlier sweep's process died evaluating 1 point(s) that, each alone in a process of its own, ended it "
            "again (a crash of compiled code: where, Python's faulthandler wrote to stderr): trial(s) 0, failed in the "
            "study, and skipped by later sweeps") in said
    assert "note: sweep: grid, 5 points with 1 process(es): 4 added, 1 already in the study" in said
    assert f"warning: 1 trial(s) failed (trials.csv fail_reason): 1× {CRASHED}" in said
    assert not list(run_dir.glob("*.inflight"))
    _evaluated_as_single_backtests(run_dir, 4)


def test_a_sweep_started_off_the_main_thread_spawns_processes_that_say_where_they_crashed_too(tmp_path):
    """Off the main thread (a server's) a sweep spawns its processes, which start without Python's
    faulthandler: a pool process's crash printed nothing, only the point's own process, alone, said
    where. Now both print the stack at the strategy's line, and the point fails as on the main thread."""
    from tests.optimizer.test_accounting import _crashing_config

    periods = list(range(5, 35))  # the sweep's own process, slow, evaluates some while the pool's start (1-2 s each)
    path = _crashing_config(tmp_path, "crashes in a worker process", tuple(periods))
    code = ("import threading; from genesis_core.optimizer import SweepOptions, sweep; from genesis_core.study import "
            f"load_study_config; t = threading.Thread(target=lambda: sweep(load_study_config({str(path)!r}).spec(), "
            "SweepOptions('grid', workers=2))); t.start(); t.join()")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = _trials({"run_dir": tmp_path / "results" / "runs" / "t"})
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert failed and all(r["fail_reason"] == CRASHED for r in failed) and sorted(int(r["param:period"]) for r in rows) == periods
    dumps = re.findall(r'Fatal Python error: Segmentation fault\n(?:.*\n)*?\s+File ".*misbehaving_strategy\.py", line \d+ '
                       r'in decide', run.stderr)
    assert len(dumps) == 2 * len(failed), run.stderr[-3000:]  # each crashed point's pool process, then its own


def test_kill_9_of_the_sweep_s_own_process_ends_its_pool_s_processes_and_the_same_command_finishes(tmp_path):
    """A pool process waited for its next chunk for ever once the sweep's own process was gone (kill
    -9, the OOM killer, a crash), holding its data, features and the sweep's stderr. Now it ends with
    it; the same command adds the rest, every point once."""
    path = _config(tmp_path)
    run_dir = tmp_path / "results" / "runs" / "t"
    sweeping = subprocess.Popen([sys.executable, "-m", "genesis_core", "sweep", str(path), "--points", "3000", "--workers", "2",
                                 "--skip-preflight"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(pids := RunFolder(run_dir).in_flight_pids()) < 2:  # its own and its pool's, each at a point
        assert sweeping.poll() is None and time.monotonic() < deadline, sweeping.stderr.read() if sweeping.stderr else ""
        time.sleep(0.05)
    (pool,) = set(pids) - {sweeping.pid}
    sweeping.kill()
    sweeping.communicate(timeout=30)  # returns once every holder of its stderr, the pool's process too, is ending
    assert sweeping.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while running(pool):  # its files closed, it is dying: dead, if not yet reaped, moments later
        assert time.monotonic() < deadline
        time.sleep(0.01)
    done = len(_study(tmp_path).trials)
    rest = genesis("sweep", str(path), "--points", "3000", "--workers", "2", "--skip-preflight")
    assert rest.returncode == 0, rest.stderr
    assert f"3,000 points (seed 0) with 2 process(es): {3000 - done:,} added, {done:,} already in the study" in rest.stderr
    trials = _study(tmp_path).trials
    assert len(trials) == 3000 and len({t.user_attrs["genesis"]["cache_key"] for t in trials}) == 3000
    assert not list(run_dir.glob("*.inflight"))

"""Every trial accounted for: cache answers scoped to the study, exact budgets, clean recovery
from faults. Each test injects the fault and asserts the numbers afterwards."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from genesis_core.optimizer import RunOptions
from genesis_core.optimizer._storage import _CACHE, ClaimExpired, ScoreCache, cache_url, make_engine
from genesis_core.optimizer._worker import process_context
from tests.optimizer.test_optimizer import _trials, write_config
from tests.runs import ctrl_c_until_it_ends, genesis_apart, genesis_killed_after, optimize, validate
from tests.validation.conftest import validated_config


def test_a_second_study_in_the_same_folder_reuses_results_as_trials_of_its_own(tmp_path):
    """Same seeded config, new study name, same results folder: no backtest runs again, yet every
    trial is a trial of the new study with its real class and score, and validation works."""
    a = optimize(validated_config(tmp_path, "a.yaml", meta={"study_name": "a", "stop": {"max_trials": 16}}))
    b = optimize(validated_config(tmp_path, "b.yaml", meta={"study_name": "b", "stop": {"max_trials": 16}}))
    assert b["cache"]["unique_backtests"] == 0
    assert b["cache"]["reused_from_other_studies"] == a["cache"]["unique_backtests"] > 0
    assert b["session"]["stopped_reason"] is None and b["cache"]["total_trials"] == 16
    rows_a, rows_b = _trials(a), _trials(b)
    for ra, rb in zip(rows_a, rows_b, strict=True):  # the same seed proposes the same points
        assert (ra["outcome"], ra["objective"], ra["cached"], ra["cache_reused_from"]) == \
            (rb["outcome"], rb["objective"], rb["cached"], rb["cache_reused_from"])  # duplicates only within the study
        if rb["cached"] == "False":
            assert rb["cached_from"] == f"a#{ra['number']}" and rb["outcome"] != "DUPLICATE"
    assert b["best_trial"] == a["best_trial"] is not None
    artifact_a = json.loads((Path(a["run_dir"]) / "trials" / f"{a['best_trial']['number']:06d}.json").read_text())
    artifact_b = json.loads((Path(b["run_dir"]) / "trials" / f"{b['best_trial']['number']:06d}.json").read_text())
    assert artifact_b.pop("cached_from") == {"study": "a", "trial": artifact_a["trial_number"]}
    artifact_a.pop("cached_from")
    assert artifact_b == artifact_a
    report_a, report_b = validate(Path(a["run_dir"])), validate(Path(b["run_dir"]))
    assert report_b["candidates"] and report_b["candidates"] == report_a["candidates"]
    assert report_b["best"] == report_a["best"]


def test_a_study_of_the_same_name_in_another_storage_does_not_write_over_the_run_folder(tmp_path):
    """A journal study of 12 trials, then the same config on SQLite (a move to a database, or the
    journal deleted): the second study took the same run folder and wrote its trials' artifacts,
    trials.csv and best trial over the first's, under run.json still listing the first's session."""
    from genesis_core.records import RunFolder
    from tests.runs import genesis

    journal = write_config(tmp_path, "j.yaml")
    first = optimize(journal)
    folder = RunFolder(Path(first["run_dir"]))
    before = {p.name: p.read_bytes() for p in [*folder.path.glob("*.json"), folder.path / "trials.csv", *folder.path.glob("trials/*")]}
    sqlite = f"sqlite:///{tmp_path / 'other.db'}"
    refused = genesis("optimize", str(write_config(tmp_path, "s.yaml", meta={"storage": sqlite})), "--skip-preflight")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {folder.path} holds the run of another study named 't' (12 trial(s) in "
                                     f"journal:///{tmp_path}/results/optuna.journal), not of this one (0 trial(s) in {sqlite}): ")
    assert {p.name: p.read_bytes() for p in [*folder.path.glob("*.json"), folder.path / "trials.csv", *folder.path.glob("trials/*")]} \
        == before  # nothing written
    swept = genesis("sweep", str(write_config(tmp_path, "s.yaml", meta={"storage": sqlite})), "--points", "4", "--skip-preflight")
    assert swept.returncode == 2 and "holds the run of another study named 't'" in swept.stderr
    from genesis_core.preflight import preflight
    from genesis_core.study import load_study_config

    storage = next(c for c in preflight(load_study_config(tmp_path / "s.yaml")) if c.name == "storage")  # said before a run too
    assert storage.status == "fail" and storage.detail == refused.stderr.removeprefix("error: ").strip()
    from genesis_core.optimizer._study import RUN_ID_ATTR

    run_id = folder.read_run().run_id
    assert run_id == _study(tmp_path).user_attrs[RUN_ID_ATTR] and len(run_id) == 32

    raw = json.loads((folder.path / "run.json").read_text())
    (folder.path / "run.json").write_text("{broken")  # one that does not read is a failed check, not a preflight ended
    broken = next(c for c in preflight(load_study_config(tmp_path / "s.yaml")) if c.name == "storage")
    assert broken.status == "fail" and broken.detail.startswith(f"{folder.path / 'run.json'}: ")

    # a folder written before run ids: another study's when it holds trials and the study none
    (folder.path / "run.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "run_id"}))
    again = genesis("optimize", str(write_config(tmp_path, "s.yaml", meta={"storage": sqlite})), "--skip-preflight")
    assert again.returncode == 2 and "holds the run of another study named 't' (12 trial(s)" in again.stderr
    resumed = optimize(journal, RunOptions(max_trials=14))  # its own study goes on, and its folder takes the study's id
    assert resumed["states"] == {"COMPLETE": 14} and folder.read_run().run_id == run_id


def _study(tmp_path: Path, storage: str | None = None):
    import optuna

    from genesis_core.optimizer import open_storage

    return optuna.load_study(study_name="t", storage=open_storage(storage or f"journal:///{tmp_path / 'results' / 'optuna.journal'}"))


def test_kill_9_of_the_whole_process_group_then_resume_gives_exactly_the_budget(tmp_path):
    """Three rounds of SIGKILL to every process of a 2-worker run at random moments, then a resume:
    the budget is met exactly, nothing is left RUNNING or WAITING, no parameter set is evaluated
    twice in the study, every artifact parses (none had to be written again), every finished trial kept what was set on it (the
    journal holds a trial's writes until its tell), and run.json agrees with the study."""
    import os
    import random
    import subprocess
    import sys
    import time

    from tests.optimizer.test_optimizer import ROOT, write_config

    budget = 300  # more than three sessions reach before their kills: a trial takes a few ms, a session's random moment up to 0.2 s
    path = write_config(tmp_path, meta={"stop": {"max_trials": budget}, "n_workers": 2, "duplicate_streak_limit": 1000},
                        parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                    "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 4.0, "step": 0.25}})
    trials_dir = tmp_path / "results" / "runs" / "t" / "trials"
    rng = random.Random(10)
    killed_running = 0
    for _ in range(3):
        before = len(list(trials_dir.glob("*.json"))) if trials_dir.exists() else 0
        proc = subprocess.Popen([sys.executable, "-m", "genesis_core", "optimize", str(path), "--skip-preflight", "--json"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        target = before + rng.randint(3, 15)  # a random moment: after a few more evaluated trials
        while time.time() < deadline and len(list(trials_dir.glob("*.json"))) < target and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.random() * 0.2)
        assert proc.poll() is None, "the session ended before its kill"  # else it records itself, and nothing was killed
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and its worker, at once
        proc.wait()
        left_running = sum(t.state.name == "RUNNING" for t in _study(tmp_path).trials)  # the next session recovers them
        killed_running += left_running
    summary = optimize(path)  # the resume, in this process
    trials = _study(tmp_path).trials
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "WAITING" not in states
    assert states.count("COMPLETE") + states.count("PRUNED") == budget
    assert killed_running > 0  # the kills did leave trials running, so recovery was exercised
    if left_running:  # those of the last kill: the resume recovered them (earlier ones, the killed sessions did)
        assert "failed and queued again" in " ".join(summary["session"]["notes"])
    evaluated = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs["cached"] is False]
    keys = [t.user_attrs["genesis"]["cache_key"] for t in evaluated]
    assert len(keys) == len(set(keys))  # no parameter set evaluated twice in the study
    for t in evaluated:
        assert json.loads((trials_dir / f"{t.number:06d}.json").read_text())["trial_number"] == t.number
    # written to their files before the tell, kill -9 took none of them: the resume had none to write again
    assert not [n for n in summary["session"]["notes"] if "artifact(s) lost" in n]
    for t in trials:  # a trial's parameters and attributes are written with its tell: a told trial has them all
        if t.state.name in ("COMPLETE", "PRUNED"):
            assert set(t.params) == {"exits.max_bars_held", "exits.stop_loss_atr"}
            assert {"worker", "outcome", "production_score", "genesis"} <= set(t.user_attrs)
    run = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())
    assert run["states"] == {s: states.count(s) for s in set(states)}
    assert len(run["sessions"]) == 1  # killed sessions record nothing; the resume records its own
    assert not list(trials_dir.glob("*.tmp"))


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (zombies included: an unreaped child is still there)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _space_config(tmp_path: Path, trials: int):
    from tests.optimizer.test_optimizer import write_config

    return write_config(tmp_path, meta={"stop": {"max_trials": trials}, "duplicate_streak_limit": 1000}, parameters={
        "exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
        "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0},
    })


def _genesis(*args: str):
    import subprocess
    import sys

    from tests.optimizer.test_optimizer import ROOT

    return subprocess.Popen([sys.executable, "-m", "genesis_core", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _two_workers_past(tmp_path: Path, trials: int):
    """A 2-worker `genesis optimize` of a 5,000-trial study, once ``trials`` artifacts are written."""
    proc = _genesis("optimize", str(_space_config(tmp_path, 5000)), "--workers", "2", "--skip-preflight")
    trials_dir = tmp_path / "results" / "runs" / "t" / "trials"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(trials_dir.glob("*.json"))) < trials:
        time.sleep(0.05)
    return proc


def test_sigterm_is_handled_like_ctrl_c_and_every_process_is_reaped(tmp_path):
    """What a scheduler or `docker stop` sends, to the main process only: trials in flight finish, the
    artifacts are written, the resume command is printed, exit 143, and nothing of the run is left."""

    proc = _two_workers_past(tmp_path, 30)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted; resume with: genesis optimize" in err and "SIGTERM" in err and "Traceback" not in err
    assert _group_members(proc.pid) == []  # the worker process and multiprocessing's helper are gone too
    trials = _study(tmp_path).trials
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED", "FAIL"}  # nothing left running
    run = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())
    assert run["sessions"][-1]["interrupted"] is True and run["sessions"][-1]["signal"] == "SIGTERM"
    assert run["states"] == {s: sum(t.state.name == s for t in trials) for s in {t.state.name for t in trials}}


def test_ctrl_c_to_the_whole_group_while_workers_start_prints_no_traceback(tmp_path):
    """A terminal sends SIGINT to every process of the group, also to a worker just forked. A
    Ctrl-C in the milliseconds the workers start can be lost (see optimizer._run._quietly); a user
    presses again, and so does this test, once a second."""
    import os
    import subprocess
    import time

    path = _space_config(tmp_path, 5000)
    proc = _genesis("optimize", str(path), "--workers", "2", "--skip-preflight")
    deadline = time.time() + 60
    while time.time() < deadline and len(_group_members(proc.pid)) < 2:  # main and worker: the worker is starting
        time.sleep(0.01)
    assert time.time() < deadline  # forked at once, as the progress bar no longer makes it spawn (with a tracker: 3 members)
    presses = 0
    while presses < 30:
        os.killpg(proc.pid, signal.SIGINT)
        presses += 1
        try:
            out, err = proc.communicate(timeout=1 if presses == 1 else 30)  # a loaded machine starts workers slowly
            break
        except subprocess.TimeoutExpired:
            continue
    assert presses <= 2  # the first press, or else the second, stops it
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert _group_members(proc.pid) == []
    assert {t.state.name for t in _study(tmp_path).trials} <= {"COMPLETE", "PRUNED", "FAIL"}


def test_ctrl_c_pressed_again_and_again_while_the_run_winds_down_changes_nothing(tmp_path):
    """An impatient user: Ctrl-C to the whole group every 20 ms from the first until the process ends.
    The session's records, the last lines and the interpreter's teardown are not cut short: exit 130
    (not a traceback, not death by SIGINT), and run.json agrees with the study."""
    proc = _two_workers_past(tmp_path, 20)
    presses = ctrl_c_until_it_ends(proc, limit=3000)
    out, err = proc.communicate(timeout=60)
    assert presses > 5  # pressed on while it wound down
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted; resume with: genesis optimize" in err
    states = [t.state.name for t in _study(tmp_path).trials]
    run = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())
    assert run["sessions"][-1]["interrupted"] is True and run["sessions"][-1]["signal"] == "SIGINT"
    assert run["states"] == {s: states.count(s) for s in set(states)} and len(states) >= 20


def test_a_normal_two_worker_run_leaves_no_process_behind(tmp_path):
    proc = _genesis("optimize", str(_space_config(tmp_path, 12)), "--workers", "2", "--skip-preflight", "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)["explore"]["cache"]["total_trials"] >= 12
    assert _group_members(proc.pid) == []


def test_a_process_killed_while_appending_to_the_journal_leaves_nothing_to_wait_for(tmp_path):
    """Killed while it held the journal's append lock (and, for a plain Optuna process, its lock
    file left behind): the next run neither waits (Optuna would, 30 s in silence) nor says anything."""
    import os
    import subprocess
    import sys

    from tests.optimizer.test_optimizer import ROOT

    path = _space_config(tmp_path, 3)
    optimize(path)
    journal = tmp_path / "results" / "optuna.journal"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'ab'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)", str(journal)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = journal.with_name("optuna.journal.lock")  # Optuna's JournalFileSymlinkLock, as a killed Optuna process leaves it
    lock.symlink_to(journal)
    os.utime(lock, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    proc = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--max-trials", "5",
                           "--skip-preflight"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lock" not in proc.stderr
    session = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["sessions"][-1]
    assert session["seconds"] < 25 and not any("lock" in n for n in session["notes"])  # no 30 s stall
    assert sum(t.state.name == "COMPLETE" for t in _study(tmp_path).trials) == 5


def test_a_process_killed_while_writing_to_the_score_cache_leaves_nothing_to_wait_for(tmp_path):
    """The score cache's writers take turns on a kernel lock: a claim waits while another process
    holds it, and goes on the moment that process is killed; one killed in the middle of a write
    transaction leaves neither the lock nor its uncommitted rows, and the next run does its trials
    at once, every one cached."""
    import subprocess
    import sys
    import threading

    path = _space_config(tmp_path, 3)
    optimize(path)
    db = tmp_path / "results" / "optuna.cache.db"

    def holder(transaction: bool) -> subprocess.Popen:
        code = ("import fcntl, os, sqlite3, sys, time; fd = os.open(sys.argv[1] + '.lock', os.O_RDWR | os.O_CREAT); "
                "fcntl.flock(fd, fcntl.LOCK_EX); c = sqlite3.connect(sys.argv[1], isolation_level=None); "
                + ("c.execute('BEGIN IMMEDIATE'); c.execute(\"INSERT INTO genesis_trial_cache VALUES ('t', 'dead', 'running', 99, NULL, 0)\"); "
                   if transaction else "") + "print('held', flush=True); time.sleep(600)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        return proc

    cache = ScoreCache(cache_url(f"journal:///{tmp_path / 'results' / 'optuna.journal'}"), retry_seconds=0)
    proc, answered = holder(False), threading.Event()
    claiming = threading.Thread(target=lambda: (cache.claim("t", "k", 50), answered.set()))
    claiming.start()
    assert not answered.wait(0.5)  # behind the lock's holder
    killed = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert answered.wait(5.0) and time.monotonic() - killed < 1.0
    claiming.join()
    cache.release("t", "k")

    proc = holder(True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t = time.monotonic()
    summary = optimize(path, RunOptions(max_trials=6))
    assert time.monotonic() - t < 20 and summary["cache"]["total_trials"] == 6
    with make_engine(f"sqlite:///{db}").connect() as conn:
        rows = conn.execute(sa.select(_CACHE.c.key, _CACHE.c.state)).all()
    assert len(rows) == summary["cache"]["unique_backtests"] >= 4
    assert ("dead", "running") not in [tuple(r) for r in rows] and all(r.state == "done" for r in rows)


def test_a_damaged_score_cache_is_one_line_saying_what_to_do_and_doing_it_loses_no_trial(tmp_path):
    """A score cache whose pages a disk error (or a copy made while it was written) garbled: each
    run ended in SQLAlchemy's traceback, ``database disk image is malformed``. Now it is one line
    naming the file and what to do, no file of the run changed; done, the run goes on with every
    trial, each entry written again from its artifact. A study's own SQLite file, damaged, is a
    line too: its trials are in no other file."""
    import contextlib
    import csv
    import os
    import sqlite3
    import subprocess
    import sys

    from tests.runs import genesis

    path = _space_config(tmp_path, 8)
    optimize(path)
    results = tmp_path / "results"
    db, run = results / "optuna.cache.db", results / "runs" / "t"
    before = {name: (run / name).read_bytes() for name in ("run.json", "trials.csv")}

    def garble(file: Path) -> None:
        with contextlib.closing(sqlite3.connect(file)) as conn:  # its pages all in the file, as when every process has ended
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with file.open("r+b") as fh:  # every page after the first (the header and the schema) garbled
            fh.seek(4096)
            fh.write(b"\xa5" * (file.stat().st_size - 4096))

    garble(db)

    refused = genesis("optimize", str(path), "--skip-preflight", "--max-trials", "12")
    beside = " ".join(str(f) for f in (db, f"{db}-wal", f"{db}-shm") if os.path.exists(f))  # this process's connections keep them
    assert refused.returncode == 2 and " ".join(refused.stderr.split()) == (
        f"error: {db} is damaged (database disk image is malformed): move it aside (mkdir {db}.damaged && mv {beside} "
        f"{db}.damaged/) and run again: a study's entries are written again from its trials' artifacts as it resumes")
    assert {name: (run / name).read_bytes() for name in before} == before

    subprocess.run(refused.stderr.split("(", 2)[2].split(")")[0], shell=True, check=True)  # as it says
    again = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--skip-preflight", "--max-trials", "12",
                            "--json"], capture_output=True, text=True, timeout=300)  # a process of its own, as a user's is
    summary = json.loads(again.stdout)["explore"]
    assert summary["cache"]["total_trials"] == 12 and "had them written from their artifacts: 0-7" in " ".join(again.stderr.split())
    rows = {int(r["number"]): r for r in _trials(summary)}
    was = {int(r["number"]): r for r in csv.DictReader(before["trials.csv"].decode().splitlines())}
    assert all(rows[n]["production_score"] == r["production_score"] for n, r in was.items())  # the 8 as they were
    with contextlib.closing(sqlite3.connect(db)) as conn:  # the new file (this process's engine holds the one moved)
        stored = [n for (n,) in conn.execute("SELECT trial_number FROM genesis_trial_cache WHERE state = 'done'")]
    assert sorted(stored) == sorted(n for n, r in rows.items() if r["cached"] == "False")  # each evaluated trial's entry

    study = tmp_path / "study.db"  # a study kept in a SQLite file: its trials are in no other file
    path = write_config(tmp_path, "sq.yaml", meta={"storage": f"sqlite:///{study}", "study_name": "sq", "stop": {"max_trials": 4}})
    optimize(path)
    garble(study)
    refused = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--skip-preflight"], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and " ".join(refused.stderr.split()) == (
        f"error: {study} is damaged (database disk image is malformed): the study's trials are in it: restore it from a backup, "
        f"or recover what it holds (sqlite3 {study} .recover)")


def test_an_optuna_process_writing_to_the_journal_meanwhile_loses_nothing_and_garbles_nothing(tmp_path):
    """A plain Optuna process (its own lock file, which ours do not take) sets study attributes as
    fast as it can while two workers run 400 trials: every attribute it set is in the study, the
    budget is met exactly, and run.json agrees with the study read afresh (each process placed the
    others' appends and its own where they landed)."""
    import subprocess
    import sys

    from tests.optimizer.test_optimizer import ROOT

    path = _space_config(tmp_path, 3)
    optimize(path)
    journal, stop = tmp_path / "results" / "optuna.journal", tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, optuna\n"
        "from optuna.storages.journal import JournalFileBackend\n"
        "study = optuna.load_study(study_name='t', storage=optuna.storages.JournalStorage(JournalFileBackend(sys.argv[1])))\n"
        "print('ready', flush=True)\n"
        "i = 0\n"
        "while not os.path.exists(sys.argv[2]):\n"
        "    study.set_user_attr(f'k{i}', i)\n"
        "    i += 1\n"
        "print(i)\n"), str(journal), str(stop)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    run = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--max-trials", "400", "--workers", "2",
                          "--skip-preflight", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    stop.touch()
    written = int(writer.communicate(timeout=60)[0].split()[-1])
    assert run.returncode == 0, run.stderr[-2000:]
    study = _study(tmp_path)
    assert written > 20  # it wrote all along
    assert {k: v for k, v in study.user_attrs.items() if k.startswith("k")} == {f"k{i}": i for i in range(written)}
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 400 and "RUNNING" not in states
    record = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())
    assert record["states"] == {s: states.count(s) for s in set(states)}
    assert json.loads(run.stdout)["explore"]["cache"]["total_trials"] == 400


def test_two_processes_joining_one_study_sample_with_distinct_seeds(tmp_path):
    """Two `genesis optimize` processes started together on one study (as on two machines): each takes
    its own session slot, so their samplers do not propose the same points. Both run until one
    wall-clock time, so they overlap however fast trials are (a budget of trials let the first
    finish before the second had started)."""
    import datetime

    from tests.optimizer.test_optimizer import write_config

    end_at = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=8)).isoformat()
    path = write_config(tmp_path, meta={"stop": {"max_trials": None, "end_at": end_at}, "duplicate_streak_limit": 1000,
                                        "sampler": {"name": "tpe", "kwargs": {"seed": 7, "n_startup_trials": 10}}},
                        parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                    "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0}})
    procs = [_genesis("optimize", str(path), "--skip-preflight", "--json") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    sessions = [json.loads(o[0])["explore"]["session"] for o in outs]
    assert sorted(s["slot"] for s in sessions) == [0, 1]
    from genesis_core.optimizer._worker import RESUME_STRIDE, SEED_STRIDE

    seeds = {s["slot"]: s["sampler_seeds"][0] for s in sessions}  # slot k's: 7 + 1000 k + RESUME_STRIDE x the trials it found
    assert seeds[0] != seeds[1] and [(seeds[k] - 7 - SEED_STRIDE * k) % RESUME_STRIDE for k in (0, 1)] == [0, 0]
    trials = _study(tmp_path).trials
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) >= 30
    assert not [t for t in trials if t.user_attrs.get("outcome") == "DUPLICATE"]  # same seeds would repeat the start-up points
    run = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())
    assert sorted(s["slot"] for s in run["sessions"]) == [0, 1]


def test_a_seeded_one_worker_run_reproduces_exactly(tmp_path):
    """What README promises of a seed today: one worker, one session, the same trials.csv but for timings."""
    import csv

    from tests.optimizer.test_optimizer import write_config

    tables = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        path = write_config(folder, meta={"stop": {"max_trials": 15}, "sampler": {"name": "tpe", "kwargs": {"seed": 3,
                                                                                                           "n_startup_trials": 5}}},
                            parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                        "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0}})
        summary = optimize(path)
        with open(Path(summary["run_dir"]) / "trials.csv") as fh:
            tables.append([{k: v for k, v in row.items() if k != "duration_ms"} for row in csv.DictReader(fh)])
    assert len(tables[0]) == 15 and tables[0] == tables[1]


@pytest.mark.parametrize(("sampler", "sessions"), [
    ({"name": "random", "kwargs": {"seed": 1}}, (100, 200)),  # in phase 2 when stopped
    ({"name": "tpe", "kwargs": {"seed": 1, "n_startup_trials": 25}}, (10, 45)),  # in the feasibility phase, then TPE's start-up
    ({"name": "qmc", "kwargs": {"seed": 1}}, (100,)),  # one session: its phase 1 was a companion walking the same Sobol points
])
def test_a_seeded_study_run_again_proposes_no_point_twice(tmp_path, sampler, sessions):
    """A seeded study stopped and run again (to go on after Ctrl-C, or with a larger budget) sampled
    with its first session's seeds: a random sampler proposed the first session's points again, each
    answered from the cache, until the duplicate streak stopped the run (random, 100 then 200 trials:
    50 repeats and 'explore stopped early'); TPE's start-up and the feasibility phase's companion
    repeated theirs. A session that finds N trials now samples with streams of its own. And QMC's
    feasibility companion walked the Sobol points the study then walked again (30 of 100)."""
    import csv

    from tests.optimizer.test_optimizer import write_config

    path = write_config(tmp_path, meta={"sampler": sampler, "duplicate_streak_limit": 50, "stop": {"max_trials": sessions[-1]}},
                        scoring={"phase1": {"trials": 30}},
                        parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                    "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0}})
    for budget in sessions:
        summary = optimize(path, RunOptions(max_trials=budget))
        assert summary["session"]["stopped_reason"] is None
    rows = list(csv.DictReader((tmp_path / "results" / "runs" / "t" / "trials.csv").open()))
    assert len(rows) == sessions[-1] and {r["state"] for r in rows} == {"COMPLETE"}
    assert [r["number"] for r in rows if r["outcome"] == "DUPLICATE" or r["cached"] == "True"] == []
    assert len({r["config_fingerprint"] for r in rows}) == sessions[-1]
    from genesis_core.optimizer._samplers import offset_seed  # each session's seeds, as run.json records them
    from genesis_core.optimizer._worker import RESUME_STRIDE

    run = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())
    assert [s["sampler_seeds"] for s in run["sessions"]] == [[offset_seed(1, RESUME_STRIDE * n)] for n in (0, *sessions[:-1])]


def test_a_sampler_whose_package_is_missing_is_refused_as_the_config_is_read(tmp_path):
    """`sampler: gp` ran its start-up trials, then ended in a traceback (No module named 'torch'): Optuna's
    GP sampler imports PyTorch, which Genesis-Core does not install."""
    import importlib.util

    from genesis_core.errors import ConfigError
    from genesis_core.study import load_study_config
    from tests.optimizer.test_optimizer import write_config

    path = write_config(tmp_path, meta={"sampler": {"name": "gp", "kwargs": {"seed": 1}}})
    if importlib.util.find_spec("torch") is not None:  # installed by hand: it loads
        assert load_study_config(path).meta.sampler.name == "gp"
        return
    with pytest.raises(ConfigError, match=r"sampler 'gp' needs PyTorch \(torch\), which is not installed here: .* -m pip "
                                          r"install torch, or another sampler \(tpe, tpe-batched, random, cmaes, qmc, grid\)"):
        load_study_config(path)


def test_a_seeded_two_worker_run_is_reproducible_with_its_processes_forked_or_spawned(tmp_path, monkeypatch):
    """With a seed, two workers run in reproducible batches: the same trials.csv twice (but for
    timings), with the default sampler (tpe-batched), whether the measuring processes were forked
    (a run on the main thread alone) or spawned (a run on another thread, as a server starts one).
    (Free-running workers usually differ between runs, but not always: not asserted.)"""
    import csv
    from concurrent.futures import ThreadPoolExecutor

    from genesis_core.optimizer import _batch
    from tests.optimizer.test_optimizer import write_config

    started = []

    def recorded(spec):
        ctx = process_context(spec)
        started.append(ctx.get_start_method())
        return ctx

    monkeypatch.setattr(_batch, "process_context", recorded)

    def table(name: str, parallel: str) -> list[dict]:
        folder = tmp_path / name
        folder.mkdir()
        path = write_config(folder, meta={"stop": {"max_trials": 40}, "parallel": parallel, "duplicate_streak_limit": 1000,
                                          "sampler": {"kwargs": {"seed": 3, "n_startup_trials": 8}}},
                            parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                        "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0},
                                        "thresholds.signal_adaptation.zones.mid.entry_conf_overall":
                                            {"type": "float", "low": 0.5, "high": 0.6}})
        summary = optimize(path, RunOptions(workers=2))
        assert summary["states"] == {"COMPLETE": 40}  # batches never race for the budget
        with open(Path(summary["run_dir"]) / "trials.csv") as fh:
            return [{k: v for k, v in row.items() if k != "duration_ms"} for row in csv.DictReader(fh)]

    first = table("a", "auto")  # auto means reproducible with a seed on the journal
    with ThreadPoolExecutor(1) as thread:
        second = thread.submit(table, "b", "reproducible").result()
    assert started == ["fork", "spawn"]
    assert len(first) == 40 and first == second
    # who measures a trial (the session's process, or a measuring process from its config's JSON) changes nothing
    monkeypatch.setattr(_batch.Measurers, "map", lambda self, jobs, measure_here: [measure_here(j) for j in jobs])
    assert table("c", "reproducible") == first


def test_a_process_killed_right_after_asking_leaves_trials_a_resume_recovers_at_once(tmp_path):
    """A worker killed between asking for trials and writing anything else of them (their creation
    is all the journal has) left RUNNING trials a resume could not tell from those of a worker on
    another machine cut off from its database: it waited orphan_age (a minute) for them. A trial's
    creation now names its process, so the resume sees it is gone, fails the trials and queues them."""
    import subprocess
    import sys

    path = _space_config(tmp_path, 6)
    optimize(path)
    journal = tmp_path / "results" / "optuna.journal"
    asker = ("import os, optuna\nfrom genesis_core.optimizer import open_storage\n"
             f"study = optuna.load_study(study_name='t', storage=open_storage('journal:///{journal}'))\n"
             "study.ask(); study.ask()\nos._exit(0)\n")  # gone before flushing anything else of its two trials
    subprocess.run([sys.executable, "-c", asker], check=True, timeout=120)
    asked = [t for t in _study(tmp_path).trials if t.state.name == "RUNNING"]
    assert [t.number for t in asked] == [6, 7] and all("pid" in t.user_attrs["worker"] for t in asked)
    summary = optimize(path, RunOptions(max_trials=8))
    notes = summary["session"]["notes"]
    assert "2 trial(s) left running by a stopped worker were failed and queued again: [6, 7]" in notes
    assert not [n for n in notes if "orphaned" in n] and summary["session"]["seconds"] < 30
    states = [t.state.name for t in _study(tmp_path).trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 8 and "RUNNING" not in states


def test_a_claim_left_by_a_dead_worker_is_waited_for_while_fresh_and_taken_over_once_stale(tmp_path):
    """A worker killed while evaluating leaves its claim running: another worker asking for the same
    parameter set waits for it while it is fresh, then takes it over (and owns the key's result)."""
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    cache = ScoreCache(url, stale_seconds=0.5, retry_seconds=0)
    assert cache.claim("s", "k", 1) is None  # trial 1 claims it, then its worker dies
    with pytest.raises(ClaimExpired):
        cache.claim("s", "k", 2, wait_seconds=0.2)
    time.sleep(0.6)
    assert cache.claim("s", "k", 3) is None  # stale: trial 3 takes it over
    assert cache.claim("s", "other", 4) is None
    with make_engine(url).connect() as conn:
        rows = conn.execute(sa.select(_CACHE.c.key, _CACHE.c.state, _CACHE.c.trial_number).order_by(_CACHE.c.key)).all()
    assert [tuple(r) for r in rows] == [("k", "running", 3), ("other", "running", 4)]


def test_workers_are_forked_only_from_a_process_with_no_other_thread_and_no_grpc_proxy(tmp_path):
    """A fork copies only the forking thread: a lock another thread (a server's) or gRPC's held then
    would stay held in the child. Those processes spawn their workers."""
    import threading

    from genesis_core.study import load_study_config
    from tests.optimizer.test_optimizer import write_config

    direct = load_study_config(write_config(tmp_path, meta={"stop": {"max_trials": 4}})).spec()
    proxied = load_study_config(write_config(tmp_path, meta={"stop": {"max_trials": 4}, "proxy": "127.0.0.1:50051"})).spec()
    assert process_context(direct).get_start_method() == "fork"
    assert process_context(proxied).get_start_method() == "spawn"
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert process_context(direct).get_start_method() == "spawn"
    finally:
        release.set()
        other.join()
    assert process_context(direct).get_start_method() == "fork"


@pytest.mark.parametrize("server", [False, True])
def test_a_trial_whose_cache_entry_was_written_and_tell_was_not_is_retried_as_its_own_evaluation(tmp_path, server, request):
    """A worker whose tell fails writes its held cache entries as it stops (``Worker.commit``): the
    trial is left RUNNING with its entry done. Made here by a kill -9 right after the fifth trial's
    entry is held (before its tell), then that entry written as the stopping worker would have.
    The resume fails the trial and queues its parameters again; the retry must hold the result as
    the study's own evaluation (not a duplicate of a failed trial, which no ranking would see), and
    every evaluated parameter set once."""

    from genesis_core.optimizer._storage import CacheEntry
    from genesis_core.records import RunFolder
    from tests.optimizer.test_optimizer import write_config

    path = write_config(tmp_path, meta={"stop": {"max_trials": 20}, "n_workers": 1, "duplicate_streak_limit": 1000,
                                        "stale_trial_seconds": 3, "sampler": {"name": "random", "kwargs": {"seed": 3}}},
                        parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                    "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 4.0, "step": 0.25}})
    storage = "journal+" + request.getfixturevalue("postgres_url") if server else None
    killed = genesis_killed_after("genesis_core.optimizer._storage:ScoreCache.hold", 5,  # the fifth trial's entry, not yet told
                                  "optimize", str(path), "--skip-preflight", "--json", *(["--storage", storage] if storage else []))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    cache = ScoreCache(cache_url(storage) if storage else f"sqlite:///{tmp_path / 'results' / 'optuna.cache.db'}")
    (number, key), = cache.running_claims("t").items()
    assert _study(tmp_path, storage).trials[number].state.name == "RUNNING"
    cache.hold("t", key, CacheEntry.of_artifact(RunFolder(tmp_path / "results" / "runs" / "t").read_trial(number), "t"))
    cache.write_held()
    optimize(path, storage=storage)
    trials = _study(tmp_path, storage).trials
    retries = [t for t in trials if "retry_of" in t.user_attrs]
    assert retries  # the kill left a trial whose entry was stored and whose tell was not
    for t in retries:
        assert t.state.name == "COMPLETE" and t.user_attrs["cached"] is False and t.user_attrs["outcome"] != "DUPLICATE", \
            (t.number, t.user_attrs)
    evaluated = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs["cached"] is False]
    keys = [t.user_attrs["genesis"]["cache_key"] for t in evaluated]
    assert len(keys) == len(set(keys))
    with make_engine(cache_url(storage) if storage else f"sqlite:///{tmp_path / 'results' / 'optuna.cache.db'}").connect() as conn:
        holders = {r.key: r.trial_number for r in conn.execute(sa.select(_CACHE).where(_CACHE.c.study == "t"))}
    assert all(holders[t.user_attrs["genesis"]["cache_key"]] == t.number for t in evaluated)


def test_a_stop_signal_leaves_only_the_clis_process_deaf_to_the_next():
    """Stopped by a signal, the CLI's session (``deaf_once_stopped``) leaves SIGINT and SIGTERM ignored,
    set in place of its own handler (restored first, a press in between ended the process by SIGINT);
    a library caller gets its handlers back, and so does everyone when no signal came."""
    import os

    from genesis_core.optimizer._worker import stopping_on_signals

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for deaf, press, left in [(True, signal.SIGTERM, signal.SIG_IGN), (False, signal.SIGINT, None), (True, None, None)]:
            received: list[int] = []
            with stopping_on_signals(received.append, deaf):
                if press is not None:
                    os.kill(os.getpid(), press)
                    time.sleep(0.01)  # the handler runs between two bytecodes of this thread
            assert received == ([] if press is None else [press])
            for sig in (signal.SIGINT, signal.SIGTERM):
                assert signal.getsignal(sig) == (left or before[sig])
                signal.signal(sig, before[sig])
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


# a space of 5 x 3 points: a random sampler's first trials are mostly distinct, its later ones duplicates
FIFTEEN_POINTS = {"exits.max_bars_held": {"type": "int", "low": 6, "high": 30, "step": 6},
                  "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 2.0, "step": 0.5}}


def test_kill_9_after_a_tell_whose_cache_entry_was_held_then_resume_writes_it_from_the_artifact(tmp_path):
    """A worker holds a trial's cache entry for its next claim's transaction: kill -9 right after
    the tell leaves a told trial whose key is claimed and never stored. The resume writes that entry
    from the trial's artifact, the very one an uninterrupted run stores (same JSON), so duplicates of
    the trial are answered from it at once (a claim left running would make them wait until it is
    stale, then measure it again), and no parameter set is evaluated twice."""

    def config(folder: Path) -> Path:
        folder.mkdir()
        return write_config(folder, meta={"stop": {"max_trials": 30}, "n_workers": 1, "duplicate_streak_limit": 1000,
                                          "stale_trial_seconds": 600, "sampler": {"name": "random", "kwargs": {"seed": 5}}},
                            parameters=FIFTEEN_POINTS)

    def rows(folder: Path) -> dict[str, tuple[str, int, str | None]]:
        with make_engine(cache_url(f"journal:///{folder / 'results' / 'optuna.journal'}")).connect() as conn:
            return {r.key: (r.state, r.trial_number, r.payload) for r in conn.execute(sa.select(_CACHE).where(_CACHE.c.study == "t"))}

    optimize(config(tmp_path / "reference"))
    path = config(tmp_path / "killed")
    killed = genesis_killed_after("optuna.study._optimize:_tell_with_warning", 5, "optimize", str(path), "--skip-preflight", "--json")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    trials = _study(tmp_path / "killed").trials
    assert len(trials) == 5 and all(t.state.name == "COMPLETE" for t in trials)
    fifth = trials[4].user_attrs["genesis"]["cache_key"]
    assert trials[4].user_attrs["cached"] is False  # evaluated, so its entry was held
    assert rows(tmp_path / "killed")[fifth][:2] == ("running", 4)
    summary = optimize(path)
    assert "1 trial(s) told before a stopped worker or sweep wrote their score cache entries had them written from their artifacts: 4" \
        in summary["session"]["notes"]
    assert summary["session"]["seconds"] < 60  # nothing waited for the claim to go stale (600 s)
    after, expected = rows(tmp_path / "killed"), rows(tmp_path / "reference")
    first = {t.user_attrs["genesis"]["cache_key"] for t in trials}  # the resume's sampler goes on with other points
    assert {k: after[k] for k in first} == {k: expected[k] for k in first}  # the same trial, the same JSON
    assert {state for state, _, _ in after.values()} == {"done"}
    trials = _study(tmp_path / "killed").trials
    evaluated = [t.user_attrs["genesis"]["cache_key"] for t in trials if t.user_attrs["cached"] is False]
    assert len(evaluated) == len(set(evaluated)) == len(after) == summary["cache"]["unique_backtests"]
    again = [t for t in trials if t.user_attrs["genesis"]["cache_key"] == fifth and t.number > 4]
    assert again and all(t.user_attrs["cached"] is True and t.user_attrs["cache_reused"] == 4
                         and t.user_attrs["production_score"] == trials[4].user_attrs["production_score"] for t in again)



def test_a_first_session_killed_or_still_running_is_said_so_by_the_commands_that_read_its_run(tmp_path):
    """Its folder holds trial artifacts and no run.json yet (a session writes it as it ends): `runs
    show`, `validate` and `report` said 'no run at ...', as of a name mistyped, while the user could
    see its trials there (an hour into a first long run, or after a kill)."""
    path = write_config(tmp_path, meta={"stop": {"max_trials": 12}, "n_workers": 1, "sampler": {"name": "random", "kwargs": {"seed": 5}}},
                        parameters=FIFTEEN_POINTS)
    killed = genesis_killed_after("optuna.study._optimize:_tell_with_warning", 5, "optimize", str(path), "--skip-preflight")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    run = tmp_path / "results" / "runs" / "t"
    done = len(list((run / "trials").glob("*.json")))
    assert done >= 1 and not (run / "run.json").exists()
    for command in ("runs show", "validate", "report"):
        proc = genesis_apart(*command.split(), str(run))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert " ".join(proc.stderr.split()) == (
            f"error: {run} has no run.json yet: its first session writes it as it ends, and is still running (its {done} "
            "trial artifacts so far are in trials/) or was stopped before its end (the same genesis optimize or sweep goes on "
            "from its trials and writes it)"), command
    optimize(path)
    shown = genesis_apart("runs", "show", str(run))
    assert shown.returncode == 0 and len(_trials({"run_dir": str(run)})) == 12, shown.stderr

_FULL_DISK = """
import os, resource, signal, sys
from genesis_core.cli import app
from genesis_core.optimizer import _storage
from genesis_core.records import _run as _records

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is cut short, then fails with EFBIG, as on a full disk
which, at = sys.argv[1], int(sys.argv[2])
if which == "cache":  # from the start, every file may grow by ``at`` bytes: the score cache's grows fastest
    resource.setrlimit(resource.RLIMIT_FSIZE, (at, resource.RLIM_INFINITY))
else:  # from the ``at``-th journal append or artifact write on, no file may exceed its size then by a byte or 100 bytes
    owner, name = (_storage.JournalFile, "append") if which == "journal" else (_records, "atomic_write")
    real, calls = getattr(owner, name), []

    def cut_short(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            room = os.path.getsize(args[0]._file_path) + 1 if which == "journal" else 100
            resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))
        try:
            return real(*args, **kwargs)
        except (_storage.StorageUnavailable, OSError) as exc:
            sys.stderr.write(f"refused: {exc}\\n")  # what the files written after it (the score cache's) say may end the run
            raise

    setattr(owner, name, cut_short)
app(sys.argv[3:], prog_name="genesis")
"""


@pytest.mark.parametrize("filled_by", ["cache", "journal", "artifact"])
def test_a_full_disk_ends_the_run_at_once_keeps_every_told_trial_and_the_resume_meets_the_budget(tmp_path, filled_by):
    """Mid-run the study's files can grow no more (a file size limit: the kernel cuts a write short,
    then refuses it, as on a full disk), first the score cache's database, the journal or a trial's
    artifact. The
    run ends at once, saying which file and how to resume, where it used to retry the database for
    storage_retry_seconds, or leave a piece of a line the next append ran into (both entries lost to
    every reader); the trials told before are as they were; the resume, with room again, meets the
    budget exactly, evaluating no parameter set twice and leaving no claim running, nothing half written."""
    import subprocess
    import sys

    from tests.optimizer.test_optimizer import ROOT

    budget = 60
    path = _space_config(tmp_path, 10)
    optimize(path)  # ten trials told, with room (features and candles cached too, so only the study's files grow below)
    before = {t.number: (t.state, t.values, t.params, t.user_attrs) for t in _study(tmp_path).trials}
    config = path.read_text().replace("max_trials: 10", f"max_trials: {budget}")
    path.write_text(config.replace("meta:", "meta:\n  storage_retry_seconds: 3600", 1))
    results = tmp_path / "results"
    at = {"cache": max(f.stat().st_size for f in results.iterdir()) + 60_000, "journal": 31, "artifact": 10}[filled_by]  # a few trials in
    limited = subprocess.run([sys.executable, "-c", _FULL_DISK, filled_by, str(at), "optimize", str(path), "--skip-preflight"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)  # a retry would wait the hour
    assert limited.returncode == 2, limited.stderr
    said = limited.stderr.rsplit("error: ", 1)[-1]  # one line, of whichever file failed last: all of them are full
    assert " could not be written: " in said and "; resume with: genesis optimize" in said and "Traceback" not in limited.stderr
    if filled_by == "cache":  # SQLite says "disk I/O error" of a write the limit refuses, "database or disk is full" on a full disk
        assert said.startswith(f"the database sqlite:///{results / 'optuna.cache.db'} could not be written: disk I/O error")
    if filled_by == "journal":
        assert f"refused: the journal {results / 'optuna.journal'} could not be written: File too large" in limited.stderr
    if filled_by == "artifact":
        assert "refused: [Errno 27] File too large" in limited.stderr
    assert "does not answer" not in limited.stderr  # not retried
    assert (results / "optuna.journal").read_bytes().endswith(b"\n")  # whole lines only
    trials = _study(tmp_path).trials
    assert budget > sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) >= 10  # it ended mid-run
    assert before == {t.number: (t.state, t.values, t.params, t.user_attrs) for t in trials if t.number in before}

    optimize(path)  # the resume
    trials = _study(tmp_path).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == budget and "RUNNING" not in states
    assert states.count("FAIL") <= 1  # at most the trial in flight when the disk filled
    evaluated = [t for t in trials if t.state.name != "FAIL" and t.user_attrs["cached"] is False]
    keys = [t.user_attrs["genesis"]["cache_key"] for t in evaluated]
    assert len(keys) == len(set(keys))  # no parameter set evaluated twice
    trials_dir = results / "runs" / "t" / "trials"
    for t in evaluated:
        assert json.loads((trials_dir / f"{t.number:06d}.json").read_text())["trial_number"] == t.number
    assert ScoreCache(cache_url(f"journal:///{results / 'optuna.journal'}")).running_claims("t") == {}
    assert not list(trials_dir.glob("*.tmp"))


# appends two entries to the journal argv[1] under a file size limit of argv[2] bytes; with argv[3],
# its truncation of what the limit cut short first says "cut" and waits for a line on stdin
_CUT_SHORT_APPEND = """
import os, resource, signal, sys
from genesis_core.optimizer._storage import JournalFile, StorageUnavailable
if len(sys.argv) > 3:
    truncate = os.ftruncate
    def held(fd, size):
        print("cut", flush=True)
        sys.stdin.readline()
        truncate(fd, size)
    os.ftruncate = held
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
try:
    JournalFile(sys.argv[1]).append([{"op_code": 8, "worker_id": "w", "trial_id": 0, "user_attr": {"b": "x" * 200}},
                                     {"op_code": 8, "worker_id": "w", "trial_id": 0, "user_attr": {"c": 2}}])
except StorageUnavailable as exc:
    sys.exit(str(exc))
"""


def test_a_journal_append_cut_short_by_a_full_disk_leaves_the_journal_as_it_was(tmp_path):
    """An append the kernel cuts short (a file size limit, as a full disk would) raises, naming the
    journal, and takes back what it wrote: the piece of a line it left ran into the next append's
    first line, and every reader, Optuna's too, lost both."""
    import subprocess
    import sys

    from optuna.storages.journal import JournalFileBackend

    from genesis_core.optimizer._storage import JournalFile

    path = tmp_path / "optuna.journal"
    entry = {"op_code": 8, "worker_id": "w", "trial_id": 0}
    JournalFile(str(path)).append([{**entry, "user_attr": {"a": 1}}])
    whole = path.read_bytes()
    for room in (40, len(whole) + 30, len(whole) + 250):  # nothing written, part of a line, a whole line and part of the next
        done = subprocess.run([sys.executable, "-c", _CUT_SHORT_APPEND, str(path), str(room)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 1 and f"the journal {path} could not be written: File too large" in done.stderr, done.stderr
        assert path.read_bytes() == whole
    JournalFile(str(path)).append([{**entry, "user_attr": {"d": 3}}])  # with room again
    for reader in (JournalFile(str(path)), JournalFileBackend(str(path))):
        assert [e["user_attr"] for e in reader.read_logs(0)] == [{"a": 1}, {"d": 3}]


def test_a_reader_never_takes_the_whole_lines_of_an_append_that_is_being_taken_back(tmp_path):
    """Between an append the kernel cut short and its truncation, the lines it wrote whole are in
    the file: a process reading then must wait, or its replay holds entries that are gone and its
    count of entries read runs ahead of the file (its next read starts mid-line)."""
    import subprocess
    import sys
    import threading

    from genesis_core.optimizer._storage import JournalFile

    path = tmp_path / "optuna.journal"
    entry = {"op_code": 8, "worker_id": "w", "trial_id": 0}
    JournalFile(str(path)).append([{**entry, "user_attr": {"a": 1}}])
    whole = path.read_bytes()
    reader = JournalFile(str(path))
    assert [e["user_attr"] for e in reader.read_logs(0)] == [{"a": 1}]
    room = len(whole) + 250  # a whole line and part of the next
    writer = subprocess.Popen([sys.executable, "-c", _CUT_SHORT_APPEND, str(path), str(room), "hold"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "cut\n"
        assert path.read_bytes().startswith(whole + b'{"op_code":8') and len(path.read_bytes()) == room
        got: list[list[dict]] = []
        read = threading.Thread(target=lambda: got.append(list(reader.read_logs(1))))
        read.start()
        read.join(0.5)
        assert read.is_alive() and not got  # waiting for the writer, not reading its lines
    finally:
        _, err = writer.communicate("\n", timeout=60)
    read.join(60)
    assert writer.returncode == 1 and "could not be written: File too large" in err, err
    assert path.read_bytes() == whole and got == [[]]
    JournalFile(str(path)).append([{**entry, "user_attr": {"d": 3}}])
    assert [e["user_attr"] for e in reader.read_logs(1)] == [{"d": 3}]


def _crashing_config(tmp_path: Path, bug: str, periods: tuple[int, ...] = (10, 17, 20, 30), **meta):
    """A study of the misbehaving strategy, whose ``bug`` crashes the process evaluating some trials
    (a read of address 0: SIGSEGV, as compiled code with a bug does), over a grid of ``periods``, 3 trials."""
    import yaml

    from tests.optimizer.test_optimizer import ROOT

    base = tmp_path / "bug.yaml"
    base.write_text(yaml.safe_dump({"strategy": "tests.strategy.misbehaving_strategy:Misbehaving", "params": {"bug": bug},
                                    "data": {"path": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz")}}))
    return write_config(tmp_path, meta={"base_config": str(base), "stop": {"max_trials": 3}, "sampler": {"name": "grid"}, **meta},
                        parameters={"period": {"type": "categorical", "choices": list(periods)}})


def _crash_dump(stderr: str) -> bool:
    """Whether ``stderr`` holds Python's faulthandler's dump of a segfault at the strategy's line."""
    return "Fatal Python error: Segmentation fault" in stderr and \
        re.search(r'File ".*misbehaving_strategy\.py", line \d+ in decide', stderr) is not None


def test_a_trial_that_crashes_its_process_ends_that_run_saying_where_and_the_next_run_measures_each_trial_apart(tmp_path):
    """A strategy's compiled code with a bug (numba checks no bounds) that segfaults on some
    parameters: the run died saying `Segmentation fault` alone; each resume queued the crashed
    trial's parameters again and died on them in turn, for ever, its records never written. Now
    the crash prints Python's stack naming the strategy's line, and the next run, finding a trial
    whose process died, measures each trial in a process of its own: the queued copy crashes only
    that process, fails with the signal, and the run completes the budget."""
    import subprocess
    import sys

    from tests.optimizer.test_optimizer import ROOT

    path = _crashing_config(tmp_path, "crashes at period 17")
    runs = []
    for _ in range(3):
        runs.append(subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--skip-preflight"],
                                   cwd=ROOT, capture_output=True, text=True, timeout=300))
        if runs[-1].returncode == 0:
            break
    assert [r.returncode for r in runs] == [-11, 0], [r.stderr[-500:] for r in runs]
    assert all(_crash_dump(r.stderr) for r in runs)  # the second run's measuring process printed its own
    rows = _trials({"run_dir": tmp_path / "results" / "runs" / "t"})
    first, again = (r for r in rows if r["state"] == "FAIL")
    assert (first["param:period"], again["param:period"]) == ("17", "17")
    assert first["fail_reason"] == "its worker process was gone before it finished (stopped, killed or crashed): its parameters were queued again"
    assert again["fail_reason"] == ("its measuring process died of SIGSEGV (Segmentation fault) evaluating it: a crash of "
                                    "compiled code (a strategy's, a feature's or a library's), not queued again")
    assert sorted(int(r["param:period"]) for r in rows if r["state"] == "COMPLETE") == [10, 20, 30]
    session = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["sessions"][-1]
    isolated = (f"the process of an earlier session died evaluating trial(s) [{first['number']}] (a crash, memory run out or a "
                "kill: a crash printed its stack): this session measures each trial in a process of its own, so that a crash "
                "fails its trial and the run goes on")
    assert isolated in session["notes"] and f"warning: {isolated}" in " ".join(runs[-1].stderr.split())
    assert any(re.fullmatch(rf"measuring process \d+ died of SIGSEGV \(Segmentation fault\) evaluating trial {again['number']}, "
                            r"which failed .*", n) for n in session["notes"])


def test_a_queued_copy_whose_process_died_too_is_failed_for_good(tmp_path, monkeypatch):
    """Recovery queues a dead worker's trial again once: if the copy's process dies as well (a
    crash that repeats, where nothing measured it apart), the copy is failed for good with the
    reason, and nothing is queued, so no run after it dies on those parameters in turn."""
    import optuna

    from genesis_core.optimizer import _storage, open_storage, recover_stale_trials

    study = optuna.create_study(study_name="r", storage=open_storage(f"journal:///{tmp_path / 'optuna.journal'}"))
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    crashed = study.ask(dist)
    crashed.set_user_attr("worker", _storage.this_process())
    monkeypatch.setattr(_storage, "_alive", lambda worker: False)  # the processes that ran them are gone
    recovered = recover_stale_trials(study)
    assert (recovered.queued, recovered.dropped, recovered.gone) == ([crashed.number], {}, [crashed.number])
    copy = study.ask(dist)  # the queued copy, run first
    assert copy.params == crashed.params and copy.user_attrs["retry_of"] == crashed.number
    copy.set_user_attr("worker", _storage.this_process())
    again = recover_stale_trials(study)
    assert (again.queued, again.dropped, again.gone) == ([], {copy.number: crashed.number}, [copy.number])
    assert [(t.state.name, t.user_attrs.get("error")) for t in study.trials] == [
        ("FAIL", "its worker process was gone before it finished (stopped, killed or crashed): its parameters were queued again"),
        ("FAIL", f"its worker process was gone before it finished (stopped, killed or crashed), as trial {crashed.number}'s was on "
                 "the same parameters: not queued again")]
    assert again.dropped_notes() == [
        f"1 trial(s) left running by a worker that died were failed and not queued again, since a worker had died on the same "
        f"parameters before: {copy.number} (as {crashed.number}); a crash that repeats (a segfault in compiled code, memory run "
        "out) would end every run that tried them (trials.csv fail_reason)"]


def test_a_worker_process_that_crashes_fails_its_trial_with_the_signal_and_the_others_complete_the_run(tmp_path):
    """With free-running workers, a worker process that segfaulted left its trial RUNNING; the end
    of the run failed it and queued it again, for the main process to run and die on, the whole run
    lost. Now its trial fails with the signal as its reason and is not queued again, the session
    says so, and the main process completes the budget."""
    import subprocess
    import sys

    from tests.optimizer.test_optimizer import ROOT

    path = _crashing_config(tmp_path, "crashes in a worker process", parallel="free", n_workers=2)
    run = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--skip-preflight"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and _crash_dump(run.stderr), run.stderr[-2000:]
    rows = _trials({"run_dir": tmp_path / "results" / "runs" / "t"})
    (crashed,) = (r for r in rows if "SIGSEGV" in r["fail_reason"])
    assert crashed["fail_reason"] == ("its worker process died of SIGSEGV (Segmentation fault) evaluating it: a crash of "
                                      "compiled code (a strategy's, a feature's or a library's), not queued again")
    # the budget, on the grid's three other points (the crashed trial had held a place in it: a trial the main process
    # asked for meanwhile found the budget taken and failed, saying so)
    assert sorted(r["param:period"] for r in rows if r["state"] == "COMPLETE") == sorted({"10", "17", "20", "30"} - {crashed["param:period"]})
    assert all(r["fail_reason"] == "not evaluated: the study's 3 trials were taken by other workers"
               for r in rows if r["state"] == "FAIL" and r is not crashed)
    session = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["sessions"][-1]
    assert session["failed_workers"] == [-11]
    (note,) = (n for n in session["notes"] if n.startswith("worker process"))
    assert re.fullmatch(rf"worker process \d+ died of SIGSEGV \(Segmentation fault\) evaluating trial\(s\) \[{crashed['number']}\], "
                        r"failed with that reason and not queued again \(the same parameters would crash a worker again\); "
                        r"where, Python's faulthandler wrote to stderr; the other workers went on", note)
    assert f"warning: {note}" in " ".join(run.stderr.split())


def test_a_worker_process_that_crashes_after_finishing_trials_is_replaced_and_the_workers_complete_the_run(tmp_path):
    """With free-running workers, a worker process that crashed on a trial (its parameters, a region
    of the space its compiled code mishandles) left the run to the others for good: one fewer at
    each crash, down to the main process alone. Now a new one takes its place, and so on at each
    crash; one that crashed on its first trial is not replaced (the test above)."""
    import subprocess
    import sys

    from tests.optimizer.test_optimizer import ROOT

    path = _crashing_config(tmp_path, "crashes in a worker process's third trial", tuple(range(10, 40)), parallel="free",
                            n_workers=2, stop={"max_trials": 12})
    run = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--skip-preflight"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and _crash_dump(run.stderr), run.stderr[-2000:]
    rows = _trials({"run_dir": tmp_path / "results" / "runs" / "t"})
    crashed = [r for r in rows if "SIGSEGV" in r["fail_reason"]]
    assert [r["state"] for r in rows].count("COMPLETE") == 12
    assert all(r["fail_reason"] == "its worker process died of SIGSEGV (Segmentation fault) evaluating it: a crash of compiled "
               "code (a strategy's, a feature's or a library's), not queued again" for r in crashed)
    assert all(r in crashed or r["fail_reason"] == "not evaluated: the study's 12 trials were taken by other workers"
               for r in rows if r["state"] == "FAIL")
    # each worker process crashes on its third trial, after two: the first one's replacement did so too, and so on
    assert len(crashed) >= 2, [(r["state"], r["fail_reason"]) for r in rows]
    session = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["sessions"][-1]
    notes = [n for n in session["notes"] if n.startswith("worker process")]
    assert len(notes) == len(crashed) == len(session["failed_workers"]) and len({n.split()[2] for n in notes}) == len(notes)
    assert all(n.endswith("; where, Python's faulthandler wrote to stderr; a new worker process took its place") for n in notes[:-1])


def test_a_measuring_process_that_crashes_fails_its_trial_and_another_takes_its_place(tmp_path):
    """A seeded two-worker run measures each batch's first trial in a measuring process: one that
    segfaulted ended the run with click's `Aborted.` (its pipe's EOFError), its records never
    written. Now the trial fails with the signal as its reason, a new process takes the dead one's
    place, and the run completes its budget."""
    import subprocess
    import sys

    from tests.optimizer.test_optimizer import ROOT

    path = _crashing_config(tmp_path, "crashes in a worker process", (10, 17, 20, 30, 40, 50), parallel="reproducible",
                            n_workers=2, sampler={"name": "grid", "kwargs": {"seed": 1}})
    run = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--skip-preflight"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and _crash_dump(run.stderr), run.stderr[-2000:]
    rows = _trials({"run_dir": tmp_path / "results" / "runs" / "t"})
    # batches of two: the first trial of each measured in a measuring process, which crashes; the third batch, of one, here
    assert [(r["state"], r["fail_reason"]) for r in rows] == [
        ("FAIL", "its measuring process died of SIGSEGV (Segmentation fault) evaluating it: a crash of compiled code (a "
                 "strategy's, a feature's or a library's), not queued again"), ("COMPLETE", "")] * 2 + [("COMPLETE", "")]
    notes = json.loads((tmp_path / "results" / "runs" / "t" / "run.json").read_text())["sessions"][-1]["notes"]
    crashes = [n for n in notes if n.startswith("measuring process")]
    assert [re.sub(r"process \d+", "process N", n) for n in crashes] == [
        f"measuring process N died of SIGSEGV (Segmentation fault) evaluating trial {n}, which failed with that reason (the "
        "same parameters would end a process again); a new one took its place" for n in (0, 2)]
    assert len({n.split()[2] for n in crashes}) == 2  # two processes, the second the first's replacement


def test_measuring_processes_end_when_the_process_they_serve_is_killed_alone(tmp_path):
    """A seeded two-worker run's measuring process holds a forked copy of the main process's end of
    its pipe, so when the main process alone died (kill -9 of it, the OOM killer, a crash) the pipe
    never closed: the measuring process waited for work for ever, holding its memory (found after
    a crash, still there an hour later). Now it ends within a second or two of its parent."""
    import os
    import signal as signals

    proc = _genesis("optimize", str(_space_config(tmp_path, 5000)), "--workers", "2", "--skip-preflight")
    trials_dir = tmp_path / "results" / "runs" / "t" / "trials"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(trials_dir.glob("*.json"))) < 20:
        time.sleep(0.05)
    members = set(_group_members(proc.pid)) - {proc.pid}
    assert members, "no measuring process"
    os.kill(proc.pid, signals.SIGKILL)  # the main process alone
    proc.wait(timeout=30)

    def running(pid: int) -> bool:  # a zombie (ended, not yet reaped by whoever adopted it) has ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.time() + 15
    while time.time() < deadline and any(running(p) for p in members):
        time.sleep(0.1)
    assert not any(running(p) for p in members), [Path(f"/proc/{p}/stat").read_text() for p in members if running(p)]

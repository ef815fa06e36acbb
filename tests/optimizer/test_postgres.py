"""Many workers on PostgreSQL: one study, one cache, no parameter set evaluated twice."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from genesis_core.optimizer import RunOptions, _worker, open_storage
from genesis_core.records import RunFolder
from tests.optimizer.test_optimizer import ROOT, _trials, write_config
from tests.pgserver import fresh_database
from tests.runs import optimize

SMALL_SPACE = {
    "exits.max_bars_held": {"type": "categorical", "choices": [12, 24, 36]},
    "exits.stop_loss_atr": {"type": "categorical", "choices": [1.5, 2.5]},
}


def test_worker_processes_share_study_and_cache_on_postgresql(tmp_path, postgres_url):
    path = write_config(tmp_path, meta={"stop": {"max_trials": 20}}, parameters=SMALL_SPACE)
    summary = optimize(path, RunOptions(workers=3), storage=postgres_url)
    rows = _trials(summary)
    assert len([r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]) == 20 and summary["session"]["failed_workers"] == []
    assert all("taken by other workers" in r["fail_reason"] for r in rows if r["state"] == "FAIL")
    evaluated = [r["config_fingerprint"] for r in rows if r["cached"] == "False"]
    assert len(evaluated) == len(set(evaluated)) <= 6  # a 3 x 2 space: at most six backtests in all
    for r in rows:
        if r["cached"] == "True":
            orig = next(o for o in rows if o["number"] == r["cache_reused_from"])
            assert r["production_score"] == orig["production_score"]
    assert len(optuna.load_study(study_name="t", storage=open_storage(postgres_url)).trials) == len(rows)


@pytest.mark.parametrize("kind", ["postgresql", "journal+postgresql"])
def test_two_machines_join_one_study(tmp_path, postgres_url, kind):
    """Two independent `genesis optimize` processes (as on two machines) on the same URL and study:
    Optuna's RDB storage, and the journal with its log in the database."""
    url = postgres_url if kind == "postgresql" else "journal+" + postgres_url
    path = write_config(tmp_path, meta={"stop": {"max_trials": 30}}, parameters=SMALL_SPACE)
    cmd = [sys.executable, "-m", "genesis_core", "optimize", str(path), "--storage", url, "--json"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    summaries = [json.loads(o[0]) for o in outs]
    study = optuna.load_study(study_name="t", storage=open_storage(url))
    trials = study.trials
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 30  # the budget is the study's, exactly
    assert all("taken by other workers" in t.user_attrs["error"] for t in trials if t.state.name == "FAIL")
    evaluated = [t.user_attrs["genesis"]["config_fingerprint"] for t in trials if t.user_attrs.get("cached") is False]
    assert len(evaluated) == len(set(evaluated)) <= 6
    assert max(s["explore"]["cache"]["total_trials"] for s in summaries) >= 30


def _pg_study(url: str):
    return optuna.load_study(study_name="t", storage=open_storage(url))


def test_a_database_restart_mid_run_does_not_stop_the_run(tmp_path, postgres_server):
    """The server is stopped (every connection cut) and started again while 2 workers run: they
    retry, the run goes on, and the study ends with exactly its budget, nothing left running."""
    import threading
    import time

    url = fresh_database(postgres_server.url)
    path = write_config(tmp_path, meta={"stop": {"max_trials": 60}, "storage_retry_seconds": 60, "duplicate_streak_limit": 1000,
                                        "stale_trial_seconds": 2},
                        parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                    "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0}})
    trials_dir = tmp_path / "results" / "runs" / "t" / "trials"
    restarted = []

    def restart_after_some_trials() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(trials_dir.glob("*.json"))) < 10:
            time.sleep(0.05)
        postgres_server.stop()
        time.sleep(3)  # down for a while: the workers retry
        postgres_server.start()
        restarted.append(len(list(trials_dir.glob("*.json"))))

    thread = threading.Thread(target=restart_after_some_trials)
    thread.start()
    summary = optimize(path, RunOptions(workers=2), storage=url)
    thread.join()
    assert restarted and restarted[0] < 60  # the restart happened mid-run
    states = [t.state.name for t in _pg_study(url).trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 60
    assert "RUNNING" not in states and "WAITING" not in states
    assert summary["session"]["failed_workers"] == [] and summary["states"] == {s: states.count(s) for s in set(states)}


def test_a_database_down_longer_than_the_retry_time_ends_cleanly_and_resumes(tmp_path, postgres_server):
    """The run ends within one retry period of the database going away (its workers' held cache
    entries are not retried a second time), and the next session completes the budget, writing
    whatever entries they held (no claim is left running)."""
    import subprocess
    import sys
    import time

    from genesis_core.optimizer._storage import ScoreCache, cache_url
    from tests.optimizer.test_optimizer import ROOT

    url = fresh_database(postgres_server.url)
    path = write_config(tmp_path, meta={"stop": {"max_trials": 40}, "storage_retry_seconds": 5, "duplicate_streak_limit": 1000},
                        parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                    "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0}})
    trials_dir = tmp_path / "results" / "runs" / "t" / "trials"
    proc = subprocess.Popen([sys.executable, "-m", "genesis_core", "optimize", str(path), "--storage", url, "--workers", "2",
                             "--skip-preflight"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(trials_dir.glob("*.json"))) < 8:
        time.sleep(0.05)
    postgres_server.stop()
    stopped = time.monotonic()
    try:
        out, err = proc.communicate(timeout=120)
        ended = time.monotonic() - stopped
    finally:
        postgres_server.start()
    assert proc.returncode == 2, err[-3000:]
    assert "did not answer for 5 s" in err and "resume with: genesis optimize" in err
    assert "Traceback" not in err
    # Each process that met the outage waits one retry period (a warning starts it), then every later
    # call on its way out (the failed trial's tell, its held cache entries) fails at once, "given up on
    # ... ago". Counted, not timed: the time depends on when each worker next touches the database,
    # 3.6-3.7 s alone but 10.3 s once on a loaded machine, where a bound of 8.5 s failed.
    periods = err.count("does not answer; retrying for up to 5 s")
    assert 1 <= periods <= 3, err  # the session's process and its two workers, once each
    assert ended < 60, ended
    summary = optimize(path, storage=url)  # the database is back: the next session completes the budget
    states = [t.state.name for t in _pg_study(url).trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 40
    assert "RUNNING" not in states and "WAITING" not in states
    assert summary["cache"]["total_trials"] == len(states)
    assert ScoreCache(cache_url(url)).running_claims("t") == {}


def test_a_full_database_disk_ends_the_run_at_once_and_the_resume_meets_the_budget(tmp_path, postgres_server):
    """Mid-run the database server's disk fills (a file size limit on the server, which PostgreSQL
    reports as on a full disk: SQLSTATE disk_full). Two workers on the journal in the database end
    at once, saying why, where they used to retry for storage_retry_seconds (an hour here) as if the
    server did not answer; the trials told before are as they were; with room again the resume meets
    the budget exactly, evaluating no parameter set twice and leaving no claim running."""
    import subprocess
    import sys
    import time

    import sqlalchemy as sa

    from genesis_core.optimizer._storage import _CACHE, ScoreCache, cache_url, make_engine
    from tests.optimizer.test_optimizer import ROOT

    url = "journal+" + fresh_database(postgres_server.url)
    budget = 60
    path = write_config(tmp_path, meta={"stop": {"max_trials": 10}, "storage_retry_seconds": 3600, "duplicate_streak_limit": 1000},
                        parameters={"exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
                                    "exits.stop_loss_atr": {"type": "float", "low": 0.5, "high": 5.0}})
    optimize(path, storage=url)  # ten trials told, with room
    before = {t.number: (t.state, t.values, t.params, t.user_attrs) for t in _pg_study(url).trials}
    path.write_text(path.read_text().replace("max_trials: 10", f"max_trials: {budget}"))
    engine = make_engine(cache_url(url))
    with engine.begin() as conn:  # the score cache's table past the server's 16 MB log segments, a row filling each page
        conn.execute(sa.text(f"ALTER TABLE {_CACHE.name} ALTER COLUMN payload SET STORAGE PLAIN"))  # in the row, as it is
        conn.execute(sa.insert(_CACHE), [{"study": "padding", "key": f"{i:032x}", "state": "done", "trial_number": i,
                                          "payload": "x" * 8000, "updated": 0.0} for i in range(2_100)])
        size = conn.execute(sa.text(f"SELECT pg_relation_size('{_CACHE.name}')")).scalar_one()
    engine.dispose()
    postgres_server.stop()
    postgres_server.start(file_size_limit=size + 3 * 8192 + 3000)  # three more pages, the fourth cut short: the disk is full
    try:
        started = time.monotonic()
        limited = subprocess.run([sys.executable, "-m", "genesis_core", "optimize", str(path), "--storage", url, "--workers", "2",
                                  "--skip-preflight"], cwd=ROOT, capture_output=True, text=True, timeout=120)  # a retry waits the hour
        ended = time.monotonic() - started
    finally:
        postgres_server.stop()
        postgres_server.start()
    assert limited.returncode == 2, limited.stderr[-3000:]
    said = limited.stderr.rsplit("error: ", 1)[-1]
    assert " could not be written: could not extend file " in said and "; resume with: genesis optimize" in said, said
    assert "does not answer" not in limited.stderr and "Traceback" not in limited.stderr
    assert ended < 60, ended
    trials = _pg_study(url).trials
    assert budget > sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) >= 10  # it ended mid-run
    assert before == {t.number: (t.state, t.values, t.params, t.user_attrs) for t in trials if t.number in before}

    summary = optimize(path, storage=url)  # the resume, with room
    trials = _pg_study(url).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == budget and "RUNNING" not in states and "WAITING" not in states
    assert summary["cache"]["total_trials"] == len(states)
    assert states.count("FAIL") <= 2  # at most the trials in flight when the disk filled, one a worker
    evaluated = [t for t in trials if t.state.name != "FAIL" and t.user_attrs["cached"] is False]
    keys = [t.user_attrs["genesis"]["cache_key"] for t in evaluated]
    assert len(keys) == len(set(keys))  # no parameter set evaluated twice
    for t in evaluated:
        assert RunFolder.of(tmp_path / "results", "t").read_trial(t.number).trial_number == t.number
    assert ScoreCache(cache_url(url)).running_claims("t") == {}

def test_the_database_journal_orders_concurrent_appends_without_gaps_and_never_applies_one_twice(postgres_url, monkeypatch):
    """Eight writers at once: every log is there exactly once, in one order every reader sees; an
    append retried with the same batch (its connection lost after the commit) is not applied again."""
    import threading
    import uuid

    from genesis_core.optimizer._storage import DatabaseJournal, _schema

    _schema(postgres_url)

    def write(w: int) -> None:
        journal = DatabaseJournal(postgres_url)
        for i in range(40):
            journal.append_logs([{"w": w, "i": i}, {"w": w, "i": i, "second": True}])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logs = DatabaseJournal(postgres_url).read_logs(0)
    assert len(logs) == 8 * 40 * 2
    assert sorted((log["w"], log["i"], "second" in log) for log in logs) == [(w, i, s) for w in range(8) for i in range(40)
                                                                           for s in (False, True)]
    for a, b in zip(logs[::2], logs[1::2], strict=True):  # an append's logs stay together, in order
        assert (a["w"], a["i"]) == (b["w"], b["i"]) and "second" in b and "second" not in a
    assert DatabaseJournal(postgres_url).read_logs(len(logs) - 3) == logs[-3:]  # from a log number on
    fixed = uuid.UUID(int=7)
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    journal = DatabaseJournal(postgres_url)
    journal.append_logs([{"retried": 1}])
    journal.append_logs([{"retried": 1}])  # the same batch again: already there
    assert [log for log in DatabaseJournal(postgres_url).read_logs(0) if "retried" in log] == [{"retried": 1}]


def test_an_artifact_a_power_loss_took_is_taken_from_the_database_not_run_again(tmp_path, postgres_url, monkeypatch):
    """On a database server a run's files are stored there before its trial is told, so an artifact
    lost from the folder (missing, or empty: the flush that would have carried it never came) comes
    back from there, as it was, without a backtest."""
    url = "journal+" + postgres_url
    path = write_config(tmp_path, meta={"stop": {"max_trials": 6}}, parameters=SMALL_SPACE)
    folder = RunFolder(Path(optimize(path, storage=url)["run_dir"]))
    numbers = folder.evaluated_numbers()
    before = {n: folder.trial_path(n).read_bytes() for n in numbers}
    folder.trial_path(numbers[0]).unlink()
    folder.trial_path(numbers[1]).write_bytes(b"")
    monkeypatch.setattr(_worker, "measure", lambda *args, **kwargs: pytest.fail("a trial was run again"))
    notes = optimize(path, storage=url)["session"]["notes"]
    assert any(n.startswith("2 trial artifact(s) lost") and "the database's copy" in n for n in notes), notes
    assert {n: folder.trial_path(n).read_bytes() for n in numbers} == before


def test_a_forked_worker_opens_its_own_connections_and_leaves_its_parent_s_alone(postgres_url):
    """Worker processes are forked from the session's (``process_context``), which holds pooled
    connections and an open journal storage by then: a child that took one of them would talk on
    its parent's socket. The child gets its own (another server backend) and the parent's still
    answers on the backend it had."""
    import multiprocessing

    from genesis_core.optimizer._storage import make_engine

    journal = "journal+" + postgres_url
    storage, engine = open_storage(journal), make_engine(postgres_url)

    def backend(of) -> int:
        with of.connect() as conn:
            return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()

    mine = backend(engine)

    def child(pipe) -> None:
        pipe.send((open_storage(journal) is storage, make_engine(postgres_url) is engine, backend(make_engine(postgres_url))))

    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=child, args=(theirs,))
    process.start()
    shared_storage, shared_engine, child_backend = ours.recv()
    process.join(30)
    assert process.exitcode == 0 and not shared_storage and not shared_engine
    assert child_backend != mine and backend(engine) == mine


def test_recovery_reads_the_log_afresh_before_judging_a_trial_whose_worker_just_ended(postgres_url, monkeypatch):
    """A ``journal+postgresql://`` reader answers "nothing new" within ``FRESH_SECONDS`` of its last
    read. A session that joined its workers and recovered their trials at once saw a trial a
    worker had finished just before it ended as RUNNING with its process gone, failed it, and
    crashed on Optuna's refusal. Recovery reads the log afresh first: no FAIL is written."""
    import sqlalchemy as sa

    from genesis_core.optimizer import _storage, recover_stale_trials
    from genesis_core.optimizer._storage import DatabaseJournal, HeldJournalStorage

    # every read is "nothing new" unless forced, or the first (never read: on any machine, however long it has been up)
    monkeypatch.setattr(DatabaseJournal, "FRESH_SECONDS", float("inf"))
    session = optuna.create_study(study_name="r", storage=open_storage("journal+" + postgres_url))
    worker = optuna.load_study(study_name="r", storage=HeldJournalStorage(DatabaseJournal(postgres_url)))
    trial = worker.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    session._storage._backend.expire()
    assert [t.state.name for t in session.get_trials(deepcopy=False)] == ["RUNNING"]
    worker.tell(trial, 0.5)  # its last write; then its process ends
    monkeypatch.setattr(_storage, "_alive", lambda w: False)
    assert recover_stale_trials(session).failed == []
    assert [(t.state.name, t.value) for t in session.trials] == [("COMPLETE", 0.5)]
    with sa.create_engine(postgres_url).connect() as conn:
        states = [json.loads(body).get("state") for (body,) in conn.execute(sa.text("SELECT body FROM genesis_journal"))]
    assert optuna.trial.TrialState.FAIL.value not in states


_SKEWED = """
import sys, time
from genesis_core.cli import app

real, skew = time.time, float(sys.argv[1])
time.time = lambda: real() + skew  # this machine's clock, that far off the database server's
app(sys.argv[2:], prog_name="genesis")
"""


@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_a_machine_whose_clock_is_off_the_database_server_s_is_refused_before_it_touches_the_study(tmp_path, postgres_url,
                                                                                                    kind):
    """Workers stamp sessions, claims and a journal's trials with their own clocks, and judge other
    machines' by theirs: one 60 s ahead took another machine's live session for a dead one (its slot,
    so its seed: duplicate proposals), its claims for abandoned ones, and on a journal its running
    trials for a killed worker's. Such a machine is refused, saying by how much, before any write."""
    url = postgres_url if kind == "postgresql" else "journal+" + postgres_url
    path = write_config(tmp_path, meta={"stop": {"max_trials": 6}}, parameters=SMALL_SPACE)

    def genesis(skew: float, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", _SKEWED, str(skew), command, str(path), "--storage", url, *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    said = (r"this machine's clock is (59\.9|60\.0|60\.1) s {way} the database server's \(postgresql://.*\): its workers "
            r"would take other machines' live sessions, claims and trials for dead ones, or theirs for its own\. Set its clock "
            r"\(NTP: `timedatectl set-ntp true`, or `chronyc makestep`\), or raise meta\.stale_trial_seconds to 18[01] or more")
    for skew, way, command in ((60.0, "ahead of", "optimize"), (-60.0, "behind", "sweep")):
        refused = genesis(skew, command, "--skip-preflight")
        assert refused.returncode == 2, refused.stderr
        assert re.fullmatch("error: " + said.format(way=way), refused.stderr.replace("\n", " ").strip()), refused.stderr
        if kind == "journal":
            return  # the same check of the same database; a journal on it runs on a true clock in test_two_machines_join_one_study
    checked = json.loads(genesis(60.0, "preflight", "--json").stdout)  # preflight's storage check says it too
    storage = next(c for c in checked["checks"] if c["name"] == "storage")
    assert storage["status"] == "fail" and re.fullmatch(said.format(way="ahead of"), storage["detail"]), storage
    assert optuna.get_all_study_names(open_storage(url)) == []  # refused before the study was made
    assert not (tmp_path / "results" / "runs").exists()
    in_time = genesis(5.0, "optimize", "--skip-preflight")  # within a third of meta.stale_trial_seconds (30 s)
    assert in_time.returncode == 0, in_time.stderr
    assert len(_pg_study(url).trials) == 6

"""A run spread over machines: with PostgreSQL as the storage everything a run writes is in the
database too, so a third machine with an empty folder validates, checks and reports the whole run."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import optuna
import pytest

from genesis_core.optimizer import open_storage
from tests.optimizer.test_optimizer import ROOT
from tests.runs import genesis
from tests.validation.conftest import PARAMETERS, validated_config


def _genesis(*args: str) -> tuple[int, str]:
    """The exit code and what was printed: with --json only stdout, the JSON (warnings go to stderr)."""
    result = genesis(*args)
    return result.returncode, result.stdout if "--json" in args else result.stdout + result.stderr


@pytest.mark.parametrize("through", ["rdb", "grpc proxy", "journal+postgresql"])
def test_two_machines_then_a_third_with_an_empty_folder_sees_every_trial(tmp_path, postgres_url, through):
    """Optuna's RDB storage directly, the study's calls through `genesis storage serve`, and the
    journal with its log in the database; each worker within its connection budget."""
    url = "journal+" + postgres_url if through == "journal+postgresql" else postgres_url
    with _proxy(postgres_url) if through == "grpc proxy" else contextlib.nullcontext() as proxy, _peak_connections(postgres_url) as peak:
        _two_machines_then_a_third(tmp_path, url, [] if proxy is None else ["--proxy", proxy])
    budget = 1 if proxy else 3  # a worker's: the study's (none through the proxy) and its own (cache, files)
    # the two machines' workers, the proxy's pool (4 threads), this test's own look at the study (2) and the readers' files (1)
    assert 0 < peak[0] <= 2 * budget + (4 if proxy else 0) + 3, peak


@contextlib.contextmanager
def _peak_connections(url: str) -> Iterator[list[int]]:
    """The most connections to the database seen at once (sampled every 20 ms), this one left out."""
    import threading

    import psycopg

    peak, stop = [0], threading.Event()

    def sample() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                (n,) = conn.execute("SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database()").fetchone()
                peak[0] = max(peak[0], n)
                time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join(timeout=10)


@contextlib.contextmanager
def _proxy(url: str) -> Iterator[str]:
    """`genesis storage serve` on a free port, stopped after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "genesis_core", "storage", "serve", "--storage", url, "--port", str(port),
                             "--threads", "4"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield f"127.0.0.1:{port}"  # the workers wait for it to answer
    finally:
        proc.send_signal(signal.SIGTERM)  # as a scheduler stops it (Ctrl-C works alike)
        _, err = proc.communicate(timeout=30)
        assert "gRPC storage proxy for" in err and proc.returncode == 143, err


def _two_machines_then_a_third(tmp_path, postgres_url: str, proxy: list[str]) -> None:
    machines = [tmp_path / m for m in ("a", "b", "c")]
    configs = []
    for m in machines[:2]:  # two machines: their own folders, one database
        m.mkdir()
        configs.append(validated_config(m, meta={"stop": {"max_trials": 16}, "n_workers": 1, "duplicate_streak_limit": 1000},
                                        parameters={**PARAMETERS, "exits.take_profit_atr": {"type": "categorical",
                                                                                            "choices": [2.0, 3.0, 4.0]}}))
    procs = [subprocess.Popen([sys.executable, "-m", "genesis_core", "optimize", str(c), "--storage", postgres_url, "--json", *proxy],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    for out in outs:
        notes = json.loads(out[0])["explore"]["session"]["notes"]
        assert any("went through the gRPC storage proxy at" in n for n in notes) == bool(proxy), notes
    study = optuna.load_study(study_name="t", storage=open_storage(postgres_url))
    evaluated = sorted(t.number for t in study.trials if t.state.name == "COMPLETE" and t.user_attrs.get("cached") is False)
    local = [sorted(int(p.stem) for p in (m / "results" / "runs" / "t" / "trials").glob("*.json")) for m in machines[:2]]
    # each machine's session ended by fetching what the other had finished by then
    assert sorted(set(local[0]) | set(local[1])) == evaluated and evaluated in local
    for m in machines[:2]:
        shutil.rmtree(m / "results")  # nothing left on the machines but the database

    c = str(machines[2] / "results")
    code, output = _genesis("validate", "t", "--storage", postgres_url, "--results-dir", c, "--json")
    assert code == 0, output
    report = json.loads(output[output.index("{"):])
    assert report["evaluated_trials"] == len(evaluated) and not report.get("missing_artifacts")
    code, output = _genesis("check-equivalence", "t", "--all", "--storage", postgres_url, "--results-dir", c, "--json")
    assert code == 0, output
    checked = json.loads(output[output.index("["):])
    assert sorted(r["trial"] for r in checked) == evaluated and all(r["ok"] for r in checked)
    code, output = _genesis("report", "t", "--storage", postgres_url, "--results-dir", c, "--out", str(machines[2] / "r.html"))
    assert code == 0, output
    page = (machines[2] / "r.html").read_text()
    run = json.loads((machines[2] / "results" / "runs" / "t" / "run.json").read_text())  # as fetched from the database
    assert run["cache"]["total_trials"] >= len(evaluated) and f"<td>{run['cache']['total_trials']}</td>" in page.replace(
        "<td class='l'>", "<td>")
    # what the third machine wrote went back to the database: a fourth sees the validation, listing and
    # showing the run without pulling a trial artifact; showing a trial, re-running one or checking one
    # pulls that trial's artifact alone
    d = tmp_path / "d" / "results"
    code, output = _genesis("runs", "list", "--storage", postgres_url, "--results-dir", str(d), "--json")
    assert code == 0, output
    (listed,) = json.loads(output)
    assert listed["validation"] is not None and listed["trials"] == run["cache"]["total_trials"]
    code, output = _genesis("runs", "show", "t", "--storage", postgres_url, "--results-dir", str(d), "--json")
    assert code == 0 and json.loads(output)["cache"]["total_trials"] == run["cache"]["total_trials"], output
    assert (d / "runs" / "t" / "run.json").is_file() and not (d / "runs" / "t" / "trials").exists()
    code, output = _genesis("runs", "show", "t", "--trial", str(evaluated[0]), "--storage", postgres_url, "--results-dir", str(d),
                            "--json")
    assert code == 0 and json.loads(output)["trial_number"] == evaluated[0], output
    pulled = d / "runs" / "t" / "trials"
    assert sorted(int(p.stem) for p in pulled.glob("*.json")) == evaluated[:1]
    code, output = _genesis("backtest", "--trial", f"t:{evaluated[1]}", "--storage", postgres_url, "--results-dir", str(d),
                            "--out", str(tmp_path / "d" / "again.json"), "--json")
    shown = json.loads((pulled / f"{evaluated[1]:06d}.json").read_text())
    assert code == 0 and json.loads(output)["metrics"] == shown["metrics"], output
    code, output = _genesis("check-equivalence", "t", "--trial", str(evaluated[2]), "--storage", postgres_url,
                            "--results-dir", str(d), "--json")
    assert code == 0 and [r["trial"] for r in json.loads(output) if r["ok"]] == [evaluated[2]], output
    assert sorted(int(p.stem) for p in pulled.glob("*.json")) == evaluated[:3]


def test_a_proxy_that_does_not_answer_is_one_clear_error_before_anything_runs(tmp_path, postgres_url):
    path = validated_config(tmp_path)
    code, output = _genesis("optimize", str(path), "--storage", postgres_url, "--proxy", "127.0.0.1:9", "--skip-preflight")
    assert code == 2 and "no gRPC storage proxy answers at 127.0.0.1:9" in output and "genesis storage serve" in output, output
    assert not (tmp_path / "results" / "runs").exists()
    code, output = _genesis("optimize", str(path), "--proxy", "127.0.0.1:9", "--skip-preflight")  # the default journal
    assert code == 2 and "a gRPC proxy serves a database server's study" in output, output


def _dashboard(url: str, trials: int) -> tuple[optuna.Study, subprocess.Popen[str], int]:
    """A study of ``trials`` trials at ``url``, and `genesis storage dashboard` over it on a free port."""
    study = optuna.create_study(study_name="watched", storage=open_storage(url), direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=trials)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "genesis_core", "storage", "dashboard", "--storage", url, "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return study, proc, port


def test_the_dashboard_shows_a_journal_on_postgresql_study_live(tmp_path, postgres_url):
    """`genesis storage dashboard`: optuna-dashboard over the storage Genesis-Core opens (a
    journal+postgresql study, which `optuna-dashboard URL` cannot open), stopped by SIGTERM."""
    import urllib.request

    url = "journal+" + postgres_url
    study, proc, port = _dashboard(url, 5)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    (summary,) = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
                time.sleep(0.2)
        assert summary["study_name"] == "watched"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=5) as response:
            detail = json.loads(response.read())
        assert len(detail["trials"]) == 5 and detail["best_trials"][0]["values"] == [study.best_value]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # where it hangs, by faulthandler's stacks on SIGABRT (a signal lost in a request did so)
            proc.send_signal(signal.SIGABRT)
            raise AssertionError(f"the dashboard outlived SIGTERM by 30 s:\n{proc.communicate(timeout=30)[1][-6000:]}") from None
    assert proc.returncode == 143 and "optuna-dashboard for journal+postgresql://" in err, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_dashboard_stops_on_a_signal_while_it_answers_requests(tmp_path, sig):
    """A signal that came while the dashboard answered a request (a browser's page polls every few
    seconds) raised KeyboardInterrupt inside the request, which the server took for that request's
    error: the dashboard served on, deaf to Ctrl-C and SIGTERM (5 of 5 tries hung). Now it ends,
    with exit 128 + the signal, after the request in flight."""
    import threading
    import urllib.request

    url = f"journal:///{tmp_path / 'optuna.journal'}"
    _, proc, port = _dashboard(url, 50)
    answered, stop = [], threading.Event()

    def browser() -> None:  # as many pages polling as it takes to keep a request in flight
        while not stop.is_set():
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/0", timeout=5) as response:
                    answered.append(len(json.loads(response.read())["trials"]))

    pages = [threading.Thread(target=browser) for _ in range(4)]
    try:
        for page in pages:
            page.start()
        deadline = time.monotonic() + 60
        while len(answered) < 20:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        stop.set()
        for page in pages:
            page.join()
        if proc.poll() is None:
            proc.kill()
    assert set(answered) == {50}
    assert proc.returncode == 128 + sig and err.startswith(f"optuna-dashboard for {url} at http://127.0.0.1:{port}/"), err[-2000:]


def _writer(url: str, names: list[str], k: int) -> None:
    """A machine ending sessions: ``names`` stored twenty times over, each time in its own order."""
    import random

    from genesis_core.optimizer import RunFiles

    rng = random.Random(k)
    for round_ in range(20):
        order = rng.sample(names, len(names))
        RunFiles(url).put("r", {name: f"{k} {round_} {name}".encode() for name in order})


def test_run_files_are_stored_in_one_statement_and_writers_of_the_same_files_in_any_order_each_leave_a_whole_set(
        tmp_path, postgres_url):
    """A sweep's chunk of artifacts goes into the database in one upsert; stored again, a file is
    replaced. Four machines (processes) writing the same 60 files, each in its own order, twenty
    times over: none fails, and a third machine pulls each file whole, all as one of them last wrote
    them. A pull again writes the artifacts a power loss cut short, and keeps the whole ones."""
    import multiprocessing

    import sqlalchemy as sa

    from genesis_core.optimizer import RunFiles
    from genesis_core.optimizer._storage import make_engine

    files = RunFiles(postgres_url)
    assert files.runs() == []  # the tables made
    artifacts = {f"trials/{n:06d}.json": json.dumps({"trial_number": n, "pad": "x" * (n % 4000)}).encode() for n in range(600)}
    statements: list[str] = []
    sa.event.listen(make_engine(postgres_url), "before_cursor_execute",  # the process's one engine for the database
                    lambda conn, cursor, statement, *rest: statements.append(statement))
    files.put("r", artifacts)
    assert len([s for s in statements if "genesis_run_files" in s]) == 1, statements  # not an update and an insert each
    files.put("r", {"trials/000007.json": b"replaced"})

    names = [f"file{i}.json" for i in range(60)]
    context = multiprocessing.get_context("spawn")  # machines of their own: no engine, connection or lock shared
    machines = [context.Process(target=_writer, args=(postgres_url, names, k)) for k in range(4)]
    for m in machines:
        m.start()
    for m in machines:
        m.join(timeout=120)
    assert [m.exitcode for m in machines] == [0, 0, 0, 0]
    third = tmp_path / "third"
    assert files.pull("r", third) == 600 + 60
    for name, body in artifacts.items():
        assert (third / name).read_bytes() == (b"replaced" if name == "trials/000007.json" else body)
    last = {tuple((third / name).read_text().split()[:2]) for name in names}
    assert len(last) == 1 and next(iter(last))[1] == "19"  # one writer's last put, whole: each waited for the other's
    assert all((third / name).read_text().endswith(name) for name in names)

    # a power loss during that pull (its files are flushed together at its end) left two artifacts empty
    # and cut short; another is whole but not as stored (artifacts never change: a local one is kept)
    (third / "trials/000001.json").write_bytes(b"")
    (third / "trials/000002.json").write_bytes(artifacts["trials/000002.json"][:100])
    (third / "trials/000003.json").write_bytes(b'{"kept": true}')
    assert files.pull("r", third) == 660
    for n in (1, 2):
        assert (third / f"trials/{n:06d}.json").read_bytes() == artifacts[f"trials/{n:06d}.json"]
    assert (third / "trials/000003.json").read_bytes() == b'{"kept": true}'

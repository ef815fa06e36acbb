"""A fleet simulated on this machine: how the study storage scales with the number of workers.

N = 1, 4, 16, 32 worker processes each run trials of a synthetic objective that sleeps T ms (200 by
default: a long backtest that costs no CPU, so the 2 cores only carry the storage's work) with
Optuna's random sampler, through the paths a fleet can take: (a) Optuna's RDB storage on PostgreSQL
directly (each worker its own connections), (b) the gRPC proxy `genesis storage serve` in front of
it, (c) Optuna's journal storage with its log in PostgreSQL (`journal+postgresql://`, Genesis-Core's
DatabaseJournal), (d) the journal file (one machine only). Prints trials/s against the ideal N / T, as a share of it, for each path
and N, all measured in this run; the README's fleet recipe follows the path that holds up.
Usage: python benchmarks/bench_scale.py [--workers 1,4,16,32] [--sleep-ms 200] [--seconds 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from genesis_core.optimizer import open_storage, settled_heap  # noqa: E402
from tests.pgserver import fresh_database, server_bindir, throwaway_postgres  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _worker(url: str, proxy: str | None, study: str, ready: Any, start: Any, seconds: float, sleep_s: float,
            results: Any) -> None:
    """Trials finished in the common window (after one warm-up trial, once every worker is ready)."""
    import warnings

    warnings.filterwarnings("ignore", message="Heartbeat of storage")  # asked and told by hand, like a batch
    s = optuna.load_study(study_name=study, storage=open_storage(url, wait=True, proxy=proxy),
                          sampler=optuna.samplers.RandomSampler())
    with settled_heap():  # as a `genesis optimize` worker runs its trials once its study is open
        warm = s.ask()
        s.tell(warm, warm.suggest_float("x", 0, 1))
        ready.wait()
        while start.value == 0.0:
            time.sleep(0.002)
        end_at, done = start.value + seconds, 0
        while True:
            trial = s.ask()
            x = trial.suggest_float("x", 0, 1)
            time.sleep(sleep_s)  # the objective: a backtest that takes T and no CPU
            s.tell(trial, x)
            if time.time() > end_at:
                break
            done += 1
    results.put(done)


def _server_cpu_seconds() -> float:
    """CPU seconds used so far by the machine's PostgreSQL server processes (they share the two cores here)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split(") ", 1)
        except (OSError, ValueError):
            continue
        if name.endswith("(postgres"):
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


SERVER_CORES: dict[tuple[str, int], float] = {}  # (path, workers) -> cores the database server used in the window


def measure(url: str, proxy: str | None, workers: int, sleep_s: float, seconds: float) -> float:
    """Trials per second of ``workers`` processes over a common window of ``seconds``, started once
    every process has imported, connected and run a warm-up trial; the database server's CPU use in
    the window goes to SERVER_CORES."""
    name = f"scale-{workers}-{time.time_ns()}"
    optuna.create_study(study_name=name, storage=open_storage(url, proxy=proxy, wait=True))
    ctx = multiprocessing.get_context("spawn")
    results, ready, start = ctx.Queue(), ctx.Barrier(workers + 1), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_worker, args=(url, proxy, name, ready, start, seconds, sleep_s, results)) for _ in range(workers)]
    for p in procs:
        p.start()
    ready.wait(timeout=600)
    start.value = time.time() + 0.2
    time.sleep(0.2)
    cpu0 = _server_cpu_seconds()
    time.sleep(seconds)
    SERVER_CORES[(url.split(":", 1)[0] + ("+proxy" if proxy else ""), workers)] = (_server_cpu_seconds() - cpu0) / seconds
    total = sum(results.get(timeout=seconds + 300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return total / seconds


def _proxy(url: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "genesis_core", "storage", "serve", "--storage", url, "--port", str(port)],
                            cwd=ROOT, stderr=subprocess.DEVNULL)
    return proc, f"127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,4,16,32")
    ap.add_argument("--sleep-ms", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--paths", default="rdb,proxy,journal+postgresql,journal", help="which storage paths to measure")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    paths = args.paths.split(",")
    counts = [int(n) for n in args.workers.split(",")]
    sleep_s = args.sleep_ms / 1000
    bindir = server_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL server binaries: run scripts/ensure-package.sh postgresql first (make bench-scale does)")
    names = {"rdb": "postgresql (RDB)", "proxy": "grpc proxy (RDB)", "journal+postgresql": "journal+postgresql",
             "journal": "journal file"}
    rows: dict[str, dict[int, float]] = {names[p]: {} for p in paths}
    with throwaway_postgres(bindir) as server, tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            if "rdb" in paths:
                rows[names["rdb"]][n] = measure(fresh_database(server.url), None, n, sleep_s, args.seconds)
            if "proxy" in paths:
                url = fresh_database(server.url)
                proc, address = _proxy(url)
                try:
                    rows[names["proxy"]][n] = measure(url, address, n, sleep_s, args.seconds)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
            if "journal+postgresql" in paths:
                rows[names["journal+postgresql"]][n] = measure("journal+" + fresh_database(server.url), None, n, sleep_s,
                                                               args.seconds)
            if "journal" in paths:
                rows[names["journal"]][n] = measure(f"journal:///{tmp}/j{n}.journal", None, n, sleep_s, args.seconds)
    ideal = {n: n / sleep_s for n in counts}
    report = {"database_server_cores": {f"{k[0]} x{k[1]}": round(v, 2) for k, v in SERVER_CORES.items()},
              "sleep_ms": args.sleep_ms, "seconds": args.seconds, "cpus": os.cpu_count(), "ideal_trials_per_s": ideal,
              "trials_per_s": {k: {n: round(v, 1) for n, v in r.items()} for k, r in rows.items()},
              "share_of_ideal": {k: {n: round(v / ideal[n], 3) for n, v in r.items()} for k, r in rows.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Fleet on one machine: trials/s (share of ideal N/T), objective sleeps {args.sleep_ms:g} ms, "
                        f"{os.cpu_count()} CPUs")
    table.add_column("workers", justify="right")
    table.add_column("ideal", justify="right")
    for k in rows:
        table.add_column(k, justify="right")
    for n in counts:
        table.add_row(str(n), f"{ideal[n]:.1f}", *(f"{rows[k][n]:.1f} ({rows[k][n] / ideal[n]:.0%})" for k in rows))
    Console(width=140).print(table)
    Console(width=140).print("database server CPU in the window (cores of 2): " + ", ".join(
        f"{k} {v:.2f}" for k, v in report["database_server_cores"].items()))


if __name__ == "__main__":
    main()

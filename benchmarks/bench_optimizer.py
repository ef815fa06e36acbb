"""Optimizer speed, measured in one run against named baselines: a naive Optuna loop on SQLite,
Optuna's TPE on in-memory storage (the sampler's own cost), and vectorbt for a parameter sweep.

Prints:
1. per-trial overhead (everything but the backtest: sampler, storage, artifact, cache) of
   `genesis optimize` with 1 worker, default storage, TPE and tpe-batched, over --trials trials of the reference
   strategy on 2022 (8,756 1h bars), against the TPE-in-memory floor and the naive loop's;
2. end-to-end wall time of those trials with the default sampler (tpe-batched) with 1 and 2
   workers (free-running and reproducible batches), against the naive loop, next to two ceilings:
   two pure-Python loops at once, and two independent 1-worker studies at once; and 2 workers
   through the command line (`genesis optimize`, its progress bar drawn) against the API, each in
   a new process;
3. trials/s with 1, 2 and 4 workers on a throwaway PostgreSQL server through the path README
   recommends for fleets, `journal+postgresql://` (--pg-trials), interleaved; and a sweep of
   --pg-sweep-points points into it against the same sweep into the journal file, each in a fresh process;
4. `genesis sweep`: 10,000 Sobol points of the reference space (target <= 5 s), and an SMA
   crossover sweep against vectorbt's `MA.run_combs` over the same window pairs, each timed in a
   fresh process after one untimed run there (``in_fresh_process``).
Ratios between two contenders are measured interleaved (A B A B ..., --rounds rounds) and
reported as the median of the pairwise ratios, so a machine whose speed drifts does not skew them.
Two workers against one, the noisiest ratio (1.46x over three rounds, then 1.61-1.67x over eight,
in one hour; single pairs 1.66-1.85x within minutes on 2026-12-05, and six pairs' median 1.62x in a run
between fresh measurements of 1.74-1.86x), takes four times as many rounds; each lasts seconds.
Usage: python benchmarks/bench_optimizer.py [--trials 1000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)

from benchmarks.bench_backtest import versions
from genesis_core.backtest import Backtester
from genesis_core.optimizer import RunOptions, SweepOptions, optimize, sweep
from genesis_core.optimizer import _worker as worker_module
from genesis_core.scoring import score
from genesis_core.study import load_study_config
from genesis_core.workflow import checked
from tests.pgserver import fresh_database, server_bindir, throwaway_postgres

SPACE = {
    "thresholds.signal_adaptation.zones.low.entry_conf_overall": {"type": "float", "low": 0.5, "high": 0.62},
    "thresholds.signal_adaptation.zones.mid.entry_conf_overall": {"type": "float", "low": 0.5, "high": 0.62},
    "thresholds.signal_adaptation.zones.high.entry_conf_overall": {"type": "float", "low": 0.5, "high": 0.62},
    "thresholds.min_edge": {"type": "float", "low": 0.0, "high": 0.1},
    "exits.stop_loss_atr": {"type": "float", "low": 1.0, "high": 4.0},
    "exits.take_profit_atr": {"type": "float", "low": 1.0, "high": 6.0},
    "exits.max_bars_held": {"type": "int", "low": 6, "high": 96},
    "exits.exit_conf_threshold": {"type": "float", "low": 0.4, "high": 0.5},
    "gates.cooldown_bars": {"type": "int", "low": 0, "high": 12},
    "gates.ltf_override_threshold": {"type": "float", "low": 0.55, "high": 0.7},
}
SMA_WINDOWS = range(4, 94)  # every pair fast < slow of these: 4,005 configurations


def _config(tmp: Path, name: str, trials: int, space: dict | None = None, base: str = "configs/reference.yaml",
            **meta) -> Path:
    cfg = {
        "meta": {"base_config": str(ROOT / base), "data": str(ROOT / "data/BTCUSD_1h_bitfinex.csv.gz"),
                 "sample_start": "2022-01-01", "sample_end": "2022-12-31", "study_name": name,
                 "results_dir": str(tmp / name), "sampler": {"name": "tpe", "kwargs": {"seed": 1, "n_startup_trials": 25}},
                 "stop": {"max_trials": trials}, "duplicate_streak_limit": 10_000, **meta},
        "parameters": space or SPACE,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def interleaved(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[float, float, float]:
    """Run a, b, a, b ... (each returns its seconds): the median of each and the median of the
    pairwise ratios b / a."""
    pairs = [(a(), b()) for _ in range(rounds)]
    return (statistics.median(x for x, _ in pairs), statistics.median(y for _, y in pairs),
            statistics.median(y / x for x, y in pairs))


def tpe_floor_ms(trials: int) -> float:
    """Optuna's TPE on in-memory storage over the same space with a free objective: the sampler's own cost."""
    spec = load_study_config(_config(Path(tempfile.mkdtemp()), "floor", trials)).spec()

    def objective(trial: optuna.Trial) -> float:
        spec.space.suggest(trial)
        return sum(v for v in trial.params.values() if isinstance(v, float))

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=25), direction="maximize")
    t = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return (time.perf_counter() - t) / trials * 1e3


def _spin(barrier, out) -> None:  # type: ignore[no-untyped-def]
    barrier.wait()  # every process imported: the loops run at the same time
    t = time.perf_counter()
    x = 0
    for i in range(10_000_000):
        x += i * i % 7
    out.put(time.perf_counter() - t)


def machine_ceiling() -> float:
    """What two processes give over one on this machine with nothing shared: the same pure-Python
    loop alone, then in two processes at once (timed inside them, after their start-up); the
    throughput ratio, 2.0 being perfect scaling."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")

    def slowest(n: int) -> float:
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_spin, args=(barrier, out)) for _ in range(n)]
        for p in procs:
            p.start()
        times = [out.get() for _ in procs]
        for p in procs:
            p.join()
        return max(times)

    return 2 * slowest(1) / slowest(2)


def workload_ceiling(tmp: Path, trials: int) -> float:
    """What two workers of one study could give at best on this machine with this workload: one
    1-worker study alone, then two independent 1-worker studies at once (each its own folder,
    journal and cache: nothing shared but the machine), each in a forked process; the throughput
    ratio, 2.0 being perfect scaling. Unlike ``machine_ceiling`` it includes the memory, cache and
    disk traffic of the real objective."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")

    def wall(n: int) -> float:
        procs = [ctx.Process(target=genesis_run, args=(tmp, trials, 1)) for _ in range(n)]
        t = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        return time.perf_counter() - t

    return 2 * wall(1) / wall(2)


def naive_loop(tmp: Path, trials: int) -> tuple[float, float]:
    """The baseline: a plain Optuna loop over the same objective, SQLite storage, one process.
    Returns (wall seconds, seconds spent in backtests)."""
    spec = load_study_config(_config(tmp, f"naive{time.monotonic_ns()}", trials)).spec()
    bt = Backtester()
    spent = [0.0]

    def objective(trial: optuna.Trial) -> float:
        spec.space.suggest(trial)
        t = time.perf_counter()
        result = bt.run(spec.build(spec.space.trial_params(trial)))
        value = score(result.metrics, result.trace, spec.config.scoring, spec.config.constraints).production
        spent[0] += time.perf_counter() - t
        return value

    study = optuna.create_study(storage=f"sqlite:///{tmp / f'naive{time.monotonic_ns()}.db'}",
                                sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=25), direction="maximize")
    t = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - t, spent[0]


def genesis_run(tmp: Path, trials: int, workers: int, storage: str | None = None, parallel: str = "free",
                sampler: str = "tpe-batched", space: dict | None = None) -> tuple[float, float]:
    """`genesis optimize` (what the command runs, in this process). Returns (wall seconds, seconds
    spent in backtests: measured only with 1 worker, where the objective runs in this process)."""
    kwargs = {"seed": 1} if sampler == "random" else {"seed": 1, "n_startup_trials": 25}
    path = _config(tmp, f"g{workers}{parallel}{os.getpid()}-{time.monotonic_ns()}", trials, space, parallel=parallel,
                   sampler={"name": sampler, "kwargs": kwargs})
    spent = [0.0]
    measure = worker_module.measure

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return measure(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    worker_module.measure = timed
    try:
        t = time.perf_counter()
        summary = optimize(load_study_config(path).spec(storage), RunOptions(workers=workers))
        wall = time.perf_counter() - t
    finally:
        worker_module.measure = measure
    assert summary.cache.total_trials >= trials, summary
    return wall, spent[0] if workers == 1 else float("nan")


TWO_POINTS = {"gates.htf.enabled": {"type": "categorical", "choices": [True, False]}}


def cache_hit_ms(tmp: Path, trials: int) -> float:
    """A trial answered from the score cache, in ms: a 1-worker run of ``trials`` random trials over
    a space of two points (so all but two are duplicates), its two backtests taken out, per trial:
    the ask, the cache's answer, the tell and the trial's records."""
    wall, spent = genesis_run(tmp, trials, 1, sampler="random", space=TWO_POINTS)
    return (wall - spent) / trials * 1e3


def new_process_run(tmp: Path, trials: int, workers: int, command_line: bool) -> float:
    """A run in a new process, as a user's: `genesis optimize CONFIG --skip-preflight` with its
    progress bar drawn (its stderr a pipe), or the same config through ``optimize`` (``command_line``
    False). Returns the session's seconds from run.json. Both start cold (compiled kernels loaded
    from numba's cache, features read from disk: 0.33-0.36 s before a process's first backtest), so
    their ratio is what the command line alone adds; the API's figures above would not show it (its
    bar's thread once made every command-line run spawn its workers)."""
    name = f"new{workers}{command_line:d}-{time.monotonic_ns()}"
    path = _config(tmp, name, trials, parallel="free", sampler={"name": "tpe-batched", "kwargs": {"seed": 1, "n_startup_trials": 25}})
    if command_line:
        argv = ["-m", "genesis_core", "optimize", str(path), "--skip-preflight", "--workers", str(workers)]
    else:
        argv = ["-c", f"from genesis_core.optimizer import RunOptions, optimize; from genesis_core.study import load_study_config; "
                      f"optimize(load_study_config({str(path)!r}).spec(), RunOptions(workers={workers}))"]
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0 or (command_line and f"{trials}/{trials}" not in out.stderr):
        raise RuntimeError(f"the run failed or drew no bar:\n{out.stderr}")
    return float(json.loads((tmp / name / "runs" / name / "run.json").read_text())["sessions"][-1]["seconds"])


def reference_sweep(tmp: Path, points: int, storage: str | None = None) -> float:
    spec = load_study_config(_config(tmp, f"sweep{time.monotonic_ns()}", points)).spec(storage)
    t = time.perf_counter()
    summary = sweep(spec, SweepOptions("sobol", points=points, seed=0))
    assert summary.cache.unique_backtests > 0.99 * points, summary.session.notes
    return time.perf_counter() - t


def in_fresh_process(name: str, *args: Path | str | int) -> float:
    """Seconds of ``name(*args)`` (a function of this module) timed in a new
    process after one untimed call there, so imports, compiled kernels and data caches are warm, as
    for a user's command run the second time. Not in this process: by the sweeps it holds every
    earlier figure's leftovers (vectorbt's arrays among them), which a sweep's forked worker copies
    (the SMA sweep took 3.9 s here against 2.4 s in a fresh process)."""
    call = f"{name}({', '.join(f'Path({str(a)!r})' if isinstance(a, Path) else repr(a) for a in args)})"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from benchmarks.bench_optimizer import {name}; {call}; print({call})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed in its process:\n{out.stderr}")
    return float(out.stdout.split()[-1])


def sma_pairs() -> list[dict[str, int]]:
    return [{"fast": f, "slow": s} for f in SMA_WINDOWS for s in SMA_WINDOWS if f < s]


def genesis_sma_sweep(tmp: Path) -> float:
    space = {"fast": {"type": "int", "low": SMA_WINDOWS[0], "high": SMA_WINDOWS[-2]},
             "slow": {"type": "int", "low": SMA_WINDOWS[1], "high": SMA_WINDOWS[-1]}}
    spec = load_study_config(_config(tmp, f"sma{time.monotonic_ns()}", 1, space, "configs/sma_cross.yaml")).spec()
    pairs = sma_pairs()
    t = time.perf_counter()
    summary = sweep(spec, SweepOptions(), points=pairs)
    assert summary.cache.unique_backtests == len(pairs), summary.session.notes
    return time.perf_counter() - t


def vectorbt_sma_sweep() -> float:
    """vectorbt's own way to sweep SMA pairs: every pair of windows, portfolios from signals,
    filled at the next open with the same fee (it writes no artifacts and keeps no cache)."""
    import numpy as np
    import pandas as pd
    import vectorbt as vbt

    from genesis_core.backtest import build_config
    from genesis_core.config import read_config_file

    cfg = build_config(read_config_file(str(ROOT / "configs/sma_cross.yaml")))
    w = Backtester().plan(cfg).window
    c = w.candles
    index = pd.to_datetime(c.timestamps, unit="s")
    close, open_ = pd.Series(c.close, index), pd.Series(c.open, index)
    t = time.perf_counter()
    fast, slow = vbt.MA.run_combs(close, window=np.array(SMA_WINDOWS), r=2, short_names=["fast", "slow"])
    pf = vbt.Portfolio.from_signals(close, fast.ma_crossed_above(slow), fast.ma_crossed_below(slow), direction="both",
                                    fees=cfg.costs.fee_bps / 1e4, freq="1h", price=open_.shift(-1))
    returns = pf.total_return()
    assert len(returns) == len(sma_pairs())
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--pg-trials", type=int, default=300)
    ap.add_argument("--sweep-points", type=int, default=10_000)
    ap.add_argument("--pg-sweep-points", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each A/B comparison")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    tmp = Path(tempfile.mkdtemp(prefix="genesis-bench-"))
    n, f, r = args.trials, {}, {}
    try:
        # what `genesis optimize` checks first, once and untimed: a config it refuses (a window without its
        # warm-up bars) would otherwise be timed as a run of failed trials
        checked(load_study_config(_config(tmp, "preflight", n)), RunOptions(workers=2), None, skip_preflight=False)
        genesis_run(tmp, 30, 1)  # compile kernels, fill the feature cache
        f["tpe_floor_ms_per_trial"] = tpe_floor_ms(n)
        runs: dict[str, list[tuple[float, float]]] = {"naive": [], "g1": [], "g1_batched": []}
        for _ in range(args.rounds):  # interleaved: naive, genesis 1 worker (tpe, then tpe-batched), naive, ...
            runs["naive"].append(naive_loop(tmp, n))
            runs["g1"].append(genesis_run(tmp, n, 1, sampler="tpe"))
            runs["g1_batched"].append(genesis_run(tmp, n, 1))
        overhead = {k: [(wall - spent) / n * 1e3 for wall, spent in v] for k, v in runs.items()}
        f["genesis_1_worker_tpe_overhead_ms_per_trial"] = statistics.median(overhead["g1"])
        f["genesis_1_worker_tpe_batched_overhead_ms_per_trial"] = statistics.median(overhead["g1_batched"])
        f["naive_overhead_ms_per_trial"] = statistics.median(overhead["naive"])
        f["genesis_backtest_ms_per_trial"] = statistics.median(spent / n * 1e3 for _, spent in runs["g1"])
        f["genesis_1_worker_tpe_s"] = statistics.median(w for w, _ in runs["g1"])
        f["naive_sqlite_loop_s"] = statistics.median(w for w, _ in runs["naive"])
        r["overhead, tpe / 5 ms target (<= 1 meets it)"] = f["genesis_1_worker_tpe_overhead_ms_per_trial"] / 5.0
        r["overhead, tpe / TPE-in-memory floor"] = f["genesis_1_worker_tpe_overhead_ms_per_trial"] / f["tpe_floor_ms_per_trial"]
        r["overhead, tpe-batched / 5 ms target (<= 1 meets it)"] = f["genesis_1_worker_tpe_batched_overhead_ms_per_trial"] / 5.0
        for key, label in (("g1", "tpe"), ("g1_batched", "tpe-batched")):
            r[f"speed-up 1 worker ({label}) vs naive loop (interleaved)"] = statistics.median(
                nv[0] / g[0] for nv, g in zip(runs["naive"], runs[key], strict=True))

        f["cache_hit_ms_per_trial"] = statistics.median(cache_hit_ms(tmp, n) for _ in range(args.rounds))
        r["cache hit / 1 ms target (<= 1 meets it)"] = f["cache_hit_ms_per_trial"] / 1.0

        one, two, ratio = interleaved(lambda: genesis_run(tmp, n, 1)[0], lambda: genesis_run(tmp, n, 2)[0], 4 * args.rounds)
        f["genesis_1_worker_s"], f["genesis_2_workers_s"] = one, two
        r[f"2 workers vs 1 ({4 * args.rounds} interleaved rounds; target >= 1.8)"] = 1 / ratio
        r["machine ceiling: 2 independent pure-Python processes vs 1 (median of rounds)"] = statistics.median(
            machine_ceiling() for _ in range(args.rounds))
        r["workload ceiling: 2 independent 1-worker studies at once vs 1 alone (median of rounds)"] = statistics.median(
            workload_ceiling(tmp, n) for _ in range(args.rounds))
        r["speed-up 2 workers vs naive loop"] = f["naive_sqlite_loop_s"] / two
        api, cli, ratio = interleaved(lambda: new_process_run(tmp, n, 2, False), lambda: new_process_run(tmp, n, 2, True), args.rounds)
        f["genesis_2_workers_new_process_api_s"], f["genesis_2_workers_new_process_command_line_s"] = api, cli
        r["command line / API, 2 workers, each in a new process (sessions' seconds; interleaved)"] = ratio
        _, repro, ratio = interleaved(lambda: genesis_run(tmp, n, 2)[0],
                                      lambda: genesis_run(tmp, n, 2, parallel="reproducible")[0], args.rounds)
        f["genesis_2_workers_reproducible_s"] = repro
        r["reproducible batches / free-running, 2 workers (wall)"] = ratio
        r["reproducible batches, 2 workers / 1 worker (medians; the reason the bundled config runs one)"] = repro / one

        # before the sweeps: their features stay in this process, whose forked workers would copy a larger heap
        bindir = server_bindir()
        if bindir is not None and args.pg_trials:
            rates: dict[int, list[float]] = {1: [], 2: [], 4: []}
            with throwaway_postgres(bindir) as server:
                for _ in range(args.rounds):  # interleaved: 1, 2, 4 workers, 1, 2, 4 ... (a run lasts seconds)
                    for w, got in rates.items():
                        got.append(args.pg_trials / genesis_run(tmp, args.pg_trials, w, "journal+" + fresh_database(server.url))[0])
                points = args.pg_sweep_points  # a sweep into the database against the same sweep into the journal file
                file_s, database_s, ratio = interleaved(
                    lambda: in_fresh_process("reference_sweep", tmp, points),
                    lambda: in_fresh_process("reference_sweep", tmp, points, "journal+" + fresh_database(server.url)), args.rounds)
            for w, got in rates.items():
                f[f"postgres_{w}_workers_trials_per_s"] = statistics.median(got)
            for w in (2, 4):
                r[f"postgres {w} workers / 1 worker (interleaved)"] = statistics.median(
                    many / one for many, one in zip(rates[w], rates[1], strict=True))
            f[f"sweep_{points}_journal_file_s"], f[f"sweep_{points}_journal_postgresql_s"] = file_s, database_s
            r[f"sweep of {points:,} points into journal+postgresql / into the journal file (interleaved)"] = ratio

        f["sweep_reference_s"] = statistics.median(in_fresh_process("reference_sweep", tmp, args.sweep_points)
                                                   for _ in range(args.rounds))
        f["sweep_reference_configs_per_s"] = args.sweep_points / f["sweep_reference_s"]
        r[f"sweep of {args.sweep_points:,} reference configs / 5 s target (<= 1 meets it)"] = f["sweep_reference_s"] / 5.0
        vbt_s, ours_s, ratio = interleaved(lambda: in_fresh_process("vectorbt_sma_sweep"),
                                           lambda: in_fresh_process("genesis_sma_sweep", tmp), args.rounds)
        f[f"sma_sweep_{len(sma_pairs())}_configs_genesis_s"] = ours_s
        f[f"sma_sweep_{len(sma_pairs())}_configs_vectorbt_s"] = vbt_s
        r["SMA sweep: speed-up vs vectorbt (interleaved; target >= 5)"] = 1 / ratio

    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {"trials": n, "rounds": args.rounds, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "versions": versions("optuna", "numpy", "pandas", "numba", "vectorbt"),
              "figures": {k: round(v, 3) for k, v in f.items()}, "ratios": {k: round(v, 2) for k, v in r.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Optimizer benchmark ({n} TPE trials, {args.rounds} interleaved rounds; {os.cpu_count()} CPUs)")
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in report["figures"].items():
        table.add_row(k, f"{v:,.3f}")
    for k, v in report["ratios"].items():
        table.add_row(f"[bold]{k}[/]", f"{v:.2f}")
    table.caption = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    Console(width=120).print(table)


if __name__ == "__main__":
    main()

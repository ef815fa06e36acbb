"""Optimizer speed, measured in one run against a named baseline: a naive Optuna loop on SQLite.

Prints:
1. overhead per trial (sampler + storage) with a trivial objective, TPE, for RDB on SQLite (the
   naive baseline), the journal file (Genesis-Core's default) and in-memory storage (the sampler's
   own cost, the floor any storage adds to), at --trials trials;
2. the reference strategy on one year of 1h bars: the naive loop (SQLite, one process, no cache,
   no artifacts) vs `genesis optimize` with 2 workers, trials/s and wall time (target: 1,000
   trials in <= 30 s);
3. trials/s with 1, 2 and 4 workers on a throwaway PostgreSQL server.
Usage: python benchmarks/bench_optimizer.py [--trials 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)

from genesis_core.backtest import Backtester, build_config, read_config_file
from genesis_core.optimizer import RunOptions, open_storage, optimize
from genesis_core.scoring import score
from genesis_core.study import load_study_config
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


def _config(tmp: Path, name: str, trials: int, **meta) -> Path:
    cfg = {
        "meta": {"base_config": str(ROOT / "configs/reference.yaml"), "data": str(ROOT / "data/BTCUSD_1h_bitfinex.csv.gz"),
                 "sample_start": "2022-01-01", "sample_end": "2022-12-31", "study_name": name,
                 "results_dir": str(tmp / name), "sampler": {"name": "tpe", "kwargs": {"seed": 1, "n_startup_trials": 25}},
                 "stop": {"max_trials": trials}, "duplicate_streak_limit": 10_000, **meta},
        "parameters": SPACE,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def trivial_overhead_ms(storage: optuna.storages.BaseStorage, trials: int) -> float:
    def objective(trial: optuna.Trial) -> float:
        return sum(trial.suggest_float(f"x{i}", 0, 1) for i in range(8)) + trial.suggest_int("k", 1, 50)

    study = optuna.create_study(storage=storage, sampler=optuna.samplers.TPESampler(seed=1), direction="maximize")
    t = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return (time.perf_counter() - t) / trials * 1e3


def naive_reference_loop(tmp: Path, trials: int) -> float:
    """The baseline: a plain Optuna loop over the same objective, SQLite storage, one process."""
    spec = load_study_config(_config(tmp, "naive", trials)).spec()
    bt = Backtester()

    def objective(trial: optuna.Trial) -> float:
        spec.space.suggest(trial)
        result = bt.run(build_config(spec.base, None, spec.overrides, spec.space.trial_params(trial)))
        return score(result.metrics, result.trace, spec.config.scoring, spec.config.constraints).phase2

    study = optuna.create_study(storage=f"sqlite:///{tmp / 'naive.db'}", sampler=optuna.samplers.TPESampler(seed=1),
                                direction="maximize")
    t = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - t


def genesis_run(tmp: Path, name: str, trials: int, workers: int, storage: str | None = None, parallel: str = "free") -> float:
    path = _config(tmp, name, trials, parallel=parallel)
    t = time.perf_counter()
    summary = optimize(load_study_config(path).spec(storage), RunOptions(workers=workers))  # what `genesis optimize` runs
    assert summary.cache.total_trials >= trials, summary
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--pg-trials", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    tmp = Path(tempfile.mkdtemp(prefix="genesis-bench-"))
    n, f = args.trials, {}
    try:
        Backtester().run(build_config(read_config_file("configs/reference.yaml")))  # compile kernels once
        f["overhead_ms_per_trial_sqlite_rdb"] = trivial_overhead_ms(optuna.storages.RDBStorage(f"sqlite:///{tmp / 'o.db'}"), n)
        f["overhead_ms_per_trial_journal"] = trivial_overhead_ms(open_storage(f"journal:///{tmp / 'o.journal'}"), n)
        f["overhead_ms_per_trial_sampler_only_in_memory"] = trivial_overhead_ms(optuna.storages.InMemoryStorage(), n)
        f["naive_sqlite_loop_s"] = naive_reference_loop(tmp, n)
        f["genesis_2_workers_s"] = genesis_run(tmp, "g2", n, 2)
        f["genesis_2_workers_reproducible_s"] = genesis_run(tmp, "g2r", n, 2, parallel="reproducible")
        f["naive_trials_per_s"] = n / f["naive_sqlite_loop_s"]
        f["genesis_2_workers_trials_per_s"] = n / f["genesis_2_workers_s"]
        bindir = server_bindir()
        if bindir is not None:
            with throwaway_postgres(bindir) as server:
                for w in (1, 2, 4):
                    seconds = genesis_run(tmp, f"pg{w}", args.pg_trials, w, fresh_database(server.url))
                    f[f"postgres_{w}_workers_trials_per_s"] = args.pg_trials / seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = {
        "journal overhead / 10 ms target (<= 1 meets it)": f["overhead_ms_per_trial_journal"] / 10.0,
        "speed-up of journal over sqlite overhead": f["overhead_ms_per_trial_sqlite_rdb"] / f["overhead_ms_per_trial_journal"],
        "TPE sampler alone / 10 ms target": f["overhead_ms_per_trial_sampler_only_in_memory"] / 10.0,
        f"genesis 2 workers {n} trials wall / 30 s target (<= 1 meets it)": f["genesis_2_workers_s"] * 1000 / n / 30.0,
        "speed-up vs naive Optuna+SQLite loop": f["genesis_2_workers_trials_per_s"] / f["naive_trials_per_s"],
        "cost of reproducible batches: 2 workers reproducible / free wall time": f["genesis_2_workers_reproducible_s"]
        / f["genesis_2_workers_s"],
    }
    if "postgres_1_workers_trials_per_s" in f:
        for w in (2, 4):
            ratios[f"postgres {w} workers / 1 worker"] = f[f"postgres_{w}_workers_trials_per_s"] / f["postgres_1_workers_trials_per_s"]
    report = {"trials": n, "cpus": os.cpu_count(), "figures": {k: round(v, 3) for k, v in f.items()},
              "ratios": {k: round(v, 2) for k, v in ratios.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Optimizer benchmark ({n} TPE trials; {os.cpu_count()} CPUs)")
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in report["figures"].items():
        table.add_row(k, f"{v:,.3f}")
    for k, v in report["ratios"].items():
        table.add_row(f"[bold]{k}[/]", f"{v:.2f}")
    Console(width=110).print(table)


if __name__ == "__main__":
    main()

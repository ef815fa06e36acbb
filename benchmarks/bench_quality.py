"""Search quality per second: which sampler finds better parameters, out of sample too, for the time it takes.

For each sampler and seed, one run of --trials trials on the reference space
(configs/optimize_reference.yaml) on its 2022 explore window, told each trial's production score
(in-memory storage: this measures the samplers, not the storage); at 100, 300 and --trials trials
the best explore score so far and the out-of-sample score on 2023 of that explore-best config.
Prints per sampler and budget the median over seeds, with the sampler's own seconds (ask and tell,
backtests excluded) and the wall time of the whole run. Runs spread over every core.
Usage: python benchmarks/bench_quality.py [--trials 1000] [--seeds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)

from genesis_core.optimizer import SAMPLERS

CONFIG = ROOT / "configs" / "optimize_reference.yaml"
OUT_OF_SAMPLE = ("2023-01-01", "2023-12-31")
CONTENDERS: dict[str, Any] = {  # as a config's meta.sampler {name, kwargs} makes them
    "tpe (Optuna defaults)": lambda seed: SAMPLERS["tpe"](seed=seed),
    "tpe, 25 random first": lambda seed: SAMPLERS["tpe"](seed=seed, n_startup_trials=25),
    "tpe-batched, 25 random first": lambda seed: SAMPLERS["tpe-batched"](seed=seed, n_startup_trials=25),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=25, warn_independent_sampling=False),
    "qmc (Sobol)": lambda seed: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def one_run(sampler: str, seed: int, trials: int, budgets: list[int]) -> dict[str, Any]:
    """One seeded run: per budget, the best explore score, its out-of-sample score, the sampler's seconds."""
    os.chdir(ROOT)
    from genesis_core.backtest import Backtester
    from genesis_core.scoring import score
    from genesis_core.study import load_study_config

    spec = load_study_config(CONFIG).spec()
    bt = Backtester()
    scoring, constraints = spec.config.scoring, spec.config.constraints

    def production(params: dict[str, Any], window: tuple[str, str] | None = None) -> float:
        config = spec.build(params)
        if window is not None:
            config = config.model_copy(update={"data": config.data.model_copy(update={"start": window[0], "end": window[1]})})
        result = bt.run(config)
        return score(result.metrics, result.trace, scoring, constraints).production

    study = optuna.create_study(sampler=CONTENDERS[sampler](seed), direction="maximize")
    sampling = 0.0
    best: tuple[float, dict[str, Any]] | None = None
    out: dict[str, Any] = {"sampler": sampler, "seed": seed, "budgets": {}}
    t0 = time.perf_counter()
    for n in range(1, trials + 1):
        t = time.perf_counter()
        trial = study.ask()
        spec.space.suggest(trial)
        params = spec.space.trial_params(trial)
        sampling += time.perf_counter() - t
        value = production(params)
        t = time.perf_counter()
        study.tell(trial, value)
        sampling += time.perf_counter() - t
        if best is None or value > best[0]:
            best = (value, params)
        if n in budgets:
            out["budgets"][n] = {"explore": best[0], "oos_2023": production(best[1], OUT_OF_SAMPLE),
                                 "sampler_s": sampling, "wall_s": time.perf_counter() - t0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    budgets = sorted({b for b in (100, 300, args.trials) if b <= args.trials})
    jobs = [(s, seed, args.trials, budgets) for s in CONTENDERS for seed in range(args.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        runs = list(pool.map(one_run, *zip(*jobs, strict=True)))
    rows = []
    for s in CONTENDERS:
        mine = [r for r in runs if r["sampler"] == s]
        for b in budgets:
            cells = [r["budgets"][b] for r in mine]
            rows.append({"sampler": s, "trials": b, **{k: statistics.median(c[k] for c in cells)
                                                        for k in ("explore", "oos_2023", "sampler_s", "wall_s")}})
    report = {"trials": args.trials, "seeds": args.seeds, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Search quality: reference space, explore 2022, out of sample 2023; median of {args.seeds} seeds")
    for col in ("sampler", "trials", "best explore score", "its 2023 score", "sampler s", "run wall s"):
        table.add_column(col, justify="left" if col == "sampler" else "right")
    for row in rows:
        table.add_row(row["sampler"], str(row["trials"]), f"{row['explore']:.2f}", f"{row['oos_2023']:.2f}",
                      f"{row['sampler_s']:.1f}", f"{row['wall_s']:.1f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()

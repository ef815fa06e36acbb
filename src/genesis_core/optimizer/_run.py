"""Running a study: the resume guard, worker processes, signals, progress, then the run's records."""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from genesis_core.backtest import Backtester
from genesis_core.data import parse_ts
from genesis_core.errors import ConfigError
from genesis_core.optimizer._config import OptimizerConfig
from genesis_core.optimizer._results import RunSummary, best_score, record_results
from genesis_core.optimizer._storage import open_storage, recover_stale_trials
from genesis_core.optimizer._study import StudySpec, check_signature
from genesis_core.optimizer._worker import FINISHED, Worker
from genesis_core.records import PreflightRecord, PreflightSkipped, Session, iso

optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are counted in the summary and trials.csv
# heartbeats and stale-trial retry are marked experimental but are what makes a killed worker recoverable
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
PROGRESS_INTERVAL = 0.25  # seconds between progress reports (each reads the study's trials)


@dataclass(frozen=True)
class RunOptions:
    workers: int | None = None
    max_trials: int | None = None
    force_resume: bool = False
    backfill_signature: bool = False
    preflight: PreflightRecord | PreflightSkipped | None = None  # what preflight said before this session (recorded in run.json)


@dataclass(frozen=True)
class Progress:
    """This session's progress, for a progress bar."""

    completed: int
    total: int
    rate: float  # trials per second
    best: float | None  # best production score of the study so far
    hit_rate: float  # share of this session's trials answered from the cache


OnProgress = Callable[[Progress], None]


def _worker_process(spec: StudySpec, n_trials: int, max_trials: int | None, timeout: float | None, cwd: str, index: int) -> None:
    os.chdir(cwd)
    worker = Worker(spec, max_trials, index)
    with worker.stopping_on_sigint():
        worker.run(n_trials, timeout)


def _deadline(cfg: OptimizerConfig) -> float | None:
    limits = []
    if cfg.meta.stop.timeout_seconds is not None:
        limits.append(cfg.meta.stop.timeout_seconds)
    if cfg.meta.stop.end_at is not None:
        limits.append(parse_ts(cfg.meta.stop.end_at) - time.time())
    return min(limits) if limits else None


def optimize(spec: StudySpec, options: RunOptions = RunOptions(), on_progress: OnProgress | None = None) -> RunSummary:
    """Run (or resume) the study of ``spec``; write the run's records; return this session's summary."""
    clock = spec.folder.clock
    started = clock()
    cfg = spec.config
    storage = open_storage(spec.storage_url, cfg.meta.stale_trial_seconds)
    optuna_study = optuna.create_study(storage=storage, study_name=spec.name, direction="maximize",
                                       load_if_exists=True, sampler=spec.sampler(), pruner=spec.pruner())
    data_fp = Backtester().candles(spec.fixed.data.path, spec.fixed.data.timeframe).fingerprint
    notes = check_signature(optuna_study, spec, data_fp, options.force_resume, options.backfill_signature)
    recovered = recover_stale_trials(optuna_study, cfg.meta.stale_trial_seconds)
    if recovered:
        notes.append(f"{recovered} trial(s) left running by a stopped worker were failed and queued again")
    max_trials = options.max_trials or cfg.meta.stop.max_trials
    done = len(optuna_study.get_trials(deepcopy=False, states=FINISHED))
    remaining = max(0, max_trials - done) if max_trials else 10**9
    workers = options.workers or cfg.meta.n_workers
    timeout = _deadline(cfg)
    if max_trials is None and timeout is None:
        raise ConfigError("meta.stop: set max_trials, timeout_seconds or end_at, or the run never ends")
    shares = [remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_process, args=(spec, n, max_trials, timeout, os.getcwd(), i))
             for i, n in enumerate(shares) if i > 0 and n > 0]
    for p in procs:
        p.start()
    worker = Worker(spec, max_trials)
    worker.children = procs
    report = None if on_progress is None else _reporter(optuna_study, remaining, on_progress)
    with worker.stopping_on_sigint():
        if shares[0] > 0:
            worker.run(shares[0], timeout, report)
        for p in procs:
            p.join()
    if report is not None:
        report(True)
    finished = clock()
    session = Session(
        started=iso(started), finished=iso(finished), seconds=round(finished - started, 3),
        workers=workers, max_trials=max_trials, interrupted=worker.interrupted, stopped_reason=worker.stopped_reason,
        widened=worker.widened, notes=notes,
        failed_workers=[p.exitcode for p in procs if p.exitcode not in (0, None) and not worker.interrupted],
        preflight=options.preflight,
    )
    return record_results(spec, optuna_study, session)


def _reporter(optuna_study: optuna.Study, total: int, on_progress: OnProgress) -> Callable[..., None]:
    """A callback that reports this session's progress at most every PROGRESS_INTERVAL seconds (always when forced)."""
    start_n = len(optuna_study.get_trials(deepcopy=False))
    t0 = time.time()
    last = [0.0]

    def report(force: bool = False) -> None:
        now = time.time()
        if not force and now - last[0] < PROGRESS_INTERVAL:
            return
        last[0] = now
        trials = optuna_study.get_trials(deepcopy=False)
        mine = [t for t in trials[start_n:] if t.state.is_finished()]
        hits = sum(1 for t in mine if t.user_attrs.get("cached"))
        on_progress(Progress(len(mine), total, len(mine) / max(now - t0, 1e-9), best_score(trials), hits / max(len(mine), 1)))

    return report

"""Running a study: the resume guard, worker processes, signals, progress, then the run's records."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from genesis_core.backtest import CACHE, Backtester
from genesis_core.errors import ConfigError, GenesisError, report_crashes
from genesis_core.files import sync_all
from genesis_core.optimizer._batch import Measurers, run_batched
from genesis_core.optimizer._results import RunSummary, best_score, record_results
from genesis_core.optimizer._storage import (
    CRASHES,
    ScoreCache,
    StorageUnavailable,
    cache_url,
    check_clock,
    died_of,
    fail_crashed,
    finished_in,
    open_storage,
    orphan_age,
    read_now,
    recover_stale_trials,
    trial_count,
)
from genesis_core.optimizer._study import StudySpec, check_signature
from genesis_core.optimizer._worker import (
    EVALUATED,
    RESUME_STRIDE,
    SEED_STRIDE,
    Worker,
    evaluated,
    mend_records,
    process_context,
    quietly,
    settled_heap,
)
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
    deaf_once_stopped: bool = False  # ignore SIGINT and SIGTERM for good once one stopped the session (see stopping_on_signals)
    # asked after each trial: a reason (an MCP client cancelled the call) stops the session as a Ctrl-C
    # does, where no signal reaches a run in a server's thread
    stop_asked: Callable[[], str | None] | None = None

    def __post_init__(self) -> None:
        at_least_one("--workers", self.workers)
        at_least_one("--max-trials", self.max_trials)


def at_least_one(option: str, value: int | None) -> None:
    """A count given on the command line (or by an API caller) that must be 1 or more when given:
    0 or less would run nothing, or be recorded as the session's."""
    if value is not None and value < 1:
        raise ConfigError(f"{option} must be 1 or more, not {value}")


@dataclass(frozen=True)
class Progress:
    """This session's progress, for a progress bar."""

    completed: int  # trials evaluated this session (COMPLETE or PRUNED), as the budget counts them
    total: int | None  # None: no trial budget (a deadline ends the run)
    rate: float  # trials per second
    best: float | None  # best production score of the study so far
    hit_rate: float  # share of this session's trials answered from the cache


OnProgress = Callable[[Progress], None]


def _worker_process(spec: StudySpec, max_trials: int | None, timeout: float | None, cwd: str, index: int) -> None:
    """A worker process: it starts with SIGINT and SIGTERM ignored (see ``_start``) and handles them
    from here on, so no signal ever ends it with a traceback or in the middle of a trial."""
    os.chdir(cwd)
    report_crashes()  # a spawned process starts without it
    try:
        worker = Worker(spec, max_trials, index)
        with worker.stopping_on_signals():
            worker.run(timeout)
    except StorageUnavailable:
        sys.exit(3)  # the main process meets the same database and says why, once
    except GenesisError as exc:
        sys.stderr.write(f"worker {index}: {exc}\n")
        sys.exit(exc.exit_code)
    # its trials are told and on disk (``Worker.committing``): nothing is left to write, and the
    # interpreter's teardown of the modules (numba, pandas, SQLAlchemy) took half a second the session waited for
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _join(procs: Sequence[multiprocessing.process.BaseProcess], worker: Worker) -> None:
    """Wait for every worker process; once this one was asked to stop, pass the signal on (again
    every half second: a child still starting up ignores it until its handlers are in place).
    """
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(timeout=0.5 / len(procs))
            if worker.interrupted is not None and p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, worker.interrupted)


WORKERS_REPLACED = 100  # crashed worker processes a session starts again at most (a strategy that crashes that often needs mending)


def _crashed(procs: Sequence[multiprocessing.process.BaseProcess], optuna_study: optuna.Study, said: set[int],
             replace: Callable[[], None] | None = None) -> list[str]:
    """A note for each worker process a crash signal ended (not said before: ``said``), whose trial
    in flight is failed for good (``fail_crashed``): queued again, this process would run it next.
    With ``replace``, one that finished a trial before is started again by it: a free worker that
    crashed left the run to the others for good, one fewer at each crash of a region of the space,
    down to this process alone. One that crashed on its first trial is not (a crash of any worker
    process's, which a new one would repeat), nor one past ``WORKERS_REPLACED`` of the session."""
    notes = []
    for p in list(procs):
        if p.pid is None or p.pid in said or p.exitcode is None or -p.exitcode not in CRASHES:
            continue
        said.add(p.pid)
        numbers = fail_crashed(optuna_study, p.pid, p.exitcode)
        again = False
        if replace is not None and len(said) <= WORKERS_REPLACED and finished_in(optuna_study, p.pid) > 0:
            replace()
            again = True
        died = f"worker process {p.pid} died of {died_of(p.exitcode)}"
        notes.append(died + (f" evaluating trial(s) {numbers}, failed with that reason and not queued again (the same "
                             "parameters would crash a worker again)" if numbers else "") +
                     "; where, Python's faulthandler wrote to stderr; " +
                     ("a new worker process took its place" if again else "the other workers went on"))
    return notes


def _start_all(procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for p in procs:
        p.start()


def _stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker, so no process of this run outlives it."""
    stop_tracker = getattr(resource_tracker._resource_tracker, "_stop", None)  # private, so looked up with care
    if stop_tracker is not None:
        stop_tracker()


def _await_orphans(optuna_study: optuna.Study, retry_seconds: float) -> None:
    """Wait until trials that never recorded their worker (cut off by a lost connection) are old
    enough to be recovered as orphans, so a short budget can be completed in this session."""
    starts = [t.datetime_start.timestamp() for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
              if "worker" not in t.user_attrs and t.datetime_start is not None]
    if starts:
        time.sleep(max(0.0, max(starts) + orphan_age(retry_seconds) + 0.1 - time.time()))


def _timed_out(started: float, timeout: float | None, clock: Callable[[], float]) -> bool:
    return timeout is not None and clock() - started >= timeout


def optimize(spec: StudySpec, options: RunOptions = RunOptions(), on_progress: OnProgress | None = None) -> RunSummary:
    """Run (or resume) the study of ``spec``; write the run's records; return this session's summary."""
    clock = spec.folder.clock
    started = clock()
    cfg = spec.config
    refusal = cfg.meta.stop.refusal(options.max_trials, time.time())  # before the study exists: a refused run leaves none
    if refusal:
        raise ConfigError(refusal)
    candles = Backtester(CACHE).candles(spec.fixed)  # cached for the workers
    storage = open_storage(spec.storage_url, cfg.meta.stale_trial_seconds, cfg.meta.storage_retry_seconds, proxy=cfg.meta.proxy)
    check_clock(spec.storage_url, cfg.meta.stale_trial_seconds, cfg.meta.storage_retry_seconds, cfg.meta.proxy)
    optuna_study = optuna.create_study(storage=storage, study_name=spec.name, direction="maximize",
                                       load_if_exists=True, sampler=spec.sampler(), pruner=spec.pruner())
    notes = check_signature(optuna_study, spec, candles, options.force_resume, options.backfill_signature)
    found = trial_count(optuna_study)
    if cfg.meta.proxy is not None:
        notes.append(f"the study's calls went through the gRPC storage proxy at {cfg.meta.proxy}")
    spec.folder.remove_stale_temporaries()
    dead = recover_stale_trials(optuna_study, cfg.meta.stale_trial_seconds, cfg.meta.storage_retry_seconds)
    cache = ScoreCache(cache_url(spec.storage_url), cfg.meta.stale_trial_seconds, cfg.meta.storage_retry_seconds)
    if dead.failed:
        cache.release_trials(spec.name, dead.failed)
    if dead.queued:
        notes.append(f"{len(dead.queued)} trial(s) left running by a stopped worker were failed and queued again: {dead.queued}")
    notes += dead.dropped_notes()
    if dead.gone:
        notes.append(f"the process of an earlier session died evaluating trial(s) {dead.gone} (a crash, memory run out or a kill: "
                     "a crash printed its stack): this session measures each trial in a process of its own, so that a crash "
                     "fails its trial and the run goes on")
    notes += mend_records(spec, optuna_study, cache)
    max_trials = options.max_trials or cfg.meta.stop.max_trials
    done = evaluated(optuna_study)
    remaining = None if max_trials is None else max(0, max_trials - done)
    if remaining == 0:
        notes.append(f"the study's {done:,} evaluated trials meet its budget of {max_trials:,} already (meta.stop.max_trials, "
                     f"or --max-trials): no trial was run; a larger budget goes on from them")
    workers = options.workers or cfg.meta.n_workers
    timeout = cfg.meta.stop.seconds_left(time.time())
    n_procs = workers if remaining is None else min(workers, remaining)
    # a session alone takes slot 0; one joining a running study, from here or elsewhere, another slot,
    # and so other sampler seeds than the sessions already at work
    slot = cache.join(spec.name, max(cfg.meta.stale_trial_seconds, orphan_age(cfg.meta.storage_retry_seconds)))
    served = threading.current_thread() is not threading.main_thread()  # a server's run (MCP): a crash would end the server
    plan = _Plan(started, notes, max_trials, remaining, workers, n_procs, timeout, slot, found, isolated=bool(dead.gone) or served)
    try:
        return _run_session(spec, optuna_study, options, cache, plan, on_progress)
    finally:
        with contextlib.suppress(StorageUnavailable, sa.exc.SQLAlchemyError):
            cache.leave(spec.name, slot)  # if the database is away, the slot frees itself once this process is gone


@dataclass
class _Plan:
    """What a session was set up with: when it started, its notes so far, the budget, its workers, its slot."""

    started: float
    notes: list[str]
    max_trials: int | None
    remaining: int | None  # of the budget, when the session started
    workers: int
    n_procs: int  # worker processes to run (fewer than workers when little of the budget is left)
    timeout: float | None
    slot: int
    found: int  # trials in the study when the session started
    # each trial measured in a process of its own (``Measurers``), after an earlier session's process died mid-trial
    # (with one worker the trials ran in the run's process, and a crash that repeats ended every run in turn), or off
    # the main thread: a server's process ran them, and a crash of a trial's compiled code ended the server
    isolated: bool = False


def _run_session(spec: StudySpec, optuna_study: optuna.Study, options: RunOptions, cache: ScoreCache, plan: _Plan,
                 on_progress: OnProgress | None) -> RunSummary:
    """The workers of one session: started, run in rounds, joined; then the session's record."""
    cfg, clock = spec.config, spec.folder.clock
    started, notes, max_trials, timeout, n_procs = plan.started, plan.notes, plan.max_trials, plan.timeout, plan.n_procs
    # worker i of the session uses sampler seed + first + i. A seeded study resumed with the seeds of its
    # first session drew their random numbers again: a random sampler's (and TPE's start-up, and the
    # feasibility phase's) proposals were the first session's, answered from the cache one after
    # another until the duplicate streak stopped the run, 'the space looks exhausted'
    first = SEED_STRIDE * plan.slot + RESUME_STRIDE * plan.found
    ctx = process_context(spec)
    batched = (spec.reproducible and n_procs > 1) or plan.isolated
    procs = [] if batched else [ctx.Process(target=_worker_process, args=(spec, max_trials, timeout, os.getcwd(), first + i))
                                for i in range(1, n_procs)]
    pool = Measurers(spec, n_procs if plan.isolated else n_procs - 1, plan.isolated) if batched else None
    # the session's storage, read once in this process (through a proxy a worker's calls wait longer for it: its own)
    storage = optuna_study._storage if cfg.meta.proxy is None else None
    worker = Worker(spec, max_trials, first, session=(cache, plan.slot), storage=storage)
    progress = None if on_progress is None else _reporter(optuna_study, plan.remaining, on_progress)

    lost: StorageUnavailable | None = None
    crashed: set[int] = set()  # worker processes whose crash was said (``_crashed``)
    replaced = 0

    def replace() -> None:
        """A worker process in a crashed one's place, with a sampler seed of its own and the time left."""
        nonlocal replaced
        left = None if timeout is None else max(0.0, timeout - (clock() - started))
        procs.append(ctx.Process(target=_worker_process, args=(spec, max_trials, left, os.getcwd(), first + n_procs + replaced)))
        replaced += 1
        quietly(procs[-1].start)

    def report(force: bool = False) -> None:
        if progress is not None:
            progress(force)
        why = None if options.stop_asked is None or worker.interrupted is not None else options.stop_asked()
        if why is not None:  # the trials in flight finish; worker processes are passed the signal (_join)
            worker.interrupted, worker.stopped_reason = signal.SIGINT, why
        if procs and worker.interrupted is None and worker.stopped_reason is None:
            notes.extend(_crashed(procs, optuna_study, crashed, replace))
    # both through the records below: a second Ctrl-C cannot cut them short, and the heap is frozen
    # before the workers fork (thawed after the records): a forked worker's first full collection
    # then leaves what it inherited alone, instead of touching every object and so copying every page
    # of this process's heap into its own
    with worker.stopping_on_signals(options.deaf_once_stopped), settled_heap():
        quietly(lambda: _start_all(pool.procs if pool is not None else procs))
        try:
            for _ in range(3):  # a round ends when the budget is met, or short only by trials orphaned or crashed meanwhile
                if n_procs > 0 and worker.interrupted is None and worker.stopped_reason is None:
                    worker.budget_reached = False
                    left = None if timeout is None else max(0.0, timeout - (clock() - started))
                    if pool is not None:
                        run_batched(worker, pool, n_procs, left, report)
                    else:
                        worker.run(left, report)
                if _timed_out(started, timeout, clock) or worker.interrupted is not None or worker.stopped_reason:
                    break
                _join(procs, worker)
                notes += _crashed(procs, optuna_study, crashed)
                if max_trials is not None and evaluated(optuna_study) < max_trials:
                    _await_orphans(optuna_study, cfg.meta.storage_retry_seconds)
                orphans = recover_stale_trials(optuna_study, cfg.meta.stale_trial_seconds, cfg.meta.storage_retry_seconds)
                if orphans.queued:
                    notes.append(f"{len(orphans.queued)} trial(s) orphaned during the run (a lost connection) were failed and "
                                 f"queued again: {orphans.queued}")
                notes += orphans.dropped_notes()
                if max_trials is None or evaluated(optuna_study) >= max_trials or not (orphans.queued or crashed):
                    break  # else this process runs another round: a crashed worker's trial had held a place in the budget
        except StorageUnavailable as exc:
            lost = exc  # the workers meet the same database: wait for them, then say it once
        finally:
            if pool is not None:
                pool.close()
                notes += pool.notes
        _join(procs, worker)
        notes += _crashed(procs, optuna_study, crashed)
        read_now(optuna_study)  # the workers' last trials, written just before they ended
        if procs or pool is not None:
            _stop_resource_tracker()
        if lost is not None:
            raise lost
        if progress is not None:
            progress(True)
        if max_trials is not None and evaluated(optuna_study) >= max_trials:
            _drop_queued(optuna_study, max_trials)
        finished = clock()
        session = Session(
            started=iso(started), finished=iso(finished), seconds=round(finished - started, 3),
            workers=plan.workers, max_trials=max_trials, interrupted=worker.interrupted is not None,
            signal=None if worker.interrupted is None else signal.Signals(worker.interrupted).name,
            stopped_reason=worker.stopped_reason, widened=worker.widened, notes=notes,
            failed_workers=[p.exitcode for p in procs if p.exitcode not in (0, None) and worker.interrupted is None],
            preflight=options.preflight, slot=plan.slot, sampler_seeds=spec.sampler_seeds(first, n_procs + replaced),
        )
        return record_results(spec, optuna_study, session)


def _drop_queued(optuna_study: optuna.Study, max_trials: int) -> None:
    """Queued copies of a dead worker's trials that the budget no longer needs: failed, with the reason."""
    for t in optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        optuna_study._storage.set_trial_user_attr(t._trial_id, "error", f"not run: the study's {max_trials} trials were done")
        optuna_study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)


def _reporter(optuna_study: optuna.Study, total: int | None, on_progress: OnProgress) -> Callable[..., None]:
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
        sync_all()  # every trial reported is on disk (a worker's group commit may not have come yet)
        mine = [t for t in trials[start_n:] if t.state in EVALUATED]  # as the budget counts (a FAIL lost the race for a slot, or was refused)
        hits = sum(1 for t in mine if t.user_attrs.get("cached"))
        on_progress(Progress(len(mine), total, len(mine) / max(now - t0, 1e-9), best_score(trials), hits / max(len(mine), 1)))

    return report

"""One worker process's part of a study: the objective (with the duplicate cache claim), pruning,
duplicate streaks and the per-trial artifact."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import multiprocessing.context
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState

from genesis_core.backtest import CACHE, Backtester, Plan
from genesis_core.errors import REFUSALS, GenesisError
from genesis_core.files import sync_all
from genesis_core.fingerprint import fingerprint
from genesis_core.optimizer._samplers import offset_seed
from genesis_core.optimizer._storage import (
    CacheAnswer,
    CacheEntry,
    ClaimExpired,
    ScoreCache,
    StorageUnavailable,
    cache_url,
    flush,
    open_storage,
    orphaned,
    synced_later,
    this_process,
    trial_count,
)
from genesis_core.optimizer._study import StudySpec
from genesis_core.records import BacktestRecord, CachedFrom, Metrics, ScoreRecord, TrialArtifact, backtest_record
from genesis_core.scoring import Checkpoint, Outcome, checkpoints, prune_reason, score

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")
SEED_STRIDE = 1000  # session slot k's workers use sampler seeds seed + 1000 k + i ...
RESUME_STRIDE = 1_000_003  # ... + N x this in a session that finds N trials in the study (see _run.optimize)
EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED)  # what the budget counts: a FAIL was never evaluated
COMMIT_SECONDS = 0.25  # the longest a finished trial waits for the disk (its worker's next group commit)


class BudgetReached(GenesisError):
    """Other workers took the study's last trials while this one was being asked: not evaluated."""


# what makes a trial FAIL (with its reason) and the run go on; anything else, a lost database included, ends the run
TRIAL_FAILURES = (*REFUSALS, BudgetReached, ClaimExpired)


@dataclass(frozen=True)
class Job:
    """A trial ready to evaluate: its parameters, phase, planned backtest and cache key."""

    number: int
    params: dict[str, Any]
    phase: int
    plan: Plan
    key: str


@dataclass(frozen=True)
class Measured:
    """What a backtest tells the optimizer, small enough to send from a worker process."""

    record: BacktestRecord
    score: ScoreRecord
    metrics: Metrics
    points: list[Checkpoint]  # empty unless pruning is on
    signals: int


@dataclass(frozen=True)
class Settled:
    objective: float
    pruned: str | None
    entry: CacheEntry

    def value(self) -> float:
        """The objective value, or TrialPruned for Optuna."""
        if self.pruned is not None:
            raise optuna.TrialPruned(self.pruned)
        return self.objective


def _stands(study: optuna.Study, number: int) -> bool:
    """Whether trial ``number``, which holds a finished cache entry, holds it for good: not a trial
    whose entry was written but whose tell never was (a tell that failed, the held entries written
    as its worker stopped, ``Worker.commit``), which the resume failed and queued again. Its retry
    takes the entry over as its own evaluation; a duplicate of a failed trial would be ranked
    nowhere. A running one is another worker's, whose tell is on its way."""
    storage = study._storage
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number)).state != TrialState.FAIL


def make_job(spec: StudySpec, number: int, params: dict[str, Any], plan: Plan) -> Job:
    """Trial ``number``'s job; its cache key says what makes two evaluations the same: the effective
    config, the data window, the code and the scoring."""
    key = fingerprint({"config": plan.config_fingerprint, "window": plan.window.fingerprint,
                       "code": plan.code, "scoring": spec.scoring_fingerprint})
    return Job(number, params, spec.phase(number), plan, key)


def measure(backtester: Backtester, plan: Plan, spec: StudySpec, pruner: optuna.pruners.BasePruner) -> Measured:
    """Run the planned backtest and score it; the checkpoints only when something prunes."""
    result = backtester.execute(plan)
    scoring = spec.config.scoring
    points: list[Checkpoint] = []
    if scoring.pruning.enabled or not isinstance(pruner, optuna.pruners.NopPruner):
        exit_bars = result.engine.trades["exit_bar"] - result.window.start_index
        points = checkpoints(result.engine.equity, exit_bars, result.engine.trades["pnl"], scoring.pruning.checkpoints)
    record = backtest_record(result, trades=False)
    return Measured(record, ScoreRecord.of(score(result.metrics, result.trace, scoring, spec.config.constraints)),
                    record.trial_metrics, points, int(result.trace["signals"]))


def trial_attributes(sc: ScoreRecord, metrics: Metrics, pruned: str | None, config_fingerprint: str, key: str, phase: int,
                     duplicate_of: int | None = None, cached_from: CachedFrom | None = None) -> dict[str, Any]:
    """A settled trial's user attributes (from its evaluation's score, metrics and pruning): those
    people filter on at the top, the rest under "genesis"."""
    genesis: dict[str, Any] = {"config_fingerprint": config_fingerprint, "cache_key": key}
    top: dict[str, Any] = {"phase": phase}
    if duplicate_of is not None:
        top.update(cached=True, cache_reused=duplicate_of)
        genesis["original_outcome"] = sc.outcome.value
    else:
        top["cached"] = False
        if cached_from is not None:
            genesis["cached_from"] = cached_from.model_dump()
    outcome = Outcome.DUPLICATE.value if duplicate_of is not None else sc.outcome.value
    top.update(outcome=outcome, feasibility_score=sc.feasibility, production_score=sc.production)
    genesis.update(constraints_failed=sc.constraints_failed, metrics=metrics, pruned=pruned)
    return {**top, "genesis": genesis}


def freeze_survivors() -> None:
    """Collect the young generations, then freeze everything that survives: collections no longer
    scan it (until ``gc.unfreeze``). The oldest generation is not collected first: its objects
    (modules, caches, an earlier run's survivors) have survived collections already, and scanning
    them cost 55-75 ms before every run (200,000 objects, in a fresh ``genesis optimize`` as in a
    long-lived process) to find next to nothing: ten back-to-back runs in one process ended with
    the same objects and memory either way. What it holds is scanned again once thawed."""
    gc.collect(1)
    gc.freeze()


_settling = threading.Lock()
_settled = 0  # settled_heap contexts open in this process: only the last to close thaws


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """Freeze what survives (modules, the replayed study, configs) while trials run: collections
    scan only what trials allocate. A fresh worker's first full collection otherwise scans its
    ~300,000 start-up objects (about 30 ms of CPU), and a fleet's workers, started together and
    alike, collect together: 32 of them on 2 cores stalled for a second at once. Thawed when the
    outermost one closes (a session's holds its worker's), so a process that runs studies one
    after another (a server, the tests) still collects what an earlier one left."""
    global _settled
    with _settling:
        freeze_survivors()
        _settled += 1
    try:
        yield
    finally:
        with _settling:
            _settled -= 1
            if not _settled:
                gc.unfreeze()


def quietly(start: Callable[[], T]) -> T:
    """Start processes with the stop signals ignored, which they inherit until they install their
    own handlers (a measuring process of a reproducible run never does: this one decides): a Ctrl-C
    while one is still importing cannot kill it with a traceback. The signals are also blocked here
    meanwhile, so one that arrives is held back for this thread; but a thread a library started
    (OpenBLAS's, say) may take it and drop it: a Ctrl-C in those milliseconds can be lost, and the
    next one stops the run. Off the main thread (a run started by a server) signals are not ours."""
    if threading.current_thread() is not threading.main_thread():
        return start()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        return start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def process_context(spec: StudySpec) -> multiprocessing.context.ForkContext | multiprocessing.context.SpawnContext:
    """How a session's worker processes start. Forked from this process when that is safe: a child
    begins with its modules, compiled kernels, candles and features loaded (a spawned one imports
    everything again and loads the kernels from numba's cache, 0.8-1.3 s before its first trial)
    and, like a spawned one, opens its own storage and cache (``per_process``). Spawned otherwise:
    while another thread runs (a server's: a lock it held at the fork would stay held in the child)
    or through the gRPC proxy (gRPC's threads)."""
    return child_context(forkable=spec.config.meta.proxy is None)


def child_context(forkable: bool = True) -> multiprocessing.context.ForkContext | multiprocessing.context.SpawnContext:
    """Forked children when ``forkable`` and no other thread runs (see ``process_context``), else spawned."""
    alone = threading.current_thread() is threading.main_thread() and threading.active_count() == 1
    if forkable and alone and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


PR_SET_PDEATHSIG = 1  # Linux's prctl option: a signal for this process when its parent dies


def ends_with(parent: int) -> None:
    """Have Linux kill this child process when ``parent``, the process that started it, dies (a
    crash, a kill -9): a sweep's pool process waited for its next chunk for ever, holding its data
    and features, and the stderr it shares, which kept a caller reading that waiting too; a
    validation's went on to the end for no one. Elsewhere it stays as before."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the call
        os._exit(1)


def restore_artifacts(spec: StudySpec, study: optuna.Study) -> tuple[list[int], list[int]]:
    """Write again the artifacts of evaluated trials that a power loss took before their group
    commit (``Worker.committing``: the journal may have reached the disk without them), from a
    mirror that holds them or else by running the trial again: its backtest is deterministic, so the
    artifact comes back as it was. Returns the trials restored from the mirror and those run again;
    GenesisError if a re-run does not give the score the study recorded (code or data changed
    under a forced resume)."""
    folder = spec.folder
    mine = [t for t in study.get_trials(deepcopy=False, states=EVALUATED) if t.user_attrs.get("cached") is False]
    lost = folder.lost_trials([t.number for t in mine])
    copied: list[int] = []
    if lost and folder.mirror is not None:
        for n in lost:
            folder.trial_path(n).unlink(missing_ok=True)  # not whole: the mirror's copy is
        folder.sync()
        left = folder.lost_trials(lost)
        copied, lost = [n for n in lost if n not in left], left
    backtester = Backtester(CACHE)
    rerun = set(lost)
    for t in (t for t in mine if t.number in rerun):
        params, g = spec.space.trial_params(t), t.user_attrs["genesis"]
        measured = measure(backtester, backtester.plan(*spec.build.validated(params)), spec, optuna.pruners.NopPruner())
        if measured.score.production != t.user_attrs["production_score"]:
            raise GenesisError(f"trial {t.number}'s artifact was lost before it reached the disk, and running it again gives "
                               f"production score {measured.score.production}, not the {t.user_attrs['production_score']} "
                               "the study recorded: the code or data differ from the run's")
        origin = CachedFrom.model_validate(g["cached_from"]) if "cached_from" in g else None
        folder.write_trial(TrialArtifact.of(measured.record, t.number, params, measured.score, g.get("pruned"), origin))
    return copied, lost


def store_told(spec: StudySpec, study: optuna.Study, cache: ScoreCache) -> list[int]:
    """Store, from their artifacts, the cache entries of evaluated trials told before their entry
    was written: a worker holds it for its next claim (``ScoreCache.hold``) and was stopped first,
    so its key's claim stays running (a duplicate would wait for it until it is stale, then measure
    it again); or a sweep was stopped between appending a chunk's trials and storing their entries,
    so their keys have none (a duplicate would be measured again, as a trial of its own). A trial
    told meanwhile by a worker elsewhere, whose artifact is not here yet, is left to its worker.
    Returns the trials' numbers."""
    rows = cache.keys(spec.name)
    told: dict[int, str] = {}  # trial number -> its key
    for t in study.get_trials(deepcopy=False, states=EVALUATED):
        key = t.user_attrs.get("genesis", {}).get("cache_key")
        if key is not None and t.user_attrs.get("cached") is False and rows.get(key, ("running", t.number)) == ("running", t.number):
            told[t.number] = key  # no row for its key, or its own claim still running
    for n in spec.folder.lost_trials(list(told)):
        del told[n]
    if told:
        cache.store_many(spec.name, [(key, n, CacheEntry.of_artifact(spec.folder.read_trial(n), spec.name).model_dump_json())
                                     for n, key in told.items()])
    return list(told)


def mend_records(spec: StudySpec, study: optuna.Study, cache: ScoreCache) -> list[str]:
    """What a stopped session left half written, written now, before a session adds trials: the
    artifacts (``restore_artifacts``) and then the cache entries (``store_told``) of evaluated
    trials; a note for each kind mended."""
    notes = []
    for restored, how in zip(restore_artifacts(spec, study),
                             ("from the database's copy", "by running their trials again, with the scores the study recorded"),
                             strict=True):
        if restored:
            notes.append(f"{len(restored)} trial artifact(s) lost before they reached the disk (a power loss, or a sweep "
                         f"stopped before writing them) were written again {how}: {spans(restored)}")
    told = store_told(spec, study, cache)
    if told:
        notes.append(f"{len(told)} trial(s) told before a stopped worker or sweep wrote their score cache entries had them "
                     f"written from their artifacts: {spans(told)}")
    return notes


def spans(numbers: list[int]) -> str:
    """Trial numbers as runs (``3, 10-249``): a chunk's 250 numbers each printed made a note of 20 lines."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def evaluated(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=EVALUATED))


class Worker:
    """Evaluates trials of one study in one process."""

    def __init__(self, spec: StudySpec, max_trials: int | None = None, index: int = 0,
                 session: tuple[ScoreCache, int] | None = None, storage: optuna.storages.BaseStorage | None = None) -> None:
        self.spec = spec
        self.max_trials = max_trials
        self.index = index  # the sampler seed offset (session slot and worker)
        self.session = session  # the session's slot, kept taken by the session's main worker
        self.storage = storage  # the session's, for its own worker: one replay of the study in the process, not two
        self._heard = 0.0
        self.backtester = spec.backtester()
        meta = spec.config.meta
        self.cache = ScoreCache(cache_url(spec.storage_url), meta.stale_trial_seconds, meta.storage_retry_seconds)
        self.streak = 0
        self.fail_streak = 0
        self.budget_reached = False
        self.stopped_reason: str | None = None
        self.pruner = spec.pruner()
        self.random_until = 0  # trials before this number are sampled at random (bootstrap, widening) ...
        self.at_random: optuna.samplers.BaseSampler | None = None  # ... by this sampler, the worker's own
        self.widened = 0
        self.interrupted: int | None = None  # the signal that asked this worker to stop
        self._committed = time.monotonic()

    def objective(self, trial: optuna.Trial) -> float:
        job = self.prepare(trial)
        flush(trial.study, durable=False)  # its worker and parameters written before the backtest: a killed worker's trial is queued again
        answer = self.cache.claim(self.spec.name, job.key, trial.number)
        measured = None
        if answer is None:
            try:
                measured = measure(self.backtester, job.plan, self.spec, self.pruner)
            except REFUSALS as exc:
                self.refused(trial, job, exc)
                raise
        return self.settle(trial, job, answer, measured).value()

    def refused(self, trial: optuna.Trial, job: Job, exc: GenesisError) -> None:
        """A config refused only as its backtest runs (a feature its parameters name that the data
        cannot give: ``gates.htf.timeframe: 90m`` on 1h bars): the trial's FAIL with the reason, as
        when its plan is refused, and its key's claim released. A duplicate waited for the claim
        until it was stale (30 s a trial), then failed the same way, and no reason was written."""
        self.cache.release(self.spec.name, job.key)
        trial.set_user_attr("error", str(exc))

    def prepare(self, trial: optuna.Trial) -> Job:
        """Record the worker, check the budget, suggest the parameters and plan the backtest; a
        combination the strategy refuses is the trial's FAIL, never a number."""
        s = self.spec
        trial.set_user_attr("worker", this_process())  # so a resume can tell at once whether a RUNNING trial's worker died
        self._within_budget(trial)
        s.space.suggest(trial)
        params = s.space.trial_params(trial)
        try:
            plan = self.backtester.plan(*s.build.validated(params))
        except REFUSALS as exc:
            trial.set_user_attr("error", str(exc))
            raise
        return make_job(s, trial.number, params, plan)

    def settle(self, trial: optuna.Trial, job: Job, answer: CacheAnswer | None, measured: Measured | None) -> Settled:
        """The trial's outcome from a duplicate answer, another study's result or its own measurement:
        pruning decided, artifact written, cache filled, attributes set."""
        s = self.spec
        if answer is not None and answer.same_study and _stands(trial.study, answer.trial_number):  # a duplicate
            self.streak += 1
            entry = answer.entry
            attrs = trial_attributes(entry.score, entry.metrics, entry.pruned, job.plan.config_fingerprint, job.key, job.phase,
                                     duplicate_of=answer.trial_number)
        else:
            self.streak = 0
            origin = None
            try:
                if measured is not None:
                    pruned = self._prune(trial, measured)
                    entry = CacheEntry(study=s.name, trial_number=trial.number, score=measured.score, pruned=pruned,
                                       record=measured.record, metrics=measured.metrics)
                elif answer is not None and answer.same_study:  # measured here for a trial killed before its tell: this one's
                    entry = answer.entry.model_copy(update={"trial_number": trial.number})
                else:  # another study measured this config on this window: a trial of this study all the same
                    assert answer is not None
                    entry = answer.entry
                    origin = CachedFrom(study=entry.study, trial=entry.trial_number)
                s.folder.write_trial(TrialArtifact.of(entry.record, trial.number, job.params, entry.score, entry.pruned, origin),
                                     durable=False)  # with the tell, by the next group commit (``committing``)
                self.cache.hold(s.name, job.key, entry)  # written with the next claim
            except BaseException:
                self.cache.release(s.name, job.key)
                raise
            attrs = trial_attributes(entry.score, entry.metrics, entry.pruned, job.plan.config_fingerprint, job.key, job.phase,
                                     cached_from=origin)
        for name, value in attrs.items():  # written with the tell (HeldJournalStorage)
            trial.set_user_attr(name, value)
        return Settled(entry.score.production, entry.pruned, entry)  # one scale in the study: phase 1 chose on its own (PhasedSampler)

    def _within_budget(self, trial: optuna.Trial) -> None:
        """The budget is the study's, shared by every worker on every machine: a trial may start only
        while the evaluated trials plus those running that started before it are fewer than it. The
        earliest running trial is never refused while the budget is short, so the budget is met exactly."""
        if self.max_trials is None or trial_count(trial.study) <= self.max_trials:
            return  # fewer others than the budget: the check below cannot refuse (most of a run)
        trials = trial.study.get_trials(deepcopy=False, states=(*EVALUATED, TrialState.RUNNING))
        now, retry = time.time(), self.spec.config.meta.storage_retry_seconds
        ahead = [t for t in trials if t.state != TrialState.RUNNING or (t.number < trial.number and not orphaned(t, retry, now))]
        if len(ahead) >= self.max_trials:
            self.budget_reached = True
            trial.set_user_attr("error", f"not evaluated: the study's {self.max_trials} trials were taken by other workers")
            raise BudgetReached(f"budget of {self.max_trials} trials reached")

    def _prune(self, trial: optuna.Trial, measured: Measured) -> str | None:
        """Report checkpoint values (for Optuna's pruners) and apply the pruning rules."""
        cfg = self.spec.config.scoring.pruning
        rule = prune_reason(measured.points, measured.signals, cfg)
        for i, p in enumerate(measured.points):
            trial.report(p.total_return, step=p.bar)
            if rule is not None and rule[0] == i:
                return rule[1]
            if i < len(measured.points) - 1 and trial.should_prune():
                return f"{type(self.pruner).__name__} at bar {p.bar}"
        return None

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.after(study, trial):
            study.stop()

    def after(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Bookkeeping after a trial (group commit, session slot, streaks, sampler switches); True: stop asking for trials."""
        if time.monotonic() - self._committed >= COMMIT_SECONDS:
            self.commit()
        if self.session is not None and time.time() - self._heard > 5.0:
            self._heard = time.time()
            self.session[0].heard_of(self.spec.name, self.session[1])
        if self.budget_reached or (self.max_trials is not None and trial_count(study) >= self.max_trials
                                   and evaluated(study) >= self.max_trials):
            return True
        stop = self.interrupted is not None  # Ctrl-C or SIGTERM: the trial in flight has finished; stop here
        meta = self.spec.config.meta
        if study._stop_flag and not stop:  # the sampler stopped the study as it was told the trial (see run_batched)
            self.stopped_reason = (f"the sampler ({meta.sampler.name}) stopped the study before its budget: a grid sampler "
                                   "does once every point of its grid has been tried")
            return True
        self.fail_streak = self.fail_streak + 1 if trial.state == TrialState.FAIL else 0
        if self.fail_streak >= meta.fail_streak_limit:
            self.stopped_reason = f"{self.fail_streak} failed parameter sets in a row (meta.fail_streak_limit): see trials.csv fail_reason"
            stop = True
        if self.streak >= meta.duplicate_streak_limit:
            if meta.duplicate_streak_action == "widen" and self.random_until <= trial.number:
                self.random_until = trial.number + 1 + meta.duplicate_streak_limit
                self.widened += 1
                self.streak = 0
                study.sampler = self._random_sampler(trial.number + 1)
            else:
                exhausted = " even when sampling at random: the space looks exhausted" if meta.duplicate_streak_action == "widen" else ""
                self.stopped_reason = f"{self.streak} duplicate parameter sets in a row (meta.duplicate_streak_limit){exhausted}"
                stop = True
        elif trial.number + 1 >= self.random_until and study.sampler is self.at_random:
            # bootstrap or widening done: back to the configured sampler (this worker's own random one, not a
            # configured random sampler, which, made again after each trial, proposed its first point each time)
            study.sampler = self.spec.sampler(self.index)
            self.at_random = None
        return stop

    def commit(self) -> None:
        """Write the held cache entries, and put this worker's told trials (journal and artifacts) on
        disk: one flush of the system's written files for all of them instead of three fsyncs a
        trial, which two workers' trials queued behind each other for."""
        try:
            self.cache.write_held()
        finally:
            sync_all()
            self._committed = time.monotonic()

    @contextlib.contextmanager
    def committing(self, study: optuna.Study) -> Iterator[None]:
        """Trials run inside are durable in groups: at most COMMIT_SECONDS after their tell, and
        before anyone is told of them (the progress report and the run's records sync first). A
        killed process loses none (its writes are in the files); a power loss, at most the last
        COMMIT_SECONDS of trials, which a resume runs again (``restore_artifacts``). When the
        database stopped answering, writing the held cache entries fails at once (``retrying``
        gave up on it already) and they are left to the next session (``store_told``)."""
        with synced_later(study):
            try:
                yield
            finally:
                self.commit()

    def _random_sampler(self, offset: int) -> optuna.samplers.RandomSampler:
        seed = self.spec.config.meta.sampler.kwargs.get("seed")
        self.at_random = optuna.samplers.RandomSampler(seed=None if seed is None else offset_seed(seed, self.index + offset))
        return self.at_random

    def open_study(self) -> optuna.Study:
        """The study with this worker's sampler (random while the bootstrap trials last) and pruner."""
        s = self.spec
        m = s.config.meta
        storage = self.storage if self.storage is not None else open_storage(
            s.storage_url, m.stale_trial_seconds, m.storage_retry_seconds, wait=True, proxy=m.proxy)
        study = optuna.load_study(study_name=s.name, storage=storage, sampler=s.sampler(self.index), pruner=self.pruner)
        self.random_until = m.bootstrap_random_trials
        if len(study.get_trials(deepcopy=False)) < self.random_until:
            study.sampler = self._random_sampler(0)
        return study

    def run(self, timeout: float | None, on_trial: Callable[[], None] | None = None) -> None:
        """Evaluate trials until the study's budget is met, the deadline passes or a stop condition holds."""
        study = self.open_study()

        def after(st: optuna.Study, tr: optuna.trial.FrozenTrial) -> None:  # one callback: Optuna deep-copies the trial for each
            self.after_trial(st, tr)
            if on_trial is not None:
                on_trial()

        if self.interrupted is not None or (self.max_trials is not None and evaluated(study) >= self.max_trials):
            return
        try:
            with settled_heap(), self.committing(study):
                study.optimize(self.objective, n_trials=None, timeout=timeout, callbacks=[after], catch=TRIAL_FAILURES,
                               gc_after_trial=False)
        except (UnboundLocalError, AssertionError) as exc:
            # Optuna's _run_trial masks an exception raised by its own tell with one of these (its finally
            # reads a variable the failed tell never set, or asserts on a trial the tell left running);
            # the storage's error is the one to report
            if isinstance(exc.__context__, StorageUnavailable):
                raise exc.__context__ from None
            raise

    def stopping_on_signals(self, deaf_once_stopped: bool = False) -> contextlib.AbstractContextManager[None]:
        """SIGINT and SIGTERM finish the trial in flight, then stop; ``interrupted`` holds the signal."""
        return stopping_on_signals(lambda signum: setattr(self, "interrupted", signum), deaf_once_stopped)


@contextlib.contextmanager
def stopping_on_signals(on_signal: Callable[[int], None], deaf_once_stopped: bool = False) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM (a scheduler, ``docker stop``) call ``on_signal`` instead of
    stopping the process, which finishes what is in flight and then stops. Once one did, the
    process's owner (``deaf_once_stopped``: the CLI) ignores the next ones for good, set here in
    place of this handler: restored first, a Ctrl-C in between would cut the last lines short, or,
    in the interpreter's teardown, kill the process by SIGINT. Any other caller gets its handlers
    back. Off the main thread (a run started by a server) signals are not ours to handle."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopped = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True
        on_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if stopped and deaf_once_stopped else handler)

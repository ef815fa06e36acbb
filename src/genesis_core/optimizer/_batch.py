"""Reproducible parallel runs: this process asks the sampler for a batch of trials, measures one of
them while measuring processes measure the others, and tells the results in trial order. The
sampler then sees the same history in every run, whatever the timing, so a seeded run gives the
same trials for a given worker count. (Free-running workers, each with its own sampler, are the
other way: see ``_run``.)"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import optuna
from optuna.trial import TrialState

from genesis_core.backtest import BacktestConfig
from genesis_core.errors import REFUSALS, GenesisError, StrategyError, report_crashes
from genesis_core.optimizer._storage import CacheAnswer, CacheEntry, crash_reason, died_of, flush
from genesis_core.optimizer._study import StudySpec
from genesis_core.optimizer._worker import TRIAL_FAILURES, Job, Measured, Worker, evaluated, measure, process_context, quietly

PARENT_CHECK_SECONDS = 1.0  # how often a measuring process waiting for work looks whether the process it serves lives


def measuring_process(conn: Connection, spec: StudySpec) -> None:
    """A measuring process: effective configs in, ``Measured`` out, until the connection closes or
    the process it serves is gone. Its data and feature caches live as long as it does. It never
    handles a signal (it starts with them ignored): the process that samples decides when to stop.
    A forked one holds a copy of that process's end of the pipe too, so the connection never closes
    when that process dies (a crash, the OOM killer, a kill -9 of it alone): it waited for ever,
    holding its memory; it now ends once its parent is no longer its parent."""
    report_crashes()  # a spawned process starts without it
    served = multiprocessing.parent_process()
    backtester, pruner = spec.backtester(), spec.pruner()

    def measure_config(config: dict[str, Any]) -> Measured:
        return measure(backtester, backtester.plan(BacktestConfig.model_validate(config)), spec, pruner)

    while True:
        while not conn.poll(PARENT_CHECK_SECONDS):
            if served is None or os.getppid() != served.pid:
                return
        try:
            config = conn.recv()
        except EOFError:
            return
        if config is None:
            return
        conn.send(measured_or_refusal(measure_config, config))


def measured_or_refusal(measure_one: Callable[[Any], Measured], job: Any) -> Measured | GenesisError:
    """``measure_one(job)``, or why its config was refused (sent back to be its trial's reason)."""
    try:
        return measure_one(job)
    except REFUSALS as exc:
        return exc


class Measurers:
    """The measuring processes of a reproducible session (one fewer than its workers: this process
    measures too), or of an isolated one (as many as its workers: ``isolated``, this process measures
    nothing), each behind a pipe (no threads here, so a signal held back while they start is not
    lost). One that dies measuring a job (a crash of compiled code, memory run out) fails that job's
    trial with the reason and is replaced (``notes`` say so)."""

    def __init__(self, spec: StudySpec, n: int, isolated: bool = False) -> None:
        self.isolated = isolated
        self._spec, self._ctx = spec, process_context(spec)
        self._conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.notes: list[str] = []
        for _ in range(n):
            self._add()

    def _add(self, at: int | None = None) -> None:
        """A new measuring process, appended or in place ``at``."""
        mine, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(target=measuring_process, args=(theirs, self._spec))
        if at is None:
            self._conns.append(mine)
            self.procs.append(proc)
        else:
            self._conns[at], self.procs[at] = mine, proc

    def map(self, jobs: list[Job], measure_here: Callable[[Job], Measured]) -> list[Measured | GenesisError]:
        """Measure each job, the last with ``measure_here`` while the processes measure the others
        (this process would otherwise wait idle for them; isolated, the processes measure all);
        results in order. Who measures a job changes nothing in its result: the backtest is deterministic."""
        sent = jobs if self.isolated else jobs[:-1]
        for i, job in enumerate(sent):
            self._conns[i % len(self._conns)].send(job.plan.config.model_dump(mode="json"))
        here = [measured_or_refusal(measure_here, job) for job in jobs[len(sent):]]
        return [self._received(i % len(self._conns), job) for i, job in enumerate(sent)] + here

    def _received(self, i: int, job: Job) -> Measured | GenesisError:
        """Process ``i``'s answer for ``job``; if it died meanwhile, why, and a new process in its place."""
        try:
            answer: Measured | GenesisError = self._conns[i].recv()
            return answer
        except EOFError:
            dead = self.procs[i]
            dead.join()
            assert dead.exitcode is not None
            self._add(at=i)
            quietly(self.procs[i].start)
            self.notes.append(f"measuring process {dead.pid} died of {died_of(dead.exitcode)} evaluating trial {job.number}, "
                              "which failed with that reason (the same parameters would end a process again); a new one "
                              "took its place")
            return StrategyError(crash_reason("measuring", dead.exitcode))

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for p in self.procs:
            p.join()


def run_batched(worker: Worker, pool: Measurers, batch: int, timeout: float | None,
                on_trial: Callable[[], None] | None) -> None:
    """Trials in batches of ``batch`` until the budget is met, the deadline passes or ``worker`` says stop."""
    study = worker.open_study()
    deadline = None if timeout is None else time.monotonic() + timeout
    # told here, not in Study.optimize, a trial's sampler may still stop the study (Optuna's grid sampler does once its
    # grid is done: outside optimize, Study.stop raised RuntimeError after the trial was stored); Worker.after stops then
    study._thread_local.in_optimize_loop = True
    try:
        with worker.committing(study):
            while worker.interrupted is None and (deadline is None or time.monotonic() < deadline):
                size = batch if worker.max_trials is None else min(batch, worker.max_trials - evaluated(study))
                if size <= 0 or _batch(worker, study, pool, size, on_trial):
                    return
    finally:
        study._thread_local.in_optimize_loop, study._stop_flag = False, False


def _batch(worker: Worker, study: optuna.Study, pool: Measurers, size: int, on_trial: Callable[[], None] | None) -> bool:
    """One batch: ask, prepare and claim in trial order, measure in parallel, settle and tell in
    trial order. A parameter set twice in the batch is measured once, the later trial its duplicate.
    Returns whether to stop."""
    trials = [study.ask() for _ in range(size)]
    jobs: dict[int, Job] = {}
    for t in trials:
        try:
            jobs[t.number] = worker.prepare(t)
        except TRIAL_FAILURES:
            pass  # told FAIL below, its reason recorded by prepare
    flush(study, durable=False)  # as Worker.objective does
    first: dict[str, int] = {}  # cache key -> the batch's first trial with it
    answers: dict[int, CacheAnswer | None] = {}
    for number, job in jobs.items():
        if job.key not in first:
            first[job.key] = number
            answers[number] = worker.cache.claim(worker.spec.name, job.key, number)
    owned = [jobs[n] for n, a in answers.items() if a is None]
    measured = dict(zip([j.number for j in owned], pool.map(owned, lambda job: measure(
        worker.backtester, job.plan, worker.spec, worker.pruner)), strict=True))
    entries: dict[str, CacheEntry] = {}
    failed: dict[str, str] = {}  # key -> why the batch's first trial with it failed, its duplicates' reason too
    stop = False
    for t in trials:
        todo = jobs.get(t.number)
        state, value = TrialState.FAIL, None
        if todo is not None and todo.key in failed:
            t.set_user_attr("error", failed[todo.key])  # a refused point drawn again in the batch (it failed without a reason)
        elif todo is not None and (first[todo.key] == t.number or todo.key in entries):
            answer = answers[t.number] if first[todo.key] == t.number else CacheAnswer(entries[todo.key], first[todo.key], True)
            try:
                result = measured.get(t.number)
                if isinstance(result, GenesisError):  # refused as its backtest ran: its reason is written below
                    worker.cache.release(worker.spec.name, todo.key)
                    raise result
                settled = worker.settle(t, todo, answer, result)
                entries[todo.key] = settled.entry
                state, value = (TrialState.COMPLETE, settled.objective) if settled.pruned is None else (TrialState.PRUNED, None)
            except TRIAL_FAILURES as exc:
                if isinstance(exc, REFUSALS):  # a property of the point, not of this trial's turn (a budget, a claim)
                    failed[todo.key] = str(exc)
                t.set_user_attr("error", str(exc))
        study.tell(t, value, state=state)
        stop = worker.after(study, study._storage.get_trial(t._trial_id)) or stop  # not a list of every trial
        if on_trial is not None:
            on_trial()
    return stop

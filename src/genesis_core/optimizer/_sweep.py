"""Sweeps: a grid, random or Sobol set of points of a study's search space, backtested in batches
on every core and added to the study as its trials, with the artifacts, score cache entries and
records an optimizer session writes. A sweep seeds a study (``genesis optimize`` goes on from its
trials, the sampler learning from them) or feeds validation, reports and PBO as a study does.

Each process keeps its data, windows and features for its whole share, so a feature spec is
computed once per process; a chunk of points is committed at once (the trials in one journal
append, then their artifacts made durable together, then the cache in one transaction), so an
interrupted sweep keeps every finished chunk and a second run writes what the stop left unwritten
and evaluates only what is not in the study yet. A point that crashes the process evaluating it (a
bug in compiled code) is found and failed in the study, and the sweep goes on (``InFlight``).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import itertools
import math
import mmap
import os
import signal
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, get_args

import optuna
import orjson
from optuna.trial import FrozenTrial, TrialState

from genesis_core.backtest import CACHE, Backtester
from genesis_core.errors import REFUSALS, ConfigError, GenesisError, report_crashes
from genesis_core.optimizer._results import RunSummary, best_score, record_results
from genesis_core.optimizer._run import OnProgress, Progress, at_least_one
from genesis_core.optimizer._sobol import MAX_DIMENSIONS, sobol
from genesis_core.optimizer._space import SearchSpace
from genesis_core.optimizer._storage import (
    CacheEntry,
    ScoreCache,
    add_finished,
    cache_url,
    check_clock,
    crash_reason,
    open_storage,
    recover_stale_trials,
    running,
    trial_count,
)
from genesis_core.optimizer._study import StudySpec, check_signature
from genesis_core.optimizer._worker import (
    Measured,
    ends_with,
    freeze_survivors,
    make_job,
    measure,
    mend_records,
    process_context,
    quietly,
    settled_heap,
    spans,
    stopping_on_signals,
    trial_attributes,
)
from genesis_core.records import (
    SWEPT,
    Metrics,
    PreflightRecord,
    PreflightSkipped,
    RunFolder,
    ScoreRecord,
    Session,
    TrialArtifact,
    iso,
)

SweepMethod = Literal["grid", "random", "sobol"]
MAX_POINTS = 1_000_000
CHUNK = 250  # the most points a process evaluates per task: large enough to hide the round trip, small enough to show progress
CHUNKS_EACH = 4  # on several processes, chunks per process at least: none waits long for another's last chunk
RESULT_PIPE_BYTES = 1 << 20  # Linux's most for an unprivileged process; a reference chunk's results pickle to ~380 KB
MAX_CRASHES = 100  # points that crashed their process, each found at the cost of a new pool: a sweep stops at this many
SKIPPED = "failed in the study, and skipped by later sweeps"  # what becomes of a point that crashed its process


@dataclass(frozen=True)
class SweepOptions:
    method: SweepMethod = "sobol"
    points: int = 1024  # random and Sobol
    levels: int = 5  # grid: values per numeric parameter (every choice of a categorical)
    seed: int = 0
    workers: int | None = None  # processes; None: every core
    force_resume: bool = False  # add to a study whose signature differs (recorded in the session's notes)
    backfill_signature: bool = False  # adopt the current signature for a study that has none
    preflight: PreflightRecord | PreflightSkipped | None = None  # what preflight said before the sweep (recorded in run.json)
    deaf_once_stopped: bool = False  # ignore SIGINT and SIGTERM for good once one stopped the sweep (see stopping_on_signals)

    def __post_init__(self) -> None:
        if self.method not in get_args(SweepMethod):
            raise ConfigError(f"--method {self.method}: use {', '.join(get_args(SweepMethod))}")
        if not 1 <= self.points <= MAX_POINTS:
            raise ConfigError(f"--points must be 1 .. {MAX_POINTS:,}, not {self.points}")
        if self.levels < 2:
            raise ConfigError(f"--levels must be 2 or more (a grid spans each range from its low to its high), not {self.levels}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be 0 or more, not {self.seed}")
        at_least_one("--workers", self.workers)


def _grid_axes(space: SearchSpace, levels: int) -> list[list[Any]]:
    """Each searched parameter's values in a grid of ``levels``; ConfigError for more than MAX_POINTS points."""
    axes = [space.sweep(path, levels) for path in space.distributions]
    size = math.prod(len(axis) for axis in axes)
    if size > MAX_POINTS:
        raise ConfigError(f"a grid of {levels} levels over {len(axes)} parameters has {size:,} points "
                          f"(at most {MAX_POINTS:,}): fewer --levels, or --method sobol --points N")
    return axes


def sweep_size(space: SearchSpace, options: SweepOptions) -> int:
    """How many points ``sweep_points`` makes, without making them."""
    return options.points if options.method != "grid" else math.prod(len(axis) for axis in _grid_axes(space, options.levels))


def sweep_processes(options: SweepOptions, points: int) -> int:
    """The processes a sweep of ``points`` runs on, its own included: ``workers`` (every core by
    default), no more than it has points."""
    return max(1, min(options.workers or os.cpu_count() or 1, points))


def chunk_size(points: int, processes: int) -> int:
    """Points per task: ``CHUNK``, or on several processes few enough that each process gets
    ``CHUNKS_EACH`` chunks. With ``CHUNK`` alone a sweep of fewer points ran on one core, and the
    processes of a longer one finished up to a chunk apart: a user's strategy at 57 ms a point left
    a core idle through a 64-point sweep (3.2-3.7 s), and for up to 14 s at the end of any sweep."""
    return CHUNK if processes == 1 else max(1, min(CHUNK, -(-points // (CHUNKS_EACH * processes))))


def sweep_points(space: SearchSpace, options: SweepOptions) -> list[dict[str, Any]]:
    """The sweep's points, as trial parameters (dotted paths inside params), in a fixed order."""
    if options.method == "grid":
        axes = _grid_axes(space, options.levels)
        return [{**space.fixed, **dict(zip(space.distributions, values, strict=True))} for values in itertools.product(*axes)]
    if options.method == "random":
        import random

        rng = random.Random(options.seed)
        return [space.random_point(rng) for _ in range(options.points)]
    if not 1 <= len(space.distributions) <= MAX_DIMENSIONS:
        raise ConfigError(f"a Sobol sweep covers 1 to {MAX_DIMENSIONS} searched parameters, not {len(space.distributions)}: "
                          "--method random or grid")
    units = sobol(len(space.distributions), options.points, options.seed).tolist()  # Python floats: a point holds no NumPy scalar
    return space.at(units)


@dataclass(frozen=True)
class Measurement:
    """What the sweep's process needs of a point's backtest: its score and metrics, and its record
    as JSON, written as it is into the trial's artifact and cache entry (sent as a model, the record
    was pickled here and unpickled there, then serialised twice: 70 us of the committing process's
    time a point)."""

    score: ScoreRecord
    metrics: Metrics
    record_json: str

    @classmethod
    def of(cls, measured: Measured) -> Measurement:
        return cls(measured.score, measured.metrics, measured.record.model_dump_json())


@dataclass(frozen=True)
class Evaluated:
    """One point's evaluation, small enough to send back from a process: its key and fingerprint,
    the measurement (None when the study already holds the key) or the reason the strategy refused it."""

    index: int
    key: str | None
    config_fingerprint: str | None
    measured: Measurement | None
    error: str | None = None
    crashed: bool = False  # it ended the process evaluating it, alone too (``error`` says how): failed in the study


Chunk = list[tuple[int, dict[str, Any]]]  # points and their places in the sweep


class InFlight:
    """The point a sweep's process is evaluating, in a file of the run folder
    (``RunFolder.in_flight_path``), so that when the process dies of it (a crash of compiled code,
    memory run out) the sweep knows which point to try alone: the sweep that started it, for a pool
    process, or the next, for the sweep's own.
    A chunk's points are written as it starts (one JSON write), then the place of each as it is
    evaluated, into a mapped page (0.4 us a point; a write call took 1.7); -1 between chunks."""

    HEAD = 20

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.posix_fallocate(self._fd, 0, self.HEAD)  # its block on disk now: a page of a sparse file, mapped, would take
        self._head = mmap.mmap(self._fd, self.HEAD)  # it when written to, and on a full disk the process would die of SIGBUS

    def chunk(self, chunk: Chunk) -> None:
        body = orjson.dumps(chunk, option=orjson.OPT_SERIALIZE_NUMPY)
        self.at(-1)
        os.pwrite(self._fd, body, self.HEAD)
        os.ftruncate(self._fd, self.HEAD + len(body))

    def at(self, place: int) -> None:
        self._head[:] = b"%-19d\n" % place

    def close(self) -> None:
        self._head.close()
        os.close(self._fd)
        self.path.unlink(missing_ok=True)

    @classmethod
    def read(cls, path: Path) -> tuple[int, dict[str, Any]] | None:
        """The point in flight in ``path``, as (its place in the sweep, its parameters); None when none
        was (or the file is not one this class wrote)."""
        try:
            raw = path.read_bytes()
            place = int(raw[:cls.HEAD])
            index, params = orjson.loads(raw[cls.HEAD:])[place] if place >= 0 else (None, None)
        except (OSError, ValueError, IndexError, TypeError):
            return None
        return (index, params) if isinstance(index, int) and isinstance(params, dict) else None

    @classmethod
    def of_the_dead(cls, folder: RunFolder) -> list[tuple[int, dict[str, Any]]]:
        """What processes of this machine which ended were evaluating, by their in-flight files in
        ``folder`` (each ``read``'s answer, those with one); the files are removed."""
        points = []
        for pid in folder.in_flight_pids():
            if pid != os.getpid() and not running(pid):
                path = folder.in_flight_path(pid)
                point = cls.read(path)
                path.unlink(missing_ok=True)
                if point is not None:
                    points.append(point)
        return points


_PROCESS: dict[str, Any] = {}  # a pool process's spec, backtester, the keys the study holds and its InFlight


def _start_process(spec: StudySpec, known: frozenset[str], watched: bool = True) -> None:
    """This process ready to evaluate points; ``watched``: saying which in its in-flight file (a
    process of ``_alone`` does not: its parent watches it)."""
    _PROCESS.update(spec=spec, backtester=spec.backtester(), pruner=optuna.pruners.NopPruner(), known=known,
                    in_flight=InFlight(spec.folder.in_flight_path(os.getpid())) if watched else None)


def _start_pool_process(spec: StudySpec, known: frozenset[str], parent: int) -> None:
    """A pool process, which lives for the sweep, and no longer than the process it serves
    (``ends_with``): its start-up heap frozen, as a worker's is (``settled_heap``)."""
    ends_with(parent)
    report_crashes()  # a spawned process starts without it
    _start_process(spec, known)
    freeze_survivors()


def _evaluate(chunk: Chunk, planned: Callable[[tuple[str, str]], None] | None = None) -> list[Evaluated]:
    """Each point's evaluation; ``planned`` is told a point's key and fingerprint before its backtest."""
    spec, backtester, known, in_flight = _PROCESS["spec"], _PROCESS["backtester"], _PROCESS["known"], _PROCESS["in_flight"]
    if in_flight is not None:
        in_flight.chunk(chunk)
    out = []
    for place, (index, params) in enumerate(chunk):
        if in_flight is not None:
            in_flight.at(place)
        try:  # a point refused as it is planned or as its backtest runs (a feature the data cannot give)
            plan = backtester.plan(*spec.build.validated(params))
            key = make_job(spec, 0, params, plan).key
            if planned is not None:
                planned((key, plan.config_fingerprint))
            measured = None if key in known else Measurement.of(measure(backtester, plan, spec, _PROCESS["pruner"]))
        except REFUSALS as exc:
            out.append(Evaluated(index, None, None, None, str(exc)))
            continue
        out.append(Evaluated(index, key, plan.config_fingerprint, measured))
    if in_flight is not None:
        in_flight.at(-1)
    return out


def _evaluate_alone(conn: Connection, spec: StudySpec, known: frozenset[str], index: int, params: dict[str, Any]) -> None:
    """``_alone``'s process: the point's key and fingerprint once planned, then its evaluation."""
    report_crashes()  # a spawned process starts without it
    _start_process(spec, known, watched=False)
    conn.send(_evaluate([(index, params)], conn.send)[0])


def _alone(spec: StudySpec, known: frozenset[str], index: int, params: dict[str, Any]) -> Evaluated:
    """Point ``index`` evaluated in a process of its own: its evaluation; or, when that process
    dies too, the point as crashed, with how (and its key, if it was planned first)."""
    ctx = process_context(spec)
    mine, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_evaluate_alone, args=(theirs, spec, known, index, params))
    quietly(proc.start)
    theirs.close()
    planned: tuple[str | None, str | None] = (None, None)
    try:
        while True:
            got = mine.recv()
            if isinstance(got, Evaluated):
                return got
            planned = got
    except EOFError:
        proc.join()
        assert proc.exitcode is not None
        return Evaluated(index, *planned, None, crash_reason("sweep", proc.exitcode, SKIPPED), crashed=True)
    finally:
        proc.join()
        mine.close()


def _evaluate_in_pool(chunk: list[tuple[int, dict[str, Any]]]) -> list[Evaluated]:
    """A pool process's task: ``_evaluate``, then what survives it frozen. The first chunk makes
    the process's caches (some 70,000 objects), which full collections otherwise rescanned while
    each chunk's results were promoted: five collections, 0.14 s of a 10k sweep."""
    out = _evaluate(chunk)
    freeze_survivors()
    return out


def _roomy_results(pool: ProcessPoolExecutor) -> None:
    """Make the pipe a pool's results come back through hold a chunk's. In the default 64 KB pipe a
    pool process sat blocked in its write until this process's executor thread had read the results
    64 KB at a time, each read waiting for the GIL between this process's own evaluations and
    commits: 30 ms a chunk, a fifth of the pool process's time in a 10k sweep. Where the pipe cannot
    be resized (not Linux, or a lower limit), it stays as it is."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(pool._result_queue._writer.fileno(), fcntl.F_SETPIPE_SZ, RESULT_PIPE_BYTES)  # type: ignore[attr-defined]


Evaluations = Callable[[list[dict[str, Any]]], Iterator[list[Evaluated]]]


@contextlib.contextmanager
def _evaluations(spec: StudySpec, known: frozenset[str], workers: int, stopped: Callable[[], bool],
                 crashed: list[str]) -> Iterator[Evaluations]:
    """A function from points to chunks of their evaluations, from this process and ``workers - 1``
    more, which start at once. This process is one of the workers (no start-up to pay, nothing to
    send back): while the chunk due next is not ready it evaluates the first chunk no process has
    started, between committing chunks, so what it took is committed in turn, not left to commit at
    the end while the other processes wait idle. The chunks come in point order, but for what a
    dead pool process interrupted (``_pooled``). This process's own death, it leaves to the next
    sweep (``_sweep``: its in-flight point is tried alone first)."""

    def chunks(indexed: Chunk) -> list[Chunk]:
        size = chunk_size(len(indexed), workers)
        return [indexed[i:i + size] for i in range(0, len(indexed), size)]

    _start_process(spec, known)
    try:
        if workers == 1:
            yield lambda points: (_evaluate(c) for c in chunks(list(enumerate(points))) if not stopped())
            return

        def evaluate(points: list[dict[str, Any]]) -> Iterator[list[Evaluated]]:
            left, crashes = list(enumerate(points)), [0]
            while left:
                pool = _new_pool(spec, known, workers - 1)
                try:
                    left = yield from _pooled(pool, chunks(left), stopped, crashed, crashes)
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)

        yield evaluate
    finally:
        _PROCESS.pop("in_flight").close()
        InFlight.of_the_dead(spec.folder)  # the pool processes' files, none with a point in flight: each death was dealt with


def _new_pool(spec: StudySpec, known: frozenset[str], processes: int) -> ProcessPoolExecutor:
    """A pool of ``processes``, started."""
    pool = quietly(lambda: ProcessPoolExecutor(processes, process_context(spec), _start_pool_process, (spec, known, os.getpid())))
    _roomy_results(pool)
    quietly(lambda: pool.submit(int))  # the processes start with the first task
    return pool


def _result(future: Future[list[Evaluated]]) -> list[Evaluated] | None:
    """A chunk's evaluations, if its process finished it."""
    return future.result() if future.done() and not future.cancelled() and future.exception() is None else None


def _pooled(pool: ProcessPoolExecutor, todo: list[Chunk], stopped: Callable[[], bool], crashed: list[str],
            crashes: list[int]) -> Generator[list[Evaluated], None, Chunk]:
    """The evaluations of ``todo``'s chunks, in order, from ``pool`` and this process (see
    ``_evaluations``). Returns the points left for a new pool: none, but after a pool process died (a
    crash of compiled code, memory run out), which breaks the pool. The points its processes were
    evaluating (``InFlight``) are then each evaluated alone (``_alone``), and those that end that
    process too are crashed points (``Evaluated.crashed``; ``crashes`` counts them); with what the
    pool had finished, they come as one chunk, and the rest is left. When none ends its process (a
    death no point repeats), or at ``MAX_CRASHES``, ``crashed`` says why the rest is not evaluated."""
    spec, known = _PROCESS["spec"], _PROCESS["known"]
    futures = quietly(lambda: [pool.submit(_evaluate_in_pool, c) for c in todo])
    here: dict[int, list[Evaluated]] = {}  # chunks this process took
    untaken = 0  # chunks before it are started elsewhere or taken by this process
    for i, future in enumerate(futures):
        while i not in here and not future.done() and not stopped():
            untaken = max(untaken, i)
            while untaken < len(futures) and not futures[untaken].cancel():
                untaken += 1
            if untaken == len(futures):
                break  # every chunk is being evaluated elsewhere: wait for the one due
            here[untaken] = _evaluate(todo[untaken])
            untaken += 1
        if stopped():
            return []
        try:
            chunk = here.pop(i) if i in here else future.result()
        except BrokenProcessPool:
            pool.shutdown(wait=True)  # its processes ended and joined: their in-flight files tell (their futures failed)
            params = {index: p for c in todo[i:] for index, p in c}
            alone = [_alone(spec, known, index, params[index]) for index, _ in InFlight.of_the_dead(spec.folder) if index in params]
            got = sorted([e for k in range(i, len(todo)) for e in (here.get(k) or _result(futures[k]) or [])] + alone,
                         key=lambda e: e.index)
            if got:
                yield got
            crashes[0] += sum(e.crashed for e in alone)
            if not any(e.crashed for e in alone) or crashes[0] >= MAX_CRASHES:
                crashed.append("a process evaluating the sweep's points died (a crash of compiled code, or memory run out; "
                               "where, Python's faulthandler wrote to stderr), " + (
                                   f"the {MAX_CRASHES}th point to crash its process, alone too: a strategy that crashes this "
                                   "often needs mending" if crashes[0] >= MAX_CRASHES else
                                   "and no point it was evaluating did alone") + ": the rest were not evaluated")
                return []
            have = {e.index for e in got}
            return [(index, p) for index, p in params.items() if index not in have]
        yield chunk
    return []


def sweep(spec: StudySpec, options: SweepOptions = SweepOptions(), on_progress: OnProgress | None = None,
          points: list[dict[str, Any]] | None = None) -> RunSummary:
    """Evaluate the sweep's points (``sweep_points``, or the trial parameters given) not yet in
    ``spec``'s study and add them to it as trials; write the run's records. Refused while workers
    run on the study (their trials and the sweep's would take the same numbers). The heap is
    settled from the start to the records (``settled_heap``): making 10,000 points took twice as
    long with full collections rescanning what an earlier sweep left, and 10,000 trials thawed for
    the records cost full collections 0.1-0.2 s."""
    with settled_heap():
        return _sweep(spec, options, on_progress, points)


def _sweep(spec: StudySpec, options: SweepOptions, on_progress: OnProgress | None,
           points: list[dict[str, Any]] | None) -> RunSummary:
    clock = spec.folder.clock
    started = clock()
    cfg = spec.config
    given = points is not None
    points = sweep_points(spec.space, options) if points is None else points
    count = len(points)
    candles = Backtester(CACHE).candles(spec.fixed)  # cached for the workers
    storage = open_storage(spec.storage_url, cfg.meta.stale_trial_seconds, cfg.meta.storage_retry_seconds, proxy=cfg.meta.proxy)
    check_clock(spec.storage_url, cfg.meta.stale_trial_seconds, cfg.meta.storage_retry_seconds, cfg.meta.proxy)
    study = optuna.create_study(storage=storage, study_name=spec.name, direction="maximize", load_if_exists=True,
                                sampler=spec.sampler(), pruner=spec.pruner())
    notes = check_signature(study, spec, candles, options.force_resume, options.backfill_signature)
    spec.folder.remove_stale_temporaries()
    recover_stale_trials(study, cfg.meta.stale_trial_seconds, cfg.meta.storage_retry_seconds)
    unfinished = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    if unfinished:
        raise GenesisError(f"study {spec.name!r} has {len(unfinished)} running or queued trial(s): a sweep adds trials only to a "
                           "study no worker is running (wait for them, or sweep into another study: --study NAME)")
    cache = ScoreCache(cache_url(spec.storage_url), cfg.meta.stale_trial_seconds, cfg.meta.storage_retry_seconds)
    notes += mend_records(spec, study, cache)
    notes += _earlier_crashes(spec, study, cache)
    before = study.get_trials(deepcopy=False)
    known = frozenset(t.user_attrs["genesis"]["cache_key"] for t in before if "cache_key" in t.user_attrs.get("genesis", {}))
    best = best_score(before)  # then of each chunk added: the whole study's, each chunk, made a 981,552-point sweep 5.6x as long
    workers = sweep_processes(options, count)
    seen = set(known)
    done = repeated = in_study = moved = 0
    refused: list[str] = []
    crashes: list[int] = []  # trials of points that crashed their process
    t0 = time.time()
    interrupted: list[int] = []
    crashed: list[str] = []
    with stopping_on_signals(interrupted.append, options.deaf_once_stopped):  # till the records: a second Ctrl-C cannot cut them short
        with _evaluations(spec, known, workers, lambda: bool(interrupted), crashed) as evaluate:
            for chunk in evaluate(points):
                new: list[_New] = []
                for e in chunk:
                    done += 1
                    if e.key is not None and e.key in seen:
                        in_study += e.key in known
                        repeated += e.key not in known
                        continue
                    if not e.crashed and (e.key is None or e.measured is None or e.config_fingerprint is None):
                        refused.append(e.error or "")  # refused by the strategy
                        continue
                    if e.key is not None:
                        seen.add(e.key)
                    new.append(_New(points[e.index], e.key, e.config_fingerprint, e.measured, e.error))
                chunk_moved, chunk_best, failed = _commit(spec, study, cache, new)
                crashes += failed
                moved += chunk_moved
                best = max(best, chunk_best, key=lambda b: -math.inf if b is None else b)
                freeze_survivors()  # the study's new trials live as long as it does: full collections rescanned each (1.4 s of 10k points)
                if on_progress is not None:
                    elapsed = max(time.time() - t0, 1e-9)
                    on_progress(Progress(done, len(points), done / elapsed, best,
                                         (repeated + in_study) / max(done, 1)))
        finished = clock()
        added = done - repeated - in_study - len(refused) - len(crashes)
        method = "given" if given else options.method
        notes.append(f"sweep: {method}, {len(points):,} points" + ("" if method in ("grid", "given") else f" (seed {options.seed})")
                     + f" with {workers} process(es): {added:,} added, {in_study:,} already in the study, "
                     f"{repeated:,} repeated a configuration" + (f", {len(crashes):,} crashed their process" if crashes else "")
                     + (f", {len(points) - done:,} not evaluated" if done < len(points) else ""))
        if crashes:
            notes.append(f"sweep: {len(crashes):,} point(s) ended the process evaluating them, then a process of their own "
                         f"(a crash of compiled code: where, Python's faulthandler wrote to stderr): trial(s) {spans(crashes)}, "
                         f"{SKIPPED}; the others were evaluated")
        if refused:
            notes.append(f"sweep: the strategy refused {len(refused):,} point(s) (not added), the first: {refused[0]}")
        if moved:
            notes.append(f"sweep: {moved:,} of its trials took later numbers than expected: another process added trials to the "
                         "study meanwhile (a second sweep, or workers started since)")
        session = Session(
            started=iso(started), finished=iso(finished), seconds=round(finished - started, 3), workers=workers, max_trials=None,
            interrupted=bool(interrupted), signal=None if not interrupted else signal.Signals(interrupted[0]).name,
            stopped_reason=crashed[0] if crashed else None,
            widened=0, notes=notes, failed_workers=[], preflight=options.preflight,
        )
        return record_results(spec, study, session)


@dataclass(frozen=True)
class _New:
    """A point the sweep adds to the study: its parameters and evaluation, or why it crashed its process (``error``)."""

    params: dict[str, Any]
    key: str | None
    config_fingerprint: str | None
    measured: Measurement | None
    error: str | None = None


def _commit(spec: StudySpec, study: optuna.Study, cache: ScoreCache, new: list[_New]) -> tuple[int, float | None, list[int]]:
    """A chunk into the run: its trials appended first, so that they take their numbers from the
    storage whatever other process adds trials meanwhile (another sweep of the study, a worker
    started since); then, under those numbers, their artifacts (made durable together) and their
    cache entries (one transaction). A stop in between leaves trials whose artifacts or entries the
    next session writes (``mend_records``). Artifacts were written first, under the numbers the
    trials were expected to take: a second sweep of the study at the same time wrote over the
    first's, and left its own trials without one. A point that crashed its process is a FAIL trial
    with the reason, its key recorded (when it was planned) so that later sweeps skip it. Returns how
    many took other numbers than expected, the chunk's best score (``best_score``) and the numbers of
    its FAIL trials."""
    first = trial_count(study)
    now = datetime.datetime.now()  # as create_trial would, without converting and validating twice
    trials = [FrozenTrial(number=-1, trial_id=-1, state=TrialState.FAIL if n.measured is None else TrialState.COMPLETE,
                          value=None if n.measured is None else n.measured.score.production, values=None,
                          datetime_start=now, datetime_complete=now,
                          params={p: spec.space.held(p, v) for p, v in n.params.items() if p in spec.space.distributions},
                          distributions=dict(spec.space.distributions), system_attrs={}, intermediate_values={},
                          user_attrs=_attributes(n))
              for n in new]
    numbers = add_finished(study, trials)
    measured = [(number, n, n.measured) for number, n in zip(numbers, new, strict=True) if n.measured is not None]
    spec.folder.write_trials([(number, TrialArtifact.json_of(m.record_json, number, n.params, m.score)) for number, n, m in measured])
    cache.store_many(spec.name, [(n.key, number, CacheEntry.json_of(spec.name, number, m.score, m.metrics, m.record_json))
                                 for number, n, m in measured if n.key is not None])
    failed = [number for number, n in zip(numbers, new, strict=True) if n.measured is None]
    return sum(number != first + i for i, number in enumerate(numbers)), best_score(trials), failed


def _attributes(n: _New) -> dict[str, Any]:
    """A point's trial attributes; a crashed point's, why, and its key and fingerprint when it was planned."""
    if n.measured is not None:
        assert n.key is not None and n.config_fingerprint is not None
        return trial_attributes(n.measured.score, n.measured.metrics, None, n.config_fingerprint, n.key, SWEPT)
    return {"phase": SWEPT, "error": n.error, "genesis": {} if n.key is None else {"cache_key": n.key,
                                                                                  "config_fingerprint": n.config_fingerprint}}


def _earlier_crashes(spec: StudySpec, study: optuna.Study, cache: ScoreCache) -> list[str]:
    """The points an earlier sweep's own process was evaluating when it died (its in-flight file is
    left: a pool process's, the sweep itself dealt with), each evaluated alone: one that ends its
    process again is failed in the study, so that this sweep goes past it. That death ended the
    earlier sweep without a word but the shell's (``Segmentation fault``); run again, it died on the
    same point, for ever. A note for those failed."""
    known: frozenset[str] = frozenset()  # each evaluated to the end: a point already in the study did not crash
    alone = [(params, _alone(spec, known, -1, params)) for _, params in InFlight.of_the_dead(spec.folder)]
    crashed = [_New(params, e.key, e.config_fingerprint, None, e.error) for params, e in alone if e.crashed]
    if not crashed:
        return []
    failed = _commit(spec, study, cache, crashed)[2]
    return [f"an earlier sweep's process died evaluating {len(failed)} point(s) that, each alone in a process of its own, "
            f"ended it again (a crash of compiled code: where, Python's faulthandler wrote to stderr): trial(s) {spans(failed)}, "
            f"{SKIPPED}"]

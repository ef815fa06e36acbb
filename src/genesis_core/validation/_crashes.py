"""Backtests that crash the process running them (a bug in compiled code: a strategy's numba kernel
reading past an array on some window's bars), met by validation or promotion, which run every
backtest in their own process. Such a crash ended ``genesis validate`` with ``Segmentation fault``
and the next one at the same place, for ever: the run could not be validated. Now each backtest is
said in flight in the run folder before it runs; the next command runs the one a dead process left
there alone, in a process of its own, and when that ends too, the config is refused from then on
(``crashes.json``: a window that refuses a candidate lists it apart with the reason, a neighbour is
left out of its plateau), for the same code on the same bars.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator

import orjson
from pydantic import ValidationError

from genesis_core.backtest import BacktestConfig, Backtester
from genesis_core.errors import REFUSALS, StrategyError, report_crashes
from genesis_core.optimizer import CRASHES, InFlight, crash_reason, quietly, running
from genesis_core.plugins import code_fingerprint
from genesis_core.records import RunFolder
from genesis_core.strategy import get_strategy

FOR_GOOD = CRASHES | {signal.SIGKILL}  # a death the config itself brings (memory run out too), not a stop
THEN = "refused by later validations and promotions of this code on these bars"


def _run(config: BacktestConfig) -> None:
    """A process of its own's backtest: a refusal is not a crash (validation raises it again itself)."""
    report_crashes()  # a spawned process starts without it
    with contextlib.suppress(*REFUSALS):
        Backtester().run(config)


def _alone(config: BacktestConfig) -> int:
    """The exit code of a process of its own that runs ``config``: forked, unless another thread
    runs (a server's, whose locks a fork would copy held)."""
    alone = threading.current_thread() is threading.main_thread() and threading.active_count() == 1
    ctx = multiprocessing.get_context("fork") if alone else multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_run, args=(config,))
    quietly(proc.start)
    proc.join()
    assert proc.exitcode is not None
    return proc.exitcode


def _earlier(folder: RunFolder, process: str) -> dict[str, str]:
    """The backtests that dead processes of this machine left in flight in ``folder``, each run alone:
    those that end that process too (a crash, or memory run out), with why; the files are removed."""
    crashed = {}
    for pid in folder.in_flight_pids("validate"):
        if pid == os.getpid() or running(pid):
            continue
        path = folder.in_flight_path(pid, "validate")
        left = InFlight.read(path)
        path.unlink(missing_ok=True)
        if left is None:  # none in flight
            continue
        try:
            key, config = str(left[1]["key"]), BacktestConfig.model_validate(left[1]["config"])
        except (KeyError, ValidationError):  # a file this module did not write
            continue
        exitcode = _alone(config)
        if -exitcode in FOR_GOOD:
            crashed[key] = crash_reason(process, exitcode, THEN)
    return crashed


@contextlib.contextmanager
def crash_watch(backtester: Backtester, folder: RunFolder, process: str) -> Iterator[None]:
    """While it is held, ``backtester`` says each backtest it runs in ``folder``'s in-flight file
    first, and refuses (a StrategyError) those known to crash; ``process`` names the command in the
    reason (``validation``, ``promotion``)."""
    crashed = _earlier(folder, process)
    if crashed:
        folder.add_crashes(crashed)
    crashes = folder.read_crashes()
    in_flight = InFlight(folder.in_flight_path(os.getpid(), "validate"))

    def watch(config: BacktestConfig) -> None:
        """What a crash is of: the config, the code that runs it and the bars of its data file (a
        fixed strategy, or other data, is another backtest). Hashed as it is: 30 us, where
        ``fingerprint``'s normalising took 110 of a backtest's 720."""
        body = config.model_dump(mode="json")
        key = hashlib.sha256(orjson.dumps({"config": body, "code": code_fingerprint(type(get_strategy(config.strategy))),
                                           "bars": backtester.candles(config).fingerprint}, option=orjson.OPT_SORT_KEYS)).hexdigest()
        if key in crashes:
            raise StrategyError(crashes[key])
        in_flight.chunk([(0, {"key": key, "config": body})])
        in_flight.at(0)

    before, backtester.watch = backtester.watch, watch
    try:
        yield
    finally:
        backtester.watch = before
        in_flight.close()

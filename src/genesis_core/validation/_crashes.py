"""Backtests that crash the process running them (a bug in compiled code: a strategy's numba kernel
reading past an array on some window's bars). Validation, promotion and preflight ran every
backtest in their own process: such a crash ended ``genesis validate`` with ``Segmentation fault``,
and the next one at the same place, for ever; in preflight it ended every ``genesis optimize`` and
``genesis sweep`` of the study before the optimizer, which fails such a trial, began; in the MCP
server's tools it ended the server.

Each now runs its backtests in a process of its own, told of each before it runs (``survived``):
when one crashes that process, the work runs again in a new one with that backtest refused (a
StrategyError with the reason: a window that refuses a candidate lists it apart with the reason, a
neighbour is left out of its plateau). Validation and promotion also record it in the run folder
(``crashes.json``) and refuse it from then on without running it, for the same code on the same bars."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import signal
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import numpy as np
import orjson

from genesis_core.backtest import Backtester, Plan
from genesis_core.errors import GenesisError, StrategyError, report_crashes
from genesis_core.metrics import max_drawdown
from genesis_core.optimizer import CRASHES, child_context, crash_reason, died_of, ends_with, quietly
from genesis_core.plugins import forbidden_why, modules_forbidden
from genesis_core.records import RunFolder

FOR_GOOD = CRASHES | {signal.SIGKILL}  # a death the config itself brings (memory run out too), not a stop
THEN = "refused from then on, for this code on these bars"
T = TypeVar("T")
Said = Callable[[str, dict[str, Any]], None]  # told a backtest's key and config before it runs


def _key(plan: Plan) -> tuple[str, dict[str, Any]]:
    """What a crash is of, and the config as JSON: the config (its warm-up and window resolved), the
    code that runs it and the bars of its data file (a fixed strategy, or other data, is another
    backtest). Hashed as it is: 30 us, where ``fingerprint``'s normalising took 110 of a backtest's 720."""
    body = plan.config.model_dump(mode="json")
    return hashlib.sha256(orjson.dumps({"config": body, "code": plan.code, "bars": plan.candles.fingerprint},
                                       option=orjson.OPT_SORT_KEYS)).hexdigest(), body


@contextlib.contextmanager
def _watching(backtester: Backtester, crashes: dict[str, str], said: Said) -> Iterator[None]:
    """While it is held, ``backtester`` refuses (a StrategyError with the reason) each backtest of
    ``crashes`` and tells ``said`` of every other before its strategy decides."""
    def watch(plan: Plan) -> None:
        key, body = _key(plan)
        if key in crashes:
            raise StrategyError(crashes[key])
        said(key, body)

    before, backtester.watch = backtester.watch, watch
    try:
        yield
    finally:
        backtester.watch = before


def _serve(conn: Connection, call: Callable[[Backtester], T], crashes: dict[str, str], forbidden: str | None,
           parent: int, backtester: Backtester | None) -> None:
    """``survived``'s process: each backtest's key and config sent before it runs, then what ``call``
    returned, or the exception it raised."""
    ends_with(parent)  # a validation whose caller was killed goes on for no one
    report_crashes()  # a spawned process starts without it
    bt = backtester or Backtester()
    try:
        with modules_forbidden(forbidden), _watching(bt, crashes, lambda key, body: conn.send((key, body))):
            out: Any = ("returned", call(bt))
    except GenesisError as exc:  # raised again in the caller's process, as if it ran there
        out = ("raised", exc if _pickles(exc) else GenesisError(str(exc)))
    except Exception as exc:  # noqa: BLE001 - a bug: where, in its text
        out = ("raised", RuntimeError("".join(traceback.format_exception(exc))))
    conn.send(out)


def _pickles(exc: BaseException) -> bool:
    """Whether ``exc`` comes back from a pickle as it went (one whose ``__init__`` takes other
    arguments than its message does not)."""
    try:
        return type(pickle.loads(pickle.dumps(exc))) is type(exc)
    except Exception:  # noqa: BLE001 - any failure is a no
        return False


def survived(call: Callable[[Backtester], T], process: str, at_most: int, folder: RunFolder | None = None,
             backtester: Backtester | None = None) -> tuple[T | None, list[tuple[dict[str, Any], str]]]:
    """``call(backtester)`` run in a process of its own, told of each backtest before it runs: a fork
    of this one is given ``backtester`` (its data read already), a spawned one a new Backtester. When
    a backtest crashes that process (or runs it out of memory), ``call`` runs again in a new one, that
    backtest refused (a StrategyError with the reason, ``process`` named in it), at most ``at_most``
    times. With a run ``folder``, the crashes recorded there are refused from the start, and a crash
    of compiled code is added to them; a process killed (by the OOM killer, or by hand) refuses its
    backtest in this call only. Returns what ``call`` returned (None after that many crashes, a
    GenesisError with a ``folder``) and the crashed backtests' configs (JSON) with their reasons.
    Another death (a stop signal) is a GenesisError."""
    crashes = {} if folder is None else folder.read_crashes()
    crashed: list[tuple[dict[str, Any], str]] = []
    max_drawdown(np.ones(2))  # numba's compiler set up here, by a first kernel load (0.45 s): forked after, each loads its own in ms
    while len(crashed) < at_most:
        ctx = child_context()
        mine, theirs = ctx.Pipe(duplex=False)
        given = backtester if ctx.get_start_method() == "fork" else None  # a fork's arguments are not pickled
        proc = ctx.Process(target=_serve, args=(theirs, call, crashes, forbidden_why(), os.getpid(), given))
        quietly(proc.start)
        theirs.close()
        last, got = None, None
        try:
            while (got := mine.recv())[0] not in ("returned", "raised"):
                last = got  # a backtest's (key, config), before it runs
        except EOFError:  # the process died
            got = None
        except BaseException:  # a Ctrl-C: the process ignores it (``quietly``)
            proc.kill()
            raise
        finally:
            proc.join()
            mine.close()
        if got is not None:
            if got[0] == "raised":
                raise got[1]
            return got[1], crashed
        assert proc.exitcode is not None
        if last is None or -proc.exitcode not in FOR_GOOD:
            raise GenesisError(f"the {process} process died of {died_of(proc.exitcode)}")
        lasting = folder is not None and -proc.exitcode in CRASHES
        crashes[last[0]] = crash_reason(process, proc.exitcode, THEN if lasting else "refused")
        if folder is not None and lasting:
            folder.add_crashes({last[0]: crashes[last[0]]})
        crashed.append((last[1], crashes[last[0]]))
    if folder is not None:
        raise GenesisError(f"{at_most} backtests crashed the {process} process, each recorded in {folder.crashes_path}: "
                           "run the same command again to go on (those are refused without being run)")
    return None, crashed

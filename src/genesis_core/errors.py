"""Exceptions with messages a user can act on; the CLI maps each to an exit code."""

from __future__ import annotations

import contextlib
import difflib
import faulthandler
import inspect
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


def report_crashes() -> None:
    """Have a crash of compiled code (a segfault in a strategy's numba kernel, an abort in a
    library) print the Python stack of each thread to stderr, naming the line that called into it,
    where the process would otherwise die saying ``Segmentation fault`` alone."""
    if sys.__stderr__ is not None:
        with contextlib.suppress(ValueError, OSError):  # no file descriptor behind stderr: nothing to write to
            faulthandler.enable(file=sys.__stderr__)


class GenesisError(Exception):
    """Base of every error Genesis-Core raises on purpose (never a bug)."""

    exit_code = 1


class DataError(GenesisError):
    """Candles that cannot be trusted: the message names the file, row and problem."""

    exit_code = 2


class ConfigError(GenesisError):
    """A configuration that does not validate: the message names the key path."""

    exit_code = 2


class StrategyError(GenesisError):
    """What a strategy returned or raised that a backtest cannot take (an order the engine cannot
    fill, a trace count that is no count, an exception of its own code): the message names the
    strategy, the value and its bar, or the exception and its line. In a study it fails the trial
    with that reason, as a config the strategy refuses does: a strategy can err for some parameters only."""


# What a point of a search space can be refused with: by its config (the strategy's own checks), by
# the data, or by the engine (what the strategy decided for it). A study fails that trial with the
# reason and goes on; validation leaves such a neighbour out of a candidate's robustness map.
REFUSALS = (ConfigError, DataError, StrategyError)


# what a user's code (a strategy, a score function) may raise that fails its trial, saying where, instead of ending
# the run: any exception, and ``sys.exit()`` (a script's habit), which ended the run with every trial before unrecorded
USER_FAULTS = (Exception, SystemExit)


def raised(exc: BaseException, owner: object) -> str:
    """``raised ValueError: msg at file:line, in func`` of an exception a user's code (``owner``: its
    class or function) raised: the line in the owner's own file where it has one, so the user sees
    their line, not a library's."""
    frames = traceback.extract_tb(exc.__traceback__)
    try:
        source = inspect.getsourcefile(owner)  # type: ignore[arg-type]
    except TypeError:
        source = None
    at = next((f for f in reversed(frames) if f.filename == source), frames[-1])
    return f"raised {type(exc).__name__}: {clip(str(exc))} at {at.filename}:{at.lineno}, in {at.name}"


def clip(text: str, limit: int = 100) -> str:
    """``text`` cut to about ``limit`` characters, so a hostile value is never echoed whole."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def problems(exc: ValidationError, limit: int = 5) -> str:
    """A file's first ``limit`` faults (pydantic's) in one line, each at its field, our validators'
    words as they wrote them (a record, a model file; a config's are ``describe_validation_error``'s)."""
    return "; ".join(": ".join([".".join(map(str, e["loc"]))] * bool(e["loc"]) + [fault_message(e)]) for e in exc.errors()[:limit])


def fault_message(error: Any) -> str:
    """Pydantic's message of one fault, without its ``Value error, `` before our validators' words,
    and naming the value where a type was expected (``fast: "10"`` and ``fast: 10.5`` read the same)."""
    msg: str = error["msg"].removeprefix("Value error, ")
    return f"{msg}, not {as_written(error['input'])}" if msg.startswith("Input should be a valid ") and "input" in error else msg


def as_written(value: Any) -> str:
    """A value as the YAML or JSON that gave it: ``'10' (a number in quotes, read as text)``, ``10.5``,
    ``true``, ``null``, ``a list``."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "a mapping"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f"{clip(repr(value))} (text)"
        return f"{clip(repr(value))} (a number in quotes, read as text)"
    return clip(repr(value))


def unknown_key_hint(key: str, known: Sequence[str]) -> str:
    """What follows "unknown key" in a message: the closest of ``known``, or else all of them."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else (f"; known keys: {', '.join(known)}" if known else "")

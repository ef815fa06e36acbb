"""What a strategy is: typed parameters and a pure function from features to per-bar decisions."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from inspect import isabstract
from typing import Any, ClassVar

import numpy as np

from genesis_core.config import StrictModel
from genesis_core.errors import ConfigError, StrategyError, clip
from genesis_core.features import FeatureStore, parse_spec
from genesis_core.plugins import describe, resolve


@dataclass(frozen=True)
class Decisions:
    """Per-bar orders for the engine, decided at each bar's close and filled at the next open.

    ``side`` is +1 (long candidate), -1 (short candidate) or 0; ``size`` the fraction of equity;
    distances are in price units (NaN = no such stop); ``exit_long``/``exit_short`` ask to close
    an open position of that side. ``trace`` holds the strategy's counters (see ``StrategyTrace``).
    """

    side: np.ndarray
    size: np.ndarray
    stop_dist: np.ndarray
    take_dist: np.ndarray
    trail_dist: np.ndarray
    exit_long: np.ndarray
    exit_short: np.ndarray
    trace: StrategyTrace
    cooldown_bars: int = 0
    max_bars_held: int = 0

    @staticmethod
    def empty(n: int, trace: StrategyTrace) -> Decisions:
        """No orders, no stops, no exits: a base that simple strategies fill in."""
        return Decisions(
            np.zeros(n, np.int8), np.zeros(n), np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan),
            np.zeros(n, np.bool_), np.zeros(n, np.bool_), trace,
        )


@dataclass(frozen=True)
class StrategyTrace:
    """Why a strategy traded as it did, counted over the decision bars of the window.

    ``warmup_bars_in_window`` bars had an input still warming up and were not evaluated;
    ``signals`` are evaluated bars where the strategy had a direction; each signal either becomes a
    ``candidate`` or is counted once in ``blocked`` under the first check it failed.
    """

    bars_evaluated: int
    warmup_bars_in_window: int
    signals: int
    candidates: int
    blocked: dict[str, int] = field(default_factory=dict)


def _count(value: Any) -> bool:
    """A whole number, 0 or more: an int (not a bool) or a NumPy integer."""
    return (type(value) is int or isinstance(value, np.integer)) and bool(value >= 0)


def checked_warmup(bars: Any) -> int:
    """What ``Strategy.warmup_bars`` returned, or StrategyError: a float stopped the window's slicing
    with a TypeError, and a negative count ran the engine from a negative bar: the window's last first."""
    if not _count(bars):
        raise StrategyError(f"returned {clip(repr(bars))} from warmup_bars: a whole number of bars, 0 or more")
    return int(bars)


def checked_decisions(decided: Any) -> Decisions:
    """What ``Strategy.decide`` returned, or StrategyError: another object ended in an AttributeError
    inside the engine, and a trace's count that is no count ended in a pydantic error about the record."""
    if not isinstance(decided, Decisions):
        raise StrategyError(f"returned {describe(decided)} from decide, not a genesis_core.strategy.Decisions")
    trace = decided.trace
    if not isinstance(trace, StrategyTrace):
        raise StrategyError(f"returned {describe(trace)} as its decisions' trace, not a genesis_core.strategy.StrategyTrace")
    blocked = trace.blocked
    if not isinstance(blocked, dict) or not all(isinstance(reason, str) for reason in blocked):
        raise StrategyError(f"counted {clip(repr(blocked))} as its trace's blocked: a dict of counts by reason")

    def refused(name: str, count: Any) -> StrategyError:
        return StrategyError(f"counted {clip(repr(count))} as its trace's {name}: a whole number, 0 or more")

    for name in ("bars_evaluated", "warmup_bars_in_window", "signals", "candidates"):
        if not _count(getattr(trace, name)):
            raise refused(name, getattr(trace, name))
    for reason, count in blocked.items():  # a name for it only once it is refused: 2 us a backtest, a sweep's 0.2 ms
        if not _count(count):
            raise refused(f"blocked[{reason!r}]", count)
    return decided


@dataclass(frozen=True)
class Training:
    """What a fitted resource (a model) learnt from: its market and its span, both ends inclusive.
    Results on that market inside that span are in-sample for it, whatever the optimizer did.
    ``inputs``: the feature specs it reads, each with its standard deviation over the training bars
    (above 0), so a window that feeds one a constant is named: the model's output there is not what
    it was fitted to give."""

    resource: str
    symbol: str | None
    timeframe: str | None
    first_bar: str
    last_bar: str
    inputs: tuple[tuple[str, float], ...] = ()


def checked_resources(resources: Any) -> dict[str, str]:
    """What ``Strategy.resources`` returned, or StrategyError: it goes into the config's fingerprint
    and every result's record, where another object ended in a TypeError or a pydantic error."""
    if not isinstance(resources, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in resources.items()):
        raise StrategyError(f"returned {describe(resources)} from resources, not a dict of names to fingerprints (str to str)")
    return resources


def checked_trained(trained: Any) -> list[Training]:
    """What ``Strategy.trained_on`` returned, or StrategyError: another object ended the leakage
    check in an AttributeError."""
    if not isinstance(trained, list) or not all(isinstance(t, Training) for t in trained):
        raise StrategyError(f"returned {describe(trained)} from trained_on, not a list of genesis_core.strategy.Training")
    for t in trained:
        if not isinstance(t.inputs, tuple) or not all(_an_input(i) for i in t.inputs):
            raise StrategyError(f"returned a Training whose inputs are {describe(t.inputs)}, not a tuple of (feature spec, "
                                "standard deviation above 0) pairs")
    return trained


def _an_input(item: Any) -> bool:
    if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], float | int)
            and not isinstance(item[1], bool)):
        return False
    try:
        parse_spec(item[0])
    except ConfigError:
        return False
    return math.isfinite(item[1]) and item[1] > 0


class Strategy(ABC):
    """Subclass, set ``name`` and ``Params``, implement ``warmup_bars`` and ``decide``."""

    name: ClassVar[str]
    Params: ClassVar[type[StrictModel]]

    @abstractmethod
    def warmup_bars(self, params: Any, timeframe_seconds: int) -> int:
        """Bars of history the decisions need before the first decision bar."""

    @abstractmethod
    def decide(self, features: FeatureStore, params: Any, start: int) -> Decisions:
        """Decisions for every bar of ``features.candles``; only bars ``start``.. are acted on."""

    def resources(self, params: Any) -> dict[str, str]:
        """Fingerprints of files the strategy reads (e.g. a model), so results can name them."""
        return {}

    def trained_on(self, params: Any) -> list[Training]:
        """The data its fitted resources were trained on, so preflight can refuse leakage."""
        return []


_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy selectable by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def get_strategy(name: str) -> Strategy:
    """A registered strategy by name, an installed package's (entry point group
    ``genesis_core.strategies``), or a user's class by ``package.module:Class``."""
    cls = resolve(name, _REGISTRY, "strategy", "genesis_core.strategies")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or isabstract(cls):
        raise ConfigError(f"strategy {name!r} is {describe(cls)}, not a genesis_core.strategy.Strategy subclass "
                          "that implements warmup_bars and decide")
    return cls()

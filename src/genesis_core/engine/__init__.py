"""Execution: strategy decisions -> fills, trades and an equity curve (see ``_kernel`` for the rules)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from genesis_core.config import StrictModel
from genesis_core.data import Candles, format_ts
from genesis_core.engine._kernel import (
    COUNTER_DTYPE,
    COUNTERS,
    EXIT_REASONS,
    ORDER_ARRAYS,
    TRADE_DTYPE,
    CostRates,
    Orders,
    Prices,
    first_fault,
    run_bars,
)
from genesis_core.errors import StrategyError
from genesis_core.strategy import Decisions


class Carry(StrictModel):
    """Borrow or funding a position pays per day held, in basis points of its value, by side
    (negative: received, as a perpetual's funding can be)."""

    long: float = Field(0.0, ge=-100.0, le=100.0)
    short: float = Field(0.0, ge=-100.0, le=100.0)

    @property
    def charged(self) -> bool:
        return bool(self.long or self.short)


class Costs(StrictModel):
    """Trading costs, each in basis points of notional per fill, the starting equity, and carry."""

    fee_bps: float = Field(10.0, ge=0.0, le=1000.0)
    slippage_bps: float = Field(5.0, ge=0.0, le=1000.0)
    initial_equity: float = Field(10_000.0, gt=0.0)
    # none is left out, so that a config without carry serialises, and is fingerprinted, as configs did
    # before carry was modelled (their studies resume, their artifacts re-run)
    carry_bps_per_day: Carry = Field(default_factory=Carry, exclude_if=lambda c: not c.charged)

    def describe(self) -> str:
        """The costs in one line, as a report's summary shows them (carry only when there is one)."""
        c = self.carry_bps_per_day
        carry = [f"{bps:g} bps a day on {side}s" for side, bps in (("long", c.long), ("short", c.short)) if bps]
        return (f"fee {self.fee_bps:g} bps, slippage {self.slippage_bps:g} bps, initial equity {self.initial_equity:,.0f}"
                + (f", carry {' and '.join(carry)}" if carry else ""))

    def rates(self) -> CostRates:
        """As the kernel takes them: fractions of notional, and carry a day."""
        return CostRates(self.fee_bps / 1e4, self.slippage_bps / 1e4, self.initial_equity,
                         self.carry_bps_per_day.long / 1e4, self.carry_bps_per_day.short / 1e4)


@dataclass(frozen=True)
class EngineResult:
    """``equity[0]`` is the initial equity, ``equity[i]`` the equity at the close of decision bar i-1."""

    equity: np.ndarray
    trades: np.ndarray  # one record per closed trade, fields TRADE_DTYPE
    counters: dict[str, int]  # COUNTER_DTYPE's fields


# Each array of Decisions as run_bars takes it, and what its values may be (checked from the window's start).
_ORDER_DTYPES = {"side": np.int8, "size": np.float64, "stop_dist": np.float64, "take_dist": np.float64,
                 "trail_dist": np.float64, "exit_long": np.bool_, "exit_short": np.bool_}
_RULES = {
    "side": "1 (long), -1 (short) or 0 (no order)",
    "size": "a fraction of equity above 0 and at most 1 (no leverage is modelled; where there is no order, side is 0)",
    **dict.fromkeys(("stop_dist", "take_dist", "trail_dist"), "a distance from the entry price, 0 or more (NaN for none)"),
    **dict.fromkeys(("exit_long", "exit_short"), "true or false"),
}


def run_engine(candles: Candles, decisions: Decisions, start: int, costs: Costs) -> EngineResult:
    """Simulate bars ``start``.. of ``candles`` under ``decisions`` and ``costs``; StrategyError
    for decisions the engine cannot take (see ``_orders``)."""
    equity, counters, trades = run_bars(
        Prices(candles.timestamps, candles.open, candles.high, candles.low, candles.close), start,
        _orders(decisions, candles.timestamps, start), costs.rates(),
    )
    return EngineResult(equity, trades, {name: int(counters[0][name]) for name in COUNTERS})


def _orders(d: Decisions, times: np.ndarray, start: int) -> Orders:
    """``d`` in the kernel's dtypes, or StrategyError naming the first value from bar ``start`` on
    that the kernel cannot take, and its bar. Unchecked, a strategy's bug was read as its result: a
    negative size traded each signal the other way round (a losing rule made +76%), a side of 2
    doubled the position, a NaN size gave a Sharpe of 0, and an array shorter than the window was
    read past its end. A value is checked where the kernel reads it: at an order for its size and
    distances, so what a strategy leaves at other bars (NaN while warming up) is never refused."""
    n = len(times)

    def refused(what: str, rule: str, bar: int | None = None) -> StrategyError:
        at = "" if bar is None else f" at {format_ts(times[bar])} (bar {bar} of the window)"
        return StrategyError(f"decided what the engine cannot take: {what}{at}: {rule}")

    a: dict[str, np.ndarray] = {}  # the arrays as the kernel takes them
    for name, dtype in _ORDER_DTYPES.items():
        given = np.asarray(getattr(d, name))
        if given.ndim != 1 or len(given) != n:
            raise refused(f"{name} has shape {given.shape}", f"one value for each of the window's {n:,} bars")
        if given.dtype != dtype:  # a cast, which must keep every value the kernel reads: 1.5 is no side, 0.5 no exit
            if given.dtype.kind not in "biuf":
                raise refused(f"{name} holds {given.dtype} values", _RULES[name])
            with np.errstate(invalid="ignore"):  # NaN cast to a side: found just below
                cast: np.ndarray = given.astype(dtype)
                lost = np.flatnonzero(cast[start:] != given[start:])
            if lost.size:
                raise refused(f"{name} is {given[start + lost[0]]}", _RULES[name], start + int(lost[0]))
            given = cast
        a[name] = given
    fault, bar = first_fault(a["side"], a["size"], a["stop_dist"], a["take_dist"], a["trail_dist"], start)
    if fault >= 0:
        name = ORDER_ARRAYS[fault]
        order = "" if name == "side" else f" for an order of side {a['side'][bar]}"
        raise refused(f"{name} is {a[name][bar]}{order}", _RULES[name], bar)
    for name in ("cooldown_bars", "max_bars_held"):
        count = getattr(d, name)
        if not isinstance(count, int | np.integer) or isinstance(count, bool) or count < 0:
            raise refused(f"{name} is {count!r}", "a whole number of bars, 0 or more")
    return Orders(a["side"], a["size"], a["stop_dist"], a["take_dist"], a["trail_dist"], a["exit_long"], a["exit_short"],
                  int(d.cooldown_bars), int(d.max_bars_held))


__all__ = ["COUNTERS", "COUNTER_DTYPE", "EXIT_REASONS", "TRADE_DTYPE", "Carry", "Costs", "EngineResult", "run_engine"]

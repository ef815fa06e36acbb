"""The one backtest path: config -> data window -> features -> strategy -> engine -> metrics.

``genesis backtest`` and the optimizer both call ``Backtester.run``; there is no second path.
``build_config`` is the one function that turns (base config, champion, trial parameters)
into the effective configuration.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import Field

from genesis_core.config import StrictModel, UserPath, deep_merge, parse_model
from genesis_core.data import (
    Candles,
    Timeframe,
    Window,
    cache_candles,
    cached_candles,
    format_ts,
    load_candles,
    market_sidecar,
    parse_ts,
    same_symbol,
)
from genesis_core.engine import EXIT_REASONS, Costs, EngineResult, run_engine
from genesis_core.errors import USER_FAULTS, ConfigError, DataError, GenesisError, StrategyError, raised, unknown_key_hint
from genesis_core.features import FeatureStore, Span
from genesis_core.files import located, paths_from, trim_least_recently_used
from genesis_core.fingerprint import code_version, fingerprint
from genesis_core.metrics import compute_metrics, drawdowns
from genesis_core.plugins import code_fingerprint
from genesis_core.strategy import (
    Decisions,
    Strategy,
    Training,
    checked_decisions,
    checked_resources,
    checked_trained,
    checked_warmup,
    get_strategy,
)

T = TypeVar("T")
DEFAULT_DATA = "data/BTCUSD_1h_bitfinex.csv.gz"
CACHE = Path(".cache/genesis")  # where the CLI and the optimizer keep checked candles and computed features
CACHE_LIMIT_ENV, CACHE_LIMIT_MB = "GENESIS_CACHE_MB", 1024  # the most CACHE may hold, in MiB, and its default
TRIM_EVERY_SECONDS = 3600.0  # how often the cache's size is looked at (a walk of its files: 19 ms at 4,200)
SETTLED_SECONDS = 2.0  # a candle file changed more recently may change again within one tick of its mtime: not cached


class DataSpec(StrictModel):
    """The candles and the window. ``start`` and ``end`` are inclusive (a bare date ``end`` means
    that whole day); ``warmup_bars`` come from before ``start`` (None: what the strategy needs)."""

    path: UserPath = DEFAULT_DATA
    symbol: str | None = None  # the market the file holds, if the file does not say (a Parquet file's metadata, a CSV's .market.json)
    timeframe: Timeframe | None = None
    start: str | None = None
    end: str | None = None
    warmup_bars: int | None = Field(None, ge=0)


class BacktestConfig(StrictModel):
    strategy: str = "reference"
    params: dict[str, Any] = Field(default_factory=dict)
    data: DataSpec = DataSpec()
    costs: Costs = Costs()
    # The folder its relative paths (data.path, a model's) were read from when it first ran, which a
    # backtest records (``paths_from``); None (left out of its dump, as configs were): the working folder.
    # Not part of its fingerprint.
    workdir: UserPath | None = Field(None, exclude_if=lambda v: v is None)


def set_path(tree: dict[str, Any], path: str, value: Any, prefix: str = "params") -> None:
    """Set ``a.b.0.c`` inside a filled-in params tree; unknown keys suggest the closest one. Each
    container on the way is replaced by a copy, so ``tree`` (itself changed) shares nothing changed
    with the tree it was copied from: a trial's config costs copies of its paths, not of the tree."""
    parts = path.split(".")
    node: Any = tree

    def here() -> str:  # the path so far, for an error: built only then (a trial sets ten paths)
        return ".".join([prefix, *parts[: depth + 1]])

    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{here()}: no element {part} in a list of {len(node)}")
            key: Any = int(part)
        elif isinstance(node, dict):
            if part not in node:
                raise ConfigError(f"{here()}: unknown key{unknown_key_hint(part, list(node))}")
            key = part
        else:
            raise ConfigError(f"{here()}: cannot go inside {node!r} (set the parent in the base config first)")
        if last:
            node[key] = value
        else:
            child = node[key]
            if isinstance(child, dict | list | tuple):
                child = node[key] = dict(child) if isinstance(child, dict) else list(child)
            node = child


def get_path(tree: dict[str, Any], path: str) -> Any:
    """The value at ``a.b.0.c`` inside a params tree; KeyError naming the path if absent."""
    node: Any = tree
    for part in path.split("."):
        try:
            node = node[int(part)] if isinstance(node, list) and part.isdigit() else node[part]
        except (KeyError, IndexError, TypeError):
            raise KeyError(path) from None
    return node


class ConfigBuilder:
    """The one way to make an effective config: the base config, then the champion's params, then
    overrides (window, CLI flags), then trial parameters given as dotted paths inside ``params``
    (``risk.risk_map.0.1`` sets a list element). Validated, every strategy default filled in.
    Everything but the trial parameters is merged and validated once, so that a study or a sweep
    validates each trial's params once."""

    def __init__(self, base: dict[str, Any], champion: dict[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None) -> None:
        merged = deep_merge(base, {"params": champion} if champion else {})
        config = parse_model(BacktestConfig, deep_merge(merged, overrides or {}))
        self._strategy = get_strategy(config.strategy)
        self._params = parse_model(self._strategy.Params, config.params, "params").model_dump(mode="json")
        self._config = config.model_copy(update={"params": self._params})

    def __call__(self, trial_params: dict[str, Any] | None = None) -> BacktestConfig:
        if not trial_params:  # the fixed config: its params were validated once, in __init__
            return self._config.model_copy(deep=True)
        return self.validated(trial_params)[0]

    def validated(self, trial_params: dict[str, Any] | None = None) -> tuple[BacktestConfig, Any]:
        """The config and its params as the strategy validated them, which ``Backtester.plan``
        takes as they are instead of validating them again (a tenth of a sweep point's planning)."""
        if not trial_params:
            return self._config.model_copy(deep=True), self._strategy.Params.model_validate(self._params)
        params = dict(self._params)
        for path, value in trial_params.items():
            set_path(params, path, value)
        model = parse_model(self._strategy.Params, params, "params")
        return self._config.model_copy(update={"params": model.model_dump(mode="json")}), model


def build_config(
    base: dict[str, Any],
    champion: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    trial_params: dict[str, Any] | None = None,
) -> BacktestConfig:
    """``ConfigBuilder(base, champion, overrides)(trial_params)``, for one config."""
    return ConfigBuilder(base, champion, overrides)(trial_params)


def data_symbol(config: BacktestConfig, candles: Candles) -> str | None:
    """The market of the data: what ``data.symbol`` declares and what the file says, which must agree."""
    declared = config.data.symbol
    if declared and candles.symbol and not same_symbol(declared, candles.symbol):
        raise ConfigError(f"data.symbol {declared} but {candles.source} says it holds {candles.symbol}: declare data.symbol "
                          f"{candles.symbol}, or use a file of {declared}")
    return declared or candles.symbol


def data_file(config: BacktestConfig) -> str:
    """The file ``config.data.path`` names, read from its workdir where that holds it (``located``)."""
    with paths_from(config.workdir):
        return os.fspath(located(config.data.path))


def trained_on(config: BacktestConfig) -> list[Training]:
    """What the fitted resources of ``config``'s strategy learnt from; StrategyError naming the
    strategy for what its ``trained_on`` raised or returned that is no such list."""
    strategy = get_strategy(config.strategy)
    params = parse_model(strategy.Params, config.params, "params")
    with paths_from(config.workdir):
        return _asked(config.strategy, strategy, lambda: strategy.trained_on(params), checked_trained)


def training_problems(trained: list[Training], candles: Candles, symbol: str | None,
                      windows: list[tuple[str, int, int, bool]]) -> tuple[list[str], list[str]]:
    """(leaks, other markets) of fitted resources (``trained_on``) against the data of market
    ``symbol``: each ``(label, first, last, held_out)`` window (epoch seconds) inside a training
    span, or, when ``held_out`` (a result to be read as out of sample), before its end: a model
    fitted on later bars knows the market to come, which no trader then had. A span on another
    market or timeframe counts as well: BTCUSDT on another venue, or 4h bars, move as this
    market's bars did on those days, and a model fitted on them learnt those moves. And each
    resource trained on another market or timeframe."""
    leaks, others = [], []
    for t in trained:
        market = f"{t.symbol} {t.timeframe}" if t.symbol is not None else "its market not recorded"
        if t.symbol is None:
            others.append(f"{t.resource} does not record its market (retrain it with `genesis model train`)")
        elif symbol is not None and not same_symbol(t.symbol, symbol) or t.timeframe not in (None, candles.timeframe):
            others.append(f"{t.resource} was trained on {market}, the data is {symbol or 'of unknown market'} {candles.timeframe}")
            market += ", another market on the same days"
        first, last = parse_ts(t.first_bar), parse_ts(t.last_bar)
        span = f"the training span of {t.resource} ({t.first_bar[:10]}..{t.last_bar[:10]}, {market})"
        for label, a, b, held_out in windows:
            if a <= last and b >= first:
                leaks.append(f"{label} {format_ts(a)[:10]}..{format_ts(b)[:10]} overlaps {span}: in-sample for the model")
            elif held_out and b < first:
                leaks.append(f"{label} {format_ts(a)[:10]}..{format_ts(b)[:10]} precedes {span}: a model fitted on later "
                             "bars knows the market to come, so it is not out of sample")
    return leaks, others


def seen_problems(window: tuple[int, int], seen: list[tuple[str, str, str]]) -> list[str]:
    """Where a backtest window (first and last bar, epoch seconds) overlaps bars its config was
    searched or chosen on: each ``(first bar, last bar, what they were to it)``. There its numbers
    are what the search fitted or the choice favoured: ``genesis backtest --champion`` ran the
    champion on its own explore window by default, and showed the fit as a result."""
    a, b = window
    lines = []
    for first, last, what in seen:
        try:
            overlaps = a <= parse_ts(last) and b >= parse_ts(first)
        except DataError:  # a result file edited by hand: no window to read
            continue
        if overlaps:
            lines.append(f"the backtest window {format_ts(a)[:10]}..{format_ts(b)[:10]} overlaps {first[:10]}..{last[:10]}, "
                         f"{what}: in-sample, so its numbers there are not what the config does on bars it has not seen")
    return lines


def dead_inputs(trained: list[Training], features: FeatureStore, start: int) -> list[str]:
    """Inputs of fitted resources (``Training.inputs``) that hold one value on every bar of the
    window from ``start`` on, where they varied over the training bars: a file without volume feeds
    a volume z-score 0 throughout, and a model so fed gives what it was never fitted to give, with no
    error. Bitcoin's own weeks never hold one still: over every 7 days of 2018-2024, each input of the
    bundled model spread at least 0.048 times as wide as in training."""
    lines = []
    for t in trained:
        for spec, spread in t.inputs:
            x = features.get(spec)[start:]
            x = x[np.isfinite(x)]
            if len(x) > 1 and x.min() == x.max():
                volume = features.candles.volume[start:]
                why = " (the file gives no volume: every bar's is 0)" if not volume.any() else ""
                lines.append(f"{t.resource}'s input {spec} is {x[0]:.6g} on every bar{why}, where it varied "
                             f"over its training bars (standard deviation {spread:.3g}): its output there is not what it was "
                             "fitted to give")
    return lines


@dataclass(frozen=True)
class Plan:
    """A backtest ready to run: effective config with the warm-up resolved, window, fingerprint."""

    config: BacktestConfig
    strategy: Strategy
    params: Any
    candles: Candles
    window: Window
    resources: dict[str, str]
    config_fingerprint: str
    code: str  # the code that runs it: Genesis-Core's, and a user strategy's source (plugins.code_fingerprint)


@dataclass(frozen=True)
class BacktestResult:
    config: BacktestConfig  # effective: every default and the warm-up filled in
    config_fingerprint: str
    window: Window
    data_file_fingerprint: str
    resources: dict[str, str]
    code: str
    metrics: dict[str, float | int]
    trace: dict[str, Any]
    engine: EngineResult

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open time (epoch seconds), equity at the close and drawdown of each decision bar."""
        equity = self.engine.equity[1:]  # equity[i + 1]: at the close of decision bar i
        return self.window.candles.timestamps[self.window.start_index:], equity, drawdowns(equity)


_LOADED: dict[tuple[Any, ...], Candles] = {}


def _named(exc: StrategyError, strategy: str) -> StrategyError:
    """A StrategyError about what the strategy returned, its message led by the strategy's name."""
    return StrategyError(f"strategy {strategy!r} {exc}")


def _own(strategy: Strategy, call: Callable[[], T]) -> T:
    """``call()``, of the strategy's own code. Its exception that is no GenesisError (a bug, or a
    value its code cannot take) is a StrategyError saying what was raised and where, so a study
    fails that trial with it, as a refused one, where the traceback ended the run without its
    records; the exception stays its cause."""
    try:
        return call()
    except GenesisError:
        raise
    except USER_FAULTS as exc:
        raise StrategyError(raised(exc, type(strategy))) from exc


class _TookTooLong(BaseException):  # not an Exception: the strategy's own ``except Exception`` does not swallow it
    pass


def _expired(signum: int, frame: object) -> None:
    raise _TookTooLong


def within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``, stopped after ``seconds`` with a StrategyError: a strategy's loop that never ends
    for some parameters held its trial, and a Ctrl-C, which waits for the trials in flight, for ever.
    Compiled code is stopped once it returns. In the main thread a timer's signal stops it; its
    handler stays set (nothing else here uses the timer): 2 us a call, not 6. Off it (a run the MCP
    server started), where no signal can be set (every trial failed as the strategy's ValueError),
    a timer thread raises the same exception in this one (``_raise_in``)."""
    try:
        if threading.current_thread() is not threading.main_thread():
            return _raise_in(seconds, call)
        if signal.getsignal(signal.SIGALRM) is not _expired:
            signal.signal(signal.SIGALRM, _expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return call()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
    except _TookTooLong:
        raise StrategyError(f"took longer than {seconds:g} s (meta.trial_timeout_seconds) to decide, and was stopped: "
                            "a loop that never ends for these parameters?") from None


def _raise_in(seconds: float, call: Callable[[], T]) -> T:
    """``call()`` in this thread, which a timer thread interrupts after ``seconds`` with
    ``_TookTooLong``, as the signal does the main thread (CPython's asynchronous exception, raised at
    the thread's next bytecode). One raised after ``call`` returned is withdrawn before it arrives."""
    thread, lock, state = threading.get_ident(), threading.Lock(), {"done": False, "raised": False}

    def expire() -> None:
        with lock:
            if not state["done"]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(_TookTooLong))
                state["raised"] = True

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        return call()
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["raised"]:  # not yet arrived (it may have: then it is on its way out of here)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), None)


def _asked(name: str, strategy: Strategy, call: Callable[[], Any], checked: Callable[[Any], T]) -> T:
    """``checked(call())``, a call of the strategy's own code: what it raised, or returned that is
    not what it must, a StrategyError led by the strategy's ``name``."""
    try:
        return checked(_own(strategy, call))
    except StrategyError as exc:
        raise _named(exc, name) from exc.__cause__


VOLUME_SHARE = 0.1  # a fill of more of its bar's traded volume moves the price by more than a few bps of slippage


def thin_fill(result: BacktestResult) -> str | None:
    """Where the largest fill took ``VOLUME_SHARE`` or more of its bar's traded volume (units over
    the bar's volume): fills at the open with the configured slippage are then fiction. None when
    none did, there was no trade, or the file gives no volume (all zero)."""
    trades, candles = result.engine.trades, result.window.candles
    if len(trades) == 0 or not candles.volume.any():
        return None
    bars = np.concatenate([trades["entry_bar"], trades["exit_bar"]])
    units = np.concatenate([trades["units"], trades["units"]])
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.nan_to_num(units / candles.volume[bars], nan=0.0, posinf=np.inf)  # inf on a bar nothing traded in
    i, many = int(np.argmax(share)), int((share >= VOLUME_SHARE).sum())
    if not many:
        return None
    costs, at = result.config.costs, format_ts(candles.timestamps[bars[i]])
    largest = ("one on a bar with no traded volume" if candles.volume[bars[i]] == 0 else f"the largest {share[i]:.0%}"
               if share[i] < 100 else f"the largest {share[i]:,.4g} times it")  # a volume of 1e-300 made a 300-digit percentage
    return (f"{many} of {len(bars)} fills took {VOLUME_SHARE:.0%} or more of their bar's traded volume, {largest} "
            f"({units[i]:,.6g} units of {candles.volume[bars[i]]:,.6g} at {at}): at that size the price moves more than "
            f"{costs.slippage_bps:g} bps of slippage; lower costs.initial_equity ({costs.initial_equity:,.0f}) or the size, "
            "or raise costs.slippage_bps")


FREE_BPS, TYPICAL_BPS = 1.0, 10.0  # a fill's fee plus slippage below which trading is free; a taker's at many venues


def free_trading(result: BacktestResult) -> str | None:
    """What the trades would have paid when a fill costs under ``FREE_BPS`` (fee plus slippage): a
    search over such a config favours the configs that trade most, which no venue lets trade free.
    None when trading costs that much, or there was no trade."""
    costs, trades = result.config.costs, result.engine.trades
    if costs.fee_bps + costs.slippage_bps >= FREE_BPS or len(trades) == 0:
        return None
    notional = float((trades["units"] * (trades["entry_price"] + trades["exit_price"])).sum())
    paid = notional * TYPICAL_BPS / 1e4
    return (f"{len(trades)} trades pay next to nothing to trade (fee {costs.fee_bps:g} bps and slippage {costs.slippage_bps:g} "
            f"bps a fill), so a search favours the configs that trade most; at {TYPICAL_BPS:g} bps a fill (a taker's "
            f"fee with slippage at many venues) they would pay {paid:,.0f}, {paid / costs.initial_equity:.0%} of the "
            "initial equity (costs.fee_bps, costs.slippage_bps)")


TYPICAL_BORROW_BPS = 3.0  # a day: a margin short's borrow, about 11% a year (a perpetual's funding is often as much)
BORROW_MATTERS = 0.02  # of the final equity: the share borrowing at that rate takes, from which it is worth saying


def free_borrow(backtester: Backtester, result: BacktestResult) -> str | None:
    """What the shorts' borrow would have cost where ``costs.carry_bps_per_day`` charges shorts
    nothing (unset, as it was before carry was modelled): the config is backtested again with
    shorts paying ``TYPICAL_BORROW_BPS`` a day, and said when that ends with ``BORROW_MATTERS`` or
    more less equity (an SMA crossover short half of 2022: -84.93% for -84.07%, 5.4% less; the
    reference strategy's 2022, 1.0% less, is not said). None when shorts pay a rate or none was held."""
    config, trades = result.config, result.engine.trades
    carry = config.costs.carry_bps_per_day
    if carry.short or not (trades["side"] < 0).any():
        return None
    costs = config.costs.model_copy(update={"carry_bps_per_day": carry.model_copy(update={"short": TYPICAL_BORROW_BPS})})
    borrowed = backtester.run(config.model_copy(update={"costs": costs})).metrics["total_return"]
    made = result.metrics["total_return"]
    less = 1 - (1 + borrowed) / (1 + made) if made > -1 else 0.0
    if not less >= BORROW_MATTERS:  # NaN: nothing to say
        return None
    shorts, ts = trades[trades["side"] < 0], result.window.candles.timestamps  # a trade's bars index the window's candles
    days = float((ts[shorts["exit_bar"]] - ts[shorts["entry_bar"]]).sum()) / 86_400
    returns, instead = _apart(borrowed, made)
    return (f"{len(shorts)} short trades held {days:,.0f} days in all paid nothing to borrow (costs.carry_bps_per_day unset): "
            f"at {TYPICAL_BORROW_BPS:g} bps a day (a margin short's borrow, about 11% a year; a perpetual's funding is often as "
            f"much) this backtest returns {returns}, not {instead} (total_return), ending with {less:.1%} less equity; "
            "set costs.carry_bps_per_day: {short: ...} to what the venue charges")


def _apart(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` as percentages, to the fewest places (2 or more) at which they read apart:
    an account fees took down to dust returned "-100.00%, not -100.00%"."""
    for places in range(2, 10):
        shown = f"{a:+.{places}%}", f"{b:+.{places}%}"
        if shown[0] != shown[1]:
            break
    return shown


BEST_TRADE_SHARE = 0.5  # of a window's net profit, the most its best trade may have made (validation's default)


def one_trade(result: BacktestResult, limit: float = BEST_TRADE_SHARE) -> tuple[float, str] | None:
    """The share of the net profit of a result's trades its best trade made, and which trade that
    was, when the share is over ``limit``: thirty trades that make money show an edge, one that made
    it all a day's luck. Of the top 40 configs of the bundled reference run (300 trials), 12 of the
    13 validation windows of 2023 that made money would have lost without their best trade, and 8
    of the 13 passed every other constraint. None when it is not, or nothing was made."""
    trades = result.engine.trades
    net = float(trades["pnl"].sum())
    if net <= 0:
        return None
    best = trades[int(trades["pnl"].argmax())]
    made = float(best["pnl"])
    if made / net <= limit:
        return None
    trade = f"one trade, entered {format_ts(result.window.candles.timestamps[int(best['entry_bar'])])}, made {made:,.2f}"
    return made / net, (f"{trade}, more than the net profit of {net:,.2f}: the others together lost {made - net:,.2f}" if made > net
                        else f"{trade} of the net profit of {net:,.2f}; the others together made {net - made:,.2f}")


LOOKAHEAD_CUTS = (0.5, 0.8)  # shares of a window's decision bars after which it is cut short
_DECIDED = ("side", "size", "stop_dist", "take_dist", "trail_dist", "exit_long", "exit_short")


def lookahead(backtester: Backtester, config: BacktestConfig) -> str | None:
    """Whether a strategy reads bars after the one it decides on (a shift the wrong way, a centred
    window, a statistic of the whole window): its decisions are made on the whole window and again
    with the window cut short after each of ``LOOKAHEAD_CUTS``, and every decision before a cut
    must be the same. First the whole window is decided twice: decisions that differ between two
    runs on the same bars (unseeded randomness) would read as lookahead. What differs first, or None."""
    whole = backtester.plan(config)
    w, decided = whole.window, backtester.decide(whole)
    ts = w.candles.timestamps
    differs = _first_difference(decided, backtester.decide(whole), w.start_index, len(w.candles))
    if differs is not None:
        name, t, a, b = differs
        return (f"its {name} at {format_ts(ts[t])} is {a} in one run and {b} in another on the same bars: its decisions "
                "are not deterministic (no result of it can be reproduced)")
    for share in LOOKAHEAD_CUTS:
        stop = w.start_index + max(1, int(w.bars * share))
        if stop >= len(w.candles):
            continue
        data = whole.config.data.model_copy(update={"end": format_ts(ts[stop - 1])})
        part = backtester.decide(backtester.plan(whole.config.model_copy(update={"data": data}), whole.params), cached=False)
        differs = _first_difference(decided, part, w.start_index, stop)
        if differs is not None:
            name, t, a, b = differs
            return (f"its {name} at {format_ts(ts[t])} is {a} on the window's bars up to {format_ts(ts[-1])}, {b} on those "
                    f"up to {format_ts(ts[stop - 1])}: a decision read bars after its own (it would know the future in every "
                    "backtest)")
    return None


WARMUP_FACTOR = 3  # a window is decided again on this many times its warm-up, as far as the data reaches before it


def warmup_dependence(backtester: Backtester, config: BacktestConfig) -> tuple[int, str | None]:
    """Whether a window's decisions depend on where its warm-up begins. Warm-up bars give each
    indicator its first value, and one that remembers every bar it saw (an EMA, Wilder's average)
    still carries where it began, where the live market, with all its history, decides otherwise:
    with a daily EMA of 100 as the reference strategy's HTF gate, 2022 returned -23.07% after its
    2,424 bars of warm-up and -25.51% after three times as many. The window is decided again on
    ``WARMUP_FACTOR`` times its warm-up, as far as the data reaches before it. (The bars of that
    longer warm-up, what differs first and how many bars differ or None); no longer warm-up than
    the window's own: not checked, the data holds no bar before it (or the strategy needs none)."""
    whole = backtester.plan(config)
    w = whole.window
    ts = w.candles.timestamps
    before = int(np.searchsorted(whole.candles.timestamps, ts[w.start_index]))
    longer = min(before, WARMUP_FACTOR * w.start_index)
    if longer <= w.start_index:
        return longer, None
    data = whole.config.data.model_copy(update={"warmup_bars": longer})
    redecided = backtester.decide(backtester.plan(whole.config.model_copy(update={"data": data}), whole.params), cached=False)
    decided, shift = backtester.decide(whole), longer - w.start_index
    differs = _first_difference(decided, redecided, w.start_index, len(ts), shift)
    if differs is None:
        return longer, None
    name, t, a, b = differs
    bars = int(np.logical_or.reduce([_differ(getattr(decided, f)[w.start_index:], getattr(redecided, f)[w.start_index + shift:])
                                     for f in _DECIDED]).sum())
    return longer, (f"its {name} at {format_ts(ts[t])} is {a} after {w.start_index:,} bars of warm-up and {b} after "
                    f"{longer:,}, and {bars:,} of the window's {w.bars:,} bars {'is' if bars == 1 else 'are'} decided otherwise: an indicator that "
                    "remembers every bar it saw (an EMA, Wilder's average) still carries where its warm-up began, which "
                    f"the live market's longer history does not; set data.warmup_bars: {longer} or more")


def _differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where two arrays of a decision differ, floats to a relative 1e-9 (NaN equal to NaN)."""
    return ~np.isclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True) if a.dtype.kind == "f" else a != b


def _first_difference(one: Decisions, other: Decisions, start: int, stop: int, shift: int = 0) -> tuple[str, int, Any, Any] | None:
    """(field, bar, one's value, other's) of the first decision of bars ``start`` .. ``stop - 1`` that
    differs (``other``'s bar i is ``one``'s i - ``shift``), floats to a relative 1e-9 (NaN equal
    to NaN), or None."""
    for name in _DECIDED:
        a, b = getattr(one, name)[start:stop], getattr(other, name)[start + shift:stop + shift]
        differ = _differ(a, b)
        if differ.any():
            i = int(np.argmax(differ))
            return name, start + i, a[i], b[i]
    return None


def _loaded(path: str, timeframe: str | None, cache: Path | None) -> Candles:
    """The candles of ``path``, parsed and checked once while the file (and its market sidecar)
    stays as it is: once per process, and with a ``cache`` folder once for every process (a worker
    then starts 0.6 s sooner), keyed by the files' size, mtime and inode and the code that checks
    them. A file changed in the last ``SETTLED_SECONDS`` is parsed, not cached: a second change
    within one tick of its mtime would look the same (git's "racy" files)."""
    files = [Path(path), market_sidecar(Path(path))]
    try:
        stats = [f.stat() for f in files if f.exists()]
        key = (str(files[0].resolve()), timeframe, *((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats))
    except OSError:
        return load_candles(path, timeframe)  # let the loader say what is wrong
    named = (path, *key)  # each spelling of the file keeps its own: candles name it (``source``) in checks and errors
    if named not in _LOADED:
        if len(_LOADED) >= 8:
            _LOADED.pop(next(iter(_LOADED)))
        read = next((c for k, c in _LOADED.items() if k[1:] == key), None)  # the file, under another name
        if read is not None:
            _LOADED[named] = dataclasses.replace(read, source=path)  # its arrays: read once a process
        else:
            _LOADED[named] = _read(path, timeframe, cache, key, stats)
    return _LOADED[named]


def _read(path: str, timeframe: str | None, cache: Path | None, key: tuple[Any, ...], stats: list[os.stat_result]) -> Candles:
    """The candles of ``path`` from the ``cache`` folder, or parsed (and kept there once settled)."""
    file = None if cache is None else cache / "candles" / f"{fingerprint([*map(str, key), code_version()])[:32]}.npz"
    candles = None if file is None else cached_candles(file, str(Path(path)))
    if candles is None:
        candles = load_candles(path, timeframe)
        if file is not None and all(time.time() - s.st_mtime > SETTLED_SECONDS for s in stats):
            cache_candles(candles, file)
    return candles


def _trim(cache: Path) -> None:
    """Keep ``cache`` within ``GENESIS_CACHE_MB``: its files are keyed by data and code, so every
    edit of either leaves files no run reads again."""
    text = os.environ.get(CACHE_LIMIT_ENV, str(CACHE_LIMIT_MB))
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise ConfigError(f"{CACHE_LIMIT_ENV}={text!r}: the most {cache} may hold, in MiB: a whole number, 0 or more")
    trim_least_recently_used(cache, limit * 2**20, TRIM_EVERY_SECONDS)


FEATURE_STORES = 32  # windows whose features a Backtester keeps in memory (the reference strategy's: 0.7 MB a year of 1h bars)


class Backtester:
    """Runs backtests; holds data read once per process and feature caches shared by all runs."""

    def __init__(self, cache: Path | None = None, decide_seconds: float | None = None) -> None:
        """``cache``: a folder for checked candles and computed features (``CACHE``), kept within
        ``GENESIS_CACHE_MB`` (least recently used files go first); None: memory only.
        ``decide_seconds``: how long a strategy may take to decide a window (``within``); None: no limit."""
        self._decide_seconds = decide_seconds
        if cache is not None:
            _trim(cache)
        self._cache = cache
        self._feature_folder = None if cache is None else cache / "features"
        self._candles: dict[tuple[str, str | None, str | None], Candles] = {}  # data is read once per process
        self._windows: dict[tuple[str, str | None, str | None, int], Window] = {}
        self._features: dict[str, FeatureStore] = {}  # the FEATURE_STORES most recently used, oldest first
        self._spans: dict[tuple[str, int], Span] = {}  # windows by candles and end
        # told of each plan before its strategy decides, which it may refuse (a crash watch: ``validation._crashes``)
        self.watch: Callable[[Plan], None] | None = None

    def candles(self, config: BacktestConfig) -> Candles:
        """The candles ``config`` names (``data_file``: where found is looked up once, not per trial)."""
        key = (config.data.path, config.workdir, config.data.timeframe)
        if key not in self._candles:
            self._candles[key] = _loaded(data_file(config), config.data.timeframe, self._cache)
        return self._candles[key]

    def _window(self, candles: Candles, spec: DataSpec, warmup: int) -> Window:
        key = (candles.fingerprint, spec.start, spec.end, warmup)
        if key not in self._windows:
            self._windows[key] = candles.window(spec.start, spec.end, warmup)
        return self._windows[key]

    def features(self, window: Window) -> FeatureStore:
        """The window's features. Its local ones (``register_feature``) are cut from those of the
        widest window that ends at the same bar of the same candles: windows of a sweep over periods
        each start at their own warm-up, and each read every feature from disk. Only the
        ``FEATURE_STORES`` most recently used windows keep theirs: a study over an EMA's period kept
        one array a window and period for its whole run."""
        key = window.candles.fingerprint
        store = self._features.pop(key, None)
        span = None
        if window.source is not None:
            end = (window.source.fingerprint, window.first + len(window.candles))
            span = self._spans.get(end)
            if span is None:
                span = self._spans[end] = Span()
        if store is None and span is not None and span.widest is not None and span.first == window.first:
            store = span.widest  # the same bars as this window's
        if store is None:
            store = FeatureStore(window.candles, self._feature_folder, span, window.first)
        self._features[key] = store
        if len(self._features) > FEATURE_STORES:
            del self._features[next(iter(self._features))]
        return store

    def plan(self, config: BacktestConfig, params: Any = None) -> Plan:
        """Resolve the warm-up and the window and fingerprint the run, without running it. ``params``:
        ``config.params`` validated by its strategy, when the caller has them (``ConfigBuilder.validated``)."""
        strategy = get_strategy(config.strategy)
        params = strategy.Params.model_validate(config.params) if params is None else params
        with paths_from(config.workdir):
            candles = self.candles(config)
            warmup = config.data.warmup_bars
            if warmup is None:
                warmup = _asked(config.strategy, strategy, lambda: strategy.warmup_bars(params, candles.timeframe_seconds),
                                checked_warmup)
            window = self._window(candles, config.data, warmup)
            resources = _asked(config.strategy, strategy, lambda: strategy.resources(params), checked_resources)
        resolved: dict[str, Any] = {"data": config.data.model_copy(update={"warmup_bars": warmup})}
        if config.workdir is None:  # where its relative paths were read from: its artifact re-runs from any folder
            resolved["workdir"] = os.getcwd()
        config = config.model_copy(update=resolved)
        config_fp = fingerprint({
            "strategy": config.strategy,
            "params": config.params,
            "costs": config.costs.model_dump(mode="json"),
            "warmup_bars": warmup,
            "resources": resources,
        })
        return Plan(config, strategy, params, candles, window, resources, config_fp, code_fingerprint(type(strategy)))

    def decide(self, plan: Plan, cached: bool = True) -> Decisions:
        """The strategy's decisions on the plan's window, checked (a StrategyError names the strategy);
        with ``cached`` False its features are computed in memory alone (a window decided once, for a
        check, would leave a folder of features in the cache)."""
        if self.watch is not None:
            self.watch(plan)
        features = self.features(plan.window) if cached else FeatureStore(plan.window.candles)
        decide = functools.partial(plan.strategy.decide, features, plan.params, plan.window.start_index)
        seconds = self._decide_seconds
        with paths_from(plan.config.workdir):
            return _asked(plan.config.strategy, plan.strategy, decide if seconds is None else lambda: within(seconds, decide),
                          checked_decisions)

    def execute(self, plan: Plan) -> BacktestResult:
        decisions = self.decide(plan)
        try:
            engine = run_engine(plan.window.candles, decisions, plan.window.start_index, plan.config.costs)
        except StrategyError as exc:
            raise _named(exc, plan.config.strategy) from exc.__cause__
        metrics = compute_metrics(engine, plan.candles.bars_per_year)
        st = decisions.trace
        reasons = engine.trades["exit_reason"]
        trace = {
            "bars_in_window": plan.window.bars,
            "warmup_bars_in_window": st.warmup_bars_in_window,
            "bars_evaluated": st.bars_evaluated,
            "signals": st.signals,
            "candidates": st.candidates,
            "blocked": {
                **st.blocked,
                "in_position": engine.counters["blocked_in_position"],
                "cooldown": engine.counters["blocked_cooldown"],
            },
            **{k: engine.counters[k] for k in ("orders", "fills", "trades_opened", "trades_closed")},
            "exits": dict(zip(EXIT_REASONS, np.bincount(reasons, minlength=len(EXIT_REASONS)).tolist(), strict=True)),
        }
        return BacktestResult(
            plan.config, plan.config_fingerprint, plan.window, plan.candles.fingerprint, plan.resources, plan.code, metrics,
            trace, engine
        )

    def run(self, config: BacktestConfig) -> BacktestResult:
        """Backtest an effective config (from ``build_config``)."""
        return self.execute(self.plan(config))

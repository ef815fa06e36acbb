"""The SMA crossover's compiled decisions against its NumPy definition."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from genesis_core.backtest import Backtester, build_config
from genesis_core.config import read_config_file
from genesis_core.strategy._base import Decisions, StrategyTrace
from genesis_core.strategy.sma_cross import SmaCrossParams
from tests.conftest import ROOT


def _numpy_decide(fast: np.ndarray, slow: np.ndarray, params: SmaCrossParams, start: int) -> Decisions:
    """The strategy as NumPy array operations (what it was before its compiled pass)."""
    n = len(fast)
    prev_f = np.concatenate(([np.nan], fast[:-1]))
    prev_s = np.concatenate(([np.nan], slow[:-1]))
    up = (prev_f < prev_s) & (fast > slow)
    down = (prev_f > prev_s) & (fast < slow)
    acted = np.arange(n) >= start
    cold = int((np.isnan(prev_s) & acted).sum())
    signals = int(((up | down) & acted).sum())
    side = np.where(up & acted, 1, np.where(down & acted, -1, 0)).astype(np.int8)
    trace = StrategyTrace(int(acted.sum()) - cold, cold, signals, signals, {})
    return replace(Decisions.empty(n, trace), side=side, size=np.where(side != 0, params.size, 0.0))


def _same(a: Decisions, b: Decisions) -> bool:
    arrays = ("side", "size", "stop_dist", "take_dist", "trail_dist", "exit_long", "exit_short")
    return a.trace == b.trace and (a.cooldown_bars, a.max_bars_held) == (b.cooldown_bars, b.max_bars_held) and all(
        getattr(a, k).dtype == getattr(b, k).dtype and np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True)
        for k in arrays)


def test_decisions_equal_the_numpy_definition_on_real_data_from_any_start():
    """Every pair of windows from a spread, on 2022's BTC/USD bars, deciding from the first bar (no
    average yet: cold bars), from the window's start, past the end, and from a crafted series with
    equal averages and NaN gaps, where a comparison with NaN must be false."""
    bt = Backtester()
    base = read_config_file(str(ROOT / "configs/sma_cross.yaml"))
    checked = 0
    for fast, slow in ((2, 3), (3, 7), (10, 50), (24, 100), (50, 200)):
        config = build_config(base, overrides={"params": {"fast": fast, "slow": slow, "size": 0.4}})
        plan = bt.plan(config)
        features = bt.features(plan.window)
        f, s = features.get(f"sma:{fast}"), features.get(f"sma:{slow}")
        for start in (0, 1, slow, plan.window.start_index, len(f) - 1, len(f) + 3):
            ours = plan.strategy.decide(features, plan.params, start)
            assert _same(ours, _numpy_decide(f, s, plan.params, start)), (fast, slow, start)
            checked += ours.trace.signals
    assert checked > 1000

    class Fixed:
        def __init__(self, **series: np.ndarray) -> None:
            self.series = series

        def get(self, name: str) -> np.ndarray:
            return self.series[name]

    fast = np.array([np.nan, 1.0, 2.0, 2.0, 1.0, np.nan, 3.0, 1.0, 1.0, 2.0])
    slow = np.array([np.nan, np.nan, 1.5, 2.0, 1.5, 1.5, np.nan, 2.0, 1.0, 1.5])
    params = SmaCrossParams(fast=2, slow=3, size=1.0)
    strategy = plan.strategy
    for start in range(-2, 12):
        assert _same(strategy.decide(Fixed(**{"sma:2": fast, "sma:3": slow}), params, start),  # type: ignore[arg-type]
                     _numpy_decide(fast, slow, params, start)), start


def test_a_sweep_over_periods_makes_each_average_once_and_gives_every_pair_its_own_backtest_s_numbers():
    """SMA pairs backtested by one Backtester, as a sweep's process does: each pair's window starts
    at its own warm-up, so windows differ. With the slowest pair first, its window is the widest and
    every other cuts its averages from it: each average is made once, and no other window keeps one.
    In a sweep's order (slow rising, so each window is the widest yet when made) and the reverse,
    every pair's metrics, trace and equity equal those of a backtest made on its own, bit for bit."""
    base = read_config_file(str(ROOT / "configs/sma_cross.yaml"))
    periods = (3, 8, 20, 55, 144)
    pairs = [(f, s) for f in periods for s in periods if f < s]
    configs = {p: build_config(base, overrides={"params": {"fast": p[0], "slow": p[1]}}) for p in pairs}
    alone = {p: Backtester().run(c) for p, c in configs.items()}
    assert len({r.window.start_index for r in alone.values()}) == len(periods) - 1
    for widest_first, order in ((True, sorted(pairs, key=lambda p: -p[1])), (False, pairs)):
        bt = Backtester()
        for p in order:
            got, want = bt.run(configs[p]), alone[p]
            assert (got.metrics, got.trace, got.config_fingerprint) == (want.metrics, want.trace, want.config_fingerprint), p
            assert got.engine.equity.tobytes() == want.engine.equity.tobytes(), p
        if widest_first:
            holding = [sorted(store._cache) for store in bt._features.values() if store._cache]
            assert holding == [sorted(f"sma:{w}" for w in periods)]

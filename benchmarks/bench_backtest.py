"""Backtest speed, measured in one run against named baselines on the same data and machine.

Prints: one reference-strategy backtest on one year of 1h bars with features cached (target
<= 1 ms); feature precompute for the reference strategy on all bundled bars (target <= 0.3 s per
50,000 bars); and the SMA(10/20) crossover timed in Genesis-Core, backtesting.py and vectorbt
on the same bars, with ratios measured interleaved (A B A B, the median of the rounds' ratios).
Compilation is excluded everywhere (one warm-up call each).
Usage: python benchmarks/bench_backtest.py [--json]
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from genesis_core.backtest import Backtester, build_config
from genesis_core.config import read_config_file
from genesis_core.features import FeatureStore
from genesis_core.strategy import ReferenceStrategy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the backtesting.py baseline strategy lives in tests/
warnings.filterwarnings("ignore")


def versions(*packages: str) -> dict[str, str]:
    """The installed versions of the contenders and of what they run on: a baseline's time moves with
    them (vectorbt's SMA sweep: 9.0 s with vectorbt 1.0 on pandas 2.3, 11.4 s with 1.2 on pandas 3.1,
    in one hour on this machine), so a ratio is quoted with them."""
    return {p: importlib.metadata.version(p) for p in packages}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # compile / warm caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def interleaved_ratio(ours: Callable[[], object], theirs: Callable[[], object], rounds: int, repeats: int) -> float:
    """Their time over ours, measured A B A B: each round times ``repeats`` calls of each (median),
    and the result is the median of the rounds' ratios, so a machine whose speed drifts between
    the two measurements does not skew it."""
    return statistics.median(median_ms(theirs, repeats) / median_ms(ours, repeats) for _ in range(rounds))


def main() -> None:
    os.chdir(ROOT)
    bt = Backtester()
    ref_cfg = build_config(read_config_file("configs/reference.yaml"))
    ref = bt.run(ref_cfg)
    figures: dict[str, float] = {}
    figures["reference_backtest_ms"] = median_ms(lambda: bt.run(ref_cfg), 500)

    candles = bt.candles(ref_cfg.data.path)
    strategy = ReferenceStrategy()
    params = strategy.Params.model_validate(ref_cfg.params)

    def precompute() -> None:
        store = FeatureStore(candles)
        strategy.decide(store, params, 0)  # every feature and derived array the strategy reads

    figures["feature_precompute_all_bars_s"] = median_ms(precompute, 5) / 1e3
    figures["feature_precompute_per_50k_bars_s"] = figures["feature_precompute_all_bars_s"] * 50_000 / len(candles)

    sma_cfg = build_config(read_config_file("configs/sma_cross.yaml"))
    sma = bt.run(sma_cfg)
    figures["genesis_sma_cached_ms"] = median_ms(lambda: bt.run(sma_cfg), 500)

    # uncached: features computed afresh each run; the parsed file is shared, as the baselines get a DataFrame
    figures["genesis_sma_uncached_ms"] = median_ms(lambda: _with_candles(bt).run(sma_cfg), 50)

    w = sma.window
    frame = pd.DataFrame(
        {"Open": w.candles.open, "High": w.candles.high, "Low": w.candles.low, "Close": w.candles.close, "Volume": w.candles.volume},
        index=pd.to_datetime(w.candles.timestamps, unit="s"),
    )
    fee = sma_cfg.costs.fee_bps / 1e4

    from backtesting import Backtest

    from tests.sma_cross_backtesting_py import SmaCross

    def run_backtesting_py() -> None:
        Backtest(frame, SmaCross, cash=1e9, commission=fee, finalize_trades=True).run()

    import contextlib
    import io
    with contextlib.redirect_stderr(io.StringIO()):
        figures["backtesting_py_sma_ms"] = median_ms(run_backtesting_py, 5)

    import vectorbt as vbt

    def run_vectorbt() -> float:
        close = frame["Close"]
        fast = vbt.MA.run(close, 10)
        slow = vbt.MA.run(close, 20)
        pf = vbt.Portfolio.from_signals(
            close, fast.ma_crossed_above(slow), fast.ma_crossed_below(slow), direction="both",
            fees=fee, freq="1h", price=frame["Open"].shift(-1),
        )
        return float(pf.total_return())

    figures["vectorbt_sma_ms"] = median_ms(run_vectorbt, 20)

    def uncached() -> object:
        return _with_candles(bt).run(sma_cfg)

    def cached() -> object:
        return bt.run(sma_cfg)

    with contextlib.redirect_stderr(io.StringIO()):
        vs_backtesting_py = interleaved_ratio(uncached, run_backtesting_py, 5, 3)
    ratios = {
        "speed-up vs backtesting.py (sma, uncached; interleaved)": vs_backtesting_py,
        "speed-up vs vectorbt (sma, uncached; interleaved)": interleaved_ratio(uncached, run_vectorbt, 5, 10),
        "speed-up vs vectorbt (sma, features cached; interleaved)": interleaved_ratio(cached, run_vectorbt, 5, 10),
        "reference backtest / 1 ms target (<= 1 meets it)": figures["reference_backtest_ms"] / 1.0,
        "precompute per 50k bars / 0.3 s target (<= 1 meets it)": figures["feature_precompute_per_50k_bars_s"] / 0.3,
    }
    report = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions("numpy", "pandas", "numba", "backtesting", "vectorbt"),
        "data": {"file": ref_cfg.data.path, "all_bars": len(candles), "window_bars": ref.window.bars,
                 "reference_trades": ref.metrics["num_trades"], "sma_trades": sma.metrics["num_trades"]},
        "figures": {k: round(v, 4) for k, v in figures.items()},
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
    }
    if "--json" in sys.argv:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Backtest benchmark ({report['data']['window_bars']:,} 1h bars; precompute on {len(candles):,})")
    table.add_column("what")
    table.add_column("median", justify="right")
    for k, v in figures.items():
        table.add_row(k, f"{v:.4f}")
    ratio_table = Table(title="Ratios")
    ratio_table.add_column("ratio")
    ratio_table.add_column("value", justify="right")
    for k, v in ratios.items():
        ratio_table.add_row(k, f"{v:.2f}")
    ratio_table.caption = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    Console(width=100).print(table, ratio_table)


def _with_candles(template: Backtester) -> Backtester:
    """A Backtester with no feature cache that shares the already-parsed candle files."""
    b = Backtester()
    b._candles = template._candles
    return b


if __name__ == "__main__":
    main()

"""Fixtures on the real data shipped in data/."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genesis_core.data import Candles, load_candles

ROOT = Path(__file__).resolve().parents[1]
BTC_FILE = ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"
SAMPLE_FILE = ROOT / "data" / "tBTCUSD_1h_sample.csv.gz"


@functools.cache
def _bundled_bars() -> pd.DataFrame:
    return pd.read_csv(BTC_FILE, index_col="timestamp")


def held_in_file(start: str, end: str) -> pd.Series:
    """Buying the bundled Bitfinex file's first bar of day ``start`` at its open and holding through
    day ``end``: each bar's close over that open, by its timestamp, read with pandas (not through
    the project's own candles): what the market's own course in a result must equal."""
    bars = _bundled_bars().loc[f"{start}T00:00:00Z":f"{end}T23:00:00Z"]
    return bars["close"] / bars["open"].iloc[0]


@pytest.fixture(scope="session")
def btc() -> Candles:
    """All 49,724 Bitfinex BTC/USD 1h bars."""
    return load_candles(BTC_FILE)


@pytest.fixture(scope="session")
def btc_year(btc: Candles) -> Candles:
    """2022 plus 1,000 bars before it: a realistic backtest slice."""
    return btc.window("2022-01-01", "2022-12-31", 1000).candles


@pytest.fixture(scope="session")
def sample() -> Candles:
    return load_candles(SAMPLE_FILE)


def make_candles(open_, high, low, close, start: int = 1_640_995_200, step: int = 3600) -> Candles:
    """Hand-built candles for engine cases (volume 1, hourly from 2022-01-01)."""
    o = np.asarray(open_, dtype=np.float64)
    return Candles(
        start + step * np.arange(len(o), dtype=np.int64), o, np.asarray(high, dtype=np.float64),
        np.asarray(low, dtype=np.float64), np.asarray(close, dtype=np.float64), np.ones(len(o)), step,
    )


@pytest.fixture(autouse=True)
def _features_a_test_registers_are_forgotten():
    """A feature a test registers (a user's, as a plugin would) is gone after it, so that no test
    depends on which ran before: `pytest tests/test_plugins.py tests/features` found the plugin
    tests' features beside the built-ins."""
    from genesis_core.features import _store

    before = dict(_store._REGISTRY)
    yield
    if _store._REGISTRY != before:
        _store._REGISTRY.clear()
        _store._REGISTRY.update(before)

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genesis_core.backtest import Backtester, build_config
from genesis_core.config import read_config_file
from genesis_core.data import parse_timeframe
from genesis_core.errors import ConfigError
from genesis_core.features import FeatureStore, Span, feature_names, warmup_bars
from genesis_core.features import _indicators as ind
from genesis_core.features._store import _REGISTRY
from genesis_core.fingerprint import code_version
from genesis_core.strategy.model import DEFAULT_FEATURES

SPECS = sorted({
    *DEFAULT_FEATURES, "sma:20", "ema:21", "atr:14", "atr_pct:14:200", "htf_trend:1d:10", "fib_dist:4h:3:14",
    "fib_dist:1d:2:24", "rsi:7", "adx:20", "volume_z:24",
})
N_BARS = 2500
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prefix_candles(btc_year):
    return btc_year.slice(0, N_BARS)


@pytest.fixture(scope="module")
def full(prefix_candles):
    store = FeatureStore(prefix_candles)
    return {s: store.get(s) for s in SPECS}


def test_every_registered_feature_is_covered():
    assert {s.split(":")[0] for s in SPECS} == set(feature_names())


@settings(max_examples=25, deadline=None)
@given(t=st.integers(min_value=0, max_value=N_BARS - 1))
def test_no_lookahead(prefix_candles, full, t):
    """Each feature at bar t equals the same feature computed on candles[:t+1] (bit for bit)."""
    store = FeatureStore(prefix_candles.slice(0, t + 1))
    for spec in SPECS:
        got = store.get(spec)[t]
        want = full[spec][t]
        assert (np.isnan(got) and np.isnan(want)) or got == want, (spec, t, got, want)


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.startswith("fib_dist")])
def test_declared_warmup_is_the_first_valid_bar(full, prefix_candles, spec):
    values = full[spec]
    first = int(np.argmax(~np.isnan(values)))
    declared = warmup_bars(spec, 3600)
    if spec.startswith("htf_"):
        ratio = parse_timeframe(spec.split(":")[1]) // 3600
        assert first <= declared  # never too little; a partial first HTF bucket and one bar of margin
        assert declared - first <= 2 * ratio
    else:
        assert first == declared
    assert not np.isnan(values[declared:]).any()


@pytest.mark.parametrize("spec", [*SPECS, "sma:3", "sma:97", "ret:1", "ret:24", "bb_position:50:1.5"])
def test_a_window_s_features_equal_its_own_computation_bit_for_bit_whether_cut_from_a_wider_window_or_not(btc_year, spec):
    """Windows that end at the same bar, the widest made first: a narrower one (down to fewer bars
    than the warm-up) cuts its local features from the widest, and must get exactly what it computes
    on its own candles. A feature not declared local must not be cut: for some window, the widest's
    values from that window's warm-up on differ from the window's own (an EMA seeded at its start)."""
    end = 3000
    span = Span()
    FeatureStore(btc_year.slice(0, end), span=span, first=0)
    local = _REGISTRY[spec.split(":")[0]].local
    widest = span.widest.get(spec)
    cut_differs = False
    for first in (1, 7, 150, 999, 2500, end - warmup_bars(spec, 3600) - 1, end - 5):
        narrow = FeatureStore(btc_year.slice(first, end), span=span, first=first).get(spec)
        alone = FeatureStore(btc_year.slice(first, end)).get(spec)
        assert narrow.tobytes() == alone.tobytes(), (spec, first)
        assert not narrow.flags.writeable
        cut = widest[first:].copy()
        cut[:warmup_bars(spec, 3600)] = np.nan
        cut_differs |= cut.tobytes() != alone.tobytes()
    assert cut_differs != local, "declared local, its cut differs" if local else "cut-stable: declare it local"


def test_a_window_cut_from_the_widest_holds_no_copy_and_the_widest_is_the_one_that_reads(btc_year, tmp_path):
    """Narrower windows made first, then a wider one: from then on the narrower ones cut from it, and
    keep nothing (a sweep over periods made one array a window and period: 287 MB a process)."""
    span = Span()
    stores = [FeatureStore(btc_year.slice(first, 3000), tmp_path, span, first) for first in (900, 600, 300)]
    assert span.widest is stores[-1] and span.first == 300
    for store in stores:
        for period in (5, 50, 200):
            assert store.get(f"sma:{period}").tobytes() == FeatureStore(store.candles).get(f"sma:{period}").tobytes()
    assert [len(s._cache) for s in stores] == [0, 0, 3]
    assert sorted(f.name.split("-")[0] for f in tmp_path.rglob("*.f8")) == ["sma_200", "sma_5", "sma_50"]


def test_fib_distance_warmup_is_enough_on_real_data(full):
    for spec in (s for s in SPECS if s.startswith("fib_dist")):
        assert not np.isnan(full[spec][warmup_bars(spec, 3600):]).any(), spec


def test_ema_matches_pandas(btc_year):
    close = btc_year.close[:3000]
    p = 21
    seeded = pd.Series(close.copy())
    seeded[: p - 1] = np.nan
    seeded[p - 1] = close[:p].mean()
    expected = seeded.ewm(span=p, adjust=False).mean().to_numpy()
    assert np.allclose(ind.ema(close, p)[p - 1:], expected[p - 1:], rtol=1e-12)


def test_bollinger_position_and_volume_z_match_pandas(btc_year):
    store = FeatureStore(btc_year.slice(0, 3000))
    close = pd.Series(store.candles.close)
    mean, std = close.rolling(20).mean(), close.rolling(20).std(ddof=0)
    expected = ((close - (mean - 2 * std)) / (4 * std)).to_numpy()
    assert np.allclose(store.get("bb_position:20:2.0")[19:], expected[19:], rtol=1e-9)
    vol = pd.Series(store.candles.volume)
    vz = ((vol - vol.rolling(48).mean()) / vol.rolling(48).std(ddof=0)).to_numpy()
    assert np.allclose(store.get("volume_z:48")[47:], vz[47:], rtol=1e-9)


def test_rsi_and_atr_hand_computed():
    close = np.array([10.0, 11.0, 12.0, 11.0, 12.0])
    # gains 1,1,0,1 losses 0,0,1,0; period 2: seed at bar 2 -> 100; then 0.5/0.5 -> 50; 0.75/0.25 -> 75
    assert np.allclose(ind.rsi(close, 2)[2:], [100.0, 50.0, 75.0])
    high = np.array([11.0, 12.0, 13.0, 12.0])
    low = np.array([9.0, 10.0, 11.0, 9.0])
    close = np.array([10.0, 11.0, 12.0, 10.0])
    # true ranges from bar 1: 2, 2, max(3, 0, 3) = 3; period 2: seed mean(2, 2) = 2 at bar 2, then (2 + 3) / 2
    assert np.isnan(ind.atr(high, low, close, 2)[:2]).all()
    assert np.allclose(ind.atr(high, low, close, 2)[2:], [2.0, 2.5])


def test_rolling_percentile_hand_computed():
    x = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    assert np.allclose(ind.rolling_percentile(x, 3)[2:], [2 / 3, 1.0, 2 / 3])


def test_swings_are_confirmed_only_after_k_bars():
    high = np.array([1.0, 2.0, 5.0, 2.0, 1.0, 1.0])
    low = np.array([0.5, 1.0, 4.0, 1.5, 0.2, 0.9])
    sh, sl = ind.swings(high, low, 2)
    assert np.isnan(sh[3]) and sh[4] == 5.0  # the peak at bar 2 is known at bar 4
    assert np.isnan(sl[4]) and np.isnan(sl[5])  # the low at bar 4 needs bars 5 and 6


def test_disk_cache_round_trip_and_keying(tmp_path, btc_year):
    candles = btc_year.slice(0, 1500)
    first = FeatureStore(candles, tmp_path).get("adx:14")
    files = list(tmp_path.rglob("*.f8"))
    assert [f.name for f in files] == [f"adx_14-{code_version()[:16]}.f8"]  # keyed by the code that computed it
    assert files[0].parent.name == candles.fingerprint[:32]
    again = FeatureStore(candles, tmp_path).get("adx:14")
    assert np.array_equal(first, again, equal_nan=True)
    FeatureStore(btc_year.slice(1, 1500), tmp_path).get("adx:14")  # other data, other folder
    assert len(list(tmp_path.iterdir())) == 2


def test_unknown_feature_spec_is_a_config_error(btc_year):
    with pytest.raises(ConfigError, match="unknown feature 'rsx'"):
        FeatureStore(btc_year).get("rsx:14")
    with pytest.raises(ConfigError, match="takes 2 argument"):
        FeatureStore(btc_year).get("atr_pct:14")


def test_a_full_disk_costs_the_feature_cache_not_the_backtest_and_a_killed_writer_s_file_is_removed(tmp_path):
    """Every feature file the reference backtest writes goes to /dev/full (no space left): the backtest
    gives the metrics it gives with a working cache, leaves no file behind, and the next run fills the
    cache. A temporary file of a process that no longer runs is removed when the folder is next used;
    a live process's is left alone."""
    config = build_config(read_config_file(str(ROOT / "configs/reference.yaml")))
    expected = Backtester(tmp_path / "good").run(config).metrics
    written = sorted((tmp_path / "good" / "features").rglob("*.f8"))
    assert written
    folder = tmp_path / "full" / "features" / written[0].parent.name
    folder.mkdir(parents=True)
    for f in written:
        (folder / f"{f.name}.{os.getpid()}.tmp").symlink_to("/dev/full")  # atomic_write's temporary file
    assert Backtester(tmp_path / "full").run(config).metrics == expected
    assert list(folder.iterdir()) == []  # nothing cached, no temporary left
    assert Backtester(tmp_path / "full").run(config).metrics == expected
    assert sorted(f.name for f in folder.iterdir()) == [f.name for f in written]

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / f"x.f8.{dead.pid}.tmp").write_bytes(b"half")
    (folder / f"y.f8.{os.getpid()}.tmp").write_bytes(b"being written")
    Backtester(tmp_path / "full").run(config)
    assert sorted(f.name for f in folder.glob("*.tmp")) == [f"y.f8.{os.getpid()}.tmp"]

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genesis_core.backtest import Backtester, build_config
from genesis_core.config import read_config_file
from genesis_core.errors import ConfigError
from genesis_core.strategy.model import load_model
from genesis_core.strategy.reference import BLOCK_REASONS

ROOT = Path(__file__).resolve().parents[2]
BASE = read_config_file(ROOT / "configs" / "reference.yaml")
BASE["data"]["path"] = str(ROOT / BASE["data"]["path"])
BASE["data"]["end"] = "2022-06-30"  # half a year keeps the suite quick


@pytest.fixture(scope="module")
def bt() -> Backtester:
    return Backtester()


def _run(bt: Backtester, params: dict | None = None, **top):
    return bt.run(build_config(BASE, overrides={"params": params or {}, **top}))


TOP_LEVEL_MOVES = {"thresholds": {"entry_conf_overall": 0.9, "regime_proba": {"bull": 0.95, "bear": 0.95, "ranging": 0.95, "balanced": 0.95}}}


def test_zones_override_top_level_thresholds(bt):
    """The pitfall: top-level thresholds searched while zones silently override them."""
    base = _run(bt)
    assert base.metrics["num_trades"] > 20
    moved = _run(bt, TOP_LEVEL_MOVES)
    assert moved.metrics == base.metrics and moved.trace == base.trace
    assert moved.config_fingerprint != base.config_fingerprint  # a different config, an identical outcome


def test_top_level_thresholds_apply_without_zones(bt):
    no_zones = _run(bt, {"thresholds": {"signal_adaptation": None}})
    moved = _run(bt, {"thresholds": {"signal_adaptation": None, **TOP_LEVEL_MOVES["thresholds"]}})
    assert no_zones.metrics["num_trades"] > 20
    assert moved.metrics["num_trades"] == 0
    assert moved.trace["blocked"]["entry_conf"] == moved.trace["signals"] - moved.trace["blocked"]["min_edge"] > 0


def test_a_zone_threshold_changes_the_result(bt):
    base = _run(bt)
    strict_high = _run(bt, {"thresholds": {"signal_adaptation": {"zones": {"high": {"entry_conf_overall": 0.99}}}}})
    assert strict_high.metrics["num_trades"] < base.metrics["num_trades"]


def test_trace_accounts_for_every_bar_and_signal(bt):
    t = _run(bt).trace
    assert t["bars_evaluated"] + t["warmup_bars_in_window"] == t["bars_in_window"]
    assert t["warmup_bars_in_window"] == 0
    assert t["candidates"] + sum(t["blocked"][r] for r in BLOCK_REASONS) == t["signals"]
    assert t["trades_opened"] == t["trades_closed"] == sum(t["exits"].values())
    assert t["fills"] == 2 * t["trades_opened"]


def test_risk_map_above_entry_thresholds_is_a_counted_size_zero(bt):
    r = _run(bt, {"risk": {"risk_map": [[0.95, 0.5]]}})
    assert r.metrics["num_trades"] == 0
    assert r.trace["blocked"]["size_zero"] > 0
    assert r.trace["candidates"] == 0


def test_htf_gate_and_ltf_override(bt):
    never = _run(bt, {"gates": {"ltf_override_threshold": None}})
    often = _run(bt, {"gates": {"ltf_override_threshold": 0.5}})
    off = _run(bt, {"gates": {"htf": {"enabled": False}}})
    assert never.trace["blocked"]["htf_gate"] > 0
    assert often.trace["blocked"]["htf_gate"] == 0 == off.trace["blocked"]["htf_gate"]
    assert often.trace["candidates"] == off.trace["candidates"] > never.trace["candidates"]


def test_fib_gate_blocks_far_entries(bt):
    r = _run(bt, {"gates": {"fib": {"enabled": True, "max_distance_atr": 0.5}}})
    assert r.trace["blocked"]["fib_gate"] > 0
    # swings need a confirmed high and low, which depends on the data: cold bars are counted, not hidden
    assert 0 <= r.trace["warmup_bars_in_window"] < 24
    assert r.trace["bars_evaluated"] + r.trace["warmup_bars_in_window"] == r.trace["bars_in_window"]


def test_exits_are_read(bt):
    base = _run(bt)
    trailing = _run(bt, {"exits": {"trailing_stop_atr": 1.0}})
    assert trailing.trace["exits"]["trailing_stop"] > 0 and trailing.metrics != base.metrics
    no_hold = _run(bt, {"exits": {"max_bars_held": None}})
    assert no_hold.trace["exits"]["max_bars_held"] == 0 < base.trace["exits"]["max_bars_held"]


def test_decisions_at_t_use_no_bar_after_t(bt):
    """End-to-end no lookahead: the strategy's decision at bar t equals the one made on candles[:t+1]."""
    from genesis_core.features import FeatureStore
    from genesis_core.strategy import ReferenceStrategy

    result = _run(bt, {"gates": {"fib": {"enabled": True}}, "exits": {"trailing_stop_atr": 1.5}})
    candles, start = result.window.candles, result.window.start_index
    strategy = ReferenceStrategy()
    params = strategy.Params.model_validate(result.config.params)
    full = strategy.decide(FeatureStore(candles), params, start)
    rng = np.random.default_rng(3)
    for t in rng.integers(start, len(candles), 12):
        part = strategy.decide(FeatureStore(candles.slice(0, t + 1)), params, start)
        for name in ("side", "size", "stop_dist", "take_dist", "trail_dist", "exit_long", "exit_short"):
            assert np.array_equal(getattr(part, name)[t], getattr(full, name)[t], equal_nan=True), (name, t)


def test_unknown_keys_suggest_the_closest(bt):
    with pytest.raises(ConfigError, match=r"params.thresholds.entry_conf_overal: unknown key; did you mean 'entry_conf_overall'"):
        build_config(BASE, overrides={"params": {"thresholds": {"entry_conf_overal": 0.5}}})
    with pytest.raises(ConfigError, match=r"costs.fees_bps: unknown key; did you mean 'fee_bps'"):
        build_config(BASE, overrides={"costs": {"fees_bps": 5}})
    with pytest.raises(ConfigError, match=r"risk_map confidences must ascend"):
        build_config(BASE, overrides={"params": {"risk": {"risk_map": [[0.6, 0.5], [0.55, 0.2]]}}})
    with pytest.raises(ConfigError, match=r"params.gates.htf.timeframe: bad timeframe '4 hours'"):
        build_config(BASE, overrides={"params": {"gates": {"htf": {"timeframe": "4 hours"}}}})
    with pytest.raises(ConfigError, match=r"risk_cap_pct: Input should be less than or equal to 1"):
        build_config(BASE, overrides={"params": {"risk": {"risk_cap_pct": 30}}})


def test_a_user_strategy_by_module_and_class(bt):
    cfg = build_config({**BASE, "strategy": "tests.strategy.custom_strategy:RsiReversion", "params": {"period": 10}})
    r = bt.run(cfg)
    assert r.metrics["num_trades"] > 10
    assert cfg.params == {"period": 10, "oversold": 30.0, "overbought": 70.0, "size": 0.5}
    with pytest.raises(ConfigError, match="cannot import Nope"):
        build_config({**BASE, "strategy": "tests.strategy.custom_strategy:Nope", "params": {}})
    with pytest.raises(ConfigError, match="unknown strategy 'refrence'"):
        build_config({**BASE, "strategy": "refrence"})


def test_shipped_model_was_trained_before_the_default_window():
    model, _ = load_model("builtin:btcusd_1h")
    assert model.training["last_bar"] < "2022-01-01"

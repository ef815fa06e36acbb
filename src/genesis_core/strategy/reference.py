"""The reference strategy: calibrated model confidence, per-regime thresholds, volatility zones,
higher-timeframe gate with a lower-timeframe override, ATR exits and a confidence-to-size map.

Zones: when ``thresholds.signal_adaptation`` is set, the bar's ATR-percentile zone (low / mid /
high) supplies ``entry_conf_overall`` and ``regime_proba`` and the top-level values are not
used. Both cases run the same kernel: without zones, all three zone slots hold the top-level
values, so there is one code path and the override cannot drift.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from numba import njit
from pydantic import Field, model_validator

from genesis_core.config import StrictModel, UserPath
from genesis_core.data import Timeframe
from genesis_core.features import FeatureStore, warmup_bars
from genesis_core.strategy._base import Decisions, Strategy, StrategyTrace, Training, register_strategy
from genesis_core.strategy.model import load_model

Prob = Annotated[float, Field(ge=0.0, le=1.0)]
REGIMES = ("bull", "bear", "ranging", "balanced")
ZONES = ("low", "mid", "high")
BLOCK_REASONS = ("min_edge", "entry_conf", "regime_proba", "htf_gate", "fib_gate", "size_zero")


class RegimeProba(StrictModel):
    """Minimum probability of the side, per regime of the bar."""

    bull: Prob = 0.5
    bear: Prob = 0.5
    ranging: Prob = 0.5
    balanced: Prob = 0.5


class Zone(StrictModel):
    entry_conf_overall: Prob
    regime_proba: RegimeProba


class Zones(StrictModel):
    low: Zone
    mid: Zone
    high: Zone


class SignalAdaptation(StrictModel):
    """ATR-percentile volatility zones; a bar is low below ``low_max``, high from ``high_min``."""

    atr_period: int = Field(14, ge=1)
    percentile_window: int = Field(500, ge=10)
    low_max: Prob = 0.33
    high_min: Prob = 0.67
    zones: Zones

    @model_validator(mode="after")
    def _ordered(self) -> SignalAdaptation:
        if self.low_max > self.high_min:
            raise ValueError(f"low_max {self.low_max} must not exceed high_min {self.high_min}")
        return self


class Thresholds(StrictModel):
    entry_conf_overall: Prob = 0.52
    regime_proba: RegimeProba = RegimeProba()
    min_edge: Prob = 0.0
    signal_adaptation: SignalAdaptation | None = None


class RegimeParams(StrictModel):
    """bull/bear: ADX >= trend_adx with a rising/falling EMA; ranging: ADX < range_adx; else balanced."""

    ema_period: int = Field(50, ge=2)
    slope_bars: int = Field(5, ge=1)
    adx_period: int = Field(14, ge=2)
    trend_adx: float = Field(25.0, ge=0.0, le=100.0)
    range_adx: float = Field(20.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _ordered(self) -> RegimeParams:
        if self.range_adx > self.trend_adx:
            raise ValueError(f"range_adx {self.range_adx} must not exceed trend_adx {self.trend_adx}")
        return self


class HtfGate(StrictModel):
    """Longs need HTF trend strength >= min_strength, shorts <= -min_strength (in HTF ATRs)."""

    enabled: bool = True
    timeframe: Timeframe = "4h"
    ema_period: int = Field(50, ge=2)
    min_strength: float = Field(0.0, ge=0.0)


class FibGate(StrictModel):
    """Entries only within ``max_distance_atr`` ATRs of an HTF Fibonacci retracement level."""

    enabled: bool = False
    timeframe: Timeframe = "4h"
    swing_bars: int = Field(3, ge=1)
    max_distance_atr: float = Field(1.0, gt=0.0)


class Gates(StrictModel):
    htf: HtfGate = HtfGate()
    ltf_override_threshold: Prob | None = 0.6
    fib: FibGate = FibGate()
    cooldown_bars: int = Field(0, ge=0)


class Exits(StrictModel):
    """Stops in multiples of the entry bar's ATR; None switches a rule off."""

    atr_period: int = Field(14, ge=1)
    stop_loss_atr: float | None = Field(2.0, gt=0.0)
    take_profit_atr: float | None = Field(4.0, gt=0.0)
    trailing_stop_atr: float | None = Field(None, gt=0.0)
    max_bars_held: int | None = Field(48, ge=1)
    exit_conf_threshold: Prob | None = 0.45


class Risk(StrictModel):
    """``risk_map``: [confidence, fraction of equity] steps, ascending; a confidence gets the
    fraction of the highest step it reaches (0 below the first), capped by ``risk_cap_pct``,
    the largest fraction of equity one position may take (0 < cap <= 1)."""

    risk_map: list[tuple[Prob, Prob]] = Field(default_factory=lambda: [(0.52, 0.25), (0.55, 0.5), (0.6, 0.75)], min_length=1)
    risk_cap_pct: float = Field(0.75, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _ascending(self) -> Risk:
        confs = [c for c, _ in self.risk_map]
        if confs != sorted(confs):
            raise ValueError(f"risk_map confidences must ascend, got {confs}")
        return self


class ReferenceParams(StrictModel):
    model: UserPath = "builtin:btcusd_1h"
    thresholds: Thresholds = Thresholds()
    regime: RegimeParams = RegimeParams()
    gates: Gates = Gates()
    exits: Exits = Exits()
    risk: Risk = Risk()


@njit(cache=True)
def _decide(
    p_buy, regime, zone, htf, fib, atr, start,
    entry_conf, regime_thr, min_edge, htf_on, htf_min, ltf_override, fib_on, fib_max,
    risk_conf, risk_frac, risk_cap, exit_conf, sl_mult, tp_mult, trail_mult,
):  # pragma: no cover - compiled
    n = len(p_buy)
    side = np.zeros(n, np.int8)
    size = np.zeros(n)
    stop = np.full(n, np.nan)
    take = np.full(n, np.nan)
    trail = np.full(n, np.nan)
    exit_long = np.zeros(n, np.bool_)
    exit_short = np.zeros(n, np.bool_)
    # counts: evaluated, warm-up, signals, candidates, then one slot per BLOCK_REASONS entry
    counts = np.zeros(10, np.int64)
    for t in range(start, n):
        pb = p_buy[t]
        if (np.isnan(pb) or regime[t] < 0 or zone[t] < 0 or np.isnan(atr[t])
                or (htf_on and np.isnan(htf[t])) or (fib_on and np.isnan(fib[t]))):
            counts[1] += 1
            continue
        counts[0] += 1
        ps = 1.0 - pb
        if not np.isnan(exit_conf):
            exit_long[t] = pb < exit_conf
            exit_short[t] = ps < exit_conf
        if pb == ps:
            continue
        counts[2] += 1
        d = 1 if pb > ps else -1
        conf = max(pb, ps)
        z = zone[t]
        if conf - min(pb, ps) < min_edge:
            counts[4] += 1
        elif conf < entry_conf[z]:
            counts[5] += 1
        elif conf < regime_thr[z, regime[t]]:
            counts[6] += 1
        elif htf_on and d * htf[t] < htf_min and not (not np.isnan(ltf_override) and conf >= ltf_override):
            counts[7] += 1
        elif fib_on and fib[t] > fib_max:
            counts[8] += 1
        else:
            f = 0.0
            for k in range(len(risk_conf)):
                if conf >= risk_conf[k]:
                    f = risk_frac[k]
            f = min(f, risk_cap)
            if f <= 0.0:
                counts[9] += 1
                continue
            counts[3] += 1
            side[t] = d
            size[t] = f
            stop[t] = sl_mult * atr[t]
            take[t] = tp_mult * atr[t]
            trail[t] = trail_mult * atr[t]
    return side, size, stop, take, trail, exit_long, exit_short, counts


def _opt(value: float | None) -> float:
    return np.nan if value is None else float(value)


@register_strategy
class ReferenceStrategy(Strategy):
    name = "reference"
    Params = ReferenceParams

    def _specs(self, p: ReferenceParams) -> list[str]:
        sa = p.thresholds.signal_adaptation
        g = p.gates
        specs = [
            f"ema_slope:{p.regime.ema_period}:{p.regime.slope_bars}",
            f"adx:{p.regime.adx_period}",
            f"atr:{p.exits.atr_period}",
        ]
        if sa is not None:
            specs.append(f"atr_pct:{sa.atr_period}:{sa.percentile_window}")
        if g.htf.enabled:
            specs.append(f"htf_trend:{g.htf.timeframe}:{g.htf.ema_period}")
        if g.fib.enabled:
            specs.append(f"fib_dist:{g.fib.timeframe}:{g.fib.swing_bars}:{p.exits.atr_period}")
        return specs

    def warmup_bars(self, params: ReferenceParams, timeframe_seconds: int) -> int:
        model, _ = load_model(params.model)
        return max(model.warmup_bars(timeframe_seconds), *(warmup_bars(s, timeframe_seconds) for s in self._specs(params)))

    def resources(self, params: ReferenceParams) -> dict[str, str]:
        return {"model": load_model(params.model)[1]}

    def trained_on(self, params: ReferenceParams) -> list[Training]:
        model = load_model(params.model)[0]
        t = model.training
        # an input constant in training was fitted a weight of exactly 0 (its std recorded as 1): whatever it is fed, it adds nothing
        inputs = tuple((f, s) for f, s, w in zip(model.features, model.std, model.weights, strict=True) if w != 0)
        return [Training(f"model {params.model}", t.get("symbol"), t.get("timeframe"), t["first_bar"], t["last_bar"], inputs)]

    def decide(self, features: FeatureStore, params: ReferenceParams, start: int) -> Decisions:
        p = params
        model, sha = load_model(p.model)
        p_buy = features.memo(f"model:{sha}", lambda: model.p_buy(features))
        r = p.regime
        regime = features.memo(
            f"regime:{r.ema_period}:{r.slope_bars}:{r.adx_period}:{r.trend_adx}:{r.range_adx}",
            lambda: _regimes(features, r),
        )
        th = p.thresholds
        sa = th.signal_adaptation
        if sa is None:
            zone = features.memo("zone:none", lambda: np.zeros(len(features.candles), np.int8))
            zone_cfg = [(th.entry_conf_overall, th.regime_proba)] * 3
        else:
            zone = features.memo(
                f"zone:{sa.atr_period}:{sa.percentile_window}:{sa.low_max}:{sa.high_min}",
                lambda: _zones(features.get(f"atr_pct:{sa.atr_period}:{sa.percentile_window}"), sa.low_max, sa.high_min),
            )
            zone_cfg = [(z.entry_conf_overall, z.regime_proba) for z in (sa.zones.low, sa.zones.mid, sa.zones.high)]
        entry_conf = np.array([c for c, _ in zone_cfg])
        regime_thr = np.array([[getattr(rp, name) for name in REGIMES] for _, rp in zone_cfg])
        g, ex = p.gates, p.exits
        nan = np.full(len(features.candles), np.nan)
        htf = features.get(f"htf_trend:{g.htf.timeframe}:{g.htf.ema_period}") if g.htf.enabled else nan
        fib = features.get(f"fib_dist:{g.fib.timeframe}:{g.fib.swing_bars}:{ex.atr_period}") if g.fib.enabled else nan
        risk = np.array(p.risk.risk_map, dtype=np.float64)
        side, size, stop, take, trail, exit_long, exit_short, c = _decide(
            p_buy, regime, zone, htf, fib, features.get(f"atr:{ex.atr_period}"), start,
            entry_conf, regime_thr, th.min_edge, g.htf.enabled, g.htf.min_strength, _opt(g.ltf_override_threshold),
            g.fib.enabled, g.fib.max_distance_atr, risk[:, 0].copy(), risk[:, 1].copy(), p.risk.risk_cap_pct,
            _opt(ex.exit_conf_threshold), _opt(ex.stop_loss_atr), _opt(ex.take_profit_atr), _opt(ex.trailing_stop_atr),
        )
        trace = StrategyTrace(
            bars_evaluated=int(c[0]),
            warmup_bars_in_window=int(c[1]),
            signals=int(c[2]),
            candidates=int(c[3]),
            blocked={reason: int(c[4 + i]) for i, reason in enumerate(BLOCK_REASONS)},
        )
        return Decisions(
            side, size, stop, take, trail, exit_long, exit_short, trace,
            cooldown_bars=g.cooldown_bars, max_bars_held=ex.max_bars_held or 0,
        )


def _regimes(features: FeatureStore, r: RegimeParams) -> np.ndarray:
    """0 bull, 1 bear, 2 ranging, 3 balanced, -1 while cold (order of REGIMES)."""
    slope = features.get(f"ema_slope:{r.ema_period}:{r.slope_bars}")
    strength = features.get(f"adx:{r.adx_period}")
    trending = strength >= r.trend_adx
    out = np.where(trending & (slope > 0), 0, np.where(trending & (slope < 0), 1, np.where(strength < r.range_adx, 2, 3)))
    out[np.isnan(slope) | np.isnan(strength)] = -1
    return out.astype(np.int8)


def _zones(pct: np.ndarray, low_max: float, high_min: float) -> np.ndarray:
    """0 low, 1 mid, 2 high, -1 while cold (order of ZONES)."""
    out = np.where(pct < low_max, 0, np.where(pct >= high_min, 2, 1))
    out[np.isnan(pct)] = -1
    return out.astype(np.int8)

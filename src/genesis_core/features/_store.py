"""Named, parameterised features computed once per candle set and cached in memory and on disk.

A feature is named by a spec string ``name:arg:arg`` (``rsi:14``, ``htf_trend:4h:50``), so a
strategy or a model file can ask for any period, not a fixed menu. The disk cache key is the
candles' fingerprint, the spec and the code that computes the feature (Genesis-Core's, or a user
feature's source), so edited data or edited code can never be served stale features.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genesis_core.data import Candles, parse_timeframe, resample
from genesis_core.errors import ConfigError
from genesis_core.features import _indicators as ind
from genesis_core.files import atomic_write, remove_stale_temporaries
from genesis_core.plugins import code_fingerprint

_Compute = Callable[..., np.ndarray]
_Warmup = Callable[..., int]


@dataclass(frozen=True)
class _Feature:
    compute: _Compute
    signature: str
    warmup: _Warmup
    local: bool


_REGISTRY: dict[str, _Feature] = {}


def register_feature(name: str, signature: str, warmup: _Warmup, local: bool = False) -> Callable[[_Compute], _Compute]:
    """Decorator: make ``fn(store, *args) -> array`` the feature ``name`` (spec ``signature``, e.g.
    ``"rsi:period"``); ``warmup(base_seconds, *args)`` is the index of its first valid value.
    A user's feature must be causal: its value at bar t may use candles[:t+1] only.

    ``local``: its value at bar t is computed from bars t - warmup .. t alone, the same way wherever
    the candles start (no seed, no running sum), and is NaN before ``warmup``. Then a window's values
    are those of any longer window with the same last bar, cut to it: a sweep over periods, whose
    windows each start at their own warm-up, computes such a feature once, not once a window."""

    def register(fn: _Compute) -> _Compute:
        if name in _REGISTRY and _REGISTRY[name].compute is not fn:
            raise ConfigError(f"feature {name!r} is already registered (known: {', '.join(sorted(_REGISTRY))})")
        _REGISTRY[name] = _Feature(fn, signature, warmup, local)
        return fn

    return register


def _htf_bars(base_seconds: int, timeframe: str, htf_bars: int) -> int:
    """Base bars needed for ``htf_bars`` complete HTF bars, plus one HTF bar of alignment slack."""
    ratio = parse_timeframe(timeframe) // base_seconds
    return (htf_bars + 1) * ratio


def _parse_arg(text: str) -> int | float | str:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*", text):
        return float(text)
    return text


@functools.lru_cache(maxsize=4096)
def parse_spec(spec: str) -> tuple[str, tuple[int | float | str, ...]]:
    """'rsi:14' -> ('rsi', (14,)), checked against the registry so typos fail early."""
    name, *args = spec.split(":")
    if name not in _REGISTRY:
        raise ConfigError(f"unknown feature {name!r} in {spec!r}; known: {', '.join(sorted(_REGISTRY))}")
    signature = _REGISTRY[name].signature
    expected = len(signature.split(":")) - 1 if ":" in signature else 0
    if len(args) != expected:
        raise ConfigError(f"feature {spec!r} takes {expected} argument(s): {signature}")
    return name, tuple(_parse_arg(a) for a in args)


@functools.lru_cache(maxsize=4096)
def warmup_bars(spec: str, base_seconds: int) -> int:
    """Bars a feature needs before its first valid value (its lookback)."""
    name, args = parse_spec(spec)
    return _REGISTRY[name].warmup(base_seconds, *args)


def _feature_code(name: str) -> str:
    return code_fingerprint(_REGISTRY[name].compute)  # not cached: a user's feature edited and reloaded is other code


def feature_names() -> dict[str, str]:
    """Every known feature and its spec signature, for docs and error messages."""
    return {name: f.signature for name, f in sorted(_REGISTRY.items())}


_DISK_DTYPE = np.dtype("<f8")


def _read_feature(path: Path, bars: int) -> np.ndarray | None:
    """A feature from the disk cache: raw little-endian float64, one value a candle (no header to
    parse: reading an .npy file took longer than computing a moving average). None if absent or
    not whole."""
    try:
        values = np.fromfile(path, _DISK_DTYPE)
    except OSError:
        return None
    return values.astype(np.float64, copy=False) if len(values) == bars else None


@dataclass
class Span:
    """Feature stores of windows that end at the same bar of the same candles, and the widest of them
    so far (its first bar in those candles), whose local features the others cut (``register_feature``)."""

    widest: FeatureStore | None = None
    first: int = 0
    checked: set[str] = field(default_factory=set)  # user features declared local, found so on a window of the span


class FeatureStore:
    """Features of one candle set; every array it returns is read-only. Each feature is computed at
    most once, here or, for a local one, by the widest store of the ``span`` these candles belong to,
    from whose bar ``first`` on they are."""

    def __init__(self, candles: Candles, cache_dir: Path | None = None, span: Span | None = None, first: int = 0) -> None:
        self.candles = candles
        self._cache: dict[str, np.ndarray] = {}
        self._htf: dict[str, tuple[Candles, np.ndarray]] = {}
        self._folder = cache_dir
        self._disk: Path | None = None  # its folder in ``cache_dir``, made and swept of a killed process's
        # half-written features at the first read from disk (a store that only cuts never reads)
        self._span, self._first = span, first
        if span is not None and (span.widest is None or first < span.first):
            span.widest, span.first = self, first

    def get(self, spec: str) -> np.ndarray:
        """The feature named by ``spec``, from memory, then the span's widest store, then disk, then
        computed. A feature cut from the widest store is not kept: the copy costs microseconds, and a
        sweep over periods makes thousands of windows, whose features all stayed in memory (287 MB a
        process for the SMA pairs of a year)."""
        hit = self._cache.get(spec)
        if hit is not None:
            return hit
        name, args = parse_spec(spec)
        feature = _REGISTRY[name]
        span = self._span
        if feature.local and span is not None and span.widest is not None and span.widest is not self:
            offset = self._first - span.first
            cut = span.widest.get(spec)[offset:offset + len(self.candles)].copy()
            cut[:feature.warmup(self.candles.timeframe_seconds, *args)] = np.nan
            if feature.compute.__module__ != __name__ and spec not in span.checked:
                self._check_local(spec, feature, args, cut)
                span.checked.add(spec)
            cut.flags.writeable = False
            return cut
        path = None
        if self._folder is not None:
            if self._disk is None:
                self._disk = self._folder / self.candles.fingerprint[:32]
                remove_stale_temporaries(self._disk)
            path = self._disk / f"{spec.replace(':', '_')}-{_feature_code(name)[:16]}.f8"
        values = _read_feature(path, len(self.candles)) if path is not None else None
        if values is None:
            values = np.ascontiguousarray(feature.compute(self, *args), dtype=np.float64)
            if values.shape != (len(self.candles),):  # a strategy would read a short feature past its end
                raise ConfigError(f"feature {spec!r} computed values of shape {values.shape} for {len(self.candles):,} bars: "
                                  "one value a bar")
            if path is not None:
                with contextlib.suppress(OSError):  # a disk that refuses (full, read-only) only costs a recompute
                    atomic_write(path, values.astype(_DISK_DTYPE, copy=False).tobytes(), durable=False)
        values.flags.writeable = False
        self._cache[spec] = values
        return values

    def _check_local(self, spec: str, feature: _Feature, args: tuple[int | float | str, ...], cut: np.ndarray) -> None:
        """A user's feature declared local, the first time a window of a span cuts it: cut and computed
        on the window alone must agree, or every result would depend on which windows came first (the
        built-ins' flags are checked by the tests)."""
        own = np.asarray(feature.compute(self, *args), dtype=np.float64)
        differ = np.flatnonzero(~((own == cut) | (np.isnan(own) & np.isnan(cut)))) if own.shape == cut.shape else [0]
        if len(differ):
            raise ConfigError(
                f"feature {spec!r} is registered local=True, but on a window it differs from a wider window's values "
                f"cut to it (first at the window's bar {int(differ[0])}): its values depend on where the candles "
                "start (a seed or a running sum); register it without local=True")

    def memo(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Cache an array derived from features (a regime, a model's probabilities) under ``key``."""
        hit = self._cache.get(key)
        if hit is None:
            hit = compute()
            hit.flags.writeable = False
            self._cache[key] = hit
        return hit

    def htf(self, timeframe: str) -> tuple[Candles, np.ndarray]:
        """Higher-timeframe candles and the as-of index map (see ``genesis_core.data.resample``)."""
        if timeframe not in self._htf:
            self._htf[timeframe] = resample(self.candles, timeframe)
        return self._htf[timeframe]

    def _on_htf(self, timeframe: str, values: np.ndarray) -> np.ndarray:
        """Map an HTF series to base bars through the as-of map (NaN before the first complete bar)."""
        _, asof = self.htf(timeframe)
        out = np.where(asof >= 0, values[np.maximum(asof, 0)], np.nan)
        return out


@register_feature("sma", "sma:period", lambda b, p: p - 1, local=True)
def _sma(s: FeatureStore, period: int) -> np.ndarray:
    return ind.sma(s.candles.close, period)


@register_feature("ema", "ema:period", lambda b, p: p - 1)
def _ema(s: FeatureStore, period: int) -> np.ndarray:
    return ind.ema(s.candles.close, period)


@register_feature("ema_slope", "ema_slope:period:bars", lambda b, p, k: p - 1 + k)
def _ema_slope(s: FeatureStore, period: int, bars: int) -> np.ndarray:
    """Relative change of the EMA over ``bars`` bars."""
    e = s.get(f"ema:{period}")
    out = np.full(len(e), np.nan)
    out[bars:] = e[bars:] / e[:-bars] - 1.0
    return out


@register_feature("ema_dist", "ema_dist:period", lambda b, p: p - 1)
def _ema_dist(s: FeatureStore, period: int) -> np.ndarray:
    """Close relative to its EMA."""
    return s.candles.close / s.get(f"ema:{period}") - 1.0


@register_feature("ret", "ret:bars", lambda b, k: k, local=True)
def _ret(s: FeatureStore, bars: int) -> np.ndarray:
    c = s.candles.close
    out = np.full(len(c), np.nan)
    out[bars:] = c[bars:] / c[:-bars] - 1.0
    return out


@register_feature("rsi", "rsi:period", lambda b, p: p)
def _rsi(s: FeatureStore, period: int) -> np.ndarray:
    return ind.rsi(s.candles.close, period)


@register_feature("atr", "atr:period", lambda b, p: p)
def _atr(s: FeatureStore, period: int) -> np.ndarray:
    c = s.candles
    return ind.atr(c.high, c.low, c.close, period)


@register_feature("atr_rel", "atr_rel:period", lambda b, p: p)
def _atr_rel(s: FeatureStore, period: int) -> np.ndarray:
    """ATR as a fraction of the close, comparable across price levels."""
    return s.get(f"atr:{period}") / s.candles.close


@register_feature("atr_pct", "atr_pct:period:window", lambda b, p, w: p + w - 1)
def _atr_pct(s: FeatureStore, period: int, window: int) -> np.ndarray:
    """Percentile of the current ATR among the last ``window`` ATRs: the volatility-zone input."""
    return ind.rolling_percentile(s.get(f"atr:{period}"), window)


@register_feature("adx", "adx:period", lambda b, p: 2 * p - 1)
def _adx(s: FeatureStore, period: int) -> np.ndarray:
    c = s.candles
    return ind.adx(c.high, c.low, c.close, period)


@register_feature("bb_position", "bb_position:period:width", lambda b, p, w: p - 1, local=True)
def _bb_position(s: FeatureStore, period: int, width: float) -> np.ndarray:
    """Where the close sits in its Bollinger band: 0 at the lower band, 1 at the upper, 0.5 if flat."""
    z = ind.rolling_zscore(s.candles.close, period)
    return 0.5 + z / (2.0 * width)


@register_feature("volume_z", "volume_z:window", lambda b, w: w - 1, local=True)
def _volume_z(s: FeatureStore, window: int) -> np.ndarray:
    return ind.rolling_zscore(s.candles.volume, window)


@register_feature("htf_trend", "htf_trend:timeframe:period", lambda b, tf, p: _htf_bars(b, tf, max(p, 15)))
def _htf_trend(s: FeatureStore, timeframe: str, period: int) -> np.ndarray:
    """(HTF close - HTF EMA) / HTF ATR(14) of the last completed HTF bar: signed trend strength."""
    h, _ = s.htf(timeframe)
    e = ind.ema(h.close, period)
    a = ind.atr(h.high, h.low, h.close, 14)
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = np.where(a > 0, (h.close - e) / a, 0.0)
    strength[np.isnan(e) | np.isnan(a)] = np.nan
    return s._on_htf(timeframe, strength)


@register_feature("fib_dist", "fib_dist:timeframe:swing_bars:atr_period", lambda b, tf, k, a: max(_htf_bars(b, tf, 3 * (2 * k + 1)), a))
def _fib_dist(s: FeatureStore, timeframe: str, swing_bars: int, atr_period: int) -> np.ndarray:
    """Distance of the close to the nearest HTF Fibonacci retracement, in base-timeframe ATRs.

    Valid once both a swing high and a swing low are confirmed, which depends on the data; the
    declared warm-up allows three swing spans and the decision trace counts any bar still cold.
    """
    h, _ = s.htf(timeframe)
    sh, sl = ind.swings(h.high, h.low, swing_bars)
    return ind.fib_distance(
        s.candles.close, s._on_htf(timeframe, sh), s._on_htf(timeframe, sl), s.get(f"atr:{atr_period}")
    )

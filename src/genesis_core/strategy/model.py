"""The reference strategy's signal model: a calibrated logistic regression over named features.

p_buy = sigmoid(a * z + b), z = intercept + sum(w_i * (x_i - mean_i) / std_i). The weights are
fitted on the first part of a training window (labels: sign of the forward return over
``horizon`` bars) and the calibration (a, b) on the rest, so calibration is out of sample.
Training never sees a label whose horizon reaches past the training window's end.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from genesis_core.data import Candles, format_ts
from genesis_core.errors import ConfigError, DataError, clip, problems
from genesis_core.features import FeatureStore, parse_spec, warmup_bars
from genesis_core.files import atomic_write, located, not_found_where, read_file
from genesis_core.fingerprint import code_version, strict_json

BUILTIN_PREFIX = "builtin:"
MAX_MODEL_BYTES = 16 << 20  # a model file is a few kilobytes: its features' weights and statistics
_BUILTIN_DIR = Path(__file__).resolve().parent / "models"

DEFAULT_FEATURES = (
    "rsi:14",
    "ema_slope:50:5",
    "ema_dist:50",
    "bb_position:20:2.0",
    "volume_z:48",
    "adx:14",
    "atr_rel:14",
    "ret:24",
    "htf_trend:4h:50",
)


Number = Annotated[float, Field(allow_inf_nan=False)]


class SignalModel(BaseModel):
    """A model as its file holds it, checked as it is read: a file edited by hand or given by a
    colleague (a weight short, a std of 0, no training span) ended a backtest in the strategy's
    KeyError or ValueError, or in NumPy's warnings."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    features: list[str] = Field(min_length=1)
    mean: list[Number]
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]  # a constant input's is 1 (its weight 0)
    weights: list[Number]
    intercept: Number
    calibration: dict[str, Number]
    horizon: int = Field(ge=1)
    training: dict[str, Any]

    @model_validator(mode="after")
    def _complete(self) -> SignalModel:
        n = len(self.features)
        for name in ("mean", "std", "weights"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} holds {len(getattr(self, name))} value(s) for {n} feature(s): one a feature")
        if set(self.calibration) != {"a", "b"}:
            raise ValueError(f"calibration holds {sorted(self.calibration)}, not a and b")
        missing = [k for k in ("first_bar", "last_bar") if not isinstance(self.training.get(k), str)]
        if missing:
            raise ValueError(f"training has no {' or '.join(missing)} (the span it learnt from, as ISO times)")
        return self

    def warmup_bars(self, timeframe_seconds: int) -> int:
        return max(warmup_bars(f, timeframe_seconds) for f in self.features)

    def p_buy(self, store: FeatureStore) -> np.ndarray:
        """Calibrated probability that the forward return is positive, per bar (NaN while cold)."""
        z = np.full(len(store.candles), float(self.intercept))
        for spec, m, s, w in zip(self.features, self.mean, self.std, self.weights, strict=True):
            z += w * (store.get(spec) - m) / s
        return _sigmoid(self.calibration["a"] * z + self.calibration["b"])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """Newton-Raphson (IRLS) with an L2 penalty on all but the first column (the intercept)."""
    beta = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = _sigmoid(x @ beta)
        grad = x.T @ (p - y) + penalty * beta
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def train_model(
    candles: Candles,
    symbol: str,
    features: tuple[str, ...] = DEFAULT_FEATURES,
    horizon: int = 4,
    calibration_share: float = 0.2,
    l2: float = 1.0,
) -> SignalModel:
    """Fit on ``candles`` of market ``symbol`` only (slice them to the training window first); see
    the module docstring. The model records what it was trained on and by which code."""
    for spec in features:
        parse_spec(spec)
    store = FeatureStore(candles)
    x_raw = np.column_stack([store.get(f) for f in features])
    close = candles.close
    n = len(close)
    fwd = np.full(n, np.nan)
    fwd[: n - horizon] = close[horizon:] / close[: n - horizon] - 1.0
    usable = np.isfinite(x_raw).all(axis=1) & np.isfinite(fwd) & (fwd != 0.0)
    idx = np.flatnonzero(usable)
    if len(idx) < 200:  # "only 0 usable bars" was all it said of a two-day window, or of one a horizon longer than it
        cold = int((~np.isfinite(x_raw).all(axis=1)).sum())
        raise DataError(f"training window has only {len(idx)} usable bars of its {n}: {cold} before every feature has warmed up, "
                        f"the last {min(horizon, n)} without a {horizon}-bar return to label them; need at least 200 "
                        "(a longer window)")
    split = idx[int(len(idx) * (1 - calibration_share))]
    fit, cal = idx[idx < split], idx[idx >= split]
    mean = x_raw[fit].mean(axis=0)
    std = x_raw[fit].std(axis=0)
    std[std == 0] = 1.0
    y = (fwd > 0).astype(np.float64)

    def design(rows: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(rows)), (x_raw[rows] - mean) / std])

    beta = _fit_logistic(design(fit), y[fit], l2)
    z_cal = design(cal) @ beta
    a, b = _fit_logistic(np.column_stack([np.ones(len(cal)), z_cal]), y[cal], 0.0)[::-1]
    accuracy = float(((_sigmoid(a * z_cal + b) > 0.5) == (y[cal] > 0.5)).mean())
    return SignalModel(
        features=list(features),
        mean=mean.tolist(),
        std=std.tolist(),
        weights=beta[1:].tolist(),
        intercept=float(beta[0]),
        calibration={"a": float(a), "b": float(b)},
        horizon=horizon,
        training={
            "symbol": symbol,
            "timeframe": candles.timeframe,
            "source": candles.source,
            "code": code_version(),
            "first_bar": format_ts(candles.timestamps[0]),
            "last_bar": format_ts(candles.timestamps[-1]),
            "data_fingerprint": candles.fingerprint,
            "fit_rows": len(fit),
            "calibration_rows": len(cal),
            "calibration_accuracy": round(accuracy, 4),
            "l2": l2,
        },
    )


def save_model(model: SignalModel, path: Path) -> None:
    """Write the model JSON atomically."""
    atomic_write(path, strict_json(model.model_dump()) + "\n")


@functools.cache
def _builtin_file(ref: str) -> str:
    return os.fspath(_BUILTIN_DIR / f"{ref[len(BUILTIN_PREFIX):]}.json")


def _model_file(ref: str) -> str:
    """``builtin:NAME`` -> the model shipped with the package; anything else is a file path (``located``)."""
    return _builtin_file(ref) if ref.startswith(BUILTIN_PREFIX) else os.fspath(located(ref))


def _named(ref: str, path: str) -> str:
    return f"model {ref}" + (f" ({path})" if path != ref else "")


_LOADED: dict[tuple[str, int, int], tuple[SignalModel, str]] = {}


def load_model(ref: str) -> tuple[SignalModel, str]:
    """The model and the sha256 of its file; parsed once per process while the file is unchanged
    (a stat a call, with os's call: a backtest asks three times)."""
    path = _model_file(ref)
    try:
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
        if key in _LOADED:
            return _LOADED[key]
        raw = read_file(Path(path), MAX_MODEL_BYTES)
    except OSError as exc:
        where = not_found_where(path) if isinstance(exc, FileNotFoundError) else ""
        raise ConfigError(f"{_named(ref, path)}: cannot read it: {exc.strerror}{where}") from None
    try:
        model = SignalModel.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigError(f"{_named(ref, path)} is not a valid model file: {clip(problems(exc), 300)}") from None
    for spec in model.features:
        parse_spec(spec)
    _LOADED[key] = (model, hashlib.sha256(raw).hexdigest())
    return _LOADED[key]

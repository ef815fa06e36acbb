"""The optimizer's YAML: meta (data, window, study, sampler, stop policy), the parameter tree,
constraints and scoring. Everything is validated before any trial runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from genesis_core.backtest import read_config_file
from genesis_core.config import StrictModel, parse_model
from genesis_core.data import parse_ts
from genesis_core.errors import ConfigError, DataError
from genesis_core.scoring import Constraints, Scoring


class FloatParam(StrictModel):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0.0)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.step, self.log)
        return self


class IntParam(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.step if self.step != 1 else None, self.log)
        return self


Scalar = bool | int | float | str | None


class CategoricalParam(StrictModel):
    type: Literal["categorical"]
    choices: list[Scalar | list[Any]] = Field(min_length=1)


class GridParam(StrictModel):
    """Like categorical; with the grid sampler these values span the grid."""

    type: Literal["grid"]
    values: list[Scalar | list[Any]] = Field(min_length=1)


class FixedParam(StrictModel):
    type: Literal["fixed"]
    value: Any


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam | GridParam | FixedParam, Field(discriminator="type")]
PARAM_TYPES = ("float", "int", "categorical", "grid", "fixed")


def _check_range(low: float, high: float, step: float | None, log: bool) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if step is not None and step > high - low:
        raise ValueError(f"step ({step}) is larger than the range {low} .. {high}")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, got {low}")
    if log and step is not None:
        raise ValueError("log scale and step cannot be combined")


def _check_span(start: str, end: str) -> None:
    """Both dates parse and ``start`` is not after ``end`` (a bare-date end means its whole day)."""
    try:
        first, last = parse_ts(start), parse_ts(end, end_of_day=True)
    except DataError as exc:
        raise ValueError(str(exc)) from None
    if first > last:
        raise ValueError(f"start {start} is after end {end}")


class SamplerConfig(StrictModel):
    name: Literal["tpe", "random", "cmaes", "gp", "grid"] = "tpe"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class PrunerConfig(StrictModel):
    name: Literal["none", "median", "hyperband"] = "none"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class StopPolicy(StrictModel):
    """When to stop; not part of the resume signature, so a run can be extended."""

    max_trials: int | None = Field(100, ge=1)
    timeout_seconds: float | None = Field(None, gt=0)
    end_at: str | None = None  # ISO-8601 wall-clock time


class Meta(StrictModel):
    symbol: str = "BTCUSD"
    timeframe: str = "1h"
    base_config: str = "configs/reference.yaml"
    data: str | None = None  # overrides the base config's data.path
    warmup_bars: int | None = Field(None, ge=0)
    sample_start: str
    sample_end: str
    study_name: str
    storage: str | None = None  # default: sqlite:///<results_dir>/optuna.db
    results_dir: str = "results"
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    stop: StopPolicy = StopPolicy()
    n_workers: int = Field(1, ge=1)
    bootstrap_random_trials: int = Field(0, ge=0)
    duplicate_streak_limit: int = Field(50, ge=1)
    # stop: end the explore phase; widen: sample at random for as many trials, then go back (and
    # stop if duplicates go on even then: the space is exhausted)
    duplicate_streak_action: Literal["stop", "widen"] = "stop"
    stale_trial_seconds: float = Field(30.0, gt=0)  # a RUNNING trial or cache claim older than this is a dead worker's
    skip_champion_merge: bool = False

    @model_validator(mode="after")
    def _span(self) -> Meta:
        _check_span(self.sample_start, self.sample_end)
        return self


class WindowSpec(StrictModel):
    """An out-of-sample window; both ends inclusive, like the explore window."""

    start: str
    end: str

    @model_validator(mode="after")
    def _span(self) -> WindowSpec:
        _check_span(self.start, self.end)
        return self


class ValidationConstraints(Constraints):
    """Usually stricter than the explore constraints; all must hold on every window."""

    include_scoring_failures: bool = False  # also re-run VALID explore trials that broke explore constraints


class WalkForward(WindowSpec):
    """Rolling scheme: [start, end] cut into folds + 1 equal blocks; fold i explores block i-1 and
    validates on block i, each fold a study of its own with the same space and scoring."""

    folds: int = Field(3, ge=1, le=20)


class ValidationConfig(StrictModel):
    enabled: bool = False
    windows: list[WindowSpec] = Field(default_factory=list)
    top_n: int = Field(5, ge=1)
    constraints: ValidationConstraints = ValidationConstraints()
    # worst window, mean of windows, or robust = (1 - robust_weight) * mean + robust_weight * worst
    ranking: Literal["worst", "mean", "robust"] = "worst"
    robust_weight: float = Field(0.5, ge=0.0, le=1.0)
    walk_forward: WalkForward | None = None

    @model_validator(mode="after")
    def _windows(self) -> ValidationConfig:
        if self.enabled and not self.windows:
            raise ValueError("windows: give at least one out-of-sample window when validation is enabled")
        return self


class PromotionConfig(StrictModel):
    """Off unless enabled: a smoke run must never replace the champion."""

    enabled: bool = False
    min_improvement: float = Field(0.0, ge=0.0)  # validation score units over the current champion


class OptimizerConfig(StrictModel):
    meta: Meta
    parameters: dict[str, ParamSpec]  # flattened: dotted path inside the strategy's params -> spec
    constraints: Constraints = Constraints()
    scoring: Scoring = Scoring()
    validation: ValidationConfig = ValidationConfig()
    promotion: PromotionConfig = PromotionConfig()

    @model_validator(mode="after")
    def _something_to_search(self) -> OptimizerConfig:
        if not any(not isinstance(p, FixedParam) for p in self.parameters.values()):
            raise ValueError("parameters: nothing to search (every parameter is fixed)")
        if self.promotion.enabled and not self.validation.enabled:
            raise ValueError("promotion.enabled needs validation.enabled: only validated candidates can be promoted")
        return self


def flatten_parameters(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested or dot-notation keys -> {dotted path: leaf spec}; a leaf is a mapping with ``type``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value.get("type") in PARAM_TYPES:
            if path in flat:
                raise ConfigError(f"parameters.{path}: given twice (nested and dotted)")
            flat[path] = value
        elif isinstance(value, dict):
            for sub, spec in flatten_parameters(value, path).items():
                if sub in flat:
                    raise ConfigError(f"parameters.{sub}: given twice (nested and dotted)")
                flat[sub] = spec
        else:
            raise ConfigError(
                f"parameters.{path}: expected a parameter spec with type one of {', '.join(PARAM_TYPES)}, "
                f"or a nested mapping; got {value!r}"
            )
    return flat


def load_optimizer_config(path: str | Path) -> OptimizerConfig:
    """Read and validate an optimizer YAML; ConfigError names the path of every problem."""
    raw = read_config_file(path)
    if not isinstance(raw.get("parameters"), dict):
        raise ConfigError(f"{path}: 'parameters' must be a mapping of the parameters to search")
    raw = {**raw, "parameters": flatten_parameters(raw["parameters"])}
    return parse_model(OptimizerConfig, raw)

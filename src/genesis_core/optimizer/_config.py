"""The optimizer's sections of a study config: meta (data, window, study, sampler, stop policy),
the parameter tree, constraints and scoring. Validated before any trial runs; the validation and
promotion sections belong to their layers (``genesis_core.workflow.StudyConfig`` joins them)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from genesis_core.config import PathText, StrictModel, UserPath, name_problem, parse_model, read_config_file
from genesis_core.data import Timeframe, check_span, parse_ts
from genesis_core.errors import ConfigError, DataError, clip
from genesis_core.fingerprint import canonical_json
from genesis_core.optimizer._samplers import sampler_class
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


def _distinct(values: list[Any]) -> list[Any]:
    """Choices are any JSON value (a number, a list, a whole mapping); each once."""
    seen: set[str] = set()
    for v in values:
        text = canonical_json(v)
        if text in seen:
            raise ValueError(f"{clip(text)} is given twice")
        seen.add(text)
    return values


class CategoricalParam(StrictModel):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _once(cls, choices: list[Any]) -> list[Any]:
        return _distinct(choices)


class GridParam(StrictModel):
    """Like categorical; with the grid sampler these values span the grid."""

    type: Literal["grid"]
    values: list[Any] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _once(cls, values: list[Any]) -> list[Any]:
        return _distinct(values)


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
    if step is not None:  # in decimal, as Optuna checks it: 0.62 - 0.5 is 24 steps of 0.005, not 24.000000000000004
        span, size = Decimal(str(high)) - Decimal(str(low)), Decimal(str(step))
        if span % size:
            below = Decimal(str(low)) + span // size * size
            ends = [format(end.normalize(), "f") for end in (below, below + size)]
            raise ValueError(f"{low} .. {high} is not a whole number of steps of {step}: the sampler would stop at {ends[0]} "
                             f"(Optuna moves the high onto the grid); give high {ends[0]} or {ends[1]}")


class SamplerConfig(StrictModel):
    # a name of optimizer.SAMPLERS or package.module:Class (an Optuna BaseSampler); the default is
    # the best measured search quality per second (README, "Search quality")
    name: str = "tpe-batched"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        sampler_class(name)
        return name


class PrunerConfig(StrictModel):
    name: Literal["none", "median", "hyperband"] = "none"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class StopPolicy(StrictModel):
    """When to stop; not part of the resume signature, so a run can be extended."""

    max_trials: int | None = Field(100, ge=1)
    timeout_seconds: float | None = Field(None, gt=0)
    end_at: str | None = None  # ISO-8601 wall-clock time (UTC unless an offset is given)

    @field_validator("end_at")
    @classmethod
    def _when(cls, end_at: str | None) -> str | None:
        if end_at is not None:
            try:
                parse_ts(end_at)
            except DataError as exc:
                raise ValueError(str(exc)) from None
        return end_at

    def seconds_left(self, now: float) -> float | None:
        """The time a session starting ``now`` may take: the shorter of the timeout and ``end_at``."""
        limits = [] if self.timeout_seconds is None else [self.timeout_seconds]
        if self.end_at is not None:
            limits.append(parse_ts(self.end_at) - now)
        return min(limits) if limits else None

    def refusal(self, max_trials: int | None, now: float) -> str | None:
        """Why a session starting ``now`` would run nothing or never end (``max_trials`` from the
        command line overrides the config's); None when it has a budget it can spend."""
        if (max_trials or self.max_trials) is None and self.timeout_seconds is None and self.end_at is None:
            return "meta.stop: set max_trials, timeout_seconds or end_at, or the run never ends"
        if self.end_at is not None and parse_ts(self.end_at) <= now:
            return f"meta.stop.end_at {self.end_at} has passed: nothing would run; set a later time or remove it"
        return None


class Meta(StrictModel):
    symbol: str = "BTCUSD"
    timeframe: Timeframe = "1h"
    base_config: UserPath = "configs/reference.yaml"
    data: UserPath | None = None  # overrides the base config's data.path
    warmup_bars: int | None = Field(None, ge=0)
    sample_start: str
    sample_end: str
    study_name: str
    storage: PathText | None = None  # default: journal:///<results_dir>/optuna.journal
    results_dir: UserPath = "results"
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    stop: StopPolicy = StopPolicy()
    n_workers: int = Field(1, ge=1)
    # how workers share the study: "reproducible" (this process samples batches that worker processes
    # measure, told in trial order: a seeded run repeats exactly), "free" (each worker samples and
    # tells on its own: no batch waits, any number of machines); "auto": reproducible for a seeded
    # run on the journal, free otherwise
    parallel: Literal["auto", "reproducible", "free"] = "auto"
    bootstrap_random_trials: int = Field(0, ge=0)
    duplicate_streak_limit: int = Field(50, ge=1)
    # stop: end the explore phase; widen: sample at random for as many trials, then go back (and
    # stop if duplicates go on even then: the space is exhausted)
    duplicate_streak_action: Literal["stop", "widen"] = "stop"
    fail_streak_limit: int = Field(50, ge=1)  # parameter sets in a row that the strategy refuses (FAIL) end the explore phase
    # how long to retry a database that does not answer (a restart, a failover) before the run ends;
    # a worker elsewhere whose heartbeats stop counts as dead after the longer of this + 5 s and stale_trial_seconds
    storage_retry_seconds: float = Field(60.0, ge=0)
    stale_trial_seconds: float = Field(30.0, gt=0)  # a RUNNING trial or cache claim older than this is a dead worker's
    # how long a strategy may take to decide a trial's window before the trial FAILs: a loop that never
    # ended held its worker, and a Ctrl-C (which waits for the trials in flight) for ever
    trial_timeout_seconds: float = Field(300.0, gt=0)
    # host:port of a `genesis storage serve` gRPC proxy in front of the database storage: the study's
    # calls go through it (one connection pool for a whole fleet); the score cache and run files still
    # go to the database, which stays the run's storage (its signature, its files)
    proxy: str | None = Field(None, pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
    skip_champion_merge: bool = False
    # a model trained on another market, a champion measured on other data, or a meta.symbol the data
    # contradicts fails preflight; true makes each a warning (recorded in run.json)
    allow_cross_market: bool = False

    @field_validator("symbol", "timeframe", "study_name")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = name_problem(value)  # each names a file or folder under results_dir
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _span(self) -> Meta:
        check_span(self.sample_start, self.sample_end)
        return self


class OptimizerConfig(StrictModel):
    meta: Meta
    parameters: dict[str, ParamSpec]  # flattened: dotted path inside the strategy's params -> spec
    constraints: Constraints = Constraints()
    scoring: Scoring = Scoring()

    @model_validator(mode="after")
    def _something_to_search(self) -> OptimizerConfig:
        if not any(not isinstance(p, FixedParam) for p in self.parameters.values()):
            raise ValueError("parameters: nothing to search (every parameter is fixed)")
        return self


C = TypeVar("C", bound=OptimizerConfig)


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


def load_optimizer_config(path: str | Path, model: type[C] = OptimizerConfig) -> C:  # type: ignore[assignment]
    """Read and validate an optimizer YAML as ``model`` (the whole study config at the edge);
    ConfigError names the path of every problem."""
    raw = read_config_file(path)
    if not isinstance(raw.get("parameters"), dict):
        raise ConfigError(f"{path}: 'parameters' must be a mapping of the parameters to search")
    return parse_model(model, {**raw, "parameters": flatten_parameters(raw["parameters"])})

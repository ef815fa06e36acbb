"""The search space: Optuna distributions for the parameter paths, and its fingerprint."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from genesis_core.errors import ConfigError, clip
from genesis_core.fingerprint import canonical_json, fingerprint
from genesis_core.optimizer._config import (
    CategoricalParam,
    FixedParam,
    FloatParam,
    GridParam,
    IntParam,
    OptimizerConfig,
)


def _choice(value: Any) -> Any:
    """Optuna categorical choices must be scalars: a list or mapping is carried as its canonical JSON."""
    return canonical_json(value) if isinstance(value, list | dict) else value


def _key(value: Any) -> tuple[str, Any]:
    """A dict key for a choice that keeps True, 1 and 1.0 apart (they hash alike)."""
    return type(value).__name__, value


def _on_grid(d: FloatDistribution | IntDistribution, x: float) -> int | float:
    """``x`` moved to the nearest value the sampler can propose: on the step grid, whole for ints."""
    if d.step is not None:
        x = d.low + round((x - d.low) / d.step) * d.step
    return round(x) if isinstance(d, IntDistribution) else round(x, 12)


def _steps(d: FloatDistribution | IntDistribution) -> int:
    """How many values the step grid of ``d`` holds (an int's step is always set; Optuna moved the high onto the grid)."""
    assert d.step is not None, "only a distribution with a step has a grid"
    return round((d.high - d.low) / d.step) + 1


def _on_log_scale(d: FloatDistribution | IntDistribution, u: float) -> int | float:
    """The value at ``u`` in [0, 1) of a log-scale range, evenly over its logarithm: each whole
    number of an int range takes the logarithm's share of [n - 0.5, n + 0.5], as in Optuna's
    samplers (rounded from [low, high] its ends would take half that)."""
    pad = 0.5 if isinstance(d, IntDistribution) else 0.0
    low, high = math.log(d.low - pad), math.log(d.high + pad)
    return _on_grid(d, min(max(math.exp(low + u * (high - low)), d.low), d.high))


class SearchSpace:
    def __init__(self, config: OptimizerConfig) -> None:
        self.fixed = {p: s.value for p, s in config.parameters.items() if isinstance(s, FixedParam)}
        self.distributions: dict[str, FloatDistribution | IntDistribution | CategoricalDistribution] = {}
        self.grid: dict[str, list[Any]] = {}
        self._choices: dict[str, dict[Any, Any]] = {}  # path -> {what Optuna holds: the choice}
        for path, spec in sorted(config.parameters.items()):
            if isinstance(spec, FloatParam):
                self.distributions[path] = FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
            elif isinstance(spec, IntParam):
                self.distributions[path] = IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
            elif isinstance(spec, CategoricalParam | GridParam):
                choices = spec.choices if isinstance(spec, CategoricalParam) else spec.values
                values = [_choice(v) for v in choices]
                if len({canonical_json(v) for v in values}) < len(values):
                    raise ConfigError(f"parameters.{path}: a choice and another's JSON text are the same; give each once")
                self.distributions[path] = CategoricalDistribution(values)
                self.grid[path] = values
                self._choices[path] = {_key(v): c for v, c in zip(values, choices, strict=True)}
        self.spec = {p: s.model_dump(mode="json") for p, s in sorted(config.parameters.items())}
        self.fingerprint = fingerprint(self.spec)

    def suggest(self, trial: optuna.Trial) -> None:
        """Ask ``trial`` for a value of every searched parameter."""
        for path, d in self.distributions.items():
            if isinstance(d, FloatDistribution):
                trial.suggest_float(path, d.low, d.high, step=d.step, log=d.log)
            elif isinstance(d, IntDistribution):
                trial.suggest_int(path, d.low, d.high, step=d.step, log=d.log)
            elif isinstance(d, CategoricalDistribution):
                trial.suggest_categorical(path, d.choices)

    def unchoice(self, path: str, value: Any) -> Any:
        """The config value of what Optuna holds for ``path`` (a choice's JSON text back to the choice)."""
        return self._choices[path][_key(value)] if path in self._choices else value

    def held(self, path: str, value: Any) -> Any:
        """What Optuna holds for the config value ``value`` of ``path`` (``unchoice``'s inverse)."""
        return _choice(value) if path in self._choices else value

    def trial_params(self, trial: optuna.trial.BaseTrial | optuna.trial.FrozenTrial) -> dict[str, Any]:
        """Searched values of a trial plus the fixed ones, as dotted paths inside params."""
        return {**self.fixed, **{p: self.unchoice(p, v) for p, v in trial.params.items()}}

    def size(self) -> int | None:
        """How many distinct points the sampler can propose; None when a float has no step (no end to them)."""
        n = 1
        for d in self.distributions.values():
            if isinstance(d, CategoricalDistribution):
                n *= len(d.choices)
            elif d.step is not None:
                n *= _steps(d)
            else:
                return None
        return n

    def grid_levels(self) -> int | None:
        """The fewest ``levels`` at which a grid sweep (``sweep``) holds every point of the space;
        None when none does: a float without a step, or a log scale, spread over its logarithm."""
        levels = 2
        for d in self.distributions.values():
            if isinstance(d, CategoricalDistribution):
                continue
            if d.log or d.step is None:
                return None
            levels = max(levels, _steps(d))
        return levels

    def midpoint(self) -> dict[str, Any]:
        """A deterministic point inside the space (for smoke runs and preflight)."""
        point: dict[str, Any] = dict(self.fixed)
        for path, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                point[path] = self.unchoice(path, d.choices[0])
            else:
                point[path] = _on_grid(d, (d.low + d.high) // 2 if isinstance(d, IntDistribution) else (d.low + d.high) / 2)
        return point

    def at(self, units: list[list[float]]) -> list[dict[str, Any]]:
        """The points at ``units`` (each one number in [0, 1) per searched parameter, in
        ``distributions`` order) of the space, on its grid: equal shares of the unit interval for
        each choice, whole number and step; a log scale spreads evenly over the logarithm (Sobol
        sweeps). Worked out a parameter at a time: 10,000 points in 0.07 s, against 0.09 s point by point."""
        columns = [list(map(self._from_unit(path, d), column))
                   for (path, d), column in zip(self.distributions.items(), zip(*units, strict=True), strict=True)]
        paths = list(self.distributions)
        return [{**self.fixed, **dict(zip(paths, values, strict=True))} for values in zip(*columns, strict=True)]

    def _from_unit(self, path: str, d: FloatDistribution | IntDistribution | CategoricalDistribution) -> Callable[[float], Any]:
        """The value of searched parameter ``path`` at ``u`` in [0, 1) (``at``)."""
        if isinstance(d, CategoricalDistribution):
            choices = [self.unchoice(path, c) for c in d.choices]
            return lambda u: choices[min(int(u * len(choices)), len(choices) - 1)]
        if d.log:
            return lambda u: _on_log_scale(d, u)
        if d.step is not None:
            step, steps = d.step, _steps(d)
            return lambda u: _on_grid(d, d.low + min(int(u * steps), steps - 1) * step)
        return lambda u: _on_grid(d, d.low + u * (d.high - d.low))

    def random_point(self, rng: random.Random) -> dict[str, Any]:
        """A point drawn uniformly from the space (over the logarithm on a log scale), on its grid
        (preflight's extra base points, random sweeps)."""
        point: dict[str, Any] = dict(self.fixed)
        for path, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                point[path] = self.unchoice(path, rng.choice(d.choices))
            elif d.log:
                point[path] = _on_log_scale(d, rng.random())
            elif d.step is not None:  # every int
                point[path] = _on_grid(d, d.low + rng.randrange(_steps(d)) * d.step)
            else:
                point[path] = rng.uniform(d.low, d.high)
        return point

    def neighbours(self, point: dict[str, Any], steps: int = 20) -> list[tuple[str, Any]]:
        """One step down and up from ``point`` in each searched parameter, inside the space: the
        parameter's step (a whole number for ints; 1/``steps`` of the range, or of its logarithm,
        for a float without one), the choices either side of a categorical's."""
        out: list[tuple[str, Any]] = []
        for path, d in self.distributions.items():
            value = point[path]
            if isinstance(d, CategoricalDistribution):
                i = d.choices.index(self.held(path, value))
                out += [(path, self.unchoice(path, d.choices[j])) for j in (i - 1, i + 1) if 0 <= j < len(d.choices)]
                continue
            if d.log and not isinstance(d, IntDistribution):
                factor = (d.high / d.low) ** (1 / steps)
                candidates = [value / factor, value * factor]
            else:
                step = d.step if d.step is not None else (d.high - d.low) / steps
                candidates = [value - step, value + step]
            out += [(path, _on_grid(d, x)) for x in candidates if d.low - 1e-12 <= x <= d.high + 1e-12]
        return out

    def outside(self, path: str, value: Any) -> str | None:
        """Why ``value`` is not a point the sampler can propose for ``path``; None if it is."""
        d = self.distributions[path]
        if isinstance(d, CategoricalDistribution):
            return None if _key(_choice(value)) in self._choices[path] else f"{clip(repr(value))} is not one of {clip(repr(list(self._choices[path].values())))}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{value!r} is not a number"
        if not d.low <= value <= d.high:
            return f"{value} is outside {d.low} .. {d.high}"
        if d.step is not None and abs((value - d.low) / d.step - round((value - d.low) / d.step)) > 1e-9:
            return f"{value} is off the step grid ({d.low} + k * {d.step})"
        return None

    def sweep(self, path: str, points: int = 5) -> list[Any]:
        """Values spread across the range of ``path`` from its low to its high (evenly over the
        logarithm on a log scale; every choice of a categorical), on its grid."""
        d = self.distributions[path]
        if isinstance(d, CategoricalDistribution):
            return list(self._choices[path].values())
        if d.log:
            return sorted({_on_grid(d, d.low * (d.high / d.low) ** (k / (points - 1))) for k in range(points)})
        return sorted({_on_grid(d, d.low + (d.high - d.low) * k / (points - 1)) for k in range(points)})

"""The search space: Optuna distributions for the parameter paths, and its fingerprint."""

from __future__ import annotations

import json
import random
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from genesis_core.fingerprint import fingerprint
from genesis_core.optimizer._config import (
    CategoricalParam,
    FixedParam,
    FloatParam,
    GridParam,
    IntParam,
    OptimizerConfig,
)


def _choice(value: Any) -> Any:
    """Optuna categorical choices must be scalars: lists are carried as JSON text."""
    return json.dumps(value) if isinstance(value, list) else value


def _unchoice(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else value


def _on_grid(d: FloatDistribution | IntDistribution, x: float) -> int | float:
    """``x`` moved to the nearest value the sampler can propose: on the step grid, whole for ints."""
    if d.step is not None:
        x = d.low + round((x - d.low) / d.step) * d.step
    return round(x) if isinstance(d, IntDistribution) else round(x, 12)


class SearchSpace:
    def __init__(self, config: OptimizerConfig) -> None:
        self.fixed = {p: s.value for p, s in config.parameters.items() if isinstance(s, FixedParam)}
        self.distributions: dict[str, FloatDistribution | IntDistribution | CategoricalDistribution] = {}
        self.grid: dict[str, list[Any]] = {}
        for path, spec in sorted(config.parameters.items()):
            if isinstance(spec, FloatParam):
                self.distributions[path] = FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
            elif isinstance(spec, IntParam):
                self.distributions[path] = IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
            elif isinstance(spec, CategoricalParam | GridParam):
                values = [_choice(v) for v in (spec.choices if isinstance(spec, CategoricalParam) else spec.values)]
                self.distributions[path] = CategoricalDistribution(values)
                self.grid[path] = values
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

    def trial_params(self, trial: optuna.trial.BaseTrial | optuna.trial.FrozenTrial) -> dict[str, Any]:
        """Searched values of a trial plus the fixed ones, as dotted paths inside params."""
        return {**self.fixed, **{p: _unchoice(v) for p, v in trial.params.items()}}

    def midpoint(self) -> dict[str, Any]:
        """A deterministic point inside the space (for smoke runs and preflight)."""
        point: dict[str, Any] = dict(self.fixed)
        for path, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                point[path] = _unchoice(d.choices[0])
            else:
                point[path] = _on_grid(d, (d.low + d.high) // 2 if isinstance(d, IntDistribution) else (d.low + d.high) / 2)
        return point

    def random_point(self, rng: random.Random) -> dict[str, Any]:
        """A point drawn uniformly from the space, on its grid (preflight's extra base points)."""
        point: dict[str, Any] = dict(self.fixed)
        for path, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                point[path] = _unchoice(rng.choice(d.choices))
            elif isinstance(d, IntDistribution):
                point[path] = d.low + rng.randrange((d.high - d.low) // d.step + 1) * d.step
            elif d.step is not None:
                point[path] = round(d.low + rng.randrange(round((d.high - d.low) / d.step) + 1) * d.step, 12)
            else:
                point[path] = rng.uniform(d.low, d.high)
        return point

    def outside(self, path: str, value: Any) -> str | None:
        """Why ``value`` is not a point the sampler can propose for ``path``; None if it is."""
        d = self.distributions[path]
        if isinstance(d, CategoricalDistribution):
            return None if _choice(value) in d.choices else f"{value!r} is not one of {[_unchoice(c) for c in d.choices]}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{value!r} is not a number"
        if not d.low <= value <= d.high:
            return f"{value} is outside {d.low} .. {d.high}"
        if d.step is not None and abs((value - d.low) / d.step - round((value - d.low) / d.step)) > 1e-9:
            return f"{value} is off the step grid ({d.low} + k * {d.step})"
        return None

    def sweep(self, path: str, points: int = 5) -> list[Any]:
        """Values spread across the range of ``path`` (every choice of a categorical), on its grid."""
        d = self.distributions[path]
        if isinstance(d, CategoricalDistribution):
            return [_unchoice(c) for c in d.choices]
        return sorted({_on_grid(d, d.low + (d.high - d.low) * k / (points - 1)) for k in range(points)})

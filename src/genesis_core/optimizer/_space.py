"""The search space: Optuna distributions for the parameter paths, and its fingerprint."""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from genesis_core.fingerprint import fingerprint
from genesis_core.optimizer._config import CategoricalParam, FixedParam, FloatParam, GridParam, IntParam, OptimizerConfig


def _choice(value: Any) -> Any:
    """Optuna categorical choices must be scalars: lists are carried as JSON text."""
    return json.dumps(value) if isinstance(value, list) else value


def _unchoice(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else value


class SearchSpace:
    def __init__(self, config: OptimizerConfig) -> None:
        self.fixed = {p: s.value for p, s in config.parameters.items() if isinstance(s, FixedParam)}
        self.distributions: dict[str, BaseDistribution] = {}
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

    def trial_params(self, trial: optuna.trial.BaseTrial | optuna.trial.FrozenTrial) -> dict[str, Any]:
        """Searched values of a trial plus the fixed ones, as dotted paths inside params."""
        return {**self.fixed, **{p: _unchoice(v) for p, v in trial.params.items()}}

    def midpoint(self) -> dict[str, Any]:
        """A deterministic point inside the space (for smoke runs and preflight)."""
        point: dict[str, Any] = dict(self.fixed)
        for path, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                point[path] = _unchoice(d.choices[0])
            elif isinstance(d, IntDistribution):
                point[path] = (d.low + d.high) // 2
            else:
                mid = (d.low + d.high) / 2
                point[path] = mid if d.step is None else d.low + round((mid - d.low) / d.step) * d.step
        return point

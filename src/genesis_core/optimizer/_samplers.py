"""Samplers and pruners by name: Optuna's built-ins, or a user's sampler class by ``module:Class``."""

from __future__ import annotations

from typing import Any

import optuna

from genesis_core.errors import ConfigError
from genesis_core.plugins import describe, resolve

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,  # over the categorical and grid parameters
}
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}


def sampler_class(name: str) -> type[optuna.samplers.BaseSampler]:
    """A sampler class by name (SAMPLERS) or ``package.module:Class``."""
    cls = resolve(name, SAMPLERS, "sampler", "genesis_core.samplers")
    if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
        raise ConfigError(f"sampler {name!r} is {describe(cls)}, not an optuna.samplers.BaseSampler subclass")
    return cls


def make_sampler(name: str, kwargs: dict[str, Any], grid: dict[str, list[Any]], n_searched: int,
                 worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler; with a seed, worker i uses seed + i so workers do not propose the
    same points (which the cache would answer, but which would waste the workers)."""
    kwargs = dict(kwargs)
    if kwargs.get("seed") is not None:
        kwargs["seed"] = int(kwargs["seed"]) + worker_index
    cls = sampler_class(name)
    try:
        if cls is optuna.samplers.GridSampler:
            if not grid or len(grid) != n_searched:
                raise ConfigError("meta.sampler grid: every searched parameter must be categorical or grid")
            return cls(grid, **kwargs)
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"meta.sampler: {name} does not accept these kwargs: {exc}") from None


def make_pruner(name: str, kwargs: dict[str, Any]) -> optuna.pruners.BasePruner:
    try:
        return PRUNERS[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"meta.pruner: {name} does not accept these kwargs: {exc}") from None

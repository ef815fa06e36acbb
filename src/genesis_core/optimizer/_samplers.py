"""Samplers and pruners by name: Optuna's built-ins, or a user's sampler class by ``module:Class``."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

from genesis_core.errors import ConfigError, unknown_key_hint
from genesis_core.plugins import describe, resolve


class BatchedTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE fitted once every ``batch`` trials: a fit ranks its candidates by TPE's
    acquisition (the ratio of the good and bad densities) and hands out the ``batch`` best, one a
    trial, so the fit, whose cost grows with the study, is paid once a batch. The later proposals of
    a batch do not learn from the earlier ones' results, as parallel workers do not learn from each
    other's running trials; ``make bench-quality`` measures what that costs. Other kwargs are TPE's."""

    def __init__(self, *, batch: int = 8, **kwargs: Any) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a whole number, 1 or more, not {batch!r}")
        super().__init__(**kwargs)
        self._batch = batch
        self._queued: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self._ranked: tuple[dict[str, np.ndarray], np.ndarray] | None = None
        self._space: dict[str, optuna.distributions.BaseDistribution] | None = None  # the last fit's
        self._rows: tuple[Any, dict[int, tuple[Any, ...] | None]] = ((), {})  # a space, and each finished trial's values in it

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: optuna.trial.FrozenTrial) -> dict[str, optuna.distributions.BaseDistribution]:
        """The last fit's space while its batch lasts (its proposals are for that space); inferring
        it reads every trial of the study, as the fit does."""
        if self._space is None or not self._queued.get(tuple(sorted(self._space))):
            self._space = super().infer_relative_search_space(study, trial)
        return self._space

    def _get_internal_repr(self, trials: list[optuna.trial.FrozenTrial], search_space: dict[str, optuna.distributions.BaseDistribution],
                           study: optuna.Study) -> dict[str, np.ndarray]:
        """TPE's, with each finished trial's values converted once, not at every fit (a fit reads
        every trial of the study: at 1,000 trials this took a quarter of it)."""
        space = tuple(search_space.items())
        if self._rows[0] != space:
            self._rows = (space, {})
        memo = self._rows[1]
        rows = []
        for t in trials:
            row = memo.get(t._trial_id, False)
            if row is False:
                params = self._get_params(t, study)
                row = tuple(d.to_internal_repr(params[name]) for name, d in space) if search_space.keys() <= params.keys() else None
                if t.state.is_finished():  # its parameters never change again
                    memo[t._trial_id] = row
            if row is not None:
                rows.append(row)
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in space]
        return {name: np.asarray(column) for (name, _), column in zip(space, columns, strict=True)}

    def _sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                         search_space: dict[str, optuna.distributions.BaseDistribution]) -> dict[str, Any]:
        queued = self._queued.get(tuple(sorted(search_space)))
        return queued.pop(0) if queued else super()._sample_relative(study, trial, search_space)

    def _compute_acquisition_func(self, samples: dict[str, np.ndarray], mpe_below: Any, mpe_above: Any) -> np.ndarray:
        values = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        self._ranked = (samples, values)  # what the fit ranked: the batch's proposals come from here
        return values

    def _sample(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                search_space: dict[str, optuna.distributions.BaseDistribution]) -> dict[str, Any]:
        key = tuple(sorted(search_space))
        best = super()._sample(study, trial, search_space)  # its best candidate: argmax, the first of the ranking
        assert self._ranked is not None
        samples, values = self._ranked
        self._queued[key] = [{name: d.to_external_repr(samples[name][i].item()) for name, d in search_space.items()}
                             for i in np.argsort(-values, kind="stable")[1:self._batch]]
        return best


SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "tpe-batched": BatchedTPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,  # over the categorical and grid parameters
}
# what a sampler imports once it starts (Optuna's GP sampler: PyTorch, not a dependency of Genesis-Core,
# which it imported after its start-up trials, ending the run in a traceback)
NEEDS = {"gp": ("torch", "PyTorch")}
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}


def sampler_class(name: str) -> type[optuna.samplers.BaseSampler]:
    """A sampler class by name (SAMPLERS) or ``package.module:Class``; ConfigError for one whose
    package (NEEDS) is not installed."""
    module, package = NEEDS.get(name, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        others = ", ".join(n for n in SAMPLERS if n not in NEEDS)
        raise ConfigError(f"sampler {name!r} needs {package} ({module}), which is not installed here: "
                          f"{sys.executable} -m pip install {module}, or another sampler ({others})")
    cls = resolve(name, SAMPLERS, "sampler", "genesis_core.samplers")
    if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
        raise ConfigError(f"sampler {name!r} is {describe(cls)}, not an optuna.samplers.BaseSampler subclass")
    return cls


def _keywords(cls: type) -> set[str] | None:
    """The keyword arguments ``cls(...)`` takes; ``**kwargs`` of Genesis-Core's own classes followed
    up to the base class they go to (as ``BatchedTPESampler`` passes them to TPE's). None when that
    cannot be known: another ``**kwargs`` (a user's class may take any keyword from it) or no
    signature to read (a compiled class); the call itself then says what it refuses."""
    known: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        try:
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        except (TypeError, ValueError):
            return None
        known |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return known
        if not klass.__module__.startswith("genesis_core."):
            return None
    return None


def _check_keywords(cls: type, kwargs: dict[str, Any], where: str, name: str) -> None:
    """ConfigError naming the first of ``kwargs`` that ``cls`` does not take, with the closest it does."""
    known = _keywords(cls)
    if known is None:
        return
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: {name} takes no such argument{unknown_key_hint(unknown[0], sorted(known))}")


def offset_seed(seed: int, offset: int) -> int:
    """``seed + offset`` within the seeds NumPy takes (0 .. 2**32 - 1)."""
    return (int(seed) + offset) % 2**32


def make_sampler(name: str, kwargs: dict[str, Any], grid: dict[str, list[Any]], n_searched: int,
                 worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler; with a seed, worker i uses seed + i so workers do not propose the
    same points (which the cache would answer, but which would waste the workers)."""
    kwargs = dict(kwargs)
    if kwargs.get("seed") is not None:
        kwargs["seed"] = offset_seed(kwargs["seed"], worker_index)
    cls = sampler_class(name)
    _check_keywords(cls, kwargs, "meta.sampler.kwargs", name)
    try:
        if cls is optuna.samplers.GridSampler:
            if not grid or len(grid) != n_searched:
                raise ConfigError("meta.sampler grid: every searched parameter must be categorical or grid")
            return cls(grid, **kwargs)
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"meta.sampler: {name} does not accept these kwargs: {exc}") from None


def make_pruner(name: str, kwargs: dict[str, Any]) -> optuna.pruners.BasePruner:
    _check_keywords(PRUNERS[name], kwargs, "meta.pruner.kwargs", name)
    try:
        return PRUNERS[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"meta.pruner: {name} does not accept these kwargs: {exc}") from None


FEASIBILITY_SUFFIX = ".feasibility"
FEASIBILITY_SEED_OFFSET = 999_983  # the companion's seed: another random stream than any worker's main sampler


class PhasedSampler(optuna.samplers.BaseSampler):
    """Feasibility first, one objective scale per study. Trials numbered below ``phase1_trials``
    take their parameters from a companion study, ``<study>.feasibility`` in the same storage,
    whose own sampler is told each trial's feasibility score (``feasibility_score``); the study itself
    is told production scores only, so its sampler, its dashboards and its importances never mix
    the two scales, and in phase 2 it sees the phase-1 trials at their production scores."""

    def __init__(self, main: optuna.samplers.BaseSampler, feasibility: optuna.samplers.BaseSampler,
                 distributions: dict[str, optuna.distributions.BaseDistribution], phase1_trials: int) -> None:
        self.main, self.feasibility = main, feasibility
        self.distributions = distributions
        self.phase1_trials = phase1_trials
        self._companion: optuna.Study | None = None
        self._asked: dict[int, optuna.Trial] = {}  # main trial number -> its companion trial, until told

    def _in_phase1(self, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number < self.phase1_trials

    def companion(self, study: optuna.Study) -> optuna.Study:
        if self._companion is None:
            self._companion = optuna.create_study(storage=study._storage, study_name=study.study_name + FEASIBILITY_SUFFIX,
                                                  direction="maximize", load_if_exists=True, sampler=self.feasibility)
        return self._companion

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: optuna.trial.FrozenTrial) -> dict[str, optuna.distributions.BaseDistribution]:
        return {} if self._in_phase1(trial) else self.main.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, optuna.distributions.BaseDistribution]) -> dict[str, Any]:
        return {} if self._in_phase1(trial) else self.main.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        if not self._in_phase1(trial):
            return self.main.sample_independent(study, trial, param_name, param_distribution)
        if trial.number not in self._asked:  # the whole point at once, from the companion's sampler
            with warnings.catch_warnings():  # the companion is asked and told by hand: its heartbeat is the study's
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
                self._asked[trial.number] = self.companion(study).ask(self.distributions)
        return self._asked[trial.number].params[param_name]

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.main.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Sequence[float] | None) -> None:
        self.main.after_trial(study, trial, state, values)
        asked = self._asked.pop(trial.number, None)
        if asked is None:
            return
        feasibility = trial.user_attrs.get("feasibility_score")  # set by the objective before the tell
        if state == optuna.trial.TrialState.COMPLETE and feasibility is not None:
            self.companion(study).tell(asked, float(feasibility))
        else:
            self.companion(study).tell(asked, state=optuna.trial.TrialState.PRUNED if state == optuna.trial.TrialState.PRUNED
                                       else optuna.trial.TrialState.FAIL)

    def reseed_rng(self) -> None:
        self.main.reseed_rng()
        self.feasibility.reseed_rng()

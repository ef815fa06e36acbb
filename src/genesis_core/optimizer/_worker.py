"""One worker process's part of a study: the objective (with the duplicate cache claim), pruning,
duplicate streaks and the per-trial artifact."""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from genesis_core.backtest import FEATURE_CACHE, Backtester, BacktestResult, Plan, build_config
from genesis_core.errors import GenesisError
from genesis_core.fingerprint import code_version, fingerprint
from genesis_core.optimizer._storage import CacheEntry, ScoreCache, cache_url, open_storage
from genesis_core.optimizer._study import StudySpec
from genesis_core.records import TRIAL_METRICS, ScoreRecord, TrialArtifact, backtest_record
from genesis_core.scoring import Outcome, checkpoints, prune_reason, score

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class Worker:
    """Evaluates trials of one study in one process."""

    def __init__(self, spec: StudySpec, max_trials: int | None = None, index: int = 0) -> None:
        self.spec = spec
        self.max_trials = max_trials
        self.index = index
        self.backtester = Backtester(FEATURE_CACHE)
        self.cache = ScoreCache(cache_url(spec.storage_url), spec.config.meta.stale_trial_seconds)
        self.streak = 0
        self.stopped_reason: str | None = None
        self.pruner = spec.pruner()
        self.random_until = 0  # trials before this number are sampled at random (bootstrap, widening)
        self.widened = 0
        self.interrupted = False
        self.children: Sequence[multiprocessing.process.BaseProcess] = []  # worker processes to pass Ctrl-C on to

    def objective(self, trial: optuna.Trial) -> float:
        s = self.spec
        s.space.suggest(trial)
        phase = 1 if trial.number < s.config.scoring.phase1.trials else 2
        params = s.space.trial_params(trial)
        try:
            config = build_config(s.base, s.champion, s.overrides, params)
            plan = self.backtester.plan(config)
        except GenesisError as exc:  # this parameter combination is invalid: FAIL, never a number
            trial.set_user_attr("error", str(exc))
            raise
        key = fingerprint({"config": plan.config_fingerprint, "window": plan.window.fingerprint,
                           "code": code_version(), "scoring": s.scoring_fingerprint})
        attrs: dict[str, Any] = {"config_fingerprint": plan.config_fingerprint, "cache_key": key}
        top: dict[str, Any] = {"phase": phase}  # the attributes people filter on; the rest go in "genesis"
        entry = self.cache.claim(key, trial.number)
        if entry is not None:
            self.streak += 1
            outcome = Outcome.DUPLICATE.value
            top.update(cached=True, cache_reused=entry.trial_number)
            attrs["original_outcome"] = entry.score.outcome.value
        else:
            self.streak = 0
            try:
                entry = self._evaluate(trial, plan, params, phase)
                self.cache.store(key, entry)
            except BaseException:
                self.cache.release(key)
                raise
            outcome = entry.score.outcome.value
            top["cached"] = False
        sc = entry.score
        top.update(outcome=outcome, score_phase1=sc.phase1, score_phase2=sc.phase2)
        attrs.update(constraints_failed=sc.constraints_failed, metrics=entry.metrics, pruned=entry.pruned)
        for name, value in top.items():  # each user attribute is one storage write (~0.4 ms on the journal)
            trial.set_user_attr(name, value)
        trial.set_user_attr("genesis", attrs)
        if entry.pruned is not None:
            raise optuna.TrialPruned(entry.pruned)
        return sc.phase1 if phase == 1 else sc.phase2

    def _evaluate(self, trial: optuna.Trial, plan: Plan, params: dict[str, Any], phase: int) -> CacheEntry:
        """Backtest, score, prune; write the trial's artifact."""
        s = self.spec
        result = self.backtester.execute(plan)
        sc = ScoreRecord.of(score(result.metrics, result.trace, s.config.scoring, s.config.constraints))
        pruned = self._prune(trial, result, phase)
        s.folder.write_trial(TrialArtifact(**dict(backtest_record(result, trades=False)), trial_number=trial.number,
                                           params=params, score=sc, pruned=pruned))
        return CacheEntry(trial_number=trial.number, score=sc, metrics={k: result.metrics[k] for k in TRIAL_METRICS},
                          pruned=pruned)

    def _prune(self, trial: optuna.Trial, result: BacktestResult, phase: int) -> str | None:
        """Report checkpoint values (for Optuna's pruners) and apply the pruning rules."""
        cfg = self.spec.config.scoring.pruning
        if not cfg.enabled and isinstance(self.pruner, optuna.pruners.NopPruner):
            return None
        exit_bars = result.engine.trades["exit_bar"] - result.window.start_index
        points = checkpoints(result.engine.equity, exit_bars, result.engine.trades["pnl"], cfg.checkpoints)
        rule = prune_reason(points, result.trace["signals"], cfg)
        for i, p in enumerate(points):
            trial.report(p.total_return, step=p.bar)
            if rule is not None and rule[0] == i:
                return rule[1]
            if i < len(points) - 1 and trial.should_prune():
                return f"{type(self.pruner).__name__} at bar {p.bar}"
        return None

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.interrupted:
            study.stop()  # Ctrl-C: the trial in flight has finished; stop here
        if self.max_trials is not None and len(study.get_trials(deepcopy=False, states=FINISHED)) >= self.max_trials:
            study.stop()  # the budget is the study's, shared by every worker on every machine
        meta = self.spec.config.meta
        if self.streak >= meta.duplicate_streak_limit:
            if meta.duplicate_streak_action == "widen" and self.random_until <= trial.number:
                self.random_until = trial.number + 1 + meta.duplicate_streak_limit
                self.widened += 1
                self.streak = 0
                study.sampler = self._random_sampler(trial.number + 1)
            else:
                exhausted = " even when sampling at random: the space looks exhausted" if meta.duplicate_streak_action == "widen" else ""
                self.stopped_reason = f"{self.streak} duplicate parameter sets in a row (meta.duplicate_streak_limit){exhausted}"
                study.stop()
        elif trial.number + 1 >= self.random_until and isinstance(study.sampler, optuna.samplers.RandomSampler):
            study.sampler = self.spec.sampler(self.index)  # bootstrap or widening done: back to the configured one

    def _random_sampler(self, offset: int) -> optuna.samplers.RandomSampler:
        seed = self.spec.config.meta.sampler.kwargs.get("seed")
        return optuna.samplers.RandomSampler(seed=None if seed is None else int(seed) + self.index + offset)

    def run(self, n_trials: int, timeout: float | None, on_trial: Callable[[], None] | None = None) -> None:
        s = self.spec
        storage = open_storage(s.storage_url, s.config.meta.stale_trial_seconds)
        study = optuna.load_study(study_name=s.name, storage=storage, sampler=s.sampler(self.index), pruner=self.pruner)
        self.random_until = s.config.meta.bootstrap_random_trials
        if len(study.get_trials(deepcopy=False)) < self.random_until:
            study.sampler = self._random_sampler(0)
        callbacks = [lambda st, tr: self.after_trial(st, tr)]
        if on_trial is not None:
            callbacks.append(lambda st, tr: on_trial())
        study.optimize(self.objective, n_trials=n_trials, timeout=timeout, callbacks=callbacks,
                       catch=(GenesisError,), gc_after_trial=False)

    @contextlib.contextmanager
    def stopping_on_sigint(self) -> Iterator[None]:
        """Ctrl-C finishes the trial in flight, then stops; the signal is passed on to child workers.
        Off the main thread (a run started by a server) signals are not ours to handle."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum: int, frame: object) -> None:
            self.interrupted = True
            for child in self.children:
                if child.is_alive() and child.pid is not None:
                    os.kill(child.pid, signal.SIGINT)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

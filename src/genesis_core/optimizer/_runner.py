"""Running a study: trials, the duplicate cache, the resume guard, workers and artifacts."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import multiprocessing
import os
import platform
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numba
import optuna
from optuna.trial import TrialState

from genesis_core import __version__
from genesis_core.backtest import BacktestConfig, Backtester, BacktestResult, build_config, read_config_file
from genesis_core.data import parse_ts
from genesis_core.errors import ConfigError, GenesisError
from genesis_core.files import atomic_write
from genesis_core.fingerprint import code_version, fingerprint
from genesis_core.optimizer._config import OptimizerConfig, load_optimizer_config
from genesis_core.optimizer._signature import SIGNATURE_ATTR, SPACE_ATTR, ResumeBlocked, signature_diff
from genesis_core.optimizer._space import SearchSpace
from genesis_core.optimizer._storage import (
    ScoreCache,
    cache_url,
    default_storage_url,
    open_storage,
    recover_stale_trials,
    redact,
)
from genesis_core.scoring import Outcome, checkpoints, prune_reason, score

optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are counted in the summary and trials.csv
# heartbeats and stale-trial retry are marked experimental but are what makes a killed worker recoverable
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SUMMARY_METRICS = ("num_trades", "total_return", "sharpe", "max_drawdown", "profit_factor", "win_rate", "score")
FEATURE_CACHE = Path(".cache/genesis/features")


@dataclass(frozen=True)
class RunOptions:
    storage: str | None = None
    workers: int | None = None
    max_trials: int | None = None
    force_resume: bool = False
    backfill_signature: bool = False
    preflight: dict[str, Any] | None = None  # what preflight said before this session (recorded in run.json)


@dataclass
class StudySpec:
    """Everything a worker needs, built the same way in every process from the config file."""

    config: OptimizerConfig
    space: SearchSpace
    base: dict[str, Any]
    champion: dict[str, Any] | None
    overrides: dict[str, Any]
    storage_url: str
    run_dir: Path
    fixed: BacktestConfig = field(init=False)

    def __post_init__(self) -> None:
        self.fixed = build_config(self.base, self.champion, self.overrides)

    @property
    def scoring_fingerprint(self) -> str:
        return fingerprint({"scoring": self.config.scoring.model_dump(mode="json"),
                            "constraints": self.config.constraints.model_dump(mode="json")})

    def signature(self, data_fingerprint: str) -> dict[str, str]:
        fixed = self.fixed.model_dump(mode="json")
        fixed["data"].pop("path")  # the content is in 'data'; a moved file is the same data
        return {
            "search_space": self.space.fingerprint,
            "fixed_config": fingerprint(fixed),
            "scoring": self.scoring_fingerprint,
            "data": fingerprint({"file": data_fingerprint, "start": self.fixed.data.start, "end": self.fixed.data.end,
                                 "warmup_bars": self.fixed.data.warmup_bars}),
            "code": code_version(),
            "mode": "explore",
        }


def load_study_spec(config_path: str | Path, storage: str | None = None) -> StudySpec:
    cfg = load_optimizer_config(config_path)
    m = cfg.meta
    base = read_config_file(m.base_config)
    champion = None if m.skip_champion_merge else champion_params(m.results_dir, m.symbol, m.timeframe)
    data: dict[str, Any] = {"start": m.sample_start, "end": m.sample_end}
    if m.data is not None:
        data["path"] = m.data
    if m.warmup_bars is not None:
        data["warmup_bars"] = m.warmup_bars
    url = storage or m.storage or default_storage_url(m.results_dir)
    study = StudySpec(cfg, SearchSpace(cfg), base, champion, {"data": data}, url, Path(m.results_dir) / "runs" / m.study_name)
    build_config(base, champion, study.overrides, study.space.midpoint())  # every searched path exists
    _sampler(study)  # sampler and pruner kwargs are checked too, before anything is written
    _pruner(study)
    return study


def champion_file(results_dir: str | Path, symbol: str, timeframe: str) -> Path:
    """Where the champion of (symbol, timeframe) lives; written only by genesis_core.champion."""
    return Path(results_dir) / "champions" / f"{symbol}_{timeframe}.json"


def champion_params(results_dir: str, symbol: str, timeframe: str) -> dict[str, Any] | None:
    """The current champion's strategy params, if there is a champion for (symbol, timeframe)."""
    path = champion_file(results_dir, symbol, timeframe)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["effective_config"]["params"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"champion file {path} is unreadable: {exc}") from None


def _sampler(study: StudySpec, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    try:
        return _make_sampler(study, worker_index)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"meta.sampler: {study.config.meta.sampler.name} does not accept these kwargs: {exc}") from None


def _make_sampler(study: StudySpec, worker_index: int) -> optuna.samplers.BaseSampler:
    """The configured sampler; with a seed, worker i uses seed + i so workers do not propose the
    same points (which the cache would answer, but which would waste the workers)."""
    s = study.config.meta.sampler
    kwargs = dict(s.kwargs)
    if kwargs.get("seed") is not None:
        kwargs["seed"] = int(kwargs["seed"]) + worker_index
    if s.name == "tpe":
        return optuna.samplers.TPESampler(**kwargs)
    if s.name == "random":
        return optuna.samplers.RandomSampler(**kwargs)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(**kwargs)
    if s.name == "gp":
        return optuna.samplers.GPSampler(**kwargs)
    if not study.space.grid or len(study.space.grid) != len(study.space.distributions):
        raise ConfigError("meta.sampler grid: every searched parameter must be categorical or grid")
    return optuna.samplers.GridSampler(study.space.grid, **kwargs)


def _pruner(study: StudySpec) -> optuna.pruners.BasePruner:
    p = study.config.meta.pruner
    make = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner}.get(p.name)
    try:
        return make(**p.kwargs) if make else optuna.pruners.NopPruner()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"meta.pruner: {p.name} does not accept these kwargs: {exc}") from None


def _suggest(trial: optuna.Trial, path: str, dist: optuna.distributions.BaseDistribution) -> None:
    if isinstance(dist, optuna.distributions.FloatDistribution):
        trial.suggest_float(path, dist.low, dist.high, step=dist.step, log=dist.log)
    elif isinstance(dist, optuna.distributions.IntDistribution):
        trial.suggest_int(path, dist.low, dist.high, step=dist.step, log=dist.log)
    else:
        trial.suggest_categorical(path, dist.choices)


class Worker:
    """Evaluates trials of one study in one process."""

    def __init__(self, study: StudySpec, max_trials: int | None = None, index: int = 0) -> None:
        self.study = study
        self.max_trials = max_trials
        self.index = index
        self.backtester = Backtester(FEATURE_CACHE)
        self.cache = ScoreCache(cache_url(study.storage_url), study.config.meta.stale_trial_seconds)
        self.streak = 0
        self.stopped_reason: str | None = None
        self.pruner = _pruner(study)
        self.random_until = 0  # trials before this number are sampled at random (bootstrap, widening)
        self.widened = 0
        self.interrupted = False
        self.children: list[multiprocessing.process.BaseProcess] = []  # worker processes to pass Ctrl-C on to

    def objective(self, trial: optuna.Trial) -> float:
        s = self.study
        for path, dist in s.space.distributions.items():
            _suggest(trial, path, dist)
        phase = 1 if trial.number < s.config.scoring.phase1.trials else 2
        try:
            config = build_config(s.base, s.champion, s.overrides, s.space.trial_params(trial))
            plan = self.backtester.plan(config)
        except GenesisError as exc:  # this parameter combination is invalid: FAIL, never a number
            trial.set_user_attr("error", str(exc))
            raise
        key = fingerprint({"config": plan.config_fingerprint, "window": plan.window.fingerprint,
                           "code": code_version(), "scoring": s.scoring_fingerprint})
        attrs: dict[str, Any] = {"config_fingerprint": plan.config_fingerprint, "cache_key": key}
        top: dict[str, Any] = {"phase": phase}  # the attributes people filter on; the rest go in "genesis"
        cached = self.cache.claim(key, trial.number)
        if cached is not None:
            self.streak += 1
            outcome = Outcome.DUPLICATE.value
            top.update(cached=True, cache_reused=cached["trial_number"])
            attrs["original_outcome"] = cached["score"]["outcome"]
            sc, metrics, pruned = cached["score"], cached["metrics"], cached.get("pruned")
        else:
            self.streak = 0
            try:
                result = self.backtester.execute(plan)
                score_ = score(result.metrics, result.trace, s.config.scoring, s.config.constraints)
                sc, metrics = score_.to_dict(), {k: result.metrics[k] for k in SUMMARY_METRICS}
                pruned = self._prune(trial, result, phase)
                artifact = {"trial_number": trial.number, "params": s.space.trial_params(trial), "score": sc,
                            "pruned": pruned, **result.to_dict(trades=False)}
                atomic_write(s.run_dir / "trials" / f"{trial.number:06d}.json", json.dumps(artifact))
                self.cache.store(key, {"trial_number": trial.number, "score": sc, "metrics": metrics, "pruned": pruned})
            except BaseException:
                self.cache.release(key)
                raise
            outcome = sc["outcome"]
            top["cached"] = False
        top.update(outcome=outcome, score_phase1=sc["phase1"], score_phase2=sc["phase2"])
        attrs.update(constraints_failed=sc["constraints_failed"], metrics=metrics, pruned=pruned)
        for name, value in top.items():  # each user attribute is one storage write (~0.4 ms on the journal)
            trial.set_user_attr(name, value)
        trial.set_user_attr("genesis", attrs)
        if pruned is not None:
            raise optuna.TrialPruned(pruned)
        return float(sc[f"phase{phase}"])

    def _prune(self, trial: optuna.Trial, result: BacktestResult, phase: int) -> str | None:
        """Report checkpoint values (for Optuna's pruners) and apply the pruning rules."""
        cfg = self.study.config.scoring.pruning
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
        if self.max_trials is not None and len(study.get_trials(deepcopy=False, states=_FINISHED)) >= self.max_trials:
            study.stop()  # the budget is the study's, shared by every worker on every machine
        meta = self.study.config.meta
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
            study.sampler = _sampler(self.study, self.index)  # bootstrap or widening done: back to the configured one

    def _random_sampler(self, offset: int) -> optuna.samplers.RandomSampler:
        seed = self.study.config.meta.sampler.kwargs.get("seed")
        return optuna.samplers.RandomSampler(seed=None if seed is None else int(seed) + self.index + offset)

    def run(self, n_trials: int, timeout: float | None, on_trial: Callable[[], None] | None = None) -> None:
        s = self.study
        storage = open_storage(s.storage_url, s.config.meta.stale_trial_seconds)
        study = optuna.load_study(study_name=s.config.meta.study_name, storage=storage, sampler=_sampler(s, self.index),
                                  pruner=self.pruner)
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


def _worker_process(
    config_path: str, storage: str, n_trials: int, max_trials: int | None, timeout: float | None, cwd: str, index: int
) -> None:
    os.chdir(cwd)
    worker = Worker(load_study_spec(config_path, storage), max_trials, index)
    with worker.stopping_on_sigint():
        worker.run(n_trials, timeout)


def _deadline(cfg: OptimizerConfig) -> float | None:
    limits = []
    if cfg.meta.stop.timeout_seconds is not None:
        limits.append(cfg.meta.stop.timeout_seconds)
    if cfg.meta.stop.end_at is not None:
        limits.append(parse_ts(cfg.meta.stop.end_at) - time.time())
    return min(limits) if limits else None


def check_signature(optuna_study: optuna.Study, study: StudySpec, current: dict[str, str], options: RunOptions) -> list[str]:
    """Stop before any trial if the study was made with other settings (warn if it has no signature);
    returns notes to record in the run metadata."""
    stored = optuna_study.user_attrs.get(SIGNATURE_ATTR)
    n_trials = len(optuna_study.get_trials(deepcopy=False))
    notes: list[str] = []
    if stored is None:
        if n_trials and not options.backfill_signature:
            notes.append(
                f"study {study.config.meta.study_name!r} has {n_trials} trials but no signature, so nothing proves they "
                "were made with this config; --backfill-signature adopts the current one"
            )
            return notes
        if n_trials:
            notes.append("signature backfilled by --backfill-signature")
    else:
        diff = signature_diff(stored, current, optuna_study.user_attrs.get(SPACE_ATTR, {}), study.space.spec)
        if diff and not options.force_resume:
            raise ResumeBlocked("resume blocked: study signature mismatch\n  " + "\n  ".join(diff)
                                + "\n(use a new study name, or --force-resume to continue anyway)")
        if diff:
            _refuse_incompatible_space(optuna_study.user_attrs.get(SPACE_ATTR, {}), study.space.spec)
            notes.append("resumed despite signature mismatch (--force-resume): " + "; ".join(diff))
    optuna_study.set_user_attr(SIGNATURE_ATTR, current)
    optuna_study.set_user_attr(SPACE_ATTR, study.space.spec)
    return notes


def _refuse_incompatible_space(stored: dict[str, Any], current: dict[str, Any]) -> None:
    """Optuna cannot mix a parameter's old and new categorical choices or types: say so, not crash."""
    for path in sorted(set(stored) & set(current)):
        old, new = stored[path], current[path]
        if old["type"] != new["type"] or (old["type"] in ("categorical", "grid") and old != new):
            raise ResumeBlocked(
                f"cannot resume even with --force-resume: parameter {path} changed from {old} to {new}, "
                "which Optuna cannot mix in one study; use a new study name"
            )


def optimize(config_path: str | Path, options: RunOptions = RunOptions(), progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the study of ``config_path``; write artifacts; return the run summary."""
    started = time.time()
    study = load_study_spec(config_path, options.storage)
    cfg = study.config
    storage = open_storage(study.storage_url, cfg.meta.stale_trial_seconds)
    optuna_study = optuna.create_study(storage=storage, study_name=cfg.meta.study_name, direction="maximize",
                                       load_if_exists=True, sampler=_sampler(study), pruner=_pruner(study))
    data_fp = Backtester().candles(study.fixed.data.path, study.fixed.data.timeframe).fingerprint
    notes = check_signature(optuna_study, study, study.signature(data_fp), options)
    recovered = recover_stale_trials(optuna_study, cfg.meta.stale_trial_seconds)
    if recovered:
        notes.append(f"{recovered} trial(s) left running by a stopped worker were failed and queued again")
    max_trials = options.max_trials or cfg.meta.stop.max_trials
    done = len(optuna_study.get_trials(deepcopy=False, states=_FINISHED))
    remaining = max(0, max_trials - done) if max_trials else 10**9
    workers = options.workers or cfg.meta.n_workers
    timeout = _deadline(cfg)
    if max_trials is None and timeout is None:
        raise ConfigError("meta.stop: set max_trials, timeout_seconds or end_at, or the run never ends")
    shares = [remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_process, args=(str(config_path), study.storage_url, n, max_trials, timeout, os.getcwd(), i))
             for i, n in enumerate(shares) if i > 0 and n > 0]
    for p in procs:
        p.start()
    worker = Worker(study, max_trials)
    worker.children = procs
    with worker.stopping_on_sigint():
        if shares[0] > 0:
            if progress:
                _run_with_progress(worker, optuna_study, shares[0], remaining, timeout)
            else:
                worker.run(shares[0], timeout)
        for p in procs:
            p.join()
    interrupted = worker.interrupted
    failed_workers = [p.exitcode for p in procs if p.exitcode not in (0, None) and not interrupted]
    summary = write_artifacts(study, optuna_study, {
        "started": _iso(started), "finished": _iso(time.time()), "seconds": round(time.time() - started, 3),
        "workers": workers, "max_trials": max_trials, "interrupted": interrupted,
        "stopped_reason": worker.stopped_reason, "widened": worker.widened, "notes": notes, "failed_workers": failed_workers,
        "preflight": options.preflight,
    })
    if interrupted:
        summary["resume_hint"] = f"genesis optimize {config_path}  (the study resumes where it stopped)"
    return summary


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def best_score(trials: list[optuna.trial.FrozenTrial]) -> float | None:
    """The best production score so far, from finished trials only: another worker's running trial
    may have its outcome attribute written but not yet its score."""
    valid = [t.user_attrs["score_phase2"] for t in trials
             if t.state == TrialState.COMPLETE and t.user_attrs.get("outcome") == "VALID"]
    return max(valid, default=None)


def _run_with_progress(worker: Worker, optuna_study: optuna.Study, own: int, total: int, timeout: float | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    start_n = len(optuna_study.get_trials(deepcopy=False))
    columns = [TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]:.1f}/s"),
               TextColumn("best {task.fields[best]}"), TextColumn("hits {task.fields[hits]}"), TimeRemainingColumn()]
    t0 = time.time()
    last = [0.0]
    with Progress(*columns, transient=False, console=None) as bar:
        task = bar.add_task("trials", total=total, rate=0.0, best="-", hits="-")

        def tick() -> None:
            now = time.time()
            if now - last[0] < 0.25:
                return
            last[0] = now
            trials = optuna_study.get_trials(deepcopy=False)
            mine = [t for t in trials[start_n:] if t.state.is_finished()]
            best = best_score(trials)
            hits = sum(1 for t in mine if t.user_attrs.get("cached"))
            bar.update(task, completed=len(mine), rate=len(mine) / max(now - t0, 1e-9),
                       best="-" if best is None else f"{best:.2f}", hits=f"{hits / max(len(mine), 1):.0%}")

        worker.run(own, timeout, on_trial=tick)
        last[0] = 0.0
        tick()


def _g(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's fingerprints, metrics and reasons (empty for a trial that failed before scoring)."""
    return t.user_attrs.get("genesis", {})


def _same_outcomes(trials: list[optuna.trial.FrozenTrial]) -> dict[int, int]:
    """Evaluated trial -> the first earlier trial whose config differs but whose metrics are identical:
    a sign that a searched parameter changes nothing. Configs that never trade are left out: they agree trivially."""
    first: dict[str, tuple[int, str]] = {}
    same: dict[int, int] = {}
    for t in trials:
        g = _g(t)
        if t.user_attrs.get("cached") is not False or not g.get("metrics", {}).get("num_trades"):
            continue
        key = fingerprint(g["metrics"])
        if key in first and first[key][1] != g["config_fingerprint"]:
            same[t.number] = first[key][0]
        first.setdefault(key, (t.number, g["config_fingerprint"]))
    return same


def _trial_rows(trials: list[optuna.trial.FrozenTrial], space: SearchSpace, same: dict[int, int]) -> list[dict[str, Any]]:
    rows = []
    for t in trials:
        g, a = _g(t), t.user_attrs
        rows.append({
            "number": t.number, "state": t.state.name, "outcome": a.get("outcome", ""), "value": t.value,
            "phase": a.get("phase", ""), "score_phase1": a.get("score_phase1"), "score_phase2": a.get("score_phase2"),
            "cached": a.get("cached", ""), "cache_reused_from": a.get("cache_reused", ""),
            "constraints_failed": ";".join(g.get("constraints_failed", [])),
            "pruned": g.get("pruned") or "",
            **{f"param:{p}": v for p, v in space.trial_params(t).items()},
            **{m: g.get("metrics", {}).get(m) for m in SUMMARY_METRICS},
            "config_fingerprint": g.get("config_fingerprint", ""),
            "same_outcome_as": same.get(t.number, ""),
            "fail_reason": t.user_attrs.get("error", ""),
            "duration_ms": round(t.duration.total_seconds() * 1e3, 3) if t.duration else "",
        })
    return rows


def _best(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The best evaluated (not duplicate) VALID trial by production score; ties to the earlier trial."""
    valid = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("outcome") == "VALID"]
    return max(valid, key=lambda t: (t.user_attrs["score_phase2"], -t.number), default=None)


def write_artifacts(study: StudySpec, optuna_study: optuna.Study, session: dict[str, Any]) -> dict[str, Any]:
    """trials.csv, best_trial.json and run.json in the run folder, each written atomically."""
    trials = optuna_study.get_trials(deepcopy=False)
    same = _same_outcomes(trials)
    rows = _trial_rows(trials, study.space, same)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(study.run_dir / "trials.csv", buf.getvalue())

    finished = [t for t in trials if t.state.is_finished()]
    hits = sum(1 for t in finished if t.user_attrs.get("cached"))
    cache = {"total_trials": len(finished), "cache_hits": hits, "hit_rate": round(hits / len(finished), 4) if finished else 0.0,
             "unique_backtests": sum(1 for t in finished if t.user_attrs.get("cached") is False)}
    best = _best(trials)
    best_payload = None
    if best is not None:
        artifact = study.run_dir / "trials" / f"{best.number:06d}.json"
        best_payload = {"number": best.number, "value": best.value, "score_phase2": best.user_attrs["score_phase2"],
                        "params": study.space.trial_params(best), "result": json.loads(artifact.read_text())}
        atomic_write(study.run_dir / "best_trial.json", json.dumps(best_payload, indent=1))
    run_path = study.run_dir / "run.json"
    previous = json.loads(run_path.read_text()) if run_path.exists() else {}
    states: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
        if "outcome" in t.user_attrs:
            outcomes[t.user_attrs["outcome"]] = outcomes.get(t.user_attrs["outcome"], 0) + 1
    run = {
        "study_name": study.config.meta.study_name,
        "storage": redact(study.storage_url),
        "signature": optuna_study.user_attrs.get(SIGNATURE_ATTR),
        "search_space": study.space.spec,
        "optimizer_config": study.config.model_dump(mode="json"),
        "fixed_config": study.fixed.model_dump(mode="json"),
        "versions": {"genesis_core": __version__, "code": code_version(), "optuna": optuna.__version__,
                     "numba": numba.__version__, "python": platform.python_version()},
        "sessions": [*previous.get("sessions", []), session],
        "cache": cache,
        "states": states,
        "outcomes": outcomes,
        "best_trial": None if best is None else {"number": best.number, "score_phase2": best.user_attrs["score_phase2"]},
        "identical_outcomes": len(same),
    }
    atomic_write(run_path, json.dumps(run, indent=1))
    warnings = []
    if run["identical_outcomes"]:
        warnings.append(f"{run['identical_outcomes']} evaluated trial(s) gave exactly the metrics of an earlier, different "
                        "config (trials.csv: same_outcome_as): some searched parameter may change nothing")
    if cache["hit_rate"] > 0.8:
        warnings.append(f"cache hit rate {cache['hit_rate']:.0%}: the sampler keeps proposing known parameter sets; "
                        "widen the space or use a finer step")
    return {"run_dir": str(study.run_dir), "cache": cache, "states": states, "outcomes": outcomes,
            "best_trial": run["best_trial"], "session": session, "warnings": warnings}

"""From the study's trials to the run's records: trials.csv rows, the best trial and run.json."""

from __future__ import annotations

import contextlib
import os
import platform
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numba
import optuna
from optuna.trial import TrialState
from pydantic import BaseModel

from genesis_core import __version__
from genesis_core.files import sync_all
from genesis_core.fingerprint import code_version
from genesis_core.optimizer._storage import redact
from genesis_core.optimizer._study import RUN_ID_ATTR, SIGNATURE_ATTR, StudySpec
from genesis_core.records import (
    TRIAL_METRICS,
    BestRef,
    BestTrial,
    CacheStats,
    RunFolder,
    RunRecord,
    SchemaError,
    Session,
    TrialRow,
    WalkForwardReport,
    failures,
    formatted,
)
from genesis_core.scoring import Outcome, profit_factor_term


class RunSummary(BaseModel):
    """What a session of ``optimize`` reports (run.json has it all, across sessions)."""

    run_dir: str
    cache: CacheStats
    states: dict[str, int]
    outcomes: dict[str, int]
    best_trial: BestRef | None
    session: Session
    warnings: list[str]


def _g(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's fingerprints, metrics and reasons (empty for a trial that failed before scoring)."""
    return t.user_attrs.get("genesis", {})


def _metrics_key(metrics: dict[str, float | int | None]) -> tuple[tuple[str, type, float | int | None], ...]:
    """Equal for two trials' metrics exactly when their canonical JSON is (numbers or None by name:
    0.0 and -0.0 alike, 1 and 1.0 apart), without serialising every trial's (0.1 s at 10,000)."""
    return tuple((k, type(v), v) for k, v in sorted(metrics.items()))


def _same_outcomes(trials: list[optuna.trial.FrozenTrial]) -> dict[int, int]:
    """Evaluated trial -> the first earlier trial whose config differs but whose metrics are identical:
    a sign that a searched parameter changes nothing. Configs that never trade are left out: they agree trivially;
    so are those whose numbers overflowed (INVALID_NUMERIC), whose metrics are mostly None whatever they traded."""
    first: dict[tuple[tuple[str, type, float | int | None], ...], tuple[int, str]] = {}
    same: dict[int, int] = {}
    for t in trials:
        g = _g(t)
        if (t.user_attrs.get("cached") is not False or not g.get("metrics", {}).get("num_trades")
                or t.user_attrs.get("outcome") == Outcome.INVALID_NUMERIC.value):
            continue
        key = _metrics_key(g["metrics"])
        if key in first and first[key][1] != g["config_fingerprint"]:
            same[t.number] = first[key][0]
        first.setdefault(key, (t.number, g["config_fingerprint"]))
    return same


_ABSENT = object()  # a parameter a trial has not (a space narrowed or widened between sessions)
SHOWN_DIFFERING = 5  # parameters named by the warning on identical outcomes, the most often differing first


def same_outcome_warning(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """What evaluated trials that gave exactly the metrics of an earlier, different config say
    (``rows``: trials.csv's, or the fields it is written from), with the searched parameters each
    such pair differs in, by how many pairs: the suspects, where the warning alone left the user to
    compare trials.csv's rows by hand (each of the demo's 19 pairs differs in exits.max_bars_held).
    None when there is no such trial."""
    params = {r["number"]: r["params"] for r in rows}
    same = {r["number"]: r["same_outcome_as"] for r in rows if r["same_outcome_as"] is not None}
    if not same:
        return None
    counts: Counter[str] = Counter()
    for later, earlier in same.items():
        a, b = params[later], params.get(earlier, {})
        counts.update([name for name in sorted(a.keys() | b.keys()) if a.get(name, _ABSENT) != b.get(name, _ABSENT)]
                      or ["no searched parameter (the fixed config changed between sessions)"])
    named = [f"{name} ({f'all {n}' if n == len(same) else f'{n} of {len(same)}'})" for name, n in counts.most_common(SHOWN_DIFFERING)]
    more = len(counts) - len(named)
    return (f"{len(same)} evaluated trial(s) gave exactly the metrics of an earlier, different config (trials.csv: "
            "same_outcome_as): some searched parameter may change nothing; the pairs differ in " + ", ".join(named)
            + (f" and {more} more" if more else ""))


HIGH_HIT_RATE = 0.8  # of a run's trials answered from the cache, above which the sampler is said to repeat itself


def losing_best_warning(best: BestTrial, config: Mapping[str, Any]) -> str | None:
    """What a best trial that lost money says (``config``: run.json's): the default score pays any
    config that trades 10·log1p(PF) for its profit factor, and its return and drawdown terms shrink
    with the position size, so a losing config at a small size can outscore every winning one (an
    SMA crossover searched with its size: the best of 163,000 lost 0.22% at 1% of equity). None when
    it made money."""
    metrics = best.result.metrics
    made = metrics.get("total_return")
    if made is None or made >= 0.0:
        return None
    pf, objective = metrics.get("profit_factor"), config.get("scoring", {}).get("objective", "production")  # an old run.json's too
    line = (f"the best trial, #{best.number}, lost money (total_return {formatted(made, '+.2%')}, "
            f"profit factor {formatted(pf)}) and still scored {formatted(best.production_score)}")
    if objective == "production" and pf is not None:
        line += (f": the production score pays a losing config {profit_factor_term(pf):+.2f} for its profit factor "
                 "(10·log1p(PF)), and its return and drawdown terms shrink with the position size")
    elif objective != "production":
        line += f" (scoring.objective {objective})"
    floor = config.get("constraints", {}).get("min_profit_factor", 0.0)
    return line + (f"; constraints.min_profit_factor: 1.0 (it is {floor}) counts losing configs as failing" if floor < 1.0 else "")


def run_warnings(rows: Sequence[Mapping[str, Any]], cache: CacheStats, best: BestTrial | None, config: Mapping[str, Any]) -> list[str]:
    """What a run's trials warn of (``rows``: trials.csv's, or the fields it is written from; ``best``
    its best trial; ``config`` run.json's): identical outcomes, failed trials, a sampler that keeps
    proposing known parameter sets, a best trial that lost money. `genesis optimize` prints them
    after its search, and `runs show` and the pages say them again."""
    lines = [same_outcome_warning(rows), failures([r["fail_reason"] for r in rows if r["state"] == "FAIL"])]
    if cache.hit_rate > HIGH_HIT_RATE:
        lines.append(f"cache hit rate {cache.hit_rate:.0%}: the sampler keeps proposing known parameter sets; "
                     "widen the space or use a finer step")
    lines.append(None if best is None else losing_best_warning(best, config))
    return [line for line in lines if line]


def run_cautions(folder: RunFolder, run: RunRecord, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the run in ``folder`` should be read with, as `genesis optimize` said it: its sessions'
    preflight warnings and notes, then what its trials (``rows``, trials.csv's) warn of
    (``run_warnings``). An unreadable best_trial.json leaves its line out (reading it says why elsewhere)."""
    best = None
    if run.best_trial is not None:
        with contextlib.suppress(SchemaError):
            best = folder.read_best()
    return list(dict.fromkeys([*(line for session in run.sessions for line in session.cautions()),
                               *run_warnings(rows, run.cache, best, run.config)]))


def folder_cautions(folder: RunFolder) -> list[str]:
    """``run_cautions`` of a run folder's run. trials.csv is read only when run.json says it has
    identical outcomes or failures to tell of; an unreadable one leaves those lines out (reading it
    says why elsewhere)."""
    run = folder.read_run()
    rows: list[dict[str, Any]] = []
    if run.identical_outcomes or "FAIL" in run.states:
        with contextlib.suppress(SchemaError):
            rows = [vars(r) for r in folder.read_trials_table()]
    return run_cautions(folder, run, rows)


def fold_cautions(folder: RunFolder, wf: WalkForwardReport) -> list[str]:
    """``folder_cautions`` of each fold of the walk-forward ``wf`` (``folder`` holds it), led by its
    fold, as `genesis walk-forward` printed them; a fold whose run cannot be read says so in its
    place (`runs show` ended there, its folds' table printed and the rest not)."""
    lines = []
    for f in wf.folds:
        try:
            lines += [f"fold {f.fold}: {line}" for line in folder_cautions(folder.fold(f.run_dir))]
        except SchemaError as exc:
            lines.append(f"fold {f.fold}: what its run warned of is not known: {exc}")
    return lines


def trial_fields(t: optuna.trial.FrozenTrial, spec: StudySpec, same_outcome_as: int | None = None) -> dict[str, Any]:
    """Trial ``t``'s ``TrialRow`` fields, from what this code wrote on it (typed already)."""
    g, a = _g(t), t.user_attrs
    return dict(
        number=t.number, state=t.state.name, outcome=a.get("outcome"), objective=t.value, phase=a.get("phase"),
        feasibility_score=a.get("feasibility_score"), production_score=a.get("production_score"), cached=a.get("cached"),
        cache_reused_from=a.get("cache_reused"), constraints_failed=g.get("constraints_failed", []),
        cached_from=None if "cached_from" not in g else f"{g['cached_from']['study']}#{g['cached_from']['trial']}",
        pruned=g.get("pruned"), params=spec.space.trial_params(t),
        metrics={m: g.get("metrics", {}).get(m) for m in TRIAL_METRICS},
        config_fingerprint=g.get("config_fingerprint"), same_outcome_as=same_outcome_as,
        fail_reason=a.get("error"), duration_ms=round(t.duration.total_seconds() * 1e3, 3) if t.duration else None,
    )


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The best evaluated (not duplicate) VALID trial by production score; ties to the earlier trial."""
    valid = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("outcome") == "VALID"]
    return max(valid, key=lambda t: (t.user_attrs["production_score"], -t.number), default=None)


def best_score(trials: list[optuna.trial.FrozenTrial]) -> float | None:
    """The best production score so far, from finished trials only: another worker's running trial
    may have its outcome attribute written but not yet its score."""
    best = best_trial(trials)
    return None if best is None else best.user_attrs["production_score"]


def record_results(spec: StudySpec, optuna_study: optuna.Study, session: Session) -> RunSummary:
    """trials.csv, best_trial.json and run.json (this session appended) in the run folder (brought
    up to date from the database first, when it holds the run's files: other machines' trials)."""
    folder = spec.folder
    folder.sync()
    sync_all()  # the trials listed are on disk, a worker killed before its last group commit's included
    trials = optuna_study.get_trials(deepcopy=False)
    same = _same_outcomes(trials)
    fields = [trial_fields(t, spec, same.get(t.number)) for t in trials]
    folder.write_trials_table([TrialRow.cells(f) for f in fields])

    finished = [t for t in trials if t.state.is_finished()]
    hits = sum(1 for t in finished if t.user_attrs.get("cached"))
    evaluated_here = [t for t in finished if t.user_attrs.get("cached") is False]
    reused = sum(1 for t in evaluated_here if "cached_from" in _g(t))
    cache = CacheStats(total_trials=len(finished), cache_hits=hits, hit_rate=round(hits / len(finished), 4) if finished else 0.0,
                       unique_backtests=len(evaluated_here) - reused, reused_from_other_studies=reused)
    best = best_trial(trials)
    best_record = None
    if best is not None:
        best_record = BestTrial(number=best.number, objective=best.value, production_score=best.user_attrs["production_score"],
                                params=spec.space.trial_params(best), result=folder.read_trial(best.number))
        folder.write_best(best_record)
    states: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
        if "outcome" in t.user_attrs:
            outcomes[t.user_attrs["outcome"]] = outcomes.get(t.user_attrs["outcome"], 0) + 1
    with folder.run_lock():  # sessions ending together each add theirs: none may write over another's
        previous = folder.read_run_if_any()
        run = RunRecord(
            study_name=spec.name,
            storage=redact(spec.storage_url),
            signature=optuna_study.user_attrs.get(SIGNATURE_ATTR),
            search_space=spec.space.spec,
            config=spec.config.model_dump(mode="json"),
            fixed_config=spec.fixed if spec.fixed.workdir else spec.fixed.model_copy(update={"workdir": os.getcwd()}),
            versions={"genesis_core": __version__, "code": code_version(), "optuna": optuna.__version__,
                      "numba": numba.__version__, "python": platform.python_version()},
            sessions=[*(previous.sessions if previous else []), session],
            cache=cache, states=states, outcomes=outcomes,
            best_trial=None if best is None else BestRef(number=best.number, production_score=best.user_attrs["production_score"]),
            identical_outcomes=len(same), run_id=optuna_study.user_attrs.get(RUN_ID_ATTR),
        )
        folder.write_run(run)
    warnings = run_warnings(fields, cache, best_record, run.config)
    return RunSummary(run_dir=str(folder.path), cache=cache, states=states, outcomes=outcomes, best_trial=run.best_trial,
                      session=session, warnings=warnings)

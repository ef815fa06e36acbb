"""Explore -> validate: the top explore candidates re-run on out-of-sample windows.

A candidate passes only if it is VALID and meets every validation constraint on every window; one
the strategy or the engine refuses on a window is listed apart with the reason, and cannot pass.
Candidates are ranked by their validation score (the production score of each window, combined
by ``validation.ranking``), ties broken by the explore score. The report goes to the run's
``validation.json``; it is built from the run's records alone (run.json and the trial
artifacts), so ``genesis validate RUN`` works on any finished run without its study storage.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genesis_core.backtest import (
    BacktestConfig,
    Backtester,
    BacktestResult,
    ConfigBuilder,
    DataSpec,
    build_config,
    data_symbol,
    one_trade,
    trained_on,
    training_problems,
)
from genesis_core.data import same_symbol
from genesis_core.engine import EngineResult
from genesis_core.errors import REFUSALS, ConfigError, DataError, GenesisError
from genesis_core.fingerprint import code_version, fingerprint
from genesis_core.metrics import bar_returns
from genesis_core.optimizer import OptimizerConfig, SearchSpace
from genesis_core.plugins import check_user_code
from genesis_core.records import (
    BacktestLook,
    Candidate,
    CandidateResult,
    DeflatedSharpe,
    ExploreResult,
    LeftOut,
    Neighbour,
    Overfitting,
    ProbabilityOfOverfitting,
    RefusedCandidate,
    Robustness,
    RunFolder,
    RunRecord,
    SchemaError,
    TrialArtifact,
    TrialRow,
    ValidationReport,
    WindowResult,
    backtest_looks,
    finite_metrics,
    other_bars,
)
from genesis_core.scoring import Constraints, Outcome, Scoring, score, violation
from genesis_core.validation._config import ValidationConfig, WindowSpec
from genesis_core.validation._crashes import survived
from genesis_core.validation._stats import deflated_sharpe, effective_trials, pbo


def missing_artifacts(rows: list[TrialRow], have: set[int]) -> list[int]:
    """Evaluated trials listed in trials.csv (``rows``) without an artifact here (``have``):
    evaluated by a worker on another machine (artifacts are written where a trial ran), so
    validation cannot see them."""
    return [r.number for r in rows if r.cached is False and r.number not in have]


@dataclass(frozen=True, slots=True)
class Explored:
    """What ranking an evaluated trial takes of its artifact, the rest let go: a sweep's 163,000
    artifacts held whole took 2.7 GB to validate."""

    number: int
    outcome: Outcome
    pruned: bool
    constraints_failed: tuple[str, ...]
    production: float
    keys: frozenset[str]  # its config's fingerprint and its outcome's (metrics and trace): one candidate each
    sharpe: float | None

    @classmethod
    def of(cls, t: TrialArtifact) -> Explored:
        return cls(t.trial_number, t.score.outcome, bool(t.pruned), tuple(t.score.constraints_failed), t.score.production,
                   frozenset((t.fingerprints["config"], fingerprint({"metrics": t.metrics, "trace": t.trace}))), t.metrics.get("sharpe"))


def select_candidates(trials: list[TrialArtifact], top_n: int, include_scoring_failures: bool) -> list[TrialArtifact]:
    """The top-N VALID, unpruned trials by explore production score, ties to the earlier trial;
    distinct configs with distinct outcomes (two configs that trade identically are one candidate:
    validating both would fill two slots with one result)."""
    by_number = {t.trial_number: t for t in trials}
    return [by_number[n] for n in _eligible([Explored.of(t) for t in trials], include_scoring_failures)[0][:top_n]]


def _eligible(trials: list[Explored], include_scoring_failures: bool) -> tuple[list[int], LeftOut]:
    """The numbers of the distinct eligible trials, best first (``select_candidates``), and why each
    other trial is not one, counted by its first reason: one sorting of the trials for both."""
    outcomes: Counter[str] = Counter()
    pruned, failing, eligible = 0, [], []
    for t in trials:
        if t.outcome is not Outcome.VALID:
            outcomes[t.outcome.value] += 1
        elif t.pruned:
            pruned += 1
        elif t.constraints_failed and not include_scoring_failures:
            failing.append(t)
        else:
            eligible.append(t)
    eligible.sort(key=lambda t: (-t.production, t.number))
    seen: set[str] = set()
    picked = []
    for t in eligible:
        if not t.keys & seen:
            seen |= t.keys
            picked.append(t.number)
    return picked, LeftOut(outcomes=dict(outcomes), pruned=pruned, failed_constraints=len(failing),
                           constraints=dict(Counter(name for t in failing for name in t.constraints_failed)),
                           repeats=len(eligible) - len(picked))


def run_on_window(backtester: Backtester, effective_config: BacktestConfig, window: WindowSpec) -> BacktestResult:
    """The same effective config on another window: only data.start and data.end change."""
    return backtester.run(build_config(effective_config.model_dump(mode="json"),
                                       overrides={"data": {"start": window.start, "end": window.end}}))


def _in_sample(result: BacktestResult, window: WindowSpec, explore: DataSpec, market: str | None) -> list[str]:
    """Why ``window`` is not out of sample for the config: it shares a day with the config's own
    explore window, or lies in or before the training span of a model it reads (of this market)."""
    why = [f"overlaps the explore window {explore.start or 'first bar'}..{explore.end or 'last bar'}"] \
        if window.overlaps(explore.start, explore.end) else []
    leaks, _ = training_problems(trained_on(result.config), result.window.candles, market, [("the window", *result.window.span, True)])
    return why + leaks


def _window_report(result: BacktestResult, window: WindowSpec, scoring: Scoring, validation: ValidationConfig,
                   explore: DataSpec, market: str | None) -> WindowResult:
    c = validation.constraints
    sc = score(result.metrics, result.trace, scoring, c)
    m = result.metrics
    reasons = []
    if sc.outcome is not Outcome.VALID:
        reasons.append(sc.outcome.value)
    reasons += [f"{name}: {violation(name, m, c)}" for name in sc.constraints_failed]
    if (rests := one_trade(result, c.max_best_trade_share)) is not None:
        reasons.append(f"max_best_trade_share: {rests[0]:.3g} > {c.max_best_trade_share:g} ({rests[1]})")
    reasons += [f"not out of sample: {why}" for why in _in_sample(result, window, explore, market)]  # bars it was fitted on prove nothing
    return WindowResult(
        start=window.start, end=window.end, first_bar=result.window.first_bar, last_bar=result.window.last_bar,
        bars=result.window.bars, data_window=result.window.fingerprint, outcome=sc.outcome, production_score=sc.production,
        passed=not reasons, reasons=reasons, metrics=finite_metrics(m),
    )


def aggregate(scores: list[float], validation: ValidationConfig) -> float:
    """One validation score from the windows' scores, as ``validation.ranking`` says."""
    worst, mean = min(scores), sum(scores) / len(scores)
    if validation.ranking == "worst":
        return worst
    if validation.ranking == "mean":
        return mean
    return (1 - validation.robust_weight) * mean + validation.robust_weight * worst


class RefusedOnWindow(GenesisError):
    """A config the strategy or the engine refused on a validation window: which window, and why
    (the refusal, its cause, whose exit code it keeps)."""

    def __init__(self, window: WindowSpec, refusal: GenesisError) -> None:
        super().__init__(f"refused on the validation window {window.start}..{window.end}: {refusal}")
        self.window, self.reason, self.exit_code = window, str(refusal), refusal.exit_code


def evaluate_candidate(
    backtester: Backtester, effective_config: BacktestConfig, scoring: Scoring, validation: ValidationConfig, market: str | None
) -> CandidateResult:
    """Validation windows, score and pass/fail of one effective config (a candidate or the champion)
    on the data of ``market``; RefusedOnWindow where its strategy or the engine refuses it on a
    window. A window that overlaps the config's own (explore) window, or a model's training span,
    fails: it is not out of sample."""
    windows = []
    for w in validation.windows:
        try:
            windows.append(_window_report(run_on_window(backtester, effective_config, w), w, scoring, validation,
                                          effective_config.data, market))
        except REFUSALS as exc:
            raise RefusedOnWindow(w, exc) from exc
    return CandidateResult(
        windows=windows,
        validation_score=aggregate([w.production_score for w in windows], validation),
        passed=all(w.passed for w in windows),
        reasons=[f"{w.start}..{w.end}: {r}" for w in windows for r in w.reasons],
    )


def robustness(backtester: Backtester, trial: TrialArtifact, space: SearchSpace, scoring: Scoring, constraints: Constraints,
               min_plateau: float, warmup_bars: int | None) -> Robustness:
    """The explore score of each neighbour of ``trial`` (one step down and up in each searched
    parameter), and how much of the trial's score they keep at the median and at worst. Each
    neighbour is the config its trial would be: the run's ``warmup_bars`` (None: the strategy's for
    its params), not the candidate's own, resolved for the candidate's params (a longer period's
    neighbour started with cold indicators and scored other than its trial). A neighbour whose
    backtest is the candidate's, fill for fill, is recorded but left out of the shares: it is the
    same point, and on the reference run such neighbours (a holding limit no trade reaches, a zone
    threshold no entry is near) were 6 to 10 of each top candidate's 17-19, holding its median at
    98-100% whatever the parameters that matter did."""
    candidate = trial.effective_config.model_dump(mode="json")
    candidate["data"]["warmup_bars"] = warmup_bars
    build = ConfigBuilder(candidate)  # validated once, each neighbour's params on top
    own_run = backtester.run(build({})).engine
    neighbours = []
    for path, value in space.neighbours(trial.params):
        try:
            result = backtester.run(build({path: value}))
        except REFUSALS:
            continue  # a neighbour the strategy or the engine refuses (fast >= slow, a size of -0.5) is not part of the landscape
        sc = score(result.metrics, result.trace, scoring, constraints)
        neighbours.append(Neighbour(param=path, value=value, production_score=sc.production, outcome=sc.outcome,
                                    unchanged=_same_fills(result.engine, own_run)))
    own = trial.score.production
    scores = sorted(n.production_score for n in neighbours if not n.unchanged)
    plateau = float(np.median(scores)) / own if scores and own > 0 else None
    worst = scores[0] / own if scores and own > 0 else None
    return Robustness(neighbours=neighbours, plateau=plateau, worst=worst, flagged=plateau is not None and plateau < min_plateau)


def _same_fills(a: EngineResult, b: EngineResult) -> bool:
    """Whether two backtests of a window made the same trades and the same equity, bit for bit."""
    return a.trades.tobytes() == b.trades.tobytes() and a.equity.tobytes() == b.equity.tobytes()


def _explore_returns(backtester: Backtester, trial: TrialArtifact) -> np.ndarray:
    """Per-bar returns of a trial's effective config on its explore window (re-run: artifacts keep no series)."""
    result = backtester.run(build_config(trial.effective_config.model_dump(mode="json")))
    _same_bars(trial, result.window.fingerprint)
    return bar_returns(result.engine.equity)


def _same_bars(trial: TrialArtifact, data_window: str) -> None:
    """DataError when ``trial``'s explore window no longer holds the bars it ran on (``data_window``:
    theirs now): validation ranks candidates by their stored explore scores, and measures plateaus,
    deflated Sharpe ratios and PBO on re-runs, which would then be of other bars."""
    other = other_bars(trial.effective_config.data.path, trial.fingerprints["data_window"], data_window)
    if other is not None:
        raise DataError(f"trial {trial.trial_number}: {other}: validation would rank it by a score of other bars than "
                        "those it re-runs it on for its plateau, deflated Sharpe ratio and PBO. Restore the file the run "
                        "read, or explore these bars in a study of their own (another meta.study_name)")


def _overfitting(backtester: Backtester, folder: RunFolder, trials: list[Explored], candidates: list[Candidate],
                 v: ValidationConfig, periods: float, alike: Alike) -> Overfitting:
    """The mean explore-validation gap; each candidate's deflated Sharpe ratio given every evaluated
    trial (N and N_eff), the other runs' on these bars among them, the top-ranked one's as the run's;
    the PBO of the top distinct configs (their artifacts read from ``folder``)."""
    top = _eligible(trials, include_scoring_failures=True)[0][:v.overfitting.configs]
    returns = {n: _explore_returns(backtester, folder.read_trial(n)) for n in top}
    matrix = np.column_stack(list(returns.values())) if len(top) >= 2 else None
    mean_gap = sum(c.gap for c in candidates) / len(candidates) if candidates else None
    scale = math.sqrt(periods)  # metrics.sharpe is annualised over the market's bars a year; DSR wants per bar
    sharpes = np.array([s / scale for t in trials if (s := t.sharpe) is not None] + [s / scale for s in alike.sharpes])
    rho, n_eff = effective_trials(matrix, len(sharpes)) if matrix is not None else (None, None)
    for c in candidates:  # promotion holds the trial it promotes to its own
        chosen = returns.get(c.trial)
        chosen = _explore_returns(backtester, folder.read_trial(c.trial)) if chosen is None else chosen
        stats = deflated_sharpe(chosen, sharpes, len(sharpes)) | {"other_runs": alike.runs, "other_trials": len(alike.sharpes)}
        if n_eff is not None:
            effective = deflated_sharpe(chosen, sharpes, n_eff)
            stats |= {"mean_correlation": rho, "effective_trials": n_eff, "sr0_effective": effective["sr0_per_bar"],
                      "dsr_effective": effective["dsr"]}
        c.deflated_sharpe = DeflatedSharpe.model_validate({"trial": c.trial, **stats})
    dsr = candidates[0].deflated_sharpe if candidates else None
    o = v.overfitting
    if matrix is None or len(matrix) // o.blocks < 2:
        note = (f"{len(top)} distinct VALID config(s): PBO needs 2 or more" if matrix is None else
                f"{len(matrix)} explore bars are too few for {o.blocks} blocks")
        return Overfitting(mean_gap=mean_gap, deflated_sharpe=dsr, pbo_note=note)
    return Overfitting(mean_gap=mean_gap, deflated_sharpe=dsr, pbo=ProbabilityOfOverfitting.model_validate(pbo(matrix, o.blocks)))


def _sharpe_gap(explore: float | int | None, windows: list[float | int | None]) -> float | None:
    """Explore Sharpe minus the windows' mean; None if any is not a finite number."""
    if explore is None or any(w is None for w in windows):
        return None
    return explore - sum(w for w in windows if w is not None) / len(windows)


def market_runs(folder: RunFolder, symbol: str, timeframe: str) -> list[tuple[RunFolder, RunRecord]]:
    """The other runs of ``folder``'s results folder, of the same market, that this version reads (by
    name), with their run.json: what ``looked_before`` and ``tried_alike`` look through."""
    found = []
    for path in sorted((folder.results_dir / "runs").glob("*/run.json")):
        other = RunFolder(path.parent)
        if other.path.resolve() == folder.path.resolve():
            continue
        try:
            run = other.read_run()
        except SchemaError:
            continue
        meta = run.config.get("meta", {})
        if same_symbol(str(meta.get("symbol")), symbol) and meta.get("timeframe") == timeframe:
            found.append((other, run))
    return found


def looked_before(others: list[tuple[RunFolder, RunRecord]], windows: list[WindowSpec]) -> list[str]:
    """Those of the market's ``others`` runs (``market_runs``) whose validation shares a day with
    ``windows``: each look at a window makes it less out of sample (choosing among the runs by it is
    fitting to it)."""
    seen = []
    for other, _ in others:
        try:
            theirs = other.read_validation().validation.get("windows", []) if other.is_validated() else []
        except SchemaError:
            continue
        if any(w.overlaps(o.get("start"), o.get("end")) for w in windows for o in theirs):
            seen.append(other.name)
    return seen


def backtested_before(looks: list[BacktestLook], symbol: str, timeframe: str, data_file: str, windows: list[WindowSpec],
                      mine: set[str]) -> int:
    """How many configs other than ``mine`` ``genesis backtest`` ran (``backtest_looks``) on days of
    ``windows``, on this market's bars (its data file, or its symbol and timeframe): a config tuned
    by hand on a validation window by its results fits the window as choosing among runs by it does."""
    return len({look.config for look in looks
                if look.config not in mine and any(w.overlaps(look.first_bar, look.last_bar) for w in windows)
                and (look.data_file == data_file or (look.symbol is not None and same_symbol(look.symbol, symbol)
                                                     and look.timeframe == timeframe))})


@dataclass(frozen=True)
class Alike:
    """What other runs tried on a run's explore bars: the runs, and the per-bar Sharpe ratio of
    each config they evaluated that the run did not."""

    runs: list[str]
    sharpes: list[float]


_ALIKE = ("cached", "config_fingerprint", "sharpe")  # what validation reads of trials.csv: 5.3 GB of 981,552 rows read whole


def _configs(rows: list[TrialRow]) -> set[str]:
    """The configs the ``rows`` of trials.csv evaluated (a row written before fingerprints: its number)."""
    return {r.config_fingerprint or f"#{r.number}" for r in rows}


def tried_alike(folder: RunFolder, others: list[tuple[RunFolder, RunRecord]], first_bar: str, last_bar: str,
                configs: set[str] | None = None) -> Alike:
    """The configs the market's ``others`` runs (``market_runs``) evaluated on days of this run's
    explore window (``first_bar``..``last_bar``), each once and none this run evaluated (trials.csv's,
    or its ``configs`` read already: a config answered from another study's cache is listed by both). A study run after another on the same
    bars goes on with its search, and the best of both is chosen: N is every config tried (Bailey
    and López de Prado)."""
    mine = WindowSpec(start=first_bar, end=last_bar)
    try:
        seen = set(_configs(folder.read_trials_table(_ALIKE)) if configs is None else configs)
    except SchemaError:  # no trials.csv: a study not run yet (preflight's question)
        seen = set()
    runs: list[str] = []
    sharpes: list[float] = []
    for other, run in others:
        if not mine.overlaps(run.fixed_config.data.start, run.fixed_config.data.end):
            continue
        try:
            rows = other.read_trials_table(_ALIKE)
        except SchemaError:
            continue
        before = len(sharpes)
        for r in rows:
            sharpe, key = r.metrics.get("sharpe"), r.config_fingerprint or f"{other.name}#{r.number}"  # or an old row's
            if r.state == "COMPLETE" and isinstance(sharpe, int | float) and key not in seen:
                seen.add(key)
                sharpes.append(float(sharpe))
        if len(sharpes) > before:
            runs.append(other.name)
    return Alike(runs, sharpes)


def _listed(folder: RunFolder) -> tuple[list[int], list[int], set[str]]:
    """What validation reads of trials.csv, once: the evaluated trials with an artifact here, those
    without (``missing_artifacts``) and the configs evaluated (``tried_alike``); its rows are let go
    before the artifacts are read (1.8 GB of 981,552 rows)."""
    rows = folder.read_trials_table(_ALIKE)
    numbers = folder.evaluated_numbers(rows)
    return numbers, missing_artifacts(rows, set(numbers)), _configs(rows)


VALIDATION_CRASHES = 25  # backtests that crashed validation's process, each then refused and recorded: it stops at this many


def validate(folder: RunFolder, validation: ValidationConfig, config: OptimizerConfig,
             on_read: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Validate a finished run's top candidates (with the scoring, explore constraints and search
    space of ``config``, the run's); write and return the report. ``on_read(done, total)`` after
    each artifact read (a progress bar: a 163,000-point sweep's take 12 s). The backtests run in a
    process of its own (``survived``): one that crashes it is refused, and recorded in the run folder
    so that later validations refuse it without running it."""
    check_user_code()
    v = validation
    if not v.windows:
        raise ConfigError(f"{folder.path}: its config has no validation windows; add a validation section "
                          "(validation.windows) to the optimizer config and pass it with --config")
    run = folder.read_run()
    bt = Backtester()
    candles = bt.candles(run.fixed_config)
    for w in v.windows:  # data that does not cover a window would refuse every candidate: said once, before any
        candles.window(w.start, w.end, 0)
    numbers, missing, configs = _listed(folder)
    trials, first = [], None
    for n in numbers:  # each artifact's ranking kept, the rest let go
        artifact = folder.read_trial(n)
        first = artifact if first is None else first
        trials.append(Explored.of(artifact))
        if on_read is not None:
            on_read(len(trials), len(numbers))
    report = survived(functools.partial(_judged, folder, v, config, run, trials, first, missing, configs),
                      "validation", VALIDATION_CRASHES, folder, bt)[0]
    assert report is not None  # given a folder, survived raises at its last crash
    folder.write_validation(report)
    return report


def _judged(folder: RunFolder, v: ValidationConfig, config: OptimizerConfig, run: RunRecord, trials: list[Explored],
            first: TrialArtifact | None, missing: list[int], configs: set[str], bt: Backtester) -> ValidationReport:
    """The report: the candidates among ``trials`` re-run on the windows, and the run's overfitting."""
    scoring, space = config.scoring, SearchSpace(config)
    data = run.fixed_config.data
    candles = bt.candles(run.fixed_config)
    market = data_symbol(run.fixed_config, candles) or config.meta.symbol
    candidates, refused = [], []
    eligible, left_out = _eligible(trials, v.constraints.include_scoring_failures)
    for t in map(folder.read_trial, eligible[:v.top_n]):
        _same_bars(t, bt.plan(t.effective_config).window.fingerprint)
        explore = t.score.production
        seen = ExploreResult(production_score=explore, constraints_failed=t.score.constraints_failed, metrics=t.metrics,
                             first_bar=t.window.first_bar, last_bar=t.window.last_bar, data_window=t.fingerprints["data_window"])
        try:
            result = evaluate_candidate(bt, t.effective_config, scoring, v, market)
        except RefusedOnWindow as exc:
            refused.append(RefusedCandidate(trial=t.trial_number, config_fingerprint=t.fingerprints["config"], params=t.params,
                                            explore=seen, start=exc.window.start, end=exc.window.end, reason=exc.reason))
            continue
        candidates.append(Candidate(
            trial=t.trial_number, config_fingerprint=t.fingerprints["config"], params=t.params, explore=seen,
            **dict(result),
            gap=explore - result.validation_score,
            sharpe_gap=_sharpe_gap(t.metrics["sharpe"], [w.metrics["sharpe"] for w in result.windows]),
            robustness=robustness(bt, t, space, scoring, config.constraints, v.min_plateau, data.warmup_bars),
        ))
    candidates.sort(key=lambda c: (not c.passed, -c.validation_score, -c.explore.production_score, c.trial))
    for rank, c in enumerate(candidates, 1):
        c.rank = rank
    others = market_runs(folder, config.meta.symbol, config.meta.timeframe)  # read once, for both looks at them
    report = ValidationReport(
        run=run.study_name,
        created=folder.now(),
        code_version=code_version(),
        validation=v.model_dump(mode="json"),
        evaluated_trials=len(trials),
        missing_artifacts=missing,
        eligible_note="VALID, unpruned, distinct configs" + ("" if v.constraints.include_scoring_failures
                                                             else ", explore constraints met"),
        eligible=len(eligible),
        left_out=left_out,
        looked_before=looked_before(others, v.windows),
        backtested_before=backtested_before(backtest_looks(folder.results_dir), config.meta.symbol, config.meta.timeframe,
                                            first.fingerprints["data_file"] if first else "", v.windows,
                                            {c.config_fingerprint for c in candidates}),
        buy_and_hold={label: candles.window(start, end, 0).held_return for label, start, end in
                      [("explore", data.start, data.end), *((ValidationReport.window_key(w.start, w.end), w.start, w.end) for w in v.windows)]},
        candidates=candidates,
        refused=refused,
        passed=[c.trial for c in candidates if c.passed],
        best=next((c.trial for c in candidates if c.passed), None),
        overfitting=_overfitting(bt, folder, trials, candidates, v, candles.bars_per_year,
                                 tried_alike(folder, others, first.window.first_bar, first.window.last_bar, configs) if first
                                 else Alike([], [])),
    )
    return report

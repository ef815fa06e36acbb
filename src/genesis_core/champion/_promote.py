"""Champions: the promoted effective config per (symbol, timeframe), its gates and its history.

The files (the champion, its history, the lock) belong to ``genesis_core.records.ChampionStore``.
A candidate is promoted only if every gate passes:
1. validated: it passed validation (``genesis validate``) on every window, as this version judges
   the windows re-run in gate 2 (a validation.json of an earlier version lacks later checks);
2. reproduces: re-running its stored effective config gives its stored explore and validation
   metrics exactly;
3. improves: its validation score beats the current champion's, re-run now on the same windows
   of the same data file, by more than zero and by at least ``min_improvement``;
4. floor: its compounded return over the validation windows exceeds ``min_validation_return``
   (0: better than not trading) and, with ``beat_buy_and_hold``, buying and holding there;
5. not overfit: the search's deflated Sharpe ratio (effective number of trials) is at least
   ``min_dsr`` and its probability of backtest overfitting at most ``max_pbo``.
A gate whose limit is null is recorded as switched off. Every decision, refusals included, is
recorded in the history.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from genesis_core.backtest import BacktestConfig, Backtester, build_config, data_file
from genesis_core.champion._config import PromotionConfig
from genesis_core.errors import ConfigError
from genesis_core.fingerprint import code_version, differences
from genesis_core.metrics import compounded
from genesis_core.optimizer import OptimizerConfig
from genesis_core.plugins import check_user_code
from genesis_core.records import (
    Candidate,
    ChampionData,
    ChampionMetrics,
    ChampionRecord,
    ChampionScores,
    ChampionStore,
    GateRecord,
    HistoryEntry,
    RunFolder,
    RunRef,
    TrialArtifact,
    ValidationReport,
    ValidationWindowRef,
    WindowRef,
    WindowResult,
    names,
)
from genesis_core.validation import (
    Alike,
    RefusedOnWindow,
    ValidationConfig,
    check_trial,
    evaluate_candidate,
    market_runs,
    survived,
    tried_alike,
)


@dataclass
class Decision:
    promoted: bool
    reason: str
    gates: list[GateRecord] = field(default_factory=list)
    champion: ChampionRecord | None = None


def store_for(folder: RunFolder, config: OptimizerConfig) -> ChampionStore:
    """The champion store a run's config points at (its results folder, symbol and timeframe)."""
    return ChampionStore(folder.results_dir, config.meta.symbol, config.meta.timeframe, folder.clock)


def _stored_vs_rerun(stored: list[WindowResult], rerun: list[WindowResult]) -> list[str]:
    return [f"{s.start}..{s.end}: metrics differ" for s, r in zip(stored, rerun, strict=True)
            if differences(s.metrics, r.metrics)]


def _unvalidated(folder: RunFolder, report: ValidationReport, number: int | None, stale: str | None) -> str | None:
    """Why trial ``number`` has no validation to promote it on, if it has none: a report made before
    the run's later trials (its candidates and DSR are of fewer trials than were tried), no
    candidate passed, or the candidate was refused on a window."""
    if stale is not None:
        return f"{stale}: its candidates and deflated Sharpe ratio may not be this run's; run `genesis validate {folder.path}` again"
    if number is None:
        return "no candidate passed validation"
    refused = next((r for r in report.refused if r.trial == number), None)
    return None if refused is None else f"trial {number} could not be validated on the window {refused.start}..{refused.end}: {refused.reason}"


PROMOTION_CRASHES = 5  # backtests that crashed promotion's process, each then refused and recorded: it stops at this many


def promote(folder: RunFolder, config: OptimizerConfig, promotion: PromotionConfig, trial: int | None = None) -> Decision:
    """Promote a validated trial of a run (default: the best passed one) if every gate passes;
    the decision is recorded in the history either way. The gates' backtests run in a process of
    their own (``survived``): one that crashes it is refused (a champion that cannot be re-run on
    the new windows has no score to beat), and recorded in the run folder."""
    check_user_code()
    run = folder.read_run()
    report = folder.read_validation()
    store = store_for(folder, config)
    number = report.best if trial is None else trial
    candidate = report.candidate(number)
    entry = HistoryEntry(time=store.now(), action="reject", reason="", run=str(folder.path), study=run.study_name, trial=number)
    stale = folder.stale(report)
    with store.locked():
        current = store.reconcile()
        entry.current = None if current is None else current.config_fingerprint
        reason = _unvalidated(folder, report, number, stale)
        if reason is not None or candidate is None:
            reason = reason or f"trial {number} is not among the validated candidates of {folder.path} (validation.top_n)"
            store.record(entry.model_copy(update={"reason": reason}))
            return Decision(False, reason)
        artifact = folder.read_trial(candidate.trial)
        validation = ValidationConfig.model_validate(report.validation)
        gates = survived(functools.partial(_rerun, folder, artifact, candidate, current, validation, config, promotion),
                         "promotion", PROMOTION_CRASHES, folder)[0]
        assert gates is not None  # given a folder, survived raises at its last crash
        alike = tried_alike(folder, market_runs(folder, config.meta.symbol, config.meta.timeframe), candidate.explore.first_bar,
                            candidate.explore.last_bar)
        gates += _overfit(report, candidate, promotion, alike)
        failed = [g for g in gates if not g.passed]
        entry.config_fingerprint = candidate.config_fingerprint
        entry.gates = gates
        if failed:
            reason = "; ".join(f"{g.name}: {g.detail}" for g in failed)
            store.record(entry.model_copy(update={"reason": reason}))
            return Decision(False, reason, gates)
        e = candidate.explore
        champion = ChampionRecord(
            symbol=store.symbol, timeframe=store.timeframe,
            config_fingerprint=candidate.config_fingerprint,
            effective_config=artifact.effective_config,
            data=ChampionData(
                file=artifact.fingerprints["data_file"], path=artifact.effective_config.data.path,
                explore=WindowRef(first_bar=e.first_bar, last_bar=e.last_bar, data_window=e.data_window),
                validation=[ValidationWindowRef(start=w.start, end=w.end, first_bar=w.first_bar, last_bar=w.last_bar,
                                                data_window=w.data_window) for w in candidate.windows],
            ),
            scores=ChampionScores(explore=e.production_score, validation=candidate.validation_score, ranking=validation.ranking),
            metrics=ChampionMetrics(explore=e.metrics, validation=[w.metrics for w in candidate.windows]),
            run=RunRef(study=run.study_name, run_dir=str(folder.path), trial=number),
            code_version=code_version(),
            created=store.now(),
        )
        reason = next(g.detail for g in gates if g.name == "improves")
        store.record(entry.model_copy(update={"action": "promote", "reason": reason, "previous": entry.current,
                                              "champion": champion}), champion)
        return Decision(True, reason, gates, champion)


def _rerun(folder: RunFolder, artifact: TrialArtifact, candidate: Candidate, current: ChampionRecord | None,
           validation: ValidationConfig, config: OptimizerConfig, promotion: PromotionConfig, bt: Backtester) -> list[GateRecord]:
    """The gates that re-run backtests."""
    return (_gates(folder, artifact, candidate, current, validation, config, promotion.min_improvement, bt)
            + _floor(candidate, promotion, bt, artifact.effective_config))


def _gates(
    folder: RunFolder, artifact: TrialArtifact, candidate: Candidate, current: ChampionRecord | None,
    validation: ValidationConfig, config: OptimizerConfig, minimum: float, bt: Backtester,
) -> list[GateRecord]:
    rerun = evaluate_candidate(bt, artifact.effective_config, config.scoring, validation, config.meta.symbol)
    if not candidate.passed:
        validated = "failed validation: " + "; ".join(candidate.reasons)
    elif not rerun.passed:  # validation.json written by a version without a check this one makes (max_best_trade_share)
        validated = "failed validation as this version judges it (validation.json, of an earlier version, says passed): " \
            + "; ".join(rerun.reasons)
    else:
        validated = "passed every validation window"
    gates = [GateRecord(name="validated", passed=candidate.passed and rerun.passed, detail=validated)]
    explore = check_trial(folder, artifact.trial_number, bt)
    diffs = explore.differences + _stored_vs_rerun(candidate.windows, rerun.windows)
    gates.append(GateRecord(name="reproduces", passed=not diffs,
                            detail="explore and validation metrics re-run identically" if not diffs
                            else "re-run differs: " + "; ".join(diffs[:5])))
    score = candidate.validation_score
    if current is None:
        gates.append(GateRecord(name="improves", passed=True, detail=f"no current champion; validation score {score:.4f}"))
    elif current.config_fingerprint == candidate.config_fingerprint:
        gates.append(GateRecord(name="improves", passed=False, detail="this config is already the champion"))
    else:
        same_data = build_config(current.effective_config.model_dump(mode="json"),
                                 overrides={"data": {"path": os.path.abspath(data_file(artifact.effective_config))}})  # not the champion's workdir
        try:
            theirs = evaluate_candidate(bt, same_data, config.scoring, validation, config.meta.symbol).validation_score
        except RefusedOnWindow as exc:  # a champion that cannot trade these windows has no score to beat
            gates.append(GateRecord(name="improves", passed=True, detail=f"validation score {score:.4f}; the champion cannot be "
                                    f"re-run on the same windows: {exc}"))
            return gates
        gain = score - theirs
        ok = gain > 0 and gain >= minimum
        gates.append(GateRecord(name="improves", passed=ok, detail=(
            f"validation score {score:.4f} vs champion {theirs:.4f} on the same windows: "
            f"{gain:+.4f} ({'>=' if ok else 'below'} min_improvement {minimum:g}"
            f"{'' if ok or gain > 0 else ', and not above the champion'})")))
    return gates


def _floor(candidate: Candidate, promotion: PromotionConfig, bt: Backtester, config: BacktestConfig) -> list[GateRecord]:
    """Out-of-sample money: better than not trading (and than buying and holding, if asked)."""
    returns = [w.metrics["total_return"] for w in candidate.windows]
    if promotion.min_validation_return is None and not promotion.beat_buy_and_hold:
        return [GateRecord(name="floor", passed=True, detail="switched off (min_validation_return: null)")]
    if any(r is None for r in returns):
        return [GateRecord(name="floor", passed=False, detail="a validation window's return is not a finite number")]
    got = compounded([float(r) for r in returns if r is not None])
    checks, ok = [f"validation return {got:+.2%} over {len(returns)} window(s)"], True
    if promotion.min_validation_return is not None:
        above = got > promotion.min_validation_return
        ok &= above
        checks.append(f"{'above' if above else 'not above'} the floor {promotion.min_validation_return:+.2%}")
    held = compounded([bt.candles(config).window(w.start, w.end, 0).held_return for w in candidate.windows])
    if promotion.beat_buy_and_hold:
        ok &= got > held
        checks.append(f"{'above' if got > held else 'not above'} buy-and-hold {held:+.2%}")
    else:  # said all the same: +5% where the market doubled is no edge worth its risk
        checks.append(f"buying and holding made {held:+.2%} there (not a gate: promotion.beat_buy_and_hold)")
    return [GateRecord(name="floor", passed=ok, detail=", ".join(checks))]


def _overfit(report: ValidationReport, candidate: Candidate, promotion: PromotionConfig, alike: Alike) -> list[GateRecord]:
    """The candidate's deflated Sharpe ratio (given the run's trials and ``alike``, what other runs
    tried on its bars now) and the search's PBO against their limits; a missing statistic fails a
    set limit, as does a DSR that counted fewer of the other runs' configs than there are now."""
    gates, o = [], report.overfitting
    d = candidate.deflated_sharpe  # a report before schema 4 measured only the top-ranked candidate's
    d = d or (o.deflated_sharpe if o.deflated_sharpe and o.deflated_sharpe.trial == candidate.trial else None)
    dsr = d.gated if d else None
    if promotion.min_dsr is None:
        gates.append(GateRecord(name="deflated sharpe", passed=True, detail="switched off (min_dsr: null)"))
    else:
        ok = dsr is not None and dsr >= promotion.min_dsr
        shown = (f"not available for trial {candidate.trial} (validation.json measured only trial "
                 f"{o.deflated_sharpe and o.deflated_sharpe.trial}'s: run genesis validate again)" if dsr is None else f"{dsr:.3f}")
        detail = f"DSR {shown} {'>=' if ok else 'below'} min_dsr {promotion.min_dsr:g}" + (
            f" (N_eff {d.effective_trials:.1f} of {d.counted()})" if d and d.effective_trials else "")
        if d is not None and len(alike.sharpes) > d.other_trials:
            ok, detail = False, (f"DSR {shown} counted {d.other_trials:,} configs of other runs on these bars, and they have "
                                 f"evaluated {len(alike.sharpes):,} this run did not since ({names(alike.runs)}): the choice is "
                                 f"among more trials; run genesis validate {report.run} again")
        gates.append(GateRecord(name="deflated sharpe", passed=ok, detail=detail))
    if promotion.max_pbo is None:
        gates.append(GateRecord(name="overfitting", passed=True, detail="switched off (max_pbo: null)"))
    else:
        value = o.pbo.pbo if o.pbo else None
        ok = value is not None and value <= promotion.max_pbo
        gates.append(GateRecord(name="overfitting", passed=ok, detail=(
            f"PBO {value:.3f} {'<=' if ok else 'above'} max_pbo {promotion.max_pbo:g} ({o.pbo.configs} configs, {o.pbo.splits:,} splits)"
            if o.pbo and value is not None else f"PBO not available: {o.pbo_note}")))
    return gates


def rollback(store: ChampionStore, to: str | None = None) -> Decision:
    """Restore the champion the current one replaced (or the installed one whose fingerprint
    starts with ``to``); recorded in the history like a promotion."""
    with store.locked():
        current = store.reconcile()
        if current is None:
            raise ConfigError(f"no {store.symbol} {store.timeframe} champion in {store.results_dir}: nothing to roll back")
        by_fp = {e.champion.config_fingerprint: (e, e.champion) for e in store.history()
                 if e.champion is not None and e.state == "done"}
        if to is None:  # by_fp holds the latest install of each config
            installed_by = by_fp.get(current.config_fingerprint)
            target_fp = installed_by[0].previous if installed_by else None
            if target_fp is None:
                raise ConfigError("the current champion was the first one: nothing earlier to roll back to")
        else:
            matches = [fp for fp in by_fp if fp.startswith(to) and fp != current.config_fingerprint]
            if len(matches) != 1:
                raise ConfigError(f"--to {to}: {'no' if not matches else 'more than one'} earlier champion matches; "
                                  "see `genesis champion history`")
            target_fp = matches[0]
        target, champion = by_fp[target_fp]
        reason = f"rolled back from {current.config_fingerprint[:12]} to {target_fp[:12]}"
        store.record(HistoryEntry(
            time=store.now(), action="rollback", reason=reason, current=current.config_fingerprint,
            config_fingerprint=target_fp, previous=target.previous, champion=champion, run=target.run, trial=target.trial,
        ), champion)
        return Decision(True, reason, champion=champion)

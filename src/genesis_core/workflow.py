"""What ``genesis optimize`` and ``genesis walk-forward`` run: preflight, explore, then
validation and promotion when the config enables them. The duplicate-streak stop ends only the
explore phase; Ctrl-C ends all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from pydantic import BaseModel

from genesis_core.champion import Decision, promote
from genesis_core.config import parse_model
from genesis_core.errors import ConfigError, GenesisError
from genesis_core.metrics import compounded
from genesis_core.optimizer import OnProgress, RunOptions, RunSummary, SweepOptions, optimize
from genesis_core.preflight import preflight, report
from genesis_core.records import (
    Fold,
    FoldTop,
    GateRecord,
    PreflightRecord,
    PreflightSkipped,
    RunFolder,
    ValidationReport,
    WalkForwardAggregate,
    WalkForwardReport,
    preflight_warnings,
)
from genesis_core.study import StudyConfig, load_run
from genesis_core.validation import ValidationConfig, fold_windows, validate


class PreflightFailed(GenesisError):
    exit_code = 1

    def __init__(self, record: PreflightRecord) -> None:
        failed = [f"{c.name}: {c.detail}" for c in record.checks if c.status == "fail"]
        super().__init__("preflight failed (run not started; --skip-preflight to start anyway):\n  " + "\n  ".join(failed))
        self.report = record


class ValidationSummary(BaseModel):
    path: str
    passed: list[int]
    best: int | None
    candidates: int
    refused: int  # candidates the strategy or the engine refused on a window


class PromotionSummary(BaseModel):
    promoted: bool
    reason: str
    gates: list[GateRecord]


class WorkflowSummary(BaseModel):
    """One ``genesis optimize``: preflight, the explore session, then validation and promotion if run."""

    preflight: PreflightRecord | PreflightSkipped
    explore: RunSummary
    validation: ValidationSummary | None = None
    promotion: PromotionSummary | None = None

    def cautions(self) -> list[str]:
        """What the run warns of: preflight's warnings, the session's notes, the explore's warnings."""
        return [*preflight_warnings(self.preflight), *self.explore.session.notes, *self.explore.warnings]


@dataclass(frozen=True)
class WalkForwardRun:
    """What ``walk_forward`` did: the report and its path, what each fold's run warned of (led by
    its fold), and the signal that interrupted it (None: every fold ran)."""

    report: WalkForwardReport
    path: Path
    cautions: list[str]
    signal: str | None


def checked(cfg: StudyConfig, options: RunOptions | SweepOptions, storage: str | None,
            skip_preflight: bool) -> PreflightRecord | PreflightSkipped:
    """Preflight's report (or that it was skipped) for an optimizer session or a sweep; PreflightFailed
    if any check fails."""
    if skip_preflight:
        return PreflightSkipped()
    if isinstance(options, SweepOptions):
        checks = preflight(cfg, storage, options.workers, force_resume=options.force_resume, sweep=options)
    else:
        checks = preflight(cfg, storage, options.workers, options.max_trials, options.force_resume)
    record = report(checks)
    if not record.ok:
        raise PreflightFailed(record)
    return record


def run(cfg: StudyConfig, options: RunOptions | None = None, storage: str | None = None, skip_preflight: bool = False,
        on_progress: OnProgress | None = None) -> WorkflowSummary:
    """Run the study of ``cfg`` end to end; the summary carries each phase's result."""
    options = options or RunOptions()
    record = checked(cfg, options, storage, skip_preflight)
    spec = cfg.spec(storage)
    summary = WorkflowSummary(preflight=record, explore=optimize(spec, replace(options, preflight=record), on_progress))
    if summary.explore.session.interrupted:
        return summary
    if cfg.validation.enabled:
        v = validate(spec.folder, cfg.validation, cfg)
        summary.validation = ValidationSummary(path=str(spec.folder.validation_path), passed=v.passed, best=v.best,
                                               candidates=len(v.candidates), refused=len(v.refused))
    if cfg.promotion.enabled:
        decision = promote(spec.folder, cfg, cfg.promotion)
        summary.promotion = PromotionSummary(promoted=decision.promoted, reason=decision.reason,
                                             gates=decision.gates)
    return summary


def validate_run(folder: RunFolder, validation: ValidationConfig | None = None, top_n: int | None = None,
                 on_read: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Validate a finished run with its own validation settings (or ``validation``), ``top_n`` overriding
    (``on_read``: see ``validate``)."""
    _, cfg = load_run(folder)
    v = validation or cfg.validation
    if top_n is not None:
        v = v.model_copy(update={"top_n": top_n})
    return validate(folder, v, cfg, on_read=on_read)


def promote_run(folder: RunFolder, trial: int | None = None, min_improvement: float | None = None) -> Decision:
    """Promote a validated trial of a run through the gates, with the run's own settings."""
    _, cfg = load_run(folder)
    promotion = cfg.promotion if min_improvement is None else cfg.promotion.model_copy(update={"min_improvement": min_improvement})
    return promote(folder, cfg, promotion, trial)


def _chained(returns: list[float | None]) -> float | None:
    """``compounded(returns)``, or None when there is none or one is not known (a file written before it was kept)."""
    return None if not returns or None in returns else compounded([r for r in returns if r is not None])


def _no_top(v: ValidationReport) -> str:
    """Why a fold's validation has no candidate to take as its top."""
    if v.refused:
        return "every candidate was refused on the block: " + "; ".join(f"#{r.trial}: {r.reason}" for r in v.refused)
    return v.short() or f"none of its {v.evaluated_trials} evaluated trial(s) could be a candidate"


def walk_forward(cfg: StudyConfig, options: RunOptions | None = None, storage: str | None = None,
                 skip_preflight: bool = False, on_progress: OnProgress | None = None) -> WalkForwardRun:
    """Every fold of ``validation.walk_forward`` as a study of its own (``<study>-wf<i>``, its config
    written beside the report so it can be re-run alone), each preflighted, explored and validated on
    the next block; writes the report, of the folds done when interrupted (run again, each fold's
    study resumes)."""
    wf = cfg.validation.walk_forward
    if wf is None:
        raise ConfigError(f"the config of study {cfg.meta.study_name!r} has no validation.walk_forward section "
                          "(validation.walk_forward: {folds, start, end})")
    options = options or RunOptions()
    blocks = fold_windows(wf)
    raw = cfg.model_dump(mode="json")
    name = cfg.meta.study_name
    folder = RunFolder.of(cfg.meta.results_dir, f"{name}-walk-forward")
    folds: list[Fold] = []
    cautions: list[str] = []
    stopped_by = None
    for i in range(1, wf.folds + 1):
        (explore_start, explore_end), (val_start, val_end) = blocks[i - 1], blocks[i]
        fold_raw = {**raw, "meta": {**raw["meta"], "sample_start": explore_start, "sample_end": explore_end,
                                    "study_name": f"{name}-wf{i}"},
                    "validation": {**raw["validation"], "enabled": True, "walk_forward": None,
                                   "windows": [{"start": val_start, "end": val_end}]},
                    "promotion": {**raw["promotion"], "enabled": False}}
        fold_path = folder.write_fold_config(i, yaml.safe_dump(fold_raw, sort_keys=False))
        summary = run(parse_model(StudyConfig, fold_raw, str(fold_path)), options, storage, skip_preflight, on_progress)
        cautions += [f"fold {i}: {line}" for line in summary.cautions()]
        if summary.explore.session.interrupted:
            stopped_by = summary.explore.session.signal or "SIGINT"
            break
        v = RunFolder(Path(summary.explore.run_dir)).read_validation()
        # what the explore alone picks: the best validated would be the best of top_n on the very block it is scored on
        top = min(v.candidates, key=lambda c: (-c.explore.production_score, c.trial), default=None)
        folds.append(Fold(
            fold=i, explore=(explore_start, explore_end), validation=(val_start, val_end), config=str(fold_path),
            run_dir=summary.explore.run_dir, evaluated_trials=v.evaluated_trials, passed=v.passed, best=v.best,
            top=None if top is None else FoldTop(trial=top.trial, params=top.params, validation_score=top.validation_score,
                                                  gap=top.gap, passed=top.passed, explore_score=top.explore.production_score,
                                                  validation_return=top.windows[0].metrics["total_return"]),
            deflated_sharpe=None if top is None else top.deflated_sharpe,
            no_top=None if top is not None else _no_top(v),
            buy_and_hold=v.held_on(val_start, val_end),
        ))
    tops = [f.top for f in folds if f.top is not None]
    traded = [(f.top.validation_return, f.buy_and_hold) for f in folds if f.top is not None]
    result = WalkForwardReport(
        study=name, walk_forward=wf.model_dump(mode="json"), blocks=blocks, folds=folds, complete=len(folds) == wf.folds,
        top_chosen_by="explore",
        aggregate=WalkForwardAggregate(
            folds_with_a_pass=sum(1 for f in folds if f.best is not None),
            tops_passed=sum(t.passed for t in tops),
            mean_validation_score=sum(t.validation_score for t in tops) / len(tops) if tops else None,
            worst_validation_score=min((t.validation_score for t in tops), default=None),
            mean_gap=sum(t.gap for t in tops) / len(tops) if tops else None,
            chained_return=_chained([r for r, _ in traded]),
            chained_buy_and_hold=_chained([h for _, h in traded]),
        ),
    )
    folder.write_walk_forward(result)
    return WalkForwardRun(result, folder.walk_forward_path, cautions, stopped_by)

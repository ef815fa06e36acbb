"""Explore -> validate: the top explore candidates re-run on out-of-sample windows.

A candidate passes only if it is VALID and meets every validation constraint on every window.
Candidates are ranked by their validation score (the production score of each window, combined
by ``validation.ranking``), ties broken by the explore score. The report goes to
``<run>/validation.json``; it is built from the run's artifacts alone (run.json and the trial
artifacts), so ``genesis validate RUN`` works on any finished run without its study storage.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from genesis_core.backtest import Backtester, BacktestResult, build_config
from genesis_core.config import parse_model
from genesis_core.errors import ConfigError
from genesis_core.files import atomic_write
from genesis_core.fingerprint import code_version
from genesis_core.metrics import bars_per_year
from genesis_core.optimizer import OptimizerConfig
from genesis_core.optimizer._config import ValidationConfig, WindowSpec
from genesis_core.scoring import Outcome, Scoring, score, violation
from genesis_core.validation._stats import deflated_sharpe

VALIDATION_FILE = "validation.json"


def load_run(run_dir: Path) -> tuple[dict[str, Any], OptimizerConfig]:
    """run.json and the optimizer config it was made with."""
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{run_dir / 'run.json'}: unreadable: {exc}") from None
    return run, parse_model(OptimizerConfig, run["optimizer_config"], "run.json optimizer_config")


def evaluated_trials(run_dir: Path) -> list[dict[str, Any]]:
    """Every evaluated (not cached) trial's artifact, in trial order."""
    out = []
    for path in sorted((run_dir / "trials").glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable trial artifact: {exc}") from None
    return out


def missing_artifacts(run_dir: Path, trials: list[dict[str, Any]]) -> list[int]:
    """Evaluated trials listed in trials.csv without an artifact here: evaluated by a worker on
    another machine (artifacts are written where a trial ran), so validation cannot see them."""
    have = {t["trial_number"] for t in trials}
    with (run_dir / "trials.csv").open() as fh:
        return [int(r["number"]) for r in csv.DictReader(fh) if r["cached"] == "False" and int(r["number"]) not in have]


def select_candidates(trials: list[dict[str, Any]], top_n: int, include_scoring_failures: bool) -> list[dict[str, Any]]:
    """The top-N distinct VALID, unpruned trials by explore production score; ties to the earlier trial."""
    eligible = [
        t for t in trials
        if t["score"]["outcome"] == Outcome.VALID.value and not t.get("pruned")
        and (include_scoring_failures or not t["score"]["constraints_failed"])
    ]
    eligible.sort(key=lambda t: (-t["score"]["phase2"], t["trial_number"]))
    seen: set[str] = set()
    picked = []
    for t in eligible:
        fp = t["fingerprints"]["config"]
        if fp not in seen:
            seen.add(fp)
            picked.append(t)
    return picked[:top_n]


def run_on_window(backtester: Backtester, effective_config: dict[str, Any], window: WindowSpec) -> BacktestResult:
    """The same effective config on another window: only data.start and data.end change."""
    return backtester.run(build_config(effective_config, overrides={"data": {"start": window.start, "end": window.end}}))


def _window_report(result: BacktestResult, window: WindowSpec, scoring: Scoring, validation: ValidationConfig) -> dict[str, Any]:
    c = validation.constraints
    sc = score(result.metrics, result.trace, scoring, c)
    m = result.metrics
    reasons = []
    if sc.outcome is not Outcome.VALID:
        reasons.append(sc.outcome.value)
    reasons += [f"{name}: {violation(name, m, c)}" for name in sc.constraints_failed]
    return {
        "start": window.start, "end": window.end,
        "first_bar": result.window.first_bar, "last_bar": result.window.last_bar, "bars": result.window.bars,
        "data_window": result.window.fingerprint,
        "outcome": sc.outcome.value, "score": sc.phase2, "passed": not reasons,
        "reasons": reasons,
        "metrics": m,
    }


def aggregate(scores: list[float], validation: ValidationConfig) -> float:
    """One validation score from the windows' scores, as ``validation.ranking`` says."""
    worst, mean = min(scores), sum(scores) / len(scores)
    if validation.ranking == "worst":
        return worst
    if validation.ranking == "mean":
        return mean
    return (1 - validation.robust_weight) * mean + validation.robust_weight * worst


def evaluate_candidate(
    backtester: Backtester, effective_config: dict[str, Any], scoring: Scoring, validation: ValidationConfig
) -> dict[str, Any]:
    """Validation windows, score and pass/fail of one effective config (a candidate or the champion)."""
    windows = [_window_report(run_on_window(backtester, effective_config, w), w, scoring, validation) for w in validation.windows]
    return {
        "windows": windows,
        "validation_score": aggregate([w["score"] for w in windows], validation),
        "passed": all(w["passed"] for w in windows),
        "reasons": [f"{w['start']}..{w['end']}: {r}" for w in windows for r in w["reasons"]],
    }


def _overfitting(
    backtester: Backtester, best: dict[str, Any] | None, trials: list[dict[str, Any]], timeframe_seconds: int
) -> dict[str, Any]:
    """Deflated Sharpe ratio of the top-ranked candidate on the explore window, given every evaluated trial."""
    if best is None:
        return {"deflated_sharpe": None}
    equity = backtester.run(build_config(best["effective_config"])).engine.equity
    scale = math.sqrt(bars_per_year(timeframe_seconds))  # metrics.sharpe is annualised; DSR wants per bar
    sharpes = np.array([t["metrics"]["sharpe"] / scale for t in trials])
    stats = deflated_sharpe(equity[1:] / equity[:-1] - 1.0, sharpes, len(trials))
    return {"deflated_sharpe": {"trial": best["trial_number"], **stats}}


def validate(run_dir: Path, validation: ValidationConfig | None = None, backtester: Backtester | None = None) -> dict[str, Any]:
    """Validate a finished run's top candidates; write and return the report."""
    run, cfg = load_run(run_dir)
    v = validation or cfg.validation
    if not v.windows:
        raise ConfigError(f"{run_dir}: its config has no validation windows; add a validation section "
                          "(validation.windows) to the optimizer config and pass it with --config")
    bt = backtester or Backtester()
    trials = evaluated_trials(run_dir)
    picked = select_candidates(trials, v.top_n, v.constraints.include_scoring_failures)
    candidates = []
    for t in picked:
        result = evaluate_candidate(bt, t["effective_config"], cfg.scoring, v)
        explore = t["score"]["phase2"]
        candidates.append({
            "trial": t["trial_number"], "config_fingerprint": t["fingerprints"]["config"], "params": t["params"],
            "explore": {"score": explore, "constraints_failed": t["score"]["constraints_failed"], "metrics": t["metrics"],
                        "first_bar": t["window"]["first_bar"], "last_bar": t["window"]["last_bar"],
                        "data_window": t["fingerprints"]["data_window"]},
            **result,
            "gap": explore - result["validation_score"],
            "sharpe_gap": t["metrics"]["sharpe"] - sum(w["metrics"]["sharpe"] for w in result["windows"]) / len(result["windows"]),
        })
    candidates.sort(key=lambda c: (not c["passed"], -c["validation_score"], -c["explore"]["score"], c["trial"]))
    for rank, c in enumerate(candidates, 1):
        c["rank"] = rank
    by_number = {t["trial_number"]: t for t in trials}
    top = by_number[candidates[0]["trial"]] if candidates else None
    data = run["fixed_config"]["data"]
    timeframe = bt.candles(data["path"], data["timeframe"]).timeframe_seconds
    report = {
        "run": run["study_name"],
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "code_version": code_version(),
        "validation": v.model_dump(mode="json"),
        "evaluated_trials": len(trials),
        "missing_artifacts": missing_artifacts(run_dir, trials),
        "eligible_note": "VALID, unpruned, distinct configs" + ("" if v.constraints.include_scoring_failures
                                                                  else ", explore constraints met"),
        "candidates": candidates,
        "passed": [c["trial"] for c in candidates if c["passed"]],
        "best": next((c["trial"] for c in candidates if c["passed"]), None),
        "overfitting": {
            "mean_gap": sum(c["gap"] for c in candidates) / len(candidates) if candidates else None,
            **_overfitting(bt, top, trials, timeframe),
        },
    }
    atomic_write(run_dir / VALIDATION_FILE, json.dumps(report, indent=1))
    return report


def load_validation(run_dir: Path) -> dict[str, Any]:
    path = run_dir / VALIDATION_FILE
    if not path.exists():
        raise ConfigError(f"{run_dir} has not been validated: run `genesis validate {run_dir}` first")
    return json.loads(path.read_text())

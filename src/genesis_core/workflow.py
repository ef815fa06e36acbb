"""What ``genesis optimize`` runs: preflight, explore, then validation and promotion when the
config enables them. The duplicate-streak stop ends only the explore phase; Ctrl-C ends all."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from genesis_core.champion import promote
from genesis_core.errors import GenesisError
from genesis_core.optimizer import RunOptions, load_optimizer_config, optimize
from genesis_core.preflight import preflight, to_dict
from genesis_core.validation import validate


class PreflightFailed(GenesisError):
    exit_code = 1

    def __init__(self, report: dict[str, Any]) -> None:
        failed = [f"{c['name']}: {c['detail']}" for c in report["checks"] if c["status"] == "fail"]
        super().__init__("preflight failed (run not started; --skip-preflight to start anyway):\n  " + "\n  ".join(failed))
        self.report = report


def checked(config_path: str | Path, options: RunOptions, skip_preflight: bool) -> dict[str, Any]:
    """Preflight's report (or that it was skipped); PreflightFailed if any check fails."""
    if skip_preflight:
        return {"skipped": True}
    record = to_dict(preflight(config_path, options.storage, options.workers, options.max_trials, options.force_resume))
    if not record["ok"]:
        raise PreflightFailed(record)
    return record


def run(config_path: str | Path, options: RunOptions | None = None, skip_preflight: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Run the study of ``config_path`` end to end; the summary carries each phase's result."""
    cfg = load_optimizer_config(config_path)
    options = options or RunOptions()
    record = checked(config_path, options, skip_preflight)
    summary = optimize(config_path, replace(options, preflight=record), progress)
    summary["preflight"] = record
    if summary["session"]["interrupted"]:
        return summary
    run_dir = Path(summary["run_dir"])
    if cfg.validation.enabled:
        report = validate(run_dir)
        summary["validation"] = {"path": str(run_dir / "validation.json"), "passed": report["passed"], "best": report["best"],
                                 "candidates": len(report["candidates"])}
    if cfg.promotion.enabled:
        decision = promote(run_dir)
        summary["promotion"] = {"promoted": decision.promoted, "reason": decision.reason,
                                "gates": [vars(g) for g in decision.gates]}
    return summary

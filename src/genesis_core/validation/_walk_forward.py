"""Walk-forward: the explore -> validate workflow repeated on rolling windows.

``validation.walk_forward`` cuts [start, end] into ``folds + 1`` blocks of whole days; fold i
explores block i-1 and validates on block i. Each fold is an ordinary study (its own name,
``<study>-wf<i>``, and a config file written beside the report so it can be re-run alone) with
the same space, scoring and validation constraints; the report aggregates the folds.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from genesis_core.backtest import read_config_file
from genesis_core.data import parse_ts
from genesis_core.errors import ConfigError
from genesis_core.files import atomic_write
from genesis_core.optimizer import RunOptions, load_optimizer_config, optimize
from genesis_core.optimizer._config import WalkForward
from genesis_core.validation._validate import validate

_DAY = 86400


def fold_windows(wf: WalkForward) -> list[tuple[str, str]]:
    """The folds + 1 consecutive blocks (start, end), whole days, both ends inclusive."""
    first, last = parse_ts(wf.start), parse_ts(wf.end, end_of_day=True) + 1
    days = (last - first) // _DAY
    if days < 2 * (wf.folds + 1):
        raise ConfigError(f"validation.walk_forward: {wf.start}..{wf.end} is too short for {wf.folds} folds")
    edges = [first + (days * k // (wf.folds + 1)) * _DAY for k in range(wf.folds + 2)]
    return [(_day(a), _day(b - _DAY)) for a, b in itertools.pairwise(edges)]


def _day(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d")


def walk_forward(config_path: str | Path, options: RunOptions | None = None, progress: bool = False,
                 before_fold: Callable[[Path], Any] | None = None) -> dict[str, Any]:
    """Run every fold (explore, then validate on the next block); write and return the report.
    ``before_fold`` gets each fold's config before its run (the CLI runs preflight there)."""
    cfg = load_optimizer_config(config_path)
    wf = cfg.validation.walk_forward
    if wf is None:
        raise ConfigError(f"{config_path}: no validation.walk_forward section")
    raw = read_config_file(config_path)
    blocks = fold_windows(wf)
    name = cfg.meta.study_name
    folder = Path(cfg.meta.results_dir) / "runs" / f"{name}-walk-forward"
    folds: list[dict[str, Any]] = []
    for i in range(1, wf.folds + 1):
        (explore_start, explore_end), (val_start, val_end) = blocks[i - 1], blocks[i]
        fold_raw = copy.deepcopy(raw)
        fold_raw["meta"].update(sample_start=explore_start, sample_end=explore_end, study_name=f"{name}-wf{i}")
        fold_raw["validation"] = {**raw["validation"], "enabled": True, "walk_forward": None,
                                  "windows": [{"start": val_start, "end": val_end}]}
        fold_raw["promotion"] = {"enabled": False}
        fold_path = folder / f"fold{i}.yaml"
        atomic_write(fold_path, yaml.safe_dump(fold_raw, sort_keys=False))
        if before_fold is not None:
            before_fold(fold_path)
        summary = optimize(fold_path, options or RunOptions(), progress)
        if summary["session"]["interrupted"]:
            break
        report = validate(Path(summary["run_dir"]))
        top = report["candidates"][0] if report["candidates"] else None
        folds.append({
            "fold": i, "explore": [explore_start, explore_end], "validation": [val_start, val_end],
            "config": str(fold_path), "run_dir": summary["run_dir"], "evaluated_trials": report["evaluated_trials"],
            "passed": report["passed"], "best": report["best"],
            "top": None if top is None else {k: top[k] for k in ("trial", "params", "validation_score", "gap", "passed")}
                   | {"explore_score": top["explore"]["score"]},
            "deflated_sharpe": report["overfitting"]["deflated_sharpe"],
        })
    tops = [f["top"] for f in folds if f["top"] is not None]
    result = {
        "study": name, "walk_forward": wf.model_dump(mode="json"), "blocks": blocks, "folds": folds,
        "complete": len(folds) == wf.folds,
        "aggregate": {
            "folds_with_a_pass": sum(1 for f in folds if f["best"] is not None),
            "mean_validation_score": sum(t["validation_score"] for t in tops) / len(tops) if tops else None,
            "worst_validation_score": min((t["validation_score"] for t in tops), default=None),
            "mean_gap": sum(t["gap"] for t in tops) / len(tops) if tops else None,
        },
    }
    atomic_write(folder / "walk_forward.json", json.dumps(result, indent=1))
    result["path"] = str(folder / "walk_forward.json")
    return result

"""Proof against drift: re-run trials from their stored artifacts alone and compare."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from genesis_core.backtest import Backtester, build_config
from genesis_core.errors import ConfigError, GenesisError
from genesis_core.fingerprint import ABSENT, differences


@dataclass
class Equivalence:
    trial: int
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def resolve_run(run: str | Path, results_dir: str = "results") -> Path:
    """A run folder given as a path or as a study name under ``<results_dir>/runs``."""
    for candidate in (Path(run), Path(results_dir) / "runs" / str(run)):
        if (candidate / "run.json").exists():
            return candidate
    raise ConfigError(f"no run at {run} (looked for run.json there and under {results_dir}/runs/)")


def check_trial(artifact_path: Path, backtester: Backtester) -> Equivalence:
    """Re-run one trial from its artifact; the effective config alone must reproduce everything."""
    try:
        stored = json.loads(artifact_path.read_text())
    except (OSError, ValueError) as exc:
        return Equivalence(-1, [f"{artifact_path.name}: unreadable artifact: {exc}"])
    result = Equivalence(int(stored.get("trial_number", -1)))
    try:
        rerun = backtester.run(build_config(stored["effective_config"])).to_dict(trades=False)
    except (GenesisError, KeyError) as exc:
        result.differences.append(f"cannot re-run from the artifact: {exc}")
        return result
    parts = ("fingerprints", "metrics", "trace", "window")
    for path, was, now in differences({p: stored.get(p, ABSENT) for p in parts}, {p: rerun[p] for p in parts}):
        result.differences.append(f"{path}: stored {was!r} != re-run {now!r}")
    return result


def check_equivalence(run_dir: Path, trials: list[int] | None = None) -> list[Equivalence]:
    """Check the given trials (all evaluated trials when None) of a run."""
    folder = run_dir / "trials"
    if trials is None:
        paths = sorted(folder.glob("*.json"))
    else:
        paths = [folder / f"{n:06d}.json" for n in trials]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise ConfigError(f"no artifact for trial(s) {', '.join(missing)} in {folder} (duplicates and failed trials have none)")
    backtester = Backtester()
    return [check_trial(p, backtester) for p in paths]

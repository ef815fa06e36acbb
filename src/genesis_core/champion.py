"""Champions: the promoted effective config per (symbol, timeframe), its gates and its history.

Files under ``<results>/champions/``: ``{symbol}_{timeframe}.json`` (the champion) and
``{symbol}_{timeframe}.history.json`` (every promotion, rejection and rollback, with the reason
and, for installs, the full champion so that any earlier one can be restored). Both are
replaced atomically under a lock, the history first: a crash never leaves a half-written file.

A candidate is promoted only if every gate passes:
1. validated: it passed validation (``genesis validate``) on every window;
2. reproduces: re-running its stored effective config gives its stored explore and validation
   metrics exactly;
3. improves: its validation score beats the current champion's, re-run now on the same windows
   of the same data file, by more than zero and by at least ``min_improvement``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genesis_core.backtest import Backtester
from genesis_core.config import deep_merge
from genesis_core.errors import ConfigError
from genesis_core.files import atomic_write
from genesis_core.fingerprint import code_version, differences
from genesis_core.optimizer import OptimizerConfig
from genesis_core.optimizer._config import ValidationConfig
from genesis_core.optimizer._runner import champion_file
from genesis_core.validation import check_trial, evaluate_candidate, load_run, load_validation


@dataclass
class Gate:
    name: str
    passed: bool
    detail: str


@dataclass
class Decision:
    promoted: bool
    reason: str
    gates: list[Gate] = field(default_factory=list)
    champion: dict[str, Any] | None = None


def _history_path(results_dir: Path, symbol: str, timeframe: str) -> Path:
    return Path(results_dir) / "champions" / f"{symbol}_{timeframe}.history.json"


def _read(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable: {exc}") from None


def load_champion(results_dir: Path, symbol: str, timeframe: str) -> dict[str, Any] | None:
    return _read(champion_file(results_dir, symbol, timeframe), None)


def load_history(results_dir: Path, symbol: str, timeframe: str) -> list[dict[str, Any]]:
    return _read(_history_path(results_dir, symbol, timeframe), [])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextlib.contextmanager
def _locked(results_dir: Path) -> Iterator[None]:
    """One promotion or rollback at a time per results folder, across processes."""
    lock = Path(results_dir) / "champions" / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _record(results_dir: Path, symbol: str, timeframe: str, entry: dict[str, Any], install: dict[str, Any] | None) -> None:
    """Replace the champion (for an install), then append to the history; each file atomically.
    A crash between the two leaves a champion without its history entry, which ``_reconcile``
    records at the next operation."""
    if install is not None:
        atomic_write(champion_file(results_dir, symbol, timeframe), json.dumps(install, indent=1))
    history = load_history(results_dir, symbol, timeframe)
    atomic_write(_history_path(results_dir, symbol, timeframe), json.dumps([*history, entry], indent=1))


def _reconcile(results_dir: Path, symbol: str, timeframe: str) -> dict[str, Any] | None:
    """The current champion, after recording it in the history if its install entry was lost."""
    current = load_champion(results_dir, symbol, timeframe)
    installs = [e for e in load_history(results_dir, symbol, timeframe) if e.get("champion")]
    last = installs[-1]["champion"] if installs else None
    if current is not None and (last is None or last["created"] != current["created"]):
        _record(results_dir, symbol, timeframe, {
            "time": _now(), "action": "recovered", "config_fingerprint": current["config_fingerprint"],
            "reason": "the champion file was written but its history entry was lost (interrupted promotion); recorded now",
            "previous": None if last is None else last["config_fingerprint"], "champion": current,
            "run": current["run"]["run_dir"], "trial": current["run"]["trial"],
        }, None)
    return current


def _stored_vs_rerun(stored: list[dict[str, Any]], rerun: list[dict[str, Any]]) -> list[str]:
    return [f"{s['start']}..{s['end']}: metrics differ" for s, r in zip(stored, rerun, strict=True)
            if differences(s["metrics"], r["metrics"])]


def promote(
    run_dir: Path, trial: int | None = None, min_improvement: float | None = None, backtester: Backtester | None = None
) -> Decision:
    """Promote a validated trial of a run (default: the best passed one) if every gate passes;
    the decision is recorded in the history either way."""
    run, cfg = load_run(run_dir)
    report = load_validation(run_dir)
    symbol, timeframe = cfg.meta.symbol, cfg.meta.timeframe
    results_dir = run_dir.parent.parent
    minimum = cfg.promotion.min_improvement if min_improvement is None else min_improvement
    bt = backtester or Backtester()
    number = report["best"] if trial is None else trial
    candidate = next((c for c in report["candidates"] if c["trial"] == number), None)
    entry: dict[str, Any] = {"time": _now(), "action": "reject", "run": str(run_dir), "study": run["study_name"], "trial": number}
    with _locked(results_dir):
        current = _reconcile(results_dir, symbol, timeframe)
        entry["current"] = None if current is None else current["config_fingerprint"]
        if candidate is None:
            reason = ("no candidate passed validation" if number is None
                      else f"trial {number} is not among the validated candidates of {run_dir} (validation.top_n)")
            _record(results_dir, symbol, timeframe, {**entry, "reason": reason}, None)
            return Decision(False, reason)
        artifact_path = run_dir / "trials" / f"{number:06d}.json"
        artifact = json.loads(artifact_path.read_text())
        gates = _gates(artifact_path, artifact, candidate, current, ValidationConfig.model_validate(report["validation"]),
                       cfg, minimum, bt)
        failed = [g for g in gates if not g.passed]
        entry.update(config_fingerprint=candidate["config_fingerprint"], gates=[vars(g) for g in gates])
        if failed:
            reason = "; ".join(f"{g.name}: {g.detail}" for g in failed)
            _record(results_dir, symbol, timeframe, {**entry, "reason": reason}, None)
            return Decision(False, reason, gates)
        champion = {
            "symbol": symbol, "timeframe": timeframe,
            "config_fingerprint": candidate["config_fingerprint"],
            "effective_config": artifact["effective_config"],
            "data": {
                "file": artifact["fingerprints"]["data_file"], "path": artifact["effective_config"]["data"]["path"],
                "explore": {k: candidate["explore"][k] for k in ("first_bar", "last_bar", "data_window")},
                "validation": [{k: w[k] for k in ("start", "end", "first_bar", "last_bar", "data_window")}
                               for w in candidate["windows"]],
            },
            "scores": {"explore": candidate["explore"]["score"], "validation": candidate["validation_score"],
                       "ranking": report["validation"]["ranking"]},
            "metrics": {"explore": candidate["explore"]["metrics"], "validation": [w["metrics"] for w in candidate["windows"]]},
            "run": {"study": run["study_name"], "run_dir": str(run_dir), "trial": number},
            "code_version": code_version(),
            "created": _now(),
        }
        reason = next(g.detail for g in gates if g.name == "improves")
        _record(results_dir, symbol, timeframe,
                {**entry, "action": "promote", "reason": reason, "previous": entry["current"], "champion": champion}, champion)
        return Decision(True, reason, gates, champion)


def _gates(
    artifact_path: Path, artifact: dict[str, Any], candidate: dict[str, Any], current: dict[str, Any] | None,
    validation: ValidationConfig, cfg: OptimizerConfig, minimum: float, bt: Backtester,
) -> list[Gate]:
    gates = [Gate("validated", candidate["passed"], "passed every validation window" if candidate["passed"]
                  else "failed validation: " + "; ".join(candidate["reasons"]))]
    explore = check_trial(artifact_path, bt)
    rerun = evaluate_candidate(bt, artifact["effective_config"], cfg.scoring, validation)
    diffs = explore.differences + _stored_vs_rerun(candidate["windows"], rerun["windows"])
    gates.append(Gate("reproduces", not diffs, "explore and validation metrics re-run identically" if not diffs
                      else "re-run differs: " + "; ".join(diffs[:5])))
    score = candidate["validation_score"]
    if current is None:
        gates.append(Gate("improves", True, f"no current champion; validation score {score:.4f}"))
    elif current["config_fingerprint"] == candidate["config_fingerprint"]:
        gates.append(Gate("improves", False, "this config is already the champion"))
    else:
        same_data = deep_merge(current["effective_config"], {"data": {"path": artifact["effective_config"]["data"]["path"]}})
        theirs = evaluate_candidate(bt, same_data, cfg.scoring, validation)["validation_score"]
        gain = score - theirs
        ok = gain > 0 and gain >= minimum
        gates.append(Gate("improves", ok, f"validation score {score:.4f} vs champion {theirs:.4f} on the same windows: "
                          f"{gain:+.4f} ({'>=' if ok else 'below'} min_improvement {minimum:g}"
                          f"{'' if ok or gain > 0 else ', and not above the champion'})"))
    return gates


def rollback(results_dir: Path, symbol: str, timeframe: str, to: str | None = None) -> Decision:
    """Restore the champion the current one replaced (or the installed one whose fingerprint
    starts with ``to``); recorded in the history like a promotion."""
    with _locked(results_dir):
        current = _reconcile(results_dir, symbol, timeframe)
        if current is None:
            raise ConfigError(f"no {symbol} {timeframe} champion in {results_dir}: nothing to roll back")
        installs = [e for e in load_history(results_dir, symbol, timeframe) if e.get("champion")]
        by_fp = {e["champion"]["config_fingerprint"]: e for e in installs}  # the latest install of each
        if to is None:
            installed_by = by_fp.get(current["config_fingerprint"])
            target_fp = installed_by["previous"] if installed_by else None
            if target_fp is None:
                raise ConfigError("the current champion was the first one: nothing earlier to roll back to")
        else:
            matches = [fp for fp in by_fp if fp.startswith(to) and fp != current["config_fingerprint"]]
            if len(matches) != 1:
                raise ConfigError(f"--to {to}: {'no' if not matches else 'more than one'} earlier champion matches; "
                                  "see `genesis champion history`")
            target_fp = matches[0]
        target = by_fp[target_fp]
        reason = f"rolled back from {current['config_fingerprint'][:12]} to {target_fp[:12]}"
        _record(results_dir, symbol, timeframe, {
            "time": _now(), "action": "rollback", "reason": reason, "current": current["config_fingerprint"],
            "config_fingerprint": target_fp, "previous": target["previous"], "champion": target["champion"],
            "run": target["run"], "trial": target["trial"],
        }, target["champion"])
        return Decision(True, reason, champion=target["champion"])

"""Proof against drift: re-run trials from their stored artifacts alone and compare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from genesis_core.backtest import Backtester, build_config
from genesis_core.errors import ConfigError, GenesisError
from genesis_core.fingerprint import differences
from genesis_core.records import RunFolder, SchemaError, backtest_record, other_bars

_COMPARED = {"fingerprints", "metrics", "trace", "window"}
# Not the file's fingerprint: bars appended after the window (`genesis data update`) change it and
# nothing a trial computed; the bars the trial read are the data window's, which is compared.
_FILE = "data_file"


@dataclass
class Equivalence:
    trial: int
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def check_trial(folder: RunFolder, number: int, backtester: Backtester) -> Equivalence:
    """Re-run one trial from its artifact; the effective config alone must reproduce everything."""
    result = Equivalence(number)
    try:
        stored = folder.read_trial(number)
    except SchemaError as exc:
        result.differences.append(f"unreadable artifact: {exc}")
        return result
    try:
        rerun = backtest_record(backtester.run(build_config(stored.effective_config.model_dump(mode="json"))), trades=False)
    except GenesisError as exc:
        result.differences.append(f"cannot re-run from the artifact: {exc}")
        return result
    was, now = stored.model_dump(mode="json", include=_COMPARED), rerun.model_dump(mode="json", include=_COMPARED)
    for compared in (was, now):
        compared["fingerprints"].pop(_FILE, None)
    other = other_bars(stored.effective_config.data.path, stored.fingerprints["data_window"], rerun.fingerprints["data_window"])
    if other is not None:  # not drift of the code: say so first
        result.differences.append(f"{other}: what differs below may all follow from that")
    for path, a, b in differences(was, now):
        result.differences.append(f"{path}: stored {a!r} != re-run {b!r}")
    return result


def check_equivalence(folder: RunFolder, trials: list[int] | None = None,
                      on_checked: Callable[[Equivalence, int], None] | None = None) -> list[Equivalence]:
    """Check the given trials (all evaluated trials when None) of a run; ``on_checked(result, total)``
    after each (a progress bar, and what a stop can say of the trials checked before it)."""
    numbers = folder.evaluated_numbers() if trials is None else trials
    missing = [n for n in numbers if not folder.has_trial(n)]
    if missing:
        raise ConfigError(f"no artifact for trial(s) {', '.join(map(str, missing))} in {folder.path / 'trials'} "
                          "(duplicates and failed trials have none)")
    backtester = Backtester()
    results = []
    for n in numbers:
        results.append(check_trial(folder, n, backtester))
        if on_checked is not None:
            on_checked(results[-1], len(numbers))
    return results

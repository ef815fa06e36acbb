"""Walk-forward folds: the explore -> validate workflow repeated on rolling windows.

``validation.walk_forward`` cuts [start, end] into ``folds + 1`` blocks of whole days; fold i
explores block i-1 and validates on block i (``genesis_core.workflow.walk_forward`` runs them).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from genesis_core.data import DAY, parse_ts
from genesis_core.errors import ConfigError
from genesis_core.validation._config import WalkForward


def fold_windows(wf: WalkForward) -> list[tuple[str, str]]:
    """The folds + 1 consecutive blocks (start, end), whole days, both ends inclusive."""
    first, last = parse_ts(wf.start), parse_ts(wf.end, end_of_day=True) + 1
    days = (last - first) // DAY
    if days < 2 * (wf.folds + 1):
        raise ConfigError(f"validation.walk_forward: {wf.start}..{wf.end} is too short for {wf.folds} folds")
    edges = [first + (days * k // (wf.folds + 1)) * DAY for k in range(wf.folds + 2)]
    return [(_day(a), _day(b - DAY)) for a, b in itertools.pairwise(edges)]


def _day(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d")

"""An example of a user's score function (``scoring.objective: tests.scoring_functions:return_over_drawdown``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genesis_core.scoring import Scoring


def return_over_drawdown(metrics: Mapping[str, float | int], trace: Mapping[str, Any], scoring: Scoring) -> float:
    """Total return per unit of drawdown, in percent: a Calmar-like score."""
    return 100.0 * metrics["total_return"] / max(metrics["max_drawdown"], 0.01)


def not_a_number(metrics: Mapping[str, float | int], trace: Mapping[str, Any], scoring: Scoring) -> float:
    return float("nan")


def per_odd_trade(metrics: Mapping[str, float | int], trace: Mapping[str, Any], scoring: Scoring) -> float:
    """A user's function with a bug for some metrics: it divides by zero when the trade count is even."""
    return 100.0 * metrics["total_return"] / (metrics["num_trades"] % 2)


def exits(metrics: Mapping[str, float | int], trace: Mapping[str, Any], scoring: Scoring) -> float:
    """A user's function that ends its script's way when it meets metrics it does not expect."""
    if metrics["num_trades"] % 2 == 0:
        raise SystemExit("an even trade count")
    return metrics["total_return"]

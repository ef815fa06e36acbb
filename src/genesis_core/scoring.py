"""Outcome classes and scores: what one backtest is worth to the optimizer.

Every trial gets exactly one outcome class. Degenerate classes get fixed penalties below any
score a VALID trial can reach (VALID scores are clipped to [VALID_MIN, VALID_MAX]), so a trial
that did not trade can never look better than one that lost money.

Two scores are computed for every trial and both are stored:
- phase 1, feasibility in [0, 1]: the mean of three parts, each 1 inside its target and falling
  off proportionally outside it: trade rate (trades per 1,000 bars) inside [rate_lo, rate_hi],
  max drawdown <= dd_target, average bars held >= min_hold_bars.
- phase 2, production: ``100*R - 60*DD + 10*log1p(clip(PF, 0, 5)) - 15*p_streak - 10*p_rate_hi``
  (R total return capped at 10, DD max drawdown, p_streak = clip(loss streak / streak_limit - 1, 0, 1),
  p_rate_hi = clip(rate / rate_hi - 1, 0, 1)); or ``classic``, the backtest's own ``score`` metric;
  or a user's ``package.module:function`` with the signature of ``ScoreFunction``.
  Each violated constraint (min trades, min profit factor, max drawdown) subtracts
  ``constraint_penalty``.
The objective value is the phase-1 score for the first ``phase1_trials`` trials, then phase 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from genesis_core.config import StrictModel
from genesis_core.errors import USER_FAULTS, ConfigError, GenesisError, raised
from genesis_core.metrics import max_drawdown, max_streak
from genesis_core.plugins import resolve

VALID_MIN = -1000.0
VALID_MAX = 1000.0


class Outcome(StrEnum):
    VALID = "VALID"
    INVALID_NUMERIC = "INVALID_NUMERIC"  # NaN or inf in any metric
    ZERO_TRADES_SIGNAL_DEAD = "ZERO_TRADES_SIGNAL_DEAD"  # no signal after warm-up
    ZERO_TRADES_BLOCKED = "ZERO_TRADES_BLOCKED"  # signals, but every one blocked (see trace.blocked)
    EXECUTION_BLOCKED = "EXECUTION_BLOCKED"  # candidates, but the engine filled no trade
    DUPLICATE = "DUPLICATE"  # a parameter set already evaluated: answered from the cache


class Penalties(StrictModel):
    """Fixed objective values of degenerate outcomes; each must lie below VALID_MIN."""

    invalid_numeric: float = Field(-5000.0, lt=VALID_MIN)
    zero_trades_signal_dead: float = Field(-1500.0, lt=VALID_MIN)
    zero_trades_blocked: float = Field(-2000.0, lt=VALID_MIN)
    execution_blocked: float = Field(-2200.0, lt=VALID_MIN)


class Constraints(StrictModel):
    min_trades: int = Field(10, ge=0)
    min_profit_factor: float = Field(0.0, ge=0.0)
    max_drawdown: float = Field(1.0, gt=0.0, le=1.0)


class Phase1(StrictModel):
    trials: int = Field(30, ge=0)
    rate_lo: float = Field(2.0, ge=0.0)  # trades per 1,000 bars
    rate_hi: float = Field(40.0, gt=0.0)
    dd_target: float = Field(0.25, gt=0.0, le=1.0)
    min_hold_bars: float = Field(2.0, ge=0.0)


class Pruning(StrictModel):
    """Early stopping of doomed trials, judged at checkpoints from the bars up to each one only."""

    enabled: bool = False
    checkpoints: int = Field(4, ge=1, le=100)  # equal slices of the window
    audit_bars: int = Field(0, ge=0)  # no trade closed by this decision bar -> pruned (0: off)
    max_drawdown: float = Field(1.0, gt=0.0, le=1.0)  # drawdown so far above this -> pruned
    max_loss_streak: int = Field(0, ge=0)  # losing trades in a row so far above this -> pruned (0: off)


@dataclass(frozen=True)
class Checkpoint:
    bar: int  # decision bars elapsed
    total_return: float
    max_drawdown: float
    trades: int
    max_loss_streak: int


def checkpoints(equity: Any, exit_bars: Any, pnls: Any, count: int) -> list[Checkpoint]:
    """Running results at ``count`` equal steps through the window, each from its prefix only.

    ``equity[i]`` is the equity after decision bar i-1 (``equity[0]`` the initial); ``exit_bars``
    are trades' exit bars counted from the window's first decision bar.
    """
    bars = len(equity) - 1
    out = []
    for k in range(1, count + 1):
        b = max(1, bars * k // count)
        eq = equity[: b + 1]
        closed = exit_bars < b
        out.append(Checkpoint(b, float(eq[-1] / eq[0] - 1.0), max_drawdown(eq), int(closed.sum()), max_streak(pnls[closed] < 0)))
    return out


def prune_reason(points: list[Checkpoint], signals: int, pruning: Pruning) -> tuple[int, str] | None:
    """The first checkpoint index at which a rule prunes, and why; None if none does."""
    if not pruning.enabled:
        return None
    if signals == 0:
        return 0, "no signals"
    for i, p in enumerate(points):
        if pruning.audit_bars and p.bar >= pruning.audit_bars and p.trades == 0:
            return i, f"no trade in the first {pruning.audit_bars} bars"
        if p.max_drawdown > pruning.max_drawdown:
            return i, f"drawdown {p.max_drawdown:.3f} above {pruning.max_drawdown} by bar {p.bar}"
        if pruning.max_loss_streak and p.max_loss_streak > pruning.max_loss_streak:
            return i, f"{p.max_loss_streak} losses in a row by bar {p.bar} (limit {pruning.max_loss_streak})"
    return None


class Scoring(StrictModel):
    objective: str = "production"  # a name of SCORE_FUNCTIONS or package.module:function
    phase1: Phase1 = Phase1()
    streak_limit: int = Field(8, ge=1)
    constraint_penalty: float = Field(100.0, ge=0.0)
    penalties: Penalties = Penalties()
    pruning: Pruning = Pruning()

    @field_validator("objective")
    @classmethod
    def _known(cls, name: str) -> str:
        score_function(name)
        return name


# (metrics, trace, scoring) -> the production score of a VALID backtest, before constraint
# penalties and clipping (both applied by ``score``). It must be a pure function of its arguments.
ScoreFunction = Callable[[Mapping[str, float | int], Mapping[str, Any], Scoring], float]


def _trade_rate(metrics: Mapping[str, float | int], trace: Mapping[str, Any]) -> float:
    """Trades per 1,000 bars of the window."""
    return 1000.0 * metrics["num_trades"] / max(trace["bars_in_window"], 1)


def profit_factor_term(profit_factor: float) -> float:
    """The production score's part for the profit factor: above 0 for any config that trades, a
    losing one too (+6.9 at break-even), which a run whose best trial lost money is told."""
    return 10.0 * math.log1p(min(max(profit_factor, 0.0), 5.0))


def production_score(metrics: Mapping[str, float | int], trace: Mapping[str, Any], scoring: Scoring) -> float:
    """Return, drawdown, profit factor, loss streak and over-trading in one number (module docstring)."""
    p_streak = min(max(metrics["max_loss_streak"] / scoring.streak_limit - 1.0, 0.0), 1.0)
    p_rate_hi = min(max(_trade_rate(metrics, trace) / scoring.phase1.rate_hi - 1.0, 0.0), 1.0)
    return (
        100.0 * min(metrics["total_return"], 10.0)
        - 60.0 * metrics["max_drawdown"]
        + profit_factor_term(metrics["profit_factor"])
        - 15.0 * p_streak
        - 10.0 * p_rate_hi
    )


def classic_score(metrics: Mapping[str, float | int], trace: Mapping[str, Any], scoring: Scoring) -> float:
    """The backtest's own composite metric, ``classic_score``."""
    return float(metrics["classic_score"])


SCORE_FUNCTIONS: dict[str, ScoreFunction] = {"production": production_score, "classic": classic_score}


def score_function(name: str) -> ScoreFunction:
    """A built-in score function by name, or a user's by ``package.module:function``."""
    fn = resolve(name, SCORE_FUNCTIONS, "score function", "genesis_core.score_functions")
    if not callable(fn):
        raise ConfigError(f"score function {name!r} is not callable")
    return fn


@dataclass(frozen=True)
class Score:
    """A backtest's outcome class, feasibility score (phase 1) and production score (phase 2)."""

    outcome: Outcome
    feasibility: float
    production: float
    constraints_failed: tuple[str, ...]


def classify(metrics: dict[str, float | int], trace: dict[str, Any]) -> Outcome:
    """The one outcome class of a backtest."""
    if any(isinstance(v, float) and not math.isfinite(v) for v in metrics.values()):
        return Outcome.INVALID_NUMERIC
    if metrics["num_trades"] > 0:
        return Outcome.VALID
    if trace["signals"] == 0:
        return Outcome.ZERO_TRADES_SIGNAL_DEAD
    if trace["candidates"] == 0:
        return Outcome.ZERO_TRADES_BLOCKED
    return Outcome.EXECUTION_BLOCKED


def _within(x: float, lo: float, hi: float) -> float:
    """1 inside [lo, hi], proportionally less outside."""
    if x < lo:
        return x / lo if lo > 0 else 1.0
    if x > hi:
        return hi / x
    return 1.0


# constraint (a Constraints field) -> the metric it bounds and the comparison that violates it
_CONSTRAINT_CHECKS = {"min_trades": ("num_trades", "<"), "min_profit_factor": ("profit_factor", "<"),
                      "max_drawdown": ("max_drawdown", ">")}


def violation(name: str, metrics: dict[str, float | int], constraints: Constraints) -> str | None:
    """``'value op limit'`` when constraint ``name`` is violated, None when it holds."""
    metric, op = _CONSTRAINT_CHECKS[name]
    value, limit = metrics[metric], getattr(constraints, name)
    broken = value < limit if op == "<" else value > limit
    return f"{value:.4g} {op} {limit:g}" if broken else None


def constraints_failed(metrics: dict[str, float | int], constraints: Constraints) -> tuple[str, ...]:
    """Names of the constraints a VALID backtest violates."""
    return tuple(name for name in _CONSTRAINT_CHECKS if violation(name, metrics, constraints))


def score(metrics: dict[str, float | int], trace: dict[str, Any], scoring: Scoring, constraints: Constraints) -> Score:
    """Outcome class plus both phase scores of one backtest."""
    outcome = classify(metrics, trace)
    if outcome is not Outcome.VALID:
        penalty = getattr(scoring.penalties, outcome.value.lower())
        return Score(outcome, penalty, penalty, ())
    p1 = scoring.phase1
    feasibility = (
        _within(_trade_rate(metrics, trace), p1.rate_lo, p1.rate_hi)
        + _within(metrics["max_drawdown"], 0.0, p1.dd_target)
        + _within(metrics["avg_bars_held"], p1.min_hold_bars, math.inf)
    ) / 3.0
    objective = score_function(scoring.objective)
    try:
        production = objective(metrics, trace, scoring)
    except GenesisError:
        raise
    except USER_FAULTS as exc:  # a user's function that errs for some metrics: that trial fails with it, the run goes on
        raise ConfigError(f"scoring.objective {scoring.objective!r} {raised(exc, objective)}") from exc
    if not isinstance(production, int | float) or not math.isfinite(production):
        raise ConfigError(f"scoring.objective {scoring.objective!r} returned {production!r}; a score must be a finite number")
    failed = constraints_failed(metrics, constraints)
    production -= scoring.constraint_penalty * len(failed)
    production = min(max(production, VALID_MIN), VALID_MAX)
    return Score(outcome, feasibility, production, failed)

"""The ``validation:`` section of a study config: out-of-sample windows, constraints, ranking,
and the walk-forward scheme."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from genesis_core.backtest import BEST_TRADE_SHARE
from genesis_core.config import StrictModel
from genesis_core.data import check_span, parse_ts
from genesis_core.scoring import Constraints


class WindowSpec(StrictModel):
    """An out-of-sample window; both ends inclusive, like the explore window."""

    start: str
    end: str

    @model_validator(mode="after")
    def _span(self) -> WindowSpec:
        check_span(self.start, self.end)
        return self

    def overlaps(self, start: str | None, end: str | None) -> bool:
        """Whether this window shares a day with ``start``..``end`` (both inclusive; None: open)."""
        return ((end is None or parse_ts(self.start) <= parse_ts(end, end_of_day=True))
                and (start is None or parse_ts(self.end, end_of_day=True) >= parse_ts(start)))


class ValidationConstraints(Constraints):
    """Usually stricter than the explore constraints; all must hold on every window."""

    include_scoring_failures: bool = False  # also re-run VALID explore trials that broke explore constraints
    # the most of a window's net profit its best trade may have made (above 1, the other trades lost)
    max_best_trade_share: float = Field(BEST_TRADE_SHARE, gt=0.0)


class WalkForward(WindowSpec):
    """Rolling scheme: [start, end] cut into folds + 1 equal blocks; fold i explores block i-1 and
    validates on block i, each fold a study of its own with the same space and scoring."""

    folds: int = Field(3, ge=1, le=20)


class OverfittingConfig(StrictModel):
    """PBO over the top ``configs`` distinct explore configs, their explore window cut in ``blocks``."""

    configs: int = Field(50, ge=2, le=500)
    blocks: int = Field(16, ge=2, le=20, multiple_of=2)


class ValidationConfig(StrictModel):
    enabled: bool = False
    windows: list[WindowSpec] = Field(default_factory=list)
    top_n: int = Field(5, ge=1)
    constraints: ValidationConstraints = ValidationConstraints()
    # worst window, mean of windows, or robust = (1 - robust_weight) * mean + robust_weight * worst
    ranking: Literal["worst", "mean", "robust"] = "worst"
    robust_weight: float = Field(0.5, ge=0.0, le=1.0)
    walk_forward: WalkForward | None = None
    overfitting: OverfittingConfig = OverfittingConfig()
    # a candidate whose neighbours (one step in each parameter) keep less than this share of its
    # explore score, at the median, is flagged as a peak (reported; not a gate)
    min_plateau: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _windows(self) -> ValidationConfig:
        if self.enabled and not self.windows:
            raise ValueError("windows: give at least one out-of-sample window when validation is enabled")
        return self

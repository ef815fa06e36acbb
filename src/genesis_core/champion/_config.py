"""The ``promotion:`` section of a study config."""

from __future__ import annotations

from pydantic import Field

from genesis_core.config import StrictModel


class PromotionConfig(StrictModel):
    """Off unless enabled: a smoke run must never replace the champion. Each limit is a gate; null
    switches it off (recorded as such in every decision)."""

    enabled: bool = False
    min_improvement: float = Field(0.0, ge=0.0)  # validation score units over the current champion
    # floor: the compounded return over the validation windows must exceed this (0: better than not trading)
    min_validation_return: float | None = 0.0
    beat_buy_and_hold: bool = False  # and exceed buying and holding over the same windows
    min_dsr: float | None = Field(0.95, ge=0.0, le=1.0)  # deflated Sharpe ratio (effective N) of the candidate promoted
    max_pbo: float | None = Field(0.5, ge=0.0, le=1.0)  # probability of backtest overfitting of the search

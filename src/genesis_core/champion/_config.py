"""The ``promotion:`` section of a study config."""

from __future__ import annotations

from pydantic import Field

from genesis_core.config import StrictModel


class PromotionConfig(StrictModel):
    """Off unless enabled: a smoke run must never replace the champion."""

    enabled: bool = False
    min_improvement: float = Field(0.0, ge=0.0)  # validation score units over the current champion

"""Champions: gated promotion of validated candidates, rollback, and the promotion settings."""

from genesis_core.champion._config import PromotionConfig
from genesis_core.champion._promote import Decision, promote, rollback, store_for

__all__ = ["Decision", "PromotionConfig", "promote", "rollback", "store_for"]

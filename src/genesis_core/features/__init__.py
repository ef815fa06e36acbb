"""Causal features, cached per candle fingerprint and spec; ``register_feature`` adds one."""

from genesis_core.features._store import FeatureStore, Span, feature_names, parse_spec, register_feature, warmup_bars

__all__ = ["FeatureStore", "Span", "feature_names", "parse_spec", "register_feature", "warmup_bars"]

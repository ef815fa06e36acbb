"""Causal features, cached per candle fingerprint and spec."""

from genesis_core.features._store import FeatureStore, feature_names, parse_spec, warmup_bars

__all__ = ["FeatureStore", "feature_names", "parse_spec", "warmup_bars"]

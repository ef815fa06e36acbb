"""Candles: load, validate, fingerprint, window with warm-up, resample without lookahead."""

from genesis_core.data._candles import (
    Candles,
    GapReport,
    Window,
    check_span,
    format_timeframe,
    format_ts,
    parse_timeframe,
    parse_ts,
)
from genesis_core.data._load import load_candles
from genesis_core.data._resample import resample

__all__ = [
    "Candles",
    "GapReport",
    "Window",
    "check_span",
    "format_timeframe",
    "format_ts",
    "load_candles",
    "parse_timeframe",
    "parse_ts",
    "resample",
]

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
    same_symbol,
)
from genesis_core.data._load import MARKET_KEY, file_market, load_candles
from genesis_core.data._resample import resample

__all__ = [
    "MARKET_KEY",
    "Candles",
    "GapReport",
    "Window",
    "check_span",
    "format_timeframe",
    "file_market",
    "format_ts",
    "load_candles",
    "parse_timeframe",
    "parse_ts",
    "resample",
    "same_symbol",
]

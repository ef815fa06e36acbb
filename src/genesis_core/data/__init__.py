"""Candles: load, validate, fingerprint, window with warm-up, resample without lookahead.

``genesis_core.data.exchange`` downloads them (imported on use: it loads ccxt)."""

from genesis_core.data._candles import (
    DAY,
    Candles,
    GapReport,
    SpikeReport,
    Timeframe,
    Window,
    check_span,
    describe_gaps,
    format_timeframe,
    format_times,
    format_ts,
    parse_timeframe,
    parse_ts,
    same_symbol,
)
from genesis_core.data._load import (
    MARKET_KEY,
    CandleFile,
    cache_candles,
    cached_candles,
    candle_files,
    file_market,
    load_candles,
    market_sidecar,
)
from genesis_core.data._resample import resample

__all__ = [
    "DAY",
    "MARKET_KEY",
    "CandleFile",
    "cache_candles",
    "cached_candles",
    "candle_files",
    "Candles",
    "GapReport",
    "SpikeReport",
    "Timeframe",
    "Window",
    "check_span",
    "describe_gaps",
    "format_timeframe",
    "file_market",
    "format_times",
    "format_ts",
    "load_candles",
    "market_sidecar",
    "parse_timeframe",
    "parse_ts",
    "resample",
    "same_symbol",
]

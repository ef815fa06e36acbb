"""Genesis-Core: find and promote strategy parameters over OHLCV candles without fooling yourself."""

__version__ = "0.1.0"

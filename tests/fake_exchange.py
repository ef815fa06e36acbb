"""A local HTTP server answering in Bitfinex's (v2), Binance's (v3), OKX's (v5) and Bitstamp's (v2)
own REST formats, serving candles taken from the bundled real files, so tests run ccxt's real code
path with its API URLs pointed here (`genesis data download --api-url`). Like the exchanges it caps
a page at a number of rows whatever the client asks, answers a span of time as each does (Bitfinex
and Binance its oldest bars first, OKX and Bitstamp its newest; asked for no start, each its newest),
and it can be told to fail requests (429, 500) or to answer slowly."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from genesis_core.data import Candles


@dataclass
class Exchange:
    """What the server holds and how it behaves; the tests change it between requests."""

    candles: Candles
    page_rows: int = 500  # the server's own cap per page (Bitfinex allows 10,000, Binance 1,000)
    delay: float = 0.0  # seconds before each candle page
    failures: list[int] = field(default_factory=list)  # HTTP statuses for the next candle requests, in order
    requests: list[str] = field(default_factory=list)  # every path asked, with its query

    def page(self, start_ms: int | None, end_ms: int | None, limit: int, newest: bool = False) -> np.ndarray:
        """Indices of the bars from ``start_ms`` to ``end_ms`` (open times, inclusive), ascending, capped:
        the first ones, or the last when ``newest`` or no start is given."""
        ts = self.candles.timestamps * 1000
        first = 0 if start_ms is None else int(np.searchsorted(ts, start_ms, side="left"))
        stop = len(ts) if end_ms is None else int(np.searchsorted(ts, end_ms, side="right"))
        cap = min(limit, self.page_rows)
        if newest or start_ms is None:
            return np.arange(max(first, stop - cap), stop)
        return np.arange(first, min(stop, first + cap))


def _bitfinex(ex: Exchange, path: str, query: dict[str, str]) -> object:
    if path.startswith("/v2/conf/"):
        labels = path.removeprefix("/v2/conf/").split(",")
        pairs = {"pub:info:pair": [["BTCUSD", [None, None, None, "0.00004", "2000.0", None, None, None, 0.2, 0.1]],
                                   ["ETHUSD", [None, None, None, "0.001", "5000.0", None, None, None, 0.2, 0.1]],
                                   ["BTCEUR", [None, None, None, "0.00004", "2000.0", None, None, None, 0.2, 0.1]]],
                 "pub:list:pair:margin": ["BTCUSD", "ETHUSD"]}
        return [pairs.get(label, []) for label in labels]
    if path.startswith("/v2/candles/trade:"):
        key = path.removeprefix("/v2/candles/trade:").removesuffix("/hist")
        timeframe, symbol = key.split(":", 1)
        if symbol != "tBTCUSD" or timeframe != "1h":
            return []
        rows = ex.page(_int(query.get("start")), _int(query.get("end")), int(query.get("limit", 100)), query.get("sort") != "1")
        c = ex.candles  # Bitfinex's order: time, open, close, high, low, volume
        out = [[int(c.timestamps[i]) * 1000, float(c.open[i]), float(c.close[i]), float(c.high[i]), float(c.low[i]),
                float(c.volume[i])] for i in rows]
        return out if query.get("sort") == "1" else out[::-1]
    raise KeyError(path)


def _binance(ex: Exchange, path: str, query: dict[str, str]) -> object:
    if path == "/api/v3/exchangeInfo":
        return {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [], "exchangeFilters": [],
                "symbols": [_binance_symbol("BTCUSDT", "BTC", "USDT"), _binance_symbol("ETHUSDT", "ETH", "USDT")]}
    if path == "/api/v3/klines":
        if query.get("symbol") != "BTCUSDT" or query.get("interval") != "1h":
            return {"code": -1121, "msg": "Invalid symbol."}
        rows = ex.page(_int(query.get("startTime")), _int(query.get("endTime")), int(query.get("limit", 500)))
        c = ex.candles
        return [[int(c.timestamps[i]) * 1000, repr(float(c.open[i])), repr(float(c.high[i])), repr(float(c.low[i])),
                 repr(float(c.close[i])), repr(float(c.volume[i])), int(c.timestamps[i]) * 1000 + 3_599_999, "0", 0, "0", "0", "0"]
                for i in rows]
    raise KeyError(path)


def _okx(ex: Exchange, path: str, query: dict[str, str]) -> object:
    if path == "/api/v5/public/instruments":
        return {"code": "0", "msg": "", "data": [_okx_instrument("BTC", "USDT"), _okx_instrument("ETH", "USDT")]}
    if path in ("/api/v5/market/candles", "/api/v5/market/history-candles"):
        if query.get("instId") != "BTC-USDT" or query.get("bar") != "1H":
            return {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
        # records newer than ``before`` and older than ``after`` (both exclusive), the newest first
        before, after = _int(query.get("before")), _int(query.get("after"))
        rows = ex.page(None if before is None else before + 1, None if after is None else after - 1,
                       min(int(query.get("limit", 100)), 300), newest=True)
        c = ex.candles
        return {"code": "0", "msg": "", "data": [
            [str(int(c.timestamps[i]) * 1000), repr(float(c.open[i])), repr(float(c.high[i])), repr(float(c.low[i])),
             repr(float(c.close[i])), repr(float(c.volume[i])), "0", "0", "1"] for i in rows[::-1]]}
    raise KeyError(path)


def _okx_instrument(base: str, quote: str) -> dict:
    return {"instType": "SPOT", "instId": f"{base}-{quote}", "baseCcy": base, "quoteCcy": quote, "settleCcy": "", "ctVal": "",
            "ctMult": "", "ctValCcy": "", "optType": "", "stk": "", "listTime": "1548133413000", "expTime": "", "lever": "10",
            "tickSz": "0.1", "lotSz": "0.00000001", "minSz": "0.00001", "ctType": "", "alias": "", "state": "live",
            "maxLmtSz": "9999999999", "maxMktSz": "1000000", "uly": "", "instFamily": ""}


def _bitstamp(ex: Exchange, path: str, query: dict[str, str]) -> object:
    if path == "/api/v2/markets/":
        return [{"name": f"{base}/USD", "market_symbol": f"{base.lower()}usd", "base_currency": base, "base_decimals": 8,
                 "counter_currency": "USD", "counter_decimals": 0, "minimum_order_value": "10", "trading": "Enabled",
                 "instant_order_counter_decimals": 2, "instant_and_market_orders": "Enabled",
                 "description": f"{base} / U.S. dollar",
                 "market_type": "SPOT"} for base in ("BTC", "ETH")]
    if path.startswith("/api/v2/ohlc/"):
        if path != "/api/v2/ohlc/btcusd/" or query.get("step") != "3600":
            return {"errors": [{"message": "Invalid pair or step", "code": "API0005"}]}
        # "if both start and end are posted, end is used": the newest ``limit`` bars up to it
        end = _int(query.get("end"))
        rows = ex.page(None, None if end is None else end * 1000, min(int(query.get("limit", 1000)), 1000), newest=True)
        c = ex.candles
        return {"data": {"pair": "BTC/USD", "ohlc": [
            {"timestamp": str(int(c.timestamps[i])), "open": repr(float(c.open[i])), "high": repr(float(c.high[i])),
             "low": repr(float(c.low[i])), "close": repr(float(c.close[i])), "volume": repr(float(c.volume[i]))} for i in rows]}}
    raise KeyError(path)


def _binance_symbol(symbol: str, base: str, quote: str) -> dict:
    return {"symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
            "quotePrecision": 8, "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True, "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
                        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00", "stepSize": "0.00001"}]}


HANDLERS = {"bitfinex": _bitfinex, "binance": _binance, "okx": _okx, "bitstamp": _bitstamp}


def _failure(name: str, status: int) -> object:
    """An error body as the exchange words it."""
    if name == "bitfinex":
        return ["error", 11010, "ratelimit: error"] if status == 429 else ["error", 10000, "unknown error"]
    return ({"code": -1003, "msg": "Too much request weight used; current limit is 6000 request weight per 1 MINUTE."}
            if status == 429 else {"code": -1000, "msg": "An unknown error occurred while processing the request."})


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _handler(exchanges: dict[str, Exchange]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            name, _, path = url.path.removeprefix("/").partition("/")  # /<exchange>/<its own path>
            ex = exchanges.get(name)
            if ex is None:
                return self._send(404, {"error": f"no exchange {name}"})
            ex.requests.append(f"/{path}?{url.query}")
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            candles = any(k in path for k in ("candles", "klines", "ohlc/"))
            if candles and ex.failures:
                status = ex.failures.pop(0)
                return self._send(status, _failure(name, status))
            if candles and ex.delay:
                time.sleep(ex.delay)
            try:
                body = HANDLERS[name](ex, "/" + path, query)
            except KeyError:
                return self._send(404, {"error": f"unknown path /{path}"})
            refused = isinstance(body, dict) and (body.get("code") not in (None, "0") or "errors" in body)
            self._send(400 if refused else 200, body)

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
            pass

    return Handler


@contextmanager
def serving(**exchanges: Exchange) -> Iterator[str]:
    """Serve ``exchanges`` (bitfinex=..., binance=...) on a free local port; yields the root URL, each
    exchange under /<name> (what `--api-url http://127.0.0.1:PORT/<name>` points ccxt at)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(exchanges))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

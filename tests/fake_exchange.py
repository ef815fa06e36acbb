"""A local HTTP server answering in Bitfinex's (v2) and Binance's (v3) own REST formats, serving
candles taken from the bundled real files, so tests run ccxt's real code path with its API URLs
pointed here (`genesis data download --api-url`). Like the exchanges it caps a page at a number of
rows whatever the client asks, and it can be told to fail requests (429, 500) or to answer slowly."""

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

    def page(self, start_ms: int | None, end_ms: int | None, limit: int) -> np.ndarray:
        """Indices of the bars from ``start_ms`` to ``end_ms`` (open times, inclusive), ascending, capped."""
        ts = self.candles.timestamps * 1000
        first = 0 if start_ms is None else int(np.searchsorted(ts, start_ms, side="left"))
        stop = len(ts) if end_ms is None else int(np.searchsorted(ts, end_ms, side="right"))
        return np.arange(first, min(stop, first + min(limit, self.page_rows)))


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
        rows = ex.page(_int(query.get("start")), _int(query.get("end")), int(query.get("limit", 100)))
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


def _binance_symbol(symbol: str, base: str, quote: str) -> dict:
    return {"symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
            "quotePrecision": 8, "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True, "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
                        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00", "stepSize": "0.00001"}]}


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
            candles = "candles/" in path or "klines" in path
            if candles and ex.failures:
                status = ex.failures.pop(0)
                return self._send(status, _failure(name, status))
            if candles and ex.delay:
                time.sleep(ex.delay)
            try:
                body = (_bitfinex if name == "bitfinex" else _binance)(ex, "/" + path, query)
            except KeyError:
                return self._send(404, {"error": f"unknown path /{path}"})
            self._send(400 if isinstance(body, dict) and "code" in body else 200, body)

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

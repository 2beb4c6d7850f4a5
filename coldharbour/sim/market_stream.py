"""The fake broker's market-data WebSocket: Alpaca's stock (``/v2/iex``, ``/v2/sip``) and crypto
(``/v1beta3/crypto/us``) trade streams, driven by the prices of ``POST /sim/prices``.

The protocol is Alpaca's (docs.alpaca.markets "WebSocket Stream" and "Real-time Stock Data";
alpaca-py ``alpaca/data/live/websocket.py``):

- on connect the server sends ``[{"T":"success","msg":"connected"}]``;
- ``{"action":"auth","key":…,"secret":…}`` (the key pair of any account; or the
  ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` upgrade headers) is answered with
  ``[{"T":"success","msg":"authenticated"}]``; a wrong pair with
  ``[{"T":"error","code":402,"msg":"auth failed"}]`` and a close; a second live connection of
  the same key on the same path with ``406 connection limit exceeded`` and a close;
- ``{"action":"subscribe"|"unsubscribe","trades":[…],…}`` changes the connection's channels and
  is acknowledged with the whole subscription (``{"T":"subscription","trades":[…],…}``); more
  symbols than the symbol limit gives ``405 symbol limit exceeded`` and no change;
- every frame the server sends is a list of messages; a trade is
  ``{"T":"t","S","i","x","p","s","c","t","z"}`` (crypto: ``{"T":"t","S","i","p","s","t","tks"}``).

Codec: a client that upgrades with ``Content-Type: application/msgpack`` (alpaca-py always does)
gets BINARY msgpack frames, with ``t`` as a msgpack timestamp (nanoseconds); every other client
gets TEXT JSON frames with ``t`` in RFC 3339 with nanoseconds. Client frames may be either.

``publish_prices`` turns each changed price into one trade for every subscriber of its symbol;
``POST /sim/drop-data-stream`` closes every data connection; ``GET /sim/data-stream`` shows the
connections and their subscriptions; ``POST /sim/data-stream`` ``{"symbol_limit": 30,
"connection_limit": 1}`` changes the limits.

The data host's REST snapshot of several symbols, as alpaca-py's
``StockHistoricalDataClient.get_stock_snapshot`` asks for it, is served here too:
``GET /v2/stocks/snapshots?symbols=AAPL,MSFT[&feed=iex]`` answers
``{"AAPL": {"latestTrade", "latestQuote", "minuteBar", "dailyBar", "prevDailyBar"}, …}`` (a symbol
never priced is left out) and ``GET /v1beta3/crypto/us/snapshots?symbols=BTC/USD`` answers
``{"snapshots": {…}}``; ``latestTrade`` is the last print of ``publish_prices``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import msgspec
from aiohttp import WSMsgType, web

from coldharbour.retry import finish_or_cancel
from coldharbour.sim.http import context_of, read_json
from coldharbour.sim.wire import CODE_INVALID_FIELD, unprocessable

log = logging.getLogger(__name__)

STOCK_PATHS: Final = ("/v2/iex", "/v2/sip")
CRYPTO_PATH: Final = "/v1beta3/crypto/us"
STREAM_PATHS: Final = frozenset({*STOCK_PATHS, CRYPTO_PATH})
# The channels a subscription message may name, per stream (the ack lists every one of them).
STOCK_CHANNELS: Final = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
CRYPTO_CHANNELS: Final = ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")
# The free plan's cap on trades + quotes symbols (docs: "limited to 30 channels at a time").
DEFAULT_SYMBOL_LIMIT: Final = 30
DEFAULT_CONNECTION_LIMIT: Final = 1
DROP_CLOSE_CODE: Final = 1001
CLOSE_TIMEOUT_S: Final = 1.0
MSGPACK_TYPE: Final = "application/msgpack"
# Exchange and tape codes of the trades the fake prints: IEX is "V"; Nasdaq's tape is "C".
EXCHANGE: Final = {"/v2/iex": "V", "/v2/sip": "Q"}
TAPE: Final = "C"
REGULAR_SALE: Final = "@"

ERRORS: Final = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
}

_MSGPACK_ENCODER: Final = msgspec.msgpack.Encoder()
_MSGPACK_DECODER: Final = msgspec.msgpack.Decoder()


def rfc3339_ns(ts_ns: int) -> str:
    """Return ``ts_ns`` (UTC ns) as RFC 3339 with nine fraction digits, as Alpaca prints it."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def msgpack_timestamp(ts_ns: int) -> msgspec.msgpack.Ext:
    """Return ``ts_ns`` as a msgpack timestamp (extension -1, 96-bit form: nanoseconds exact)."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return msgspec.msgpack.Ext(-1, struct.pack(">Iq", nanos, seconds))


@dataclass(eq=False)
class _Connection:
    socket: web.WebSocketResponse
    path: str
    is_msgpack: bool
    key_id: str | None = None
    channels: dict[str, set[str]] = field(default_factory=dict)
    queue: asyncio.Queue[bytes | str | None] = field(default_factory=asyncio.Queue)

    @property
    def is_crypto(self) -> bool:
        return self.path == CRYPTO_PATH

    def send(self, messages: list[dict[str, object]]) -> None:
        if self.is_msgpack:
            self.queue.put_nowait(_MSGPACK_ENCODER.encode(messages))
        else:
            self.queue.put_nowait(json.dumps(messages, separators=(",", ":")))

    def error(self, code: int) -> None:
        self.send([{"T": "error", "code": code, "msg": ERRORS[code]}])

    def wants(self, symbol: str) -> bool:
        trades = self.channels.get("trades", set())
        return symbol in trades or "*" in trades

    async def write_loop(self) -> None:
        while (frame := await self.queue.get()) is not None:
            if self.socket.closed:
                return
            if isinstance(frame, bytes):
                await self.socket.send_bytes(frame)
            else:
                await self.socket.send_str(frame)
        await self.socket.close()


class MarketDataHub:
    """Every market-data connection; turns price changes into trade messages for subscribers."""

    def __init__(self) -> None:
        self._connections: set[_Connection] = set()
        self._last_price: dict[str, Decimal] = {}
        self._next_trade_id = 1
        self.symbol_limit = DEFAULT_SYMBOL_LIMIT
        self.connection_limit = DEFAULT_CONNECTION_LIMIT
        self.connections_total = 0
        self.trades_sent = 0
        # symbol -> (price, UTC ns, trade id) of its last print, for the REST snapshots
        self.last_trades: dict[str, tuple[Decimal, int, int]] = {}

    def state(self) -> dict[str, object]:
        """Return the connections and their subscriptions (for ``GET /sim/data-stream``)."""
        return {
            "connections": [
                {
                    "path": c.path,
                    "codec": "msgpack" if c.is_msgpack else "json",
                    "authenticated": c.key_id is not None,
                    "trades": sorted(c.channels.get("trades", ())),
                }
                for c in self._connections
            ],
            "connections_total": self.connections_total,
            "trades_sent": self.trades_sent,
            "symbol_limit": self.symbol_limit,
            "connection_limit": self.connection_limit,
        }

    def publish_prices(self, prices: Mapping[str, Decimal], ts_ns: int) -> int:
        """Send one trade per symbol whose price changed to its subscribers; return how many went out."""
        changed = {s: p for s, p in prices.items() if self._last_price.get(s) != p}
        self._last_price.update(changed)
        for symbol, price in changed.items():
            self.last_trades[symbol] = (price, ts_ns, self._next_trade_id)
            self._next_trade_id += 1
        sent = 0
        for connection in list(self._connections):
            if connection.key_id is None:
                continue
            messages = [
                self._trade(connection, symbol, price, ts_ns)
                for symbol, price in changed.items()
                if ("/" in symbol) == connection.is_crypto and connection.wants(symbol)
            ]
            if messages:
                connection.send(messages)
                sent += len(messages)
        self.trades_sent += sent
        return sent

    def _trade(self, connection: _Connection, symbol: str, price: Decimal, ts_ns: int) -> dict[str, object]:
        trade_id = self._next_trade_id
        self._next_trade_id += 1
        stamp: object = msgpack_timestamp(ts_ns) if connection.is_msgpack else rfc3339_ns(ts_ns)
        if connection.is_crypto:
            return {"T": "t", "S": symbol, "p": float(price), "s": 0.5, "t": stamp, "i": trade_id, "tks": "B"}
        return {
            "T": "t", "S": symbol, "i": trade_id, "x": EXCHANGE[connection.path], "p": float(price), "s": 100,
            "c": [REGULAR_SALE], "t": stamp, "z": TAPE,
        }  # fmt: skip

    async def drop_all(self) -> int:
        """Close every connection with "going away" (clients reconnect)."""
        connections = list(self._connections)
        for connection in connections:
            self._connections.discard(connection)
            await connection.socket.close(code=DROP_CLOSE_CODE, message=b"dropped by simulator")
        return len(connections)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one market-data connection from upgrade to close."""
        socket = web.WebSocketResponse(autoping=True, timeout=CLOSE_TIMEOUT_S, max_msg_size=1 << 20)
        await socket.prepare(request)
        is_msgpack = request.headers.get("Content-Type", "").split(";")[0].strip().lower() == MSGPACK_TYPE
        connection = _Connection(socket, request.path, is_msgpack)
        self._connections.add(connection)
        self.connections_total += 1
        writer = asyncio.create_task(connection.write_loop(), name="sim-data-stream-writer")
        try:
            connection.send([{"T": "success", "msg": "connected"}])
            headers = request.headers
            is_open = True
            if headers.get("APCA-API-KEY-ID"):
                is_open = self._authenticate(
                    request, connection, headers["APCA-API-KEY-ID"], headers.get("APCA-API-SECRET-KEY", "")
                )
            if is_open:
                async for message in socket:
                    if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                        continue
                    if not self._on_message(request, connection, message.data):
                        break
        finally:
            self._connections.discard(connection)
            connection.queue.put_nowait(None)
            await finish_or_cancel(writer, CLOSE_TIMEOUT_S)
        return socket

    def _on_message(self, request: web.Request, connection: _Connection, raw: str | bytes) -> bool:
        """Handle one client frame; return False when the connection must end."""
        try:
            message = _MSGPACK_DECODER.decode(raw) if isinstance(raw, bytes) else json.loads(raw)
        except (ValueError, msgspec.DecodeError):
            connection.error(400)
            return True
        if not isinstance(message, dict):
            connection.error(400)
            return True
        action = message.get("action")
        if action == "auth":
            if connection.key_id is not None:
                connection.error(403)
                return True
            return self._authenticate(request, connection, str(message.get("key", "")), str(message.get("secret", "")))
        if action in ("subscribe", "unsubscribe"):
            if connection.key_id is None:
                connection.error(401)
                return True
            self._subscribe(connection, message, is_add=action == "subscribe")
            return True
        connection.error(400)
        return True

    def _authenticate(self, request: web.Request, connection: _Connection, key_id: str, secret: str) -> bool:
        account = context_of(request).engine.account_for_key(key_id)
        if account is None or account.secret_key != secret:
            connection.error(402)
            connection.queue.put_nowait(None)
            return False
        same = [c for c in self._connections if c.key_id == key_id and c.path == connection.path]
        if len(same) >= self.connection_limit:
            connection.error(406)
            connection.queue.put_nowait(None)
            return False
        connection.key_id = key_id
        connection.send([{"T": "success", "msg": "authenticated"}])
        return True

    def _subscribe(self, connection: _Connection, message: Mapping[str, object], *, is_add: bool) -> None:
        names = CRYPTO_CHANNELS if connection.is_crypto else STOCK_CHANNELS
        wanted: dict[str, set[str]] = {name: set(connection.channels.get(name, ())) for name in names}
        for name in names:
            symbols = message.get(name)
            if symbols is None:
                continue
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                connection.error(400)
                return
            cleaned = {s.strip().upper() if s != "*" else s for s in symbols if s.strip()}
            wanted[name] = wanted[name] | cleaned if is_add else wanted[name] - cleaned
        limited = (wanted["trades"] | wanted["quotes"]) - {"*"}
        if is_add and len(limited) > self.symbol_limit:
            connection.error(405)
            return
        connection.channels = wanted
        ack: dict[str, object] = {"T": "subscription"}
        ack.update({name: sorted(wanted[name]) for name in names})
        if not connection.is_crypto:
            ack["corrections"] = sorted(wanted["trades"])
            ack["cancelErrors"] = sorted(wanted["trades"])
        connection.send([ack])


MARKET_DATA: Final = web.AppKey("market_data", MarketDataHub)


def snapshot_json(symbol: str, price: Decimal, ts_ns: int, trade_id: int) -> dict[str, object]:
    """Return one symbol's snapshot in the data API's shape (every part from its last print)."""
    stamp = rfc3339_ns(ts_ns)
    value = float(price)
    bar = {"t": stamp, "o": value, "h": value, "l": value, "c": value, "v": 100, "n": 1, "vw": value}
    if "/" in symbol:
        trade: dict[str, object] = {"t": stamp, "p": value, "s": 0.5, "i": trade_id, "tks": "B"}
        quote: dict[str, object] = {"t": stamp, "bp": value, "bs": 1, "ap": value, "as": 1}
    else:
        exchange = EXCHANGE["/v2/iex"]
        trade = {"t": stamp, "x": exchange, "p": value, "s": 100, "c": [REGULAR_SALE], "i": trade_id, "z": TAPE}
        quote = {"t": stamp, "bx": exchange, "bp": value, "bs": 1, "ax": exchange, "ap": value, "as": 1,
                 "c": ["R"], "z": TAPE}  # fmt: skip
    return {"latestTrade": trade, "latestQuote": quote, "minuteBar": bar, "dailyBar": bar, "prevDailyBar": bar}


def _symbols_param(request: web.Request) -> list[str]:
    symbols = [s.strip().upper() for s in request.query.get("symbols", "").split(",") if s.strip()]
    if not symbols:
        raise unprocessable("symbols is required", CODE_INVALID_FIELD)
    return symbols


async def get_stock_snapshots(request: web.Request) -> web.Response:
    """``GET /v2/stocks/snapshots?symbols=…``: ``{symbol: snapshot}`` of the symbols with a print."""
    trades = request.app[MARKET_DATA].last_trades
    symbols = [s for s in _symbols_param(request) if s in trades and "/" not in s]
    return web.json_response({s: snapshot_json(s, *trades[s]) for s in symbols})


async def get_crypto_snapshots(request: web.Request) -> web.Response:
    """``GET /v1beta3/crypto/us/snapshots?symbols=…``: ``{"snapshots": {symbol: snapshot}}``."""
    trades = request.app[MARKET_DATA].last_trades
    symbols = [s for s in _symbols_param(request) if s in trades]
    return web.json_response({"snapshots": {s: snapshot_json(s, *trades[s]) for s in symbols}})


def market_data_of(app: web.Application) -> MarketDataHub | None:
    """Return the app's market-data hub (None when the app serves no market data)."""
    return app.get(MARKET_DATA)


async def post_drop_data_stream(request: web.Request) -> web.Response:
    """Close every market-data connection."""
    return web.json_response({"dropped": await request.app[MARKET_DATA].drop_all()})


async def get_data_stream(request: web.Request) -> web.Response:
    """Show the market-data connections, their trade subscriptions and the limits."""
    return web.json_response(request.app[MARKET_DATA].state())


async def post_data_stream(request: web.Request) -> web.Response:
    """Change the symbol and connection limits."""
    hub = request.app[MARKET_DATA]
    body = await read_json(request)
    if not isinstance(body, Mapping) or set(body) - {"symbol_limit", "connection_limit"}:
        raise unprocessable('expected {"symbol_limit": N, "connection_limit": N}', CODE_INVALID_FIELD)
    for name in ("symbol_limit", "connection_limit"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise unprocessable(f"{name} must be a positive integer", CODE_INVALID_FIELD)
        setattr(hub, name, value)
    return web.json_response(hub.state())


def add_market_data_routes(app: web.Application) -> None:
    """Serve the market-data streams and their ``/sim`` controls on ``app``."""
    hub = MarketDataHub()
    app[MARKET_DATA] = hub
    for path in sorted(STREAM_PATHS):
        app.router.add_get(path, hub.handle)
    app.router.add_get("/v2/stocks/snapshots", get_stock_snapshots)
    app.router.add_get(CRYPTO_PATH + "/snapshots", get_crypto_snapshots)
    app.router.add_post("/sim/drop-data-stream", post_drop_data_stream)
    app.router.add_get("/sim/data-stream", get_data_stream)
    app.router.add_post("/sim/data-stream", post_data_stream)

    async def close_streams(_: web.Application) -> None:
        await hub.drop_all()

    app.on_shutdown.append(close_streams)

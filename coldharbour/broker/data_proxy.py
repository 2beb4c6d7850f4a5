"""Share the key's one market-data connection: a local server speaking Alpaca's stream protocol.

With ``PRICE_SOURCE=alpaca-stream`` and ``CHMGR_DATA_PROXY_BIND=127.0.0.1:8766``, ``prices``
serves Alpaca's stock market-data WebSocket protocol (docs.alpaca.markets "WebSocket Stream";
alpaca-py ``alpaca/data/live/websocket.py``) so the trader's bot points its data URL at us
(``StockDataStream(key, secret, url_override="ws://127.0.0.1:8766")``) and both live on the
key's single upstream connection (docs/broker-budget.md):

- on connect ``[{"T":"success","msg":"connected"}]``; ``{"action":"auth","key","secret"}`` with
  the key pair ``prices`` uses (anything else: ``402 auth failed`` and a close) answers
  ``authenticated``;
- ``subscribe``/``unsubscribe`` of ``trades``, ``quotes``, ``bars``, ``updatedBars``,
  ``dailyBars`` change the client's channels and are acknowledged with all of them
  (``{"T":"subscription",…}``); the upstream subscription is the union of every client's and
  ours (``MarketDataStream.share``);
- every upstream message of a channel (``t``, ``q``, ``b``, ``u``, ``d``) goes, unchanged, to
  exactly the clients subscribed to its symbol (or ``*``), msgpack for a client that upgraded
  with ``Content-Type: application/msgpack`` (alpaca-py does), JSON otherwise;
- a client that does not keep up (``CLIENT_QUEUE`` frames behind) is closed and counted
  (``data_proxy_slow_clients``), never allowed to hold up our prices.

Stock stream only; crypto clients keep their own connection (crypto has no per-key limit of one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec
import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

from coldharbour.broker.market_stream import MarketDataStream
from coldharbour.config import Secret
from coldharbour.retry import finish_or_cancel

log = logging.getLogger(__name__)

CHANNELS: Final = {"trades": "t", "quotes": "q", "bars": "b", "updatedBars": "u", "dailyBars": "d"}
KIND_CHANNEL: Final = {kind: name for name, kind in CHANNELS.items()}
CLIENT_QUEUE: Final = 1000
AUTH_TIMEOUT_S: Final = 10.0
MSGPACK_TYPE: Final = "application/msgpack"
ERRORS: Final = {400: "invalid syntax", 401: "not authenticated", 402: "auth failed", 403: "already authenticated"}

_MSGPACK_ENCODER: Final = msgspec.msgpack.Encoder()
_JSON_ENCODER: Final = msgspec.json.Encoder()
_MSGPACK: Final = msgspec.msgpack.Decoder()


@dataclass(eq=False)
class _Client:
    socket: ServerConnection
    is_msgpack: bool
    channels: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in CHANNELS})
    queue: asyncio.Queue[list[object] | None] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))

    def encode(self, messages: list[object]) -> bytes | str:
        return _MSGPACK_ENCODER.encode(messages) if self.is_msgpack else _JSON_ENCODER.encode(messages).decode()

    def wants(self, channel: str, symbol: object) -> bool:
        chosen = self.channels[channel]
        return symbol in chosen or "*" in chosen


class DataProxy:
    """Alpaca's stock data protocol served locally on top of ``stream`` (see the module docstring)."""

    def __init__(self, stream: MarketDataStream, key_id: Secret, secret_key: Secret, counters: Counter[str]) -> None:
        self._stream = stream
        self._key_id = key_id
        self._secret_key = secret_key
        self.counters = counters
        self._clients: set[_Client] = set()
        self.port = 0
        stream.on_messages = self.relay

    async def run(self, host: str, port: int, stop: asyncio.Event) -> None:
        """Serve until ``stop``."""
        server: Server
        async with serve(self._serve, host, port, max_size=1 << 20) as server:
            self.port = server.sockets[0].getsockname()[1] if port == 0 else port
            log.info("data proxy listening host=%s port=%d", host, self.port)
            await stop.wait()
            for client in list(self._clients):
                client.queue.put_nowait(None)

    # --- upstream to clients -------------------------------------------------------------------

    def relay(self, messages: list[dict[str, object]]) -> None:
        """Hand each upstream message to the clients subscribed to its channel and symbol."""
        if not self._clients:
            return
        for client in list(self._clients):
            chosen: list[object] = []
            for message in messages:
                channel = KIND_CHANNEL.get(str(message.get("T")))
                if channel is not None and client.wants(channel, message.get("S")):
                    chosen.append(message)
            if not chosen:
                continue
            try:
                client.queue.put_nowait(chosen)
                self.counters["data_proxy_messages"] += len(chosen)
            except asyncio.QueueFull:
                self.counters["data_proxy_slow_clients"] += 1
                log.warning("data proxy client too slow, closing it")
                self._drop(client)

    # --- one client ----------------------------------------------------------------------------

    async def _serve(self, socket: ServerConnection) -> None:
        content_type = socket.request.headers.get("Content-Type", "") if socket.request else ""
        client = _Client(socket, content_type.split(";")[0].strip().lower() == MSGPACK_TYPE)
        writer = asyncio.create_task(self._write(client))
        try:
            await self._send_now(client, [{"T": "success", "msg": "connected"}])
            if not await self._authenticate(client):
                return
            self._clients.add(client)
            self.counters["data_proxy_clients"] = len(self._clients)
            async for raw in socket:
                self._on_message(client, raw)
        except (websockets.exceptions.WebSocketException, TimeoutError, OSError):
            pass
        finally:
            self._drop(client)
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(None)  # ends the writer
            await finish_or_cancel(writer, 2.0)
            self._share()

    async def _authenticate(self, client: _Client) -> bool:
        message = self._decode(await asyncio.wait_for(client.socket.recv(), AUTH_TIMEOUT_S))
        if not isinstance(message, dict) or message.get("action") != "auth":
            await self._send_now(client, [self._error(401)])
            return False
        key, secret = str(message.get("key", "")), str(message.get("secret", ""))
        good = hmac.compare_digest(key, self._key_id.reveal()) and hmac.compare_digest(
            secret, self._secret_key.reveal()
        )
        if not good:
            self.counters["data_proxy_auth_failures"] += 1
            await self._send_now(client, [self._error(402)])
            return False
        await self._send_now(client, [{"T": "success", "msg": "authenticated"}])
        return True

    def _on_message(self, client: _Client, raw: str | bytes) -> None:
        message = self._decode(raw)
        action = message.get("action") if isinstance(message, dict) else None
        if not isinstance(message, dict) or action not in ("subscribe", "unsubscribe"):
            self._queue(client, [self._error(403 if action == "auth" else 400)])
            return
        for name in CHANNELS:
            symbols = message.get(name)
            if symbols is None:
                continue
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                self._queue(client, [self._error(400)])
                return
            cleaned = {s.strip().upper() if s != "*" else s for s in symbols if s.strip()}
            if action == "subscribe":
                client.channels[name] |= cleaned
            else:
                client.channels[name] -= cleaned
        ack: dict[str, object] = {"T": "subscription", **{n: sorted(s) for n, s in client.channels.items()}}
        self._queue(client, [ack])
        self._share()

    def _share(self) -> None:
        """Ask upstream for the union of every client's channels."""
        union: dict[str, frozenset[str]] = {}
        for name in CHANNELS:
            union[name] = frozenset(s for c in self._clients for s in c.channels[name] if s != "*")
        self._stream.share(union)

    def _queue(self, client: _Client, messages: list[object]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            client.queue.put_nowait(messages)

    async def _send_now(self, client: _Client, messages: list[object]) -> None:
        await client.socket.send(client.encode(messages))

    async def _write(self, client: _Client) -> None:
        while (messages := await client.queue.get()) is not None:
            try:
                await client.socket.send(client.encode(messages))
            except websockets.exceptions.WebSocketException:
                return
        with contextlib.suppress(websockets.exceptions.WebSocketException):
            await client.socket.close()

    def _drop(self, client: _Client) -> None:
        if client in self._clients:
            self._clients.discard(client)
            self.counters["data_proxy_clients"] = len(self._clients)
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(None)

    @staticmethod
    def _decode(raw: str | bytes) -> object:
        try:
            return json.loads(raw) if isinstance(raw, str) else _MSGPACK.decode(raw)
        except (ValueError, msgspec.DecodeError):
            return None

    @staticmethod
    def _error(code: int) -> Mapping[str, object]:
        return {"T": "error", "code": code, "msg": ERRORS[code]}

"""Alpaca's market-data WebSocket as a price source: one connection, a changing set of trades.

``MarketDataStream`` is a small client of the protocol alpaca-py's ``DataStream`` speaks
(docs.alpaca.markets "WebSocket Stream"; ``alpaca/data/live/websocket.py``), ours because the
symbol set changes at run time and the hot path should decode with msgspec:

- connect (``Content-Type: application/msgpack`` for the msgpack codec), expect
  ``[{"T":"success","msg":"connected"}]``, send ``{"action":"auth",…}``, expect
  ``authenticated``; an ``{"T":"error"}`` instead (402 auth failed, 406 connection limit) ends
  the attempt;
- ``want(symbols)`` sets the trades wanted; a writer task sends the difference from what was
  asked as ``subscribe``/``unsubscribe`` messages; each acknowledgement (``{"T":"subscription"}``)
  says what the server now sends, kept as ``subscribed``;
- every trade (``{"T":"t"}``) goes through the ZMQ feed's validation (``broker.feed.decode_trade``:
  symbol, finite positive price, excluded conditions, size, time, a print stamped in the
  future by this process's clock: ``rejects_data_stream_time_future``) and each frame's ticks reach
  ``on_ticks`` together; rejections are counted (``rejects_data_stream_<reason>``);
- a dropped or refused connection is retried with capped exponential backoff and equal jitter
  (``coldharbour.retry.keep_connected``); the attempt counter resets after a connection that
  delivered a trade; every wait ends at once on ``stop``;
- ``406 connection limit exceeded`` means the key's one connection is someone else's (the
  trader's bot): ``limited`` is set (``prices`` reads those symbols through REST meanwhile,
  ``broker.market_rest``), it is logged once, and the stream is tried again only every
  ``LIMITED_RETRY_S``.

``plan_subscriptions`` (pure) splits the symbols in play into stock and crypto (a ``/`` in the
symbol) and caps each connection at the plan's symbol limit, keeping what is already subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Final

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection, connect

from coldharbour.broker.feed import Skip, decode_trade
from coldharbour.config import Secret
from coldharbour.domain.types import from_datetime
from coldharbour.messages import Tick
from coldharbour.retry import Backoff, Session, keep_connected, sleep_or_stop, until_stopped, wait_any

log = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 30.0
CONNECT_TIMEOUT_S: Final = 10.0
REPLY_TIMEOUT_S: Final = 10.0
CLOSE_GRACE_S: Final = 2.0
LIMITED_RETRY_S: Final = 600.0  # after a 406, try the key's one connection again this rarely
CONNECTION_LIMIT_CODE: Final = 406
REJECT_LOG_INTERVAL_S: Final = 10.0
USER_AGENT: Final = "coldharbour-prices"
CODECS: Final = ("msgpack", "json")

_MSGPACK: Final = msgspec.msgpack.Decoder()
_JSON: Final = msgspec.json.Decoder()
_MSGPACK_ENCODER: Final = msgspec.msgpack.Encoder()

TickSink = Callable[[Sequence[Tick]], None]


class DataStreamRefused(Exception):
    """The server answered the handshake with an error message (code and text)."""

    def __init__(self, message: str, code: object = None) -> None:
        super().__init__(message)
        self.code = code


def is_crypto(symbol: str) -> bool:
    """Return True for a crypto pair (Alpaca writes them ``BTC/USD``)."""
    return "/" in symbol


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """Which symbols each stream subscribes, and which are left unpriced by the limit."""

    stock: frozenset[str]
    crypto: frozenset[str]
    unpriced: tuple[str, ...]


def _capped(wanted: set[str], current: Collection[str], limit: int) -> tuple[set[str], list[str]]:
    kept = sorted(wanted & set(current))[:limit]
    rest = sorted(wanted - set(kept))
    chosen = kept + rest[: max(0, limit - len(kept))]
    return set(chosen), sorted(wanted - set(chosen))


def plan_subscriptions(
    symbols: Iterable[str], limit: int, *, stock_now: Collection[str] = (), crypto_now: Collection[str] = ()
) -> Plan:
    """Return the subscriptions for ``symbols``: at most ``limit`` per stream, current ones kept first."""
    wanted = {s.strip().upper() for s in symbols if s and s.strip()}
    stock, stock_left = _capped({s for s in wanted if not is_crypto(s)}, stock_now, limit)
    crypto, crypto_left = _capped({s for s in wanted if is_crypto(s)}, crypto_now, limit)
    return Plan(stock=frozenset(stock), crypto=frozenset(crypto), unpriced=tuple(sorted(stock_left + crypto_left)))


def _time_ns(value: object) -> object:
    """Return a msgpack timestamp (decoded as ``datetime``) as UTC ns; anything else unchanged."""
    return from_datetime(value) if isinstance(value, datetime) else value


class MarketDataStream:
    """One market-data connection (stock or crypto), kept open and subscribed until ``stop``."""

    def __init__(
        self,
        name: str,
        url: str,
        key_id: Secret,
        secret_key: Secret,
        *,
        on_ticks: TickSink,
        counters: Counter[str],
        exclude: Collection[str] = (),
        codec: str = "msgpack",
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, found {codec!r}")
        self.name = name
        self.url = url
        self._key_id = key_id
        self._secret_key = secret_key
        self._on_ticks = on_ticks
        self.counters = counters
        self._exclude = frozenset(exclude)
        self._is_msgpack = codec == "msgpack"
        self._backoff = (backoff_base_s, backoff_cap_s)
        self.wanted: frozenset[str] = frozenset()
        # Channels other clients want through us (``broker.data_proxy``): channel -> symbols.
        self.shared: dict[str, frozenset[str]] = {}
        # Called with every frame's messages as decoded (before our trade handling), for the proxy.
        self.on_messages: Callable[[list[dict[str, object]]], None] | None = None
        self.subscribed: frozenset[str] = frozenset()  # per the server's last acknowledgement
        self.connected = False
        self.connects = 0
        self.limited = False  # the last attempt was refused with 406: another client holds the key's connection
        self.limited_retry_s = LIMITED_RETRY_S
        self._changed = asyncio.Event()
        self._last_reject_log: dict[str, float] = {}

    def want(self, symbols: Iterable[str]) -> None:
        """Set the symbols whose trades are wanted; the connection follows (now, or on connect)."""
        wanted = frozenset(symbols)
        if wanted != self.wanted:
            self.wanted = wanted
            self._changed.set()

    def share(self, channels: Mapping[str, frozenset[str]]) -> None:
        """Subscribe upstream, besides our trades, to what the proxy's clients want (channel -> symbols)."""
        shared = {name: frozenset(symbols) for name, symbols in channels.items() if symbols}
        if shared != self.shared:
            self.shared = shared
            self._changed.set()

    def _desired(self) -> dict[str, frozenset[str]]:
        desired = dict(self.shared)
        desired["trades"] = self.wanted | self.shared.get("trades", frozenset())
        return desired

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, subscribe and relay trades; reconnect with backoff; return once ``stop`` is set.

        No connection is opened (or re-opened) while no symbol is wanted. The reconnects are
        ``retry.keep_connected``'s; after a 406 the next attempt waits ``limited_retry_s`` instead.
        """

        async def session() -> Session:
            if not await self._until_wanted(stop):
                return Session.AT_ONCE  # stopped: keep_connected returns
            delivered = await self._session_until(stop)
            if self.limited and not stop.is_set():
                await sleep_or_stop(stop, self.limited_retry_s)
                return Session.AT_ONCE
            return Session.DELIVERED if delivered else Session.FAILED

        def reconnecting(attempt: int, delay: float) -> None:
            self.counters["reconnects"] += 1
            self.counters["data_stream_reconnects"] += 1
            log.warning("data stream reconnecting stream=%s attempt=%d delay_s=%.2f", self.name, attempt, delay)

        await keep_connected(session, stop, Backoff(*self._backoff), on_retry=reconnecting)

    async def _session_until(self, stop: asyncio.Event) -> bool:
        """Run one session; on ``stop`` give it ``CLOSE_GRACE_S`` to close, then cancel it; True when it delivered."""
        delivered = False

        async def session() -> None:
            nonlocal delivered
            delivered = await self._session(stop)

        await until_stopped(session(), stop, grace_s=CLOSE_GRACE_S)
        return delivered

    async def _until_wanted(self, stop: asyncio.Event) -> bool:
        """Wait until a symbol is wanted (no connection without one); False if ``stop`` came first."""
        while not self.wanted and not self.shared and not stop.is_set():
            self._changed.clear()
            await wait_any(None, self._changed, stop)
        return not stop.is_set()

    async def _session(self, stop: asyncio.Event) -> bool:
        """Run one connection; return True when it delivered at least one trade."""
        delivered = False
        headers = {"Content-Type": "application/msgpack"} if self._is_msgpack else {}
        try:
            async with connect(
                self.url,
                additional_headers=headers,
                open_timeout=CONNECT_TIMEOUT_S,
                close_timeout=1.0,
                ping_interval=10.0,
                ping_timeout=60.0,
                max_size=1 << 24,
                user_agent_header=USER_AGENT,
            ) as ws:
                await self._expect(ws, "connected")
                await ws.send(
                    self._encode({"action": "auth", "key": self._key_id.reveal(), "secret": self._secret_key.reveal()})
                )
                await self._expect(ws, "authenticated")
                if self.limited:
                    log.info("data stream connection limit lifted stream=%s: back on the stream", self.name)
                self.limited = False
                self.connected = True
                self.connects += 1
                log.info("data stream connected stream=%s url=%s", self.name, self.url)
                writer = asyncio.create_task(self._write_loop(ws, stop), name=f"data-stream-{self.name}-writer")
                try:
                    async for raw in ws:
                        delivered = self._on_frame(raw) or delivered
                finally:
                    writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await writer
        except DataStreamRefused as e:
            if e.code == CONNECTION_LIMIT_CODE:
                self.counters["data_stream_limit_refusals"] += 1
                if not self.limited:
                    log.warning(
                        "data stream refused: the key's connection is in use elsewhere stream=%s error=%s;"
                        " reading prices through REST, trying the stream again every %.0f s",
                        self.name, _describe(e), self.limited_retry_s,
                    )  # fmt: skip
                self.limited = True
            elif not stop.is_set():
                log.warning("data stream failed stream=%s error=%s", self.name, _describe(e))
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException, ValueError) as e:
            if not stop.is_set():
                log.warning("data stream failed stream=%s error=%s", self.name, _describe(e))
        finally:
            if self.connected:
                log.info("data stream disconnected stream=%s", self.name)
            self.connected = False
            self.subscribed = frozenset()
        return delivered

    async def _write_loop(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        """Keep the server's subscription equal to ``wanted``; close the socket when ``stop`` is set."""
        asked: dict[str, frozenset[str]] = {}
        while not stop.is_set():
            self._changed.clear()
            desired = self._desired()
            names = sorted(set(desired) | set(asked))
            empty: frozenset[str] = frozenset()
            more = {n: sorted(desired.get(n, empty) - asked.get(n, empty)) for n in names}
            fewer = {n: sorted(asked.get(n, empty) - desired.get(n, empty)) for n in names}
            if any(more.values()):
                await ws.send(self._encode({"action": "subscribe", **{n: v for n, v in more.items() if v}}))
            if any(fewer.values()):
                await ws.send(self._encode({"action": "unsubscribe", **{n: v for n, v in fewer.items() if v}}))
            asked = desired
            await wait_any(None, self._changed, stop)
        await ws.close()

    def _encode(self, message: dict[str, object]) -> bytes | str:
        return _MSGPACK_ENCODER.encode(message) if self._is_msgpack else json.dumps(message)

    def _decode(self, raw: bytes | str) -> object:
        if isinstance(raw, str):
            return _JSON.decode(raw)
        return _MSGPACK.decode(raw) if self._is_msgpack else _JSON.decode(raw)

    async def _expect(self, ws: ClientConnection, text: str) -> None:
        """Read handshake frames until ``{"T":"success","msg":text}``; raise on an error message."""
        while True:
            messages = self._decode(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S))
            for message in messages if isinstance(messages, list) else [messages]:
                if not isinstance(message, dict):
                    raise ValueError(f"unexpected handshake frame {message!r}")
                if message.get("T") == "error":
                    raise DataStreamRefused(f"{message.get('code')} {message.get('msg')}", message.get("code"))
                if message.get("T") == "success" and message.get("msg") == text:
                    return

    def _on_frame(self, raw: bytes | str) -> bool:
        """Relay the trades of one frame; handle acknowledgements and errors; never raise."""
        counters = self.counters
        counters["data_stream_frames"] += 1
        try:
            messages = self._decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            self._reject("decode")
            return False
        if not isinstance(messages, list):
            self._reject("shape")
            return False
        if self.on_messages is not None:
            self.on_messages([m for m in messages if isinstance(m, dict)])
        ticks: list[Tick] = []
        exclude = self._exclude
        now_ns = time.time_ns()  # a print stamped beyond TICK_FUTURE_NS ahead is refused, as on the feed
        for message in messages:
            if not isinstance(message, dict):
                self._reject("shape")
                continue
            kind = message.get("T")
            if kind != "t":
                self._on_control(kind, message)
            elif not self.shared or message.get("S") in self.wanted:  # else a proxy client's symbol only
                tick = self._trade(dict(message) if self.on_messages is not None else message, exclude, now_ns)
                if tick is not None:
                    ticks.append(tick)
        if ticks:
            self._on_ticks(ticks)
        return bool(ticks)

    def _trade(self, message: dict[str, object], exclude: Collection[str], now_ns: int) -> Tick | None:
        """Return the tick of one trade message (its ``t`` made UTC ns in place), or count why not."""
        message["t"] = _time_ns(message.get("t"))
        result = decode_trade(message, exclude, now_ns)
        if isinstance(result, Skip):
            self._count(result)
            return None
        return result

    def _on_control(self, kind: object, message: dict[str, object]) -> None:
        """Handle a message that is not a trade: acknowledgement, error, or a kind we skip."""
        if kind == "subscription":
            self._on_ack(message)
        elif kind == "error":
            self.counters["data_stream_errors"] += 1
            code, text = message.get("code"), message.get("msg")
            log.warning("data stream error stream=%s code=%s message=%s", self.name, code, text)
        elif kind != "success":
            known = isinstance(kind, str) and kind.isidentifier()
            self.counters[f"skipped_data_stream_kind_{kind}" if known else "skipped_data_stream_kind"] += 1

    def _on_ack(self, message: dict[str, object]) -> None:
        trades = message.get("trades")
        if isinstance(trades, list):
            self.subscribed = frozenset(s for s in trades if isinstance(s, str))
            log.info("data stream subscribed stream=%s trades=%d", self.name, len(self.subscribed))

    def _count(self, skip: Skip) -> None:
        if not skip.is_reject:
            self.counters[f"skipped_data_stream_{skip.reason}"] += 1
            return
        self._reject(skip.reason)

    def _reject(self, reason: str) -> None:
        counters = self.counters
        counters["rejects"] += 1
        key = f"rejects_data_stream_{reason}"
        counters[key] += 1
        now = time.monotonic()
        if now - self._last_reject_log.get(reason, -REJECT_LOG_INTERVAL_S) >= REJECT_LOG_INTERVAL_S:
            self._last_reject_log[reason] = now
            log.warning("rejected data stream message stream=%s reason=%s total=%d", self.name, reason, counters[key])


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, DataStreamRefused) else f"{type(error).__name__}: {text}"


class DataStreamPrices:
    """``prices``' Alpaca source: a stock and a crypto stream following the symbols in play.

    ``follow(symbols)`` plans the subscriptions (``plan_subscriptions``) and logs the symbols
    the limit leaves unpriced once per change; each stream connects only once it has a symbol.
    Gauges go to ``counters`` (``data_stream_subscribed``, ``data_stream_unpriced``) and
    ``details`` (``price_source``, ``subscribed``: the first few symbols) for the heartbeat.
    """

    SHOWN_SYMBOLS: Final = 5

    def __init__(
        self,
        streams: Sequence[MarketDataStream],
        *,
        limit: int,
        counters: Counter[str],
        details: dict[str, str],
    ) -> None:
        self.stock, self.crypto = streams
        self._limit = limit
        self._counters = counters
        self._details = details
        self._unpriced: tuple[str, ...] = ()
        details["price_source"] = "alpaca-stream"
        details["subscribed"] = ""

    def follow(self, symbols: Iterable[str]) -> Plan:
        """Subscribe to ``symbols`` (within the limit); return the plan."""
        plan = plan_subscriptions(symbols, self._limit, stock_now=self.stock.wanted, crypto_now=self.crypto.wanted)
        self.stock.want(plan.stock)
        self.crypto.want(plan.crypto)
        if plan.unpriced != self._unpriced:
            self._unpriced = plan.unpriced
            if plan.unpriced:
                log.warning(
                    "symbols left unpriced by the data stream limit count=%d limit=%d symbols=%s",
                    len(plan.unpriced), self._limit, ",".join(plan.unpriced),
                )  # fmt: skip
            else:
                log.info("every symbol in play is subscribed")
        self._counters["data_stream_unpriced"] = len(plan.unpriced)
        self.show()
        return plan

    def show(self) -> None:
        """Refresh the subscription gauges from what the servers acknowledged."""
        subscribed = sorted(self.stock.subscribed | self.crypto.subscribed)
        self._counters["data_stream_subscribed"] = len(subscribed)
        self._details["subscribed"] = ",".join(subscribed[: self.SHOWN_SYMBOLS])

    async def run(self, stop: asyncio.Event) -> None:
        """Run both streams until ``stop``."""
        await asyncio.gather(self.stock.run(stop), self.crypto.run(stop))

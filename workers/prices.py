"""`prices`: the external price feed, filtered and validated, published as ticks.

Inputs (``PRICE_SOURCE``): ``zmq``: SUB on ``ZMQ_SIP_STREAM_ENDPOINT`` (msgpack
``{"trade": {...}}`` frames, docs/spec.md §4); ``alpaca`` (default without a feed): the latest trades
through market-data REST every ``PRICE_POLL_S`` (``broker.market_rest``, the first account's
keys, within the key's market-data budget), leaving the key's one stream connection to the
trader; ``alpaca-stream``: Alpaca's market-data stream (``broker.market_stream``), with REST
for a stream refused with 406 (the key's connection in use elsewhere); with
``CHMGR_DATA_PROXY_BIND`` it also serves Alpaca's stock data protocol locally, so the trader's bot
shares the key's one connection with us (``broker.data_proxy``). The Alpaca sources follow
exactly the symbols some account holds or has open orders on, read from the database
(read-only) every ``SYMBOLS_POLL_S``; every path validates alike and publishes alike.
Outputs: ``px.batch`` (``TickBatch``: every tick of one drain, in feed order). Trades with an
excluded condition (``TRADE_CONDITIONS_EXCLUDE``), no symbol, a non-finite or non-positive
price, or a malformed frame are dropped and counted (``rejects_feed_<reason>``,
``skipped_feed_<reason>``). The socket is drained in batches of at most ``MAX_BATCH`` frames
(whatever is already queued: a batch never waits for more), published as one bus frame, then
the loop runs, so a fast feed cannot starve the heartbeat or shutdown. No DB, no broker.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

import aiohttp
import msgspec
import psycopg
import zmq
import zmq.asyncio

from coldharbour import runtime
from coldharbour.broker.budget import RestBudget, budget_for, report_forever
from coldharbour.broker.data_proxy import DataProxy
from coldharbour.broker.feed import Skip, TradeFilter, decode_frames
from coldharbour.broker.market_rest import SnapshotPrices
from coldharbour.broker.market_stream import DataStreamPrices, MarketDataStream
from coldharbour.broker.reads import data_url
from coldharbour.broker.rest import BrokerRest
from coldharbour.broker.validate import TICK_FUTURE_NS
from coldharbour.config import Settings
from coldharbour.db import queries
from coldharbour.db.connect import connect_read_only
from coldharbour.db.names import account_names
from coldharbour.errors import DatabaseError
from coldharbour.messages import TOPIC_TICKS, Tick, TickBatch
from coldharbour.retry import sleep_or_stop

log = logging.getLogger("workers.prices")

MAX_BATCH: Final = 1000
POLL_TIMEOUT_MS: Final = 200
FEED_HWM: Final = 100_000  # ticks are the one stream where loss is acceptable (docs/architecture.md §2)
REJECT_LOG_INTERVAL_S: Final = 10.0
SYMBOLS_POLL_S: Final = 2.0
DATA_FEEDS: Final = frozenset({"iex", "sip", "delayed_sip", "boats", "overnight"})
_NOBLOCK: Final = int(zmq.NOBLOCK)  # a plain int: pyzmq's enum arithmetic costs per call


class _Pending:
    """The ticks of one drain, as the columns of a ``TickBatch``."""

    def __init__(self) -> None:
        self.symbols: list[str] = []
        self.prices: list[float] = []
        self.sizes: list[float] = []
        self.ts_events: list[int] = []

    def add(self, symbol: str, price: float, size: float, ts_event: int) -> None:
        self.symbols.append(symbol)
        self.prices.append(price)
        self.sizes.append(size)
        self.ts_events.append(ts_event)

    def message(self) -> TickBatch:
        return TickBatch(
            symbols=tuple(self.symbols),
            prices=tuple(self.prices),
            sizes=tuple(self.sizes),
            ts_events=tuple(self.ts_events),
        )


class FeedReader:
    """Owns the feed socket; turns each batch of frames into published ticks and counters."""

    def __init__(self, settings: Settings, ctx: runtime.WorkerContext) -> None:
        self._ctx = ctx
        self._exclude = frozenset(settings.trade_conditions_exclude)
        self._filter = TradeFilter(self._exclude)
        self._accept = self._filter.accept
        self._sync: zmq.Socket[bytes] = ctx.zmq.socket(zmq.SUB)
        self._sync.setsockopt(zmq.RCVHWM, FEED_HWM)
        self._sync.setsockopt(zmq.LINGER, 0)
        self._sync.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket = zmq.asyncio.Socket.shadow(self._sync.underlying)
        self._sync.connect(settings.zmq_sip_stream_endpoint)
        self._last_log: dict[str, float] = {}
        self._now_ns: int | None = None
        log.info("feed connected endpoint=%s exclude=%s", settings.zmq_sip_stream_endpoint, sorted(self._exclude))

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop``."""
        while not stop.is_set():
            if not await self._socket.poll(timeout=POLL_TIMEOUT_MS):
                continue
            self._drain()
            await asyncio.sleep(0)  # let the heartbeat and other tasks run between batches

    def _drain(self) -> None:
        self._now_ns = time.time_ns()
        self._filter.horizon_ns = self._now_ns + TICK_FUTURE_NS
        pending = _Pending()
        sock, accept, add = self._sync, self._accept, pending.add
        count = 0
        while count < MAX_BATCH:
            try:
                frame = sock.recv(_NOBLOCK, copy=False)  # a Frame knows ``more`` (a getsockopt costs 0.6 µs)
            except zmq.Again:
                break
            count += 1
            if frame.more:
                self.handle([frame.bytes, *self._rest()], pending)
                continue
            data = frame.bytes
            found = accept(data)
            if found is not None:
                add(*found)
            else:
                self.handle([data], pending)
        self._ctx.counters["feed_frames"] += count
        self.publish(pending)

    def _rest(self) -> list[bytes]:
        rest = []
        while True:
            frame = self._sync.recv(_NOBLOCK, copy=False)
            rest.append(frame.bytes)
            if not frame.more:
                return rest

    def handle(self, frames: list[bytes], pending: _Pending) -> None:
        """Add the tick in ``frames`` to ``pending`` or count why there is none (the slow path)."""
        result = decode_frames(frames, self._exclude, self._now_ns)
        if isinstance(result, Skip):
            self._count(result)
            return
        pending.add(result.symbol, result.price, result.size, result.ts_event)

    def publish(self, pending: _Pending) -> None:
        """Publish the drained ticks as one ``TickBatch`` (nothing when there are none)."""
        publish_pending(self._ctx, pending)

    def _count(self, skip: Skip) -> None:
        counters = self._ctx.counters
        if not skip.is_reject:
            counters[f"skipped_feed_{skip.reason}"] += 1
            return
        counters["rejects"] += 1
        key = f"rejects_feed_{skip.reason}"
        counters[key] += 1
        now = time.monotonic()
        if now - self._last_log.get(skip.reason, -REJECT_LOG_INTERVAL_S) >= REJECT_LOG_INTERVAL_S:
            self._last_log[skip.reason] = now
            log.warning("rejected feed frame reason=%s total=%d", skip.reason, counters[key])

    def close(self) -> None:
        """Close the socket."""
        self._sync.close(linger=0)


def publish_pending(ctx: runtime.WorkerContext, pending: _Pending) -> None:
    """Publish ``pending`` as one ``TickBatch`` (nothing when empty); count it, note the time."""
    if pending.symbols:
        ctx.publisher.publish(TOPIC_TICKS, pending.message())
        ctx.counters["ticks"] += len(pending.symbols)
        ctx.counters["newest_tick_unix_ms"] = time.time_ns() // 1_000_000


def publish_ticks(ctx: runtime.WorkerContext, ticks: Sequence[Tick]) -> None:
    """Publish one data-stream frame's ticks as one ``TickBatch``."""
    pending = _Pending()
    for tick in ticks:
        pending.add(tick.symbol, tick.price, tick.size, tick.ts_event)
    publish_pending(ctx, pending)


class FollowsSymbols(Protocol):
    """A price source that reads the symbols it is told to (``DataStreamPrices``, ``SnapshotPrices``)."""

    def follow(self, symbols: Iterable[str]) -> object:
        """Price ``symbols`` from now on."""

    def show(self) -> None:
        """Refresh the heartbeat's gauges."""


async def follow_symbols(
    settings: Settings, ctx: runtime.WorkerContext, prices: FollowsSymbols, stop: asyncio.Event
) -> None:
    """Subscribe to the symbols in play, read from the database every ``SYMBOLS_POLL_S``."""
    names = [account_names(settings, account.slug) for account in settings.accounts]
    conn: queries.Conn | None = None
    failing = ""  # the last error, logged once per change (a schema not yet created repeats)
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = await connect_read_only(settings.reader_dsn, "prices")
                symbols: set[str] = set()
                for account in names:
                    symbols |= await queries.symbols_in_play(conn, account)
                prices.follow(symbols)
                if failing:
                    log.info("reading the symbols in play again")
                failing = ""
            except (DatabaseError, psycopg.Error) as e:
                if str(e) != failing:
                    log.warning("cannot read the symbols in play error=%s", e)
                failing = str(e) or type(e).__name__
                ctx.counters["symbols_read_failures"] += 1
                if conn is not None:
                    await conn.close()
                conn = None
            prices.show()
            await sleep_or_stop(stop, SYMBOLS_POLL_S)
    finally:
        if conn is not None:
            await conn.close()


def _snapshot_prices(
    settings: Settings,
    ctx: runtime.WorkerContext,
    session: aiohttp.ClientSession,
    stop: asyncio.Event,
    *,
    primary: bool,
    wanted: Callable[[], frozenset[str]] | None = None,
) -> tuple[SnapshotPrices, RestBudget]:
    """Return the REST price source of the first account's key (and its market-data budget)."""
    account = settings.accounts[0]
    host = settings.alpaca_data_url.rstrip("/") or data_url(account.base_url)
    data_account = msgspec.structs.replace(account, base_url=host)
    budget = budget_for(settings, account, "data")
    stock, crypto = (
        BrokerRest(data_account, session, ctx.counters, budget=budget, stop=stop, is_urgent=True, version=version)
        for version in ("/v2", "/v1beta3")
    )
    feed = settings.alpaca_data_stream_url.rstrip("/").rsplit("/", 1)[-1]
    prices = SnapshotPrices(
        stock, crypto, feed=feed if feed in DATA_FEEDS else "iex", poll_s=settings.price_poll_s,
        on_ticks=lambda ticks: publish_ticks(ctx, ticks), counters=ctx.counters,
        details=ctx.details if primary else None, exclude=settings.trade_conditions_exclude, wanted=wanted,
    )  # fmt: skip
    return prices, budget


async def run_rest_prices(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Poll the latest trades of the symbols in play through market-data REST until stopped."""
    if not settings.accounts:
        log.error("PRICE_SOURCE=alpaca needs an account with credentials; no prices until one is configured")
        await stop.wait()
        return
    async with aiohttp.ClientSession() as session:
        prices, budget = _snapshot_prices(settings, ctx, session, stop, primary=True)
        log.info(
            "market-data REST source account=%s every_s=%.1f budget_per_min=%d",
            settings.accounts[0].slug, settings.price_poll_s, budget.per_min,
        )  # fmt: skip
        await asyncio.gather(
            prices.run(stop),
            follow_symbols(settings, ctx, prices, stop),
            report_forever([budget], ctx.counters, stop, prefix="data"),
        )


async def run_data_stream(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Relay Alpaca's market-data stream for the symbols in play until stopped (REST while refused, 406)."""
    if not settings.accounts:
        log.error("PRICE_SOURCE=alpaca-stream needs an account with credentials; no prices until one is configured")
        await stop.wait()
        return
    account = settings.accounts[0]
    streams = [
        MarketDataStream(
            name, url, account.api_key, account.secret_key, counters=ctx.counters,
            exclude=settings.trade_conditions_exclude, on_ticks=lambda ticks: publish_ticks(ctx, ticks),
        )
        for name, url in (("stock", settings.alpaca_data_stream_url), ("crypto", settings.alpaca_crypto_stream_url))
    ]  # fmt: skip
    prices = DataStreamPrices(
        streams, limit=settings.alpaca_data_max_symbols, counters=ctx.counters, details=ctx.details
    )
    log.info(
        "data stream source account=%s url=%s limit=%d", account.slug, streams[0].url, settings.alpaca_data_max_symbols
    )

    def refused() -> frozenset[str]:  # the symbols of a stream another client's connection keeps us off
        return frozenset().union(*(s.wanted for s in streams if s.limited))

    async with aiohttp.ClientSession() as session:
        fallback, budget = _snapshot_prices(settings, ctx, session, stop, primary=False, wanted=refused)
        jobs = [
            prices.run(stop),
            follow_symbols(settings, ctx, prices, stop),
            fallback.run(stop),
            report_forever([budget], ctx.counters, stop, prefix="data"),
        ]
        if settings.data_proxy_bind:  # the trader's bot shares our one connection (broker/data_proxy.py)
            host, _, port = settings.data_proxy_bind.rpartition(":")
            proxy = DataProxy(streams[0], account.api_key, account.secret_key, ctx.counters)
            jobs.append(proxy.run(host.strip("[]"), int(port), stop))
        await asyncio.gather(*jobs)


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Relay the configured price source until stopped."""
    ctx.details["price_source"] = settings.price_source
    if settings.price_source == "alpaca":
        await run_rest_prices(settings, ctx, stop)
        return
    if settings.price_source == "alpaca-stream":
        await run_data_stream(settings, ctx, stop)
        return
    reader = FeedReader(settings, ctx)
    try:
        await reader.run(stop)
    finally:
        reader.close()


def main() -> int:
    """Run the prices program."""
    return runtime.run("prices", amain)


if __name__ == "__main__":
    sys.exit(main())

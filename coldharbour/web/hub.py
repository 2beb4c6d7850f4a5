"""One LISTEN connection per process, fanned out to every browser as Server-Sent Events.

``Hub.listen`` holds the process's single read-only LISTEN connection on every account's three
channels (reconnecting with a back-off; after a reconnect every browser is asked to start over,
since a push may have been missed). Each NOTIFY becomes one SSE frame, encoded once and queued
for every client of that account: ``pos`` and ``closed`` frames carry the payload as sent
(docs/spec.md §6); a ``metrics`` notice makes the hub read the KPI document once and push it whole.
Equity has no channel: the hub compares the tables' fingerprint every ``EQUITY_CHECK_S`` and
pushes both curves when it moved. ``status`` (programs, market phase) is pushed every
``STATUS_INTERVAL_S`` while anyone watches.

A client whose queue is full (a browser that stopped reading) is dropped rather than allowed to
hold memory: its EventSource reconnects and starts again from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool

from coldharbour.config import Settings
from coldharbour.db import dashboard
from coldharbour.db.connect import connect_read_only, listen
from coldharbour.db.names import AccountNames, SharedNames, account_names, shared_names
from coldharbour.db.notify import to_json
from coldharbour.errors import ChmgrError, DatabaseError
from coldharbour.retry import Backoff, Session, keep_connected, sleep_or_stop, wait_any
from coldharbour.web import health

log = logging.getLogger(__name__)

CLIENT_QUEUE: Final = 2_000
BACKOFF_BASE_S: Final = 0.5  # the LISTEN connection's reconnects
BACKOFF_CAP_S: Final = 10.0
EQUITY_CHECK_S: Final = 5.0
STATUS_INTERVAL_S: Final = 2.0
STATUS_DB_TIMEOUT_S: Final = 5.0  # the status read says "database unreachable" after this
CLOSE: Final = b""  # queued to a client: end its stream (the browser reconnects)
KEEPALIVE_S: Final = 15.0
DRAIN_TIMEOUT_S: Final = 0.5
HEARTBEAT_PREFIX: Final = '{"op":"heartbeat"'  # notify.heartbeat's payload, as msgspec writes it
KEEPALIVE: Final = b": keep-alive\n\n"
Clock = Callable[[], datetime]


def frame(event: str, data: str) -> bytes:
    """Return one SSE frame (``data`` split on newlines, as the format requires)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


class Client:
    """One connected browser: its account and its bounded list of frames not yet written."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        self.pending: list[bytes] = []
        self.wake = asyncio.Event()
        self.closed = False

    def offer(self, data: bytes) -> bool:
        """Queue ``data``; return False (and end the stream) if the browser fell too far behind."""
        if self.closed:
            return True
        if len(self.pending) >= CLIENT_QUEUE:
            self.close()
            return False
        self.pending.append(data)
        self.wake.set()
        return True

    def close(self) -> None:
        """End this client's stream after what is queued."""
        if self.closed:
            return
        self.closed = True
        self.pending.append(CLOSE)
        self.wake.set()

    async def take(self) -> list[bytes]:
        """Wait for frames; return every one queued so far (``CLOSE`` last when the stream ends)."""
        await self.wake.wait()
        frames, self.pending = self.pending, []
        self.wake.clear()
        return frames


class Hub:
    """The LISTEN connection, the connected browsers, and what is pushed to them."""

    def __init__(
        self, settings: Settings, pool: AsyncConnectionPool, counters: Counter[str], clock: Clock,
        beats: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.pool = pool
        self.counters = counters
        self.clock = clock
        self.beats: dict[str, Any] = {} if beats is None else beats
        self.account_figures: dict[str, dict[str, Any]] = {}  # slug -> the broker's figures (web.figures)
        self.accounts: dict[str, AccountNames] = {a.slug: account_names(settings, a.slug) for a in settings.accounts}
        self.shared: SharedNames = shared_names(settings)
        self._routes: dict[str, tuple[str, str]] = {}
        for slug, names in self.accounts.items():
            self._routes[names.pos_channel] = (slug, "pos")
            self._routes[names.closed_channel] = (slug, "closed")
            self._routes[names.metrics_channel] = (slug, "metrics")
        self.clients: dict[str, set[Client]] = {slug: set() for slug in self.accounts}
        self.last_beat: dict[str, float] = {}
        self.listening = asyncio.Event()
        self.status: dict[str, Any] = {}
        self._metrics_due: set[str] = set()
        self._metrics_wake = asyncio.Event()

    # ----- clients

    def join(self, slug: str) -> Client:
        """Register a browser for ``slug`` (before its snapshot is read: nothing is missed)."""
        client = Client(slug)
        self.clients[slug].add(client)
        self.counters["sse_connects"] += 1
        return client

    def leave(self, client: Client) -> None:
        """Forget a browser."""
        self.clients[client.slug].discard(client)

    def client_count(self) -> int:
        """Return how many browsers are connected."""
        return sum(len(group) for group in self.clients.values())

    def broadcast(self, slug: str | None, data: bytes) -> None:
        """Queue ``data`` for every client of ``slug`` (every client when None)."""
        groups = self.clients.values() if slug is None else [self.clients.get(slug, set())]
        for group in groups:
            for client in list(group):
                if not client.offer(data):
                    self.counters["sse_dropped_slow"] += 1
                    group.discard(client)

    def close_all(self) -> None:
        """End every stream (at shutdown, and after a LISTEN reconnect)."""
        for group in self.clients.values():
            for client in group:
                client.close()
            group.clear()

    async def keepalive_loop(self, stop: asyncio.Event) -> None:
        """Send every browser an SSE comment every ``KEEPALIVE_S`` (finds dead connections)."""
        while not stop.is_set():
            await sleep_or_stop(stop, KEEPALIVE_S)
            self.broadcast(None, KEEPALIVE)

    def heartbeat_age_s(self, slug: str) -> float | None:
        """Return how long ago this process heard ``slug``'s UI heartbeat (None: not yet)."""
        at = self.last_beat.get(slug)
        return None if at is None else round(time.monotonic() - at, 3)

    # ----- the LISTEN connection

    def dispatch(self, channel: str, payload: str) -> None:
        """Route one NOTIFY to the browsers of its account."""
        route = self._routes.get(channel)
        if route is None:
            return
        slug, kind = route
        self.counters["notifies"] += 1
        if kind == "metrics":
            self._metrics_due.add(slug)
            self._metrics_wake.set()
            return
        if kind == "pos" and payload.startswith(HEARTBEAT_PREFIX):
            self.last_beat[slug] = time.monotonic()
        self.broadcast(slug, frame(kind, payload))

    async def listen(self, stop: asyncio.Event) -> None:
        """Hold the LISTEN connection until ``stop``; reconnect with back-off on any failure."""
        first = True

        async def session() -> Session:
            nonlocal first
            try:
                conn = await connect_read_only(self.settings.reader_dsn, "web")
            except DatabaseError as e:
                log.warning("LISTEN connection failed: %s", e)
                self.counters["reconnects"] += 1
                return Session.FAILED
            try:
                await listen(conn, self._routes)
                if not first:
                    await self.pool.check()  # drop pooled connections the outage broke
                    self.close_all()  # a push may have been lost: every browser starts over
                first = False
                self.listening.set()
                await self._drain(conn, stop)
            except psycopg.Error as e:
                log.warning("LISTEN connection lost: %s", " ".join(str(e).split()))
                self.counters["reconnects"] += 1
            finally:
                self.listening.clear()
                await conn.close()
            return Session.FAILED if first else Session.DELIVERED

        def waiting(attempt_number: int, delay: float) -> None:
            log.info("LISTEN reconnecting attempt=%d delay_s=%.2f", attempt_number, delay)

        await keep_connected(session, stop, Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S), on_retry=waiting)

    async def _drain(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        # Wake at least every DRAIN_TIMEOUT_S to see ``stop``; no task per notification.
        while not stop.is_set():
            async for note in conn.notifies(timeout=DRAIN_TIMEOUT_S):
                self.dispatch(note.channel, note.payload)
                if stop.is_set():
                    return

    # ----- pushes read from the tables

    async def metrics_loop(self, stop: asyncio.Event) -> None:
        """Read and push the KPI document of every account that announced a change."""
        while not stop.is_set():
            await wait_any(None, self._metrics_wake, stop)
            self._metrics_wake.clear()
            due, self._metrics_due = self._metrics_due, set()
            for slug in due:
                if self.clients[slug]:
                    await self._guard("metrics", self.push_metrics(slug))

    async def push_metrics(self, slug: str) -> None:
        """Read ``slug``'s KPI document and push it."""
        async with self.pool.connection() as conn:
            document = await dashboard.metrics(conn, self.accounts[slug])
        self.broadcast(slug, frame("metrics", to_json(document)))

    async def equity_loop(self, stop: asyncio.Event) -> None:
        """Push an account's curves when its equity tables changed (checked while anyone watches)."""
        seen: dict[str, tuple[object, ...]] = {}
        while not stop.is_set():
            for slug, names in self.accounts.items():
                if not self.clients[slug]:
                    seen.pop(slug, None)
                    continue
                await self._guard("equity", self._equity_if_changed(slug, names, seen))
            await sleep_or_stop(stop, EQUITY_CHECK_S)

    async def _equity_if_changed(self, slug: str, names: AccountNames, seen: dict[str, tuple[object, ...]]) -> None:
        # First look since someone started watching: push too (the table may have moved
        # between that browser's snapshot and now).
        async with self.pool.connection() as conn:
            mark, curves = await dashboard.equity_if_moved(conn, names, seen.get(slug))
        seen[slug] = mark
        if curves is not None:
            self.broadcast(slug, frame("equity", to_json(curves)))

    async def read_status(self) -> dict[str, Any]:
        """Return the programs' health and the market phase (what ``/api/status`` serves)."""
        phase: str | None = None
        database: str | None = None
        try:
            async with self.pool.connection(timeout=STATUS_DB_TIMEOUT_S) as conn:
                phase = await dashboard.market_phase(conn, self.shared, self.clock())
        except psycopg.Error as e:  # PoolTimeout too
            log.warning("market phase unreadable: %s", " ".join(str(e).split()))
            database = "database unreachable: the dashboard cannot read it (see web's log)"
        status = await health.programs(self.settings, self.beats, phase, database)
        pending = health.pending_actions(self.beats, self.accounts)  # docs/dashboard.md "Corporate actions pending"
        return {"phase": phase, **status, "corporate_pending": pending}

    async def status_loop(self, stop: asyncio.Event) -> None:
        """Push the programs' health and the market phase while anyone watches."""
        while not stop.is_set():
            if self.client_count():
                try:
                    self.status = await self.read_status()
                except (ChmgrError, psycopg.Error, OSError) as e:
                    self.counters["status_read_failures"] += 1
                    log.warning("status read failed: %s", " ".join(str(e).split()))
                else:
                    self.broadcast(None, frame("status", to_json(self.status)))
            await sleep_or_stop(stop, STATUS_INTERVAL_S)

    async def _guard(self, what: str, work: Awaitable[None]) -> None:
        try:
            await work
        except (psycopg.Error, OSError) as e:
            self.counters[f"{what}_read_failures"] += 1
            log.warning("%s read failed: %s", what, " ".join(str(e).split()))

    # ----- snapshot

    async def snapshot(self, slug: str) -> dict[str, Any]:
        """Return everything the page shows for ``slug``: the tables, curves and KPIs from one
        database snapshot (``dashboard.page``), so the cards and the rows agree."""
        async with self.pool.connection() as conn:
            read = await dashboard.page(conn, self.accounts[slug])
        return {
            "account": slug,
            "accounts": [{"slug": a.slug, "name": a.name} for a in self.settings.accounts],
            "heartbeat_s": self.settings.ui_heartbeat_s,
            "heartbeat_age_s": self.heartbeat_age_s(slug),
            "positions": read["positions"],
            "closed": read["closed"],
            "equity": read["equity"],
            "metrics": read["metrics"],
            "account_figures": self.account_figures.get(slug),
            "status": self.status or None,
        }

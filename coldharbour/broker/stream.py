"""One trade_updates connection per account: alpaca-py first, our own client as fallback.

``TradeStream.run(stop)`` owns the account's connection until ``stop`` is set:

- **Primary**: alpaca-py's ``TradingStream`` (``sdk_stream.PrimaryClient``), run as a task with
  ``_run_forever`` and stopped with ``stop_ws`` — never ``run()``, which calls ``asyncio.run``.
- **Fallback**: ``FallbackClient`` below, a minimal client of the same protocol (docs/broker.md §4)
  over ``websockets``' asyncio API. Used when alpaca-py cannot be imported, or when the primary
  has never connected after ``PRIMARY_MAX_FAILED_CONNECTS`` consecutive attempts (for the rest
  of the process's life: flapping between clients would only add connection attempts).
- Both reconnect with capped exponential backoff and equal jitter; the attempt counter resets
  only after a connection that delivered a trade update (as alpaca-py does), so a server that
  accepts and immediately drops us cannot cause a storm. Alpaca allows one connection per
  account (HTTP 429 on a second, docs/broker.md §8): exactly one client runs at a time.
- **Watchdog**: a connection that is up but has been silent for ``SILENCE_RECONNECT_S`` while
  the account has open orders is dropped and re-opened (which also triggers a resync).

Every (re)connect publishes a resync request and every frame is handled by ``UpdateListener``,
which never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Final, Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect

from coldharbour.broker.listener import UpdateListener, decode_frame
from coldharbour.config import AccountSettings
from coldharbour.retry import Backoff, Session, finish_or_cancel, keep_connected, sleep_or_stop

log = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 30.0
PRIMARY_MAX_FAILED_CONNECTS: Final = 3
CONNECT_TIMEOUT_S: Final = 10.0
AUTH_TIMEOUT_S: Final = 10.0
WATCHDOG_INTERVAL_S: Final = 5.0
SILENCE_RECONNECT_S: Final = 600.0
USER_AGENT: Final = "coldharbour-trades"


class AuthenticationRefused(Exception):
    """The broker answered the authenticate action with something other than ``authorized``."""


class StreamClient(Protocol):
    """What ``TradeStream`` needs of a client (primary or fallback)."""

    name: str
    connected: bool
    ever_connected: bool
    failed_connects: int

    async def run(self) -> None:
        """Connect, listen and reconnect until stopped."""
        ...

    async def reconnect(self) -> None:
        """Drop the current connection (the client reconnects)."""
        ...

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop and wait for ``task`` (the one running ``run``)."""
        ...


class FallbackClient:
    """Our own minimal trade_updates client (docs/broker.md §4) over ``websockets``."""

    name = "fallback"

    def __init__(
        self, listener: UpdateListener, account: AccountSettings, *, url: str | None = None, first_attempt: int = 0
    ) -> None:
        self.listener = listener
        self._account = account
        self._url = url or account.stream_url
        self.connected = False
        self.ever_connected = False
        self.failed_connects = 0
        self._backoff = Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S, attempts=first_attempt)
        self._ws: ClientConnection | None = None
        self._stopping = asyncio.Event()
        self._skip_backoff = False

    async def run(self) -> None:
        """Connect, authenticate, listen; on any failure back off and do it again, until ``stop``."""

        def reconnecting(attempt_number: int, delay: float) -> None:
            log.warning(
                "stream reconnecting account=%s client=%s attempt=%d delay_s=%.2f",
                self.listener.slug, self.name, attempt_number, delay,
            )  # fmt: skip

        await keep_connected(self._one_session, self._stopping, self._backoff, on_retry=reconnecting)

    async def _one_session(self) -> Session:
        delivered = await self._session()
        if self._skip_backoff:  # a watchdog reconnect: the broker is fine, we are not
            self._skip_backoff = False
            if delivered:
                self._backoff.reset()
            return Session.AT_ONCE
        return Session.DELIVERED if delivered else Session.FAILED

    async def _session(self) -> bool:
        """Run one connection; return True when it delivered at least one trade update."""
        delivered = False
        try:
            async with connect(
                self._url,
                open_timeout=CONNECT_TIMEOUT_S,
                close_timeout=1.0,
                ping_interval=10.0,
                ping_timeout=60.0,
                max_queue=1024,
                user_agent_header=USER_AGENT,
            ) as ws:
                self._ws = ws
                await self._handshake(ws)
                self.connected = self.ever_connected = True
                self.failed_connects = 0
                self.listener.connected(self.name)
                async for raw in ws:
                    delivered = self._on_frame(raw) or delivered
            self.listener.disconnected(self.name)
        except (
            OSError,
            TimeoutError,
            websockets.exceptions.WebSocketException,
            AuthenticationRefused,
            ValueError,
        ) as e:
            if self.connected:
                self.listener.disconnected(self.name)
            else:
                self.failed_connects += 1
                self.listener.connect_failed(self.name, e, self.failed_connects)
        finally:
            self.connected = False
            self._ws = None
        return delivered

    async def _handshake(self, ws: ClientConnection) -> None:
        auth = {
            "action": "authenticate",
            "data": {"key_id": self._account.api_key.reveal(), "secret_key": self._account.secret_key.reveal()},
        }
        await ws.send(json.dumps(auth))
        # The first frame back must be the authorization reply (docs/broker.md §4).
        reply = json.loads(await asyncio.wait_for(ws.recv(), AUTH_TIMEOUT_S))
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict) or data.get("status") != "authorized":
            status = data.get("status") if isinstance(data, dict) else None
            raise AuthenticationRefused(f"authentication refused (status {status!r}): unauthorized")
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))

    def _on_frame(self, raw: str | bytes) -> bool:
        try:
            message = decode_frame(raw)
        except ValueError:
            self.listener.frame_not_json(raw)
            return False
        self.listener.handle(message)
        return isinstance(message, dict) and message.get("stream") == "trade_updates"

    async def reconnect(self) -> None:
        """Close the current socket; ``run`` opens a new one at once."""
        ws = self._ws
        if ws is not None:
            self._skip_backoff = True
            await ws.close()

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop reconnecting, close the socket and wait for ``task``."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        await finish_or_cancel(task, CONNECT_TIMEOUT_S)


def _primary(listener: UpdateListener, account: AccountSettings, url: str) -> StreamClient | None:
    try:
        from coldharbour.broker.sdk_stream import PrimaryClient
    except ImportError as e:
        log.warning("alpaca-py stream unavailable, using the fallback client account=%s error=%s", account.slug, e)
        return None
    return PrimaryClient(
        listener,
        account.api_key.reveal(),
        account.secret_key.reveal(),
        url,
        backoff_base_s=BACKOFF_BASE_S,
        backoff_cap_s=BACKOFF_CAP_S,
    )


class TradeStream:
    """The one trade_updates connection of one account, with fallback and watchdog."""

    def __init__(
        self, account: AccountSettings, listener: UpdateListener, *, url: str | None = None, use_primary: bool = True
    ) -> None:
        self.account = account
        self.listener = listener
        self._url = url or account.stream_url
        self._use_primary = use_primary
        self.client: StreamClient | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the account connected until ``stop`` is set; return after a clean stop."""
        client = _primary(self.listener, self.account, self._url) if self._use_primary else None
        if client is None:
            client = FallbackClient(self.listener, self.account, url=self._url)
        self.client = client
        task = asyncio.create_task(client.run(), name=f"stream-{self.account.slug}-{client.name}")
        try:
            while not stop.is_set():
                if await sleep_or_stop(stop, WATCHDOG_INTERVAL_S):
                    break
                if self._should_fall_back(client, task):
                    await client.stop(task)
                    client = FallbackClient(
                        self.listener, self.account, url=self._url, first_attempt=client.failed_connects
                    )
                    self.client = client
                    task = asyncio.create_task(client.run(), name=f"stream-{self.account.slug}-{client.name}")
                else:
                    await self._watch(client)
        finally:
            await client.stop(task)

    def _should_fall_back(self, client: StreamClient, task: asyncio.Task[None]) -> bool:
        if isinstance(client, FallbackClient):
            return False
        if task.done():
            error = None if task.cancelled() else task.exception()
            log.error(
                "primary stream client ended account=%s error=%r; switching to fallback", self.account.slug, error
            )
            self.listener.counters["stream_fallbacks"] += 1
            return True
        if not client.ever_connected and client.failed_connects >= PRIMARY_MAX_FAILED_CONNECTS:
            log.warning(
                "primary stream client never connected account=%s attempts=%d; switching to fallback",
                self.account.slug, client.failed_connects,
            )  # fmt: skip
            self.listener.counters["stream_fallbacks"] += 1
            return True
        return False

    async def _watch(self, client: StreamClient) -> None:
        silent_s = self.listener.silent_for_s()
        if client.connected and self.listener.open_orders and silent_s >= SILENCE_RECONNECT_S:
            self.listener.counters["stream_silent_reconnects"] += 1
            log.warning(
                "stream silent while orders are open, reconnecting account=%s silent_s=%.0f open_orders=%d",
                self.account.slug, silent_s, len(self.listener.open_orders),
            )  # fmt: skip
            self.listener.frame_seen()  # one reconnect per silence period, not one per tick
            await client.reconnect()

"""The primary trade_updates client: alpaca-py's ``TradingStream``, run as a task, with hooks.

alpaca-py gives no reconnect callback (docs/broker.md §8), so we subclass it and wrap three private
methods of 0.44 (``_start_ws``: a connection attempt; ``_dispatch``: any frame; ``close``: the
socket went away). The SDK keeps doing what it does well: authentication, its own reconnect loop
with capped backoff and jitter (our constants are written over its ``_reconnect_*`` fields).
It runs with ``raw_data=True`` so its pydantic models never see a frame: our tolerant converter
does (a new enum value can never drop a fill). ``tests/broker/test_stream.py`` pins this
behaviour against the fake broker.

Importing this module fails when alpaca-py is missing; ``stream`` then uses the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from alpaca.trading.stream import TradingStream

from coldharbour.broker.listener import UpdateListener, decode_frame
from coldharbour.retry import finish_or_cancel

log = logging.getLogger(__name__)

STOP_TIMEOUT_S: Final = 6.0  # the SDK's receive loop polls its stop flag every 5 s
PING_INTERVAL_S: Final = 10.0
PING_TIMEOUT_S: Final = 180.0


class _HookedTradingStream(TradingStream):
    """``TradingStream`` that reports attempts, connections, frames and closes to its owner."""

    def __init__(self, owner: PrimaryClient, api_key: str, secret_key: str, url: str) -> None:
        super().__init__(
            api_key,
            secret_key,
            raw_data=True,
            url_override=url,
            # Replaces the SDK defaults as a whole (docs/broker.md §1): pass all three.
            websocket_params={"ping_interval": PING_INTERVAL_S, "ping_timeout": PING_TIMEOUT_S, "max_queue": 1024},
        )
        self._owner = owner

    async def _start_ws(self) -> None:
        try:
            await super()._start_ws()  # type: ignore[no-untyped-call]
        except Exception as e:
            self._owner.on_failed(e)
            raise
        self._owner.on_connected()

    async def _consume(self) -> None:
        """The SDK's receive loop (``TradingStream._consume``) without its per-frame timer.

        alpaca-py wraps every ``recv`` in ``wait_for(recv(), 5)`` only to look at its stop
        queue every 5 s: a task, a timer and two extra loop turns per frame, about 80 µs of CPU
        each (more than converting the frame). Here ``recv`` is awaited directly: a stop closes
        the socket (``PrimaryClient.stop`` calls ``close``), which ends ``recv`` at once, and the
        stop queue is still read after every frame. Frames are decoded by ``decode_frame``; one
        that is not JSON is counted and skipped (the SDK logged a traceback for it).
        """
        ws = self._ws
        if ws is None:  # closed between the connect and here (a stop, or the watchdog): start over
            self._running = False
            return
        listener = self._owner.listener
        while self._stop_stream_queue.empty():
            raw = await ws.recv()
            try:
                msg = decode_frame(raw)
            except ValueError:
                listener.frame_not_json(raw)
                continue
            if not isinstance(msg, dict):
                listener.handle(msg)  # counted as a bad frame there, as the SDK's ``msg.get`` would fail
                continue
            if msg.get("stream") == "trade_updates":
                self._data_received = True
            await self._dispatch(msg)
        self._stop_stream_queue.get_nowait()
        await self.close()

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        self._owner.listener.frame_seen()
        await super()._dispatch(msg)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._owner.on_closed()


class PrimaryClient:
    """One account's alpaca-py stream: ``run`` until ``stop``; ``reconnect`` drops the socket."""

    name = "alpaca-py"

    def __init__(
        self,
        listener: UpdateListener,
        api_key: str,
        secret_key: str,
        url: str,
        *,
        backoff_base_s: float,
        backoff_cap_s: float,
    ) -> None:
        self.listener = listener
        self.connected = False
        self.ever_connected = False
        self.failed_connects = 0
        self._stream = _HookedTradingStream(self, api_key, secret_key, url)
        self._stream._reconnect_min_backoff = backoff_base_s
        self._stream._reconnect_max_backoff = backoff_cap_s
        self._stream.subscribe_trade_updates(listener.on_update)

    def on_connected(self) -> None:
        """The SDK authenticated and subscribed: a (re)connect."""
        self.connected = self.ever_connected = True
        self.failed_connects = 0
        self.listener.connected(self.name)

    def on_failed(self, error: Exception) -> None:
        """A connection attempt failed (refused, HTTP 429, bad URI, authentication)."""
        self.failed_connects += 1
        self.listener.connect_failed(self.name, error, self.failed_connects)

    def on_closed(self) -> None:
        """The SDK closed its socket (a drop, an error, or our stop)."""
        if self.connected:
            self.listener.disconnected(self.name)
        self.connected = False

    async def run(self) -> None:
        """Run the SDK's loop until ``stop`` (it never raises to its caller by design)."""
        await self._stream._run_forever()  # type: ignore[no-untyped-call]

    async def reconnect(self) -> None:
        """Close the current socket; the SDK reconnects (and we publish a resync) by itself."""
        ws = self._stream._ws
        if ws is not None:
            await ws.close()

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop the SDK loop and wait for ``task`` (cancelled if it overstays)."""
        await self._stream.stop_ws()
        with contextlib.suppress(Exception):
            await self._stream.close()
        await finish_or_cancel(task, STOP_TIMEOUT_S)

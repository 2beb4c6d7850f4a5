"""The trade_updates WebSocket of the fake broker, served at ``/stream`` and ``/stream/``.

The handshake is Alpaca's (docs/broker.md section 4): the client sends
``{"action":"authenticate","data":{"key_id":…,"secret_key":…}}`` and the *first* frame back is
the authorization reply (nothing before it); on failure the reply says ``unauthorized`` and the
connection closes. ``{"action":"listen","data":{"streams":["trade_updates"]}}`` is answered with
the ``listening`` frame, after which the connection receives its own account's trade updates.
Frames go out as BINARY UTF-8 JSON, like the paper endpoint.

Every frame for one connection goes through that connection's queue and a single writer task,
so updates arrive in exactly the order the engine produced them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from coldharbour.retry import finish_or_cancel
from coldharbour.sim.engine import TradeUpdate
from coldharbour.sim.wire import CODE_RATE_LIMITED

log = logging.getLogger(__name__)

# (key id, secret) -> account name, or None when the pair is not valid.
Authenticator = Callable[[str, str], str | None]

# Close code for /sim/drop-stream: "going away", which every client treats as reconnectable.
DROP_CLOSE_CODE = 1001
# How long a server-side close waits for the client's close frame (aiohttp's default is 10 s,
# which a vanished client would make every drop and shutdown wait).
CLOSE_TIMEOUT_S = 1.0
SENT_LOG_MAX = 200_000  # send times kept for GET /sim/stream-sent


@dataclass(eq=False)
class _Connection:
    socket: web.WebSocketResponse
    account: str | None = None
    is_listening: bool = False
    queue: asyncio.Queue[tuple[bytes, str] | None] = field(default_factory=asyncio.Queue)
    sent: deque[tuple[str, str, int]] = field(default_factory=deque)  # the hub's log (``StreamHub.sent``)

    def send(self, stream: str, data: dict[str, object]) -> None:
        order = data.get("order")
        order_id = str(order.get("id", "")) if isinstance(order, dict) else ""
        self.queue.put_nowait((json.dumps({"stream": stream, "data": data}).encode(), order_id))

    async def write_loop(self) -> None:
        while (item := await self.queue.get()) is not None:
            if self.socket.closed:
                return
            frame, order_id = item
            if order_id:
                self.sent.append((order_id, str(self.account), time.time_ns()))
            await self.socket.send_bytes(frame)
        await self.socket.close()


def _credentials(message: dict[str, object]) -> tuple[str, str]:
    """Return (key, secret) from either handshake form Alpaca documents."""
    data = message.get("data")
    if message.get("action") == "auth":
        return str(message.get("key", "")), str(message.get("secret", ""))
    if isinstance(data, dict):
        return str(data.get("key_id", "")), str(data.get("secret_key", ""))
    return "", ""


class StreamHub:
    """Every open stream connection; publishes trade updates to the right account's listeners."""

    def __init__(self, authenticate: Authenticator) -> None:
        self._authenticate = authenticate
        self._connections: set[_Connection] = set()
        # Upgrades still to refuse with HTTP 429 (set through POST /sim/fail).
        self.upgrades_to_reject = 0
        self.connections_total = 0
        self.updates_sent = 0
        # (order id, account, time.time_ns()) of each trade update as it is written to its socket,
        # newest last (``GET /sim/stream-sent``: benchmarks time a fill from here).
        self.sent: deque[tuple[str, str, int]] = deque(maxlen=SENT_LOG_MAX)

    def listener_count(self, account: str | None = None) -> int:
        """Return how many connections are listening (for ``account`` when given)."""
        return sum(1 for c in self._connections if c.is_listening and (account is None or c.account == account))

    def publish(self, updates: Iterable[TradeUpdate]) -> None:
        """Queue each update for every listening connection of its account, in order."""
        for update in updates:
            self.publish_data(update.account, update.data)

    def publish_data(self, account: str, data: dict[str, object]) -> None:
        """Queue one raw trade_updates ``data`` object for ``account``'s listeners."""
        for connection in list(self._connections):
            if connection.is_listening and connection.account == account:
                connection.send("trade_updates", data)
                self.updates_sent += 1

    async def drop_all(self) -> int:
        """Close every connection (clients see an ordinary close and reconnect)."""
        connections = list(self._connections)
        for connection in connections:
            connection.is_listening = False
            await connection.socket.close(code=DROP_CLOSE_CODE, message=b"dropped by simulator")
        return len(connections)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one WebSocket connection from upgrade to close."""
        if self.upgrades_to_reject > 0:
            self.upgrades_to_reject -= 1
            return web.json_response({"code": CODE_RATE_LIMITED, "message": "connection limit exceeded"}, status=429)
        socket = web.WebSocketResponse(autoping=True, timeout=CLOSE_TIMEOUT_S)
        await socket.prepare(request)
        connection = _Connection(socket, sent=self.sent)
        self._connections.add(connection)
        self.connections_total += 1
        writer = asyncio.create_task(connection.write_loop(), name="sim-stream-writer")
        try:
            async for message in socket:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if not self._on_message(connection, message.data):
                    break
        finally:
            self._connections.discard(connection)
            connection.is_listening = False
            connection.queue.put_nowait(None)
            await finish_or_cancel(writer, 1.0)
        return socket

    def _on_message(self, connection: _Connection, raw: str | bytes) -> bool:
        """Handle one client frame; return False when the connection must end."""
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("ignored stream frame that is not JSON length=%d", len(raw))
            return True
        if not isinstance(message, dict):
            return True
        action = message.get("action")
        if action in {"authenticate", "auth"}:
            account = self._authenticate(*_credentials(message))
            if account is None:
                connection.send(
                    "authorization",
                    {
                        "action": "authenticate",
                        "status": "unauthorized",
                        "message": "access key verification failed",
                    },
                )
                connection.queue.put_nowait(None)
                return False
            connection.account = account
            connection.send("authorization", {"action": "authenticate", "status": "authorized"})
        elif action == "listen":
            data = message.get("data")
            streams = data.get("streams", []) if isinstance(data, dict) else []
            streams = [s for s in streams if s == "trade_updates"] if connection.account else []
            connection.is_listening = bool(streams)
            connection.send("listening", {"streams": streams})
        return True

"""The dashboard's listening socket: no client can exhaust the process.

``GuardedSite`` is aiohttp's TCP site with a cap: past ``max_connections`` open at once (or
being opened) a new connection is answered ``503`` with the security headers and closed
(``Refusal``), so idle or slow clients cannot use up the process's file descriptors;
``connection_cap`` raises the soft descriptor limit to the hard one and keeps the cap below it
with ``FD_RESERVE`` to spare, so the accept loop never meets ``EMFILE``. ``SecureHandler`` is
aiohttp's connection handler whose own error answers (the parser's 400 and 413, which no
middleware sees) carry the security headers too. Idle connections are closed by aiohttp's
keep-alive timer (``app.IDLE_TIMEOUT_S``), which also runs before a connection's first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import weakref
from collections import Counter
from typing import ClassVar, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from coldharbour.web.access import SECURITY_HEADERS

MAX_CONNECTIONS: Final = 4096  # open at once; the next one gets a 503 (lowered to fit the fd limit)
FD_RESERVE: Final = 384  # descriptors kept for the pool, LISTEN, the bus, logs and lingering refusals
REFUSAL_LINGER_S: Final = 1.0
REFUSALS_LINGERING: Final = 256  # within FD_RESERVE


class SecureHandler(RequestHandler):
    """aiohttp's connection handler whose own error answers carry the security headers."""

    __slots__ = ("__weakref__",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count as open (aiohttp's ``server.connections``), no longer as pending."""
        super().connection_made(transport)
        site = getattr(self._manager, "guarded_site", None)
        if isinstance(site, GuardedSite):
            site.pending.discard(self)

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """Answer as aiohttp does, with the security headers."""
        response = super().handle_error(request, status, exc, message)
        response.headers.update(SECURITY_HEADERS)
        return response


class Refusal(asyncio.Protocol):
    """A connection over the cap: answered ``503`` with the security headers, then closed.

    It is closed once the client's request has been read (closing on unread bytes would reset
    the connection before the client reads the answer), at the latest after ``REFUSAL_LINGER_S``;
    past ``REFUSALS_LINGERING`` such connections at once, at once.
    """

    ANSWER: Final = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS.items())
        + "Retry-After: 5\r\nConnection: close\r\nContent-Length: 35\r\n\r\n"
        + "busy: too many connections, retry\r\n"
    ).encode()
    lingering: ClassVar[int] = 0

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Answer; close when the request has been read (or soon)."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self.ANSWER)
        if Refusal.lingering >= REFUSALS_LINGERING:
            transport.close()
            return
        Refusal.lingering += 1
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        """The request (read, so the close is orderly): close."""
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop counting this one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            Refusal.lingering -= 1


class GuardedSite(web.TCPSite):
    """A TCP site that answers past ``max_connections`` open connections with ``Refusal``."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, max_connections: int, counters: Counter[str]
    ) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self.max_connections = max_connections
        self._counters = counters
        # Handlers built but not yet connected (a burst of accepts builds several before any
        # connects); weak, so one whose transport failed to come up is not counted forever.
        self.pending: weakref.WeakSet[SecureHandler] = weakref.WeakSet()

    def open_connections(self) -> int:
        """Return the connections open or being opened."""
        server = self._runner.server
        return len(self.pending) + (len(server.connections) if server is not None else 0)

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if self.open_connections() >= self.max_connections:
            self._counters["connections_refused"] += 1
            return Refusal()
        handler = SecureHandler(server, loop=server._loop, **server._kwargs)  # what web.Server() builds
        self.pending.add(handler)
        return handler

    async def start(self) -> None:
        """Listen (what ``TCPSite.start`` does, with the guarded protocol factory)."""
        await web.BaseSite.start(self)  # registers the site with the runner
        self._runner.server.guarded_site = self  # type: ignore[union-attr]  # read back by SecureHandler
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


def connection_cap(wanted: int = MAX_CONNECTIONS) -> int:
    """Raise the soft file-descriptor limit to the hard one; return ``wanted`` or what still fits below it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = wanted + FD_RESERVE if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(1, min(wanted, soft - FD_RESERVE))

"""The aiohttp application: the page, its static files, the JSON API and the SSE stream.

Routes: ``/`` (the page), ``/report`` (the report page), ``/static/*`` (their JS/CSS),
``/api/accounts``, ``/api/positions``, ``/api/closed``, ``/api/equity``, ``/api/metrics``,
``/api/report``, ``/api/status`` (JSON; ``?account=<slug>``,
the first account by default) and ``/api/stream`` (SSE: a ``snapshot`` frame, then the pushes).
Every answer carries a strict Content-Security-Policy (no inline script, everything from
``'self'``), the error answers too: a 404 or 405 of the router, a parameter refused with a 400
(one JSON line, never a 500), a request aiohttp's parser refuses (400, 413) and an unexpected
failure (500, logged). When a token is configured every route requires it (see ``access``).

A connection that sends no complete request within ``IDLE_TIMEOUT_S`` (before its first
request or between two) is closed; the listening socket is guarded (``guard``: a cap on open
connections, a clear 503 past it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

import psycopg
from aiohttp import web

from coldharbour.analytics.report import BenchmarkCloses, build_report
from coldharbour.db import dashboard
from coldharbour.db.notify import to_json
from coldharbour.web import access, guard
from coldharbour.web.access import SECURITY_HEADERS
from coldharbour.web.hub import CLOSE, Hub, frame

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
RECONNECT_MS: Final = 1000
HUB: Final = web.AppKey("hub", Hub)
BENCHMARK: Final = web.AppKey("benchmark", BenchmarkCloses)
IDLE_TIMEOUT_S: Final = 10.0  # no complete request within this: the connection is closed
PARENT_ID_MAX: Final = 128
PARENT_ID: Final = re.compile(r"[A-Za-z0-9._:-]+")  # an order id (Alpaca: a UUID)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require the token when one is set; put the security headers on every answer."""
    hub = request.app[HUB]
    token = hub.settings.web_token
    if token:
        offered = request.query.get(access.QUERY)
        if offered is not None and access.token_matches(token, offered):
            # Once from ?token=: keep it in an HttpOnly cookie and drop it from the address bar.
            rest = {k: v for k, v in request.query.items() if k != access.QUERY}
            target = access.same_origin_path(request.path) + (f"?{urlencode(rest)}" if rest else "")
            moved = web.Response(status=303, headers={**SECURITY_HEADERS, "Location": target})
            moved.set_cookie(access.COOKIE, offered, httponly=True, samesite="Strict", path="/")
            return moved
        presented = access.bearer(request.headers.get("Authorization")) or request.cookies.get(access.COOKIE)
        if not access.token_matches(token, presented):
            hub.counters["unauthorized"] += 1
            return web.Response(status=401, text="unauthorized: token required\n", headers=SECURITY_HEADERS)
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(SECURITY_HEADERS)
        raise
    except (asyncio.CancelledError, ConnectionError):
        raise  # the client left: nothing to answer
    except Exception:
        hub.counters["server_errors"] += 1
        log.exception("request failed path=%s", request.path)
        return web.Response(
            status=500, text=to_json({"error": "internal error (logged)"}), content_type="application/json",
            headers=SECURITY_HEADERS,
        )  # fmt: skip
    response.headers.update(SECURITY_HEADERS)
    return response


def bad_request(message: str) -> web.HTTPBadRequest:
    """Return the 400 of a refused parameter: ``{"error": message}`` on one line."""
    return web.HTTPBadRequest(text=to_json({"error": message}), content_type="application/json")


def closed_limit(request: web.Request) -> int:
    """Return ``?limit=`` (1 to ``CLOSED_LIMIT``, default ``CLOSED_LIMIT``); 400 on anything else."""
    text = request.query.get("limit")
    if text is None:
        return dashboard.CLOSED_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and int(text) > 0):
        raise bad_request(f"limit: expected a whole number from 1 to {dashboard.CLOSED_LIMIT}")
    return min(int(text), dashboard.CLOSED_LIMIT)


def parent_id(request: web.Request) -> str | None:
    """Return ``?parent_id=`` when given (an order id's characters only); 400 otherwise."""
    text = request.query.get("parent_id")
    if text is not None and not (len(text) <= PARENT_ID_MAX and PARENT_ID.fullmatch(text)):
        raise bad_request("parent_id: expected an order id (letters, digits, '-', '.', '_', ':')")
    return text


def _slug(request: web.Request) -> str:
    hub = request.app[HUB]
    slug = request.query.get("account") or next(iter(hub.accounts), "")
    if slug not in hub.accounts:
        raise web.HTTPNotFound(text=to_json({"error": "no such account"}), content_type="application/json")
    return slug


def _json(value: object) -> web.Response:
    return web.Response(text=to_json(value), content_type="application/json")


async def page(_: web.Request) -> web.FileResponse:
    """Serve the page."""
    return web.FileResponse(STATIC_DIR / "index.html")


async def api_accounts(request: web.Request) -> web.Response:
    """``[{"slug", "name"}]`` of every enabled account."""
    return _json([{"slug": a.slug, "name": a.name} for a in request.app[HUB].settings.accounts])


async def api_positions(request: web.Request) -> web.Response:
    """Open lots (``?parent_id=`` for one: an empty list when it is closed)."""
    hub, slug = request.app[HUB], _slug(request)
    async with hub.pool.connection() as conn:
        rows = await dashboard.positions(conn, hub.accounts[slug], parent_id(request))
    return _json(rows)


async def api_closed(request: web.Request) -> web.Response:
    """The newest closed slices (``?limit=``, at most 100)."""
    hub, slug, limit = request.app[HUB], _slug(request), closed_limit(request)
    async with hub.pool.connection() as conn:
        rows = await dashboard.closed(conn, hub.accounts[slug], limit)
    return _json(rows)


async def api_equity(request: web.Request) -> web.Response:
    """``{"daily": [...], "intraday": [...]}``."""
    hub, slug = request.app[HUB], _slug(request)
    async with hub.pool.connection() as conn:
        curves = await dashboard.equity(conn, hub.accounts[slug])
    return _json(curves)


async def api_metrics(request: web.Request) -> web.Response:
    """The KPI document (``null`` before the first one)."""
    hub, slug = request.app[HUB], _slug(request)
    async with hub.pool.connection() as conn:
        document = await dashboard.metrics(conn, hub.accounts[slug])
    return _json(document)


async def report_page(_: web.Request) -> web.FileResponse:
    """Serve the report page (``/report?account=<slug>``; docs/report.md)."""
    return web.FileResponse(STATIC_DIR / "report.html")


async def api_report(request: web.Request) -> web.Response:
    """The account's report (docs/report.md): the values, the series they come from, ``withheld``."""
    hub, slug = request.app[HUB], _slug(request)
    account = hub.settings.account(slug)
    async with hub.pool.connection() as conn:
        report = await build_report(conn, hub.accounts[slug], account, hub.settings.report_benchmark,
                                    request.app[BENCHMARK])  # fmt: skip
    return _json(report)


async def api_status(request: web.Request) -> web.Response:
    """Programs (as ``chmgr status``), market phase, and each account's UI heartbeat age."""
    hub = request.app[HUB]
    status = await hub.read_status()
    beats = {slug: hub.heartbeat_age_s(slug) for slug in hub.accounts}
    return _json({**status, "heartbeat_s": hub.settings.ui_heartbeat_s, "heartbeat_age_s": beats})


async def stream(request: web.Request) -> web.StreamResponse:
    """SSE: a ``snapshot`` frame, then every push for the account, until the browser leaves."""
    hub, slug = request.app[HUB], _slug(request)
    client = hub.join(slug)  # before the snapshot is read: a push during the read is queued
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    response.headers.update(SECURITY_HEADERS)
    try:
        await response.prepare(request)
        await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
        try:
            snapshot = await hub.snapshot(slug)
        except psycopg.Error as e:  # the database is away: end the stream, the browser retries
            log.warning("snapshot failed account=%s: %s", slug, " ".join(str(e).split()))
            return response
        await response.write(frame("snapshot", to_json(snapshot)))
        while True:
            frames = await client.take()
            await response.write(b"".join(frames))
            if frames[-1] == CLOSE:
                break
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        hub.leave(client)
    return response


def make_app(hub: Hub) -> web.Application:
    """Return the application serving ``hub``'s data."""
    app = web.Application(middlewares=[security])
    app[HUB] = hub
    app[BENCHMARK] = BenchmarkCloses()
    app.router.add_get("/", page)
    app.router.add_get("/report", report_page)
    app.router.add_get("/api/report", api_report)
    app.router.add_get("/api/accounts", api_accounts)
    app.router.add_get("/api/positions", api_positions)
    app.router.add_get("/api/closed", api_closed)
    app.router.add_get("/api/equity", api_equity)
    app.router.add_get("/api/metrics", api_metrics)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/stream", stream)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app


async def start(
    hub: Hub, host: str, port: int, max_connections: int = guard.MAX_CONNECTIONS
) -> tuple[web.AppRunner, int]:
    """Start serving on ``host:port`` (0: any free port); return the runner and the bound port."""
    runner = web.AppRunner(make_app(hub), access_log=None, shutdown_timeout=2.0, keepalive_timeout=IDLE_TIMEOUT_S)
    await runner.setup()
    site = guard.GuardedSite(runner, host, port, guard.connection_cap(max_connections), hub.counters)
    await site.start()
    bound = int(runner.addresses[0][1])
    log.info("dashboard listening url=http://%s:%d/", host if ":" not in host else f"[{host}]", bound)
    return runner, bound


async def stop_serving(hub: Hub, runner: web.AppRunner) -> None:
    """End every stream, then close the server."""
    hub.close_all()
    with contextlib.suppress(Exception):
        await runner.cleanup()

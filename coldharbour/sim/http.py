"""The fake broker's REST surface: Alpaca's ``/v2`` trading routes, the bars route, middlewares.

Requests are authenticated like Alpaca's (``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY``; 401
without them, 403 for a wrong pair) and every answer is JSON in Alpaca's shape: numbers as
strings, exact enums, ``{"code", "message"}`` error bodies. Nothing ever answers with an HTML
traceback: unexpected errors become a JSON 500 and are logged. Faults queued through
``POST /sim/fail`` replace the next ``/v2`` answers (429, 5xx, an HTML 500, malformed JSON).
Each key's REST requests are limited and counted like Alpaca's (``sim/limits.py``: 200 a
minute, then 429 with the ``X-RateLimit-*`` headers, which every answer carries).

The engine is synchronous and runs on the server's event loop, so each request's book change
and the publication of its trade updates happen without interleaving.
"""

from __future__ import annotations

import json
import logging
import time as wall_time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Final

from aiohttp import web

from coldharbour.sim import bars as bar_data
from coldharbour.sim.accounts import NEW_YORK
from coldharbour.sim.activities import parse_activity_query, select_activities
from coldharbour.sim.assets import book_symbol
from coldharbour.sim.calendar import MarketCalendar
from coldharbour.sim.corporate import list_announcements
from coldharbour.sim.engine import Engine, TradeUpdate
from coldharbour.sim.history import portfolio_history
from coldharbour.sim.limits import RestLimits
from coldharbour.sim.order_query import parse_order_query, select_orders
from coldharbour.sim.order_request import reject_unknown_body
from coldharbour.sim.orders import asset_id_for
from coldharbour.sim.wire import (
    CODE_BAD_REQUEST,
    CODE_FORBIDDEN,
    CODE_INTERNAL,
    CODE_INVALID_FIELD,
    CODE_NOT_FOUND,
    CODE_RATE_LIMITED,
    CODE_UNAUTHORIZED,
    SimError,
    parse_bool,
    parse_optional_decimal,
    parse_timestamp,
    unprocessable,
)
from coldharbour.sim.ws import StreamHub

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_LOG_SIZE: Final = 5000
# The market-data WebSocket paths under /v2 (sim/market_stream.py): not REST, no headers, no faults.
DATA_STREAM_PATHS: Final = frozenset({"/v2/iex", "/v2/sip"})
# Faults POST /sim/fail can queue besides an HTTP status (which gets a JSON body).
FAULT_NAMES: Final = frozenset({"html500", "malformed"})


@dataclass
class BrokerContext:
    """Everything the routes share: the engine, the stream hub, the calendar and the clock."""

    engine: Engine
    hub: StreamHub
    calendar: MarketCalendar
    clock: Callable[[], datetime]
    faults: deque[str] = field(default_factory=deque)
    request_log: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    requests_total: int = 0
    limits: RestLimits = field(default_factory=RestLimits)

    def publish(self, updates: list[TradeUpdate]) -> None:
        """Send trade updates to the stream listeners."""
        self.hub.publish(updates)


CONTEXT: Final = web.AppKey("context", BrokerContext)
# The account named by the request's API key, set by ``alpaca_auth``.
ACCOUNT: Final = web.RequestKey("account", str)


def error_response(error: SimError) -> web.Response:
    """Return Alpaca's JSON error response for ``error``."""
    return web.json_response(error.to_body(), status=error.status)


def context_of(request: web.Request) -> BrokerContext:
    """Return the broker context of the app serving ``request``."""
    return request.app[CONTEXT]


async def read_json(request: web.Request) -> object:
    """Return the request's JSON body; 400 with Alpaca's body when it is not JSON."""
    try:
        return await request.json(loads=json.loads)
    except ValueError as e:
        raise SimError(400, CODE_BAD_REQUEST, "request body format is invalid") from e


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON body; never an HTML page."""
    try:
        return await handler(request)
    except SimError as e:
        return error_response(e)
    except web.HTTPException as e:
        code = CODE_NOT_FOUND if e.status == 404 else CODE_BAD_REQUEST
        return web.json_response({"code": code, "message": e.reason.lower()}, status=e.status)
    except Exception:
        log.exception("unexpected error in route path=%s", request.path)
        return web.json_response({"code": CODE_INTERNAL, "message": "internal server error"}, status=500)


def _fault_response(fault: str) -> web.Response:
    if fault == "html500":
        return web.Response(
            status=500,
            text="<html><body><h1>500 Internal Server Error</h1></body></html>",
            content_type="text/html",
        )
    if fault == "malformed":
        return web.Response(status=200, text='{"id": "truncated', content_type="application/json")
    status = int(fault)
    if status == 429:  # as Alpaca answers it, with the window's headers (room again in a second)
        headers = {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset": str(int(wall_time.time()) + 1)}  # fmt: skip
        return web.json_response({"code": CODE_RATE_LIMITED, "message": "rate limit exceeded"}, status=429,
                                 headers=headers)  # fmt: skip
    code = status * 100_000 + 10_000
    return web.json_response({"code": code, "message": "simulated server error"}, status=status)


@web.middleware
async def injected_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer the next ``/v2`` calls with the faults queued through ``POST /sim/fail``."""
    context = context_of(request)
    if request.path.startswith("/v2/") and request.path not in DATA_STREAM_PATHS:
        context.requests_total += 1
        context.request_log.append({
            "method": request.method, "path": request.path, "query": request.query_string,
            "agent": request.headers.get("User-Agent", ""), "at": wall_time.time(),
        })  # fmt: skip
        if context.faults:
            return _fault_response(context.faults.popleft())
    return await handler(request)


@web.middleware
async def alpaca_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check Alpaca's key headers on ``/v2`` routes (and the data API's ``/v1`` announcements)
    and remember the account they name."""
    if request.path.startswith(("/v2/", "/v1/")) and request.path not in DATA_STREAM_PATHS:
        key_id = request.headers.get("APCA-API-KEY-ID")
        secret = request.headers.get("APCA-API-SECRET-KEY")
        if not key_id or not secret:
            raise SimError(401, CODE_UNAUTHORIZED, "request is not authorized")
        account = context_of(request).engine.account_for_key(key_id)
        if account is None or account.secret_key != secret:
            raise SimError(403, CODE_FORBIDDEN, "forbidden.")
        request[ACCOUNT] = account.name
    return await handler(request)


@web.middleware
async def rate_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count each key's REST request; over the key's limit answer 429 (Alpaca's headers on every answer)."""
    key_id = request.headers.get("APCA-API-KEY-ID")
    is_rest = request.path.startswith(("/v2/", "/v1beta3/crypto/us/")) and request.path not in DATA_STREAM_PATHS
    if not key_id or not is_rest:
        return await handler(request)
    verdict = context_of(request).limits.check(
        key_id, request.path, wall_time.time(), request.headers.get("User-Agent", "")
    )
    if not verdict.allowed:
        body = {"code": CODE_RATE_LIMITED, "message": "rate limit exceeded"}
        return web.json_response(body, status=429, headers=verdict.headers)
    try:
        response = await handler(request)
    except SimError as e:
        response = error_response(e)
    response.headers.update(verdict.headers)
    return response


def _account(request: web.Request) -> str:
    return request[ACCOUNT]


# ----- account, positions


async def get_account(request: web.Request) -> web.Response:
    """``GET /v2/account``."""
    context = context_of(request)
    return web.json_response(context.engine.account_json(_account(request), context.clock()))


async def get_positions(request: web.Request) -> web.Response:
    """``GET /v2/positions``."""
    engine = context_of(request).engine
    name = _account(request)
    symbols = sorted(engine.account(name).positions)
    return web.json_response([engine.position_json(name, symbol) for symbol in symbols])


def _symbol_of(engine: Engine, account: str, symbol_or_asset_id: str) -> str:
    """The book's symbol for a path segment: an asset id, ``AAPL``, ``BTCUSD`` or ``BTC/USD``."""
    held = engine.account(account).positions
    for symbol in held:
        if asset_id_for(symbol) == symbol_or_asset_id:
            return symbol
    return book_symbol(symbol_or_asset_id, held)


async def get_position(request: web.Request) -> web.Response:
    """``GET /v2/positions/{symbol}`` (a symbol or an asset id)."""
    engine = context_of(request).engine
    name = _account(request)
    symbol = _symbol_of(engine, name, request.match_info["symbol"])
    return web.json_response(engine.position_json(name, symbol))


async def close_position(request: web.Request) -> web.Response:
    """``DELETE /v2/positions/{symbol}?qty=|percentage=`` -> the closing order."""
    context = context_of(request)
    name = _account(request)
    symbol = _symbol_of(context.engine, name, request.match_info["symbol"])
    qty = parse_optional_decimal(request.query.get("qty"), "qty")
    percentage = parse_optional_decimal(request.query.get("percentage"), "percentage")
    if qty is not None and percentage is not None:
        raise unprocessable("only one of qty and percentage may be given", CODE_INVALID_FIELD)
    order, updates = context.engine.close_position(name, symbol, qty, percentage, context.clock())
    context.publish(updates)
    return web.json_response(context.engine.order_json(order, nested=True))


async def close_all_positions(request: web.Request) -> web.Response:
    """``DELETE /v2/positions?cancel_orders=`` -> 207 with one entry per position."""
    context = context_of(request)
    engine = context.engine
    name = _account(request)
    if parse_bool(request.query.get("cancel_orders", "false"), "cancel_orders"):
        _, updates = engine.cancel_all_orders(name, context.clock())
        context.publish(updates)
    results: list[dict[str, object]] = []
    for symbol in sorted(engine.account(name).positions):
        try:
            order, updates = engine.close_position(name, symbol, None, None, context.clock())
        except SimError as e:
            results.append({"symbol": symbol, "status": e.status, "body": e.to_body()})
            continue
        context.publish(updates)
        body = engine.order_json(order, nested=True)
        results.append({"symbol": symbol, "status": 200, "order_id": order.id, "body": body})
    return web.json_response(results, status=207)


# ----- orders


async def list_orders(request: web.Request) -> web.Response:
    """``GET /v2/orders`` with Alpaca's filters."""
    engine = context_of(request).engine
    query = parse_order_query(request.query)
    orders = select_orders(engine.account_orders(_account(request)), engine.orders, query)
    return web.json_response([engine.order_json(o, nested=query.nested) for o in orders])


async def submit_order(request: web.Request) -> web.Response:
    """``POST /v2/orders``."""
    context = context_of(request)
    body = reject_unknown_body(await read_json(request))
    order, updates = context.engine.submit_order(_account(request), body, context.clock())
    context.publish(updates)
    return web.json_response(context.engine.order_json(order, nested=True))


async def cancel_all_orders(request: web.Request) -> web.Response:
    """``DELETE /v2/orders`` -> 207 with one entry per canceled order."""
    context = context_of(request)
    orders, updates = context.engine.cancel_all_orders(_account(request), context.clock())
    context.publish(updates)
    results = [{"id": o.id, "status": 200, "body": context.engine.order_json(o, nested=False)} for o in orders]
    return web.json_response(results, status=207)


def _nested(request: web.Request) -> bool:
    return parse_bool(request.query.get("nested", "false"), "nested")


async def get_order(request: web.Request) -> web.Response:
    """``GET /v2/orders/{order_id}``."""
    engine = context_of(request).engine
    order = engine.find_order(_account(request), request.match_info["order_id"])
    return web.json_response(engine.order_json(order, nested=_nested(request)))


async def get_order_by_client_id(request: web.Request) -> web.Response:
    """``GET /v2/orders:by_client_order_id?client_order_id=``."""
    engine = context_of(request).engine
    client_order_id = request.query.get("client_order_id")
    if not client_order_id:
        raise unprocessable("client_order_id is required", CODE_INVALID_FIELD)
    order = engine.find_by_client_id(_account(request), client_order_id)
    return web.json_response(engine.order_json(order, nested=_nested(request)))


async def replace_order(request: web.Request) -> web.Response:
    """``PATCH /v2/orders/{order_id}`` -> the new order."""
    context = context_of(request)
    body = reject_unknown_body(await read_json(request))
    order, updates = context.engine.replace_order(
        _account(request), request.match_info["order_id"], body, context.clock()
    )
    context.publish(updates)
    return web.json_response(context.engine.order_json(order, nested=True))


async def cancel_order(request: web.Request) -> web.Response:
    """``DELETE /v2/orders/{order_id}`` -> 204 with an empty body."""
    context = context_of(request)
    updates = context.engine.cancel_order(_account(request), request.match_info["order_id"], context.clock())
    context.publish(updates)
    return web.Response(status=204)


# ----- calendar, clock, history, activities, bars


def _date_param(request: web.Request, key: str, default: date) -> date:
    text = request.query.get(key)
    if not text:
        return default
    try:
        return date.fromisoformat(text[:10])
    except ValueError as e:
        raise unprocessable(f"invalid {key}: {text!r}", CODE_INVALID_FIELD) from e


async def get_calendar(request: web.Request) -> web.Response:
    """``GET /v2/calendar?start=&end=`` (the whole known range by default)."""
    calendar = context_of(request).calendar
    first = _date_param(request, "start", calendar.sessions[0].day)
    last = _date_param(request, "end", calendar.sessions[-1].day)
    return web.json_response(calendar.calendar_json(first, last))


async def get_clock(request: web.Request) -> web.Response:
    """``GET /v2/clock``."""
    context = context_of(request)
    return web.json_response(context.calendar.clock_json(context.clock()))


async def get_portfolio_history(request: web.Request) -> web.Response:
    """``GET /v2/account/portfolio/history``."""
    context = context_of(request)
    account = context.engine.account(_account(request))
    body = portfolio_history(account, request.query, context.calendar, context.clock())
    return web.json_response(body)


async def get_activities(request: web.Request) -> web.Response:
    """``GET /v2/account/activities[/{activity_type}]`` with ``page_token`` paging."""
    engine = context_of(request).engine
    query = parse_activity_query(
        request.query, request.match_info.get("activity_type"), refused=engine.config.refused_activity_types
    )
    activities = engine.account(_account(request)).activities
    return web.json_response(select_activities(activities, query))


async def get_corporate_actions(request: web.Request) -> web.Response:
    """``GET /v1/corporate-actions`` (the data API's announcements, served on the same origin)."""
    context = context_of(request)
    today = context.clock().astimezone(NEW_YORK).date()
    body = list_announcements(context.engine.corporate_announcements(), request.query, today)
    return web.json_response(body)


async def get_bars(request: web.Request) -> web.Response:
    """``GET /v2/stocks/bars`` (the data API's route, served on the same origin)."""
    context = context_of(request)
    symbols = [s.strip().upper() for s in request.query.get("symbols", "").split(",") if s.strip()]
    if not symbols:
        raise unprocessable("symbols is required", CODE_INVALID_FIELD)
    size = bar_data.parse_timeframe(request.query.get("timeframe", "1Day"))
    now = context.clock()
    today = datetime.combine(now.astimezone(NEW_YORK).date(), time(0), tzinfo=NEW_YORK)
    start_text, end_text = request.query.get("start"), request.query.get("end")
    start = parse_timestamp(start_text, "start") if start_text else today
    end = parse_timestamp(end_text, "end") if end_text else now
    first_day = start.astimezone(NEW_YORK).date()
    last_day = min(end, now).astimezone(NEW_YORK).date()
    # A daily bar exists only for sessions that have opened.
    sessions = [s.day for s in context.calendar.between(first_day, last_day) if s.open <= now]
    rows = [(symbol, bar) for symbol in symbols for bar in context.engine.tape.bars(symbol, size, start, end, sessions)]
    if request.query.get("sort", "asc") == "desc":
        rows.sort(key=lambda row: (row[0], row[1].start), reverse=True)
    offset = int(request.query.get("page_token") or 0)
    limit = int(request.query.get("limit") or 10_000)
    page = rows[offset : offset + limit]
    result: dict[str, list[dict[str, object]]] = {}
    for symbol, bar in page:
        result.setdefault(symbol, []).append(bar_data.bar_to_json(bar))
    has_more = offset + limit < len(rows)
    return web.json_response({"bars": result, "next_page_token": str(offset + limit) if has_more else None})


def add_trading_routes(app: web.Application) -> None:
    """Register Alpaca's ``/v2`` routes on ``app``."""
    app.router.add_get("/v2/account", get_account)
    app.router.add_get("/v2/account/portfolio/history", get_portfolio_history)
    app.router.add_get("/v2/account/activities", get_activities)
    app.router.add_get("/v2/account/activities/{activity_type}", get_activities)
    app.router.add_get("/v2/positions", get_positions)
    app.router.add_delete("/v2/positions", close_all_positions)
    # A crypto pair may arrive as BTCUSD, BTC%2FUSD or a bare BTC/USD (two path segments).
    app.router.add_get("/v2/positions/{symbol:[^{}]+}", get_position)
    app.router.add_delete("/v2/positions/{symbol:[^{}]+}", close_position)
    app.router.add_get("/v2/orders", list_orders)
    app.router.add_post("/v2/orders", submit_order)
    app.router.add_delete("/v2/orders", cancel_all_orders)
    app.router.add_get("/v2/orders:by_client_order_id", get_order_by_client_id)
    app.router.add_get("/v2/orders/{order_id}", get_order)
    app.router.add_patch("/v2/orders/{order_id}", replace_order)
    app.router.add_delete("/v2/orders/{order_id}", cancel_order)
    app.router.add_get("/v2/calendar", get_calendar)
    app.router.add_get("/v2/clock", get_clock)
    app.router.add_get("/v2/stocks/bars", get_bars)
    app.router.add_get("/v1/corporate-actions", get_corporate_actions)

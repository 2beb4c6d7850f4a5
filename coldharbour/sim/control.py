"""The fake broker's ``/sim/*`` control routes, used by tests, the price feed and the demo.

- ``POST /sim/prices`` ``{"AAPL": 185.2, ...}``: new prices; orders they reach execute.
- ``POST /sim/activities`` ``[{"activity_type": "DIV", "net_amount": "2.40", ...}]``: cash
  activities (``account`` picks the account when there are several).
  An item whose ``id`` is already booked corrects it: ``"status": "canceled"`` or a new
  ``net_amount`` replaces it; a canceled FILL is a bust (position and cash reversed).
- ``POST /sim/corporate-actions`` ``{"type": "forward_split", "symbol": "AAPL", "old_rate": "1",
  "new_rate": "2"}`` (every type, its fields and the leg and position timings:
  ``sim/corporate.py``) -> ``{"id": ...}``; ``POST /sim/corporate-actions/{id}/complete`` shows
  the half a ``position`` timing held back; ``POST /sim/corporate-actions/{id}/cancel``
  (optional ``{"rebook": {...same body...}}``) cancels it and re-books. The announcements are
  served at ``GET /v1/corporate-actions`` (the data API's route, same origin).
- ``POST /sim/drop-stream``: close every trade_updates connection (market data:
  ``/sim/drop-data-stream``, sim/market_stream.py).
- ``POST /sim/fail`` ``{"queue": [429, 504, "html500", "malformed"], "ws_reject": 2}`` (or
  ``{"status": 429, "count": 2}``): answer the next ``/v2`` calls / stream upgrades with faults.
- ``POST /sim/config`` ``{"partial_fills": true, "partial_fill_slices": 3,
  "pending_new_events": false, "accepted_events": false, "omit_execution_id": false,
  "refused_activity_types": ["SPLIT"], "rest_limit_per_min": 200, "data_limit_per_min": 200}``:
  change behaviour at run time (``refused_activity_types``: filter values the activities listing
  answers with 422, as Alpaca refuses a value outside its filter list; a REST limit of 0 turns
  it off, sim/limits.py).
- ``POST /sim/emit`` ``{"account": "demo", "data": {...}}``: push one raw trade update.
- ``GET /sim/state``: the whole book; ``GET /sim/log``: the last ``/v2`` requests.
- ``GET /sim/requests?since=<unix s>&until=<unix s>``: per API key, the REST requests let through
  in that interval (``trading``, ``data``) and the 429s answered so far (``trading_refused``…).
- ``GET /sim/stream-sent``: ``[[order_id, account, ns], ...]``, when each trade update was written
  to its socket (``time.time_ns()``), oldest first; benchmarks time a fill from that moment.

No authentication: the broker listens on 127.0.0.1 only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import cast

from aiohttp import web

from coldharbour.domain.types import from_datetime
from coldharbour.sim.engine import Engine
from coldharbour.sim.http import FAULT_NAMES, context_of, read_json
from coldharbour.sim.limits import RestLimits
from coldharbour.sim.market_stream import market_data_of
from coldharbour.sim.wire import CODE_INVALID_FIELD, money_text, parse_bool, parse_optional_decimal, unprocessable


def prices_from_body(body: object) -> dict[str, Decimal]:
    """Return ``{"SYMBOL": price}`` from a /sim/prices body; 422 on a bad entry."""
    if not isinstance(body, Mapping) or not body:
        raise unprocessable("expected a JSON object of symbol to price", CODE_INVALID_FIELD)
    prices: dict[str, Decimal] = {}
    for symbol, value in body.items():
        price = parse_optional_decimal(value, f"price of {symbol}")
        if price is None:
            raise unprocessable(f"missing price for {symbol}", CODE_INVALID_FIELD)
        prices[str(symbol).upper()] = price
    return prices


async def post_prices(request: web.Request) -> web.Response:
    """Set prices and execute what they reach; answer with the number of updates sent."""
    context = context_of(request)
    prices = prices_from_body(await read_json(request))
    now = context.clock()
    updates = context.engine.set_prices(prices, now)
    context.publish(updates)
    if (market_data := market_data_of(request.app)) is not None:
        market_data.publish_prices(prices, from_datetime(now))
    return web.json_response({"prices": {s: str(p) for s, p in prices.items()}, "updates": len(updates)})


def _account_name(request: web.Request, item: Mapping[str, object]) -> str:
    accounts = context_of(request).engine.accounts
    name = item.get("account")
    if name is None:
        if len(accounts) != 1:
            raise unprocessable("account is required when the broker has several accounts")
        return next(iter(accounts))
    return str(name)


async def post_activities(request: web.Request) -> web.Response:
    """Book a list of cash activities (one object is accepted too); return them with ids."""
    context = context_of(request)
    body = await read_json(request)
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(item, Mapping) for item in items):
        raise unprocessable("expected a JSON list of activity objects", CODE_INVALID_FIELD)
    created = []
    for item in cast(list[Mapping[str, object]], items):
        fields = {key: value for key, value in item.items() if key != "account"}
        name = _account_name(request, item)
        created.append(context.engine.post_activity(name, fields, context.clock()))
    return web.json_response(created)


async def post_corporate_action(request: web.Request) -> web.Response:
    """Book a corporate action in every account holding its symbol (``sim/corporate.py``)."""
    context = context_of(request)
    action_id, activities, updates = context.engine.corporate_action(await read_json(request), context.clock())
    context.publish(updates)
    return web.json_response({"id": action_id, "activities": activities, "updates": len(updates)})


async def post_corporate_complete(request: web.Request) -> web.Response:
    """Show the half of an action its ``position`` timing held back (legs or position)."""
    context = context_of(request)
    listed = context.engine.complete_corporate_action(request.match_info["action_id"], context.clock())
    return web.json_response({"activities": listed})


async def post_corporate_cancel(request: web.Request) -> web.Response:
    """Cancel an action (legs listed again as ``canceled``) and optionally re-book ``rebook``."""
    context = context_of(request)
    body = await read_json(request) if request.can_read_body else {}
    if not isinstance(body, Mapping) or set(body) - {"rebook"}:
        raise unprocessable('expected {} or {"rebook": {...}}', CODE_INVALID_FIELD)
    canceled, new_id = context.engine.cancel_corporate_action(
        request.match_info["action_id"], body.get("rebook"), context.clock()
    )
    return web.json_response({"canceled": canceled, "id": new_id})


async def post_drop_stream(request: web.Request) -> web.Response:
    """Close every stream connection."""
    dropped = await context_of(request).hub.drop_all()
    return web.json_response({"dropped": dropped})


def _faults(body: Mapping[str, object]) -> list[str]:
    queue = body.get("queue")
    if queue is None and body.get("status") is not None:
        count = body.get("count", 1)
        queue = [body["status"]] * (count if isinstance(count, int) else 1)
    if queue is None:
        return []
    if not isinstance(queue, list):
        raise unprocessable("queue must be a list", CODE_INVALID_FIELD)
    faults = []
    for fault in queue:
        text = str(fault)
        if text not in FAULT_NAMES and not (text.isdigit() and 400 <= int(text) <= 599):
            raise unprocessable(f"unknown fault: {text!r}", CODE_INVALID_FIELD)
        faults.append(text)
    return faults


async def post_fail(request: web.Request) -> web.Response:
    """Queue faults for the next ``/v2`` calls and/or stream upgrades."""
    context = context_of(request)
    body = await read_json(request)
    if not isinstance(body, Mapping):
        raise unprocessable("expected a JSON object", CODE_INVALID_FIELD)
    context.faults.extend(_faults(body))
    ws_reject = body.get("ws_reject", 0)
    if not isinstance(ws_reject, int) or ws_reject < 0:
        raise unprocessable("ws_reject must be a non-negative integer", CODE_INVALID_FIELD)
    context.hub.upgrades_to_reject += ws_reject
    return web.json_response({"queued": list(context.faults), "ws_reject": context.hub.upgrades_to_reject})


async def post_config(request: web.Request) -> web.Response:
    """Change the engine's behaviour switches; answer with the whole configuration."""
    context = context_of(request)
    body = await read_json(request)
    if not isinstance(body, Mapping):
        raise unprocessable("expected a JSON object", CODE_INVALID_FIELD)
    config = context.engine.config
    switches = ("pending_new_events", "accepted_events", "omit_execution_id")
    limits = {"rest_limit_per_min": "trading", "data_limit_per_min": "data"}
    unknown = set(body) - {"partial_fills", "partial_fill_slices", "refused_activity_types", *switches, *limits}
    if unknown:
        raise unprocessable(f"unknown setting: {sorted(unknown)[0]}", CODE_INVALID_FIELD)
    for switch in switches:
        if switch in body:
            setattr(config, switch, parse_bool(body[switch], switch))
    if "partial_fills" in body:
        config.partial_fills = parse_bool(body["partial_fills"], "partial_fills")
    if "partial_fill_slices" in body:
        slices = body["partial_fill_slices"]
        if not isinstance(slices, int) or isinstance(slices, bool) or slices < 1:
            raise unprocessable("partial_fill_slices must be a positive integer")
        config.partial_fill_slices = slices
    if "refused_activity_types" in body:
        refused = body["refused_activity_types"]
        if not isinstance(refused, list) or not all(isinstance(code, str) and code for code in refused):
            raise unprocessable("refused_activity_types must be a list of activity codes")
        config.refused_activity_types = frozenset(code.upper() for code in refused)
    _set_limits(context.limits, body, limits)
    return web.json_response({**config.to_json(), **context.limits.config()})


def _set_limits(target: RestLimits, body: Mapping[str, object], names: Mapping[str, str]) -> None:
    for name, kind in names.items():
        if name in body:
            value = body[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise unprocessable(f"{name} must be a non-negative integer", CODE_INVALID_FIELD)
            target.per_min[kind] = value


async def post_emit(request: web.Request) -> web.Response:
    """Push one raw trade update ``data`` object to an account's listeners."""
    context = context_of(request)
    body = await read_json(request)
    if not isinstance(body, Mapping) or not isinstance(body.get("data"), dict):
        raise unprocessable('expected {"data": {...}}', CODE_INVALID_FIELD)
    name = _account_name(request, body)
    context.engine.account(name)
    context.hub.publish_data(name, cast(dict[str, object], body["data"]))
    return web.json_response({"listeners": context.hub.listener_count(name)})


def book_state(engine: Engine, now: datetime) -> dict[str, object]:
    """Return the whole book of ``engine`` as JSON-ready data."""
    return {
        "config": engine.config.to_json(),
        "prices": {symbol: money_text(price) for symbol, price in engine.prices.items()},
        "accounts": {
            name: {
                "account": engine.account_json(name, now),
                "positions": [engine.position_json(name, symbol) for symbol in sorted(book.positions)],
                "orders": [engine.order_json(order, nested=False) for order in engine.account_orders(name)],
                "activities": list(book.activities),
            }
            for name, book in engine.accounts.items()
        },
    }


async def get_state(request: web.Request) -> web.Response:
    """Dump the book, the stream counters and the fault queue."""
    context = context_of(request)
    state = book_state(context.engine, context.clock())
    state["stream"] = {
        "listeners": context.hub.listener_count(),
        "connections_total": context.hub.connections_total,
        "updates_sent": context.hub.updates_sent,
        "upgrades_to_reject": context.hub.upgrades_to_reject,
    }
    state["requests_total"] = context.requests_total
    state["faults"] = list(context.faults)
    return web.json_response(state)


async def get_log(request: web.Request) -> web.Response:
    """Return the last ``/v2`` requests (method, path, query), oldest first."""
    return web.json_response(list(context_of(request).request_log))


def _unix_param(request: web.Request, name: str, default: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise unprocessable(f"{name} must be Unix seconds", CODE_INVALID_FIELD) from None
    if not math.isfinite(value):
        raise unprocessable(f"{name} must be Unix seconds", CODE_INVALID_FIELD)
    return value


async def get_requests(request: web.Request) -> web.Response:
    """Return each key's REST requests in ``[since, until)`` and its 429s (sim/limits.py)."""
    since = _unix_param(request, "since", 0.0)
    until = _unix_param(request, "until", math.inf)
    limits = context_of(request).limits
    return web.json_response({"keys": limits.counts(since, until), "limits": limits.config()})


async def get_stream_sent(request: web.Request) -> web.Response:
    """Return when each trade update was written to its stream socket, oldest first."""
    return web.json_response(list(context_of(request).hub.sent))


def add_control_routes(app: web.Application) -> None:
    """Register the ``/sim/*`` routes on ``app``."""
    app.router.add_post("/sim/prices", post_prices)
    app.router.add_post("/sim/activities", post_activities)
    app.router.add_post("/sim/corporate-actions", post_corporate_action)
    app.router.add_post("/sim/corporate-actions/{action_id}/complete", post_corporate_complete)
    app.router.add_post("/sim/corporate-actions/{action_id}/cancel", post_corporate_cancel)
    app.router.add_post("/sim/drop-stream", post_drop_stream)
    app.router.add_post("/sim/fail", post_fail)
    app.router.add_post("/sim/config", post_config)
    app.router.add_post("/sim/emit", post_emit)
    app.router.add_get("/sim/state", get_state)
    app.router.add_get("/sim/log", get_log)
    app.router.add_get("/sim/stream-sent", get_stream_sent)
    app.router.add_get("/sim/requests", get_requests)

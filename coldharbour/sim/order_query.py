"""``GET /v2/orders`` filters and paging, as the Trading API applies them.

Defaults follow Alpaca: ``status=open``, ``limit=50`` (at most 500), ``direction=desc``. The
``after``/``until`` bounds are exclusive and compare ``submitted_at``. With ``nested=true``
legs are listed inside their parent (``legs``) and not again at top level, and a parent is
kept when it or any of its legs matches the status filter.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from coldharbour.sim.orders import FINAL_STATUSES, SimOrder
from coldharbour.sim.wire import CODE_INVALID_FIELD, parse_bool, parse_timestamp, unprocessable

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500

StatusFilter = Literal["open", "closed", "all"]


@dataclass(frozen=True)
class OrderQuery:
    """Filters of one ``GET /v2/orders`` call."""

    status: StatusFilter = "open"
    limit: int = DEFAULT_LIMIT
    after: datetime | None = None
    until: datetime | None = None
    direction: Literal["asc", "desc"] = "desc"
    nested: bool = False
    symbols: frozenset[str] | None = None
    side: str | None = None


def parse_order_query(params: Mapping[str, str]) -> OrderQuery:
    """Return the query of a ``GET /v2/orders`` call; 422 on an invalid value."""
    status = params.get("status", "open").lower()
    if status not in {"open", "closed", "all"}:
        raise unprocessable(f"invalid status: {status!r}", CODE_INVALID_FIELD)
    direction = params.get("direction", "desc").lower()
    if direction not in {"asc", "desc"}:
        raise unprocessable(f"invalid direction: {direction!r}", CODE_INVALID_FIELD)
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError as e:
        raise unprocessable("invalid limit", CODE_INVALID_FIELD) from e
    if not 1 <= limit <= MAX_LIMIT:
        raise unprocessable("limit must be between 1 and 500", CODE_INVALID_FIELD)
    side = params.get("side")
    if side is not None and side.lower() not in {"buy", "sell"}:
        raise unprocessable(f"invalid side: {side!r}", CODE_INVALID_FIELD)
    symbols = params.get("symbols")
    return OrderQuery(
        status="open" if status == "open" else "closed" if status == "closed" else "all",
        limit=limit,
        after=parse_timestamp(params["after"], "after") if params.get("after") else None,
        until=parse_timestamp(params["until"], "until") if params.get("until") else None,
        direction="asc" if direction == "asc" else "desc",
        nested=parse_bool(params.get("nested", "false"), "nested"),
        symbols=frozenset(s.strip().upper() for s in symbols.split(",") if s.strip()) if symbols else None,
        side=side.lower() if side else None,
    )


def _status_matches(order: SimOrder, status: StatusFilter) -> bool:
    if status == "all":
        return True
    is_closed = order.status in FINAL_STATUSES
    return is_closed if status == "closed" else not is_closed


def _matches(order: SimOrder, query: OrderQuery) -> bool:
    if query.symbols is not None and order.symbol not in query.symbols:
        return False
    if query.side is not None and order.side != query.side:
        return False
    submitted = order.submitted_at or order.created_at
    if query.after is not None and submitted <= query.after:
        return False
    return not (query.until is not None and submitted >= query.until)


def select_orders(orders: Iterable[SimOrder], lookup: Mapping[str, SimOrder], query: OrderQuery) -> list[SimOrder]:
    """Return the orders of one page (top-level orders only when ``nested``)."""
    selected = []
    for order in orders:
        if not _matches(order, query):
            continue
        if query.nested:
            if order.parent_id is not None:
                continue
            family = [order, *(lookup[leg_id] for leg_id in order.leg_ids)]
            if not any(_status_matches(member, query.status) for member in family):
                continue
        elif not _status_matches(order, query.status):
            continue
        selected.append(order)
    selected.sort(key=lambda o: (o.submitted_at or o.created_at, o.sequence), reverse=query.direction == "desc")
    return selected[: query.limit]

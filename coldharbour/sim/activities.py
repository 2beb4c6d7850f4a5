"""Account activities as the Trading API shapes them: FILL per execution, cash activities, paging.

Ids follow Alpaca's form ``<YYYYMMDDHHMMSSmmm New York time>::<uuid>`` so they sort by time;
a FILL's uuid part is the execution id of the matching trade update. ``page_token`` is the id of
the last item of the previous page and the page after it is the items strictly beyond that id
in the requested direction (newest first by default), exactly like the real API, which returns
``[]`` past the end.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Final, Literal

from coldharbour.sim.accounts import NEW_YORK, ActivityLog
from coldharbour.sim.orders import SimOrder
from coldharbour.sim.wire import (
    CODE_INVALID_FIELD,
    money_text,
    parse_decimal,
    parse_timestamp,
    timestamp_text,
    unprocessable,
)

# The ActivityType names alpaca-py knows (docs/broker.md section 3).
ALPACA_PY_ACTIVITY_TYPES: Final[frozenset[str]] = frozenset(
    {
        "FILL",
        "ACATC",
        "ACATS",
        "CFEE",
        "CIL",
        "CSD",
        "CSW",
        "DIV",
        "DIVCGL",
        "DIVCGS",
        "DIVNRA",
        "DIVROC",
        "DIVTXEX",
        "DIVWH",
        "EXTRD",
        "FEE",
        "FXTRD",
        "INT",
        "INTPNL",
        "JNLC",
        "JNLS",
        "MA",
        "MEM",
        "NC",
        "OCT",
        "OPASN",
        "OPCSH",
        "OPEXC",
        "OPEXP",
        "OPTRD",
        "PTC",
        "REORG",
        "SPIN",
        "SPLIT",
        "SWP",
        "VOF",
        "WH",
    }
)
# Codes Alpaca returns that alpaca-py's enum lacks (docs.alpaca.markets changelog 2026-11-06
# "activity types": DIVFEE, DIVFT, DIVTW, INTNRA, INTTW, PTR, SC, SSO, SSP, ...; OPCA; MISC).
ACTIVITY_TYPES: Final[frozenset[str]] = ALPACA_PY_ACTIVITY_TYPES | frozenset(
    {"DIVFEE", "DIVFT", "DIVTW", "INTNRA", "INTTW", "PTR", "SC", "SSO", "SSP", "OPCA", "MISC", "DVF"}
)
# Returned by the listing but refused as filter values (changelog 2026-11-06 "activity types").
NOT_FILTERABLE: Final[frozenset[str]] = frozenset({"SSO", "SSP", "CORR", "SEG", "DTCS"})
ACTIVITY_STATUSES: Final[frozenset[str]] = frozenset({"executed", "correct", "canceled"})
MAX_PAGE_SIZE: Final = 100

Direction = Literal["asc", "desc"]


def activity_id(moment: datetime, suffix: str) -> str:
    """Return an Alpaca-style activity id stamped with ``moment`` in New York time."""
    local = moment.astimezone(NEW_YORK)
    return f"{local:%Y%m%d%H%M%S}{local.microsecond // 1000:03d}::{suffix}"


def activity_moment(identifier: str) -> datetime | None:
    """Return the New York time encoded in an activity id, or None for a foreign id."""
    stamp = identifier.split("::", 1)[0]
    if len(stamp) != 17 or not stamp.isdigit():
        return None
    moment = datetime.strptime(stamp[:14], "%Y%m%d%H%M%S").replace(tzinfo=NEW_YORK)
    return moment.replace(microsecond=int(stamp[14:]) * 1000)


def fill_activity(
    order: SimOrder, execution_id: str, qty: Decimal, price: Decimal, is_short: bool, now: datetime
) -> dict[str, object]:
    """Return the FILL activity of one execution of ``order`` (already updated by it)."""
    remaining = order.remaining_qty
    return {
        "id": activity_id(now, execution_id),
        "activity_type": "FILL",
        "transaction_time": timestamp_text(now),
        "type": "fill" if order.status == "filled" else "partial_fill",
        "price": money_text(price),
        "qty": money_text(qty),
        "side": "sell_short" if is_short else order.side,
        "symbol": order.symbol,
        "leaves_qty": money_text(remaining if remaining is not None else qty),
        "order_id": order.id,
        "cum_qty": money_text(order.filled_qty),
        "order_status": order.status,
    }


def _optional_text(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise unprocessable(f"invalid {key}: {value!r}", CODE_INVALID_FIELD)
    return value


def cash_activity(body: Mapping[str, object], suffix: str, now: datetime) -> dict[str, object]:
    """Return a non-trade activity (DIV, FEE, JNLC, CSD, ...) built from a /sim/activities item.

    ``net_amount`` is signed (fees and withdrawals negative); ``id`` and ``date`` default to
    now when absent. Raise ``SimError`` (422) on an unknown type or a bad amount.
    """
    activity_type = (_optional_text(body, "activity_type") or "").upper()
    if activity_type == "FILL" or activity_type not in ACTIVITY_TYPES:
        raise unprocessable(f"invalid activity type: {activity_type!r}", CODE_INVALID_FIELD)
    net_amount = parse_decimal(body.get("net_amount"), "net_amount")
    status = _optional_text(body, "status") or "executed"
    if status not in ACTIVITY_STATUSES:
        raise unprocessable(f"invalid status: {status!r}", CODE_INVALID_FIELD)
    date_text = _optional_text(body, "date")
    if date_text is None:
        activity_date = now.astimezone(NEW_YORK).date()
        default_id = activity_id(now, suffix)
    else:
        activity_date = _parse_date(date_text)
        default_id = f"{activity_date:%Y%m%d}000000000::{suffix}"
    activity: dict[str, object] = {
        "id": _optional_text(body, "id") or default_id,
        "activity_type": activity_type,
        "date": activity_date.isoformat(),
        "net_amount": money_text(net_amount),
        "description": _optional_text(body, "description") or "",
        "status": status,
    }
    for key in ("symbol", "qty", "price", "per_share_amount", "currency", "cusip"):
        if body.get(key) is not None:
            activity[key] = str(body[key])
    return activity


def cash_effect(activity: Mapping[str, object]) -> Decimal:
    """Return how much a non-trade activity moves cash (a canceled one moves nothing)."""
    if activity.get("status") == "canceled":
        return Decimal(0)
    return Decimal(str(activity["net_amount"]))


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError as e:
        raise unprocessable(f"invalid date: {text!r}", CODE_INVALID_FIELD) from e


def insert_activity(activities: ActivityLog, activity: dict[str, object]) -> None:
    """Insert ``activity`` keeping the log sorted by id; 422 on a duplicate id."""
    new_id = str(activity["id"])
    ids = activities.ids
    position = bisect.bisect_left(ids, new_id)
    if position < len(ids) and ids[position] == new_id:
        raise unprocessable(f"activity id already exists: {new_id!r}", CODE_INVALID_FIELD)
    ids.insert(position, new_id)
    activities.insert(position, activity)


@dataclass(frozen=True)
class ActivityQuery:
    """Filters and paging of ``GET /v2/account/activities``."""

    types: frozenset[str] | None = None
    category: str | None = None
    on_date: date | None = None
    after: datetime | None = None
    until: datetime | None = None
    direction: Direction = "desc"
    page_size: int = MAX_PAGE_SIZE
    page_token: str | None = None


def parse_activity_query(
    params: Mapping[str, str], path_type: str | None, *, refused: frozenset[str] = frozenset()
) -> ActivityQuery:
    """Return the query of an activities request; 422 on an unknown type or bad value.

    ``refused``: filter values refused besides ``NOT_FILTERABLE`` (``POST /sim/config``).
    """
    raw_types = path_type or params.get("activity_types") or params.get("activity_type")
    types = None
    if raw_types:
        types = frozenset(item.strip().upper() for item in raw_types.split(",") if item.strip())
        unknown = sorted((types - ACTIVITY_TYPES) | (types & (NOT_FILTERABLE | refused)))
        if unknown:
            raise unprocessable(f"invalid activity type: {unknown[0]}", CODE_INVALID_FIELD)
    category = params.get("category")
    if category not in {None, "trade_activity", "non_trade_activity"}:
        raise unprocessable(f"invalid category: {category!r}", CODE_INVALID_FIELD)
    direction = params.get("direction", "desc").lower()
    if direction not in {"asc", "desc"}:
        raise unprocessable(f"invalid direction: {direction!r}", CODE_INVALID_FIELD)
    try:
        page_size = int(params.get("page_size", MAX_PAGE_SIZE))
    except ValueError as e:
        raise unprocessable("invalid page_size", CODE_INVALID_FIELD) from e
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise unprocessable("page_size must be between 1 and 100", CODE_INVALID_FIELD)
    return ActivityQuery(
        types=types,
        category=category,
        on_date=_parse_date(params["date"]) if params.get("date") else None,
        after=parse_timestamp(params["after"], "after") if params.get("after") else None,
        until=parse_timestamp(params["until"], "until") if params.get("until") else None,
        direction="asc" if direction == "asc" else "desc",
        page_size=page_size,
        page_token=params.get("page_token") or None,
    )


def _matches(activity: Mapping[str, object], query: ActivityQuery) -> bool:
    activity_type = str(activity["activity_type"])
    if query.types is not None and activity_type not in query.types:
        return False
    if query.category == "trade_activity" and activity_type != "FILL":
        return False
    if query.category == "non_trade_activity" and activity_type == "FILL":
        return False
    moment = activity_moment(str(activity["id"]))
    if moment is None:
        return query.on_date is None and query.after is None and query.until is None
    if query.on_date is not None and moment.date() != query.on_date:
        return False
    if query.after is not None and moment <= query.after:
        return False
    return not (query.until is not None and moment >= query.until)


def select_activities(activities: list[dict[str, object]], query: ActivityQuery) -> list[dict[str, object]]:
    """Return one page of activities matching ``query``."""
    ordered = activities if query.direction == "asc" else list(reversed(activities))
    token = query.page_token
    page: list[dict[str, object]] = []
    for activity in ordered:
        identifier = str(activity["id"])
        if token is not None and (identifier <= token if query.direction == "asc" else identifier >= token):
            continue
        if _matches(activity, query):
            page.append(activity)
            if len(page) == query.page_size:
                break
    return page


def midnight(day: date) -> datetime:
    """Return New York midnight of ``day`` (activity dates are New York dates)."""
    return datetime.combine(day, time(0), tzinfo=NEW_YORK)

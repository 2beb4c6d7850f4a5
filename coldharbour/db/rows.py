"""Domain values ↔ database rows: column tuples for the upserts, dicts for NOTIFY payloads.

Pure conversions, no I/O. The column order of every tuple is its table's description
(``db.tables``), from which ``db.upserts`` builds its statements too, so the two cannot drift.

The canonical stored forms (what a fill or an order reads back as: ``canonical_fill``,
``stored_fill``, ``canonical_order``, ``fill_from_activity``) are domain code in
``domain.stored``; the readers here (``*_from_values``, ``*_from_tuple``) give back the same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, cast

import msgspec

from coldharbour.db import tables
from coldharbour.domain.cashflows import CashFlow
from coldharbour.domain.equity import DailyRow, IntradayPoint
from coldharbour.domain.money import ZERO, normalize
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.schedule import Session
from coldharbour.domain.stored import as_uuid, micros
from coldharbour.domain.types import (
    CLOSED_COLUMNS,
    ClosedSlice,
    Fill,
    MovedFlag,
    OpenRow,
    Order,
    OrderSide,
    from_datetime,
    to_datetime,
)

_JSON: Final = msgspec.json.Encoder(decimal_format="string")
# Column orders of the rows below: the table descriptions' (``db.tables``).
POSITION_COLUMNS: Final = tables.POSITIONS.names
ORDER_COLUMNS: Final = tables.RAW_ORDERS.names
ACTIVITY_COLUMNS: Final = tables.RAW_ACTIVITIES.names
CASH_FLOW_COLUMNS: Final = tables.CASH_FLOWS.names
DAILY_COLUMNS: Final = tables.DAILY_EQUITY.names
INTRADAY_COLUMNS: Final = tables.INTRADAY_EQUITY.names
SESSION_COLUMNS: Final = tables.MARKET_SCHEDULE.names

_TIMES: dict[int, datetime] = {}  # lately converted times: a fill's rows repeat its time and ``now``


def _time(ts_ns: int) -> datetime:
    """Return ``to_datetime(ts_ns)``, shared with the other rows of the same time (bounded memo)."""
    found = _TIMES.get(ts_ns)
    if found is None:
        if len(_TIMES) >= 4096:
            _TIMES.clear()
        found = _TIMES[ts_ns] = to_datetime(ts_ns)
    return found


def _dt(ts_ns: int | None) -> datetime | None:
    return None if ts_ns is None else _time(ts_ns)


def _ns(value: datetime | None) -> int | None:
    return None if value is None else from_datetime(value)


# -- open positions ----------------------------------------------------------------------------


def row_of(spec: tables.TableSpec, value: object) -> tuple[object, ...]:
    """Return ``value`` as a row of ``spec``: each column is ``value``'s attribute of that name.

    A ``timestamptz`` column given in UTC ns becomes a datetime (``_time``). The tables whose
    domain value names its fields as the columns (open rows, closed slices, daily rows, intraday
    points, sessions, cash flows) need no other code: a new column is a new field and its
    description.
    """
    values: tuple[object, ...] = spec.getter(value)
    times = spec.times
    if not times:
        return values
    row = list(values)
    for i in times:
        if row[i].__class__ is int:
            row[i] = _time(row[i])  # type: ignore[arg-type]
    return tuple(row)


def open_row_values(row: OpenRow) -> tuple[object, ...]:
    """Return the ``POSITION_COLUMNS`` values of ``row``."""
    return row_of(tables.POSITIONS, row)


def open_row_json(row: OpenRow) -> dict[str, object]:
    """Return ``row`` as the NOTIFY ``row`` object (every open-position column)."""
    return dict(zip(POSITION_COLUMNS, open_row_values(row), strict=True))


def open_row_from_values(values: tuple[Any, ...]) -> OpenRow:
    """Return the ``OpenRow`` of a ``SELECT`` of ``POSITION_COLUMNS``."""
    record = dict(zip(POSITION_COLUMNS, values, strict=True))
    record["filled_at"] = _ns(record["filled_at"]) or 0
    record["bar_ts"] = _ns(record["bar_ts"])
    record["updated_at"] = _ns(record["updated_at"]) or 0
    record["avg_fill"] = record["avg_fill"] if record["avg_fill"] is not None else Decimal(0)
    record["avg_px_symbol"] = record["avg_px_symbol"] if record["avg_px_symbol"] is not None else record["avg_fill"]
    record["buy_value"] = record["buy_value"] if record["buy_value"] is not None else Decimal(0)
    record["holding_days"] = record["holding_days"] or 0
    record["moved_flag"] = cast(MovedFlag, record["moved_flag"])
    return OpenRow(**record)


# -- closed slices -----------------------------------------------------------------------------


def closed_values(found: ClosedSlice) -> tuple[object, ...]:
    """Return the ``CLOSED_COLUMNS`` values of a slice."""
    return row_of(tables.CLOSED, found)


def closed_json(found: ClosedSlice) -> dict[str, object]:
    """Return a slice as a NOTIFY ``rows`` element (the closed-trades columns)."""
    return dict(zip(CLOSED_COLUMNS, closed_values(found), strict=True))


# -- raw orders --------------------------------------------------------------------------------


def order_values(order: Order, raw_json: str) -> tuple[object, ...]:
    """Return the ``ORDER_COLUMNS`` values of one order version.

    ``raw_json`` is the broker's JSON text; when empty (``"{}"``) our own encoding of the order
    is stored, so ``order_class`` and the leg ids survive a restart either way.
    """
    if not raw_json or raw_json == "{}":  # no broker JSON (a leg, a snapshot order): ours below
        parsed = {}
    else:
        try:
            parsed = msgspec.json.decode(raw_json)
        except msgspec.DecodeError:
            parsed = {}
    if not isinstance(parsed, dict) or not parsed:
        raw_json = _JSON.encode(order).decode()
        parsed = {}
    legs = parsed.get("legs")
    legs_json = _JSON.encode(legs).decode() if isinstance(legs, list) and legs else None
    if legs_json is None and order.legs:
        legs_json = _JSON.encode([{"id": leg} for leg in order.legs]).decode()
    return (
        order.id, order.client_order_id or None, order.parent_id, order.replaced_by, order.replaces,
        order.symbol, order.side, order.order_type, order.status, order.qty, order.filled_qty,
        order.filled_avg_price, order.limit_price, order.stop_price,
        _TIMES.get(order.created_at) or _time(order.created_at),
        _TIMES.get(order.updated_at) or _time(order.updated_at), _dt(order.filled_at), _dt(order.expires_at), raw_json,
        legs_json,
    )  # fmt: skip


def _leg_ids(legs: object) -> tuple[str, ...]:
    if not isinstance(legs, list):
        return ()
    ids = [leg.get("id") if isinstance(leg, dict) else leg for leg in legs]
    return tuple(str(i) for i in ids if i)


def order_from_values(values: Mapping[str, Any]) -> Order:
    """Return the ``Order`` of a stored raw order row (``ORDER_COLUMNS`` as a mapping)."""
    raw = values.get("raw_json") or {}
    order_class = raw.get("order_class") if isinstance(raw, dict) else None
    return Order(
        id=str(values["id"]), symbol=values["symbol"], side=cast(OrderSide, values["side"]),
        order_type=values["order_type"], status=values["status"],
        created_at=from_datetime(values["created_at"]),
        updated_at=from_datetime(values["updated_at"] or values["created_at"]),
        order_class=str(order_class or "simple"), qty=values["qty"],
        filled_qty=values["filled_qty"] if values["filled_qty"] is not None else Decimal(0),
        filled_avg_price=values["filled_avg_price"], limit_price=values["limit_price"],
        stop_price=values["stop_price"], parent_id=values["parent_id"], replaces=values["replaces"],
        replaced_by=values["replaced_by"], legs=_leg_ids(values.get("legs")),
        expires_at=_ns(values["expires_at"]), filled_at=_ns(values["filled_at"]),
        client_order_id=values["client_order_id"] or "",
    )  # fmt: skip


class Interner:
    """One object per distinct string and per distinct number text across a start-up load.

    A history repeats its symbols, order ids (an order and its fills), sides, statuses and most
    quantities and prices: shared, they cost one object each instead of one per value. The
    converters below call ``strings.setdefault(s, s)`` and ``numbers.get(t) or number(t)``
    inline (a method call per value was a quarter of the load).
    """

    __slots__ = ("normals", "numbers", "strings")

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.numbers: dict[str, Decimal] = {}
        self.normals: dict[str, Decimal] = {}

    def number(self, text: str) -> Decimal:
        """Return ``Decimal(text)`` (one object per distinct text: equal text, equal value and form)."""
        found = self.numbers.get(text)
        if found is None:
            found = self.numbers[text] = Decimal(text)
        return found

    def normal(self, text: str) -> Decimal:
        """Return ``normalize(Decimal(text))``, shared like ``number``."""
        found = self.normals.get(text)
        if found is None:
            found = self.normals[text] = normalize(Decimal(text))
        return found


def order_from_tuple(row: tuple[Any, ...], shared: Interner) -> Order:
    """Return the ``Order`` of a row of ``db.loads``' order SELECT (server-converted: the same
    order as ``order_from_values`` of the whole row)."""
    (order_id, symbol, side, order_type, status, created_at, updated_at, order_class, qty, filled_qty,
     filled_avg_price, limit_price, stop_price, parent_id, replaces, replaced_by, legs, expires_at, filled_at,
     client_order_id) = row  # fmt: skip
    text, known, number = shared.strings.setdefault, shared.numbers.get, shared.number
    return Order(
        id=text(order_id, order_id), symbol=text(symbol, symbol), side=cast(OrderSide, text(side, side)),
        order_type=text(order_type, order_type), status=text(status, status), created_at=created_at,
        updated_at=updated_at, order_class=text(order_class, order_class) if order_class else "simple",
        qty=None if qty is None else known(qty) or number(qty),
        filled_qty=ZERO if filled_qty is None else known(filled_qty) or number(filled_qty),
        filled_avg_price=None if filled_avg_price is None else known(filled_avg_price) or number(filled_avg_price),
        limit_price=None if limit_price is None else known(limit_price) or number(limit_price),
        stop_price=None if stop_price is None else known(stop_price) or number(stop_price),
        parent_id=None if parent_id is None else text(parent_id, parent_id),
        replaces=None if replaces is None else text(replaces, replaces),
        replaced_by=None if replaced_by is None else text(replaced_by, replaced_by),
        legs=() if legs is None else tuple(text(i, i) for i in _leg_ids(msgspec.json.decode(legs))),
        expires_at=expires_at, filled_at=filled_at, client_order_id=client_order_id or "",
    )  # fmt: skip


# -- raw activities and fills ----------------------------------------------------------------


def fill_from_tuple(row: tuple[Any, ...], shared: Interner) -> Fill | None:
    """Return the fill of a row of ``db.loads``' fill SELECT (the ``raw_json`` fallbacks resolved by
    the server: the same fill as ``fill_from_activity``), None for an incomplete row."""
    order_id, symbol, side, qty_text, price_text, ts, execution_id, cum_text, cum_is_text, _ = row
    if not (order_id and symbol and qty_text and price_text and side in ("buy", "sell", "sell_short")):
        return None
    text, known, number = shared.strings.setdefault, shared.numbers.get, shared.number
    qty, price = known(qty_text) or number(qty_text), known(price_text) or number(price_text)
    if not (qty and price):
        return None
    if cum_text is None or (cum_is_text and not cum_text):  # absent, JSON null or ""
        cum_qty: Decimal | None = None
    elif cum_is_text:
        cum_qty = shared.normals.get(cum_text) or shared.normal(cum_text)
    else:  # a JSON number (or worse): read as ``msgspec`` reads it, then as ``fill_from_activity`` does
        cum_qty = normalize(Decimal(str(msgspec.json.decode(cum_text))))
    return Fill(
        order_id=text(order_id, order_id), symbol=text(symbol, symbol), side=cast(OrderSide, text(side, side)),
        qty=abs(qty) if qty.is_signed() else qty, price=price, ts=micros(ts), execution_id=execution_id,
        cum_qty=cum_qty,
    )  # fmt: skip


def activity_values(record: ActivityRecord) -> tuple[object, ...]:
    """Return the ``ACTIVITY_COLUMNS`` values of an activity (non-UUID ids become null columns)."""
    return (
        record.id, record.activity_type.upper(),
        _TIMES.get(record.transaction_time) or _time(record.transaction_time), record.symbol,
        record.side, record.qty, record.price, record.net_amount,
        as_uuid(record.execution_id), as_uuid(record.order_id), record.raw_json or "{}",
    )  # fmt: skip


def activity_from_values(values: tuple[Any, ...]) -> ActivityRecord:
    """Return the ``ActivityRecord`` of a ``SELECT`` of ``ACTIVITY_COLUMNS`` (``raw_json::text``)."""
    record = dict(zip(ACTIVITY_COLUMNS, values, strict=True))
    return ActivityRecord(
        id=record["id"], activity_type=record["activity_type"],
        transaction_time=from_datetime(record["transaction_time"]), symbol=record["symbol"],
        side=record["side"], qty=record["qty"], price=record["price"],
        net_amount=record["net_amount"],
        execution_id=str(record["execution_id"]) if record["execution_id"] else None,
        order_id=str(record["order_id"]) if record["order_id"] else None,
        raw_json=record["raw_json"] or "{}",
    )  # fmt: skip


# -- analytics rows ----------------------------------------------------------------------------


def cash_flow_values(flow: CashFlow) -> tuple[object, ...]:
    """Return the ``CASH_FLOW_COLUMNS`` values of a cash flow."""
    return row_of(tables.CASH_FLOWS, flow)


def daily_values(row: DailyRow) -> tuple[object, ...]:
    """Return the ``DAILY_COLUMNS`` values of a daily equity row."""
    return row_of(tables.DAILY_EQUITY, row)


def intraday_values(point: IntradayPoint) -> tuple[object, ...]:
    """Return the ``INTRADAY_COLUMNS`` values of an intraday equity point."""
    return row_of(tables.INTRADAY_EQUITY, point)


def session_values(session: Session) -> tuple[object, ...]:
    """Return the ``SESSION_COLUMNS`` values of a market session."""
    return row_of(tables.MARKET_SCHEDULE, session)

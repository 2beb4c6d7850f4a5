"""Domain values ↔ database rows: column tuples for the upserts, dicts for NOTIFY payloads.

Pure conversions, no I/O. The column order of every tuple is the ``*_COLUMNS`` constant next to
it; ``db.upserts`` builds its statements from the same constants, so the two cannot drift.

Canonical forms. The tables hold ``timestamptz`` (microseconds) and UUID columns, the domain
holds UTC nanoseconds and free strings. Everything ``state`` applies to its ledger first goes
through the same conversion the start-up loader uses (``canonical_fill``, ``canonical_order``),
so the ledger built live and the ledger rebuilt from the tables are equal value for value.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, cast

import msgspec

from coldharbour.domain.cashflows import CashFlow
from coldharbour.domain.equity import DailyRow, IntradayPoint
from coldharbour.domain.money import ZERO, normalize
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.schedule import Session
from coldharbour.domain.types import (
    CLOSED_COLUMNS,
    NS_PER_SECOND,
    ClosedSlice,
    Fill,
    MovedFlag,
    OpenRow,
    Order,
    OrderSide,
    from_datetime,
    to_datetime,
)

POSITION_COLUMNS: Final = (
    "parent_id", "symbol", "side", "filled_at", "qty", "avg_fill", "avg_px_symbol", "sl_child",
    "sl_px", "tp_child", "tp_px", "mkt_px", "bar_px", "bar_ts", "moved_flag", "buy_value",
    "holding_days", "days_to_expire", "mkt_value", "profit_loss", "profit_loss_lot",
    "tp_sl_reach_pct", "updated_at",
)  # fmt: skip
POSITION_TYPES: Final = (
    "text", "text", "text", "timestamptz", "numeric", "numeric", "numeric", "text", "numeric",
    "text", "numeric", "numeric", "numeric", "timestamptz", "text", "numeric", "int", "int",
    "numeric", "numeric", "numeric", "numeric", "timestamptz",
)  # fmt: skip
CLOSED_TYPES: Final = (
    "text", "text", "text", "text", "text", "numeric", "timestamptz", "numeric", "timestamptz",
    "numeric", "text", "numeric", "numeric", "numeric", "numeric", "numeric", "numeric",
)  # fmt: skip
ORDER_COLUMNS: Final = (
    "id", "client_order_id", "parent_id", "replaced_by", "replaces", "symbol", "side",
    "order_type", "status", "qty", "filled_qty", "filled_avg_price", "limit_price", "stop_price",
    "created_at", "updated_at", "filled_at", "expires_at", "raw_json", "legs",
)  # fmt: skip
ORDER_TYPES: Final = (
    "uuid", "text", "text", "text", "text", "text", "text", "text", "text", "numeric", "numeric",
    "numeric", "numeric", "numeric", "timestamptz", "timestamptz", "timestamptz", "timestamptz",
    "jsonb", "jsonb",
)  # fmt: skip
ACTIVITY_COLUMNS: Final = (
    "id", "activity_type", "transaction_time", "symbol", "side", "qty", "price", "net_amount",
    "execution_id", "order_id", "raw_json",
)  # fmt: skip
ACTIVITY_TYPES: Final = (
    "text", "text", "timestamptz", "text", "text", "numeric", "numeric", "numeric", "uuid", "uuid",
    "jsonb",
)  # fmt: skip
CASH_FLOW_COLUMNS: Final = ("id", "ts", "amount", "type", "category", "description")
CASH_FLOW_TYPES: Final = ("text", "timestamptz", "numeric", "text", "text", "text")
DAILY_COLUMNS: Final = (
    "date", "deposit", "cash_balance", "market_value", "daily_return", "cumulative_return",
    "drawdown", "net_flows", "sharpe_10", "sharpe_21", "sharpe_63", "sharpe_126", "sharpe_252",
    "smart_sharpe_10", "smart_sharpe_21", "smart_sharpe_63", "smart_sharpe_126", "smart_sharpe_252",
    "broker_equity", "equity_diff",
)  # fmt: skip
DAILY_TYPES: Final = ("date", *["numeric"] * 7, *["float8"] * 10, "numeric", "numeric")
INTRADAY_COLUMNS: Final = ("ts", "deposit", "cumulative_return", "drawdown", "realised_return")
INTRADAY_TYPES: Final = ("timestamptz", "numeric", "numeric", "numeric", "numeric")
SESSION_COLUMNS: Final = ("session_date", "pre_open_utc", "open_utc", "close_utc", "post_close_utc")
SESSION_TYPES: Final = ("date", "timestamptz", "timestamptz", "timestamptz", "timestamptz")

FILL_ACTIVITY: Final = "FILL"
NS_PER_MICROSECOND: Final = 1000
_JSON: Final = msgspec.json.Encoder(decimal_format="string")
_CANONICAL_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ONE: Final = Decimal(1)
_MINUS_ONE: Final = Decimal(-1)


class InvalidRow(ValueError):
    """A value that cannot be stored (e.g. an order id that is not a UUID)."""


def micros(ts_ns: int) -> int:
    """Return ``ts_ns`` truncated to the microsecond (what a ``timestamptz`` keeps)."""
    return ts_ns - ts_ns % NS_PER_MICROSECOND


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


_UUIDS: dict[str, None] = {}  # canonical UUID texts seen lately (a fill checks its ids six times)


def as_uuid(text: str | None) -> str | None:
    """Return ``text`` if it is a UUID string, else None."""
    if not text:
        return None
    if text in _UUIDS:
        return text
    if _CANONICAL_UUID.fullmatch(text):  # what the broker sends and ``validate`` makes (the hot path)
        if len(_UUIDS) >= 16_384:
            _UUIDS.clear()
        _UUIDS[text] = None
        return text
    try:
        uuid.UUID(text)
    except ValueError:
        return None
    return text


# -- open positions ----------------------------------------------------------------------------


def open_row_values(row: OpenRow) -> tuple[object, ...]:
    """Return the ``POSITION_COLUMNS`` values of ``row``."""
    return (
        row.parent_id, row.symbol, row.side, _TIMES.get(row.filled_at) or _time(row.filled_at), row.qty, row.avg_fill,
        row.avg_px_symbol, row.sl_child, row.sl_px, row.tp_child, row.tp_px, row.mkt_px,
        row.bar_px, _dt(row.bar_ts), row.moved_flag, row.buy_value, row.holding_days,
        row.days_to_expire, row.mkt_value, row.profit_loss, row.profit_loss_lot,
        row.tp_sl_reach_pct, _TIMES.get(row.updated_at) or _time(row.updated_at),
    )  # fmt: skip


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


def same_row(a: OpenRow, b: OpenRow) -> bool:
    """Return True when ``a`` and ``b`` differ at most in ``updated_at``."""
    return msgspec.structs.replace(a, updated_at=b.updated_at) == b


# -- closed slices -----------------------------------------------------------------------------


def closed_values(found: ClosedSlice) -> tuple[object, ...]:
    """Return the ``CLOSED_COLUMNS`` values of a slice."""
    return (
        found.entry_lot_id, found.exit_order_id, found.exit_parent_id, found.symbol, found.side,
        found.qty, _time(found.entry_time), found.entry_price, _time(found.exit_time),
        found.exit_price, found.exit_type, found.pnl_cash, found.pnl_cash_fifo, found.diff_pnl,
        found.pnl_pct, found.return_pct, Decimal(found.duration_sec),
    )  # fmt: skip


def closed_json(found: ClosedSlice) -> dict[str, object]:
    """Return a slice as a NOTIFY ``rows`` element (the closed-trades columns)."""
    return dict(zip(CLOSED_COLUMNS, closed_values(found), strict=True))


# -- raw orders --------------------------------------------------------------------------------


def canonical_order(order: Order) -> Order:
    """Return ``order`` with its times at microsecond precision; raise ``InvalidRow`` on a non-UUID id."""
    if as_uuid(order.id) is None:
        raise InvalidRow(f"order id must be a UUID, found {order.id[:60]!r}")
    if not (order.created_at % NS_PER_MICROSECOND or order.updated_at % NS_PER_MICROSECOND
            or (order.expires_at or 0) % NS_PER_MICROSECOND or (order.filled_at or 0) % NS_PER_MICROSECOND):
        return order  # already at microseconds (the broker's precision): the same values
    return msgspec.structs.replace(
        order, created_at=micros(order.created_at), updated_at=micros(order.updated_at),
        expires_at=None if order.expires_at is None else micros(order.expires_at),
        filled_at=None if order.filled_at is None else micros(order.filled_at),
    )  # fmt: skip


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


_SECONDS_PER_DAY: Final = 86_400
_US_PER_SECOND: Final = 1_000_000
_MILLIS: Final = tuple(f"{n:03d}" for n in range(1000))
_SECOND_TEXTS: dict[int, str] = {}  # second since the epoch → ``YYYYMMDDHHMMSS`` (bounded below)
_DAY_TEXTS: dict[int, str] = {}  # day since the epoch → ``YYYYMMDD`` (``strftime`` once a day)


def _stamp(ts_ns: int) -> str:
    """Return Alpaca's activity-id prefix ``YYYYMMDDHHMMSSmmm`` for ``ts_ns``.

    The same text as ``strftime("%Y%m%d%H%M%S%f")[:17]`` (a quarter of a fill's conversion
    when called per fill): the second's text is remembered, the milliseconds come from a table.
    """
    second, micro = divmod(ts_ns // NS_PER_MICROSECOND, _US_PER_SECOND)
    prefix = _SECOND_TEXTS.get(second)
    if prefix is None:
        day, seconds = divmod(second, _SECONDS_PER_DAY)
        date_text = _DAY_TEXTS.get(day)
        if date_text is None:
            date_text = to_datetime(day * _SECONDS_PER_DAY * NS_PER_SECOND).strftime("%Y%m%d")
            if len(_DAY_TEXTS) >= 1024:
                _DAY_TEXTS.clear()
            _DAY_TEXTS[day] = date_text
        if len(date_text) != 8:  # a year outside 1000-9999: the slice falls elsewhere
            return to_datetime(ts_ns).astimezone(UTC).strftime("%Y%m%d%H%M%S%f")[:17]
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        if len(_SECOND_TEXTS) >= 4096:
            _SECOND_TEXTS.clear()
        prefix = _SECOND_TEXTS[second] = f"{date_text}{hours:02d}{minutes:02d}{seconds:02d}"
    return prefix + _MILLIS[micro // 1000]


class _RawFill(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The ``raw_json`` of a fill's activity row: the same JSON object as a dict of these keys
    in this order (a Struct encodes faster and is no tracked allocation)."""

    order_id: object
    execution_id: object
    symbol: object
    side: object
    qty: object
    price: object
    source: str = "state"
    cum_qty: object = None


def activity_from_fill(fill: Fill, key: str | None = None) -> ActivityRecord:
    """Return the ``FILL`` activity row ``state`` stores for a fill it applied (stream, recon).

    The id has Alpaca's shape ``<stamp>::<fill key>``; the fill's own fields are kept in
    ``raw_json`` so ``fill_from_activity`` gives back the same fill (same key, same values).
    ``key`` is ``fill.key`` when the caller has it already.
    """
    if key is None:
        key = fill.key
    sign = _ONE if fill.side == "buy" else _MINUS_ONE
    raw = _RawFill(order_id=fill.order_id, execution_id=key, symbol=fill.symbol, side=fill.side, qty=fill.qty,
                   price=fill.price, cum_qty=fill.cum_qty)  # fmt: skip
    return ActivityRecord(
        id=f"{_stamp(fill.ts)}::{key}", activity_type=FILL_ACTIVITY, transaction_time=fill.ts,
        symbol=fill.symbol, side=fill.side, qty=fill.qty, price=fill.price,
        net_amount=-sign * fill.qty * fill.price,
        execution_id=execution if (execution := fill.execution_id) in _UUIDS else as_uuid(execution),
        order_id=order_id if (order_id := fill.order_id) in _UUIDS else as_uuid(order_id),
        raw_json=_JSON.encode(raw).decode(),
    )  # fmt: skip


def fill_from_activity(record: ActivityRecord) -> Fill | None:
    """Return the fill of a ``FILL`` activity (None for other activities or incomplete rows).

    Key: the ``execution_id`` column, else ``raw_json.execution_id``, else the part of the id
    after ``::``, else the id. Time is truncated to microseconds (the column's precision).
    """
    if record.activity_type.upper() != FILL_ACTIVITY:
        return None
    try:
        raw = msgspec.json.decode(record.raw_json or "{}")
    except msgspec.DecodeError:
        raw = {}
    raw = raw if isinstance(raw, dict) else {}
    order_id = record.order_id or raw.get("order_id")
    side = (record.side or raw.get("side") or "").lower()
    if not (order_id and record.symbol and record.qty and record.price and side in ("buy", "sell", "sell_short")):
        return None
    execution_id = record.execution_id or raw.get("execution_id") or record.id.rpartition("::")[2] or record.id
    cum_qty = raw.get("cum_qty")
    return Fill(
        order_id=str(order_id), symbol=record.symbol, side=cast(OrderSide, side), qty=abs(record.qty),
        price=record.price, ts=micros(record.transaction_time), execution_id=str(execution_id),
        cum_qty=normalize(Decimal(str(cum_qty))) if cum_qty not in (None, "") else None,
    )  # fmt: skip


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


def is_canceled(record: ActivityRecord) -> bool:
    """Return True when the broker canceled ``record`` (its ``status``, else ``raw_json.status``).

    A canceled ``FILL`` is a bust (SPEC §8): its execution leaves the history.
    """
    if record.status is not None:
        return record.status.lower() == "canceled"
    if '"canceled"' not in record.raw_json:
        return False
    try:
        raw = msgspec.json.decode(record.raw_json)
    except msgspec.DecodeError:
        return False
    return isinstance(raw, dict) and str(raw.get("status") or "").lower() == "canceled"


def canonical_fill(fill: Fill) -> tuple[ActivityRecord, Fill]:
    """Return the activity row stored for ``fill`` and the fill as it reads back from it."""
    return stored_fill(fill)[1:]


_FILL_SIDES: Final = frozenset(("buy", "sell", "sell_short"))


def _normal(value: Decimal) -> Decimal:
    """Return ``normalize(Decimal(str(value)))``: ``value`` itself when already in that form
    (``10``, ``2.5``: the usual quantity; ``normal_text``'s rule), else a new one."""
    if value.__class__ is Decimal:
        text = str(value)
        if len(text) <= 28 and "E" not in text and ("." not in text or text[-1] != "0") and value.is_finite():
            return value
    return normalize(Decimal(str(value)))


def stored_fill(fill: Fill) -> tuple[str, ActivityRecord, Fill]:
    """Return ``fill``'s key, the activity row stored for it and the fill as it reads back from it.

    The read-back is ``fill_from_activity(activity_from_fill(fill))`` without the JSON round
    trip (tests/db/test_rows_fill.py checks the two agree): the row's columns are the fill's own
    fields, so each fallback of ``fill_from_activity`` resolves to them; the key is the same
    before and after (a normalised ``cum_qty`` has the same text, a missing execution id
    becomes the key itself).
    """
    key = fill.key
    record = activity_from_fill(fill, key)
    side = fill.side.lower()
    if not (fill.order_id and fill.symbol and fill.qty and fill.price and side in _FILL_SIDES):
        raise InvalidRow(f"fill {key!r} cannot be stored (missing order id, symbol, qty or price)")
    cum_qty = fill.cum_qty
    again = Fill(
        order_id=fill.order_id, symbol=fill.symbol, side=cast(OrderSide, side), qty=abs(fill.qty),
        price=fill.price, ts=micros(fill.ts), execution_id=record.execution_id or key,
        cum_qty=None if cum_qty is None else _normal(cum_qty),
    )  # fmt: skip
    return key, record, again


def activity_values(record: ActivityRecord) -> tuple[object, ...]:
    """Return the ``ACTIVITY_COLUMNS`` values of an activity (non-UUID ids become null columns)."""
    return (
        record.id, record.activity_type.upper(),
        _TIMES.get(record.transaction_time) or _time(record.transaction_time), record.symbol,
        record.side, record.qty, record.price, record.net_amount,
        execution if (execution := record.execution_id) in _UUIDS else as_uuid(execution),  # (a call less when known)
        order_id if (order_id := record.order_id) in _UUIDS else as_uuid(order_id), record.raw_json or "{}",
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
    return (flow.id, flow.ts, flow.amount, flow.type, str(flow.category), flow.description)


def daily_values(row: DailyRow) -> tuple[object, ...]:
    """Return the ``DAILY_COLUMNS`` values of a daily equity row."""
    sharpe = row.sharpe_by_window()
    smart = (row.smart_sharpe_10, row.smart_sharpe_21, row.smart_sharpe_63, row.smart_sharpe_126,
             row.smart_sharpe_252)  # fmt: skip
    return (
        row.date, row.deposit, row.cash_balance, row.market_value, row.daily_return,
        row.cumulative_return, row.drawdown, row.net_flows, *sharpe.values(), *smart,
        row.broker_equity, row.equity_diff,
    )  # fmt: skip


def intraday_values(point: IntradayPoint) -> tuple[object, ...]:
    """Return the ``INTRADAY_COLUMNS`` values of an intraday equity point."""
    return (point.ts, point.deposit, point.cumulative_return, point.drawdown, point.realised_return)


def session_values(session: Session) -> tuple[object, ...]:
    """Return the ``SESSION_COLUMNS`` values of a market session."""
    return (session.session_date, session.pre_open_utc, session.open_utc, session.close_utc,
            session.post_close_utc)  # fmt: skip


def columns_of(rows: list[tuple[object, ...]], width: int) -> list[list[object]]:
    """Return ``rows`` transposed into ``width`` column lists (the ``unnest`` parameters)."""
    return [[row[i] for row in rows] for i in range(width)] if rows else [[] for _ in range(width)]

"""Canonical stored forms: what a value reads back as from the tables, computed without them.

The tables hold ``timestamptz`` (microseconds) and UUID columns, the domain holds UTC
nanoseconds and free strings. Everything ``state`` applies to its ledger first goes through the
same conversion the start-up loader uses (``stored_fill``, ``canonical_fill``,
``canonical_order``), so the ledger built live and the ledger rebuilt from the tables are equal
value for value. A fill is stored as a ``FILL`` activity (``activity_from_fill``) and read back
from one (``fill_from_activity``).

Pure: no I/O (``db.rows`` turns these values into table rows; the mirror uses them directly).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC
from decimal import Decimal
from typing import Final, cast

import msgspec

from coldharbour.domain.money import normalize
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.types import NS_PER_SECOND, Fill, OpenRow, Order, OrderSide, to_datetime

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


def same_row(a: OpenRow, b: OpenRow) -> bool:
    """Return True when ``a`` and ``b`` differ at most in ``updated_at``."""
    return msgspec.structs.replace(a, updated_at=b.updated_at) == b


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


def is_canceled(record: ActivityRecord) -> bool:
    """Return True when the broker canceled ``record`` (its ``status``, else ``raw_json.status``).

    A canceled ``FILL`` is a bust (docs/spec.md §8): its execution leaves the history.
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



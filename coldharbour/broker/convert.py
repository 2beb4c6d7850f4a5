"""Alpaca JSON (as decoded from the wire) → domain types and bus payloads. Pure: no I/O.

The broker's payloads are parsed with our own tolerant msgspec types, never alpaca-py's
models (docs/broker.md §8): enum-like fields (status, type, order class, event) are kept as text, so
a value Alpaca adds tomorrow never drops a fill; unknown fields are ignored; numbers may come
as strings or JSON numbers. What cannot become a domain value (no id, a bad number, a naive
timestamp, an order side we cannot sign) and every value the store or the bus would refuse
(``validate``: NUL or invalid UTF-8 anywhere in the object, a non-UUID order id, a time outside
1970..2262 or, given ``now_ns``, more than ``validate.BROKER_FUTURE_NS`` ahead) is returned
as a ``Rejected`` with a short ``reason`` (the counter suffix) and a one-line ``detail`` —
never raised, never logged from here.

Times become UTC nanoseconds (``Order.created_at`` …) at microsecond precision: the sub-µs
part of Alpaca's 9-digit fractions is never used as a key (docs/broker.md §8).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

import msgspec

from coldharbour.broker import validate
from coldharbour.broker.validate import Invalid
from coldharbour.domain.corporate import MAX_RATIO, MIN_RATIO
from coldharbour.domain.money import ZERO, InvalidMoney, to_decimal, to_decimal_or_none, to_display_decimal_or_none
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.types import BrokerPosition, Fill, Order, OrderSide, from_datetime
from coldharbour.messages import OrderUpdated

NEW_YORK: Final = ZoneInfo("America/New_York")
ORDER_SIDES: Final[dict[str, OrderSide]] = {"buy": "buy", "sell": "sell", "sell_short": "sell_short"}
JSON: Final = msgspec.json.Encoder(decimal_format="string")

Number = str | int | float | None
T = TypeVar("T")


class Rejected(msgspec.Struct, frozen=True):
    """A payload that could not be converted: ``reason`` is a short code, ``detail`` one line."""

    reason: str
    detail: str


class BadValue(ValueError):
    """Internal: one field is unusable; becomes a ``Rejected`` (``reason``: a validate suffix)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


def _reason(base: str, error: BadValue) -> str:
    """Return ``base`` for a plain bad value, ``base_<check>`` for what ``validate`` refused."""
    return f"{base}_{error.reason}" if error.reason else base


# --- tolerant wire types --------------------------------------------------------------------


class RawOrder(msgspec.Struct, kw_only=True):
    """An Alpaca order object; every enum-like field is plain text."""

    id: str
    symbol: str = ""
    side: str = ""
    type: str | None = None
    order_type: str | None = None
    status: str = ""
    order_class: str | None = None
    client_order_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    submitted_at: str | None = None
    filled_at: str | None = None
    expires_at: str | None = None
    qty: Number = None
    filled_qty: Number = None
    filled_avg_price: Number = None
    limit_price: Number = None
    stop_price: Number = None
    replaces: str | None = None
    replaced_by: str | None = None
    legs: list[Any] | None = None
    commission: Number = None


class RawTradeUpdate(msgspec.Struct, kw_only=True):
    """The ``data`` object of a ``trade_updates`` frame."""

    event: str
    order: dict[str, Any]
    timestamp: str | None = None
    execution_id: str | None = None
    price: Number = None
    qty: Number = None
    position_qty: Number = None


class RawPosition(msgspec.Struct, kw_only=True):
    """An Alpaca position object."""

    symbol: str
    qty: Number
    avg_entry_price: Number
    side: str = "long"
    current_price: Number = None
    asset_class: str | None = None


class RawAccount(msgspec.Struct, kw_only=True):
    """The fields of ``GET /v2/account`` the snapshot uses."""

    cash: Number = None
    equity: Number = None
    buying_power: Number = None
    last_equity: Number = None  # equity at the previous session's close (today's P&L is equity - this)


class RawActivity(msgspec.Struct, kw_only=True):
    """An account activity (FILL or non-trade); alpaca-py cannot parse these (docs/broker.md §3)."""

    id: str
    activity_type: str
    transaction_time: str | None = None
    date: str | None = None
    symbol: str | None = None
    side: str | None = None
    qty: Number = None
    price: Number = None
    net_amount: Number = None
    order_id: str | None = None
    cum_qty: Number = None
    status: str | None = None


class AccountFigures(msgspec.Struct, frozen=True):
    """Cash, equity, buying power and the previous close's equity of an account (dollars)."""

    cash: Decimal | None
    equity: Decimal | None
    buying_power: Decimal | None = None
    last_equity: Decimal | None = None


class ConvertedOrder(msgspec.Struct, frozen=True):
    """One order version and its own JSON text (for ``raw_orders.raw_json``)."""

    order: Order
    json: str


class ConvertedActivity(msgspec.Struct, frozen=True):
    """An activity record and, for a FILL, the execution the ledger consumes.

    A FILL whose ``status`` is ``canceled`` (a bust) has no ``fill``; ``busted`` is the
    execution to remove from the history.
    """

    record: ActivityRecord
    fill: Fill | None
    busted: Fill | None = None


# --- scalar helpers -------------------------------------------------------------------------


def parse_time_ns(text: str | None, *, field: str, now_ns: int | None = None) -> int:
    """Return an ISO-8601 timestamp with an offset (``Z`` or ``±hh:mm``) as UTC ns.

    The result is within ``validate.time_ns`` (and not ahead of ``now_ns`` beyond tolerance).
    """
    ns = _known_time_ns(text) if text and len(text) <= MEMO_MAX_CHARS else None
    if ns is not None and (now_ns is None or ns <= now_ns + validate.BROKER_FUTURE_NS):
        return ns
    return _parse_time_ns(text, field=field, now_ns=now_ns)  # also what says why it is refused


def _parse_time_ns(text: str | None, *, field: str, now_ns: int | None) -> int:
    if not text:
        raise BadValue(f"{field}: missing timestamp")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise BadValue(f"{field}: not an ISO-8601 timestamp: {text[:40]!r}") from e
    if moment.tzinfo is None:
        raise BadValue(f"{field}: timestamp without an offset: {text[:40]!r}")
    return int(_checked(validate.time_ns, from_datetime(moment), field=field, now_ns=now_ns))


# Broker frames repeat the same texts (an order's ids and times on each of its events, prices,
# quantities): each text is parsed and checked once, then looked up. Only what parses cleanly
# is remembered (a refusal is worked out again, to name its field); long texts never are.
MEMO_SIZE: Final = 4096
MEMO_MAX_CHARS: Final = 64


@lru_cache(maxsize=MEMO_SIZE)
def _known_time_ns(text: str) -> int | None:
    try:
        return _parse_time_ns(text, field="", now_ns=None)
    except BadValue:
        return None


@lru_cache(maxsize=MEMO_SIZE)
def _known_uuid(text: str) -> str | None:
    try:
        return validate.canonical_uuid(text, field="")
    except Invalid:
        return None


@lru_cache(maxsize=MEMO_SIZE)
def _known_number(text: str) -> tuple[bool, Decimal | None]:
    try:
        return True, to_decimal_or_none(text)
    except InvalidMoney:
        return False, None


def _optional_time_ns(text: str | None, *, field: str, now_ns: int | None = None) -> int | None:
    return None if not text else parse_time_ns(text, field=field, now_ns=now_ns)


def _checked(check: Any, value: object, **kwargs: Any) -> Any:
    """Return ``check(value, **kwargs)``; a ``validate.Invalid`` becomes a ``BadValue``."""
    try:
        return check(value, **kwargs)
    except Invalid as e:
        raise BadValue(str(e), e.reason) from e


def _uuid(value: str | None, *, field: str) -> str | None:
    if not value:
        return None
    known = _known_uuid(value) if value.__class__ is str and len(value) <= MEMO_MAX_CHARS else None
    return known or str(_checked(validate.canonical_uuid, value, field=field))


def _shown_number(value: Number, *, field: str) -> Decimal | None:
    """A figure only shown (never booked): unusable is None, not a rejected account."""
    try:
        return _number(value, field=field)
    except BadValue:
        return None


def _number(value: Number, *, field: str) -> Decimal | None:
    if value.__class__ is str and len(value) <= MEMO_MAX_CHARS:
        usable, number = _known_number(value)
        if usable:
            return number
    try:
        return to_decimal_or_none(value, field=field)
    except InvalidMoney as e:
        raise BadValue(str(e)) from e


def _required_number(value: Number, *, field: str) -> Decimal:
    number = _number(value, field=field)
    if number is None:
        raise BadValue(f"{field}: missing")
    return number


def _side(text: str | None) -> OrderSide:
    side = ORDER_SIDES.get((text or "").lower())
    if side is None:
        raise BadValue(f"side: expected buy, sell or sell_short, found {text!r}")
    return side


def _typed(data: object, kind: type[T]) -> T:
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as e:
        raise BadValue(f"shape: {e}") from e
    except UnicodeEncodeError as e:  # msgspec matches keys as UTF-8: a lone surrogate in one
        raise BadValue(f"shape: a key is not valid UTF-8 (lone surrogate at {e.start})", "text") from e


def to_json(data: object) -> str:
    """Return ``data`` as compact JSON text (the broker's object, kept verbatim)."""
    return JSON.encode(data).decode()


def _checked_json(data: object, *, field: str) -> str:
    """Return ``data`` as JSON text once ``validate.tree`` passes it; else ``BadValue``.

    The text is needed anyway; when it proves the object clean (``encoded_passes_tree``, in C)
    the Python walk is skipped, else the walk gives the exact rejection and its message.
    """
    try:
        encoded: bytes | None = JSON.encode(data)
    except (msgspec.EncodeError, TypeError, ValueError, RecursionError):  # a lone surrogate among them
        encoded = None
    if encoded is not None and validate.encoded_passes_tree(encoded):
        return encoded.decode()
    _checked(validate.tree, data, field=field)
    return to_json(data) if encoded is None else encoded.decode()


# --- orders ---------------------------------------------------------------------------------


def _order(raw: RawOrder, parent_id: str | None, leg_ids: tuple[str, ...], now_ns: int | None) -> Order:
    if not raw.id:
        raise BadValue("id: missing")
    if not raw.symbol:
        raise BadValue(f"symbol: missing on order {raw.id}")
    order_id = _uuid(raw.id, field="id")
    assert order_id is not None
    _checked(validate.text, raw.symbol, field="symbol", max_chars=validate.MAX_SYMBOL_CHARS)
    _checked(validate.text, raw.client_order_id or "", field="client_order_id", max_chars=validate.MAX_ID_CHARS)
    created_text = raw.created_at or raw.submitted_at
    created = parse_time_ns(created_text, field="created_at", now_ns=now_ns)
    return Order(
        id=order_id,
        symbol=raw.symbol.upper(),
        side=_side(raw.side),
        order_type=(raw.type or raw.order_type or "").lower(),
        status=raw.status.lower(),
        created_at=created,
        updated_at=_optional_time_ns(raw.updated_at, field="updated_at", now_ns=now_ns) or created,
        order_class=(raw.order_class or "simple").lower() or "simple",
        qty=_number(raw.qty, field="qty"),
        filled_qty=_number(raw.filled_qty, field="filled_qty") or ZERO,
        filled_avg_price=_number(raw.filled_avg_price, field="filled_avg_price"),
        limit_price=_number(raw.limit_price, field="limit_price"),
        stop_price=_number(raw.stop_price, field="stop_price"),
        parent_id=parent_id,
        replaces=_uuid(raw.replaces, field="replaces"),
        replaced_by=_uuid(raw.replaced_by, field="replaced_by"),
        legs=leg_ids,
        expires_at=_optional_time_ns(raw.expires_at, field="expires_at"),
        filled_at=_optional_time_ns(raw.filled_at, field="filled_at", now_ns=now_ns),
        client_order_id=raw.client_order_id or "",
        submitted_at=_optional_time_ns(raw.submitted_at, field="submitted_at"),
        commission=abs(_number(raw.commission, field="commission") or ZERO),
    )


def _flatten(
    data: object, parent_id: str | None, out: list[ConvertedOrder], rejects: list[Rejected], now_ns: int | None
) -> Order | None:
    """Convert ``data`` and its nested legs (depth first); return the order, or None if rejected."""
    try:
        raw = _typed(data, RawOrder)
    except BadValue as e:
        rejects.append(Rejected("order_shape", f"{_id_of(data)}: {e}"))
        return None
    leg_ids = tuple(_leg_ids(raw.legs))
    try:
        json = _checked_json(data, field="order")
        order = _order(raw, parent_id, leg_ids, now_ns)
    except BadValue as e:
        rejects.append(Rejected(_reason("order_value", e), f"{_id_of(data)}: {e}"))
        return None
    out.append(ConvertedOrder(order, json))
    for leg in raw.legs or ():
        _flatten(leg, order.id, out, rejects, now_ns)
    return order


def _leg_ids(legs: list[Any] | None) -> list[str]:
    """Return the canonical ids of ``legs`` (a leg without a usable id is left out)."""
    found = []
    for leg in legs or ():
        if isinstance(leg, Mapping) and leg.get("id"):
            try:
                found.append(validate.canonical_uuid(str(leg["id"]), field="leg id"))
            except Invalid:
                continue
    return found


def _id_of(data: object) -> str:
    if isinstance(data, Mapping):
        return repr(str(data.get("id", "?"))[:40])[1:-1]  # printable: the id itself may be the poison
    return f"<{type(data).__name__}>"


def convert_orders(
    items: Sequence[object], *, now_ns: int | None = None
) -> tuple[list[ConvertedOrder], list[Rejected]]:
    """Return every order in ``items`` with its nested legs flattened after it (``parent_id`` set).

    A rejected leg does not reject its parent; the parent still lists the leg's id. ``now_ns``
    (the caller's clock) rejects event times too far in the future.
    """
    out: list[ConvertedOrder] = []
    rejects: list[Rejected] = []
    for item in items:
        _flatten(item, None, out, rejects, now_ns)
    return out, rejects


# --- trade updates ----------------------------------------------------------------------------


def _fill(update: RawTradeUpdate, order: Order, ts: int) -> Fill | None:
    """Return the execution of ``update`` when it carries one, whatever the event is called."""
    price = _number(update.price, field="price")
    qty = _number(update.qty, field="qty")
    if price is None or qty is None:
        return None
    if price <= 0 or qty <= 0:
        raise BadValue(f"execution: price and qty must be positive, found price={price} qty={qty}")
    return Fill(
        order_id=order.id,
        symbol=order.symbol,
        side=order.side,
        qty=qty,
        price=price,
        ts=ts,
        execution_id=_uuid(update.execution_id, field="execution_id"),
        cum_qty=order.filled_qty if order.filled_qty > 0 else None,
    )


def convert_trade_update(envelope: object, slug: str, *, now_ns: int | None = None) -> OrderUpdated | Rejected | None:
    """Return the ``OrderUpdated`` of one stream frame; None for frames that are not updates.

    ``envelope`` is the whole frame (``{"stream": "trade_updates", "data": {...}}``). A frame
    whose event is ``fill``/``partial_fill`` but which lacks the execution's price or quantity
    still yields the order update; the execution then comes from REST (FILL activities).
    """
    if not isinstance(envelope, Mapping):
        return Rejected("frame_shape", f"expected a JSON object, found {type(envelope).__name__}")
    if envelope.get("stream") != "trade_updates":
        return None
    try:
        update = _typed(envelope.get("data"), RawTradeUpdate)
        flat, rejects = convert_orders([update.order], now_ns=now_ns)
        if not flat:
            detail = rejects[0].detail if rejects else "no order"
            return Rejected("update_order", f"event={update.event[:30]!r} {detail}")
        _checked_json(envelope, field="frame")
        order = flat[0].order
        ts = _optional_time_ns(update.timestamp, field="timestamp", now_ns=now_ns) or order.updated_at
        fill = _fill(update, order, ts)
    except BadValue as e:
        return Rejected(_reason("update_value", e), str(e))
    return OrderUpdated(
        account=slug,
        event=update.event,
        order=order,
        fill=fill,
        event_ts=ts,
        order_json=flat[0].json,
        legs=tuple(item.order for item in flat[1:]),
    )


def is_fill_event(event: str) -> bool:
    """Return True for Alpaca's execution events (``fill``, ``partial_fill``)."""
    return event in {"fill", "partial_fill"}


# --- positions, account, activities -----------------------------------------------------------


def convert_position(data: object) -> BrokerPosition | Rejected:
    """Return the broker's position (signed qty: short < 0) from a position object.

    Booked fields (``symbol``, ``qty``, ``avg_entry_price``: lots, reconciliation, the broker
    WAC) must convert exactly, else the position is ``Rejected`` and the caller reports its
    symbol as unknown (``position_symbol``), never as flat. ``current_price`` is only shown (a
    mark): more decimals than we store are rounded (``money.to_display_decimal_or_none``) and an
    unusable one is dropped, never the position.
    """
    try:
        raw = _typed(data, RawPosition)
        _checked(validate.text, raw.symbol, field="symbol", max_chars=validate.MAX_SYMBOL_CHARS)
        qty = _required_number(raw.qty, field="qty")
        if raw.side.lower() == "short" and qty > 0:
            qty = -qty  # Alpaca sends short quantities negative; accept either spelling
        return BrokerPosition(
            symbol=canonical_symbol(raw.symbol, raw.asset_class),
            qty=qty,
            avg_entry_price=_required_number(raw.avg_entry_price, field="avg_entry_price"),
            current_price=_display_number(raw.current_price, field="current_price"),
        )
    except BadValue as e:
        return Rejected(_reason("position", e), f"{_symbol_of(data)}: {e}")


def _display_number(value: Number, *, field: str) -> Decimal | None:
    """A number only shown: rounded to what we store; None when it is no number at all."""
    try:
        return _number(value, field=field)
    except BadValue:
        try:
            return to_display_decimal_or_none(value, field=field)
        except InvalidMoney:
            return None


def position_symbol(data: object) -> str | None:
    """Return the canonical symbol of a position object, or None when it names no usable symbol."""
    if not isinstance(data, Mapping):
        return None
    symbol, asset_class = data.get("symbol"), data.get("asset_class")
    if not isinstance(symbol, str) or not symbol.strip():
        return None
    try:
        _checked(validate.text, symbol, field="symbol", max_chars=validate.MAX_SYMBOL_CHARS)
    except BadValue:
        return None
    return canonical_symbol(symbol, asset_class if isinstance(asset_class, str) else None)


CRYPTO_QUOTES: Final = ("USDT", "USDC", "USD", "BTC")


def canonical_symbol(symbol: str, asset_class: str | None = None) -> str:
    """Return the mirror's one symbol per asset: a crypto pair in its slashed form (docs/spec.md §8).

    Alpaca writes ``BTC/USD`` on orders and fills but ``BTCUSD`` on positions (with
    ``asset_class`` ``crypto``); the slash is put back from the known quote currencies.
    """
    text = symbol.strip().upper()
    if asset_class != "crypto" or "/" in text:
        return text
    for quote in CRYPTO_QUOTES:
        if text.endswith(quote) and len(text) > len(quote):
            return f"{text[: -len(quote)]}/{quote}"
    return text


def _symbol_of(data: object) -> str:
    return repr(str(data.get("symbol", "?"))[:20])[1:-1] if isinstance(data, Mapping) else "?"


def convert_account(data: object) -> AccountFigures | Rejected:
    """Return cash, equity, buying power and last equity from ``GET /v2/account``."""
    try:
        raw = _typed(data, RawAccount)
        return AccountFigures(
            _number(raw.cash, field="cash"),
            _number(raw.equity, field="equity"),
            _shown_number(raw.buying_power, field="buying_power"),
            _shown_number(raw.last_equity, field="last_equity"),
        )
    except BadValue as e:
        return Rejected("account", str(e))


def execution_id_of(activity_id: str) -> str | None:
    """Return the UUID after ``::`` in a FILL activity id (the execution id), if it is one."""
    _, sep, suffix = activity_id.partition("::")
    if not sep:
        return None
    try:
        return str(uuid.UUID(suffix))
    except ValueError:
        return None


def _activity_time(raw: RawActivity, now_ns: int | None) -> int:
    if raw.transaction_time:
        return parse_time_ns(raw.transaction_time, field="transaction_time", now_ns=now_ns)
    if raw.date:
        try:
            day = datetime.fromisoformat(raw.date[:10]).date()
        except ValueError as e:
            raise BadValue(f"date: not an ISO date: {raw.date[:20]!r}") from e
        ns = from_datetime(datetime.combine(day, time(0), tzinfo=NEW_YORK))
        return int(_checked(validate.time_ns, ns, field="date", now_ns=now_ns))
    raise BadValue("transaction_time and date: both missing")


def convert_activity(data: object, *, now_ns: int | None = None) -> ConvertedActivity | Rejected:
    """Return an activity record; a FILL also yields its ``Fill`` (never dropped for its type)."""
    try:
        raw = _typed(data, RawActivity)
        raw_json = _checked_json(data, field="activity")
        _checked(validate.text, raw.id, field="id", max_chars=validate.MAX_ID_CHARS)
        _checked(validate.text, raw.symbol or "", field="symbol", max_chars=validate.MAX_SYMBOL_CHARS)
        activity_type = raw.activity_type.upper()
        ts = _activity_time(raw, now_ns)
        qty = _number(raw.qty, field="qty")
        price = _number(raw.price, field="price")
        execution_id = execution_id_of(raw.id) if activity_type == "FILL" else None
        record = ActivityRecord(
            id=raw.id,
            activity_type=activity_type,
            transaction_time=ts,
            # a fee in the coin names the pair as positions do (BTCUSD): the mirror's form is BTC/USD
            symbol=(canonical_symbol(raw.symbol, "crypto") if activity_type == "CFEE" else raw.symbol.upper())
            if raw.symbol
            else None,
            side=raw.side,
            qty=qty,
            price=price,
            net_amount=_number(raw.net_amount, field="net_amount"),
            execution_id=execution_id,
            order_id=_uuid(raw.order_id, field="order_id"),
            raw_json=raw_json,
            status=(raw.status or "").lower() or None,
        )
        fill = _activity_fill(raw, record, qty, price) if activity_type == "FILL" else None
    except BadValue as e:
        return Rejected(_reason("activity", e), f"{_id_of(data)}: {e}")
    if fill is not None and record.status == "canceled":
        return ConvertedActivity(record, None, fill)
    return ConvertedActivity(record, fill)


# The codes read, one request each (docs/corporate-actions.md "Reading the legs"): a code the
# broker refuses as a filter value stops only itself. SSO and SSP (former spin-off and split
# codes) are returned but refused as filter values; current legs use SPIN and SPLIT.
CORPORATE_READ: Final = ("CFEE", "CIL", "MA", "NC", "REORG", "SC", "SPIN", "SPLIT")


def _activity_fill(raw: RawActivity, record: ActivityRecord, qty: Decimal | None, price: Decimal | None) -> Fill:
    if not raw.order_id or not record.symbol:
        raise BadValue("FILL without order_id or symbol")
    if qty is None or price is None or qty <= 0 or price <= 0:
        raise BadValue(f"FILL price and qty must be positive, found price={price} qty={qty}")
    return Fill(
        order_id=record.order_id or raw.order_id,
        symbol=record.symbol,
        side=_side(raw.side),
        qty=qty,
        price=price,
        ts=record.transaction_time,
        execution_id=record.execution_id,
        cum_qty=_number(raw.cum_qty, field="cum_qty"),
    )


# --- corporate-action announcements (the data API's ``GET /v1/corporate-actions``) -------------

# The fields of alpaca-py's ``alpaca/data/models/corporate_actions.py`` groups that are read or
# could be: symbols (text the store takes), dates (a real day whose New York midnight is within
# ``validate``'s 1970..2262), rates (numbers ``money.to_decimal`` takes, > 0, share ratios within
# the domain's bounds).
ANNOUNCED_SYMBOLS: Final = ("symbol", "old_symbol", "new_symbol", "alternate_symbol", "source_symbol",
                            "acquirer_symbol", "acquiree_symbol")  # fmt: skip
ANNOUNCED_DATES: Final = ("ex_date", "payable_date", "record_date", "effective_date", "process_date",
                          "due_bill_redemption_date")  # fmt: skip
ANNOUNCED_RATES: Final = ("old_rate", "new_rate", "rate", "source_rate", "acquirer_rate", "acquiree_rate",
                          "cash_rate", "alternate_rate")  # fmt: skip
_SHARE_RATIOS: Final = (("new_rate", "old_rate"), ("alternate_rate", "old_rate"), ("acquirer_rate", "acquiree_rate"),
                        ("new_rate", "source_rate"))  # fmt: skip
MAX_RATE: Final = Decimal(10_000_000)  # shares or cash per share: beyond, the item is wrong
FIRST_DAY: Final = date(1970, 1, 2)
LAST_DAY: Final = date(2262, 4, 10)


class ScreenedAnnouncements(msgspec.Struct, frozen=True):
    """An announcements body as ``corporate.parse_announcements`` may read it.

    ``body``: only the usable items (an item whose rates are absurd kept for its symbols and
    dates, its rates taken out); ``rejects``: one per item refused or held; ``held``: the symbols
    of the items with absurd rates (their actions are held, not booked: docs/corporate-actions.md).
    """

    body: dict[str, object]
    rejects: tuple[Rejected, ...] = ()
    held: frozenset[str] = frozenset()


def screen_announcements(body: object) -> ScreenedAnnouncements:
    """Check every item of a ``GET /v1/corporate-actions`` body against what the store, the bus
    and the domain's arithmetic take (see ``ANNOUNCED_SYMBOLS``): an item with a bad symbol, id
    or date is left out (``announcement_text``, ``announcement_time``, ``announcement`` for a
    wrong JSON type); one with an absurd rate (NaN, 1e999999, 1e-30, 0, a share ratio of 10^9) is
    kept without its rates and its symbols are held (``announcement_rate``)."""
    groups = body.get("corporate_actions") if isinstance(body, Mapping) else None
    if not isinstance(groups, Mapping):
        return ScreenedAnnouncements({})
    kept: dict[str, object] = {}
    rejects: list[Rejected] = []
    held: set[str] = set()
    for group, items in groups.items():
        name = str(group)[:40]
        if not isinstance(items, list):
            rejects.append(Rejected("announcement", f"{name!r}: expected a list, found {type(items).__name__}"))
            continue
        usable: list[Mapping[str, object]] = []
        for item in items:
            try:
                checked = _announced_item(item)
            except BadValue as e:
                rejects.append(Rejected(_reason("announcement", e), f"{name} {_item_id(item)}: {e}"))
                continue
            problem = _absurd_rates(checked, str(group))
            if problem:
                checked = {k: v for k, v in checked.items() if k not in ANNOUNCED_RATES}
                held |= {v.upper() for k in ANNOUNCED_SYMBOLS if isinstance(v := checked.get(k), str) and v}
                rejects.append(Rejected("announcement_rate", f"{name} {_item_id(item)}: {problem} (held)"))
            usable.append(checked)
        kept[str(group)] = usable
    return ScreenedAnnouncements({"corporate_actions": kept}, tuple(rejects), frozenset(held))


def _item_id(item: object) -> str:
    ident = item.get("id") if isinstance(item, Mapping) else None
    return repr(ident)[:60] if ident is not None else "(no id)"


def _announced_item(item: object) -> Mapping[str, object]:
    """Return ``item`` when its id, symbols and dates are usable; else raise ``BadValue``."""
    if not isinstance(item, Mapping):
        raise BadValue(f"expected an object, found {type(item).__name__}")
    ident = item.get("id")
    if ident is not None:
        if not isinstance(ident, str):
            raise BadValue(f"id: expected text, found {type(ident).__name__}")
        _checked(validate.text, ident, field="id", max_chars=validate.MAX_ID_CHARS)
    for key in ANNOUNCED_SYMBOLS:
        value = item.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadValue(f"{key}: expected text, found {type(value).__name__}")
        # as the domain keeps it: upper case ("ß" becomes "SS", longer)
        _checked(validate.text, value.upper(), field=key, max_chars=validate.MAX_SYMBOL_CHARS)
    _announced_dates(item)
    return item


def _announced_dates(item: Mapping[str, object]) -> None:
    for key in ANNOUNCED_DATES:
        value = item.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadValue(f"{key}: expected YYYY-MM-DD, found {type(value).__name__}", "time")
        try:
            day = date.fromisoformat(value[:10])
        except ValueError:
            raise BadValue(f"{key}: not a day: {value[:40]!r}", "time") from None
        if not FIRST_DAY <= day <= LAST_DAY:
            raise BadValue(f"{key}: {day} outside {FIRST_DAY}..{LAST_DAY}", "time")


def _absurd_rates(item: Mapping[str, object], group: str) -> str:
    """Return why the rates of ``item`` cannot be used ("" when they can, or when it states none)."""
    rates: dict[str, Decimal] = {}
    for key in ANNOUNCED_RATES:
        value = item.get(key)
        if value is None:
            continue
        try:
            number = to_decimal(value, field=key)
        except InvalidMoney as e:
            return str(e)
        if not 0 < number <= MAX_RATE:
            return f"{key}: expected a number in (0, {MAX_RATE}], found {number:.6g}"
        rates[key] = number
    if group == "stock_dividends" and "rate" in rates and not MIN_RATIO <= rates["rate"] <= MAX_RATIO:
        return f"rate: {rates['rate']:.6g} new shares per share outside {MIN_RATIO}..{MAX_RATIO}"
    for top, bottom in _SHARE_RATIOS:
        if top in rates and bottom in rates and not MIN_RATIO <= rates[top] / rates[bottom] <= MAX_RATIO:
            return f"{top}/{bottom}: {rates[top] / rates[bottom]:.6g} outside {MIN_RATIO}..{MAX_RATIO}"
    return ""

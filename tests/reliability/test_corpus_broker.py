"""Bad-input corpus for the outside world: feed ticks and broker JSON, through the real decoders.

Generated deterministically (seeded) from one good value of each shape: every field replaced by
values of the wrong type, NaN/inf, negative and huge numbers, or removed; whole bodies replaced
by HTML error pages, lists, scalars; msgpack frames truncated and bit-flipped. Then a running
``state`` gets hostile frames on every topic it reads and writes no row. (Bus frames and config
values: ``test_corpus_bus.py``, ``test_corpus_config.py``.)

Every case carries its expected outcome, derived from the mutation (which field, which value,
removed or replaced) and the documented contract of that field, never from running the
converter: rejected with a given reason (``Skip``/``Rejected``, counted, never raised), ignored
(a frame that is not an update), or accepted with the values that come out (the same symbol,
the exact ``Decimal``, the canonical UUID, UTC ns). The contracts, written out below
(``_order_change`` …, ``_expected_feed``), are those of ``coldharbour/broker/feed.py`` (the
feed), ``coldharbour/broker/convert.py`` (the tolerant wire types: which fields are required,
which JSON type each takes, what an absent value becomes), ``coldharbour/broker/validate.py``
(what the store and the bus take: UUID ids, text without NUL and within its length, times in
1970..2262) and ``coldharbour/domain/money.py`` (a decimal: finite, at most ``MAX_ABS``,
``MAX_SCALE`` decimals, ``MAX_DIGITS`` digits). A case whose outcome differs is listed with
its field and value, so a converter that starts accepting a bad value, or refusing a good one,
fails here. A feed size above ``MAX_ABS`` (which the store refuses) is rejected
(``size``); where the contract leaves it open, the current behaviour is expected with a
comment (an empty position symbol or activity id, a feed size that is not a number).

Payload shapes: the Order object, the trade_updates frame, the Position, Account and
TradeActivity objects of https://docs.alpaca.markets/reference (Orders, Positions, Account,
Account activities; https://docs.alpaca.markets/docs/websocket-streaming for trade_updates),
as in docs/broker.md §3-4 and ``tests/broker/corpus.py``; the feed's msgpack ``{"trade": {"S", "p", "s", "c",
"t"}}`` is docs/spec.md §4's message (the short keys of Alpaca's stream trade,
https://docs.alpaca.markets/docs/real-time-stock-pricing-data; ``coldharbour/sim/feed.py``).
"""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import msgspec
import pytest

from coldharbour.broker.convert import (
    ConvertedActivity,
    Rejected,
    convert_account,
    convert_activity,
    convert_orders,
    convert_position,
    convert_trade_update,
)
from coldharbour.broker.feed import Skip, TradeFilter, decode_frames
from coldharbour.broker.validate import MAX_ID_CHARS, MAX_SYMBOL_CHARS, MAX_TIME_NS
from coldharbour.config import Dsn
from coldharbour.domain.money import MAX_ABS, MAX_DIGITS, MAX_SCALE, InvalidMoney, to_display_decimal_or_none
from coldharbour.messages import OrderUpdated, SnapshotTaken, Tick, decode, encode
from tests.fixtures.bus import InprocBus
from tests.reliability.test_corpus_bus import HOSTILE_VALUES, _numbers_finite
from tests.workers.state_harness import StateHarness

EXCLUDE = frozenset({"D", "M", "E"})
TS = 1_709_305_200_123_456_789
HTML_PAGES: list[object] = [
    "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
    "<!DOCTYPE html><html><body>Service Unavailable</body></html>",
    "<html>", "", "null", "{", "[1,", "\x00\xff",
]  # fmt: skip
NUMBERS: list[object] = [float("nan"), float("inf"), float("-inf"), -1, -0.0, 0, 1e308, 10**30, "1e999", "-5", "NaN"]

TICK: dict[str, object] = {"S": "AAPL", "p": 185.01, "s": 100, "c": ["@", "I"], "t": TS}
ORDER_ID = "61e69015-8549-4bfd-b9c3-01e75843f47d"
ORDER: dict[str, object] = {
    "id": ORDER_ID, "client_order_id": "c-1", "created_at": "2024-03-01T15:00:00.123456Z",
    "updated_at": "2024-03-01T15:00:00.2Z", "submitted_at": "2024-03-01T15:00:00.1Z",
    "filled_at": "2024-03-01T15:00:00.2Z", "symbol": "AAPL", "asset_class": "us_equity", "qty": "10",
    "filled_qty": "10", "filled_avg_price": "185.01", "order_class": "simple", "order_type": "market",
    "type": "market", "side": "buy", "time_in_force": "gtc", "limit_price": None, "stop_price": None,
    "status": "filled", "extended_hours": False, "legs": None,
}  # fmt: skip
UPDATE: dict[str, object] = {
    "stream": "trade_updates",
    "data": {"event": "fill", "execution_id": "0d9b3c0e-4f33-4a1e-9a59-2c1e43b1a0c4",
             "timestamp": "2024-03-01T15:00:00.2Z", "price": "185.01", "qty": "10", "position_qty": "10",
             "order": ORDER},
}  # fmt: skip
POSITION: dict[str, object] = {
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": "AAPL", "qty": "10", "side": "long",
    "avg_entry_price": "185.01", "market_value": "1850.1", "current_price": "185.01",
}  # fmt: skip
ACCOUNT: dict[str, object] = {
    "id": "a-1", "cash": "100000", "equity": "100000", "status": "ACTIVE", "buying_power": "199000.5",
    "last_equity": "100047.6", "portfolio_value": "100000", "multiplier": "2", "currency": "USD",
}  # fmt: skip
ACTIVITY: dict[str, object] = {
    "id": "20240301100000123::0d9b3c0e-4f33-4a1e-9a59-2c1e43b1a0c4", "activity_type": "FILL",
    "transaction_time": "2024-03-01T15:00:00.2Z", "type": "fill", "price": "185.01", "qty": "10",
    "side": "buy", "symbol": "AAPL", "leaves_qty": "0", "order_id": ORDER_ID, "cum_qty": "10",
}  # fmt: skip


class _Removed:
    def __repr__(self) -> str:
        return "<removed>"


REMOVED: Any = _Removed()  # the value of a case whose field was taken out


class Case(NamedTuple):
    """One corpus entry: ``data`` is ``base`` with ``field`` set to ``value`` (or REMOVED).

    ``field`` is ``""`` when the whole body was replaced by ``value``; nested fields are dotted.
    """

    field: str
    value: object
    data: object


def _variants(base: dict[str, object], values: list[object]) -> list[Case]:
    """Every field set to every value, every field removed, and the hostile whole bodies."""
    out: list[Case] = []
    for field in base:
        out += [Case(field, value, {**base, field: value}) for value in values]
        out.append(Case(field, REMOVED, {k: v for k, v in base.items() if k != field}))
    return [*out, *(Case("", body, body) for body in [*HTML_PAGES, *HOSTILE_VALUES])]


def _frame_mutations(rng: random.Random) -> list[list[bytes]]:
    encoded = msgspec.msgpack.encode({"trade": TICK})
    frames: list[list[bytes]] = []
    for _ in range(60):
        frames.append([encoded[: rng.randrange(len(encoded))]])
        flipped = bytearray(encoded)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        frames.append([bytes(flipped)])
    frames += [[], [b"a", b"b", encoded], [rng.randbytes(rng.randrange(1, 40))]]
    return frames


def feed_corpus() -> list[list[bytes]]:
    """Return every hostile feed message (deterministic)."""
    rng = random.Random(9)
    numbers = [n for n in NUMBERS if not isinstance(n, int) or abs(n) < 2**63]  # msgpack's integer range
    bodies = [case.data for case in _variants(TICK, [*HOSTILE_VALUES, *numbers])]
    frames = [[msgspec.msgpack.encode({"trade": body}, enc_hook=repr)] for body in bodies]
    frames += [[msgspec.msgpack.encode(body, enc_hook=repr)] for body in HOSTILE_VALUES]
    return frames + _frame_mutations(rng)


def _nested(base: dict[str, object], key: str, values: list[object]) -> list[Case]:
    inner = base[key]
    assert isinstance(inner, dict)
    return [
        Case(f"{key}.{case.field}" if case.field else key, case.value, {**base, key: case.data})
        for case in _variants(inner, values)
    ]


BROKER_CASES: dict[str, tuple[Callable[[object], object], list[Case]]] = {
    "order": (lambda data: convert_orders([data]), _variants(ORDER, [*HOSTILE_VALUES, *NUMBERS])),
    "trade_update": (
        lambda data: convert_trade_update(data, "demo"),
        [*_nested(UPDATE, "data", [*HOSTILE_VALUES, *NUMBERS]), *_variants(UPDATE, HOSTILE_VALUES)],
    ),
    "position": (convert_position, _variants(POSITION, [*HOSTILE_VALUES, *NUMBERS])),
    "account": (convert_account, _variants(ACCOUNT, [*HOSTILE_VALUES, *NUMBERS])),
    "activity": (convert_activity, _variants(ACTIVITY, [*HOSTILE_VALUES, *NUMBERS])),
}


def test_corpus_broker_and_feed_are_large() -> None:
    total = len(feed_corpus()) + sum(len(cases) for _, cases in BROKER_CASES.values())

    assert total >= 1000


# --- the contract of one value ------------------------------------------------------------------


class Fault(NamedTuple):
    """Why a value is refused: ``shape`` (wrong JSON type, required field absent), ``value``
    (right type, unusable value), ``value_<check>`` (what ``validate`` refuses for the store or
    the bus: ``value_id``, ``value_text``, ``value_time``)."""

    category: str


SHAPE, VALUE = Fault("shape"), Fault("value")
VALUE_ID, VALUE_TEXT, VALUE_TIME = Fault("value_id"), Fault("value_text"), Fault("value_time")
REQUIRED: Any = object()  # the default of a field without one (absent: a shape fault)
SIDES = {"buy": "buy", "sell": "sell", "sell_short": "sell_short"}  # docs/broker.md §3
EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def _as_text(value: object, default: object) -> Any:
    """A JSON string field (``str``, ``str = default`` or ``str | None``): its text or a Fault.

    Absent gives ``default``; null only where the field is optional (``default`` None).
    """
    if value is REMOVED:
        return SHAPE if default is REQUIRED else default
    if value is None:
        return None if default is None else SHAPE
    return value if isinstance(value, str) else SHAPE


def _store_text(text: str, max_chars: int | None = None) -> bool:
    """Return True when PostgreSQL ``text`` takes ``text`` (no NUL, UTF-8) within ``max_chars``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text and (max_chars is None or len(text) <= max_chars)


def _decimal(value: object, *, required: bool = False) -> Any:
    """A number field (a JSON string or number): its exact Decimal, None when absent, or a Fault.

    Null and ``""`` are absent; a required field may not be left out of the object (shape).
    The Decimal is the one money.py describes: finite, at most MAX_ABS, ≤ MAX_SCALE decimals and
    ≤ MAX_DIGITS significant digits; a float through its shortest repr.
    """
    if value is REMOVED:
        return SHAPE if required else None
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return SHAPE
    try:
        text = value.strip() if isinstance(value, str) else repr(value) if isinstance(value, float) else value
        number = Decimal(text)
    except InvalidOperation:
        return VALUE
    if not number.is_finite() or abs(number) > MAX_ABS:
        return VALUE
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    significant = "".join(map(str, digits)).rstrip("0")
    exponent += len(digits) - len(significant)
    if significant and (exponent < -MAX_SCALE or len(significant) > MAX_DIGITS):
        return VALUE
    return number


def _time(value: object) -> Any:
    """An optional ISO-8601 time with an offset: UTC ns (µs precision), None when absent, or a Fault."""
    text = _as_text(value, None)
    if isinstance(text, Fault) or not text:
        return text if isinstance(text, Fault) else None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return VALUE
    if moment.tzinfo is None:
        return VALUE
    delta = moment - EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return ns if 0 <= ns <= MAX_TIME_NS else VALUE_TIME


def _uuid(value: object) -> Any:
    """An optional UUID string: canonical (lower case, hyphenated), None when absent, or a Fault."""
    text = _as_text(value, None)
    if isinstance(text, Fault) or not text:
        return text if isinstance(text, Fault) else None
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        return VALUE_ID


def _ns(text: object) -> int:
    ns = _time(text)
    assert isinstance(ns, int)
    return ns


# --- the expected outcome of each broker case ---------------------------------------------------


class Outcome(NamedTuple):
    """What a converter did: the reasons it rejected with, and the values of what it accepted.

    Ignored (a frame that is no update): no reasons, nothing accepted.
    """

    rejects: tuple[str, ...]
    accepted: dict[str, object] | None

    def __str__(self) -> str:
        if self.accepted is None:
            return f"rejected {list(self.rejects)}" if self.rejects else "ignored"
        legs = f" (legs rejected: {list(self.rejects)})" if self.rejects else ""
        return f"accepted {self.accepted}{legs}"


IGNORED = Outcome((), None)
Change = Fault | dict[str, object] | Outcome  # a field's contract: refused, the values it changes, or ignored

ORDER_BASE: dict[str, object] = {
    "id": ORDER_ID, "symbol": "AAPL", "side": "buy", "order_type": "market", "status": "filled",
    "order_class": "simple", "created_at": _ns(ORDER["created_at"]), "updated_at": _ns(ORDER["updated_at"]),
    "submitted_at": _ns(ORDER["submitted_at"]), "filled_at": _ns(ORDER["filled_at"]), "qty": Decimal(10),
    "filled_qty": Decimal(10), "filled_avg_price": Decimal("185.01"), "limit_price": None, "stop_price": None,
    "client_order_id": "c-1", "parent_id": None, "legs": (),
}  # fmt: skip
ORDER_NUMBERS = ("qty", "filled_qty", "filled_avg_price", "limit_price", "stop_price")
ORDER_IGNORED = ("asset_class", "time_in_force", "extended_hours")  # kept in raw_json, not read


def _order_change(field: str, value: object) -> Change:
    """The contract of each Order field (``RawOrder`` in convert.py, docs/broker.md §3)."""
    if field == "id":  # required; a UUID (``uuid`` column), kept canonical
        text = _as_text(value, REQUIRED)
        if isinstance(text, Fault):
            return text
        canonical = _uuid(text) if text else VALUE  # "" is a missing id
        return canonical if isinstance(canonical, Fault) else {"id": canonical}
    if field == "symbol":  # required non-empty text, at most MAX_SYMBOL_CHARS; upper-cased
        text = _as_text(value, "")
        if isinstance(text, Fault) or not text:
            return text if isinstance(text, Fault) else VALUE
        return {"symbol": text.upper()} if _store_text(text, MAX_SYMBOL_CHARS) else VALUE_TEXT
    if field == "side":  # buy, sell or sell_short (any case): a side that cannot be signed is refused
        text = _as_text(value, "")
        if isinstance(text, Fault):
            return text
        return {"side": SIDES[text.lower()]} if text.lower() in SIDES else VALUE
    if field == "status":  # enum-like: any text, kept lower-cased (a new status never drops a fill)
        text = _as_text(value, "")
        return text if isinstance(text, Fault) else {"status": text.lower()}
    if field == "order_class":  # optional text; absent or "" is simple
        text = _as_text(value, None)
        return text if isinstance(text, Fault) else {"order_class": (text or "simple").lower()}
    if field in ("type", "order_type"):  # optional text; ``type`` first, then ``order_type``
        text = _as_text(value, None)
        if isinstance(text, Fault):
            return text
        other = ORDER["order_type" if field == "type" else "type"]
        assert isinstance(other, str)
        return {"order_type": (text or other).lower() if field == "type" else other}
    if field == "client_order_id":  # optional text, at most MAX_ID_CHARS (Alpaca's limit)
        text = _as_text(value, None)
        if isinstance(text, Fault) or (text and not _store_text(text, MAX_ID_CHARS)):
            return text if isinstance(text, Fault) else VALUE_TEXT
        return {"client_order_id": text or ""}
    if field in ("created_at", "updated_at", "submitted_at", "filled_at"):
        ns = _time(value)
        if isinstance(ns, Fault) or ns is not None:
            return ns if isinstance(ns, Fault) else {field: ns}
        fallback = {"created_at": ORDER_BASE["submitted_at"], "updated_at": ORDER_BASE["created_at"]}
        return {field: fallback.get(field)}  # created falls back to submitted, updated to created
    if field in ORDER_NUMBERS:  # optional decimals; filled_qty absent is 0
        # A negative one is kept as sent (current behaviour): raw_orders takes any finite numeric.
        number = _decimal(value)
        if isinstance(number, Fault):
            return number
        return {field: Decimal(0) if number is None and field == "filled_qty" else number}
    if field == "legs":  # optional list of orders, flattened after the parent; a bad leg rejects itself only
        if value is REMOVED or value is None:
            return {}
        if not isinstance(value, list):
            return SHAPE
        assert not any(isinstance(leg, dict) for leg in value), "the corpus has no order-shaped legs"
        return Outcome(("order_shape",) * len(value), {**ORDER_BASE, "legs": ()})
    if field in ORDER_IGNORED:
        return {}
    raise AssertionError(f"no contract for order field {field!r}")


def _expected_order(case: Case) -> Outcome:
    if not case.field:  # a whole body: not an object, or one without an id
        return Outcome(("order_shape",), None)
    change = _order_change(case.field, case.value)
    if isinstance(change, Fault):
        return Outcome(("order_shape" if change == SHAPE else f"order_{change.category}",), None)
    if isinstance(change, Outcome):
        return change
    return Outcome((), {**ORDER_BASE, **change})


def _observe_order(result: object) -> Outcome:
    assert isinstance(result, tuple)
    converted, rejects = result
    reasons = tuple(r.reason for r in rejects)
    if not converted:
        return Outcome(reasons, None)
    assert len(converted) == 1, f"one order in, {len(converted)} out"
    msgspec.json.decode(converted[0].json)  # raw_json: JSON text jsonb takes
    return Outcome(reasons, {name: getattr(converted[0].order, name) for name in ORDER_BASE})


FILL_FIELDS = ("price", "qty", "execution_id", "ts", "symbol", "side", "cum_qty")
UPDATE_BASE: dict[str, object] = {
    "account": "demo", "event": "fill", "event_ts": _ns("2024-03-01T15:00:00.2Z"), "order.id": ORDER_ID,
    "order.symbol": "AAPL", "legs": (), "fill.price": Decimal("185.01"), "fill.qty": Decimal(10),
    "fill.execution_id": "0d9b3c0e-4f33-4a1e-9a59-2c1e43b1a0c4", "fill.ts": _ns("2024-03-01T15:00:00.2Z"),
    "fill.symbol": "AAPL", "fill.side": "buy", "fill.cum_qty": Decimal(10),
}  # fmt: skip
NO_FILL: dict[str, object] = {f"fill.{name}": None for name in FILL_FIELDS}
ORDER_REJECTED = Fault("order")


def _update_change(field: str, value: object) -> Change:
    """The contract of each field of a trade_updates frame (``RawTradeUpdate``, docs/broker.md §4)."""
    if field == "stream":  # only ``trade_updates`` frames are updates; any other is not ours
        return {} if value == "trade_updates" else IGNORED
    if field == "data":  # required object with at least event and order
        assert not (isinstance(value, dict) and "event" in value), "the corpus has no update-shaped replacement"
        return SHAPE
    name = field.removeprefix("data.")
    if name == "event":  # required text, any value (a new event name never drops a fill)
        text = _as_text(value, REQUIRED)
        return text if isinstance(text, Fault) else {"event": text}
    if name == "order":  # required object: the order, converted as one (ORDER's contract)
        if not isinstance(value, dict):
            return SHAPE
        assert "id" not in value, "the corpus has no order-shaped replacement"
        return ORDER_REJECTED
    if name == "execution_id":  # optional UUID
        execution_id = _uuid(value)
        return execution_id if isinstance(execution_id, Fault) else {"fill.execution_id": execution_id}
    if name == "timestamp":  # optional time; absent: the order's updated_at
        ns = _time(value)
        if isinstance(ns, Fault):
            return ns
        ns = ORDER_BASE["updated_at"] if ns is None else ns
        return {"event_ts": ns, "fill.ts": ns}
    if name in ("price", "qty"):  # optional decimals: both present make an execution, both > 0
        number = _decimal(value)
        if isinstance(number, Fault) or number is None:
            return number if isinstance(number, Fault) else NO_FILL
        return {f"fill.{name}": number} if number > 0 else VALUE
    if name == "position_qty":  # a number, not used
        number = _decimal(value)
        return SHAPE if number == SHAPE else {}
    raise AssertionError(f"no contract for trade update field {field!r}")


def _expected_update(case: Case) -> Outcome:
    if not case.field:  # the whole frame: not an object is refused; an object without the stream is not ours
        return IGNORED if isinstance(case.value, Mapping) else Outcome(("frame_shape",), None)
    change = _update_change(case.field, case.value)
    if isinstance(change, Outcome):
        return change
    if change == ORDER_REJECTED:
        return Outcome(("update_order",), None)
    if isinstance(change, Fault):
        return Outcome(("update_value" if change in (SHAPE, VALUE) else f"update_{change.category}",), None)
    return Outcome((), {**UPDATE_BASE, **change})


def _path(value: object, dotted: str) -> object:
    for name in dotted.split("."):
        value = None if value is None else getattr(value, name)
    return value


def _observe_update(result: object) -> Outcome:
    if result is None:
        return IGNORED
    if isinstance(result, Rejected):
        return Outcome((result.reason,), None)
    assert isinstance(result, OrderUpdated)
    return Outcome((), {name: _path(result, name) for name in UPDATE_BASE})


POSITION_BASE: dict[str, object] = {
    "symbol": "AAPL", "qty": Decimal(10), "avg_entry_price": Decimal("185.01"), "current_price": Decimal("185.01"),
}  # fmt: skip


def _shown(value: object) -> Decimal | None:
    """A shown-only number the exact contract refuses: rounded when it is a number (money.py), else None."""
    try:
        return to_display_decimal_or_none(value, field="current_price")
    except InvalidMoney:
        return None


def _position_change(field: str, value: object) -> Change:
    """The contract of each Position field (``RawPosition``, docs/broker.md §3)."""
    if field == "symbol":  # required text, at most MAX_SYMBOL_CHARS; stripped, upper-cased
        text = _as_text(value, REQUIRED)
        if isinstance(text, Fault):
            return text
        # An empty symbol is accepted: the store takes "", and the wire type only needs a string.
        # (The order converter refuses it.)
        return {"symbol": text.strip().upper()} if _store_text(text, MAX_SYMBOL_CHARS) else VALUE_TEXT
    if field in ("qty", "avg_entry_price"):  # required decimals (a signed qty: short < 0)
        number = _decimal(value, required=True)
        # A negative one is kept as sent (current behaviour): the snapshot only compares it.
        return number if isinstance(number, Fault) else VALUE if number is None else {field: number}
    if field == "current_price":  # a wrong JSON type refuses the object; a bad number is only shown: rounded or dropped
        number = _decimal(value)
        if number is SHAPE:
            return number
        return {field: _shown(value) if isinstance(number, Fault) else number}
    if field == "side":  # text, default long; ``short`` with a positive qty makes it negative
        text = _as_text(value, "long")
        if isinstance(text, Fault):
            return text
        return {"qty": -Decimal(10)} if text.lower() == "short" else {}
    if field in ("asset_id", "market_value"):
        return {}
    raise AssertionError(f"no contract for position field {field!r}")


ACTIVITY_BASE: dict[str, object] = {
    "record.id": ACTIVITY["id"], "record.activity_type": "FILL",
    "record.transaction_time": _ns(ACTIVITY["transaction_time"]), "record.symbol": "AAPL", "record.side": "buy",
    "record.qty": Decimal(10), "record.price": Decimal("185.01"),
    "record.order_id": ORDER_ID, "record.execution_id": "0d9b3c0e-4f33-4a1e-9a59-2c1e43b1a0c4",
    "fill.order_id": ORDER_ID, "fill.symbol": "AAPL", "fill.side": "buy", "fill.qty": Decimal(10),
    "fill.price": Decimal("185.01"), "fill.ts": _ns(ACTIVITY["transaction_time"]),
    "fill.execution_id": "0d9b3c0e-4f33-4a1e-9a59-2c1e43b1a0c4", "fill.cum_qty": Decimal(10), "busted": None,
}  # fmt: skip


def _execution_id(activity_id: str) -> str | None:
    """The UUID after ``::`` in a FILL activity id (docs/broker.md §3: ``20240301100000000::<uuid>``)."""
    _, sep, suffix = activity_id.partition("::")
    return _uuid(suffix) if sep and isinstance(_uuid(suffix), str) else None


def _activity_change(field: str, value: object) -> Change:
    """The contract of each FILL activity field (``RawActivity``, docs/broker.md §3 TradeActivity)."""
    if field == "id":  # required text, at most MAX_ID_CHARS; a FILL's execution id follows ``::``
        text = _as_text(value, REQUIRED)
        if isinstance(text, Fault) or not _store_text(text, MAX_ID_CHARS):
            return text if isinstance(text, Fault) else VALUE_TEXT
        # An empty id is accepted (the store takes ""; Alpaca never sends one): see the report.
        return {"record.id": text, "record.execution_id": _execution_id(text), "fill.execution_id": _execution_id(text)}
    if field == "activity_type":  # required text, upper-cased; only a FILL yields an execution
        text = _as_text(value, REQUIRED)
        if isinstance(text, Fault):
            return text
        kind = text.upper()
        no_fill = {} if kind == "FILL" else {name: None for name in ACTIVITY_BASE if name.startswith("fill.")}
        return {"record.activity_type": kind, **no_fill, **({} if kind == "FILL" else {"record.execution_id": None})}
    if field == "transaction_time":  # the activity's time (a FILL has no ``date`` to fall back on)
        ns = _time(value)
        return ns if isinstance(ns, Fault) else VALUE if ns is None else {"record.transaction_time": ns, "fill.ts": ns}
    if field in ("price", "qty"):  # a FILL's price and qty: positive decimals
        number = _decimal(value)
        if isinstance(number, Fault) or number is None or number <= 0:
            return number if isinstance(number, Fault) else VALUE
        return {f"record.{field}": number, f"fill.{field}": number}
    if field == "side":  # a FILL's side: buy, sell or sell_short
        text = _as_text(value, None)
        if isinstance(text, Fault) or (text or "").lower() not in SIDES:
            return text if isinstance(text, Fault) else VALUE
        return {"record.side": text, "fill.side": SIDES[text.lower()]}
    if field == "symbol":  # a FILL's symbol: text, at most MAX_SYMBOL_CHARS, upper-cased
        text = _as_text(value, None)
        if isinstance(text, Fault) or not text:
            return text if isinstance(text, Fault) else VALUE
        if not _store_text(text, MAX_SYMBOL_CHARS):
            return VALUE_TEXT
        return {"record.symbol": text.upper(), "fill.symbol": text.upper()}
    if field == "order_id":  # a FILL's order: a UUID
        order_id = _uuid(value)
        if isinstance(order_id, Fault) or order_id is None:
            return order_id if isinstance(order_id, Fault) else VALUE
        return {"record.order_id": order_id, "fill.order_id": order_id}
    if field == "cum_qty":  # optional decimal, kept as sent (a negative one too: current behaviour)
        number = _decimal(value)
        return number if isinstance(number, Fault) else {"fill.cum_qty": number}
    if field in ("type", "leaves_qty"):
        return {}
    raise AssertionError(f"no contract for activity field {field!r}")


def _expected_plain(
    case: Case, change_of: Callable[[str, object], Change], base: dict[str, object], prefix: str
) -> Outcome:
    """Position, account, activity: one ``Rejected`` (``prefix`` or ``prefix_<check>``) or the values."""
    if not case.field:
        accepted = prefix == "account" and isinstance(case.value, Mapping)  # every figure is optional
        return Outcome((), dict.fromkeys(ACCOUNT_BASE)) if accepted else Outcome((prefix,), None)
    change = change_of(case.field, case.value)
    assert not isinstance(change, Outcome)
    if isinstance(change, Fault):
        check = change.category.removeprefix("value_") if change not in (SHAPE, VALUE) else ""
        return Outcome((f"{prefix}_{check}" if check and prefix != "account" else prefix,), None)
    return Outcome((), {**base, **change})


def _account_change(field: str, value: object) -> Change:
    """The contract of the Account fields the snapshot reads (``RawAccount``; the page header
    shows them): cash and equity, optional decimals; buying power and last equity, only shown:
    a wrong JSON type refuses the object, an unusable number is None (never rounded)."""
    if field in ("cash", "equity"):
        number = _decimal(value)
        return number if isinstance(number, Fault) else {field: number}
    if field in ("buying_power", "last_equity"):
        number = _decimal(value)
        return number if number is SHAPE else {field: None if isinstance(number, Fault) else number}
    if field in ("id", "status", "portfolio_value", "multiplier", "currency"):
        return {}
    raise AssertionError(f"no contract for account field {field!r}")


def _observe_plain(result: object, base: dict[str, object]) -> Outcome:
    if isinstance(result, Rejected):
        return Outcome((result.reason,), None)
    if isinstance(result, ConvertedActivity):
        msgspec.json.decode(result.record.raw_json)  # raw_json: JSON text jsonb takes
    return Outcome((), {name: _path(result, name) for name in base})


ACCOUNT_BASE: dict[str, object] = {
    "cash": Decimal(100000), "equity": Decimal(100000), "buying_power": Decimal("199000.5"),
    "last_equity": Decimal("100047.6"),
}  # fmt: skip
EXPECTED: dict[str, tuple[Callable[[Case], Outcome], Callable[[object], Outcome]]] = {
    "order": (_expected_order, _observe_order),
    "trade_update": (_expected_update, _observe_update),
    "position": (
        lambda case: _expected_plain(case, _position_change, POSITION_BASE, "position"),
        lambda result: _observe_plain(result, POSITION_BASE),
    ),
    "account": (
        lambda case: _expected_plain(case, _account_change, ACCOUNT_BASE, "account"),
        lambda result: _observe_plain(result, ACCOUNT_BASE),
    ),
    "activity": (
        lambda case: _expected_plain(case, _activity_change, ACTIVITY_BASE, "activity"),
        lambda result: _observe_plain(result, ACTIVITY_BASE),
    ),
}


# --- the expected outcome of each feed message ----------------------------------------------------

MIN_TICK_NS = _ns("2000-01-01T00:00:00+00:00")


def _tick_time(value: object) -> int | None:
    """``t``: UTC ns in 2000..2262 (0 or absent: unknown), or an ISO time with an offset; else None."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value == 0 or MIN_TICK_NS <= value <= MAX_TIME_NS else None
    ns = _time(value) if isinstance(value, str) and value else None
    return ns if isinstance(ns, int) and ns >= MIN_TICK_NS else None


def _expected_trade(body: Mapping[Any, object]) -> tuple[Tick | None, set[str]]:
    """The contract of a ``trade`` body (feed.py's docstring): the tick, or the reasons to drop it.

    Every broken field is listed (a flipped bit may break two; the decoder names one). The third
    item names what the decoder does wrong today for this body ("" when nothing).
    """
    faults: set[str] = set()
    symbol = body["S"] if "S" in body else body.get("symbol")
    if not isinstance(symbol, str) or not symbol.strip() or not _store_text(symbol, MAX_SYMBOL_CHARS):
        faults.add("symbol")
    price = body["p"] if "p" in body else body.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float):
        faults.add("price_type")
    elif not (0 < price < MAX_ABS and isinstance(_decimal(price), Decimal)):
        faults.add("price_value")
    raw_conditions = body["c"] if "c" in body else body.get("conditions")
    if raw_conditions is None:
        conditions: list[str] = []
    elif isinstance(raw_conditions, str):
        conditions = [part.strip() for part in raw_conditions.split("-")]
    elif isinstance(raw_conditions, list) and all(isinstance(item, str) for item in raw_conditions):
        conditions = [item.strip() for item in raw_conditions]
    else:
        faults.add("conditions")
        conditions = []
    if EXCLUDE.intersection(conditions):
        faults.add("condition_excluded")
    size = body.get("s")
    if isinstance(size, bool) or not isinstance(size, int | float):
        size = 0.0  # not a number: taken as absent (lenient; the size is only a bar's volume)
    elif not (math.isfinite(size) and size >= 0):
        faults.add("size")
    elif not isinstance(_decimal(size), Decimal):
        # The store takes a volume as a Decimal within MAX_ABS (``MarkBook.apply_print``): a size
        # beyond it would make ``state`` drop the whole print, price included.
        faults.add("size")
    ts = _tick_time(body.get("t"))
    if ts is None:
        faults.add("time")
    if faults:
        return None, faults
    assert isinstance(symbol, str)
    assert isinstance(price, int | float)
    assert ts is not None
    return Tick(symbol=symbol.strip().upper(), price=float(price), size=float(size), ts_event=ts), set()


def _expected_feed(frames: list[bytes]) -> tuple[Tick | None, set[str]]:
    """The contract of a feed message (feed.py): one frame (or topic + frame) holding ``{kind: body}``.

    What the frame holds is read with msgspec's plain msgpack decoder: a truncated frame is no
    msgpack; a bit-flipped one may still be, and then its content decides.
    """
    if not frames or len(frames) > 2:
        return None, {"frame_count"}
    try:
        message = msgspec.msgpack.decode(frames[-1])
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None, {"msgpack"}
    if not isinstance(message, dict) or not message:
        return None, {"shape"}
    kind, body = next(iter(message.items()))
    if kind != "trade":  # another kind: skipped, not bad
        return None, {f"kind_{kind}" if isinstance(kind, str) and kind.isidentifier() else "kind"}
    if not isinstance(body, dict):
        return None, {"shape"}
    return _expected_trade(body)


def _feed_mismatch(frames: list[bytes], expected: tuple[Tick | None, set[str]]) -> str:
    """Return how ``decode_frames`` (and the hot path) differ from ``expected``; "" when they agree."""
    tick, reasons = expected
    result = decode_frames(frames, EXCLUDE)
    if isinstance(result, Skip):
        got = f"skipped {result.reason!r}"
        skipped_not_bad = result.reason == "condition_excluded" or result.reason.startswith("kind")
        ok = tick is None and result.reason in reasons and result.is_reject != skipped_not_bad
    else:
        got, ok = f"{result}", result == tick
    fast = TradeFilter(EXCLUDE).accept(frames[-1]) if len(frames) == 1 else None
    if fast is not None and (tick is None or fast != (tick.symbol, tick.price, tick.size, tick.ts_event)):
        got, ok = f"{got}; the hot path accepted {fast}", False
    want = f"{tick}" if tick is not None else f"skipped {sorted(reasons)}"
    return "" if ok else f"{_describe(frames)}: expected {want}, got {got}"


def _describe(frames: list[bytes]) -> str:
    """Name a feed message by what it holds: the fields of a trade body that differ from TICK."""
    try:
        message = msgspec.msgpack.decode(frames[-1]) if len(frames) == 1 else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        message = None
    body = message.get("trade") if isinstance(message, dict) and len(message) == 1 else None
    if not isinstance(body, dict):
        return f"message {message!r:.80}" if message is not None else f"frames {frames!r:.80}"
    changed = [f"{key}={value!r:.60}" for key, value in body.items() if TICK.get(key, REMOVED) != value]
    changed += [f"{key} removed" for key in TICK if key not in body]
    return "trade " + (", ".join(changed) or "unchanged")


def test_corpus_feed_every_message_has_its_expected_outcome() -> None:
    corpus = feed_corpus()
    outcomes: Counter[str] = Counter()
    mismatches = []

    for frames in corpus:
        expected = _expected_feed(frames)
        outcomes["tick" if expected[0] else min(expected[1])] += 1
        if mismatch := _feed_mismatch(frames, expected):
            mismatches.append(mismatch)

    print(f"feed corpus: cases={len(corpus)} expected={dict(outcomes)}")
    assert mismatches == [], "\n".join(mismatches)
    assert {"price_type", "price_value", "symbol", "time", "msgpack", "shape", "frame_count", "tick"} <= set(outcomes)


@pytest.mark.parametrize("kind", sorted(BROKER_CASES))
def test_corpus_broker_json_every_case_has_its_expected_outcome(kind: str) -> None:
    convert, cases = BROKER_CASES[kind]
    expect, observe = EXPECTED[kind]
    outcomes: Counter[str] = Counter()
    mismatches = []

    for case in cases:
        expected = expect(case)
        result = convert(case.data)
        got = observe(result)
        accepted = expected.accepted is not None
        outcomes["accepted" if accepted else expected.rejects[0] if expected.rejects else "ignored"] += 1
        if got != expected or not _numbers_finite(result):
            label = case.field or "<whole body>"
            mismatches.append(f"{label}={case.value!r:.60}: expected {expected}, got {got}")

    print(f"broker {kind} corpus: cases={len(cases)} expected={dict(outcomes)}")
    assert mismatches == [], "\n".join(mismatches)


def _hostile_state_frames() -> list[list[bytes]]:
    good: dict[str, Any] = {"account": "demo", "src": "fuzz", "seq": 1, "ts": TS}
    snap = {"type": "snap", **good, "taken_at": TS}
    bodies: list[dict[str, Any]] = [
        {"type": "trade.update", **good, "order": {"id": "x"}},
        *({**snap, "positions": [{"symbol": "AAPL", "qty": q, "avg_entry_price": "1"}]} for q in ("NaN", "1e999")),
        {"type": "fills.page", **good, "fills": [{"order_id": ORDER_ID, "qty": "-5", "price": "inf"}]},
        {"type": "px", **good, "symbol": "AAPL", "price": float("nan"), "ts_event": TS},
        {"type": "px", **good, "symbol": "AAPL", "price": -3.0, "ts_event": TS},
        {"type": "metrics", **good, "payload": "[1,2]", "computed_at": TS},
    ]  # fmt: skip
    topics = [b"trade.demo", b"snap.demo", b"fills.demo", b"orders.demo", b"px.AAPL", b"metrics.demo"]
    frames = [[t, msgspec.msgpack.encode(b, enc_hook=repr)] for t in topics for b in bodies]
    rng = random.Random(4)
    frames += [[t, rng.randbytes(rng.randrange(1, 80))] for t in topics for _ in range(20)]
    frames += [[t, h.encode() if isinstance(h, str) else b""] for t in topics for h in HTML_PAGES]
    return frames


TABLES = ("accounts.account_open_positions_demo", "accounts.account_closed_demo", "accounts.latest_prices",
          "account_activities.raw_orders_demo", "account_activities.raw_activities_demo",
          "accounts.account_metrics_demo")  # fmt: skip


@pytest.mark.asyncio
async def test_corpus_hostile_frames_through_running_state_write_no_row(migrated_dsn: Dsn, bus: InprocBus) -> None:
    harness = StateHarness(migrated_dsn, bus)
    await harness.start()
    publisher = bus.publisher
    frames = _hostile_state_frames()
    try:
        before = harness.ctx.counters["rejects"]
        for frame in frames:
            publisher.send_raw(frame)
        await harness.settle()
        rows = {table: (await harness.query(f"SELECT count(*) FROM {table}"))[0][0] for table in TABLES}
        rejects = harness.ctx.counters["rejects"] - before
        alive = not harness.task.done()
    finally:
        await harness.close()

    print(f"state corpus: frames={len(frames)} rejects={rejects} rows={rows}")
    assert alive
    assert rows == dict.fromkeys(TABLES, 0)
    assert rejects == len(frames)  # each hostile frame is counted once, none is taken


# --- the account read: the snapshot's figures through the bus; the analytics' reads --------------


def test_corpus_account_figures_cross_the_bus_exactly() -> None:
    """Every account case the converter accepts becomes a ``SnapshotTaken`` (the page header's
    figures: cash, equity, buying power, last equity) that the bus encodes and decodes to the
    same exact values."""
    _, cases = BROKER_CASES["account"]
    crossed = 0
    wrong = []
    for case in cases:
        figures = convert_account(case.data)
        if isinstance(figures, Rejected):
            continue
        sent = SnapshotTaken(account="demo", taken_at=TS, positions=(), cash=figures.cash, equity=figures.equity,
                             buying_power=figures.buying_power, last_equity=figures.last_equity)  # fmt: skip
        got = decode(encode(sent))
        assert isinstance(got, SnapshotTaken)
        shown = (got.cash, got.equity, got.buying_power, got.last_equity)
        if shown != (figures.cash, figures.equity, figures.buying_power, figures.last_equity) or not all(
            v is None or str(v) == str(w) for v, w in zip(shown, (sent.cash, sent.equity, sent.buying_power,
                                                                   sent.last_equity), strict=True)):  # fmt: skip
            wrong.append(f"{case.field}={case.value!r:.60}: sent {sent}, got {got}")
        crossed += 1

    assert wrong == []
    assert crossed >= 100


# (GET /v2/account ``last_equity``, GET /v2/account/portfolio/history 1D points, the data API's daily
# bars ``{"bars": {symbol: [{"t", "c", ...}]}}``: https://docs.alpaca.markets/reference/getaccount-1,
# https://docs.alpaca.markets/reference/getaccountportfoliohistory-1,
# https://docs.alpaca.markets/reference/stockbars) read by ``broker/reads.py`` for the equity curve.
READ_VALUES: list[object] = [
    *HOSTILE_VALUES, *NUMBERS, "1e-30", "1e308", "1e999999", "100.005", "1." + "1" * 26, "100047.6", 1e-20, "-5",
]  # fmt: skip


@pytest.mark.parametrize("value", READ_VALUES, ids=lambda v: repr(v)[:30])
def test_corpus_the_equity_reads_take_a_figure_exactly_or_count_it_never_round_or_raise(value: object) -> None:
    from coldharbour.broker.reads import _merge_bars, parse_daily_equity, parse_last_equity

    number = _decimal(value)
    exact = number if isinstance(number, Decimal) else None  # the exact contract, or refused
    counters: Counter[str] = Counter()
    stamp = 1_709_269_200  # 2024-03-01 05:00 UTC: New York midnight of the session
    closes: dict[Any, dict[str, Decimal]] = {}

    last = parse_last_equity({"last_equity": value})
    points = parse_daily_equity({"timestamp": [stamp, 1e30, float("nan")], "equity": [value, "1", "1"]}, counters)
    _merge_bars({"AAPL": [{"t": "2024-03-01T05:00:00Z", "c": value, "o": 1}, "x", {"t": 1e30}]}, closes, counters)

    assert (last, str(last)) == (exact, str(exact)) if exact is not None else last is None
    day = datetime.fromtimestamp(stamp, UTC).date()
    assert points.get(day) == exact and str(points.get(day)) == str(exact) if value is not None else day not in points
    assert closes.get(day, {}).get("AAPL") == (exact if exact is not None and exact > 0 else None)
    assert counters["rejects_history_point"] == 2 + (exact is None and value is not None)
    assert counters["rejects_bar"] == 2 + (exact is None or exact <= 0)


def test_corpus_doctor_account_check_shows_a_hostile_account_body_in_one_clean_line() -> None:
    """``chmgr doctor``'s ``GET /v2/account`` check (``cli/doctor.py``) against hostile Account
    objects and bodies: always one verdict, one printable line (no ESC or NUL reaches the
    terminal), the status shown only when it is short printable text."""
    import http.server
    import json
    import threading

    from coldharbour.cli.doctor import check_account
    from coldharbour.config import AccountSettings, Secret

    bodies: list[bytes] = [json.dumps({**ACCOUNT, "status": v}).encode() for v in HOSTILE_VALUES if not isinstance(
        v, bytes)]  # fmt: skip
    bodies += [json.dumps({**ACCOUNT, "status": s}).encode() for s in ("\x1b[2J\x1b[31mOWNED", "AC\x00TIVE", "é" * 41)]
    bodies += [page.encode("utf-8", "surrogatepass") for page in HTML_PAGES if isinstance(page, str)]
    bodies += [b"[]", b"null", b"\xff\xfe", b'"x"', b"1e999999"]
    served: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server calls it by that name
            body = served.pop(0)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    account = AccountSettings(name="demo", slug="demo", api_key=Secret("k"), secret_key=Secret("s"),
                              base_url=f"http://127.0.0.1:{server.server_address[1]}")  # fmt: skip
    wrong = []
    try:
        for body in bodies:
            served.append(body)
            check = check_account(account)
            if not check.line.isprintable() or check.verdict not in ("OK", "FAIL"):
                wrong.append(f"{body[:60]!r}: {check}")
    finally:
        server.shutdown()
        server.server_close()

    assert wrong == []

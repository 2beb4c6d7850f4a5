"""Decode and validate the external price feed (docs/spec.md §4). Pure: no I/O, no clock, no logging.

A message is one msgpack frame (a leading topic frame is tolerated) holding a map whose first
key is the kind; only ``trade`` is used::

    {"trade": {"S"|"symbol": str, "p"|"price": number, "c"|"conditions": list or "A-B" string,
               "t": ns or ISO time, "s": size}}

A trade becomes a ``Tick`` unless it is malformed, has no symbol (or one with a NUL or longer
than ``MAX_SYMBOL_CHARS``), a price that is not a positive ``Decimal`` the store takes (finite,
below ``MAX_ABS``, at most ``MAX_SCALE`` decimals: ``1e308`` is counted as ``price_value``), a
time outside 2000..2262 (a time in s, ms or µs lands before 2000: ``time``) or, given
``now_ns``, more than ``validate.TICK_FUTURE_NS`` ahead (``time_future``: one tick stamped
2554 would hide every later real one), or a condition in the exclusion set (default
``D,M,E``; a trade without conditions is kept, docs/defects.md D65). Every outcome that is not a tick is a
``Skip`` with a reason: the caller counts ``rejects_<reason>`` (bad input) or
``skipped_<reason>`` (valid, just not for us).

``TradeFilter.accept`` is the hot path: a typed decode of the usual shape that only *accepts* (it
returns None for anything else, and the caller then asks ``decode_frames``, the one place that
says why a frame is dropped), so both always agree on what becomes a tick.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Final

import msgspec
from msgspec import UNSET, UnsetType

from coldharbour.broker.validate import MAX_SYMBOL_CHARS, MAX_TIME_NS, TICK_FUTURE_NS
from coldharbour.domain.money import MAX_ABS, InvalidMoney, to_decimal
from coldharbour.domain.types import from_datetime
from coldharbour.messages import Tick

_DECODER: Final = msgspec.msgpack.Decoder()
MIN_TICK_NS: Final = 946_684_800 * 1_000_000_000  # 2000-01-01: below it, ``t`` was not in ns
MAX_PRICE: Final = float(MAX_ABS)
# Every float in [_FAST_MIN_PRICE, MAX_PRICE) has a repr within money.MAX_SCALE decimals (≤ 17
# digits); a smaller price takes the slow path, which checks the exact decimal.
_FAST_MIN_PRICE: Final = 1e-3
_ONE_ENTRY_MAP: Final = 0x81  # msgpack fixmap with one key: the feed's ``{kind: body}``


class Skip(msgspec.Struct, frozen=True):
    """A frame that yields no tick: ``reason`` is a counter suffix; ``is_reject`` marks bad input."""

    reason: str
    is_reject: bool = True


def _first(body: Mapping[str, object], short: str, long: str) -> object:
    return body[short] if short in body else body.get(long)


def _conditions(value: object) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split("-") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(item.strip() for item in value)
    return None


def _time_ns(value: object) -> int | None:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value == 0 or MIN_TICK_NS <= value <= MAX_TIME_NS else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        ns = from_datetime(moment)
        return ns if MIN_TICK_NS <= ns <= MAX_TIME_NS else None
    return None


def _size_ok(size: float) -> bool:
    """Return True when ``size`` is zero or positive and becomes a Decimal the store takes (a bar's volume)."""
    if not 0 <= size <= MAX_PRICE:  # NaN fails too
        return False
    if size == 0 or size >= _FAST_MIN_PRICE:
        return True
    try:
        to_decimal(size, field="size")
    except InvalidMoney:
        return False
    return True


def _price_ok(price: float) -> bool:
    """Return True when ``price`` is positive and becomes a Decimal the store takes, unrounded."""
    if not 0 < price < MAX_PRICE:
        return False
    if price >= _FAST_MIN_PRICE:
        return True
    try:
        to_decimal(price, field="price")
    except InvalidMoney:
        return False
    return True


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def decode_frames(frames: Sequence[bytes], exclude: Collection[str], now_ns: int | None = None) -> Tick | Skip:
    """Return the tick in one feed message (its frames), or why there is none.

    ``now_ns`` (the caller's clock) rejects ticks stamped beyond ``TICK_FUTURE_NS`` ahead.
    """
    if not frames or len(frames) > 2:
        return Skip("frame_count")
    try:
        message = _DECODER.decode(frames[-1])
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec lets invalid UTF-8 in a str escape
        return Skip("msgpack")
    if not isinstance(message, dict) or not message:
        return Skip("shape")
    kind, body = next(iter(message.items()))
    if kind != "trade":
        return Skip(f"kind_{kind}" if isinstance(kind, str) and kind.isidentifier() else "kind", is_reject=False)
    if not isinstance(body, dict):
        return Skip("shape")
    return decode_trade(body, exclude, now_ns)


def decode_trade(body: Mapping[str, object], exclude: Collection[str], now_ns: int | None = None) -> Tick | Skip:
    """Return the tick of one ``trade`` body, or why it was dropped."""
    symbol = _first(body, "S", "symbol")
    if not isinstance(symbol, str) or not symbol.strip() or len(symbol) > MAX_SYMBOL_CHARS or "\x00" in symbol:
        return Skip("symbol")
    price = _number(_first(body, "p", "price"))
    if price is None:
        return Skip("price_type")
    if not _price_ok(price):
        return Skip("price_value")
    conditions = _conditions(_first(body, "c", "conditions"))
    if conditions is None:
        return Skip("conditions")
    if any(condition in exclude for condition in conditions):
        return Skip("condition_excluded", is_reject=False)
    size = _number(body.get("s"))
    if size is not None and not _size_ok(size):
        return Skip("size")
    ts = _time_ns(body.get("t"))
    if ts is None:
        return Skip("time")
    if now_ns is not None and ts > now_ns + TICK_FUTURE_NS:
        return Skip("time_future")
    return Tick(symbol=symbol.strip().upper(), price=price, size=size or 0.0, ts_event=ts)


class _TradeBody(msgspec.Struct, gc=False):
    S: str | UnsetType = UNSET
    symbol: str | UnsetType = UNSET
    p: float | UnsetType = UNSET
    price: float | UnsetType = UNSET
    c: tuple[str, ...] | str | UnsetType = UNSET
    conditions: tuple[str, ...] | str | UnsetType = UNSET
    t: int | str | UnsetType = UNSET
    s: float | UnsetType = UNSET


class _TradeMessage(msgspec.Struct, gc=False):
    trade: _TradeBody | UnsetType = UNSET


_TRADE_DECODER: Final = msgspec.msgpack.Decoder(_TradeMessage)
_MAX_MEMO: Final = 4096


class TradeFilter:
    """The hot path: ``accept(frame)`` for plain valid trade frames, with the exclusion set fixed."""

    def __init__(self, exclude: Collection[str]) -> None:
        self._exclude = frozenset(exclude)
        # The latest ``t`` accepted: the caller sets ``now + TICK_FUTURE_NS`` before each drain.
        self.horizon_ns = MAX_TIME_NS
        self._excluded: dict[tuple[str, ...] | str, bool] = {}  # conditions seen -> excluded?

    def accept(self, frame: bytes) -> tuple[str, float, float, int] | None:
        """Return (symbol, price, size, ts_event) of a plain valid trade frame, else None.

        None means "not the plain case", not "bad": ask ``decode_frames`` for the verdict.
        Whatever this accepts, ``decode_frames`` turns into the same tick
        (``tests/broker/test_feed.py``).
        """
        if not frame or frame[0] != _ONE_ENTRY_MAP:
            return None
        try:
            body = _TRADE_DECODER.decode(frame).trade
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        if body is UNSET:
            return None
        symbol = body.S if body.S is not UNSET else body.symbol
        price = body.p if body.p is not UNSET else body.price
        if symbol is UNSET or price is UNSET or len(symbol) > MAX_SYMBOL_CHARS:
            return None
        if not _FAST_MIN_PRICE <= price < MAX_PRICE:
            return None
        conditions = body.c if body.c is not UNSET else body.conditions
        if conditions is not UNSET and conditions and self._is_excluded(conditions):
            return None
        size = 0.0 if body.s is UNSET else body.s
        ts = 0 if body.t is UNSET else body.t
        symbol = symbol.strip()
        if not symbol or not (size == 0 or _FAST_MIN_PRICE <= size <= MAX_PRICE) or isinstance(ts, str) \
                or "\x00" in symbol:
            return None
        if ts != 0 and not MIN_TICK_NS <= ts <= self.horizon_ns:
            return None
        return symbol.upper(), price, size, ts

    def _is_excluded(self, conditions: tuple[str, ...] | str) -> bool:
        found = self._excluded.get(conditions)
        if found is None:
            parts = conditions.split("-") if isinstance(conditions, str) else conditions
            found = not self._exclude.isdisjoint(map(str.strip, parts))
            if len(self._excluded) < _MAX_MEMO:
                self._excluded[conditions] = found
        return found

"""Decode and validate the external price feed (SPEC §4). Pure: no I/O, no clock, no logging.

A message is one msgpack frame (a leading topic frame is tolerated) holding a map whose first
key is the kind; only ``trade`` is used::

    {"trade": {"S"|"symbol": str, "p"|"price": number, "c"|"conditions": list or "A-B" string,
               "t": ns or ISO time, "s": size}}

A trade becomes a ``Tick`` unless it is malformed, has no symbol, a non-finite or non-positive
price, or a condition in the exclusion set (default ``D,M,E``; a trade without conditions is
kept, D65). Every outcome that is not a tick is a ``Skip`` with a reason: the caller counts
``rejects_<reason>`` (bad input) or ``skipped_<reason>`` (valid, just not for us).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Final

import msgspec

from coldharbour.domain.types import from_datetime
from coldharbour.messages import Tick

_DECODER: Final = msgspec.msgpack.Decoder()
MAX_SYMBOL_CHARS: Final = 32


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
        return value if value >= 0 else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return from_datetime(moment) if moment.tzinfo is not None else None
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def decode_frames(frames: Sequence[bytes], exclude: Collection[str]) -> Tick | Skip:
    """Return the tick in one feed message (its frames), or why there is none."""
    if not frames or len(frames) > 2:
        return Skip("frame_count")
    try:
        message = _DECODER.decode(frames[-1])
    except msgspec.DecodeError:
        return Skip("msgpack")
    if not isinstance(message, dict) or not message:
        return Skip("shape")
    kind, body = next(iter(message.items()))
    if kind != "trade":
        return Skip(f"kind_{kind}" if isinstance(kind, str) and kind.isidentifier() else "kind", is_reject=False)
    if not isinstance(body, dict):
        return Skip("shape")
    return decode_trade(body, exclude)


def decode_trade(body: Mapping[str, object], exclude: Collection[str]) -> Tick | Skip:
    """Return the tick of one ``trade`` body, or why it was dropped."""
    symbol = _first(body, "S", "symbol")
    if not isinstance(symbol, str) or not symbol.strip() or len(symbol) > MAX_SYMBOL_CHARS:
        return Skip("symbol")
    price = _number(_first(body, "p", "price"))
    if price is None:
        return Skip("price_type")
    if not math.isfinite(price) or price <= 0:
        return Skip("price_value")
    conditions = _conditions(_first(body, "c", "conditions"))
    if conditions is None:
        return Skip("conditions")
    if any(condition in exclude for condition in conditions):
        return Skip("condition_excluded", is_reject=False)
    size = _number(body.get("s"))
    if size is not None and (not math.isfinite(size) or size < 0):
        return Skip("size")
    ts = _time_ns(body.get("t"))
    if ts is None:
        return Skip("time")
    return Tick(symbol=symbol.strip().upper(), price=price, size=size or 0.0, ts_event=ts)

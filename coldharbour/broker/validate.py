"""What PostgreSQL and the bus accept, checked once at the edge. Pure: no I/O, no clock.

A value a decoder accepts but the store or the bus encoder refuses later poisons every commit
and every resync that carries it. So every text, id and time that comes from the
broker or the feed is checked here before it becomes a domain value or a bus message:

- **text**: no NUL (``text``/``jsonb`` refuse ``\\x00``), valid UTF-8 (no lone surrogate), and
  for the whole broker object (``raw_json``) no deeper than ``MAX_DEPTH``;
- **ids**: order, execution and leg ids are ``uuid`` columns; they are converted to the
  canonical form (lower case, hyphens, no braces or ``urn:uuid:``), which is what PostgreSQL
  prints back, so memory and the database always agree; anything else is rejected;
- **times**: UTC nanoseconds in ``[MIN_TIME_NS, MAX_TIME_NS]`` (1970 … 2262: an int64 that
  msgpack, ``bigint`` and ``timestamptz`` all hold), and, when the caller gives ``now_ns``, not
  later than ``now_ns + tolerance`` (``BROKER_FUTURE_NS`` for broker records,
  ``TICK_FUTURE_NS`` for feed ticks): a future stamp would freeze a price or a cursor;
- **decimals**: ``coldharbour.domain.money.to_decimal`` (finite, ``MAX_ABS``, ``MAX_SCALE``,
  ``MAX_DIGITS``: rejected, never rounded).

A failure is an ``Invalid`` with a short ``reason`` (a counter suffix: ``text``, ``id``,
``time``, ``future``) and a one-line message. ``OnceLog`` lets a caller log a rejection the
first time it sees it and only count the repeats.
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

# How far ahead a report may be stamped is a domain bound (``db.loads`` holds stored marks to it too).
from coldharbour.domain.reports import BROKER_FUTURE_NS as BROKER_FUTURE_NS
from coldharbour.domain.reports import NS_PER_SECOND as NS_PER_SECOND
from coldharbour.domain.reports import TICK_FUTURE_NS as TICK_FUTURE_NS

MIN_TIME_NS: Final = 0  # 1970-01-01: nothing the broker or the feed sends is older
MAX_TIME_NS: Final = 2**63 - 1  # 2262-04-11: the int64 range (msgpack int, bigint, to_datetime)
MAX_DEPTH: Final = 32  # nesting of a broker object (an order with legs is 3 deep)
MAX_SYMBOL_CHARS: Final = 32  # longer than any equity, option or crypto symbol Alpaca lists
CANONICAL_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_ID_CHARS: Final = 128  # Alpaca's limit for client_order_id; activity ids are ~55


class Invalid(ValueError):
    """One value the store or the bus would refuse; ``reason`` is a counter suffix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def text(value: str, *, field: str, max_chars: int | None = None) -> str:
    """Return ``value`` when PostgreSQL ``text`` takes it (no NUL, valid UTF-8, short enough)."""
    if "\x00" in value:
        raise Invalid("text", f"{field}: contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise Invalid("text", f"{field}: not valid UTF-8 (lone surrogate at {e.start})") from e
    if max_chars is not None and len(value) > max_chars:
        raise Invalid("text", f"{field}: longer than {max_chars} characters ({len(value)})")
    return value


def tree(data: object, *, field: str = "object", depth: int = 0) -> None:
    """Check every key and string inside a decoded JSON object (what ``jsonb`` will store)."""
    if depth > MAX_DEPTH:
        raise Invalid("text", f"{field}: nested deeper than {MAX_DEPTH}")
    if isinstance(data, str):
        text(data, field=field)
    elif isinstance(data, Mapping):
        for key, value in data.items():
            name = str(key)[:40]
            if isinstance(key, str):
                text(key, field=f"{field} key {name!r}")
            tree(value, field=name, depth=depth + 1)
    elif isinstance(data, list | tuple):
        for item in data:
            tree(item, field=field, depth=depth + 1)


def encoded_passes_tree(encoded: bytes) -> bool:
    """Return True when ``encoded``, msgspec's JSON text of a value, shows ``tree`` would pass it.

    The check of a whole broker object in C speed (its JSON is made anyway): msgspec refuses
    to encode a lone surrogate (``UnicodeEncodeError``: the caller walks ``tree`` instead) and
    writes NUL as ``\\u0000``; nesting deeper than ``MAX_DEPTH`` needs more than ``MAX_DEPTH``
    ``{``/``[``. False only means "maybe": ``tree`` then gives the exact answer and message.
    """
    return b"\\u0000" not in encoded and encoded.count(b"{") + encoded.count(b"[") <= MAX_DEPTH


def canonical_uuid(value: object, *, field: str) -> str:
    """Return ``value`` as a canonical UUID string (lower case, hyphenated); else ``Invalid``.

    Upper case, braces, ``urn:uuid:`` and the 32-hex form are the same UUID for PostgreSQL, so
    they are converted (never ambiguous); anything else is rejected.
    """
    if isinstance(value, str) and CANONICAL_UUID.fullmatch(value):  # what Alpaca sends: already canonical
        return value
    if not isinstance(value, str) or not value.strip():
        raise Invalid("id", f"{field}: expected a UUID, found {type(value).__name__}")
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError as e:
        raise Invalid("id", f"{field}: not a UUID: {value[:40]!r}") from e


def time_ns(ns: int, *, field: str, now_ns: int | None = None, future_ns: int = BROKER_FUTURE_NS) -> int:
    """Return ``ns`` when within the encodable range and not beyond ``now_ns + future_ns``."""
    if not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        raise Invalid("time", f"{field}: outside 1970..2262 ({ns} ns)")
    if now_ns is not None and ns > now_ns + future_ns:
        ahead_s = (ns - now_ns) // NS_PER_SECOND
        raise Invalid("future", f"{field}: {ahead_s} s in the future")
    return ns


class OnceLog:
    """Remembers the last ``size`` rejection keys: ``first(key)`` is True only the first time."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first(self, key: str) -> bool:
        """Return True when ``key`` was not seen recently (then log it); remember it either way."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True

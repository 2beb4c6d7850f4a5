"""Alpaca wire encodings for the fake broker: numbers as strings, timestamps, error bodies.

Alpaca sends every money and quantity field as a JSON *string* (alpaca-py's models reject JSON
numbers in ``str`` fields), every timestamp with an explicit offset, and errors as
``{"code": <8 digits>, "message": "..."}``. This module owns those encodings in both directions
(request values arrive as floats, strings or ``True``/``False`` text) so every route and the
engine speak them the same way.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Final

from coldharbour.domain.money import InvalidMoney, to_decimal

# Alpaca's error codes, as its REST API returns them (docs/broker.md section 2).
CODE_BAD_REQUEST: Final = 40010000
CODE_INVALID_FIELD: Final = 40010001
CODE_UNAUTHORIZED: Final = 40110000
CODE_FORBIDDEN: Final = 40310000
CODE_NOT_FOUND: Final = 40410000
CODE_UNPROCESSABLE: Final = 42210000
CODE_RATE_LIMITED: Final = 42910000
CODE_INTERNAL: Final = 50010000


class SimError(Exception):
    """A request the fake broker refuses, carrying Alpaca's HTTP status and error body."""

    def __init__(self, status: int, code: int, message: str, extra: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})

    def to_body(self) -> dict[str, object]:
        """Return the JSON error body Alpaca would send."""
        return {"code": self.code, "message": self.message, **self.extra}


def unprocessable(message: str, code: int = CODE_UNPROCESSABLE) -> SimError:
    """Return a 422 validation error (Alpaca's answer to a well-formed but invalid request)."""
    return SimError(422, code, message)


def not_found(message: str) -> SimError:
    """Return a 404 error with Alpaca's not-found code."""
    return SimError(404, CODE_NOT_FOUND, message)


def forbidden(message: str, extra: Mapping[str, object] | None = None) -> SimError:
    """Return a 403 error (insufficient buying power or quantity)."""
    return SimError(403, CODE_FORBIDDEN, message, extra)


def money_text(value: Decimal | None) -> str | None:
    """Return ``value`` as Alpaca's string form without exponent or trailing zeros."""
    if value is None:
        return None
    if value == 0:
        return "0"
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def timestamp_text(value: datetime | None) -> str | None:
    """Return an aware datetime as RFC 3339 UTC with microseconds and a ``Z`` suffix."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def precise_timestamp_text(value: datetime, nanos: int, zone: tzinfo | None = None) -> str:
    """Return ``value`` with a 9-digit fraction (``nanos`` < 1000 appended to its microseconds).

    Alpaca stamps trade updates and executions to the nanosecond, sometimes with a New York
    offset instead of ``Z``; parsers truncate (pydantic) or round (msgspec) the extra digits.
    """
    moment = value.astimezone(zone or UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}{nanos % 1000:03d}"
    offset = moment.strftime("%z")
    suffix = "Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"
    return f"{base}.{fraction}{suffix}"


def parse_decimal(value: object, field: str) -> Decimal:
    """Return a request number (JSON number or numeric string) as Decimal; 422 when invalid."""
    try:
        return to_decimal(value, field=field)
    except InvalidMoney as e:
        raise unprocessable(f"invalid {field}: {value!r}", CODE_INVALID_FIELD) from e


def parse_optional_decimal(value: object, field: str) -> Decimal | None:
    """Return ``None`` for a missing/empty value, else ``parse_decimal``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_decimal(value, field)


def parse_bool(value: object, field: str) -> bool:
    """Return a boolean sent as JSON or as query text (alpaca-py sends ``True``/``False``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "0", ""}:
        return False
    raise unprocessable(f"invalid {field}: {value!r}", CODE_INVALID_FIELD)


def parse_timestamp(value: str, field: str) -> datetime:
    """Return an ISO-8601 timestamp or date as an aware UTC datetime (naive means UTC)."""
    text = value.strip()
    if "T" in text:
        # An unencoded "+" in a query string arrives as a space.
        text = text.replace(" ", "+")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as e:
        raise unprocessable(f"invalid {field}: {value!r}", CODE_INVALID_FIELD) from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)

"""Exact money and quantity values: parsing, finiteness checks, rounding rules.

Money and quantities are ``Decimal`` everywhere. A float from the outside world is converted
through its shortest ``repr`` (``0.1`` becomes ``Decimal("0.1")``, not the binary expansion),
exactly once, at the edge. NaN and infinities are rejected, never stored. Nothing here is
silently rounded: the only rounding helper is ``round_pct``, used for display percentages
that docs/spec.md defines as rounded.

Pure: no I/O, no logging.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Final

ZERO: Final = Decimal(0)
ONE: Final = Decimal(1)
HUNDRED: Final = Decimal(100)
CENT: Final = Decimal("0.01")
SUB_DOLLAR_TICK: Final = Decimal("0.0001")

# Larger than any price, quantity or balance a brokerage account can hold; a value beyond this
# is a corrupt input, not money (it would also overflow numeric formatting in the UI).
MAX_ABS: Final = Decimal("1e15")
# What the arithmetic keeps exactly (the default context's 28 digits) and no broker price or
# quantity needs more than: a value with more decimals (``1E-20000``: beyond ``numeric``'s scale
# too) or more significant digits is rejected, never rounded to fit.
MAX_SCALE: Final = 20
MAX_DIGITS: Final = 28


class InvalidMoney(ValueError):
    """A value that is not a finite, sane decimal number."""


def to_decimal(value: object, *, field: str = "value") -> Decimal:
    """Return ``value`` as a finite ``Decimal``; raise ``InvalidMoney`` naming ``field``.

    Accepts ``Decimal``, ``int``, ``float`` (via its shortest repr) and numeric strings.
    Booleans, NaN, infinities, empty strings, magnitudes above ``MAX_ABS`` and values needing
    more than ``MAX_SCALE`` decimals or ``MAX_DIGITS`` significant digits are rejected.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidMoney(f"{field}: expected a number, found {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        try:
            result = Decimal(text)
        except InvalidOperation as e:
            raise InvalidMoney(f"{field}: expected a number, found {value[:40]!r}") from e
    else:
        raise InvalidMoney(f"{field}: expected a number, found {type(value).__name__}")
    if not result.is_finite():
        raise InvalidMoney(f"{field}: expected a finite number, found {result}")
    if abs(result) > MAX_ABS:
        raise InvalidMoney(f"{field}: magnitude too large, found {result:.6e}")
    _check_precision(result, field)
    return result


def _check_precision(value: Decimal, field: str) -> None:
    if not value:
        return
    digits, exponent = _significant(value)
    if exponent < -MAX_SCALE:
        raise InvalidMoney(f"{field}: more than {MAX_SCALE} decimals, found {value:.6e}")
    if digits > MAX_DIGITS:
        raise InvalidMoney(f"{field}: more than {MAX_DIGITS} significant digits ({digits})")


def _significant(value: Decimal) -> tuple[int, int]:
    """Return (significant digits, exponent) of ``value`` without trailing zeros (non-zero, finite)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    count = len(digits)
    while count > 1 and digits[count - 1] == 0:
        count -= 1
        exponent += 1
    return count, exponent


def to_display_decimal_or_none(value: object, *, field: str = "value") -> Decimal | None:
    """Return a number that is only *shown* (a mark, never booked), rounded to what we store.

    ``None``/empty is ``None``. More than ``MAX_SCALE`` decimals (a broker's ``current_price``
    of 26 decimals after a split) are rounded half-even to ``MAX_SCALE``, then to ``MAX_DIGITS``
    significant digits; anything else ``to_decimal`` refuses is still refused. Never use it for a
    quantity, a cost or cash: those are booked and must be exact.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return to_decimal(value, field=field)
    except InvalidMoney:
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise
        try:
            exact = Decimal(value.strip() if isinstance(value, str) else repr(value) if isinstance(value, float)
                            else value)
        except InvalidOperation as e:
            raise InvalidMoney(f"{field}: expected a number, found {str(value)[:40]!r}") from e
        if not exact.is_finite() or abs(exact) > MAX_ABS:
            raise
        places = min(MAX_SCALE, MAX_DIGITS - 1 - exact.adjusted()) if exact else 0
        with localcontext() as context:
            context.prec = MAX_DIGITS + MAX_SCALE
            rounded = exact.quantize(Decimal(1).scaleb(-max(0, places)), rounding=ROUND_HALF_EVEN)
        return to_decimal(rounded, field=field)


def to_decimal_or_none(value: object, *, field: str = "value") -> Decimal | None:
    """Return ``None`` for ``None``/empty string, else ``to_decimal(value)``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return to_decimal(value, field=field)


def is_finite(value: Decimal | None) -> bool:
    """Return True when ``value`` is a finite Decimal within ``MAX_ABS`` (None is not)."""
    return value is not None and value.is_finite() and abs(value) <= MAX_ABS


def tick_size(price: Decimal) -> Decimal:
    """Return the minimum price increment: 0.0001 below $1, else 0.01."""
    return SUB_DOLLAR_TICK if abs(price) < ONE else CENT


def round_pct(value: Decimal, places: int = 2) -> Decimal:
    """Round a display percentage to ``places`` decimals (banker's rounding).

    A huge ratio (a TP 1e-12 from the entry with a 9e14 price moves 9e28 %) would need more
    digits than the context keeps and ``quantize`` would raise ``InvalidOperation``: the
    precision is raised for this one operation instead.
    """
    with localcontext() as context:
        if value.is_finite() and value:
            context.prec = max(context.prec, value.adjusted() + places + 2)
        return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def normalize(value: Decimal) -> Decimal:
    """Return ``value`` without trailing zeros, never in exponent form for integers."""
    result = value.normalize()
    exponent = result.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return result.quantize(ONE)
    return result

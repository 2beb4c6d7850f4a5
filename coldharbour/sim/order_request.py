"""Validate ``POST /v2/orders`` and ``PATCH /v2/orders/{id}`` bodies into typed specs.

alpaca-py sends numbers as JSON floats and enums in lower case; other clients send strings.
Both are accepted here, and everything Alpaca would refuse is refused with its status code and
error body (``SimError``): 422 for a well-formed but invalid order. Checks that need the book
(buying power, available quantity, bracket prices against the market) live in the engine.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, cast

from coldharbour.domain.money import ZERO
from coldharbour.sim.assets import is_crypto
from coldharbour.sim.orders import ORDER_CLASSES, ORDER_TYPES, OrderClass, OrderType, Side
from coldharbour.sim.wire import (
    CODE_INVALID_FIELD,
    SimError,
    parse_bool,
    parse_optional_decimal,
    unprocessable,
)

SUPPORTED_TIME_IN_FORCE: Final[frozenset[str]] = frozenset({"day", "gtc"})
# Alpaca takes crypto orders good-till-canceled or immediate-or-cancel, fractional or not.
CRYPTO_TIME_IN_FORCE: Final[frozenset[str]] = frozenset({"gtc", "ioc"})
ALL_TIME_IN_FORCE: Final[frozenset[str]] = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
MAX_CLIENT_ORDER_ID_LENGTH: Final = 128
MAX_SYMBOL_LENGTH: Final = 12
# Alpaca requires bracket exits at least one cent away from the entry's base price.
MIN_BRACKET_DISTANCE: Final = Decimal("0.01")


@dataclass(frozen=True)
class StopLossSpec:
    """The stop-loss leg of a bracket/OTO/OCO: a stop, or a stop-limit when limit is set."""

    stop_price: Decimal
    limit_price: Decimal | None


@dataclass(frozen=True)
class OrderSpec:
    """A validated order request; prices and quantities are Decimal."""

    symbol: str
    side: Side
    type: OrderType
    time_in_force: str
    order_class: OrderClass
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    trail_price: Decimal | None
    trail_percent: Decimal | None
    extended_hours: bool
    client_order_id: str | None
    take_profit_limit: Decimal | None
    stop_loss: StopLossSpec | None


@dataclass(frozen=True)
class ReplaceSpec:
    """The fields a PATCH may change; None keeps the old order's value."""

    qty: Decimal | None
    time_in_force: str | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    trail: Decimal | None
    client_order_id: str | None


def _text(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise unprocessable(f"invalid {key}: {value!r}", CODE_INVALID_FIELD)
    return value.strip()


def _choice(body: Mapping[str, object], key: str, allowed: frozenset[str], default: str) -> str:
    value = (_text(body, key) or default).lower()
    if value not in allowed:
        raise unprocessable(f"invalid {key}: {value!r}", CODE_INVALID_FIELD)
    return value


def _positive(body: Mapping[str, object], key: str) -> Decimal | None:
    value = parse_optional_decimal(body.get(key), key)
    if value is not None and value <= ZERO:
        raise unprocessable(f"{key} must be > 0", CODE_INVALID_FIELD)
    return value


def _symbol(body: Mapping[str, object]) -> str:
    symbol = (_text(body, "symbol") or "").upper()
    if not symbol:
        raise unprocessable("symbol is required", CODE_INVALID_FIELD)
    if len(symbol) > MAX_SYMBOL_LENGTH or not symbol.replace(".", "").replace("/", "").isalnum():
        raise unprocessable(f'asset "{symbol}" not found', CODE_INVALID_FIELD)
    return symbol


def _client_order_id(body: Mapping[str, object]) -> str | None:
    client_order_id = _text(body, "client_order_id")
    if client_order_id is not None and len(client_order_id) > MAX_CLIENT_ORDER_ID_LENGTH:
        raise unprocessable("client_order_id must be no more than 128 characters")
    return client_order_id or None


def _leg(body: Mapping[str, object], key: str) -> Mapping[str, object] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise unprocessable(f"invalid {key}: {value!r}", CODE_INVALID_FIELD)
    return cast(Mapping[str, object], value)


def _stop_loss(body: Mapping[str, object]) -> StopLossSpec | None:
    leg = _leg(body, "stop_loss")
    if leg is None:
        return None
    stop_price = _positive(leg, "stop_price")
    if stop_price is None:
        raise unprocessable("stop_loss.stop_price is required")
    return StopLossSpec(stop_price, _positive(leg, "limit_price"))


def _take_profit(body: Mapping[str, object]) -> Decimal | None:
    leg = _leg(body, "take_profit")
    if leg is None:
        return None
    limit_price = _positive(leg, "limit_price")
    if limit_price is None:
        raise unprocessable("take_profit.limit_price is required")
    return limit_price


def parse_order_request(body: Mapping[str, object]) -> OrderSpec:
    """Return the validated spec of a new-order body; raise ``SimError`` (422) when invalid."""
    time_in_force = _choice(body, "time_in_force", ALL_TIME_IN_FORCE, "")
    symbol = _symbol(body)
    if is_crypto(symbol):
        if time_in_force not in CRYPTO_TIME_IN_FORCE:
            raise unprocessable(f"invalid crypto time_in_force: {time_in_force}", CODE_INVALID_FIELD)
    elif time_in_force not in SUPPORTED_TIME_IN_FORCE:
        raise unprocessable(f"time_in_force {time_in_force} is not supported by the simulator")
    spec = OrderSpec(
        symbol=symbol,
        side=cast(Side, _choice(body, "side", frozenset({"buy", "sell"}), "")),
        type=cast(OrderType, _choice(body, "type", ORDER_TYPES, "")),
        time_in_force=time_in_force,
        order_class=cast(OrderClass, _choice(body, "order_class", ORDER_CLASSES, "simple")),
        qty=_positive(body, "qty"),
        notional=_positive(body, "notional"),
        limit_price=_positive(body, "limit_price"),
        stop_price=_positive(body, "stop_price"),
        trail_price=_positive(body, "trail_price"),
        trail_percent=_positive(body, "trail_percent"),
        extended_hours=parse_bool(body.get("extended_hours", False), "extended_hours"),
        client_order_id=_client_order_id(body),
        take_profit_limit=_take_profit(body),
        stop_loss=_stop_loss(body),
    )
    _check_quantity(spec)
    _check_prices(spec)
    _check_class(spec)
    return spec


def _check_quantity(spec: OrderSpec) -> None:
    if (spec.qty is None) == (spec.notional is None):
        raise unprocessable("qty or notional is required, but not both", CODE_INVALID_FIELD)
    if spec.notional is not None and spec.order_class != "simple":
        raise unprocessable("notional orders must be simple orders")
    if is_crypto(spec.symbol):
        if spec.order_class != "simple":
            raise unprocessable("crypto orders must be simple orders")
        if spec.notional is not None and spec.type != "market":
            raise unprocessable("notional orders must be market orders")
        return
    if spec.notional is not None and (spec.type != "market" or spec.time_in_force != "day"):
        raise unprocessable("notional orders must be market orders with time_in_force day")
    is_fractional = spec.qty is not None and spec.qty != spec.qty.to_integral_value()
    if is_fractional and spec.time_in_force != "day":
        raise unprocessable("fractional orders must be DAY orders")
    if is_fractional and spec.order_class != "simple":
        raise unprocessable("fractional orders must be simple orders")


def _check_prices(spec: OrderSpec) -> None:
    needs_limit = spec.type in {"limit", "stop_limit"}
    needs_stop = spec.type in {"stop", "stop_limit"}
    if needs_limit and spec.limit_price is None and spec.order_class != "oco":
        raise unprocessable("limit_price is required for limit orders")
    if needs_stop and spec.stop_price is None:
        raise unprocessable("stop_price is required for stop orders")
    if spec.type == "trailing_stop" and (spec.trail_price is None) == (spec.trail_percent is None):
        raise unprocessable("trailing stop orders need exactly one of trail_price, trail_percent")
    if spec.extended_hours and (spec.type != "limit" or spec.time_in_force != "day"):
        raise unprocessable("extended hours order must be DAY limit orders")


def _check_class(spec: OrderSpec) -> None:
    has_take_profit = spec.take_profit_limit is not None
    has_stop_loss = spec.stop_loss is not None
    if spec.order_class == "simple" and (has_take_profit or has_stop_loss):
        raise unprocessable("take_profit/stop_loss need order_class bracket, oto or oco")
    if spec.order_class == "bracket":
        if not (has_take_profit and has_stop_loss):
            raise unprocessable("bracket orders require take_profit and stop_loss")
        if spec.type not in {"market", "limit"}:
            raise unprocessable("bracket orders must be market or limit orders")
    if spec.order_class == "oto" and has_take_profit == has_stop_loss:
        raise unprocessable("oto orders require exactly one of take_profit, stop_loss")
    if spec.order_class == "oco":
        if not (has_take_profit and has_stop_loss):
            raise unprocessable("oco orders require take_profit and stop_loss")
        if spec.type != "limit":
            raise unprocessable("oco orders must be limit orders")


def check_bracket_prices(spec: OrderSpec, base_price: Decimal) -> None:
    """Refuse exits on the wrong side of the entry's base price (limit or current price)."""
    take_profit = spec.take_profit_limit
    stop = spec.stop_loss.stop_price if spec.stop_loss is not None else None
    if spec.side == "buy":
        if take_profit is not None and take_profit < base_price + MIN_BRACKET_DISTANCE:
            raise unprocessable("take_profit.limit_price must be >= base_price + 0.01")
        if stop is not None and stop > base_price - MIN_BRACKET_DISTANCE:
            raise unprocessable("stop_loss.stop_price must be <= base_price - 0.01")
    else:
        if take_profit is not None and take_profit > base_price - MIN_BRACKET_DISTANCE:
            raise unprocessable("take_profit.limit_price must be <= base_price - 0.01")
        if stop is not None and stop < base_price + MIN_BRACKET_DISTANCE:
            raise unprocessable("stop_loss.stop_price must be >= base_price + 0.01")


def parse_replace_request(body: Mapping[str, object]) -> ReplaceSpec:
    """Return the validated spec of a replace (PATCH) body; 422 when nothing valid is given."""
    trail = _positive(body, "trail")
    time_in_force = _text(body, "time_in_force")
    if time_in_force is not None and time_in_force.lower() not in SUPPORTED_TIME_IN_FORCE:
        raise unprocessable(f"invalid time_in_force: {time_in_force!r}", CODE_INVALID_FIELD)
    spec = ReplaceSpec(
        qty=_positive(body, "qty"),
        time_in_force=time_in_force.lower() if time_in_force else None,
        limit_price=_positive(body, "limit_price"),
        stop_price=_positive(body, "stop_price"),
        trail=trail,
        client_order_id=_client_order_id(body),
    )
    if spec == ReplaceSpec(None, None, None, None, None, None):
        raise unprocessable("no replace parameter given", CODE_INVALID_FIELD)
    return spec


def reject_unknown_body(body: object) -> Mapping[str, object]:
    """Return ``body`` as a JSON object; 422 if the request body was another JSON value."""
    if not isinstance(body, Mapping):
        raise SimError(422, CODE_INVALID_FIELD, "request body must be a JSON object")
    return cast(Mapping[str, object], body)

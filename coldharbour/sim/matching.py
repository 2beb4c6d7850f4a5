"""Fill rules of the fake broker (docs/architecture.md §8): when an order executes, and at what price.

- market: at once, at the current price;
- limit: at the current price when it is already at least as good as the limit on arrival
  (``is_fresh``), otherwise at the limit price as soon as a later price reaches it;
- stop: triggers when the price reaches the stop and fills at the triggering price;
- stop_limit: triggers likewise, then behaves as a limit order placed at that moment;
- trailing_stop: the stop follows the best price seen (``hwm``) by ``trail_price`` or
  ``trail_percent`` and then behaves as a stop.

Pure: no I/O, no clock. The only state touched is the order's own trigger flag and trail.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from coldharbour.domain.money import HUNDRED, tick_size
from coldharbour.sim.orders import SimOrder

PERCENT: Final = HUNDRED


def _reaches_limit(order: SimOrder, price: Decimal) -> bool:
    assert order.limit_price is not None
    return price <= order.limit_price if order.side == "buy" else price >= order.limit_price


def _reaches_stop(order: SimOrder, price: Decimal) -> bool:
    assert order.stop_price is not None
    return price >= order.stop_price if order.side == "buy" else price <= order.stop_price


def _limit_execution(order: SimOrder, price: Decimal, is_fresh: bool) -> Decimal | None:
    if not _reaches_limit(order, price):
        return None
    assert order.limit_price is not None
    return price if is_fresh else order.limit_price


def follow_trail(order: SimOrder, price: Decimal) -> None:
    """Move a trailing stop's watermark to ``price`` if better and recompute its stop price."""
    if order.hwm is None:
        order.hwm = price
    elif order.side == "sell":
        order.hwm = max(order.hwm, price)
    else:
        order.hwm = min(order.hwm, price)
    if order.trail_price is not None:
        distance = order.trail_price
    else:
        assert order.trail_percent is not None
        distance = order.hwm * order.trail_percent / PERCENT
    stop = order.hwm - distance if order.side == "sell" else order.hwm + distance
    order.stop_price = stop.quantize(tick_size(stop), rounding=ROUND_HALF_UP)


def execution_price(order: SimOrder, price: Decimal, is_fresh: bool) -> Decimal | None:
    """Return the price ``order`` executes at when the market trades at ``price``, or None.

    ``is_fresh`` is True when the order has just been placed or activated (a bracket leg whose
    parent just filled), which is when a better current price is taken instead of the limit.
    Triggers stops as a side effect, so call it once per price.
    """
    if order.type == "market" or (order.type == "stop" and order.is_triggered):
        return price
    if order.type == "limit":
        return _limit_execution(order, price, is_fresh)
    if order.type == "trailing_stop":
        if order.is_triggered:
            return price
        follow_trail(order, price)
    if not order.is_triggered:
        if not _reaches_stop(order, price):
            return None
        order.is_triggered = True
        if order.type != "stop_limit":
            return price
        # A triggered stop-limit is a limit order placed at the triggering price.
        is_fresh = True
    return _limit_execution(order, price, is_fresh)

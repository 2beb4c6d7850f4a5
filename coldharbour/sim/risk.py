"""Pre-trade checks the fake broker makes before accepting an order, with Alpaca's refusals.

An order either *closes* (it trades against an existing position: selling a long, buying back
a short) or *opens* (everything else, short sales included). A closing order may not exceed the
quantity that open exit orders have not already reserved, and may not cross through zero;
Alpaca answers 403 ``insufficient qty available for order (requested: X, available: Y)``. An
opening order must fit in the buying power left after the other open opening orders; Alpaca
answers 403 ``insufficient buying power``.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from coldharbour.domain.money import ZERO
from coldharbour.sim import accounts as ledger
from coldharbour.sim.accounts import SimAccount
from coldharbour.sim.orders import Side, SimOrder
from coldharbour.sim.wire import forbidden, money_text, unprocessable


def _remaining(order: SimOrder) -> Decimal:
    remaining = order.remaining_qty
    return remaining if remaining is not None else ZERO


def held_qty(orders: Iterable[SimOrder], symbol: str, side: Side) -> Decimal:
    """Return the quantity reserved by working ``side`` orders on ``symbol``.

    Orders of one OCO group are alternatives, so a group reserves its largest remainder once.
    Held bracket legs reserve nothing: the position they would close does not exist yet.
    """
    by_group: dict[str, Decimal] = {}
    for order in orders:
        if order.symbol == symbol and order.side == side and order.is_working:
            key = order.oco_group or order.id
            by_group[key] = max(by_group.get(key, ZERO), _remaining(order))
    return sum(by_group.values(), ZERO)


def _is_opening(order: SimOrder, positions: Mapping[str, ledger.SimPosition]) -> bool:
    position = positions.get(order.symbol)
    signed = position.qty if position is not None else ZERO
    return signed <= ZERO if order.side == "sell" else signed >= ZERO


def reserved_buying_power(account: SimAccount, orders: Iterable[SimOrder], prices: Mapping[str, Decimal]) -> Decimal:
    """Return the buying power promised to working opening orders of ``account``."""
    total = ZERO
    for order in orders:
        if not order.is_working or not _is_opening(order, account.positions):
            continue
        if order.notional is not None and order.target_qty is None:
            total += order.notional
            continue
        price = order.limit_price or order.stop_price or prices.get(order.symbol, ZERO)
        total += _remaining(order) * price
    return total


def check_order_allowed(
    account: SimAccount,
    orders: Iterable[SimOrder],
    prices: Mapping[str, Decimal],
    symbol: str,
    side: Side,
    qty: Decimal | None,
    notional: Decimal | None,
    reference_price: Decimal | None,
) -> None:
    """Raise Alpaca's 403 when the order exceeds available quantity or buying power.

    ``orders`` are the account's other orders; ``reference_price`` values the order (its limit
    or stop, else the current price; None when the symbol has no price yet, which skips the
    buying-power check like a broker without a quote would defer it).
    """
    orders = list(orders)
    position = account.positions.get(symbol)
    signed = position.qty if position is not None else ZERO
    closable = signed if side == "sell" else -signed
    if closable > ZERO:
        held = held_qty(orders, symbol, side)
        available = max(ZERO, closable - held)
        requested = qty if qty is not None else ZERO
        if notional is not None and reference_price:
            requested = notional / reference_price
        if requested > available:
            raise forbidden(
                f"insufficient qty available for order (requested: {money_text(requested)}, "
                f"available: {money_text(available)})",
                {
                    "available": money_text(available),
                    "existing_qty": money_text(closable),
                    "held_for_orders": money_text(held),
                    "symbol": symbol,
                },
            )
        return
    if side == "sell" and qty is not None and qty != qty.to_integral_value():
        raise unprocessable("fractional orders cannot be sold short")
    cost = notional if notional is not None else None
    if cost is None and qty is not None and reference_price is not None:
        cost = qty * reference_price
    if cost is None:
        return
    available_power = ledger.buying_power(account, prices) - reserved_buying_power(account, orders, prices)
    if cost > available_power:
        raise forbidden("insufficient buying power")

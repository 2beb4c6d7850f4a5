"""The fake broker's order record and its Alpaca JSON form.

``SimOrder`` is the engine's mutable book entry for one order (a bracket parent and each of its
legs are separate entries linked by ids). ``order_to_json`` renders it exactly as Alpaca's REST
API and trade_updates stream do: numbers as strings, UUID ids, RFC 3339 timestamps with offsets,
``submitted_at`` never null, enums in Alpaca's case.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

from coldharbour.domain.money import ZERO
from coldharbour.sim.assets import asset_class
from coldharbour.sim.wire import money_text, timestamp_text

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
OrderClass = Literal["simple", "bracket", "oco", "oto"]

ORDER_TYPES: Final[frozenset[str]] = frozenset({"market", "limit", "stop", "stop_limit", "trailing_stop"})
ORDER_CLASSES: Final[frozenset[str]] = frozenset({"simple", "bracket", "oco", "oto"})

# Statuses in which an order can still execute (``held`` legs wait for their parent).
WORKING_STATUSES: Final[frozenset[str]] = frozenset({"new", "partially_filled", "accepted", "pending_new"})
# What GET /v2/orders?status=open returns: everything not final.
OPEN_STATUSES: Final[frozenset[str]] = WORKING_STATUSES | {
    "held",
    "pending_cancel",
    "pending_replace",
    "accepted_for_bidding",
}
FINAL_STATUSES: Final[frozenset[str]] = frozenset(
    {"filled", "canceled", "expired", "replaced", "rejected", "done_for_day", "stopped"}
)

# A fixed namespace so a symbol always has the same asset id, across runs and seeds.
ASSET_NAMESPACE: Final = uuid.UUID("0b7c6e3a-4f1d-4f55-9d0e-6c1a2f3b4d5e")


def asset_id_for(symbol: str) -> str:
    """Return the stable asset UUID the fake broker uses for ``symbol``."""
    return str(uuid.uuid5(ASSET_NAMESPACE, symbol))


@dataclass
class SimOrder:
    """One order in the book; quantities and prices are Decimal, times aware UTC."""

    id: str
    account: str
    client_order_id: str
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
    status: str
    created_at: datetime
    expires_at: datetime | None
    sequence: int
    position_intent: str = ""
    updated_at: datetime | None = None
    hwm: Decimal | None = None
    filled_qty: Decimal = ZERO
    filled_value: Decimal = ZERO
    filled_at: datetime | None = None
    expired_at: datetime | None = None
    canceled_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    parent_id: str | None = None
    leg_ids: list[str] = field(default_factory=list)
    # Exit legs that cancel each other (bracket take-profit/stop-loss, an OCO pair) share it.
    oco_group: str | None = None
    is_triggered: bool = False
    # Accepted before its symbol had a price: buying power is checked at the first execution.
    needs_funds_check: bool = False
    # For a notional order: the quantity fixed at its first execution.
    target_qty: Decimal | None = None
    # When the client's request reached the broker: Alpaca stamps it 1-170 ms before
    # ``created_at`` (and its ``after``/``until`` filters compare it). None = ``created_at``.
    submitted_at: datetime | None = None
    commission: Decimal = ZERO

    @property
    def is_working(self) -> bool:
        """Return True when the order can execute now (not held, not final)."""
        return self.status in WORKING_STATUSES

    @property
    def is_open(self) -> bool:
        """Return True unless the order reached a final status."""
        return self.status in OPEN_STATUSES

    @property
    def remaining_qty(self) -> Decimal | None:
        """Return the quantity still to fill, or None for a notional order not yet sized."""
        total = self.qty if self.qty is not None else self.target_qty
        return None if total is None else total - self.filled_qty

    @property
    def filled_avg_price(self) -> Decimal | None:
        """Return the volume-weighted fill price, or None before the first execution."""
        if self.filled_qty == ZERO:
            return None
        return self.filled_value / self.filled_qty


def successor_of(
    old: SimOrder,
    order_id: str,
    client_order_id: str,
    *,
    qty: Decimal,
    time_in_force: str,
    expires_at: datetime,
    sequence: int,
    now: datetime,
) -> SimOrder:
    """Return the order that replaces ``old``: same instrument and links, fresh id and fills.

    Prices are left for the caller to set (old ones unless the replace request changes them).
    """
    return SimOrder(
        id=order_id,
        account=old.account,
        client_order_id=client_order_id,
        symbol=old.symbol,
        side=old.side,
        type=old.type,
        time_in_force=time_in_force,
        order_class=old.order_class,
        qty=qty,
        notional=None,
        limit_price=None,
        stop_price=None,
        trail_price=old.trail_price,
        trail_percent=old.trail_percent,
        extended_hours=old.extended_hours,
        status="held" if old.status == "held" else "new",
        created_at=now,
        expires_at=expires_at,
        sequence=sequence,
        position_intent=old.position_intent,
        hwm=old.hwm,
        replaces=old.id,
        parent_id=old.parent_id,
        leg_ids=list(old.leg_ids),
        oco_group=old.oco_group,
        is_triggered=old.is_triggered,
    )


def order_to_json(order: SimOrder, legs: list[dict[str, object]] | None = None) -> dict[str, object]:
    """Return ``order`` as Alpaca's order JSON; ``legs`` are already-rendered children."""
    average = order.filled_avg_price
    return {
        "id": order.id,
        "client_order_id": order.client_order_id,
        "created_at": timestamp_text(order.created_at),
        "updated_at": timestamp_text(order.updated_at or order.created_at),
        "submitted_at": timestamp_text(order.submitted_at or order.created_at),
        "filled_at": timestamp_text(order.filled_at),
        "expired_at": timestamp_text(order.expired_at),
        "expires_at": timestamp_text(order.expires_at),
        "canceled_at": timestamp_text(order.canceled_at),
        "failed_at": timestamp_text(order.failed_at),
        "replaced_at": timestamp_text(order.replaced_at),
        "replaced_by": order.replaced_by,
        "replaces": order.replaces,
        "asset_id": asset_id_for(order.symbol),
        "symbol": order.symbol,
        "asset_class": asset_class(order.symbol),
        "notional": money_text(order.notional),
        "qty": money_text(order.qty),
        "filled_qty": money_text(order.filled_qty),
        "filled_avg_price": None if average is None else money_text(_round_price(average)),
        "order_class": order.order_class,
        "order_type": order.type,
        "type": order.type,
        "side": order.side,
        "position_intent": order.position_intent or None,
        "time_in_force": order.time_in_force,
        "limit_price": money_text(order.limit_price),
        "stop_price": money_text(order.stop_price),
        "status": order.status,
        "extended_hours": order.extended_hours,
        "legs": legs if legs else None,
        "trail_percent": money_text(order.trail_percent),
        "trail_price": money_text(order.trail_price),
        "hwm": money_text(order.hwm),
        "subtag": None,
        "source": None,
        "commission": money_text(order.commission),
    }


def _round_price(value: Decimal) -> Decimal:
    # Alpaca reports average prices with up to 9 decimals; avoid 28-digit Decimal tails.
    return value.quantize(Decimal("0.000000001")).normalize()

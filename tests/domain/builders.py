"""Builders for ledger tests: orders, fills, brackets and replacement chains with defaults."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import msgspec

from coldharbour.domain.types import NS_PER_SECOND, Fill, Order

T0 = 1_709_305_200 * NS_PER_SECOND  # 2024-03-01 15:00:00 UTC
_DECIMAL_FIELDS = {"qty", "filled_qty", "filled_avg_price", "limit_price", "stop_price", "price",
                   "cum_qty"}
_ids = itertools.count(1)


def at(seconds: float) -> int:
    """Return T0 + ``seconds`` in UTC ns."""
    return T0 + int(seconds * NS_PER_SECOND)


def _decimals(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (Decimal(str(v)) if k in _DECIMAL_FIELDS and v is not None
                and not isinstance(v, Decimal) else v) for k, v in values.items()}


def make_order(**overrides: Any) -> Order:
    """Return an Order: a filled market buy of 10 AAPL at T0 unless overridden."""
    fields: dict[str, Any] = {
        "id": "o1", "symbol": "AAPL", "side": "buy", "order_type": "market",
        "status": "filled", "created_at": T0, "updated_at": T0, "qty": 10,
    }
    fields.update(overrides)
    return Order(**_decimals(fields))


def make_fill(**overrides: Any) -> Fill:
    """Return a Fill: 10 AAPL bought at 100 at T0 on order o1, with a fresh execution id."""
    fields: dict[str, Any] = {
        "order_id": "o1", "symbol": "AAPL", "side": "buy", "qty": 10, "price": 100, "ts": T0,
    }
    fields.update(overrides)
    fields.setdefault("execution_id", f"x{next(_ids)}")
    return Fill(**_decimals(fields))


def bracket(entry_id: str, *, symbol: str = "AAPL", side: str = "buy", qty: Any = 10,
            tp: Any = 110, sl: Any = 95, created: int = T0, sl_type: str = "stop",
            tp_status: str = "new", sl_status: str = "new",
            order_class: str = "bracket") -> list[Order]:
    """Return a bracket entry and its two legs ``<id>-tp`` (limit) and ``<id>-sl`` (stop)."""
    exit_side = "sell" if side == "buy" else "buy"
    entry = make_order(id=entry_id, symbol=symbol, side=side, qty=qty, created_at=created,
                       updated_at=created, order_class=order_class,
                       legs=(f"{entry_id}-tp", f"{entry_id}-sl"))
    take = make_order(id=f"{entry_id}-tp", symbol=symbol, side=exit_side, qty=qty,
                      order_type="limit", status=tp_status, limit_price=tp, parent_id=entry_id,
                      created_at=created, updated_at=created, order_class=order_class)
    stop_fields: dict[str, Any] = {"stop_price": sl}
    if sl_type == "stop_limit":
        stop_fields["limit_price"] = Decimal(str(sl)) - 1
    stop = make_order(id=f"{entry_id}-sl", symbol=symbol, side=exit_side, qty=qty,
                      order_type=sl_type, status=sl_status, parent_id=entry_id,
                      created_at=created, updated_at=created, order_class=order_class,
                      **stop_fields)
    return [entry, take, stop]


def replace_order(old: Order, new_id: str, *, when: int, keep_parent: bool = False,
                  **changes: Any) -> tuple[Order, Order]:
    """Return (old marked replaced, the replacement) — the replacement has no parent link
    unless ``keep_parent``, like a leg's "grandchild"."""
    retired = msgspec.structs.replace(old, status="replaced", replaced_by=new_id, updated_at=when)
    fields: dict[str, Any] = {
        "id": new_id, "replaces": old.id, "replaced_by": None, "status": "new",
        "created_at": when, "updated_at": when, "legs": (),
        "parent_id": old.parent_id if keep_parent else None,
    }
    fields.update(_decimals(changes))
    return retired, msgspec.structs.replace(old, **fields)

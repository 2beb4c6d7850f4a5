"""A read-only view of the order book with the versions of the current batch on top.

``state`` plans a whole batch before committing it, so the chain functions must see the batch's
orders while the ``OrderBook`` itself changes only in the swap. Links only grow, as in
``OrderBook``: a staged version never hides a link the book already knows.
"""

from __future__ import annotations

from collections.abc import Mapping

from coldharbour.domain.orders import OrderBook
from coldharbour.domain.types import Order


class StagedView:
    """``OrderView`` over ``book`` plus ``orders`` (newest staged version per id)."""

    def __init__(self, book: OrderBook, orders: Mapping[str, Order]) -> None:
        self._book = book
        self._orders = orders
        self._leg_parent: dict[str, str] = {}
        self._children: dict[str, list[str]] = {}
        self._successor: dict[str, str] = {}
        for order in orders.values():
            if order.parent_id:
                self._link(order.id, order.parent_id)
            for leg in order.legs:
                self._leg_parent.setdefault(leg, order.id)
                self._link(leg, order.id)
            if order.replaces:
                self._successor.setdefault(order.replaces, order.id)
            if order.replaced_by:
                self._successor.setdefault(order.id, order.replaced_by)

    def _link(self, leg: str, parent: str) -> None:
        children = self._children.setdefault(parent, [])
        if leg not in children:
            children.append(leg)

    def get(self, order_id: str) -> Order | None:
        """Return the newest version of ``order_id`` (staged first)."""
        return self._orders.get(order_id) or self._book.get(order_id)

    def leg_parent(self, order_id: str) -> str | None:
        """Return the parent of leg ``order_id`` from any link."""
        staged = self._orders.get(order_id)
        if staged is not None and staged.parent_id:
            return staged.parent_id
        return self._book.leg_parent(order_id) or self._leg_parent.get(order_id)

    def successor(self, order_id: str) -> str | None:
        """Return the order that replaced ``order_id``."""
        staged = self._orders.get(order_id)
        if staged is not None and staged.replaced_by:
            return staged.replaced_by
        return self._book.successor(order_id) or self._successor.get(order_id)

    def legs_of(self, parent_id: str) -> tuple[str, ...]:
        """Return the legs of ``parent_id`` (book first, then staged links)."""
        known = self._book.legs_of(parent_id)
        staged = self._children.get(parent_id)
        if not staged:
            return known
        legs = list(known)
        legs += [leg for leg in staged if leg not in legs]
        return tuple(legs)

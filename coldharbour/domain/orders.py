"""Order chains: bracket/OTO/OCO legs, replacements to any depth, latest successor, leg roles.

Two links tie orders together:

* **leg → parent**: a leg's ``parent_id``, or its id in the parent's ``legs`` list (a stream
  version of a leg may lack the parent link, docs/defects.md D23; either link is enough);
* **replacement → replaced**: a replacement's ``replaces`` (and the old order's
  ``replaced_by``). A replaced leg's replacement may carry no parent link at all (docs/spec.md §3's
  "grandchild"): it reaches its parent through the order it replaces.

Walking these links never crashes and never loops: an unknown id or a cycle ends the walk and is
returned as a ``ChainError`` next to the best answer found so far.

``OrderBook`` keeps the newest version of each order (a version with an older ``updated_at``
never overwrites a newer one, D38) plus the link indexes. ``OrderBook.overlay(order)`` is a
read-only view with one more version on top, so a caller can plan with an order before
committing it (compute, commit, then swap).

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Final, Literal, Protocol

import msgspec

from coldharbour.domain.types import (
    STOP_ORDER_TYPES,
    TAKE_PROFIT_ORDER_TYPES,
    Leg,
    LegRole,
    LotLegs,
    Order,
    direction,
)

# A chain deeper than this is treated as corrupt (a real chain is a handful of orders).
MAX_CHAIN_DEPTH: Final = 1_000

UpsertOutcome = Literal["new", "updated", "unchanged", "stale"]
_NO_LEGS: Final = LotLegs()  # what ``live_legs`` returns for an entry without legs (immutable: shared)


class ChainError(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Why a chain walk stopped early: the id that is unknown, repeats, or is too deep."""

    reason: Literal["unknown_order", "cycle", "too_deep"]
    order_id: str


class Resolved(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The answer of a chain walk.

    ``order_id`` is the answer, or with ``error`` set the furthest id reached (which may be the
    unknown id itself: a leg whose parent is not known yet resolves to that parent's id).
    ``path`` lists every id visited, the start first.
    """

    order_id: str
    path: tuple[str, ...]
    error: ChainError | None = None

    @property
    def ok(self) -> bool:
        """Return True when the walk reached its end without an error."""
        return self.error is None


class OrderView(Protocol):
    """Read access to orders and their links (``OrderBook`` and its overlays)."""

    def get(self, order_id: str) -> Order | None: ...

    def leg_parent(self, order_id: str) -> str | None: ...

    def successor(self, order_id: str) -> str | None: ...

    def legs_of(self, parent_id: str) -> tuple[str, ...]: ...


def chain_signature(order: Order) -> tuple[object, ...]:
    """Return the fields that shape chains and roles (a change may re-link fills)."""
    return (order.parent_id, order.replaces, order.legs, order.order_type, order.order_class,
            order.side, order.symbol)


class OrderBook:
    """The newest version of every order, with leg and replacement indexes.

    Indexes only grow: a link once seen stays (no real order loses its parent or predecessor).
    """

    __slots__ = ("_children", "_leg_parent", "_orders", "_successor")

    def __init__(self, orders: Iterable[Order] = ()) -> None:
        self._orders: dict[str, Order] = {}
        self._leg_parent: dict[str, str] = {}
        self._children: dict[str, list[str]] = {}
        self._successor: dict[str, str] = {}
        for order in orders:
            self.upsert(order)

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def get(self, order_id: str) -> Order | None:
        """Return the newest known version of ``order_id``."""
        return self._orders.get(order_id)

    def leg_parent(self, order_id: str) -> str | None:
        """Return the parent of leg ``order_id`` (from either link), else None."""
        order = self._orders.get(order_id)
        if order is not None and order.parent_id:
            return order.parent_id
        return self._leg_parent.get(order_id)

    def successor(self, order_id: str) -> str | None:
        """Return the order that replaced ``order_id``, else None."""
        order = self._orders.get(order_id)
        if order is not None and order.replaced_by:
            return order.replaced_by
        return self._successor.get(order_id)

    def legs_of(self, parent_id: str) -> tuple[str, ...]:
        """Return the legs of ``parent_id`` (both links, first seen first)."""
        return tuple(self._children.get(parent_id, ()))

    def classify(self, order: Order) -> UpsertOutcome:
        """Return what ``upsert(order)`` would do, without changing anything."""
        current = self._orders.get(order.id)
        if current is None:
            return "new"
        if order.updated_at < current.updated_at:
            return "stale"
        return "unchanged" if order == current else "updated"

    def upsert(self, order: Order) -> UpsertOutcome:
        """Store ``order`` unless a newer version is known; return what happened."""
        outcome = self.classify(order)
        if outcome in ("stale", "unchanged"):
            return outcome
        self.store(order)
        return outcome

    def store(self, order: Order) -> None:
        """Store ``order``, which ``classify`` found ``new`` or ``updated`` on this very book."""
        self._orders[order.id] = order
        if order.parent_id:
            self._link_leg(order.id, order.parent_id)
        for leg_id in order.legs:
            self._leg_parent.setdefault(leg_id, order.id)
            self._link_leg(leg_id, order.id)
        if order.replaces:
            self._successor.setdefault(order.replaces, order.id)
        if order.replaced_by:
            self._successor.setdefault(order.id, order.replaced_by)

    def _link_leg(self, leg_id: str, parent_id: str) -> None:
        children = self._children.setdefault(parent_id, [])
        if leg_id not in children:
            children.append(leg_id)

    def overlay(self, order: Order) -> OrderView:
        """Return a read-only view of this book with ``order`` applied (if not stale)."""
        if self.classify(order) in ("stale", "unchanged"):
            return self
        return _Overlay(self, order)

    def orders(self) -> Iterable[Order]:
        """Return every stored order (newest versions)."""
        return self._orders.values()

    # Convenience forms of the module functions, for callers holding a book.
    def root_of(self, order_id: str) -> Resolved:
        """Return the top-level order of ``order_id``'s chain (see ``root_of``)."""
        return root_of(self, order_id)

    def latest_successor(self, order_id: str) -> Resolved:
        """Return the live end of ``order_id``'s replacement chain (see ``latest_successor``)."""
        return latest_successor(self, order_id)

    def leg_role(self, order_id: str) -> LegRole | None:
        """Return the leg role of ``order_id`` (see ``leg_role``)."""
        return leg_role(self, order_id)


class _Overlay:
    """A book with one extra order version on top; reads only."""

    __slots__ = ("_base", "_order")

    def __init__(self, base: OrderView, order: Order) -> None:
        self._base = base
        self._order = order

    def get(self, order_id: str) -> Order | None:
        if order_id == self._order.id:
            return self._order
        return self._base.get(order_id)

    def leg_parent(self, order_id: str) -> str | None:
        order = self._order
        if order_id == order.id and order.parent_id:
            return order.parent_id
        if order_id in order.legs:
            return self._base.leg_parent(order_id) or order.id
        return self._base.leg_parent(order_id)

    def successor(self, order_id: str) -> str | None:
        order = self._order
        if order_id == order.id and order.replaced_by:
            return order.replaced_by
        found = self._base.successor(order_id)
        if found is None and order.replaces == order_id:
            return order.id
        return found

    def legs_of(self, parent_id: str) -> tuple[str, ...]:
        legs = list(self._base.legs_of(parent_id))
        extra: list[str] = []
        if parent_id == self._order.id:
            extra.extend(self._order.legs)
        if self._order.parent_id == parent_id:
            extra.append(self._order.id)
        legs.extend(leg for leg in extra if leg not in legs)
        return tuple(legs)


def _parent_step(view: OrderView, order_id: str, order: Order) -> str | None:
    """Return the next id up the chain: the leg's parent, else the replaced order."""
    return view.leg_parent(order_id) or order.replaces


def root_of(view: OrderView, order_id: str) -> Resolved:
    """Return the top-level order of ``order_id``'s chain (leg → parent, replacement → replaced).

    For an entry this is its own id (or the first order of its replacement chain); for a leg or
    a replacement of a leg, the entry order it belongs to.
    """
    path = [order_id]
    current = order_id
    while True:
        order = view.get(current)
        if order is None:
            return Resolved(order_id=current, path=tuple(path),
                            error=ChainError(reason="unknown_order", order_id=current))
        upper = _parent_step(view, current, order)
        if upper is None:
            return Resolved(order_id=current, path=tuple(path))
        error = _check_step(path, upper)
        if error is not None:
            return Resolved(order_id=current, path=tuple(path), error=error)
        path.append(upper)
        current = upper


def _check_step(path: list[str], next_id: str) -> ChainError | None:
    if next_id in path:
        return ChainError(reason="cycle", order_id=next_id)
    if len(path) >= MAX_CHAIN_DEPTH:
        return ChainError(reason="too_deep", order_id=next_id)
    return None


def entry_key(view: OrderView, order_id: str) -> Resolved:
    """Return the lot key for an opening fill of ``order_id``.

    Walk up the chain while the next order trades in the same direction: an entry (or its
    replacement) keys on its top-level id; an exit leg that flips the position keys on itself,
    because its parent is an entry of the other direction. An unknown order keys on its own id.
    """
    path = [order_id]
    current = order_id
    order = view.get(current)
    if order is None:
        return Resolved(order_id=current, path=tuple(path),
                        error=ChainError(reason="unknown_order", order_id=current))
    while True:
        upper = _parent_step(view, current, order)
        if upper is None:
            return Resolved(order_id=current, path=tuple(path))
        error = _check_step(path, upper)
        upper_order = view.get(upper)
        if error is None and upper_order is None:
            error = ChainError(reason="unknown_order", order_id=upper)
        if error is not None:
            return Resolved(order_id=current, path=(*path, upper), error=error)
        assert upper_order is not None  # narrowed above: error is set when it is None
        if direction(upper_order.side) != direction(order.side):
            return Resolved(order_id=current, path=(*path, upper))
        path.append(upper)
        current, order = upper, upper_order


def latest_successor(view: OrderView, order_id: str) -> Resolved:
    """Return the live end of ``order_id``'s replacement chain (``order_id`` if never replaced).

    A successor that is referenced but not known yet ends the walk at the last known order,
    with an ``unknown_order`` error naming the missing id.
    """
    path = [order_id]
    current = order_id
    if view.get(order_id) is None:
        return Resolved(order_id=order_id, path=(order_id,),
                        error=ChainError(reason="unknown_order", order_id=order_id))
    while True:
        nxt = view.successor(current)
        if nxt is None:
            return Resolved(order_id=current, path=tuple(path))
        error = _check_step(path, nxt)
        if error is None and view.get(nxt) is None:
            error = ChainError(reason="unknown_order", order_id=nxt)
        if error is not None:
            return Resolved(order_id=current, path=(*path, nxt), error=error)
        path.append(nxt)
        current = nxt


def original_of(view: OrderView, order_id: str) -> Resolved:
    """Return the first order of ``order_id``'s replacement chain (follows ``replaces``).

    The walk stops at a leg (an order with a parent link): that order is a leg in its own right.
    """
    path = [order_id]
    current = order_id
    while True:
        order = view.get(current)
        if order is None:
            return Resolved(order_id=current, path=tuple(path),
                            error=ChainError(reason="unknown_order", order_id=current))
        if view.leg_parent(current) is not None or not order.replaces:
            return Resolved(order_id=current, path=tuple(path))
        error = _check_step(path, order.replaces)
        if error is None and view.get(order.replaces) is None:
            error = ChainError(reason="unknown_order", order_id=order.replaces)
        if error is not None:
            return Resolved(order_id=current, path=(*path, order.replaces), error=error)
        path.append(order.replaces)
        current = order.replaces


def role_of_type(order_type: str) -> LegRole | None:
    """Return the role a leg of ``order_type`` plays: limit → take-profit, stops → stop-loss."""
    if order_type in TAKE_PROFIT_ORDER_TYPES:
        return "take_profit"
    if order_type in STOP_ORDER_TYPES:
        return "stop_loss"
    return None


def leg_role(view: OrderView, order_id: str) -> LegRole | None:
    """Return the role of ``order_id`` as an exit leg, through its replacements.

    The role is that of the original leg (the start of the replacement chain): a leg of a
    bracket/OTO/OCO parent, or the top-level order of an OCO (its take-profit). An order that
    is not a leg (an entry, a simple order) has no role.
    """
    original = original_of(view, order_id)
    first = view.get(original.order_id)
    if first is None:
        return None
    is_leg = view.leg_parent(first.id) is not None or first.order_class == "oco"
    return role_of_type(first.order_type) if is_leg else None


def _leg_price(order: Order, role: LegRole) -> Decimal | None:
    return order.limit_price if role == "take_profit" else order.stop_price


def live_legs(view: OrderView, parent_id: str) -> LotLegs:
    """Return the live take-profit and stop-loss of entry ``parent_id``.

    Legs of every version of the entry count (an entry replaced before it filled keeps its
    lot key, the first id, while its legs may hang on the replacement). Each leg is followed to
    the end of its replacement chain; it counts when that order is live. A successor referenced
    but not yet known is skipped over (the last known version is used). With several live legs
    of one role, the first listed wins.
    """
    found: dict[LegRole, Leg] = {}
    if view.successor(parent_id) is None or not view.get(parent_id):  # never replaced (the usual entry)
        leg_ids = dict.fromkeys(view.legs_of(parent_id))
    else:
        entries = latest_successor(view, parent_id).path
        leg_ids = dict.fromkeys(leg for entry in entries for leg in view.legs_of(entry))
    if not leg_ids:
        return _NO_LEGS
    for leg_id in leg_ids:
        original = view.get(leg_id)
        if original is None:
            continue
        role = role_of_type(original.order_type)
        if role is None or role in found:
            continue
        end = view.get(latest_successor(view, leg_id).order_id)
        if end is None or not end.is_live:
            continue
        found[role] = Leg(
            order_id=end.id, role=role, price=_leg_price(end, role), original_id=original.id,
            original_price=_leg_price(original, role), created_at=end.created_at,
            expires_at=end.expires_at,
        )
    return LotLegs(take_profit=found.get("take_profit"), stop_loss=found.get("stop_loss"))


class ChainInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the ledger needs to know about the order of one fill.

    ``root`` links an exit to its lot; ``entry_key`` keys a lot it opens; ``role`` and
    ``root_is_oco`` give the exit type; ``deps`` are every id the answers depend on (a new
    version of any of them may change them) and ``unknown`` those not known yet.
    """

    root: str
    entry_key: str
    role: LegRole | None
    root_is_oco: bool
    deps: frozenset[str]
    unknown: frozenset[str]


_NONE: Final[frozenset[str]] = frozenset()


def describe(view: OrderView, order_id: str) -> ChainInfo:
    """Return the ``ChainInfo`` of ``order_id`` (never raises, whatever the book holds)."""
    order = view.get(order_id)
    if order is not None and not order.replaces and view.leg_parent(order_id) is None:
        # A known order that is neither a leg nor a replacement (a simple order, an entry, an
        # OCO's top order): every walk ends where it starts, so the answer needs none of them.
        oco = order.order_class == "oco"
        return ChainInfo(root=order_id, entry_key=order_id, role=role_of_type(order.order_type) if oco else None,
                         root_is_oco=oco, deps=frozenset((order_id,)), unknown=_NONE)
    root = root_of(view, order_id)
    key = entry_key(view, order_id)
    original = original_of(view, order_id)
    deps = frozenset(root.path) | frozenset(key.path) | frozenset(original.path)
    unknown = frozenset(r.error.order_id for r in (root, key, original)
                        if r.error is not None and r.error.reason == "unknown_order")
    root_order = view.get(root.order_id)
    return ChainInfo(
        root=root.order_id,
        entry_key=key.order_id,
        role=leg_role(view, order_id),
        root_is_oco=root_order is not None and root_order.order_class == "oco",
        deps=deps | unknown,
        unknown=unknown,
    )

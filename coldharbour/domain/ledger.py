"""The ledger: open lots, closed slices, lot-matched and broker-FIFO P&L (docs/spec.md §3).

How fills change the ledger, per symbol, in the canonical order ``Fill.sort_key`` (time, then
key):

* a fill first **closes** what it can of the opposite position, then **opens** the rest (a flip
  is both). Closing reduces, in this order, the lot the fill's chain links it to (leg → parent,
  through replacements), then the oldest open lots (FIFO; every open lot of a symbol is on the
  same side and was opened by an earlier fill). A lot at 0 is deleted and its slices are final.
* a **slice** accumulates, per (entry lot, exit order), quantity, Σ qty·entry and Σ qty·exit,
  so ``pnl_cash = s·(Σ exit − Σ entry)`` is exact.
* the **broker FIFO** engine runs beside it on a queue of executions; each exit order's
  FIFO P&L is spread over its slices pro rata (``pnl_cash_fifo``). Both engines close the same
  quantity of every fill (they follow the same net position), so per exit order the slices'
  ``pnl_cash_fifo`` add up to its FIFO P&L exactly.

Cycles. A symbol's history splits into **cycles** from flat to flat. A cycle is the unit of
replay: the ledger keeps the current cycle's fills, and per-exit FIFO sums are per cycle.

Compute, commit, then swap. ``plan_fills`` is pure: it reads the ledger and returns a
``LedgerDelta`` (rows to upsert/delete plus the private operations that update the in-memory
state). ``apply_delta`` makes the swap, cheaply (O(rows changed)), after the caller committed
the rows. A delta applies only to the ledger version it was planned on (``StaleDeltaError``
otherwise). ``rebuild`` computes the ledger from the whole history; it is the reference.

Out-of-order fills:

* a fill older than the newest fill of its symbol's current cycle → the cycle is replayed from
  its flat start with the fill in its place (same result as the rebuild);
* a fill older than the cycle start (the last flat point) → not applied; the delta lists the
  symbol in ``needs_rebuild`` and the caller (``mirror.account``) rebuilds the account from its
  history. Example: an exit arriving before its entry within one cycle first opens an
  opposite lot; when the entry arrives the cycle replays and both become one closed slice.
* an order version that changes the chain of a fill already applied (a leg whose parent was
  unknown, …): the caller sees it in ``dep_index`` (open cycles) or ``pending`` (closed cycles
  that applied while the order was unknown) and rebuilds.

Exactness: sums and products are exact; the few divisions (average prices, the FIFO share, the
percentages) use the current ``decimal`` context (28 digits by default), identically on the
incremental and the rebuild paths.

Pure: no I/O, no clock, no logging. Invariant breaks raise ``LedgerInvariantError`` (a bug).

Why one module of ~770 lines: the copy-on-write layer (``_SymView``/``_Work``), the step that
writes through it and the plan/apply pair share private state by design; split apart they would
need a public surface nobody else should use.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Final, TypeVar

import msgspec

from coldharbour.domain.corporate import CorporateAction, adjusted_history, is_corporate
from coldharbour.domain.money import HUNDRED, ZERO
from coldharbour.domain.orders import ChainInfo, OrderBook, OrderView, describe
from coldharbour.domain.types import (
    NS_PER_SECOND,
    ClosedSlice,
    ExitTotals,
    ExitType,
    FifoEntry,
    Fill,
    FillRejection,
    Lot,
    LotSide,
    Order,
    SliceKey,
    direction,
    side_sign,
)

SortKey = tuple[int, str]
K = TypeVar("K")
V = TypeVar("V")
_replace: Final = msgspec.structs.replace


class LedgerInvariantError(RuntimeError):
    """The ledger's own bookkeeping disagrees with itself: a bug, never bad input."""


class StaleDeltaError(RuntimeError):
    """A delta was applied to a ledger that changed since it was planned."""


class SymbolState:
    """The mutable per-symbol state: position, lot order, FIFO queue, current cycle."""

    __slots__ = ("deps", "exits", "fifo", "fills", "floor_key", "last_key", "lot_order", "net",
                 "slice_bases", "slice_keys", "symbol", "unknown")

    def __init__(self, symbol: str, floor_key: SortKey | None = None) -> None:
        self.symbol = symbol
        self.net = ZERO  # signed position: Σ signed open lot qty
        self.lot_order: dict[str, None] = {}  # open lots, oldest first (insertion order)
        self.fifo: deque[FifoEntry] = deque()
        self.exits: dict[str, ExitTotals] = {}
        self.fills: list[Fill] = []  # the current cycle, in sort order
        self.deps: set[str] = set()  # order ids the current cycle's chains depend on
        self.unknown: set[str] = set()  # of those, the ones not known when applied
        self.slice_keys: set[SliceKey] = set()  # slices touched in the current cycle
        # A slice key reused across cycles (rare): its value before the current cycle.
        self.slice_bases: dict[SliceKey, ClosedSlice] = {}
        self.last_key: SortKey | None = floor_key
        self.floor_key: SortKey | None = floor_key  # the fill that last made the symbol flat


class Ledger:
    """Open lots, closed slices and per-symbol state of one account (mutable, by ``apply``)."""

    __slots__ = ("dep_index", "lots", "pending", "seen", "slices", "symbol_sets", "symbols", "version")

    def __init__(self) -> None:
        self.lots: dict[str, Lot] = {}
        self.slices: dict[SliceKey, ClosedSlice] = {}
        self.symbols: dict[str, SymbolState] = {}
        self.seen: set[str] = set()  # fill keys applied (idempotence)
        # order id → symbols of open cycles; the values are shared immutable sets (one per symbol
        # for the usual single symbol, from ``symbol_sets``), not one set per order.
        self.dep_index: dict[str, frozenset[str]] = {}
        self.symbol_sets: dict[str, frozenset[str]] = {}
        self.pending: dict[str, set[str]] = {}  # unknown order id → symbols of closed cycles
        self.version = 0

    def net(self, symbol: str) -> Decimal:
        """Return the signed open quantity of ``symbol`` (long > 0)."""
        state = self.symbols.get(symbol)
        return state.net if state is not None else ZERO

    def open_lots(self, symbol: str) -> list[Lot]:
        """Return the open lots of ``symbol``, oldest first."""
        state = self.symbols.get(symbol)
        return [] if state is None else [self.lots[i] for i in state.lot_order]

    def held_symbols(self) -> list[str]:
        """Return the symbols with a non-zero position, sorted."""
        return sorted(s for s, state in self.symbols.items() if state.net != 0)

    def fifo_queue(self, symbol: str) -> tuple[FifoEntry, ...]:
        """Return the broker-FIFO queue of ``symbol`` (oldest first)."""
        state = self.symbols.get(symbol)
        return () if state is None else tuple(state.fifo)


class LedgerDelta(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a plan: row changes for the writer, plus private state operations.

    ``lot_upserts``/``lot_deletes`` are open-position rows (by ``parent_id``);
    ``slice_upserts`` are closed slices new or changed (``is_final`` tells whether the lot is
    closed); ``slice_deletes`` are slices a replay no longer produces. ``needs_rebuild`` lists
    symbols the caller must rebuild from stored history.
    """

    lot_upserts: tuple[Lot, ...] = ()
    lot_deletes: tuple[str, ...] = ()
    slice_upserts: tuple[ClosedSlice, ...] = ()
    slice_deletes: tuple[SliceKey, ...] = ()
    needs_rebuild: tuple[str, ...] = ()
    rejections: tuple[FillRejection, ...] = ()
    duplicates: int = 0
    base_version: int = 0
    ops: _Ops | None = None

    @property
    def has_row_changes(self) -> bool:
        """Return True when the delta writes or deletes at least one row."""
        return bool(self.lot_upserts or self.lot_deletes or self.slice_upserts
                    or self.slice_deletes)


class _Ops(msgspec.Struct):
    """The in-memory operations of a delta (applied by ``apply_delta`` only)."""

    seen: set[str]
    views: list[_SymView]


_UNSET: Final = object()


class _SymView:
    """A copy-on-write layer over one ``SymbolState`` while planning.

    ``reset`` drops the base's current cycle (its lots, queue and cycle data): set when the
    cycle closes inside the plan or when a replay erases it.
    """

    __slots__ = ("_base_iter", "_head", "base", "clear_pending", "closed_unknown", "deps", "exits", "fifo_front",
                 "fifo_local", "fifo_pos", "fills", "floor_key", "last_key", "local_lots", "net", "removed", "reset",
                 "slice_bases", "slice_keys", "symbol", "unknown")

    def __init__(self, symbol: str, base: SymbolState | None) -> None:
        self.symbol = symbol
        self.base = base
        self.reset = base is None
        self.net = base.net if base is not None else ZERO
        self.removed: set[str] = set()
        self.local_lots: dict[str, None] = {}
        self._base_iter: Iterator[str] | None = None
        self._head: object = _UNSET
        self.fifo_pos = 0
        self.fifo_front: FifoEntry | None = None
        self.fifo_local: deque[FifoEntry] = deque()
        self.exits: dict[str, ExitTotals] = {}
        self.fills: list[Fill] = []
        self.deps: set[str] = set()
        self.unknown: set[str] = set()
        self.slice_keys: set[SliceKey] = set()
        self.slice_bases: dict[SliceKey, ClosedSlice] = {}
        self.last_key = base.last_key if base is not None else None
        self.floor_key = base.floor_key if base is not None else None
        self.closed_unknown: set[str] = set()
        self.clear_pending = False  # a whole-symbol rebuild: forget its closed cycles' unknown ids

    def _live(self) -> SymbolState | None:
        return None if self.reset else self.base

    # -- lots, oldest first --
    def first_lot(self) -> str | None:
        base = self._live()
        if base is not None:
            if self._base_iter is None:
                self._base_iter = iter(base.lot_order)
            while True:
                if self._head is _UNSET:
                    self._head = next(self._base_iter, None)
                if self._head is None:
                    break
                if self._head in self.removed:
                    self._head = _UNSET
                    continue
                return str(self._head)
        return next(iter(self.local_lots), None)

    def lot_ids(self) -> list[str]:
        base = self._live()
        ids = [] if base is None else [i for i in base.lot_order if i not in self.removed]
        return ids + list(self.local_lots)

    def append_lot(self, lot_id: str) -> None:
        self.local_lots[lot_id] = None

    def remove_lot(self, lot_id: str) -> None:
        if lot_id in self.local_lots:
            del self.local_lots[lot_id]
        else:
            self.removed.add(lot_id)

    # -- broker FIFO queue --
    def fifo_head(self) -> FifoEntry | None:
        base = self._live()
        if base is not None and self.fifo_pos < len(base.fifo):
            return self.fifo_front or base.fifo[self.fifo_pos]
        return self.fifo_local[0] if self.fifo_local else None

    def fifo_take(self, qty: Decimal) -> None:
        """Consume ``qty`` (≤ the head's) from the head of the queue."""
        base = self._live()
        if base is not None and self.fifo_pos < len(base.fifo):
            head = self.fifo_front or base.fifo[self.fifo_pos]
            if qty == head.qty:
                self.fifo_pos += 1
                self.fifo_front = None
            else:
                self.fifo_front = _replace(head, qty=head.qty - qty)
        elif qty == self.fifo_local[0].qty:
            self.fifo_local.popleft()
        else:
            self.fifo_local[0] = _replace(self.fifo_local[0], qty=self.fifo_local[0].qty - qty)

    # -- current cycle --
    def exit_totals(self, order_id: str) -> ExitTotals | None:
        found = self.exits.get(order_id)
        base = self._live()
        if found is None and base is not None:
            return base.exits.get(order_id)
        return found

    def has_slice_key(self, key: SliceKey) -> bool:
        base = self._live()
        return key in self.slice_keys or (base is not None and key in base.slice_keys)

    def slice_base(self, key: SliceKey) -> ClosedSlice | None:
        base = self._live()
        found = self.slice_bases.get(key)
        if found is None and base is not None:
            return base.slice_bases.get(key)
        return found

    def cycle_fills(self) -> list[Fill]:
        base = self._live()
        return ([] if base is None else list(base.fills)) + self.fills

    def cycle_slice_keys(self) -> set[SliceKey]:
        base = self._live()
        return self.slice_keys | (base.slice_keys if base is not None else set())

    def cycle_unknown(self) -> set[str]:
        """Return the current cycle's unknown ids (read only: may be this layer's own set)."""
        base = self._live()
        return self.unknown | base.unknown if base is not None and base.unknown else self.unknown

    def record(self, fill: Fill, chain: ChainInfo, sort_key: SortKey) -> None:
        self.fills.append(fill)
        self.deps |= chain.deps
        if chain.unknown:
            self.unknown |= chain.unknown
        self.last_key = sort_key

    def drop_cycle(self, floor_key: SortKey | None) -> None:
        """Forget the current cycle (after it closed, or before a replay)."""
        self.reset = True
        self.net = ZERO
        self.removed.clear()
        self.local_lots.clear()
        self.fifo_local.clear()
        self.fifo_front = None
        self.exits.clear()
        self.fills.clear()
        self.deps.clear()
        self.unknown.clear()
        self.slice_keys.clear()
        self.slice_bases.clear()
        self.floor_key = floor_key
        self.last_key = floor_key

    def commit(self, ledger: Ledger) -> None:
        """Apply this layer to ``ledger`` (the swap)."""
        current = ledger.symbols.get(self.symbol)
        if current is not self.base:
            raise StaleDeltaError(f"symbol {self.symbol} changed since the delta was planned")
        if self.reset or current is None:
            if current is not None:
                _unindex(ledger.dep_index, current.deps, self.symbol)
            ledger.symbols[self.symbol] = self._fresh_state()
            self._commit_indexes(ledger)
            return
        for lot_id in self.removed:
            current.lot_order.pop(lot_id, None)
        for _ in range(self.fifo_pos):
            current.fifo.popleft()
        if self.fifo_front is not None:
            current.fifo[0] = self.fifo_front
        current.net = self.net
        current.lot_order.update(self.local_lots)
        current.fifo.extend(self.fifo_local)
        current.exits.update(self.exits)
        current.fills.extend(self.fills)
        current.deps |= self.deps
        current.unknown |= self.unknown
        current.slice_keys |= self.slice_keys
        current.slice_bases.update(self.slice_bases)
        current.last_key = self.last_key
        self._commit_indexes(ledger)

    def _fresh_state(self) -> SymbolState:
        """Return the new state of a symbol this layer restarted: ``SymbolState(symbol, floor_key)``
        with this layer's containers applied; it takes them over rather than copying them (the
        layer is done once committed)."""
        state = SymbolState.__new__(SymbolState)
        state.symbol = self.symbol
        state.net = self.net
        state.lot_order = self.local_lots
        state.fifo = self.fifo_local
        state.exits = self.exits
        state.fills = self.fills
        state.deps = self.deps
        state.unknown = self.unknown
        state.slice_keys = self.slice_keys
        state.slice_bases = self.slice_bases
        state.last_key = self.last_key
        state.floor_key = self.floor_key
        return state

    def _commit_indexes(self, ledger: Ledger) -> None:
        alone = ledger.symbol_sets.get(self.symbol)
        if alone is None:
            alone = ledger.symbol_sets[self.symbol] = frozenset((self.symbol,))
        index = ledger.dep_index
        for dep in self.deps:
            found = index.get(dep)
            if found is None:
                index[dep] = alone
            elif self.symbol not in found:
                index[dep] = found | alone
        if self.clear_pending:
            for symbols in ledger.pending.values():
                symbols.discard(self.symbol)
        for order_id in self.closed_unknown:
            ledger.pending.setdefault(order_id, set()).add(self.symbol)


def _unindex(index: dict[str, frozenset[str]], ids: Iterable[str], symbol: str) -> None:
    for order_id in ids:
        symbols = index.get(order_id)
        if symbols is not None and symbol in symbols:
            if len(symbols) == 1:
                del index[order_id]
            else:
                index[order_id] = symbols - {symbol}


class _Work:
    """Copy-on-write changes over a ledger while planning one delta."""

    __slots__ = ("book", "duplicates", "ledger", "lots", "needs_rebuild", "rejections", "seen", "slices", "views")

    def __init__(self, ledger: Ledger, book: OrderView) -> None:
        self.ledger = ledger
        self.book = book
        self.lots: dict[str, Lot | None] = {}
        self.slices: dict[SliceKey, ClosedSlice | None] = {}
        self.seen: set[str] = set()
        self.views: dict[str, _SymView] = {}
        self.needs_rebuild: set[str] = set()
        self.rejections: list[FillRejection] = []
        self.duplicates = 0

    def lot(self, lot_id: str) -> Lot | None:
        if lot_id in self.lots:
            return self.lots[lot_id]
        return self.ledger.lots.get(lot_id)

    def slice(self, key: SliceKey) -> ClosedSlice | None:
        if key in self.slices:
            return self.slices[key]
        return self.ledger.slices.get(key)

    def is_seen(self, key: str) -> bool:
        return key in self.seen or key in self.ledger.seen

    def view(self, symbol: str) -> _SymView:
        found = self.views.get(symbol)
        if found is None:
            found = self.views[symbol] = _SymView(symbol, self.ledger.symbols.get(symbol))
        return found

    def finish(self) -> LedgerDelta:
        old_lots, old_slices = self.ledger.lots, self.ledger.slices
        lots, slices = self.lots, self.slices  # (an opening fill touches no slice: skip those passes)
        lot_upserts: list[Lot] = []
        lot_deletes: list[str] = []
        for k, v in lots.items():
            if v is None:
                if k in old_lots:
                    lot_deletes.append(k)
            elif old_lots.get(k) != v:
                lot_upserts.append(v)
        return LedgerDelta(
            lot_upserts=tuple(lot_upserts), lot_deletes=tuple(lot_deletes),
            slice_upserts=tuple(v for k, v in slices.items()
                                if v is not None and old_slices.get(k) != v) if slices else (),
            slice_deletes=tuple(k for k, v in slices.items() if v is None and k in old_slices) if slices else (),
            needs_rebuild=tuple(sorted(self.needs_rebuild)) if self.needs_rebuild else (),
            rejections=tuple(self.rejections) if self.rejections else (),
            duplicates=self.duplicates,
            base_version=self.ledger.version,
            ops=_Ops(self.seen, list(self.views.values())),
        )


# -- the step: one fill against one symbol ------------------------------------------------


def _step(work: _Work, view: _SymView, fill: Fill, chain: ChainInfo, sort_key: SortKey) -> None:
    """Apply ``fill`` (its ``sort_key``: ``(ts, key)``, computed once by the caller)."""
    sign = direction(fill.side)
    net = view.net
    closing = ZERO
    if net != 0 and (net > 0) != (sign > 0):
        closing = min(fill.qty, abs(net))
    if closing:
        fifo_pnl = _fifo_close(view, closing, fill.price, 1 if net > 0 else -1)
        touched = _close_lots(work, view, fill, closing, chain)
        _add_exit_totals(work, view, fill.order_id, fifo_pnl, closing, touched)
    # Nothing closed: the fill's own quantity object (``- 0`` would be an equal new one; only a
    # positive exponent, never stored, changes its form).
    opening = fill.qty if not closing and fill.qty.same_quantum(ZERO) else fill.qty - closing
    if opening:
        view.fifo_local.append(FifoEntry(qty=opening, price=fill.price))
        _open_lot(work, view, fill, opening, chain)
    view.net = net + fill.qty if sign > 0 else net - fill.qty
    view.record(fill, chain, sort_key)
    work.seen.add(sort_key[1])
    if view.net == 0:
        if view.first_lot() is not None:
            raise LedgerInvariantError(f"{fill.symbol}: flat with open lots {view.lot_ids()}")
        unknown = view.cycle_unknown()
        if unknown:
            view.closed_unknown |= unknown
        view.drop_cycle(sort_key)


def _fifo_close(view: _SymView, qty: Decimal, price: Decimal, sign: int) -> Decimal:
    pnl = ZERO
    remaining = qty
    while remaining:
        head = view.fifo_head()
        if head is None:
            raise LedgerInvariantError(f"{view.symbol}: FIFO queue shorter than the position")
        matched = min(remaining, head.qty)
        pnl += sign * matched * (price - head.price)
        view.fifo_take(matched)
        remaining -= matched
    return pnl


def _close_lots(work: _Work, view: _SymView, fill: Fill, qty: Decimal,
                chain: ChainInfo) -> list[str]:
    touched: list[str] = []
    remaining = qty
    linked = work.lot(chain.root)
    if linked is not None and linked.symbol == fill.symbol:
        matched = min(remaining, linked.qty)
        _reduce_lot(work, view, linked, fill, matched, chain)
        touched.append(linked.parent_id)
        remaining -= matched
    while remaining:
        lot_id = view.first_lot()
        lot = work.lot(lot_id) if lot_id is not None else None
        if lot is None:
            raise LedgerInvariantError(f"{fill.symbol}: lots shorter than the position")
        matched = min(remaining, lot.qty)
        _reduce_lot(work, view, lot, fill, matched, chain)
        touched.append(lot.parent_id)
        remaining -= matched
    return touched


def _exit_type(lot_id: str, chain: ChainInfo) -> ExitType:
    if chain.role is None or not (chain.root == lot_id or chain.root_is_oco):
        return "MANUAL"
    return "TP" if chain.role == "take_profit" else "SL"


def _reduce_lot(work: _Work, view: _SymView, lot: Lot, fill: Fill, qty: Decimal,
                chain: ChainInfo) -> None:
    _touch_slice(work, view, lot, fill, qty, chain)
    exits = lot.exits if fill.order_id in lot.exits else (*lot.exits, fill.order_id)
    remaining = lot.qty - qty
    if remaining:
        work.lots[lot.parent_id] = _replace(lot, qty=remaining, exits=exits)
        return
    work.lots[lot.parent_id] = None
    view.remove_lot(lot.parent_id)
    for exit_id in exits:  # the lot is closed: its slices are final, their entry value frozen
        key = (lot.parent_id, exit_id)
        found = work.slice(key)
        if found is not None and not found.is_final:
            work.slices[key] = _replace(found, is_final=True, open_qty=ZERO,
                                        closed_entry_value=found.entry_value)


def _priced(found: ClosedSlice, avg_fill: Decimal) -> ClosedSlice:
    """Return ``found`` with its entry-derived columns recomputed at ``avg_fill``."""
    entry_value = found.closed_entry_value + found.open_qty * avg_fill
    pnl_cash = side_sign(found.side) * (found.exit_value - entry_value)
    pct = HUNDRED * pnl_cash / entry_value
    return _replace(found, entry_value=entry_value, entry_price=entry_value / found.qty,
                    pnl_cash=pnl_cash, diff_pnl=pnl_cash - found.pnl_cash_fifo, pnl_pct=pct,
                    return_pct=pct)


def _touch_slice(work: _Work, view: _SymView, lot: Lot, fill: Fill, qty: Decimal,
                 chain: ChainInfo) -> None:
    key = (lot.parent_id, fill.order_id)
    previous = work.slice(key)
    if previous is not None and not view.has_slice_key(key):
        # The same (lot, exit) pair in an earlier cycle: keep its FIFO figure as a carry.
        view.slice_bases[key] = previous
        previous = _replace(previous, fifo_carry=previous.pnl_cash_fifo, fifo_qty=ZERO)
    view.slice_keys.add(key)
    if previous is None:
        work.slices[key] = _new_slice(lot, fill, qty, chain)
        return
    total = previous.qty + qty
    exit_value = previous.exit_value + qty * fill.price
    entry_time = min(previous.entry_time, lot.filled_at)
    exit_time = max(previous.exit_time, fill.ts)
    work.slices[key] = _priced(_replace(
        previous, exit_parent_id=chain.root if chain.root != fill.order_id else None,
        qty=total, entry_time=entry_time, exit_time=exit_time, exit_price=exit_value / total,
        exit_type="CORPORATE" if is_corporate(fill) else _exit_type(lot.parent_id, chain), exit_value=exit_value,
        duration_sec=(exit_time - entry_time) // NS_PER_SECOND,
        fifo_qty=previous.fifo_qty + qty, open_qty=previous.open_qty + qty, is_final=False,
    ), lot.avg_fill)


def _new_slice(lot: Lot, fill: Fill, qty: Decimal, chain: ChainInfo) -> ClosedSlice:
    """Return the first slice of (lot, exit): what ``_priced`` of the accumulation below gives from
    an all-zero slice, the same operations in one value (the usual case, once per exit)."""
    total = ZERO + qty  # qty, fifo_qty and open_qty: equal values, one object
    exit_value = ZERO + qty * fill.price
    entry_value = ZERO + total * lot.avg_fill
    pnl_cash = side_sign(lot.side) * (exit_value - entry_value)
    pct = HUNDRED * pnl_cash / entry_value
    return ClosedSlice(
        entry_lot_id=lot.parent_id, exit_order_id=fill.order_id,
        exit_parent_id=chain.root if chain.root != fill.order_id else None, symbol=lot.symbol, side=lot.side,
        qty=total, entry_time=lot.filled_at, entry_price=entry_value / total, exit_time=fill.ts,
        exit_price=exit_value / total,
        exit_type="CORPORATE" if is_corporate(fill) else _exit_type(lot.parent_id, chain), pnl_cash=pnl_cash,
        pnl_cash_fifo=ZERO, diff_pnl=pnl_cash - ZERO, pnl_pct=pct, return_pct=pct,
        duration_sec=(fill.ts - lot.filled_at) // NS_PER_SECOND, entry_value=entry_value, exit_value=exit_value,
        fifo_qty=total, open_qty=total,
    )  # fmt: skip


def _add_exit_totals(work: _Work, view: _SymView, order_id: str, pnl: Decimal, qty: Decimal,
                     touched: Sequence[str]) -> None:
    totals = view.exit_totals(order_id)
    if totals is None:  # the exit's first fill (usual): the same sums from zero
        lots = tuple(touched) if len(touched) == 1 else tuple(dict.fromkeys(touched))
        totals = ExitTotals(pnl=ZERO + pnl, qty=ZERO + qty, lots=lots)
    else:
        lots = totals.lots + tuple(i for i in dict.fromkeys(touched) if i not in totals.lots)
        totals = ExitTotals(pnl=totals.pnl + pnl, qty=totals.qty + qty, lots=lots)
    view.exits[order_id] = totals
    for lot_id in totals.lots:  # every slice of this exit gets its share of the FIFO P&L
        key = (lot_id, order_id)
        found = work.slice(key)
        if found is None:
            raise LedgerInvariantError(f"exit {order_id}: slice {key} missing")
        fifo = found.fifo_carry + found.fifo_qty * totals.pnl / totals.qty
        if fifo != found.pnl_cash_fifo or found.diff_pnl != found.pnl_cash - fifo:
            work.slices[key] = _replace(found, pnl_cash_fifo=fifo, diff_pnl=found.pnl_cash - fifo)


def _open_lot(work: _Work, view: _SymView, fill: Fill, qty: Decimal, chain: ChainInfo) -> None:
    side: LotSide = "long" if direction(fill.side) > 0 else "short"
    key = chain.entry_key
    lot = work.lot(key)
    if lot is not None and (lot.symbol != fill.symbol or lot.side != side):
        # An id already naming another open lot (never seen with real broker ids): key the
        # new lot on the fill itself so neither lot is corrupted.
        key = f"{key}#{fill.key}"
        lot = work.lot(key)
    if lot is None:
        lot = Lot(parent_id=key, symbol=fill.symbol, side=side, qty=qty, entry_qty=qty,
                  entry_cost=qty * fill.price, filled_at=fill.ts)
        view.append_lot(key)
    else:
        lot = _replace(lot, qty=lot.qty + qty, entry_qty=lot.entry_qty + qty,
                       entry_cost=lot.entry_cost + qty * fill.price)
        for exit_id in lot.exits:  # the entry's average moved: re-price its open slices
            found = work.slice((key, exit_id))
            if found is not None:
                work.slices[(key, exit_id)] = _priced(found, lot.avg_fill)
    work.lots[key] = lot


# -- planning --------------------------------------------------------------------------------


def _rejection(fill: Fill) -> FillRejection | None:
    if not (fill.qty.is_finite() and fill.qty > 0):
        return FillRejection(key=fill.key, reason=f"qty must be > 0, found {fill.qty}")
    if not (fill.price.is_finite() and (fill.price > 0 or (fill.price == 0 and _is_zero_exit(fill)))):
        return FillRejection(key=fill.key, reason=f"price must be > 0, found {fill.price}")
    if fill.side not in ("buy", "sell", "sell_short"):
        return FillRejection(key=fill.key, reason=f"unknown side {fill.side!r}")
    if not fill.symbol:
        return FillRejection(key=fill.key, reason="empty symbol")
    return None


def _is_zero_exit(fill: Fill) -> bool:
    """A corporate exit at 0 (a worthless removal) is the one fill priced 0 (docs/corporate-actions.md)."""
    return is_corporate(fill) and fill.execution_id is not None and fill.execution_id.endswith(":cash")


def _erase_cycle(work: _Work, view: _SymView) -> list[Fill]:
    """Remove the current cycle's lots and slices from the plan; return its fills."""
    fills = view.cycle_fills()
    for lot_id in view.lot_ids():
        work.lots[lot_id] = None
    for key in view.cycle_slice_keys():
        work.slices[key] = view.slice_base(key)
    view.drop_cycle(view.floor_key)
    return fills


def _replay(work: _Work, view: _SymView, fills: list[Fill]) -> None:
    for sort_key, fill in sorted(((f.sort_key, f) for f in fills), key=_first):
        _step(work, view, fill, describe(work.book, fill.order_id), sort_key)


def _first(pair: tuple[SortKey, Fill]) -> SortKey:
    return pair[0]


_SIDES: Final = frozenset(("buy", "sell", "sell_short"))


def _plan_one(work: _Work, fill: Fill, sort_key: SortKey | None = None) -> None:
    qty, price = fill.qty, fill.price
    if not (qty.is_finite() and qty > 0 and price.is_finite() and price > 0 and fill.side in _SIDES
            and fill.symbol):
        rejection = _rejection(fill)
        if rejection is not None:
            work.rejections.append(rejection)
            return
    if sort_key is None:
        sort_key = fill.sort_key
    if work.is_seen(sort_key[1]):
        work.duplicates += 1
        return
    view = work.view(fill.symbol)
    last = view.last_key
    if last is None or sort_key > last:
        _step(work, view, fill, describe(work.book, fill.order_id), sort_key)
    elif view.floor_key is not None and sort_key < view.floor_key:
        work.needs_rebuild.add(fill.symbol)  # older than the current cycle: caller rebuilds
    else:
        _replay(work, view, [*_erase_cycle(work, view), fill])


def plan_fills(ledger: Ledger, fills: Iterable[Fill], book: OrderView) -> LedgerDelta:
    """Return the delta of applying ``fills`` in the given order (pure; nothing changes).

    Duplicates (a key already applied, or twice in ``fills``) are counted and skipped; invalid
    fills are returned in ``rejections``; see the module docstring for late fills.
    """
    work = _Work(ledger, book)
    for fill in fills:
        _plan_one(work, fill)
    return work.finish()


def plan_keyed_fills(ledger: Ledger, fills: Iterable[tuple[SortKey, Fill]], book: OrderView) -> LedgerDelta:
    """Return ``plan_fills`` of ``(fill.sort_key, fill)`` pairs whose keys the caller holds already."""
    work = _Work(ledger, book)
    for sort_key, fill in fills:
        _plan_one(work, fill, sort_key)
    return work.finish()


def apply_delta(ledger: Ledger, delta: LedgerDelta) -> None:
    """Make ``delta`` the ledger's state (call only after its rows committed)."""
    if delta.base_version != ledger.version:
        raise StaleDeltaError(
            f"delta planned on version {delta.base_version}, ledger is at {ledger.version}")
    for lot_id in delta.lot_deletes:
        del ledger.lots[lot_id]
    for lot in delta.lot_upserts:
        ledger.lots[lot.parent_id] = lot
    for key in delta.slice_deletes:
        del ledger.slices[key]
    for found in delta.slice_upserts:
        ledger.slices[found.key] = found
    if delta.ops is not None:
        ledger.seen |= delta.ops.seen
        for view in delta.ops.views:
            view.commit(ledger)
    ledger.version += 1


def rebuild(orders: Iterable[Order] | OrderBook, fills: Iterable[Fill] | Mapping[str, Fill],
            actions: Iterable[CorporateAction] = ()) -> Ledger:
    """Return the ledger rebuilt from the full history (the reference for incremental use).

    ``fills`` may be a mapping by ``Fill.key`` (how ``AccountMirror`` holds them): its keys are
    used as they are (not computed again, and the ledger's ``seen`` shares the strings).
    ``actions`` (corporate actions, docs/spec.md §8) rewrite the history first (``adjusted_history``).
    """
    book = orders if isinstance(orders, OrderBook) else OrderBook(orders)
    ledger = Ledger()
    keyed: Iterable[tuple[SortKey, Fill]]
    if actions:
        history = adjusted_history(fills.values() if isinstance(fills, Mapping) else fills, actions)[0]
        keyed = ((f.sort_key, f) for f in history)
    elif isinstance(fills, Mapping):
        keyed = (((f.ts, key), f) for key, f in fills.items())
    else:
        keyed = ((f.sort_key, f) for f in fills)
    work = _Work(ledger, book)
    for sort_key, fill in sorted(keyed, key=_first):
        _plan_one(work, fill, sort_key)
    # ``apply_delta(ledger, work.finish())`` on an empty ledger, without the delta's copies.
    ledger.lots.update((k, v) for k, v in work.lots.items() if v is not None)
    ledger.slices.update((k, v) for k, v in work.slices.items() if v is not None)
    ledger.seen = work.seen
    for view in work.views.values():
        view.commit(ledger)
    ledger.version += 1
    return ledger


def plan_symbols_rebuild(ledger: Ledger, symbols: Iterable[str], fills: Iterable[Fill],
                         book: OrderView, actions: Iterable[CorporateAction] = ()) -> LedgerDelta:
    """Return one delta rebuilding every symbol of ``symbols`` from the stored history.

    How a corporate action, a correction or a bust is booked on a live ledger: the caller
    passes the whole stored fill history (busted fills removed: ``remove_busted``) and every
    known action; the result equals ``rebuild`` of that history. Book an action with
    ``symbols=action.symbols``, a bust with the busted fill's symbol (and, if the fill predates
    an action, that action's symbols).
    """
    wanted = set(symbols)
    history = adjusted_history(fills, actions)[0] if actions else list(fills)
    work = _Work(ledger, book)
    for symbol in sorted(wanted):
        view = work.view(symbol)
        for lot_id in view.lot_ids():
            work.lots[lot_id] = None
        view.drop_cycle(None)
        view.clear_pending = True
    for key, found in ledger.slices.items():
        if found.symbol in wanted:
            work.slices[key] = None
    unique: dict[str, tuple[SortKey, Fill]] = {}
    for sort_key, fill in sorted(((f.sort_key, f) for f in history if f.symbol in wanted), key=_first):
        rejection = _rejection(fill)
        if rejection is not None:
            work.rejections.append(rejection)
        else:
            unique.setdefault(sort_key[1], (sort_key, fill))
    for sort_key, fill in unique.values():
        _step(work, work.view(fill.symbol), fill, describe(work.book, fill.order_id), sort_key)
    return work.finish()


def differences(actual: Ledger, expected: Ledger) -> list[str]:
    """Return readable differences in lots, slices, positions and FIFO queues (empty: equal)."""
    found: list[str] = []
    found += _diff_maps("lot", actual.lots, expected.lots)
    found += _diff_maps("slice", actual.slices, expected.slices)
    for symbol in sorted(set(actual.symbols) | set(expected.symbols)):
        if actual.net(symbol) != expected.net(symbol):
            found.append(f"net {symbol}: {actual.net(symbol)} != {expected.net(symbol)}")
        if actual.fifo_queue(symbol) != expected.fifo_queue(symbol):
            found.append(f"fifo {symbol} differs")
    return found


def _diff_maps(kind: str, actual: Mapping[K, V], expected: Mapping[K, V]) -> list[str]:
    found: list[str] = []
    for key in sorted(set(actual) | set(expected), key=repr):
        left, right = actual.get(key), expected.get(key)
        if left != right:
            found.append(f"{kind} {key!r}: {left!r} != {right!r}")
    return found

"""One account's mirror: ledger, order book, fills, broker WAC, open rows — and its commit plans.

``plan(batch)`` turns a staged batch into one ``Plan`` without changing anything: the ledger
delta of the batch's new fills (planned against the book *with* the batch's orders on top),
the open rows that changed because of it (lots, legs, WAC, bars, marks), the closed slices,
the raw rows and the analytics rows. The swap applies it all after the commit.

Two ways to a ledger change, both pure:

* incremental (the usual case): ``plan_keyed_fills`` over the batch's new fills;
* symbol rebuild (docs/spec.md §8): a new corporate action, a bust (a FILL the broker canceled) or a
  fill older than a known action on its symbol rewrites the history of a few symbols;
  ``plan_symbols_rebuild`` re-books them from the stored fills (busted ones removed) with
  every known action, in one delta;
* rebuild: when an order of the batch changes a chain that fills already depend on (a leg
  arriving after its fill, …) or the delta reports ``needs_rebuild`` (a fill older than its
  symbol's cycle), the whole account is rebuilt from the history in memory (with every known
  action, without busted fills) and the result diffed against the current ledger. Rare, and
  exactly what a restart would compute.

Open rows: a structural change (qty, legs, WAC, …) is written and pushed at once; a mark-only
change is pushed at once when it moved ≥ ``UI_PUSH_PCT_THRESHOLD`` since the last push,
otherwise held dirty for the periodic flush (docs/architecture.md §3).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from decimal import Decimal

import msgspec

from coldharbour.domain import changes as ch
from coldharbour.domain.corporate import (
    CorporateAction,
    allocate_spinoff,
    basis_of,
    is_allocated,
    linked_symbols,
    needs_history,
    remove_busted,
)
from coldharbour.domain.ledger import (
    Ledger,
    apply_delta,
    differences,
    plan_keyed_fills,
    plan_symbols_rebuild,
    rebuild,
)
from coldharbour.domain.orders import OrderBook, chain_signature, live_legs, root_of
from coldharbour.domain.positions import RowParams, build_open_row, should_push, with_mark
from coldharbour.domain.reconcile import is_recon_id, reconcile
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.stored import as_uuid, micros, same_row
from coldharbour.domain.types import ClosedSlice, Fill, Lot, OpenRow, Order, SliceKey
from coldharbour.messages import CorporateActionsPage, FillsPage, ResyncRequested, SnapshotTaken, topic_resync
from coldharbour.mirror.batch import AccountBatch
from coldharbour.mirror.book import StagedView
from coldharbour.mirror.marks import Marks
from coldharbour.mirror.plan import AccountUpdate, LedgerChange, Plan, Rewrites, RowChanges, RowsFlushed

log = logging.getLogger(__name__)
COMPLETENESS_KINDS = ("fills", "corporate")  # the histories reconciliation waits for

_MARK_FIELDS = ("mkt_px", "mkt_value", "profit_loss", "profit_loss_lot", "tp_sl_reach_pct", "updated_at")


def _only_marks_differ(old: OpenRow, new: OpenRow) -> bool:
    return msgspec.structs.replace(new, **{f: getattr(old, f) for f in _MARK_FIELDS}) == old


class AccountMirror:
    """The in-memory state of one account (mutated only by swaps of committed plans)."""

    def __init__(self, slug: str, *, params: RowParams, push_pct: Decimal, counters: Counter[str]) -> None:
        self.slug = slug
        self.params = params
        self.push_pct = push_pct
        self.counters = counters
        self.ledger = Ledger()
        self.book = OrderBook()
        self.fills: dict[str, Fill] = {}
        self.wac: dict[str, Decimal] = {}
        self.bars: dict[str, tuple[Decimal, int]] = {}
        self.rows: dict[str, OpenRow] = {}  # as stored (plus marks not flushed yet: ``dirty``)
        self.pushed: dict[str, OpenRow] = {}  # as last notified
        self.dirty: set[str] = set()
        # Keys of the closed slices stored at start-up that the rebuilt ledger may no longer have
        # (the start plan deletes them; afterwards every change carries its own deletes).
        self.stored_slices: set[SliceKey] = set()
        self.actions: dict[str, CorporateAction] = {}  # every booked corporate action, by id
        self.busted: set[str] = set()  # keys of the executions the broker canceled
        # Symbols whose last snapshot row could not be converted: neither flat nor known, their
        # lots stay as they are and are not reconciled until a snapshot lists them convertibly.
        self.unknown: set[str] = set()
        # How far the fill history and the corporate actions this mirror received are complete
        # (UTC ns; absent: not known complete at all, e.g. after a start or a bus gap, until a
        # read from the floor): reconciliation acts only on a snapshot taken before both
        # (docs/startup.md).
        self.complete_to: dict[str, int] = {}

    def load(self, orders: Iterable[Order], fills: Iterable[Fill], rows: dict[str, OpenRow],
             closed_keys: Iterable[SliceKey] = (), actions: Iterable[CorporateAction] = (),
             busted: Iterable[str] = ()) -> None:
        """Take the stored state: rebuild the ledger from history; rows and slice keys as stored (start-up)."""
        self.stored_slices = set(closed_keys)
        self.book = OrderBook(orders)
        self.busted = set(busted)
        self.actions = {action.id: action for action in actions}
        self.fills = {fill.key: fill for fill in fills}
        history = {k: f for k, f in self.fills.items() if k not in self.busted} if self.busted else self.fills
        self.ledger = rebuild(self.book, history, self.actions.values())  # keyed: one key string per fill
        self.rows, self.pushed = dict(rows), dict(rows)
        for row in rows.values():
            self.wac.setdefault(row.symbol, row.avg_px_symbol)
            if row.bar_px is not None and row.bar_ts is not None:
                self.bars[row.symbol] = (row.bar_px, row.bar_ts)

    def symbol_lots(self, symbol: str) -> list[str]:
        """Return the open lot ids of ``symbol``."""
        return [lot.parent_id for lot in self.ledger.open_lots(symbol)]

    def check(self, orders: Iterable[Order], fills: Iterable[Fill],
              actions: Iterable[CorporateAction] | None = None) -> list[str]:
        """Return the differences between the ledger and a rebuild from ``orders``/``fills``/``actions``.

        Busted fills are left out; ``actions`` default to the ones in memory.
        """
        known = self.actions.values() if actions is None else actions
        return differences(self.ledger, rebuild(orders, remove_busted(fills, self.busted), known))

    # -- planning ----------------------------------------------------------------------------

    def plan(self, batch: AccountBatch, marks: Marks, now: int) -> Plan:
        """Return the plan committing ``batch`` (pure: nothing changes before ``swap``)."""
        plan = Plan()
        orders = {i: o for i, (o, _) in batch.orders.items() if self.book.classify(o) not in ("stale", "unchanged")}
        actions = {i: a for i, a in batch.actions.items() if i not in self.actions}
        canceled = {i: self.actions[i] for i in batch.canceled_actions if i in self.actions}
        busted = {k: v for k, v in batch.busted.items() if k not in self.busted}
        fills = {k: staged for k, staged in batch.fills.items()
                 if k not in self.fills and k not in self.ledger.seen and k not in self.busted and k not in busted}
        new_fills = {k: fill for k, (_, fill) in fills.items()}
        view = StagedView(self.book, orders)
        rebased = self._rebased(batch, canceled)
        events = Rewrites(actions, {k: fill for k, (_, fill) in busted.items()}, canceled, rebased)
        change = self._ledger_change(orders, new_fills, view, events)
        for rejection in change.rejections:
            self.counters["rejected_fills"] += 1
            log.warning("ledger rejected fill account=%s key=%s reason=%s", self.slug, rejection.key, rejection.reason)
        rows = self._row_changes(batch, change, view, orders, marks, now)
        self._row_changes_out(plan, rows)
        self._slice_changes(plan, change, batch)
        self._raw_changes(plan, batch, orders, fills, [rec for rec, _ in busted.values() if rec is not None])
        self._analytics_changes(plan, batch)
        bases = [b for b in (*(basis_of(a, "default", now) for a in actions.values()),
                             *(basis_of(a, "override", now) for a in rebased.values())) if b is not None]
        if bases:  # stored with the legs: a reload books the spin-off as it was booked here
            plan.changes.append(ch.SpinoffBases(self.slug, tuple(bases)))
        plan.updates.append(AccountUpdate(self.slug, orders, new_fills, change, rows, batch.wac, batch.bars, events,
                                          slices_converged=batch.all_slices))
        symbols = sorted({f.symbol for f in new_fills.values()} & batch.stream_symbols)
        if symbols:
            plan.messages.append((topic_resync(self.slug),
                                  ResyncRequested(account=self.slug, reason="fill", symbols=tuple(symbols))))
        return plan

    def _rebased(self, batch: AccountBatch, canceled: dict[str, CorporateAction]) -> dict[str, CorporateAction]:
        """Return the booked spin-offs an override rebooks with its basis allocation (the others refused, logged)."""
        rebased: dict[str, CorporateAction] = {}
        for action_id, (share, parent) in sorted(batch.rebased.items()):
            booked = self.actions.get(action_id)
            reason = None
            if booked is None or action_id in canceled:
                reason = "no such corporate action booked"
            elif booked.type != "spinoff" or (booked.price is not None and not is_allocated(booked)):
                reason = f"a {booked.type} with a stated basis, not a spin-off to allocate"
            elif not is_allocated(booked) and not parent:
                reason = "no announcement named its parent: give the parent symbol"
            elif not 0 < share < 1:
                reason = f"parent share {share} outside (0, 1)"
            if reason is not None:
                self.counters["spinoff_basis_refused"] += 1
                log.warning("spin-off basis override refused account=%s id=%s: %s", self.slug, action_id, reason)
                continue
            assert booked is not None
            rebased[action_id] = allocate_spinoff(booked, parent or booked.symbol, share)
        return rebased

    def _needs_rebuild(self, orders: dict[str, Order]) -> bool:
        """Return True when a staged order changes a chain that applied fills depend on."""
        for order in orders.values():
            previous = self.book.get(order.id)
            if previous is not None and chain_signature(previous) == chain_signature(order):
                continue
            ids = {order.id, *order.legs}
            if any(self.ledger.dep_index.get(i) or self.ledger.pending.get(i) for i in ids):
                return True
        return False

    def _rebuild_symbols(self, fills: list[Fill], events: Rewrites, actions: list[CorporateAction]) -> set[str]:
        """Return the symbols whose history the batch rewrites (docs/spec.md §8), empty when none."""
        symbols: set[str] = set()
        if not actions and not events.busted and not events.canceled:  # nothing rewrites history (the usual batch)
            return symbols
        for action in [*events.actions.values(), *events.rebased.values()]:
            symbols |= linked_symbols(set(action.symbols), actions, action.ts - 1)
        for action_id in events.rebased:  # the symbols the allocation it replaces linked
            before = self.actions[action_id]
            symbols |= linked_symbols(set(before.symbols), actions, before.ts - 1)
        for action in events.canceled.values():  # every symbol it linked: their lots are rebuilt without it
            symbols |= linked_symbols(set(action.symbols), [*actions, *events.canceled.values()], action.ts - 1)
        for fill in events.busted.values():
            symbols |= linked_symbols({fill.symbol}, actions, fill.ts)
        for fill in fills:
            if needs_history(fill, actions):  # every symbol linked to it: its lot may live under another
                symbols |= linked_symbols({fill.symbol}, actions, -1)
        return symbols

    def _ledger_change(self, orders: dict[str, Order], keyed: dict[str, Fill], view: StagedView,
                       events: Rewrites) -> LedgerChange:
        fills = list(keyed.values())
        actions = [events.rebased.get(a.id, a) for a in self.actions.values()] + list(events.actions.values())
        if events.canceled:
            actions = [a for a in actions if a.id not in events.canceled]
        busted = self.busted | set(events.busted)
        if not self._needs_rebuild(orders):
            symbols = self._rebuild_symbols(fills, events, actions)
            if symbols:
                self.counters["ledger_symbol_rebuilds"] += 1
                symbols |= {fill.symbol for fill in fills}
                # every symbol an action links them to, at any time: rebuilt together, since one
                # order's lots can live under two of them (a rename after a partial exit) and a
                # lot's id depends on which of that order's fills is booked first
                related = linked_symbols(symbols, actions, -1)
                history = remove_busted([f for f in [*self.fills.values(), *fills] if f.symbol in related], busted)
                delta = plan_symbols_rebuild(self.ledger, related, history, view, actions)
            else:
                delta = plan_keyed_fills(self.ledger, sorted(((f.ts, k), f) for k, f in keyed.items()), view)
            if not delta.needs_rebuild:
                lots: dict[str, Lot | None] = dict.fromkeys(delta.lot_deletes)
                for lot in delta.lot_upserts:
                    lots[lot.parent_id] = lot
                return LedgerChange(lots, delta.slice_upserts, delta.slice_deletes, delta=delta,
                                    rejections=delta.rejections)
        self.counters["ledger_rebuilds"] += 1
        book = OrderBook([*self.book.orders(), *orders.values()])
        rebuilt = rebuild(book, remove_busted([*self.fills.values(), *fills], busted), actions)
        old = self.ledger
        lots = {pid: lot for pid, lot in rebuilt.lots.items() if old.lots.get(pid) != lot}
        lots.update({pid: None for pid in old.lots if pid not in rebuilt.lots})
        slices = tuple(s for k, s in rebuilt.slices.items() if old.slices.get(k) != s)
        gone = tuple(k for k in old.slices if k not in rebuilt.slices)
        return LedgerChange(lots, slices, gone, rebuilt=(rebuilt, book))

    def _candidates(self, batch: AccountBatch, change: LedgerChange, view: StagedView,
                    orders: dict[str, Order]) -> tuple[set[str], set[str]]:
        """Return (rows to re-derive fully, rows to re-mark only)."""
        full = set(change.lots)
        for order_id in orders:
            full.add(root_of(view, order_id).order_id)
        symbols = {s for s, p in batch.wac.items() if p != self.wac.get(s)}
        symbols |= {s for s, bar in batch.bars.items() if bar != self.bars.get(s)}
        if batch.full:
            full |= set(self.ledger.lots) | set(self.rows)
        for symbol in symbols:
            full.update(self.symbol_lots(symbol))
            full.update(pid for pid, lot in change.lots.items() if lot is not None and lot.symbol == symbol)
        marked = {pid for s in batch.remarked for pid in self.symbol_lots(s)} - full
        return full, marked

    def _row_changes(self, batch: AccountBatch, change: LedgerChange, view: StagedView, orders: dict[str, Order],
                     marks: Marks, now: int) -> RowChanges:
        full, marked = self._candidates(batch, change, view, orders)
        result = RowChanges()
        for pid in sorted(full | marked):
            lot = change.lots[pid] if pid in change.lots else self.ledger.lots.get(pid)
            if lot is None:
                if pid in self.rows:
                    result.deletes.append(pid)
                continue
            old = self.rows.get(pid)
            if pid in full or old is None:
                # The batch's WAC (None: no longer held) and bars over memory's.
                symbol = lot.symbol
                wac = batch.wac[symbol] if symbol in batch.wac else self.wac.get(symbol)
                bar = batch.bars.get(symbol) or self.bars.get(symbol)
                new = build_open_row(lot, legs=live_legs(view, pid), mark=marks.price(symbol),
                                     wac=wac, now=now, params=self.params,
                                     bar_px=bar[0] if bar else None, bar_ts=bar[1] if bar else None)
            else:
                new = with_mark(old, marks.price(lot.symbol), now)
            if old is not None and same_row(old, new):
                continue
            if old is None or not _only_marks_differ(old, new) or should_push(self.pushed.get(pid), new, self.push_pct):
                result.upserts[pid] = new
            else:
                result.dirty[pid] = new
        return result

    # -- changes ------------------------------------------------------------------------------

    def _row_changes_out(self, plan: Plan, rows: RowChanges) -> None:
        if rows.upserts or rows.deletes:
            plan.changes.append(ch.OpenRows(self.slug, tuple(rows.upserts.values()),
                                            tuple(rows.deletes)))

    def _announce(self, found: ClosedSlice) -> ch.Announce:
        """A final slice is announced when its row changed, or once when it became final in memory."""
        if not found.is_final:
            return ch.Announce.NEVER
        before = self.ledger.slices.get(found.key)
        return ch.Announce.ALWAYS if before is not None and not before.is_final else ch.Announce.IF_CHANGED

    def _slice_changes(self, plan: Plan, change: LedgerChange, batch: AccountBatch) -> None:
        slices = {s.key: s for s in change.slice_upserts}
        deletes = list(change.slice_deletes)
        if batch.all_slices:
            slices = {**self.ledger.slices, **slices}
            # A restart rebuilds the ledger from history; slices stored under keys the rebuild
            # no longer produces (fills re-ordered by late arrivals) must go, or they double-count.
            deletes += sorted(self.stored_slices - slices.keys() - set(deletes))
        for key in deletes:
            slices.pop(key, None)
        if deletes or slices:
            plan.changes.append(ch.ClosedSlices(
                self.slug, tuple(slices.values()),
                tuple(self._announce(s) for s in slices.values()), tuple(deletes)))

    def _raw_changes(self, plan: Plan, batch: AccountBatch, orders: dict[str, Order],
                     fills: dict[str, tuple[ActivityRecord, Fill]], busted: list[ActivityRecord]) -> None:
        if orders:
            staged = batch.orders
            plan.changes.append(ch.RawOrders(self.slug, tuple((order, staged[i][1]) for i, order in orders.items())))
        by_execution: dict[str, ActivityRecord] = {}
        by_id: dict[str, ActivityRecord] = dict(batch.activities)
        # Reconciliation fills come only in a full snapshot's batch (``reconcile_plan``).
        recon = [record for record, fill in fills.values() if is_recon_id(fill.order_id)] if batch.full else []
        if recon:  # our own bookings: never among the broker's raw activities (docs/startup.md)
            fills = {key: pair for key, pair in fills.items() if not is_recon_id(pair[1].order_id)}
            plan.changes.append(ch.Reconciliations(self.slug, tuple(recon)))
        # A bust's record last: it replaces the row of the execution it cancels (by execution or id).
        for record in [*(record for record, _ in fills.values()), *busted]:
            execution = as_uuid(record.execution_id)
            if execution is not None:
                by_execution[execution] = record
            else:
                by_id[record.id] = record
        if by_execution:
            plan.changes.append(ch.RawActivities(self.slug, tuple(by_execution.values()), by_execution=True))
        if by_id:
            plan.changes.append(ch.RawActivities(self.slug, tuple(by_id.values())))

    def _analytics_changes(self, plan: Plan, batch: AccountBatch) -> None:
        if batch.cash_flows:
            plan.changes.append(ch.CashFlows(self.slug, tuple(batch.cash_flows.values())))
        if batch.daily or batch.daily_keep is not None:
            keep = tuple(batch.daily_keep) if batch.daily_keep is not None else None
            plan.changes.append(ch.DailyEquity(self.slug, tuple(batch.daily.values()), keep))
        if batch.intraday:
            plan.changes.append(ch.IntradayEquity(self.slug, tuple(batch.intraday.values())))
        if batch.metrics is not None:
            plan.changes.append(ch.MetricsDoc(self.slug, batch.metrics))

    # -- the swap ----------------------------------------------------------------------------

    def swap(self, update: AccountUpdate) -> None:
        """Take ``update`` (its plan committed)."""
        for order in update.orders.values():
            self.book.store(order)  # classified new or updated by ``plan`` on this same book
        if update.ledger.delta is not None:
            apply_delta(self.ledger, update.ledger.delta)
        if update.ledger.rebuilt is not None:  # after the book: a rebuild brings its own
            self.ledger, self.book = update.ledger.rebuilt
        self.fills.update(update.fills)
        for symbol, price in update.wac.items():
            if price is None:
                self.wac.pop(symbol, None)
            else:
                self.wac[symbol] = price
        self.bars.update(update.bars)
        self._swap_rows(update.rows)
        if update.slices_converged:
            self.stored_slices.clear()
        if update.recon_corrections:
            self.counters["recon_corrections"] += update.recon_corrections
        if update.rewrites.actions or update.rewrites.busted or update.rewrites.canceled or update.rewrites.rebased:
            self._swap_rewrites(update.rewrites)

    def _swap_rows(self, rows: RowChanges) -> None:
        for pid, row in rows.upserts.items():
            self.rows[pid] = self.pushed[pid] = row
            self.dirty.discard(pid)
        for pid, row in rows.dirty.items():
            self.rows[pid] = row
            self.dirty.add(pid)
        for pid in rows.deletes:
            self.rows.pop(pid, None)
            self.pushed.pop(pid, None)
            self.dirty.discard(pid)

    def _swap_rewrites(self, events: Rewrites) -> None:
        self.actions.update(events.actions)
        for action_id, action in events.canceled.items():
            self.actions.pop(action_id, None)
            self.counters["corporate_actions_canceled"] += 1
            log.info("corporate action canceled by the broker account=%s id=%s type=%s symbol=%s: its symbols rebuilt",
                     self.slug, action_id, action.type, action.symbol)
        for action_id, action in events.rebased.items():
            self.actions[action_id] = action
            self.counters["spinoff_basis_overrides"] += 1
            log.info("spin-off rebooked account=%s id=%s parent=%s parent_share=%s new_symbol=%s", self.slug,
                     action_id, action.symbol, action.basis_share, action.new_symbol)
        self.busted |= set(events.busted)
        self.counters["corporate_actions_booked"] += len(events.actions)
        self.counters["fills_busted"] += len(events.busted)
        for action in events.actions.values():
            log.info("corporate action booked account=%s id=%s type=%s symbol=%s new_symbol=%s ratio=%s", self.slug,
                     action.id, action.type, action.symbol, action.new_symbol, action.ratio)
        for key, fill in events.busted.items():
            log.info("busted fill removed account=%s key=%s symbol=%s", self.slug, key, fill.symbol)

    def flush_plan(self, now: int) -> Plan:
        """Return the plan writing every dirty row (marks) in one statement, without NOTIFY."""
        plan = Plan()
        pending = {pid: self.rows[pid] for pid in sorted(self.dirty) if pid in self.rows}
        if pending:
            plan.changes.append(ch.OpenRows(self.slug, tuple(pending.values()), announce=False))
            plan.rows_flushed.append(RowsFlushed(self.slug, pending))
        return plan

    def flushed(self, done: RowsFlushed) -> None:
        """Mark the rows a committed flush wrote clean (unless they changed since)."""
        self.dirty -= {pid for pid, row in done.rows.items() if self.rows.get(pid) is row}

    def note_coverage(self, page: FillsPage | CorporateActionsPage) -> None:
        """Extend how far fills (or corporate actions) are complete with a page's watermark, when it joins."""
        after, upto = page.complete_after_ns, page.complete_to_ns
        if after is None or upto is None:
            return
        kind = "fills" if isinstance(page, FillsPage) else "corporate"
        current = self.complete_to.get(kind)
        if page.is_from_floor or (current is not None and after <= current):
            self.complete_to[kind] = upto if current is None else max(current, upto)
        else:
            self.counters[f"{kind}_coverage_gaps"] += 1  # a read after a stretch we never received

    def is_complete_to(self, ts: int) -> bool:
        """Return True when the fills and the corporate actions received are complete up to ``ts``."""
        return all(self.complete_to.get(kind, -1) >= ts for kind in COMPLETENESS_KINDS)

    def forget_completeness(self) -> None:
        """Say nothing is known complete any more (a bus gap, a failed commit): until a read from the floor."""
        self.complete_to.clear()

    def note_unknown(self, snapshot: SnapshotTaken) -> set[str]:
        """Take which symbols ``snapshot`` covers but could not read; return the known ones it covers.

        A full snapshot replaces the unknown set; a partial one changes only its ``symbols``.
        Counted (``positions_unknown_<slug>``, a gauge read by ``chmgr doctor``) and logged on change.
        """
        unknown = set(snapshot.unknown_symbols)
        covered = set(snapshot.symbols) if snapshot.symbols else None
        before = set(self.unknown)
        if covered is None:
            self.unknown = unknown
        else:
            self.unknown = (self.unknown - covered) | (unknown & covered)
        if unknown:
            self.counters["positions_unknown_snapshots"] += 1
        self.counters[f"positions_unknown_{self.slug}"] = len(self.unknown)
        if self.unknown - before:
            log.warning("positions unreadable, lots kept as they are account=%s symbols=%s", self.slug,
                        ",".join(sorted(self.unknown - before)))
        if before - self.unknown:
            log.info("positions readable again account=%s symbols=%s", self.slug,
                     ",".join(sorted(before - self.unknown)))
        return (covered if covered is not None else set()) - self.unknown

    def reconcile_plan(self, snapshot: SnapshotTaken, marks: Marks, now: int) -> Plan:
        """Return the plan that makes the lots match a full broker snapshot (docs/spec.md §3 invariant).

        Symbols whose newest applied fill is newer than the snapshot are skipped (the ledger is
        ahead of it, not wrong). Corrections are booked as synthetic ``recon:`` fills, stored
        with the real ones so that a rebuild from the tables agrees.
        """
        taken = micros(snapshot.taken_at)
        if not self.is_complete_to(snapshot.taken_at):
            # The fills or actions that explain these positions may not have arrived yet: "none"
            # is not "flat". Only the broker WAC is taken; the next snapshot after a complete read acts.
            self.counters["recon_deferred_incomplete"] += 1
            log.info("reconciliation deferred account=%s: history complete to %s, snapshot at %d",
                     self.slug, self.complete_to, snapshot.taken_at)
            skip_all: list[str] = sorted(set(self.ledger.held_symbols()) | {p.symbol for p in snapshot.positions})
        else:
            skip_all = []
        skip = [s for s, state in self.ledger.symbols.items()
                if state.last_key is not None and state.last_key[0] > taken] + skip_all
        # A corporate action effective after the snapshot explains its symbols' difference (the
        # ledger booked it, the positions read before it do not show it yet): docs/spec.md §8.
        skip += [s for action in self.actions.values() if action.ts > taken for s in action.symbols]
        self.note_unknown(snapshot)
        skip += self.unknown  # a row the broker listed but we could not read is no flat position
        skip += snapshot.pending_symbols  # an action under way: its legs or its position may come first
        prices = {symbol: price for symbol, (price, _) in marks.prices.items()}
        outcome = reconcile(self.ledger, snapshot.positions, self.book, now=taken, wac=self.wac, marks=prices,
                            skip=skip)
        batch = AccountBatch(full=True)
        batch.set_positions(snapshot.positions,
                            tuple(sorted(({p.symbol for p in snapshot.positions} | set(self.wac)) - self.unknown)))
        for correction in outcome.corrections:
            log.warning("reconciliation account=%s symbol=%s ledger_qty=%s broker_qty=%s fills=%d", self.slug,
                        correction.symbol, correction.ledger_qty, correction.broker_qty, len(correction.fills))
            for fill in correction.fills:
                batch.add_fill(fill, self.counters)
        plan = self.plan(batch, marks, now)
        plan.updates[0].recon_corrections = len(outcome.corrections)
        return plan

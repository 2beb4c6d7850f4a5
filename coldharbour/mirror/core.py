"""The mirror of every account, and how a drained batch of events becomes plans.

``Mirror.stage(events, start, now)`` stages events per account from ``start`` and returns one
``Step``: the ``Plan`` of everything staged (one transaction for all accounts) and the barrier
it stopped at, if any. Events that must see the committed result of what came before — a full
snapshot (reconciliation), a flush, a ledger check — are barriers: their plan
(``barrier_plan``) is computed only after the plan before them was committed and swapped in.
``mirror.owner.StateOwner.apply`` runs that protocol (stage, commit, ``swap``, barrier, …); the
mirror itself never commits.

Mutated only by ``state``'s single consumer task (docs/architecture.md §3).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import zip_longest

import msgspec

from coldharbour.config import Settings
from coldharbour.domain.changes import MarketSchedule, UiHeartbeat
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.positions import RowParams
from coldharbour.domain.schedule import NEW_YORK
from coldharbour.domain.stored import micros
from coldharbour.domain.types import Fill, Order, to_datetime
from coldharbour.messages import (
    ActivitiesPage,
    CorporateActionsPage,
    EquityComputed,
    FillsPage,
    LedgerCheckRequested,
    Message,
    MetricsComputed,
    OrdersPage,
    OrderUpdated,
    ResyncRequested,
    ScheduleComputed,
    SessionPhaseChanged,
    SnapshotTaken,
    SpinoffBasisSet,
    Tick,
    TickBatch,
    topic_resync,
)
from coldharbour.mirror.account import AccountMirror
from coldharbour.mirror.batch import AccountBatch
from coldharbour.mirror.marks import Marks, TickLag
from coldharbour.mirror.plan import Barrier, Flush, LedgerCheck, Plan, Reconcile, Step

log = logging.getLogger(__name__)


def _is_json_object(payload: str) -> bool:
    """Return True when ``payload`` is a JSON object (what the KPI column must hold)."""
    try:
        return isinstance(msgspec.json.decode(payload), dict)
    except msgspec.DecodeError:
        return False


class FlushDue:
    """Timer event: write dirty marks, rows, prices and bars."""


class HeartbeatDue:
    """Timer event: send the UI heartbeat NOTIFY on every positions channel."""


@dataclass(frozen=True)
class GapDetected:
    """The bus lost or restarted a sequence on one of an account's broker topics."""

    slug: str
    kind: str


Event = tuple[str, Message] | FlushDue | HeartbeatDue | GapDetected


class Mirror:
    """Per-process in-memory state of every account, plus marks and bars."""

    def __init__(self, settings: Settings, counters: Counter[str]) -> None:
        self.settings = settings
        self.counters = counters
        self.marks = Marks()
        self.tick_lag = TickLag(counters)
        params = RowParams(min_stop_gap=Decimal(repr(settings.min_stop_gap)), gtc_days=settings.alpaca_gtc_days)
        push_pct = Decimal(repr(settings.ui_push_pct_threshold))
        self.accounts = {
            a.slug: AccountMirror(a.slug, params=params, push_pct=push_pct, counters=counters)
            for a in settings.accounts
        }

    def start_plan(self, now: int) -> Plan:
        """Return the plan converging the stored rows and slices on the loaded ledger."""
        plan = Plan()
        for account in self.accounts.values():
            plan.extend(account.plan(AccountBatch(full=True, all_slices=True), self.marks, now))
        return plan

    def heartbeat_plan(self, now: int) -> Plan:
        """Return the UI heartbeat for every account's positions channel."""
        return Plan(changes=[UiHeartbeat(slug, now) for slug in self.accounts])

    def flush_plan(self, now: int) -> Plan:
        """Return the periodic flush: prices, bars and every account's dirty rows.

        After it committed, marks of feed symbols no account holds are forgotten once idle
        for ``IDLE_TTL_NS`` (a feed of random symbols must not grow memory without bound).
        """
        plan = self.marks.flush_plan()
        for account in self.accounts.values():
            plan.extend(account.flush_plan(now))
        plan.prune_marks_at = now
        return plan

    def swap(self, plan: Plan) -> None:
        """Take ``plan``'s new state into memory (call only after its changes committed)."""
        for update in plan.updates:
            self.accounts[update.slug].swap(update)
        for rows in plan.rows_flushed:
            self.accounts[rows.slug].flushed(rows)
        if plan.marks_flushed is not None:
            self.marks.flushed(plan.marks_flushed)
        if plan.prune_marks_at is not None:
            held = {s for account in self.accounts.values() for s in account.ledger.held_symbols()}
            self.counters["marks_pruned"] += self.marks.prune(held, plan.prune_marks_at)

    def load_marks(self, prices: dict[str, tuple[Decimal, int]]) -> None:
        """Take the stored last prices (start-up, before ``restore_marks``)."""
        self.marks.prices.update(prices)

    def restore_marks(self) -> None:
        """Take the marks of the committed open rows (start-up), where newer than ``latest_prices``.

        ``latest_prices`` is flushed periodically; the rows carry the marks ``state`` last
        committed, so marks after a restart equal marks before it.
        """
        for account in self.accounts.values():
            for row in account.rows.values():
                if row.mkt_px is not None:
                    self.marks.restore(row.symbol, row.mkt_px, row.updated_at)

    def check_ledger(self, slug: str, orders: Iterable[Order], fills: Iterable[Fill],
                     actions: Iterable[CorporateAction] | None = None) -> list[str]:
        """Compare ``slug``'s ledger with a rebuild from its stored history; log and count differences.

        ``state`` runs it in a thread while its consumer task awaits it, so nothing mutates the
        ledger meanwhile.
        """
        found = self.accounts[slug].check(orders, fills, actions)
        self.counters["ledger_checks"] += 1
        if found:
            self.counters["ledger_mismatches"] += len(found)
            log.warning("ledger differs from rebuild account=%s differences=%d first=%s", slug, len(found), found[:3])
        return found

    # -- batches -----------------------------------------------------------------------------

    def stage(self, events: Sequence[Event], start: int, now: int) -> Step:
        """Stage ``events[start:]`` up to and including the first barrier; return their ``Step``.

        The step's plan is computed on the memory as it is now; its barrier's plan
        (``barrier_plan``) must wait until that plan has been committed and swapped in.
        """
        batches: dict[str, AccountBatch] = {}
        extra = Plan()
        for n in range(start, len(events)):
            barrier = self._stage(events[n], batches, extra, now)
            if barrier is not None:
                return Step(self._pending(batches, extra, now), barrier, n + 1 - start)
        return Step(self._pending(batches, extra, now), None, len(events) - start)

    def barrier_plan(self, barrier: Flush | Reconcile, now: int) -> Plan:
        """Return the plan of a flush or a reconciliation (on memory with everything before it swapped in)."""
        match barrier:
            case Flush():
                return self.flush_plan(now)
            case Reconcile(snapshot=snapshot):
                return self.accounts[snapshot.account].reconcile_plan(snapshot, self.marks, now)

    def _pending(self, batches: dict[str, AccountBatch], extra: Plan, now: int) -> Plan | None:
        """Return the one plan of the staged batches and ``extra``, None when it has nothing to do."""
        plan = Plan()
        for slug, batch in batches.items():
            if not batch.is_empty:
                plan.extend(self.accounts[slug].plan(batch, self.marks, now))
                plan.changes += batch.deletions(slug)
        plan.extend(extra)
        return None if plan.is_empty else plan

    def _batch(self, slug: str, batches: dict[str, AccountBatch]) -> AccountBatch | None:
        if slug not in self.accounts:
            self.counters["unknown_account"] += 1
            log.warning("message for an unknown account dropped account=%s", slug[:60])
            return None
        batch = batches.get(slug)
        if batch is None:
            batch = batches[slug] = AccountBatch()
        return batch

    def _stage(self, event: Event, batches: dict[str, AccountBatch], extra: Plan, now: int) -> Barrier | None:
        match event:
            case FlushDue():
                return Flush()
            case HeartbeatDue():
                extra.extend(self.heartbeat_plan(now))
            case GapDetected() as gap:
                self._stage_gap(gap, extra)
            case (_, Tick() | TickBatch() as ticks):
                self._stage_ticks(ticks, batches)
            case (_, LedgerCheckRequested(account=slug)) if slug in self.accounts:
                return LedgerCheck(slug)
            case (_, SnapshotTaken() as snapshot):
                return self._stage_snapshot(snapshot, batches)
            case (_, ScheduleComputed() as schedule):
                self._stage_schedule(schedule, extra)
            case (_, SessionPhaseChanged() as phase):
                self.counters["session_phase_changes"] += 1
                log.info("session phase=%s date=%s", phase.phase, phase.session_date)
            case (_, message):
                self._stage_account(message, batches)
        return None

    def _stage_gap(self, gap: GapDetected, extra: Plan) -> None:
        """Ask for a resync; a page may be lost, so nothing is known complete until the rewind's read."""
        if gap.slug in self.accounts:
            self.accounts[gap.slug].forget_completeness()
        extra.messages.append((topic_resync(gap.slug), ResyncRequested(account=gap.slug, reason=gap.kind)))

    def _stage_ticks(self, ticks: Tick | TickBatch, batches: dict[str, AccountBatch]) -> None:
        if isinstance(ticks, Tick):
            self.counters["ticks"] += 1
            self.tick_lag.pending(ticks.ts_event, 1)
            if self.marks.apply(ticks):
                self._remark({ticks.symbol}, batches)
            return
        self.counters["ticks"] += len(ticks.symbols)
        if ticks.ts_events:
            self.tick_lag.pending(min(ticks.ts_events), len(ticks.ts_events))
        self._remark(self.marks.apply_batch(ticks), batches)

    def _remark(self, symbols: set[str], batches: dict[str, AccountBatch]) -> None:
        for slug, account in self.accounts.items():
            held = {symbol for symbol in symbols if account.ledger.net(symbol) != 0}
            if held:
                batches.setdefault(slug, AccountBatch()).remarked.update(held)

    def _stage_snapshot(self, snapshot: SnapshotTaken, batches: dict[str, AccountBatch]) -> Barrier | None:
        batch = self._batch(snapshot.account, batches)
        if batch is None:
            return None
        for order, raw in zip_longest(snapshot.open_orders, snapshot.open_orders_json[: len(snapshot.open_orders)]):
            batch.add_order(order, raw or "{}", self.counters)
        self._stage_snapshot_marks(snapshot, batches)
        if snapshot.symbols:
            known = self.accounts[snapshot.account].note_unknown(snapshot)
            batch.set_positions(snapshot.positions, tuple(s for s in snapshot.symbols if s in known))
            return None
        return Reconcile(snapshot)

    def _stage_snapshot_marks(self, snapshot: SnapshotTaken, batches: dict[str, AccountBatch]) -> None:
        """Mark positions from the broker's ``current_price`` when no newer tick is known."""
        marked = {p.symbol for p in snapshot.positions
                  if p.current_price is not None and self.marks.apply_snapshot(p.symbol, p.current_price,
                                                                               snapshot.taken_at)}
        if marked:
            self._remark(marked, batches)

    def _stage_schedule(self, schedule: ScheduleComputed, extra: Plan) -> None:
        sessions = {s.session_date: s for s in schedule.sessions}
        cutoff = None
        if schedule.prune_before_ns is not None:
            cutoff = to_datetime(schedule.prune_before_ns).astimezone(NEW_YORK).date()
        span = None
        if schedule.replace_from is not None and schedule.replace_to is not None:
            span = (schedule.replace_from, schedule.replace_to)  # a closure declared later: its row goes
        if sessions or cutoff is not None or span is not None:
            rows = tuple(sessions.values())
            keep = tuple(sorted(day for day in sessions if span is not None and span[0] <= day <= span[1]))
            extra.changes.append(MarketSchedule(rows, cutoff, span, keep))

    def _stage_account(self, message: Message, batches: dict[str, AccountBatch]) -> None:
        slug = getattr(message, "account", None)
        if not isinstance(slug, str):
            return  # heartbeats, probes, commands for others
        batch = self._batch(slug, batches)
        if batch is None:
            return
        match message:
            case OrderUpdated():
                batch.add_order(message.order, message.order_json, self.counters)
                for leg in message.legs:
                    batch.add_order(leg, "{}", self.counters)
                if message.fill is not None:
                    batch.add_fill(message.fill, self.counters, from_stream=True)
            case SpinoffBasisSet():  # booked by ``AccountMirror.plan`` (refused there when it fits nothing)
                batch.rebased[message.action_id] = (message.parent_share, message.parent)
            case _:
                self._stage_pages(message, batch)

    def _stage_pages(self, message: Message, batch: AccountBatch) -> None:
        match message:
            case OrdersPage():
                for order, raw in zip_longest(message.orders, message.orders_json[: len(message.orders)]):
                    batch.add_order(order, raw or "{}", self.counters)
            case FillsPage():
                for record in message.activities:
                    batch.add_activity(record)
                for fill in message.fills:
                    batch.add_fill(fill, self.counters)
                for fill in message.busted:
                    batch.add_bust(fill, self.counters)
                self.accounts[message.account].note_coverage(message)
            case CorporateActionsPage():
                self._stage_corporate(message, batch)
            case ActivitiesPage():
                for record in message.activities:
                    batch.add_activity(record)
                batch.add_cash_flows(message.cash_flows, message.deleted_cash_flow_ids)
            case _:
                self._stage_analytics(message, batch)

    def _stage_corporate(self, message: CorporateActionsPage, batch: AccountBatch) -> None:
        """Stage corporate actions (booked by ``AccountMirror.plan``) and their legs (raw rows)."""
        self.accounts[message.account].note_coverage(message)
        for record in message.activities:
            batch.add_activity(record)
        batch.actions.update({action.id: action for action in message.actions})
        batch.canceled_actions.update(message.canceled)
        for action_id in message.canceled:
            batch.actions.pop(action_id, None)
        for problem in message.problems:
            self.counters["corporate_problems"] += 1
            log.warning("corporate action leg not booked account=%s problem=%s", message.account, problem[:200])

    def _stage_analytics(self, message: Message, batch: AccountBatch) -> None:
        match message:
            case EquityComputed():
                self._stage_equity(message, batch)
            case MetricsComputed():
                if _is_json_object(message.payload):
                    batch.metrics = message.payload
                else:
                    self.counters["rejected_metrics"] += 1
                    log.warning("rejected KPI document account=%s reason=not a JSON object", message.account)

    @staticmethod
    def _stage_equity(message: EquityComputed, batch: AccountBatch) -> None:
        batch.daily.update({row.date: row for row in message.daily})
        batch.intraday.update({point.ts: point for point in message.intraday})
        batch.bars.update({symbol: (px, micros(ts)) for symbol, (px, ts) in message.bars.items()})
        if message.is_rebuild and message.daily:
            batch.daily_keep = sorted(batch.daily)

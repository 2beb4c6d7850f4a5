"""What one batch brings for one account, staged before it is planned and committed.

The staging functions only collect (newest order version per id, fills by key, rows by natural
key), so the statements of one commit never touch the same row twice. Inputs are put in their
canonical stored form here (``domain.stored``): what the ledger sees live is exactly what
a rebuild from the tables will see.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from coldharbour.domain import cashflows, changes, stored
from coldharbour.domain.cashflows import CashFlow
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.equity import DailyRow, IntradayPoint
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.types import BrokerPosition, Fill, Order, to_datetime

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class AccountBatch:
    """The staged inputs of one account for one commit."""

    full: bool = False  # re-derive every row and drop rows without a lot
    all_slices: bool = False  # re-write every slice (idempotent; used at start-up)
    orders: dict[str, tuple[Order, str]] = field(default_factory=dict)
    fills: dict[str, tuple[ActivityRecord, Fill]] = field(default_factory=dict)
    stream_symbols: set[str] = field(default_factory=set)  # symbols filled on the stream
    activities: dict[str, ActivityRecord] = field(default_factory=dict)  # non-fill, by id
    actions: dict[str, CorporateAction] = field(default_factory=dict)  # corporate actions, by id
    canceled_actions: set[str] = field(default_factory=set)  # ids of actions the broker canceled
    # Spin-off basis overrides (``chmgr corporate basis``): action id -> (parent share, parent or None).
    rebased: dict[str, tuple[Decimal, str | None]] = field(default_factory=dict)
    # Busted executions by fill key: the canceled FILL record to store (None: none came) and the fill.
    busted: dict[str, tuple[ActivityRecord | None, Fill]] = field(default_factory=dict)
    cash_flows: dict[str, CashFlow] = field(default_factory=dict)
    deleted_cash_flows: set[str] = field(default_factory=set)  # activities the broker canceled
    daily: dict[date, DailyRow] = field(default_factory=dict)
    daily_keep: list[date] | None = None  # set by a full equity rebuild
    intraday: dict[datetime, IntradayPoint] = field(default_factory=dict)
    bars: dict[str, tuple[Decimal, int]] = field(default_factory=dict)
    metrics: str | None = None
    wac: dict[str, Decimal | None] = field(default_factory=dict)  # None: the broker is flat
    remarked: set[str] = field(default_factory=set)  # symbols whose mark moved

    @property
    def is_empty(self) -> bool:
        """Return True when nothing was staged."""
        return not (self.orders or self.fills or self.activities or self.actions or self.busted or self.canceled_actions
                    or self.rebased
                    or self.cash_flows or self.daily
                    or self.intraday or self.bars or self.metrics is not None or self.wac
                    or self.remarked or self.full or self.daily_keep is not None or self.deleted_cash_flows)

    def add_order(self, order: Order, raw_json: str, counters: Counter[str]) -> None:
        """Stage one order version (the newest ``updated_at`` per id wins)."""
        try:
            order = stored.canonical_order(order)
        except stored.InvalidRow as e:
            counters["rejected_orders"] += 1
            log.warning("rejected order reason=%s", e)
            return
        current = self.orders.get(order.id)
        if current is None or order.updated_at >= current[0].updated_at:
            self.orders[order.id] = (order, raw_json)
            self.add_commission(order)

    def add_commission(self, order: Order) -> None:
        """Stage an order's ``commission`` as a ``fee`` cash flow once it is final (docs/spec.md §8).

        Keyed ``commission:<order id>`` (one row per order, rewritten unchanged on a replay),
        dated when it filled (else its last update).
        """
        if order.is_live or order.commission <= 0:
            return
        flow = cashflows.commission_flow(order.id, order.symbol, order.commission,
                               to_datetime(order.filled_at if order.filled_at is not None else order.updated_at))
        if flow is not None:
            self.add_cash_flows((flow,))

    def add_fill(self, fill: Fill, counters: Counter[str], *, from_stream: bool = False) -> None:
        """Stage one execution in its stored form."""
        try:
            key, record, canonical = stored.stored_fill(fill)
        except stored.InvalidRow as e:
            counters["rejected_fills"] += 1
            log.warning("rejected fill reason=%s", e)
            return
        self.fills.setdefault(key, (record, canonical))
        if from_stream:
            self.stream_symbols.add(canonical.symbol)

    def add_activity(self, record: ActivityRecord) -> None:
        """Stage one broker activity; a FILL also stages its execution (a canceled one: its bust)."""
        fill = stored.fill_from_activity(record)
        if fill is not None and stored.is_canceled(record):
            self.busted[fill.key] = (record, fill)
        elif fill is not None:
            self.fills.setdefault(fill.key, (record, fill))
        elif record.activity_type.upper() != stored.FILL_ACTIVITY:
            self.activities[record.id] = record

    def add_bust(self, fill: Fill, counters: Counter[str]) -> None:
        """Stage the removal of an execution the broker canceled (its record comes as an activity)."""
        try:
            canonical = stored.canonical_fill(fill)[1]
        except stored.InvalidRow as e:
            counters["rejected_fills"] += 1
            log.warning("rejected bust reason=%s", e)
            return
        self.busted.setdefault(canonical.key, (None, canonical))

    def set_positions(self, positions: tuple[BrokerPosition, ...], symbols: tuple[str, ...]) -> None:
        """Stage the broker WAC of ``symbols`` from a partial snapshot (absent = flat)."""
        by_symbol = {p.symbol: p for p in positions}
        for symbol in symbols:
            position = by_symbol.get(symbol)
            self.wac[symbol] = position.avg_entry_price if position is not None and position.qty != 0 else None

    def add_cash_flows(self, flows: Iterable[CashFlow], deleted: Iterable[str] = ()) -> None:
        """Stage cash-flow rows and the ids to delete (docs/spec.md §8 corrections); the later one wins."""
        for flow in flows:
            self.cash_flows[flow.id] = flow
            self.deleted_cash_flows.discard(flow.id)
        for flow_id in deleted:
            self.cash_flows.pop(flow_id, None)
            self.deleted_cash_flows.add(flow_id)

    def deletions(self, slug: str) -> list[changes.Change]:
        """Return the staged deletes the account plan does not carry (canceled cash flows)."""
        if not self.deleted_cash_flows:
            return []
        return [changes.CashFlows(slug, deletes=tuple(sorted(self.deleted_cash_flows)))]

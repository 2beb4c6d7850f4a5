"""The start-up matrix: every order the programs' messages can reach ``state`` in ends in the same rows.

One account with history (docs/startup.md): AAPL bought 100 and sold 40, MSFT bought 10 in two
partial fills then split 2-for-1, a deposit and a dividend, and a stream fill (AAPL +5) after the
snapshot. Three publishers keep their own order (one zmq connection each) but interleave freely:

- ``snapshot``: the backfill (orders, fills, corporate actions: reads from the floor) then a full
  snapshot (its fill and corporate reads from the cursors, then ``SnapshotTaken``);
- ``trades``: the stream fill;
- ``cashflows``: the activities page.

``state`` subscribing late loses a prefix of the interleaving; it then gets what its start
brings: a rewound full snapshot and the re-sent activities (the ready announcement). Every
interleaving and every lost prefix must end in the rows of the ordered start, with no ``recon:``
booking. No database: the mirror through ``StateOwner`` (``tests/mirror/support.py``).

Payload shapes: orders and fills as ``broker/convert.py`` builds them from Alpaca's order and
FILL activity objects (docs.alpaca.markets/reference/getallorders, .../getaccountactivities);
the split as ``domain.corporate`` derives it from Alpaca's SPLIT legs.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from coldharbour.domain import changes as ch
from coldharbour.domain.cashflows import CashFlow, Category
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.types import NS_PER_DAY, NS_PER_SECOND, BrokerPosition, Fill
from coldharbour.messages import (
    ActivitiesPage,
    CorporateActionsPage,
    FillsPage,
    OrdersPage,
    OrderUpdated,
    SnapshotTaken,
)
from coldharbour.mirror import Event
from tests.mirror.support import T0, Driver, oid, order

FLOOR = T0 - 10 * NS_PER_DAY
SNAPSHOT_AT = T0 + 10 * NS_PER_SECOND
RESYNC_AT = T0 + 200 * NS_PER_SECOND  # the rewound full snapshot state's start asks for


def _fill(name: str, qty: str, price: str, at: int, *, side: str = "buy", symbol: str = "AAPL",
          cum: str | None = None) -> Fill:
    return Fill(order_id=oid(name), symbol=symbol, side=side, qty=Decimal(qty), price=Decimal(price),  # type: ignore[arg-type]
                ts=at, execution_id=oid(f"{name}-x-{cum or qty}"), cum_qty=Decimal(cum or qty))


ENTRY = order("E", qty=Decimal(100), filled_qty=Decimal(100), created_at=T0 - 5 * NS_PER_DAY,
              updated_at=T0 - 5 * NS_PER_DAY)
EXIT = order("S", side="sell", qty=Decimal(40), filled_qty=Decimal(40), created_at=T0 - 3 * NS_PER_DAY,
             updated_at=T0 - 3 * NS_PER_DAY)
MSFT = order("M", symbol="MSFT", qty=Decimal(10), filled_qty=Decimal(10), created_at=T0 - 4 * NS_PER_DAY,
             updated_at=T0 - 4 * NS_PER_DAY + 60)
LATE = order("N", qty=Decimal(5), filled_qty=Decimal(5), created_at=T0 + 100 * NS_PER_SECOND,
              updated_at=T0 + 100 * NS_PER_SECOND)
HISTORY_FILLS = (
    _fill("E", "100", "100", T0 - 5 * NS_PER_DAY),
    _fill("S", "40", "110", T0 - 3 * NS_PER_DAY, side="sell"),
    _fill("M", "4", "300", T0 - 4 * NS_PER_DAY, symbol="MSFT", cum="4"),
    _fill("M", "6", "301", T0 - 4 * NS_PER_DAY + 60, symbol="MSFT", cum="10"),
)
LATE_FILL = _fill("N", "5", "105", T0 + 100 * NS_PER_SECOND)
SPLIT = CorporateAction(id="split-msft", type="split", symbol="MSFT", ts=T0 - 2 * NS_PER_DAY, ratio=Decimal(2))
FLOWS = (
    CashFlow(id="20240220000000000::csd", ts=datetime(2024, 2, 20, 15, tzinfo=UTC), amount=Decimal(25000),
             type="CSD", category=Category.EXTERNAL, description="deposit"),
    CashFlow(id="20240229000000000::div", ts=datetime(2024, 2, 29, 15, tzinfo=UTC), amount=Decimal("12.5"),
             type="DIV", category=Category.INCOME, description="Cash DIV"),
)


def _positions(aapl: int) -> tuple[BrokerPosition, ...]:
    return (BrokerPosition(symbol="AAPL", qty=Decimal(aapl), avg_entry_price=Decimal(100)),
            BrokerPosition(symbol="MSFT", qty=Decimal(20), avg_entry_price=Decimal("150.3")))


def _fills(fills: tuple[Fill, ...], after: int, upto: int) -> Event:
    return ("fills.demo", FillsPage(account="demo", fills=fills, complete_after_ns=after, complete_to_ns=upto,
                                    is_from_floor=after <= FLOOR))


def _corporate(actions: tuple[CorporateAction, ...], after: int, upto: int) -> Event:
    return ("fills.demo", CorporateActionsPage(account="demo", actions=actions, complete_after_ns=after,
                                               complete_to_ns=upto, is_from_floor=after <= FLOOR))


SNAPSHOT_PUBLISHER: tuple[Event, ...] = (
    ("orders.demo", OrdersPage(account="demo", orders=(ENTRY, EXIT, MSFT), is_backfill=True)),
    _fills(HISTORY_FILLS, FLOOR, T0 + NS_PER_SECOND),
    _corporate((SPLIT,), FLOOR, T0 + NS_PER_SECOND),
    # the full snapshot's reads, from the cursors
    _fills((), T0 - 3 * NS_PER_DAY - 5 * NS_PER_SECOND, SNAPSHOT_AT + 2 * NS_PER_SECOND),
    _corporate((), SPLIT.ts - 7 * NS_PER_DAY, SNAPSHOT_AT + 2 * NS_PER_SECOND),
    ("snap.demo", SnapshotTaken(account="demo", taken_at=SNAPSHOT_AT, positions=_positions(60))),
)
STREAM: Event = ("trade.demo", OrderUpdated(account="demo", event="fill", order=LATE, fill=LATE_FILL))
CASH: Event = ("cash.demo", ActivitiesPage(account="demo", activities=(), cash_flows=FLOWS))
# What state's start brings however late it subscribed: a rewound full snapshot, the activities re-sent.
AFTER_START: tuple[Event, ...] = (
    ("orders.demo", OrdersPage(account="demo", orders=(ENTRY, EXIT, MSFT, LATE))),
    _fills((*HISTORY_FILLS, LATE_FILL), FLOOR, RESYNC_AT + 2 * NS_PER_SECOND),
    _corporate((SPLIT,), FLOOR, RESYNC_AT + 2 * NS_PER_SECOND),
    ("snap.demo", SnapshotTaken(account="demo", taken_at=RESYNC_AT, positions=_positions(65))),
    CASH,
)


def _interleavings() -> list[tuple[Event, ...]]:
    """Every merge of the three publishers' sequences that keeps each one's own order."""
    size = len(SNAPSHOT_PUBLISHER) + 2
    merged = []
    for stream_at, cash_at in itertools.permutations(range(size), 2):
        rest = iter(SNAPSHOT_PUBLISHER)
        merged.append(tuple(STREAM if i == stream_at else CASH if i == cash_at else next(rest) for i in range(size)))
    return merged


Tables = tuple[list[Any], list[Any], list[Any], list[Any]]


def _tables(driver: Driver) -> Tables:
    """The rows as stored: open rows, closed slices, cash flows and reconciliation fills."""
    flows: dict[str, CashFlow] = {}
    recon: list[Any] = []
    for change in Driver.changes(driver.plans):
        if isinstance(change, ch.CashFlows):
            flows.update({flow.id: flow for flow in change.rows})
            for flow_id in change.deletes:
                flows.pop(flow_id, None)
        elif isinstance(change, ch.Reconciliations):
            recon += list(change.rows)
    return (sorted(driver.store.open.items()), sorted(driver.store.closed.items()), sorted(flows.items()), recon)


def _run(events: tuple[Event, ...]) -> Driver:
    driver = Driver()
    for event in events:
        driver.feed(event)
    return driver


ORDERED = _run((*SNAPSHOT_PUBLISHER, STREAM, CASH, *AFTER_START))


def test_the_ordered_start_books_the_history_without_reconciliation() -> None:
    aapl = [row for row in ORDERED.store.open.values() if row["symbol"] == "AAPL"]
    msft = [row for row in ORDERED.store.open.values() if row["symbol"] == "MSFT"]

    assert sorted(Decimal(str(row["qty"])) for row in aapl) == [Decimal(5), Decimal(60)]
    assert [row["qty"] for row in msft] == [Decimal(20)]  # 10 bought in two fills, split 2-for-1
    assert [row["qty"] for row in ORDERED.store.closed.values()] == [Decimal(40)]
    assert len(_tables(ORDERED)[2]) == 2
    assert ORDERED.mirror.counters["recon_corrections"] == 0


@pytest.mark.parametrize("lost", [0, 1, 3, 5, 7])
def test_every_interleaving_and_late_subscription_ends_in_the_rows_of_the_ordered_start(lost: int) -> None:
    """``lost``: how many of the first messages `state` missed by subscribing late."""
    expected = _tables(ORDERED)
    for events in _interleavings():
        driver = _run((*events[lost:], *AFTER_START))
        order = [type(event[1]).__name__ for event in events[lost:] if isinstance(event, tuple)]
        assert _tables(driver) == expected, order
        assert driver.mirror.counters["recon_corrections"] == 0

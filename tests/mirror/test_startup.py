"""Start-up on an account with history: absence is not evidence (docs/startup.md).

The mirror alone (no database): a snapshot row that could not be read keeps its symbol's lots
(unknown, never flat) and heals on the next good snapshot.

Positions follow Alpaca's position object (docs.alpaca.markets/reference/getallopenpositions;
``broker/convert.py`` turns it into ``BrokerPosition``); orders and fills are domain values.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.types import NS_PER_SECOND, BrokerPosition, Fill
from coldharbour.errors import ChmgrError
from coldharbour.messages import (
    CorporateActionsPage,
    FillsPage,
    LedgerCheckRequested,
    OrdersPage,
    OrderUpdated,
    ResyncRequested,
    SnapshotTaken,
)
from coldharbour.mirror import Event
from coldharbour.mirror.owner import LEDGER_CHECK_IDLE_EVERY, History
from tests.mirror.support import T0, DictStore, Driver, Store, fill, order


def _bought(driver: Driver, qty: int = 10, price: int = 100, name: str = "A", symbol: str = "AAPL") -> None:
    entry = order(name, qty=Decimal(qty), filled_qty=Decimal(qty), symbol=symbol)
    driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=entry,
                                            fill=fill(name, qty=qty, price=price, symbol=symbol))))


def _position(symbol: str, qty: int, avg: str = "100") -> BrokerPosition:
    return BrokerPosition(symbol=symbol, qty=Decimal(qty), avg_entry_price=Decimal(avg), current_price=Decimal(101))


def test_a_position_the_snapshot_could_not_read_keeps_its_lots_and_heals() -> None:
    driver = Driver()
    _bought(driver)
    _bought(driver, name="M", symbol="MSFT", qty=4)
    lots_before = sorted(driver.store.open)

    unreadable = SnapshotTaken(account="demo", positions=(_position("MSFT", 4),), unknown_symbols=("AAPL",),
                               taken_at=T0 + 100)
    driver.feed(("snap.demo", unreadable))

    assert sorted(driver.store.open) == lots_before  # AAPL is unknown, not flat: nothing closed
    assert driver.store.closed == {}
    assert driver.mirror.counters["recon_corrections"] == 0
    assert driver.mirror.counters["positions_unknown_demo"] == 1

    good = SnapshotTaken(account="demo", positions=(_position("AAPL", 10), _position("MSFT", 4)), taken_at=T0 + 200)
    driver.feed(("snap.demo", good))

    assert sorted(driver.store.open) == lots_before
    assert driver.store.closed == {}
    assert driver.mirror.counters["recon_corrections"] == 0
    assert driver.mirror.counters["positions_unknown_demo"] == 0
    assert driver.mirror.accounts["demo"].wac["AAPL"] == Decimal(100)


def test_a_partial_snapshot_leaves_an_unreadable_symbols_wac_alone() -> None:
    driver = Driver()
    _bought(driver)
    driver.feed(("snap.demo", SnapshotTaken(account="demo", positions=(_position("AAPL", 10, "100.5"),),
                                            symbols=("AAPL",), taken_at=T0 + 100)))

    driver.feed(("snap.demo", SnapshotTaken(account="demo", positions=(), symbols=("AAPL",),
                                            unknown_symbols=("AAPL",), taken_at=T0 + 200)))

    assert driver.mirror.accounts["demo"].wac["AAPL"] == Decimal("100.5")  # not "flat", not forgotten
    assert driver.mirror.counters["positions_unknown_demo"] == 1
    assert len(driver.store.open) == 1


def _history(*fills: Fill, after: int = 0, upto: int, from_floor: bool = True) -> tuple[Event, Event]:
    """The last pages of a fill and a corporate read (``broker/sync.py``): fills, and how far both are complete."""
    return (("fills.demo", FillsPage(account="demo", fills=fills, complete_after_ns=after, complete_to_ns=upto,
                                     is_from_floor=from_floor)),
            ("fills.demo", CorporateActionsPage(account="demo", actions=(), complete_after_ns=after,
                                                complete_to_ns=upto, is_from_floor=from_floor)))


def test_a_snapshot_before_the_fill_history_books_nothing_and_the_history_does_not_double() -> None:
    """The issue's first bug: `state` reconciled a snapshot before the backfill's fills arrived,
    booked ``recon:`` lots for the whole holding, and the real fills then doubled it."""
    driver = Driver()
    snapshot = SnapshotTaken(account="demo", positions=(_position("AAPL", 100),), taken_at=T0 + 100)
    entry = order("H", qty=Decimal(100), filled_qty=Decimal(100), created_at=T0 - 50, updated_at=T0 - 50)

    driver.feed(("snap.demo", snapshot))  # no history yet: absence of fills is not "no position"
    before = dict(driver.store.open)
    driver.feed(("orders.demo", OrdersPage(account="demo", orders=(entry,))),
                *_history(fill("H", qty=100, at=T0 - 50), upto=T0 + 250))
    driver.feed(("snap.demo", SnapshotTaken(account="demo", positions=(_position("AAPL", 100),), taken_at=T0 + 200)))

    assert before == {}
    assert driver.mirror.counters["recon_deferred_incomplete"] == 1
    assert driver.mirror.counters["recon_corrections"] == 0
    assert [row["qty"] for row in driver.store.open.values()] == [Decimal(100)]
    assert not [pid for pid in driver.store.open if pid.startswith("recon:")]


def test_a_read_that_does_not_join_the_complete_history_defers_reconciliation_until_a_read_from_the_floor() -> None:
    driver = Driver()
    driver.feed(*_history(upto=T0 + 100))
    driver.feed(("snap.demo", SnapshotTaken(account="demo", positions=(_position("MSFT", 4),), taken_at=T0 + 300)))
    deferred_after_gap = driver.mirror.counters["recon_deferred_incomplete"]  # complete to T0+100 only

    driver.feed(*_history(after=T0 + 200, upto=T0 + 400, from_floor=False))  # T0+100..T0+200 never received
    driver.feed(("snap.demo", SnapshotTaken(account="demo", positions=(_position("MSFT", 4),), taken_at=T0 + 300)))
    still = driver.mirror.counters["recon_deferred_incomplete"]
    driver.feed(*_history(upto=T0 + 500))
    driver.feed(("snap.demo", SnapshotTaken(account="demo", positions=(_position("MSFT", 4),), taken_at=T0 + 450)))

    assert (deferred_after_gap, still) == (1, 2)
    assert driver.mirror.counters["fills_coverage_gaps"] == 1
    assert driver.mirror.counters["recon_corrections"] == 1  # only now: a lot the history cannot explain


class HistoryStore(DictStore):
    """A store whose stored history is what the test says (the ledger check reads it)."""

    def __init__(self, history: History) -> None:
        super().__init__(Store())
        self.history = history

    async def load_history(self, slug: str) -> History | None:
        await super().load_history(slug)
        return self.history


def _checked_driver(history: History) -> Driver:
    driver = Driver()
    driver.database = driver.owner.store = HistoryStore(history)
    return driver


def _check() -> tuple[str, LedgerCheckRequested]:
    return ("cmd.ledger_check.demo", LedgerCheckRequested(account="demo"))


def test_corporate_legs_stored_before_the_action_is_booked_do_not_stop_state() -> None:
    """The issue's crash: `cashflows` stored a split's activity rows (from which the stored history
    derives the action) before `snapshot`'s page booked it; the ledger check in between exited."""
    entry = order("A", qty=Decimal(10), filled_qty=Decimal(10))
    bought = fill("A", qty=10, price=100)
    split = CorporateAction(id="split-1", type="split", symbol="AAPL", ts=T0 + 60 * NS_PER_SECOND, ratio=Decimal(3))
    driver = _checked_driver(([entry], [bought], [split]))
    driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=entry, fill=bought)))

    driver.feed(_check())  # the action is stored (its legs), not booked yet: innocent
    driver.feed(_check())

    assert driver.mirror.counters["ledger_check_actions_pending"] == 2
    assert driver.mirror.counters["ledger_check_suspect"] == 0


def test_a_ledger_difference_is_confirmed_by_a_second_check_before_state_exits() -> None:
    entry = order("A", qty=Decimal(10), filled_qty=Decimal(10))
    bought = fill("A", qty=10, price=100)
    driver = _checked_driver(([entry], [], []))  # the fill's commit "lost"
    driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=entry, fill=bought)))

    driver.feed(_check())
    first = driver.mirror.counters["ledger_check_suspect"]
    resyncs = [m for _, m in driver.outbox.sent if isinstance(m, ResyncRequested) and m.reason == "restart"]

    with pytest.raises(ChmgrError, match="ledger differs from the stored history account=demo"):
        driver.feed(_check())
    assert first == 1
    assert len(resyncs) == 1  # a rewind in between: what was in flight arrives before the second check


class _CountingHistoryStore(HistoryStore):
    def __init__(self, history: History) -> None:
        super().__init__(history)
        self.loads = 0

    async def load_history(self, slug: str) -> History | None:
        self.loads += 1
        return await super().load_history(slug)


def test_a_clean_account_with_no_commit_since_is_checked_only_every_few_requests() -> None:
    entry = order("A", qty=Decimal(10), filled_qty=Decimal(10))
    bought = fill("A", qty=10, price=100)
    driver = Driver()
    store = _CountingHistoryStore(([entry], [bought], []))
    driver.database = driver.owner.store = store
    driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=entry, fill=bought)))

    driver.feed(_check())  # clean
    driver.feed(*[_check() for _ in range(LEDGER_CHECK_IDLE_EVERY - 1)])
    idle = store.loads
    driver.feed(_check())  # the every-N check of an idle account
    every_n = store.loads
    sold = order("B", side="sell", qty=Decimal(4), filled_qty=Decimal(4))
    store.history = ([entry, sold], [bought, fill("B", qty=4, price=101, side="sell")], [])
    driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=sold,
                                            fill=fill("B", qty=4, price=101, side="sell"))))
    driver.feed(_check())  # a commit since: checked at once

    assert idle == 1
    assert every_n == 2
    assert store.loads == 3
    assert driver.mirror.counters["ledger_checks_idle_skipped"] == LEDGER_CHECK_IDLE_EVERY - 1
    assert driver.mirror.counters["ledger_checks"] == LEDGER_CHECK_IDLE_EVERY + 2  # every request answered
    assert driver.mirror.counters["ledger_check_suspect"] == 0


def test_after_a_failed_commit_or_locks_taken_again_an_idle_account_is_checked_at_once() -> None:
    entry = order("A", qty=Decimal(10), filled_qty=Decimal(10))
    bought = fill("A", qty=10, price=100)
    driver = Driver()
    store = _CountingHistoryStore(([entry], [bought], []))
    driver.database = driver.owner.store = store
    driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=entry, fill=bought)))
    driver.feed(_check())  # clean: the next ones are answered from it

    driver.owner.resync_all("locks_retaken")  # the database's sessions ended (a failover)
    driver.feed(_check())

    assert store.loads == 2

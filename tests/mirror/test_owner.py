"""The commit protocol of ``StateOwner.apply``: plan, commit, then swap — and nothing on a failed commit.

A store that fails or withholds on demand stands in for the database (its real side,
``db.store.StateStore``, runs in tests/workers against PostgreSQL). Broker payload shapes: the
orders and fills are domain values, ids UUIDs as Alpaca's are
(https://docs.alpaca.markets/reference/getorderbyorderid).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from decimal import Decimal

from coldharbour.domain import changes as ch
from coldharbour.domain.types import BrokerPosition
from coldharbour.messages import (
    AccountChanged,
    LedgerCheckRequested,
    OrderUpdated,
    ResyncRequested,
    SnapshotTaken,
    topic_state,
)
from coldharbour.mirror import FlushDue
from tests.mirror.support import NOW, T0, DictStore, Driver, Store, bracket, fill, history_complete, of_kind, order


class ScriptedStore(DictStore):
    """Commits into dicts, except the commits listed in ``outcomes`` (by their 0-based number)."""

    def __init__(self, outcomes: dict[int, ch.CommitOutcome]) -> None:
        super().__init__(Store())
        self.outcomes = outcomes
        self.attempts = 0

    async def commit(self, changes: Sequence[ch.Change]) -> ch.CommitOutcome:
        outcome = self.outcomes.get(self.attempts, ch.CommitOutcome.COMMITTED)
        self.attempts += 1
        if outcome is ch.CommitOutcome.COMMITTED:
            return await super().commit(changes)
        return outcome


def _fill_event(name: str = "A") -> tuple[str, OrderUpdated]:
    entry = order(name, filled_qty=Decimal(10))
    execution = str(uuid.uuid5(uuid.NAMESPACE_URL, f"execution-{name}"))
    return ("trade.demo", OrderUpdated(account="demo", event="fill", order=entry, fill=fill(name, execution=execution)))


def _driver(outcomes: dict[int, ch.CommitOutcome]) -> tuple[Driver, ScriptedStore]:
    driver = Driver()
    store = ScriptedStore(outcomes)
    driver.database = store
    driver.owner.store = store
    return driver, store


def test_owner_failed_commit_keeps_memory_drops_the_rest_and_resyncs_every_account() -> None:
    driver, store = _driver({0: ch.CommitOutcome.FAILED})

    plans = driver.feed(_fill_event(), ("cmd.ledger_check.demo", LedgerCheckRequested(account="demo")))

    assert plans == []
    assert driver.mirror.accounts["demo"].ledger.lots == {}
    assert driver.mirror.accounts["demo"].rows == {}
    assert store.checks == []  # the barrier after the failed commit was dropped with the rest
    assert [m for _, m in driver.outbox.sent] == [ResyncRequested(account="demo", reason="commit_failed"),
                                                  ResyncRequested(account="paper_1", reason="commit_failed")]


def test_owner_withheld_commit_keeps_memory_without_a_resync() -> None:
    driver, _ = _driver({0: ch.CommitOutcome.WITHHELD})

    plans = driver.feed(_fill_event())

    assert plans == []
    assert driver.mirror.accounts["demo"].ledger.lots == {}
    assert driver.outbox.sent == []


def test_owner_swaps_after_the_commit_and_a_replay_after_a_failure_books_once() -> None:
    driver, store = _driver({0: ch.CommitOutcome.FAILED})
    driver.feed(_fill_event())

    plans = driver.feed(_fill_event())  # the resync brings the same fill back
    again = driver.feed(_fill_event())

    lots = driver.mirror.accounts["demo"].ledger.lots
    assert [lot.qty for lot in lots.values()] == [Decimal(10)]
    assert len(of_kind(Driver.changes(plans), ch.OpenRows)) == 1
    assert Driver.changes(again) == []  # a replay changes nothing: no commit is even attempted
    assert store.attempts == 2


def test_owner_plans_a_reconciliation_barrier_on_the_memory_the_commit_before_it_swapped_in() -> None:
    driver, store = _driver({})
    snapshot = SnapshotTaken(account="demo", positions=(
        BrokerPosition(symbol="AAPL", qty=Decimal(10), avg_entry_price=Decimal(100)),), taken_at=T0 + 10)

    plans = driver.feed(_fill_event(), ("snap.demo", snapshot))

    assert len(plans) == 2  # the fill's commit, then the reconciliation's
    assert driver.mirror.counters["recon_corrections"] == 0  # it saw the lot the fill opened
    assert Driver.changes(plans[1:]) == []  # and found nothing to correct
    assert store.attempts == 1


def test_owner_flush_barrier_after_a_failed_commit_is_not_planned() -> None:
    driver, store = _driver({0: ch.CommitOutcome.FAILED})

    plans = driver.feed(_fill_event(), FlushDue(), now=NOW)

    assert plans == []
    assert store.attempts == 1


def test_owner_start_commits_in_chunks_and_swaps_only_when_all_committed() -> None:
    source = Driver()
    source.feed(_fill_event("A"), _fill_event("B"))
    restarted, store = _driver({1: ch.CommitOutcome.FAILED})
    account = source.mirror.accounts["demo"]
    restarted.mirror.accounts["demo"].load(account.book.orders(), account.fills.values(), {})

    started = asyncio.run(restarted.owner.start(NOW, chunk_rows=1))

    assert started is False
    assert store.attempts == 2  # the first chunk committed, the second failed: no more sent
    assert restarted.mirror.accounts["demo"].rows == {}


def test_owner_start_swaps_the_converged_rows() -> None:
    source = Driver()
    source.feed(_fill_event("A"))
    restarted, store = _driver({})
    account = source.mirror.accounts["demo"]
    restarted.mirror.accounts["demo"].load(account.book.orders(), account.fills.values(), {})

    started = asyncio.run(restarted.owner.start(NOW, chunk_rows=1))

    assert started is True
    assert set(restarted.mirror.accounts["demo"].rows) == set(account.rows)
    assert set(store.tables.open) == set(account.rows)


def test_owner_announces_what_a_commit_changed_per_account_after_the_commit() -> None:
    driver, _ = _driver({})

    driver.feed(_fill_event())

    changed = [m for topic, m in driver.outbox.sent if topic == topic_state("demo") and isinstance(m, AccountChanged)]
    assert len(changed) == 1
    assert {"open_rows", "orders"} <= set(changed[0].kinds)


def test_owner_announces_nothing_for_a_commit_that_failed_or_a_mark_flush() -> None:
    driver, _ = _driver({0: ch.CommitOutcome.FAILED})
    driver.feed(_fill_event())

    assert not [m for _, m in driver.outbox.sent if isinstance(m, AccountChanged)]
    assert ch.changed_kinds([ch.OpenRows(account="demo", deletes=("p",), announce=False),
                             ch.ClosedSlices(account="demo"),
                             ch.CashFlows(account="paper_1", deletes=("f",))]) == {"paper_1": ("cash_flows",)}


def test_owner_a_snapshot_that_finds_nothing_new_commits_and_announces_nothing() -> None:
    driver = Driver()
    entry, take, stop = bracket("A")
    execution = str(uuid.uuid5(uuid.NAMESPACE_URL, "execution-snapshot"))
    filled = OrderUpdated(account="demo", event="fill", order=entry, fill=fill("A", execution=execution))
    driver.feed(*history_complete(T0), ("trade.demo", filled))
    position = BrokerPosition(symbol="AAPL", qty=Decimal(10), avg_entry_price=Decimal(100))
    snapshot = SnapshotTaken(account="demo", taken_at=NOW, positions=(position,), open_orders=(take, stop),
                             cash=Decimal(1000))
    first = driver.feed(("snap.demo", snapshot))
    sent = len(driver.outbox.sent)

    again = [driver.feed(("snap.demo", snapshot), now=NOW + i) for i in (1, 2)]

    assert driver.changes(first)  # the first one wrote the legs' raw orders
    assert [driver.changes(plans) for plans in again] == [[], []]
    assert not [m for _, m in driver.outbox.sent[sent:] if isinstance(m, AccountChanged)]

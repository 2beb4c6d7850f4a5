"""Start-up on an account with history: absence is not evidence (docs/startup.md).

The mirror alone (no database): a snapshot row that could not be read keeps its symbol's lots
(unknown, never flat) and heals on the next good snapshot.

Positions follow Alpaca's position object (docs.alpaca.markets/reference/getallopenpositions;
``broker/convert.py`` turns it into ``BrokerPosition``); orders and fills are domain values.
"""

from __future__ import annotations

from decimal import Decimal

from coldharbour.domain.types import BrokerPosition
from coldharbour.messages import OrderUpdated, SnapshotTaken
from tests.mirror.support import T0, Driver, fill, order


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

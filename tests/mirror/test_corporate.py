"""Corporate actions, busts and late fills through the mirror (docs/spec.md §8), without PostgreSQL.

Broker payloads: the corporate-action legs are Alpaca NonTradeActivity objects
(https://docs.alpaca.markets/us/docs/account-activities.md: ``id`` ``<NY stamp>::<uuid>``,
``activity_type``, ``date``, ``net_amount``, ``symbol``, ``qty``, ``price``, ``status``); the
SPLIT pair carries the old shares out and the new shares in, as the docs' "Split: 2 for 1"
sample. A bust is the same execution's TradeActivity ``FILL`` read again with ``status``
``canceled``. Each goes through ``broker.convert`` and ``corporate.actions_from_legs`` exactly as
``snapshot`` does, then through ``Mirror.plans`` as ``state`` feeds it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from coldharbour.broker.convert import ConvertedActivity, convert_activity
from coldharbour.domain import changes as ch
from coldharbour.domain.corporate import actions_from_legs, allocate_spinoff, corporate_legs, with_bases
from coldharbour.domain.ledger import rebuild
from coldharbour.domain.types import NS_PER_SECOND, BrokerPosition
from coldharbour.messages import CorporateActionsPage, FillsPage, OrdersPage, SnapshotTaken, SpinoffBasisSet
from tests.mirror.support import NOW, T0, Driver, fill, of_kind, oid, order

ACTION_AT = T0 + 1800 * NS_PER_SECOND  # 10:30 New York = the stamp below
STAMP = "20240301103000000"
STAMP_2 = "20240301110000000"  # 11:00 New York: a second action half an hour later
LATER = NOW + 3600 * NS_PER_SECOND


def _leg(code: str, n: int, *, symbol: str, qty: str, price: str | None = None, net: str = "0",
         stamp: str = STAMP) -> dict[str, Any]:
    """One NonTradeActivity leg (account-activities page shape)."""
    leg = {"id": f"{stamp}::5f596936-6f23-4cef-bdf1-3806aae5{n:04d}", "activity_type": code, "date": "2024-03-01",
           "net_amount": net, "symbol": symbol, "qty": qty, "description": f"{code} sample", "status": "executed"}
    if price is not None:
        leg["price"] = price
    return leg


def _page(*legs: dict[str, Any]) -> tuple[str, CorporateActionsPage]:
    """The page ``snapshot`` publishes for these legs (same conversion and pairing)."""
    records = []
    for leg in legs:
        converted = convert_activity(leg, now_ns=LATER)
        assert isinstance(converted, ConvertedActivity), converted
        records.append(converted.record)
    actions, problems = actions_from_legs(corporate_legs(records))
    assert problems == []
    return "fills.demo", CorporateActionsPage(account="demo", actions=tuple(actions), activities=tuple(records))


def _held(driver: Driver, qty: int = 10, price: int = 100, symbol: str = "AAPL") -> None:
    driver.feed(("orders.demo", OrdersPage(account="demo", orders=(order("A", symbol=symbol, qty=Decimal(qty)),))),
                ("fills.demo", FillsPage(account="demo", fills=(fill("A", qty=qty, price=price, symbol=symbol),))))


def _open(driver: Driver) -> dict[str, tuple[object, ...]]:
    return {pid: (row["symbol"], row["qty"], row["avg_fill"], row["buy_value"])
            for pid, row in driver.store.open.items()}


def test_split_two_for_one_doubles_the_lot_halves_its_price_keeps_its_cost_and_closes_nothing() -> None:
    driver = Driver()
    _held(driver)

    plans = driver.feed(_page(_leg("SPLIT", 1, symbol="AAPL", qty="-10", price="100"),
                              _leg("SPLIT", 2, symbol="AAPL", qty="20", price="50")))
    changes = Driver.changes(plans)

    assert _open(driver) == {oid("A"): ("AAPL", Decimal(20), Decimal(50), Decimal(1000))}
    assert driver.store.closed == {}
    [legs] = of_kind(changes, ch.RawActivities)
    assert sorted(leg.activity_type for leg in legs.rows) == ["SPLIT", "SPLIT"]
    assert driver.mirror.counters["corporate_actions_booked"] == 1
    replay = driver.feed(_page(_leg("SPLIT", 1, symbol="AAPL", qty="-10", price="100"),
                               _leg("SPLIT", 2, symbol="AAPL", qty="20", price="50")))
    assert not of_kind(Driver.changes(replay), ch.OpenRows)


def test_reverse_split_one_for_ten_books_no_synthetic_sell_and_no_pnl() -> None:
    driver = Driver()
    _held(driver)

    driver.feed(_page(_leg("SPLIT", 1, symbol="AAPL", qty="-10", price="100"),
                      _leg("SPLIT", 2, symbol="AAPL", qty="1", price="1000")))

    assert _open(driver) == {oid("A"): ("AAPL", Decimal(1), Decimal(1000), Decimal(1000))}
    assert driver.store.closed == {}


def test_symbol_change_moves_the_lot_with_its_basis() -> None:
    driver = Driver()
    _held(driver, qty=10, price=100, symbol="FB")

    driver.feed(_page(_leg("SC", 1, symbol="FB", qty="-10"), _leg("SC", 2, symbol="META", qty="10")))

    assert _open(driver) == {oid("A"): ("META", Decimal(10), Decimal(100), Decimal(1000))}
    assert driver.mirror.accounts["demo"].ledger.net("FB") == 0
    assert driver.store.closed == {}


def test_cash_merger_closes_the_lot_as_corporate_with_its_pnl() -> None:
    driver = Driver()
    _held(driver, qty=10, price=20)

    driver.feed(_page(_leg("MA", 1, symbol="AAPL", qty="-10", net="250")))

    assert driver.store.open == {}
    [closed] = driver.store.closed.values()
    assert (closed["exit_type"], closed["qty"], closed["exit_price"], closed["pnl_cash"]) == (
        "CORPORATE", Decimal(10), Decimal(25), Decimal(50))


def test_a_snapshot_after_a_split_needs_no_reconciliation_and_one_before_it_is_not_undone() -> None:
    driver = Driver()
    _held(driver)
    driver.feed(_page(_leg("SPLIT", 1, symbol="AAPL", qty="-10", price="100"),
                      _leg("SPLIT", 2, symbol="AAPL", qty="20", price="50")))

    before = SnapshotTaken(account="demo", taken_at=ACTION_AT - NS_PER_SECOND, positions=(
        BrokerPosition(symbol="AAPL", qty=Decimal(10), avg_entry_price=Decimal(100)),))
    after = SnapshotTaken(account="demo", taken_at=ACTION_AT + NS_PER_SECOND, positions=(
        BrokerPosition(symbol="AAPL", qty=Decimal(20), avg_entry_price=Decimal(50)),))
    driver.feed(("snap.demo", before))
    driver.feed(("snap.demo", after))

    assert driver.mirror.counters["recon_corrections"] == 0
    assert _open(driver) == {oid("A"): ("AAPL", Decimal(20), Decimal(50), Decimal(1000))}


def test_a_fill_older_than_a_booked_split_is_booked_in_pre_split_shares() -> None:
    driver = Driver()
    _held(driver)
    driver.feed(_page(_leg("SPLIT", 1, symbol="AAPL", qty="-10", price="100"),
                      _leg("SPLIT", 2, symbol="AAPL", qty="20", price="50")))

    driver.feed(("orders.demo", OrdersPage(account="demo", orders=(order("S", side="sell", qty=Decimal(4)),))),
                ("fills.demo", FillsPage(account="demo", fills=(
                    fill("S", qty=4, price=110, side="sell", at=T0 + 60 * NS_PER_SECOND),))))

    assert _open(driver) == {oid("A"): ("AAPL", Decimal(12), Decimal(50), Decimal(600))}
    [closed] = driver.store.closed.values()
    assert (closed["qty"], closed["pnl_cash"]) == (Decimal(8), Decimal(40))  # 4·(110−100), in split terms


def _fill_activity(name: str, *, qty: str, price: str, status: str, n: int) -> dict[str, Any]:
    """A TradeActivity FILL (account-activities page shape)."""
    return {"id": f"20240301100000000::7c0a3c1e-0000-4000-8000-00000000{n:04d}", "activity_type": "FILL",
            "transaction_time": "2024-03-01T15:00:00Z", "type": "fill", "price": price, "qty": qty,
            "side": "buy", "symbol": "AAPL", "leaves_qty": "0", "order_id": oid(name), "cum_qty": qty,
            "order_status": "filled", "status": status}


def test_busted_fill_is_reversed_and_never_booked_again() -> None:
    driver = Driver()
    driver.feed(("orders.demo", OrdersPage(account="demo", orders=(order("A"), order("B", qty=Decimal(5))))))
    first = convert_activity(_fill_activity("A", qty="10", price="100", status="executed", n=1), now_ns=LATER)
    good = convert_activity(_fill_activity("B", qty="5", price="102", status="executed", n=2), now_ns=LATER)
    bust = convert_activity(_fill_activity("B", qty="5", price="102", status="canceled", n=2), now_ns=LATER)
    assert isinstance(first, ConvertedActivity)
    assert isinstance(good, ConvertedActivity)
    assert isinstance(bust, ConvertedActivity)
    assert bust.busted is not None
    assert bust.fill is None
    driver.feed(("fills.demo", FillsPage(account="demo", fills=(first.fill, good.fill),  # type: ignore[arg-type]
                                         activities=(first.record, good.record))))
    assert set(driver.store.open) == {oid("A"), oid("B")}

    plans = driver.feed(("fills.demo", FillsPage(account="demo", fills=(), activities=(bust.record,),
                                                 busted=(bust.busted,))))
    again = driver.feed(("fills.demo", FillsPage(account="demo", fills=(good.fill,),  # type: ignore[arg-type]
                                                 activities=(good.record,))))

    assert set(driver.store.open) == {oid("A")}
    [raw] = of_kind(Driver.changes(plans), ch.RawActivities)
    assert '"canceled"' in raw.rows[0].raw_json
    assert not of_kind(Driver.changes(again), ch.OpenRows)
    account = driver.mirror.accounts["demo"]
    assert account.ledger.net("AAPL") == 10
    assert account.check(account.book.orders(), [f for f in account.fills.values() if f.order_id != oid("B")]) == []


def test_reload_with_stored_actions_and_busts_equals_the_live_ledger() -> None:
    driver = Driver()
    _held(driver)
    page = _page(_leg("SPLIT", 1, symbol="AAPL", qty="-10", price="100"),
                 _leg("SPLIT", 2, symbol="AAPL", qty="20", price="50"))
    driver.feed(page)
    live = driver.mirror.accounts["demo"]

    other = Driver()
    account = other.mirror.accounts["demo"]
    account.load(live.book.orders(), live.fills.values(), dict(live.rows), actions=page[1].actions)

    assert account.ledger.lots == live.ledger.lots
    assert account.ledger.lots == rebuild(live.book.orders(), live.fills.values(), page[1].actions).lots


def test_ledger_check_rebuilds_with_the_stored_actions() -> None:
    driver = Driver()
    _held(driver)
    page = _page(_leg("SPLIT", 1, symbol="AAPL", qty="-10", price="100"),
                 _leg("SPLIT", 2, symbol="AAPL", qty="20", price="50"))
    driver.feed(page)
    account = driver.mirror.accounts["demo"]
    orders, fills = account.book.orders(), list(account.fills.values())

    assert driver.mirror.check_ledger("demo", orders, fills, page[1].actions) == []
    assert driver.mirror.check_ledger("demo", orders, fills, ()) != []  # without them the split is undone
    assert driver.mirror.counters["ledger_mismatches"] > 0


def test_cash_merger_leg_is_never_paired_with_a_stock_merger_booked_within_the_window() -> None:
    """The snapshot re-reads a week of legs: a cash merger's MA leg and, 24 s later, a stock
    merger's MA pair with cash in lieu must stay two actions (found on the whole stack)."""
    records = []
    for leg in (_leg("MA", 1, symbol="TWTR", qty="-10", net="542"), _leg("MA", 2, symbol="ATVI", qty="-10", price="40"),
                _leg("MA", 3, symbol="MSFX", qty="2.5", price="160"),
                _leg("CIL", 4, symbol="MSFX", qty="-0.5", price="160", net="80")):
        converted = convert_activity(leg, now_ns=LATER)
        assert isinstance(converted, ConvertedActivity)
        records.append(converted.record)

    actions, problems = actions_from_legs(corporate_legs(records))

    assert problems == []
    assert sorted((a.type, a.symbol, a.new_symbol, a.ratio, a.cash_in_lieu_qty) for a in actions) == [
        ("cash_merger", "TWTR", None, Decimal(1), Decimal(0)),
        ("stock_merger", "ATVI", "MSFX", Decimal("0.25"), Decimal("0.5"))]


def test_split_after_a_symbol_change_rebuilds_from_the_fills_of_the_old_symbol() -> None:
    driver = Driver()
    _held(driver, qty=5, price=200, symbol="FB")
    driver.feed(_page(_leg("SC", 1, symbol="FB", qty="-5"), _leg("SC", 2, symbol="META", qty="5")))

    driver.feed(_page(_leg("SPLIT", 3, symbol="META", qty="-5", price="200", stamp=STAMP_2),
                      _leg("SPLIT", 4, symbol="META", qty="10", price="100", stamp=STAMP_2)))

    assert _open(driver) == {oid("A"): ("META", Decimal(10), Decimal(100), Decimal(1000))}


def test_a_split_canceled_and_rebooked_is_applied_once_and_the_reload_agrees() -> None:
    """Alpaca corrects an action by canceling its legs (``status`` ``canceled``, the same ids)
    and booking new ones: the first split is removed from the history and the symbol rebuilt,
    then the re-booked one is applied; a reload from the stored legs books the same ledger."""
    driver = Driver()
    _held(driver)
    wrong = (_leg("SPLIT", 1, symbol="AAPL", qty="-10", price="100"),
             _leg("SPLIT", 2, symbol="AAPL", qty="30", price="33.333333333"))
    driver.feed(_page(*wrong))
    first_id = driver.mirror.accounts["demo"].actions.copy().popitem()[0]
    canceled = [{**leg, "status": "canceled"} for leg in wrong]
    right = (_leg("SPLIT", 3, symbol="AAPL", qty="-10", price="100", stamp=STAMP_2),
             _leg("SPLIT", 4, symbol="AAPL", qty="20", price="50", stamp=STAMP_2))
    topic, page = _page(*canceled, *right)

    driver.feed((topic, msgspec.structs.replace(page, canceled=(first_id,))))

    account = driver.mirror.accounts["demo"]
    assert _open(driver) == {oid("A"): ("AAPL", Decimal(20), Decimal(50), Decimal(1000))}
    assert driver.store.closed == {}
    assert list(account.actions) == [page.actions[0].id]
    assert driver.mirror.counters["corporate_actions_canceled"] == 1
    stored = corporate_legs([msgspec.structs.replace(r, status=None) for r in page.activities])  # as loaded
    assert [a.id for a in actions_from_legs(stored)[0]] == list(account.actions)
    assert rebuild(account.book.orders(), account.fills.values(), account.actions.values()).lots == account.ledger.lots


def _spin_page(share: str) -> tuple[tuple[str, CorporateActionsPage], list[Any]]:
    """A real SPIN leg (priced 0: no basis stated) and the page ``snapshot`` publishes once it
    allocated it by the announcement (the parent AAPL keeps ``share`` of its basis)."""
    records = []
    for leg in (_leg("SPIN", 1, symbol="KID", qty="2", price="0"),):
        converted = convert_activity(leg, now_ns=LATER)
        assert isinstance(converted, ConvertedActivity), converted
        records.append(converted.record)
    [action], _ = actions_from_legs(corporate_legs(records))
    allocated = allocate_spinoff(action, "AAPL", Decimal(share))
    page = CorporateActionsPage(account="demo", actions=(allocated,), activities=tuple(records))
    return ("fills.demo", page), records


def test_spinoff_allocated_splits_the_parent_basis_is_stored_and_an_override_rebooks_it() -> None:
    driver = Driver()
    _held(driver)
    page, records = _spin_page("0.8")

    first = Driver.changes(driver.feed(page))
    basis = of_kind(first, ch.SpinoffBases)
    override = Driver.changes(driver.feed(
        ("cmd.spinoff_basis.demo", SpinoffBasisSet(account="demo", action_id=records[0].id,
                                                   parent_share=Decimal("0.5")))))
    refused = Driver.changes(driver.feed(
        ("cmd.spinoff_basis.demo", SpinoffBasisSet(account="demo", action_id="nope", parent_share=Decimal("0.5")))))

    assert [(b.parent, b.parent_share, b.source) for [b] in (x.rows for x in basis)] == [("AAPL", Decimal("0.8"),
                                                                                          "default")]
    [stored] = [b for x in of_kind(override, ch.SpinoffBases) for b in x.rows]
    assert (stored.action_id, stored.parent, stored.parent_share, stored.source) == (
        records[0].id, "AAPL", Decimal("0.5"), "override")
    rows = sorted(_open(driver).values(), key=lambda row: str(row[0]))
    assert [(symbol, qty, value) for symbol, qty, _, value in rows] == [
        ("AAPL", Decimal(10), Decimal(500)), ("KID", Decimal(2), Decimal(500))]
    assert driver.store.closed == {}
    assert refused == []
    assert driver.mirror.counters["spinoff_basis_refused"] == 1
    # a reload derives the action from the stored leg and applies the stored allocation: same ledger
    account = driver.mirror.accounts["demo"]
    reloaded = with_bases(actions_from_legs(corporate_legs(records))[0], [stored])
    assert account.check(account.book.orders(), list(account.fills.values()), reloaded) == []
    assert account.check(account.book.orders(), list(account.fills.values()),
                         actions_from_legs(corporate_legs(records))[0]) != []

"""The mirror without PostgreSQL: every message type it handles, event in → typed changes out."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from coldharbour.db import rows as r
from coldharbour.domain import changes as ch
from coldharbour.domain.cashflows import CashFlow, Category
from coldharbour.domain.equity import DailyRow, IntradayPoint
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.schedule import Session
from coldharbour.domain.types import NS_PER_SECOND, BrokerPosition, to_datetime
from coldharbour.messages import (
    ActivitiesPage,
    EquityComputed,
    FillsPage,
    LedgerCheckRequested,
    MetricsComputed,
    OrdersPage,
    OrderUpdated,
    ResyncRequested,
    ScheduleComputed,
    SnapshotTaken,
    Tick,
    TickBatch,
)
from coldharbour.mirror import FlushDue, GapDetected, HeartbeatDue, LedgerCheck
from coldharbour.mirror.marks import IDLE_TTL_NS
from tests.mirror.support import NOW, T0, Driver, bracket, fill, history_complete, of_kind, oid, order

AT = datetime(2024, 3, 1, 15, tzinfo=UTC)


def _bought(driver: Driver, qty: int = 10, price: int = 100, name: str = "A") -> None:
    entry = order(name, qty=Decimal(qty), filled_qty=Decimal(qty))
    driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=entry,
                                            fill=fill(name, qty=qty, price=price))))


def test_order_update_with_fill_writes_raw_rows_a_lot_and_asks_for_the_broker_wac() -> None:
    driver = Driver()
    entry = order("A", filled_qty=Decimal(10), filled_avg_price=Decimal(100))

    plans = driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=entry,
                                                    fill=fill("A", execution="6b7a3c1e-0000-4000-8000-000000000001"))))
    changes = Driver.changes(plans)
    replay = driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=entry,
                                                     fill=fill("A", execution="6b7a3c1e-0000-4000-8000-000000000001"))))

    [orders] = of_kind(changes, ch.RawOrders)
    [fills] = of_kind(changes, ch.RawActivities)
    [rows] = of_kind(changes, ch.OpenRows)
    assert [version.id for version, _ in orders.rows] == [entry.id]
    assert fills.by_execution
    assert fills.rows[0].execution_id == "6b7a3c1e-0000-4000-8000-000000000001"
    [row] = rows.upserts
    assert (row.parent_id, row.qty, rows.deletes, rows.announce) == (entry.id, Decimal(10), (), True)
    assert Driver.messages(plans) == [ResyncRequested(account="demo", reason="fill", symbols=("AAPL",))]
    assert Driver.changes(replay) == []


def test_orders_page_writes_raw_orders_and_rows_for_new_legs() -> None:
    driver = Driver()
    entry, take, stop = bracket("A")
    driver.feed(("fills.demo", FillsPage(account="demo", fills=(fill("A"),))))

    plans = driver.feed(("orders.demo", OrdersPage(account="demo", orders=(entry, take, stop))))
    changes = Driver.changes(plans)

    [orders] = of_kind(changes, ch.RawOrders)
    [rows] = of_kind(changes, ch.OpenRows)
    assert {version.id for version, _ in orders.rows} == {entry.id, take.id, stop.id}
    stored = dict(zip(r.POSITION_COLUMNS, r.open_row_values(rows.upserts[0]), strict=True))
    assert (stored["tp_child"], stored["tp_px"], stored["sl_child"], stored["sl_px"]) == (
        take.id, Decimal(110), stop.id, Decimal(95))


def test_fills_page_books_lots_and_closed_slices_announced_when_final() -> None:
    driver = Driver()
    driver.feed(("orders.demo", OrdersPage(account="demo", orders=(order("A"), order("S", side="sell")))))

    plans = driver.feed(("fills.demo", FillsPage(account="demo", fills=(
        fill("A", qty=10, price=100), fill("S", qty=10, price=110, side="sell", at=T0 + NS_PER_SECOND)))))
    changes = Driver.changes(plans)

    [slices] = of_kind(changes, ch.ClosedSlices)
    assert [(s.entry_lot_id, s.exit_order_id, s.pnl_cash) for s in slices.upserts] == [
        (oid("A"), oid("S"), Decimal(100))]
    assert slices.announce == (ch.Announce.IF_CHANGED,)
    assert of_kind(changes, ch.OpenRows) == []  # opened and closed in one batch: no row ever existed
    assert Driver.messages(plans) == []  # history pages are not stream fills: no WAC resync


def test_slice_written_while_its_lot_was_open_is_announced_once_when_the_lot_closes() -> None:
    """Buy 10, buy 5, sell 12, sell 3: the first sell's slice of lot B becomes final with the second sell."""
    driver = Driver()
    orders = (order("A"), order("B", qty=Decimal(5)), order("S1", side="sell", qty=Decimal(12)),
              order("S2", side="sell", qty=Decimal(3)))
    driver.feed(("orders.demo", OrdersPage(account="demo", orders=orders)))
    driver.feed(("fills.demo", FillsPage(account="demo", fills=(
        fill("A", qty=10), fill("B", qty=5, at=T0 + 1000), fill("S1", qty=12, price=110, side="sell", at=T0 + 2000)))))
    first = {found.key: flag for c in of_kind(Driver.changes(driver.plans), ch.ClosedSlices)
             for found, flag in zip(c.upserts, c.announce, strict=True)}

    plans = driver.feed(("fills.demo", FillsPage(account="demo", fills=(
        fill("S2", qty=3, price=120, side="sell", at=T0 + 3000),))))
    [slices] = of_kind(Driver.changes(plans), ch.ClosedSlices)
    later = {found.key: flag for found, flag in zip(slices.upserts, slices.announce, strict=True)}

    assert first == {(oid("A"), oid("S1")): ch.Announce.IF_CHANGED, (oid("B"), oid("S1")): ch.Announce.NEVER}
    assert later == {(oid("B"), oid("S1")): ch.Announce.ALWAYS, (oid("B"), oid("S2")): ch.Announce.IF_CHANGED}


def test_activities_page_writes_raw_activities_and_cash_flows() -> None:
    driver = Driver()
    dividend = ActivityRecord(id="20240301000000000::div-1", activity_type="DIV", transaction_time=T0,
                              symbol="AAPL", net_amount=Decimal("1.25"), raw_json='{"activity_type": "DIV"}')
    flow = CashFlow(id=dividend.id, ts=AT, amount=Decimal("1.25"), type="DIV", category=Category.INCOME)

    changes = Driver.changes(driver.feed(("cash.demo", ActivitiesPage(account="demo", activities=(dividend,),
                                                                      cash_flows=(flow,)))))

    assert changes == [ch.RawActivities("demo", (dividend,)),
                       ch.CashFlows("demo", (flow,))]


def test_activities_page_deletes_canceled_cash_flows_and_a_later_version_wins() -> None:
    """docs/spec.md §8 corrections: a canceled activity's id is deleted; re-booked after, it is written."""
    driver = Driver()
    fee = CashFlow(id="20240301000000000::fee-1", ts=AT, amount=Decimal("-0.05"), type="FEE", category=Category.FEE)

    canceled = Driver.changes(driver.feed(("cash.demo", ActivitiesPage(
        account="demo", activities=(), deleted_cash_flow_ids=("20240301000000000::div-1",)))))
    rebooked = Driver.changes(driver.feed(
        ("cash.demo", ActivitiesPage(account="demo", activities=(), deleted_cash_flow_ids=(fee.id,))),
        ("cash.demo", ActivitiesPage(account="demo", activities=(), cash_flows=(fee,)))))

    assert canceled == [ch.CashFlows("demo", deletes=("20240301000000000::div-1",))]
    assert rebooked == [ch.CashFlows("demo", (fee,))]


def test_a_final_order_with_a_commission_books_it_as_a_fee_once() -> None:
    """docs/spec.md §8: ``commission`` on an order (Alpaca's order object) is a fee, booked when final."""
    driver = Driver()
    live = order("C", status="partially_filled", commission=Decimal("1.25"))
    filled = order("C", status="filled", commission=Decimal("1.25"), filled_at=T0 + 5, updated_at=T0 + 5)
    free = order("F", status="filled", commission=Decimal(0))
    coin = order("K", symbol="BTC/USD", status="filled", commission=Decimal("0.5"))

    while_live = of_kind(Driver.changes(driver.feed(("orders.demo", OrdersPage(account="demo", orders=(live,))))),
                         ch.CashFlows)
    final = of_kind(Driver.changes(driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill",
                                                                           order=filled)))), ch.CashFlows)
    others = of_kind(Driver.changes(driver.feed(("orders.demo", OrdersPage(account="demo", orders=(free, coin))))),
                     ch.CashFlows)

    fee = CashFlow(id=f"commission:{oid('C')}", ts=to_datetime(T0), amount=Decimal("-1.25"), type="FEE",
                   category=Category.FEE, description="commission AAPL")
    assert while_live == []
    assert final == [ch.CashFlows("demo", (fee,))]
    assert others == []  # no commission; a crypto fee is booked from its CFEE activity instead


def test_partial_snapshot_sets_the_broker_wac_of_its_symbols() -> None:
    driver = Driver()
    _bought(driver)

    plans = driver.feed(("snap.demo", SnapshotTaken(account="demo", positions=(
        BrokerPosition(symbol="AAPL", qty=Decimal(10), avg_entry_price=Decimal("100.5")),), symbols=("AAPL",),
        taken_at=T0 + 100)))
    [rows] = of_kind(Driver.changes(plans), ch.OpenRows)

    assert rows.upserts[0].avg_px_symbol == Decimal("100.5")


def test_full_snapshot_reconciles_a_position_the_ledger_lacks() -> None:
    driver = Driver()
    snapshot = SnapshotTaken(account="demo", positions=(
        BrokerPosition(symbol="MSFT", qty=Decimal(4), avg_entry_price=Decimal(300)),), taken_at=T0)
    plans = driver.feed(*history_complete(T0), ("snap.demo", snapshot))
    changes = Driver.changes(plans)

    [rows] = of_kind(changes, ch.OpenRows)
    [fills] = of_kind(changes, ch.Reconciliations)
    assert [(row.symbol, row.qty) for row in rows.upserts] == [("MSFT", Decimal(4))]
    assert "recon:" in fills.rows[0].id
    assert of_kind(changes, ch.RawActivities) == []  # nothing synthetic among the broker's activities
    assert driver.mirror.counters["recon_corrections"] == 1


def test_tick_marks_a_held_lot_and_the_flush_writes_prices_bars_and_held_marks() -> None:
    driver = Driver()
    _bought(driver)

    first = Driver.changes(driver.feed(("px.AAPL", Tick(symbol="AAPL", price=101.0, size=5, ts_event=T0 + 10))))
    small = Driver.changes(driver.feed(("px.batch", TickBatch(symbols=("AAPL", "MSFT"), prices=(101.1, 50.0),
                                                              sizes=(1.0, 1.0), ts_events=(T0 + 20, T0 + 20)))))
    flush = Driver.changes(driver.feed(FlushDue()))
    again = Driver.changes(driver.feed(FlushDue()))

    [pushed] = of_kind(first, ch.OpenRows)
    assert pushed.upserts[0].mkt_px == Decimal("101.0")
    assert small == []  # a 0.1 % move is held for the flush (UI_PUSH_PCT_THRESHOLD 0.25)
    [prices] = of_kind(flush, ch.LatestPrices)
    [bars] = of_kind(flush, ch.PriceBars)
    [marks] = of_kind(flush, ch.OpenRows)
    assert sorted((s, p) for s, p, _ in prices.rows) == [("AAPL", Decimal("101.1")), ("MSFT", Decimal(50))]
    assert [(b[0], b[2], b[3], b[5]) for b in bars.rows if b[0] == "AAPL"] == [
        ("AAPL", Decimal(101), Decimal("101.1"), Decimal("101.1"))]
    assert marks.announce is False
    assert marks.upserts[0].mkt_px == Decimal("101.1")
    assert again == []


def test_equity_rows_and_a_full_rebuild_keep_only_its_dates() -> None:
    driver = Driver()
    day = DailyRow(date=date(2024, 3, 1), deposit=Decimal(1000), cash_balance=Decimal(500),
                   market_value=Decimal(510), net_flows=Decimal(0), daily_return=Decimal("0.01"),
                   cumulative_return=Decimal("0.01"), drawdown=Decimal(0))
    point = IntradayPoint(ts=AT, deposit=Decimal(1000), cumulative_return=None, drawdown=None, realised_return=None)

    changes = Driver.changes(driver.feed(("equity.demo", EquityComputed(account="demo", daily=(day,),
                                                                        intraday=(point,), is_rebuild=True))))

    assert changes == [ch.DailyEquity("demo", (day,), (date(2024, 3, 1),)),
                       ch.IntradayEquity("demo", (point,))]


def test_metrics_document_is_written_and_a_non_object_is_rejected_and_counted() -> None:
    driver = Driver()

    def doc(payload: str) -> tuple[str, MetricsComputed]:
        return ("metrics.demo", MetricsComputed(account="demo", payload=payload, computed_at=T0))

    good = Driver.changes(driver.feed(doc('{"kpi": 1}')))
    bad = Driver.changes(driver.feed(doc("[1, 2]")))

    assert good == [ch.MetricsDoc("demo", '{"kpi": 1}')]
    assert bad == []
    assert driver.mirror.counters["rejected_metrics"] == 1


def test_schedule_writes_sessions_and_prunes_old_ones() -> None:
    driver = Driver()
    session = Session(session_date=date(2024, 3, 1), pre_open_utc=AT, open_utc=AT, close_utc=AT, post_close_utc=AT)

    changes = Driver.changes(driver.feed(("schedule", ScheduleComputed(sessions=(session,), prune_before_ns=T0))))

    assert changes == [ch.MarketSchedule((session,), date(2024, 3, 1))]


def test_schedule_refresh_replaces_its_range_so_a_later_closure_goes() -> None:
    """Issue 13: the refresh covers 4..8 March; 6 March was declared closed after it was stored."""
    driver = Driver()

    def session(day: int) -> Session:
        at = datetime(2024, 3, day, 14, 30, tzinfo=UTC)
        return Session(session_date=date(2024, 3, day), pre_open_utc=at, open_utc=at, close_utc=at, post_close_utc=at)

    refreshed = (session(4), session(5), session(7), session(8), session(11))
    changes = Driver.changes(driver.feed(("schedule", ScheduleComputed(
        sessions=refreshed, replace_from=date(2024, 3, 4), replace_to=date(2024, 3, 8)))))
    upsert_only = Driver.changes(driver.feed(("schedule", ScheduleComputed(sessions=refreshed[:1]))))

    assert changes == [ch.MarketSchedule(refreshed, None,
                                         (date(2024, 3, 4), date(2024, 3, 8)),
                                         (date(2024, 3, 4), date(2024, 3, 5), date(2024, 3, 7), date(2024, 3, 8)))]
    assert upsert_only == [ch.MarketSchedule((refreshed[0],))]


def test_heartbeat_announces_on_every_account() -> None:
    changes = Driver.changes(Driver().feed(HeartbeatDue()))

    assert changes == [ch.UiHeartbeat("demo", NOW), ch.UiHeartbeat("paper_1", NOW)]


def test_gap_asks_for_a_resync_and_writes_nothing() -> None:
    plans = Driver().feed(GapDetected("demo", "gap"))

    assert Driver.changes(plans) == []
    assert Driver.messages(plans) == [ResyncRequested(account="demo", reason="gap")]


def test_ledger_check_request_is_a_barrier_after_the_pending_plan() -> None:
    driver = Driver()
    entry = order("A", filled_qty=Decimal(10))

    plans = driver.feed(("trade.demo", OrderUpdated(account="demo", event="fill", order=entry, fill=fill("A"))),
                        ("cmd.ledger_check.demo", LedgerCheckRequested(account="demo")))

    assert len(plans) == 1
    assert of_kind(plans[0].changes, ch.OpenRows)
    assert driver.checks == [LedgerCheck("demo")]
    assert driver.mirror.check_ledger("demo", [entry], [fill("A", execution="other")]) == []  # same lot, any key


@pytest.mark.parametrize("slug", ["ghost", "x" * 200])
def test_message_for_an_unknown_account_is_dropped_and_counted(slug: str) -> None:
    driver = Driver()

    plans = driver.feed(("trade." + slug, OrderUpdated(account=slug, event="new", order=order("A"))))

    assert plans == []
    assert driver.mirror.counters["unknown_account"] == 1


def test_leg_arriving_after_its_fill_rebuilds_and_relinks_the_exit() -> None:
    """A TP leg fill seen before the leg order closes FIFO as MANUAL; the order re-links it (rebuild)."""
    driver = Driver()
    entry, take, stop = bracket("A")
    driver.feed(("orders.demo", OrdersPage(account="demo", orders=(entry, stop))),
                ("fills.demo", FillsPage(account="demo", fills=(
                    fill("A"), fill("A-tp", price=110, side="sell", at=T0 + NS_PER_SECOND)))))
    manual = [found.exit_type for c in of_kind(Driver.changes(driver.plans), ch.ClosedSlices) for found in c.upserts]

    plans = driver.feed(("orders.demo", OrdersPage(account="demo", orders=(take,))))
    [slices] = of_kind(Driver.changes(plans), ch.ClosedSlices)

    assert manual == ["MANUAL"]
    assert [(s.entry_lot_id, s.exit_order_id, s.exit_type) for s in slices.upserts] == [(entry.id, take.id, "TP")]
    assert slices.announce == (ch.Announce.IF_CHANGED,)
    assert driver.mirror.counters["ledger_rebuilds"] == 1


def test_feed_symbol_no_account_holds_is_forgotten_after_the_idle_ttl() -> None:
    driver = Driver()
    _bought(driver)
    driver.feed(("px.batch", TickBatch(symbols=("AAPL", "ZZZ"), prices=(101.0, 5.0), sizes=(1.0, 1.0),
                                       ts_events=(T0, T0))))
    marks = driver.mirror.marks

    driver.feed(FlushDue(), now=T0 + IDLE_TTL_NS - 1)
    kept = sorted(marks.prices)
    driver.feed(FlushDue(), now=T0 + IDLE_TTL_NS)

    assert kept == ["AAPL", "ZZZ"]
    assert sorted(marks.prices) == ["AAPL"]  # held: kept however old
    assert {symbol for symbol, _ in marks.bars} == {"AAPL"}
    assert driver.mirror.counters["marks_pruned"] == 1


def test_snapshot_current_price_marks_only_when_newer_than_the_last_tick() -> None:
    driver = Driver()
    _bought(driver)
    priced = BrokerPosition(symbol="AAPL", qty=Decimal(10), avg_entry_price=Decimal(100), current_price=Decimal(102))

    marked = driver.feed(("snap.demo", SnapshotTaken(account="demo", positions=(priced,), symbols=("AAPL",),
                                                     taken_at=T0 + 10)))
    driver.feed(("px.AAPL", Tick(symbol="AAPL", price=103.0, ts_event=T0 + 20)))
    older = driver.feed(("snap.demo", SnapshotTaken(account="demo", positions=(priced,), symbols=("AAPL",),
                                                    taken_at=T0 + 15)))

    [rows] = of_kind(Driver.changes(marked), ch.OpenRows)
    assert rows.upserts[0].mkt_px == Decimal(102)
    assert Driver.changes(older) == []
    assert driver.mirror.marks.price("AAPL") == Decimal("103.0")


def test_restored_marks_come_from_committed_rows_when_newer_than_latest_prices() -> None:
    driver = Driver()
    _bought(driver)
    driver.feed(("px.AAPL", Tick(symbol="AAPL", price=104.5, ts_event=T0 + 10)))
    rows = dict(driver.mirror.accounts["demo"].rows)
    restarted = Driver()
    account = restarted.mirror.accounts["demo"]
    account.load(driver.mirror.accounts["demo"].book.orders(), driver.mirror.accounts["demo"].fills.values(), rows)
    restarted.mirror.marks.prices["AAPL"] = (Decimal(99), T0)  # an older flushed price

    restarted.mirror.restore_marks()
    start = Driver.changes([restarted.mirror.start_plan(NOW)])

    assert restarted.mirror.marks.price("AAPL") == Decimal("104.5")
    assert start == []

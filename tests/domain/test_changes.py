"""Typed changes: splitting (poison isolation) and chunking (start-up commits) keep every row once.

``size``, ``split`` and ``chunks`` are derived from each kind's ``ROWS``/``OPS`` declaration;
the cases below cover parallel groups (slices and their announce flags), a delete group, and an
operation (a daily rebuild's ``keep_only``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from coldharbour.domain import changes as ch
from coldharbour.domain.cashflows import CashFlow, Category
from coldharbour.domain.equity import DailyRow
from coldharbour.domain.types import ClosedSlice, OpenRow, Order

T0 = 1_709_305_200_000_000_000


def _open(pid: str) -> OpenRow:
    return OpenRow(parent_id=pid, symbol="AAPL", side="long", filled_at=T0, qty=Decimal(10), avg_fill=Decimal(100),
                   avg_px_symbol=Decimal(100), sl_child=None, sl_px=None, tp_child=None, tp_px=None, mkt_px=None,
                   bar_px=None, bar_ts=None, moved_flag="—", buy_value=Decimal(1000), holding_days=0,
                   days_to_expire=None, mkt_value=None, profit_loss=None, profit_loss_lot=None, tp_sl_reach_pct=None,
                   updated_at=T0)


def _slice(lot: str, exit_id: str) -> ClosedSlice:
    return ClosedSlice(entry_lot_id=lot, exit_order_id=exit_id, exit_parent_id=None, symbol="AAPL", side="long",
                       qty=Decimal(5), entry_time=T0, entry_price=Decimal(100), exit_time=T0, exit_price=Decimal(110),
                       exit_type="MANUAL", pnl_cash=Decimal(50), pnl_cash_fifo=Decimal(50), diff_pnl=Decimal(0),
                       pnl_pct=Decimal("0.1"), return_pct=Decimal("0.1"), duration_sec=1, entry_value=Decimal(500),
                       exit_value=Decimal(550), fifo_qty=Decimal(5), is_final=True)


def _day(day: int) -> DailyRow:
    return DailyRow(date=date(2024, 3, day), deposit=Decimal(1000), cash_balance=Decimal(500),
                    market_value=Decimal(510), net_flows=Decimal(0), daily_return=Decimal("0.01"),
                    cumulative_return=Decimal("0.01"), drawdown=Decimal(0))


def _rows(changes: list[ch.Change]) -> list[object]:
    out: list[object] = []
    for change in changes:
        match change:
            case ch.OpenRows(upserts=ups, deletes=dels):
                out += [*ups, *dels]
            case ch.ClosedSlices(upserts=ups, deletes=dels):
                out += [*ups, *dels]
            case ch.RawOrders(rows=rows):
                out += rows
    return out


def test_chunks_cut_big_changes_by_rows_and_keep_every_row_once() -> None:
    opened = ch.OpenRows("demo", tuple(_open(f"p{i}") for i in range(12)), ("gone",))
    closed = ch.ClosedSlices("demo", (_slice("l1", "x1"), _slice("l2", "x1")),
                             (ch.Announce.NEVER, ch.Announce.ALWAYS), (("l0", "x0"),))
    order = Order(id="o1", symbol="AAPL", side="buy", order_type="market", status="new", created_at=T0,
                  updated_at=T0, qty=Decimal(1))
    orders = ch.RawOrders("demo", ((order, "{}"),))

    groups = ch.chunks([opened, closed, orders], 5)

    # 13 open rows cut 5 + 5 + 2 (+ 1 delete); a piece never straddles groups
    assert [sum(ch.size(c) for c in g) for g in groups] == [5, 5, 3, 4]
    assert _rows([c for g in groups for c in g]) == _rows([opened, closed, orders])
    split_closed = [c for g in groups for c in g if isinstance(c, ch.ClosedSlices) and c.upserts]
    assert [c.announce for c in split_closed] == [(ch.Announce.NEVER, ch.Announce.ALWAYS)]


def test_chunks_cut_parallel_groups_together() -> None:
    closed = ch.ClosedSlices("demo", (_slice("l1", "x1"), _slice("l2", "x1"), _slice("l3", "x1")),
                             (ch.Announce.NEVER, ch.Announce.ALWAYS, ch.Announce.IF_CHANGED), (("l0", "x0"),))

    groups = ch.chunks([closed], 2)

    assert groups == [[ch.ClosedSlices("demo", deletes=(("l0", "x0"),))],
                      [ch.ClosedSlices("demo", closed.upserts[:2], closed.announce[:2])],
                      [ch.ClosedSlices("demo", closed.upserts[2:], closed.announce[2:])]]


def test_split_gives_one_row_per_change() -> None:
    daily = ch.DailyEquity("demo", (_day(1), _day(4)), (date(2024, 3, 1),))

    parts = ch.split(daily)

    assert parts == [ch.DailyEquity("demo", (_day(1),)), ch.DailyEquity("demo", (_day(4),)),
                     ch.DailyEquity("demo", keep_only=(date(2024, 3, 1),))]
    assert all(ch.size(p) == 1 for p in parts)


def test_split_keeps_an_operation_with_its_companion_fields_and_every_other_field() -> None:
    at = datetime(2024, 3, 1, tzinfo=UTC)
    span = (date(2024, 3, 4), date(2024, 3, 8))
    schedule = ch.MarketSchedule(replace=span, keep=(date(2024, 3, 5),), prune_before=date(2024, 1, 1))
    flows = ch.CashFlows("demo", (CashFlow(id="f1", ts=at, amount=Decimal(1), type="DIV", category=Category.INCOME),),
                         ("f0",))
    activities = ch.RawActivities("demo", (), by_execution=True)

    assert ch.split(schedule) == [ch.MarketSchedule(replace=span, keep=(date(2024, 3, 5),)),
                                  ch.MarketSchedule(prune_before=date(2024, 1, 1))]
    assert ch.split(flows) == [ch.CashFlows("demo", deletes=("f0",)), ch.CashFlows("demo", flows.rows)]
    assert ch.size(schedule) == 2
    assert ch.split(activities) == []  # nothing to isolate
    assert ch.split(ch.MetricsDoc("demo", "{}")) == [ch.MetricsDoc("demo", "{}")]
    assert ch.size(ch.UiHeartbeat("demo", T0)) == 1

"""Read-only queries: incremental by ``updated_at``, domain types out, refused writes."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from coldharbour.db import queries
from coldharbour.db.connect import connect_read_only
from coldharbour.domain.cashflows import Category
from tests.analytics.helpers import Rows, utc
from tests.support import make_settings

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(migrated_dsn):
    return make_settings(migrated_dsn, accounts=("demo",))


@pytest.fixture
def rows(settings):
    builder = Rows(settings)
    yield builder
    builder.close()


async def test_closed_slices_changed_returns_only_rows_after_the_cursor(settings, rows) -> None:
    base = utc(2024, 3, 4, 12)
    rows.closed("lot-1", "exit-1", "50", updated_at=base)
    rows.closed("lot-2", "exit-2", "-20", exit_type="SL", updated_at=base)
    conn = await connect_read_only(settings.dsn, "test")

    first = await queries.closed_slices_changed(conn, rows.names, None)
    rows.closed("lot-3", "exit-3", "5", exit_type="MANUAL", updated_at=base + timedelta(seconds=30))
    second = await queries.closed_slices_changed(conn, rows.names, first.cursor)
    third = await queries.closed_slices_changed(conn, rows.names, second.cursor)
    await conn.close()

    assert sorted(s.entry_lot_id for s in first.rows) == ["lot-1", "lot-2"]
    assert first.cursor == base
    # Rows within CHANGE_LAG of the cursor are read again (harmless: consumers key rows).
    assert sorted(s.entry_lot_id for s in second.rows) == ["lot-1", "lot-2", "lot-3"]
    assert second.cursor == base + timedelta(seconds=30)
    assert [s.entry_lot_id for s in third.rows] == ["lot-3"]
    assert third.rows[0].pnl_cash == Decimal("5")
    assert third.cursor == second.cursor


async def test_cash_flows_queries_convert_rows_and_skip_null_amounts(settings, rows) -> None:
    rows.cash_flow("20240301000000000::a", utc(2024, 3, 1, 5), "1000", "CSD", "external")
    rows.cash_flow("20240302000000000::b", utc(2024, 3, 2, 5), "2.40", "DIV", "income")
    rows.cash_flow("20240303000000000::c", utc(2024, 3, 3, 5), "-1000", "FILL", "trade")
    rows.conn.execute(
        sql.SQL("INSERT INTO {t} (id, ts, amount, type, category) VALUES ('z', now(), NULL, 'FEE', 'fee')").format(
            t=rows.names.cash_flows.ident
        )
    )
    conn = await connect_read_only(settings.dsn, "test")

    changed = await queries.cash_flows_changed(conn, rows.names, None)
    between = await queries.cash_flows_between(conn, rows.names, utc(2024, 3, 2), None)
    cursor = await queries.cash_flow_cursor(conn, rows.names)
    known = await queries.cash_flows_from(conn, rows.names, "20240302")
    await conn.close()

    assert [f.id for f in changed.rows] == ["20240301000000000::a", "20240302000000000::b", "20240303000000000::c"]
    assert changed.skipped == 1
    assert changed.rows[1].category is Category.INCOME
    assert [f.id for f in between] == ["20240302000000000::b"]  # trade rows are not cash flows here
    assert cursor == "20240303000000000::c"  # the foreign id "z" gives no time to resume from
    assert set(known) == {"20240302000000000::b", "20240303000000000::c"}  # "z" is no activity id
    assert known["20240302000000000::b"] == between[0]


async def test_executions_between_turns_fills_into_signed_executions(settings, rows) -> None:
    rows.fill("f1", utc(2024, 3, 1, 15), "AAPL", "buy", "10", "100")
    rows.fill("f2", utc(2024, 3, 2, 15), "AAPL", "sell", "4", "110")
    conn = await connect_read_only(settings.dsn, "test")

    executions, rejected = await queries.executions_between(conn, rows.names, None)
    later, _ = await queries.executions_between(conn, rows.names, utc(2024, 3, 2))
    first = await queries.first_activity_time(conn, rows.names)
    await conn.close()

    assert [(e.id, e.qty, e.price) for e in executions] == [
        ("f1", Decimal(10), Decimal(100)),
        ("f2", Decimal(-4), Decimal(110)),
    ]
    assert rejected == []
    assert [e.id for e in later] == ["f2"]
    assert first == utc(2024, 3, 1, 15)


async def test_open_fingerprint_changes_on_delete_and_update(settings, rows) -> None:
    rows.position("p1", "AAPL", "10", "100", utc(2024, 3, 1, 15))
    rows.position("p2", "MSFT", "5", "400", utc(2024, 3, 1, 15))
    conn = await connect_read_only(settings.dsn, "test")

    before = await queries.open_fingerprint(conn, rows.names)
    rows.conn.execute(sql.SQL("DELETE FROM {t} WHERE parent_id = 'p2'").format(t=rows.names.positions.ident))
    after_delete = await queries.open_fingerprint(conn, rows.names)
    kpi, intraday = await queries.open_rows(conn, rows.names)
    await conn.close()

    assert before[0] == 2
    assert after_delete[0] == 1
    assert [lot.parent_id for lot in kpi] == ["p1"]
    assert kpi[0].profit_loss is None  # no mark yet: never 0
    assert [(lot.symbol, lot.qty) for lot in intraday] == [("AAPL", Decimal(10))]


async def test_session_closes_from_bars_take_the_last_regular_hours_bar(settings, rows) -> None:
    session = rows.session(date(2024, 3, 12))
    rows.bar("AAPL", session.close_utc - timedelta(minutes=2), "101")
    rows.bar("AAPL", session.close_utc - timedelta(minutes=1), "102")
    rows.bar("AAPL", session.close_utc + timedelta(minutes=5), "99")  # after-hours: not the close
    conn = await connect_read_only(settings.dsn, "test")

    closes = await queries.session_closes_from_bars(conn, rows.shared, ["AAPL"], date(2024, 3, 1), date(2024, 3, 31))
    bars = await queries.bars_between(conn, rows.shared, ["AAPL"], session.pre_open_utc, session.post_close_utc)
    stored = await queries.sessions_between(conn, rows.shared, date(2024, 3, 12), date(2024, 3, 12))
    await conn.close()

    assert closes == {date(2024, 3, 12): {"AAPL": Decimal(102)}}
    assert [b.close for b in bars["AAPL"]] == [Decimal(101), Decimal(102), Decimal(99)]
    assert stored == [session]


async def test_daily_summaries_and_intraday_return(settings, rows) -> None:
    from tests.analytics.helpers import insert

    insert(rows.conn, rows.names.equity_full.ident, {
        "date": date(2024, 3, 11), "deposit": Decimal(10010), "cumulative_return": Decimal("0.001"),
        "drawdown": Decimal(0), "sharpe_10": 1.5,
    })  # fmt: skip
    insert(
        rows.conn, rows.names.equity_intraday.ident, {"ts": utc(2024, 3, 12, 14), "cumulative_return": Decimal("0.004")}
    )
    conn = await connect_read_only(settings.dsn, "test")

    summaries = await queries.daily_summaries_changed(conn, rows.names, None)
    newest = await queries.newest_intraday_return(conn, rows.names, utc(2024, 3, 12, 8))
    none_yet = await queries.newest_intraday_return(conn, rows.names, utc(2024, 3, 13, 8))
    await conn.close()

    assert [(s.date, s.sharpe[10], s.sharpe[21]) for s in summaries.rows] == [(date(2024, 3, 11), 1.5, None)]
    assert newest == Decimal("0.004")
    assert none_yet is None


async def test_read_only_connection_is_refused_a_write(settings, rows) -> None:
    conn = await connect_read_only(settings.dsn, "test")

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="cannot execute DELETE in a read-only transaction"):
        await conn.execute(sql.SQL("DELETE FROM {t}").format(t=rows.names.cash_flows.ident))
    await conn.close()


async def test_symbols_in_play_are_held_lots_and_open_orders_only(settings, rows) -> None:
    rows.position("p1", "AAPL", "10", "100", utc(2024, 3, 1, 15))
    rows.position("p2", "GONE", "0", "100", utc(2024, 3, 1, 15))
    insert = sql.SQL(
        "INSERT INTO {t} (id, symbol, side, order_type, status, created_at)"
        " VALUES (gen_random_uuid(), %s, 'buy', 'limit', %s, now())"
    ).format(t=rows.names.raw_orders.ident)
    for symbol, status in (("MSFT", "new"), ("BTC/USD", "partially_filled"), ("TSLA", "filled"), ("AMD", "canceled"),
                           ("NVDA", "done_for_day"), ("META", "held")):  # fmt: skip
        rows.conn.execute(insert, (symbol, status))
    conn = await connect_read_only(settings.dsn, "test")

    symbols = await queries.symbols_in_play(conn, rows.names)
    await conn.close()

    assert symbols == {"AAPL", "MSFT", "BTC/USD", "META"}

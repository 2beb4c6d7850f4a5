"""The single writer against real PostgreSQL: changes in, rows and NOTIFYs out, one transaction.

NOTIFY reaches LISTEN only after commit; a failed commit leaves nothing behind; a replay writes
and notifies nothing; the payloads the SQL builds keep the docs/spec.md §6 contract (the Python
``db.notify`` functions are the reference); a refused value is quarantined and the rest commits.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import sql

from coldharbour.db import notify, queries
from coldharbour.db import rows as r
from coldharbour.db.connect import connect_read_only
from coldharbour.db.writer import Writer
from coldharbour.domain import changes as ch
from coldharbour.domain.cashflows import CashFlow, Category
from coldharbour.domain.schedule import Session
from coldharbour.domain.types import NS_PER_SECOND, ClosedSlice, OpenRow, Order
from coldharbour.errors import DatabaseError
from tests.support import async_wait_for, make_settings

pytestmark = pytest.mark.asyncio
T0 = 1_767_625_200 * NS_PER_SECOND  # 2026-01-05 15:00 UTC
AT = datetime(2026, 1, 5, 15, tzinfo=UTC)


DRAINED = "test_writer_drained"  # the listener's own channel: see ``_drain``


async def _listener(dsn: Any, *channels: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(dsn.reveal(), autocommit=True)
    for channel in (*channels, DRAINED):
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return conn


async def _drain(conn: psycopg.AsyncConnection[Any], timeout_s: float = 15.0) -> list[str]:
    """Return the payloads of every NOTIFY committed so far (and not yet drained).

    The listener notifies itself now: PostgreSQL delivers notifications in commit order, so that
    one arrives after every one the writer committed before it, and ends the wait. (A quiet
    period is no proof: on a loaded machine a notification can take longer than any such period.)
    """
    await conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(DRAINED)))
    payloads: list[str] = []
    async for note in conn.notifies(timeout=timeout_s):
        if note.channel == DRAINED:
            return payloads
        payloads.append(note.payload)
    raise AssertionError(f"the listener's own NOTIFY did not arrive within {timeout_s}s; received {payloads!r}")


async def _writer(dsn: Any) -> Writer:
    writer = Writer(make_settings(dsn))
    await writer.connect()
    return writer


def _open_row(pid: str, *, px: str = "101", symbol: str = "AAPL") -> OpenRow:
    return OpenRow(parent_id=pid, symbol=symbol, side="long", filled_at=T0, qty=Decimal(10), avg_fill=Decimal(100),
                  avg_px_symbol=Decimal(100), sl_child=None, sl_px=None, tp_child=None, tp_px=None,
                  mkt_px=Decimal(px), bar_px=None, bar_ts=None, moved_flag="—", buy_value=Decimal(1000),
                  holding_days=0, days_to_expire=None, mkt_value=Decimal(10) * Decimal(px), profit_loss=None,
                  profit_loss_lot=None, tp_sl_reach_pct=None, updated_at=T0)


def _slice(lot: str, exit_id: str, *, final: bool, px: str = "110",
           symbol: str = "AAPL") -> ClosedSlice:
    return ClosedSlice(entry_lot_id=lot, exit_order_id=exit_id, exit_parent_id=None, symbol=symbol, side="long",
                        qty=Decimal(5), entry_time=T0, entry_price=Decimal(100), exit_time=T0 + NS_PER_SECOND,
                        exit_price=Decimal(px), exit_type="MANUAL", pnl_cash=Decimal(50), pnl_cash_fifo=Decimal(50),
                        diff_pnl=Decimal(0), pnl_pct=Decimal("0.1"), return_pct=Decimal("0.1"), duration_sec=1,
                        entry_value=Decimal(500), exit_value=Decimal(550), fifo_qty=Decimal(5), is_final=final)


async def test_writer_notify_reaches_listener_only_after_commit(migrated_dsn: Any) -> None:
    listener = await _listener(migrated_dsn, "pos_channel_demo")
    reader = await connect_read_only(migrated_dsn, "test")
    writer = await _writer(migrated_dsn)
    prices = ch.LatestPrices((("AAPL", Decimal("187.25"), T0),))
    seen_rows_at_notify: list[int] = []

    result = await writer.commit([prices, ch.UiHeartbeat("demo", T0)], T0)
    async for received in listener.notifies(timeout=5, stop_after=1):
        row = await (await reader.execute("SELECT count(*) FROM accounts.latest_prices")).fetchone()
        seen_rows_at_notify.append(row[0])  # type: ignore[index]
        payload = received.payload
    await writer.close()
    await listener.close()
    await reader.close()

    assert result == (1, 1, 0)
    assert seen_rows_at_notify == [1]
    assert payload == '{"op":"heartbeat","version":"2026-01-05T15:00:00Z"}'


async def test_writer_failed_commit_writes_and_notifies_nothing(migrated_dsn: Any) -> None:
    listener = await _listener(migrated_dsn, "pos_channel_demo")
    writer = await _writer(migrated_dsn)
    good = ch.LatestPrices((("AAPL", Decimal(1), T0),))
    bad = ch.LatestPrices((("MSFT", Decimal(-1), T0),))  # CHECK (price > 0)

    with pytest.raises(DatabaseError, match="commit failed on a value"):
        await writer.commit([good, ch.OpenRows("demo", (_open_row("p1"),)), bad], T0)
    received = await _drain(listener)
    rows = await (await listener.execute("SELECT count(*) FROM accounts.latest_prices")).fetchone()
    await writer.close()
    await listener.close()

    assert received == []
    assert rows == (0,)
    assert writer.counters["commit_failures"] == 1


async def test_writer_replay_and_empty_changes_write_and_notify_nothing(migrated_dsn: Any) -> None:
    listener = await _listener(migrated_dsn, "pos_channel_demo", "closed_channel_demo", "metrics_channel_demo")
    writer = await _writer(migrated_dsn)
    row = _slice("lot-1", "exit-1", final=True)
    changes: list[ch.Change] = [
        ch.OpenRows("demo", (_open_row("p1"), _open_row("p2"))),
        ch.ClosedSlices("demo", (row,), (ch.Announce.IF_CHANGED,)),
        ch.LatestPrices((("AAPL", Decimal("187.25"), T0),)),
        ch.MetricsDoc("demo", '{"as_of": "a", "kpi": 1}'),
    ]
    first = await writer.commit(changes, T0)
    first_notes = await _drain(listener)
    replay = await writer.commit([*changes[:3], ch.MetricsDoc("demo", '{"as_of": "b", "kpi": 1}')], T0)
    empty = await writer.commit([ch.OpenRows("demo"), ch.ClosedSlices("demo"), ch.RawOrders("demo", ())], T0)
    stale = await writer.commit([ch.LatestPrices((("AAPL", Decimal(100), T0 - 3600 * NS_PER_SECOND),))], T0)
    later = await _drain(listener)
    await writer.close()
    await listener.close()

    assert first == (5, 3, 0)
    assert len(first_notes) == 3
    assert (replay, empty, stale) == ((0, 0, 0), (0, 0, 0), (0, 0, 0))
    assert later == []


async def test_writer_position_payloads_keep_the_contract(migrated_dsn: Any) -> None:
    listener = await _listener(migrated_dsn, "pos_channel_demo")
    writer = await _writer(migrated_dsn)
    await writer.commit([ch.OpenRows("demo", tuple(_open_row(f"p{i:03}") for i in range(60)))], T0)
    await _drain(listener)

    await writer.commit([ch.OpenRows("demo", (_open_row("p000", px="102"),))], T0)
    single = await _drain(listener)
    await writer.commit([ch.OpenRows("demo", deletes=("p001",))], T0)
    deleted = await _drain(listener)
    moved = tuple(_open_row(f"p{i:03}", px="103") for i in range(2, 50))
    await writer.commit([ch.OpenRows("demo", moved, tuple(f"p{i:03}" for i in range(50, 60)))], T0)
    batch = [json.loads(p) for p in await _drain(listener)]
    await writer.close()
    await listener.close()

    expected = notify.to_json({"row": r.open_row_json(_open_row("p000", px="102"))})
    assert single == [expected]
    assert deleted == ['{"op":"delete","parent_id":"p001"}']
    assert len(batch) > 2
    assert {p["op"] for p in batch} == {"batch"}
    assert [row["parent_id"] for p in batch for row in p["rows"]] == [f"p{i:03}" for i in range(2, 50)]
    assert [d for p in batch for d in p["deletes"]] == [f"p{i:03}" for i in range(50, 60)]
    assert all(len(json.dumps(p, separators=(",", ":")).encode()) <= notify.MAX_PAYLOAD_BYTES for p in batch)


async def test_writer_oversized_position_row_becomes_refetch(migrated_dsn: Any) -> None:
    listener = await _listener(migrated_dsn, "pos_channel_demo")
    writer = await _writer(migrated_dsn)
    big = _open_row("big", symbol="X" * 8000)

    await writer.commit([ch.OpenRows("demo", (big,))], T0)
    single = await _drain(listener)
    await writer.commit([ch.OpenRows("demo", (_open_row("big", symbol="Y" * 8000), _open_row("small")))], T0)
    batch = [json.loads(p) for p in await _drain(listener)]
    await writer.close()
    await listener.close()

    assert single == ['{"op":"refetch","parent_id":"big"}']
    assert batch[0] == {"op": "refetch", "parent_id": "big"}
    assert [row["parent_id"] for row in batch[1]["rows"]] == ["small"]


async def test_writer_closed_slice_announced_when_final_and_once_when_it_becomes_final(migrated_dsn: Any) -> None:
    listener = await _listener(migrated_dsn, "closed_channel_demo")
    writer = await _writer(migrated_dsn)
    open_row = _slice("lot-2", "exit-1", final=False)
    final = _slice("lot-2", "exit-1", final=True)

    await writer.commit([ch.ClosedSlices("demo", (open_row,), (ch.Announce.NEVER,))], T0)
    before = await _drain(listener)
    await writer.commit([ch.ClosedSlices("demo", (final,), (ch.Announce.ALWAYS,))], T0)
    became_final = [json.loads(p) for p in await _drain(listener)]
    await writer.commit([ch.ClosedSlices("demo", (final,), (ch.Announce.IF_CHANGED,))], T0)
    replay = await _drain(listener)
    await writer.close()
    await listener.close()

    assert before == []
    assert became_final == [{"op": "insert", "rows": [json.loads(notify.to_json(r.closed_json(final)))]}]
    assert replay == []


async def test_writer_oversized_closed_slice_becomes_refetch_and_the_commit_succeeds(migrated_dsn: Any) -> None:
    """Issue 14: a slice over 8,000 bytes (a long broker symbol) made the exit commit fail forever."""
    listener = await _listener(migrated_dsn, "closed_channel_demo")
    writer = await _writer(migrated_dsn)
    big = _slice("lot-big", "exit-1", final=True, symbol="Z" * 8000)
    small = found = _slice("lot-small", "exit-1", final=True)

    result = await writer.commit([ch.ClosedSlices("demo", (big, small), (ch.Announce.IF_CHANGED,) * 2)], T0)
    notes = [json.loads(p) for p in await _drain(listener)]
    await writer.close()
    await listener.close()

    assert result.changed == 2
    assert notes == [{"op": "refetch", "entry_lot_id": "lot-big", "exit_order_id": "exit-1"},
                     {"op": "insert", "rows": [json.loads(notify.to_json(r.closed_json(found)))]}]


async def test_writer_quarantines_the_refused_row_and_commits_the_rest(migrated_dsn: Any) -> None:
    listener = await _listener(migrated_dsn, "pos_channel_demo")
    writer = await _writer(migrated_dsn)
    good_order = Order(id=str(uuid.uuid4()), symbol="AAPL", side="buy", order_type="market", status="new",
                       created_at=T0, updated_at=T0, qty=Decimal(1))
    bad_order = msgspec.structs.replace(good_order, id=str(uuid.uuid4()), client_order_id="nul\x00id")
    changes: list[ch.Change] = [
        ch.RawOrders("demo", ((good_order, "{}"), (bad_order, "{}"))),
        ch.OpenRows("demo", (_open_row("p1"),)),
        ch.LatestPrices((("AAPL", Decimal(1), T0), ("MSFT", Decimal(-1), T0))),
        ch.CashFlows("demo", (CashFlow(id="cf-tiny", ts=AT, amount=Decimal("1E-20000"), type="FEE",
                                       category=Category.FEE),)),  # psycopg refuses the amount
    ]

    result = await writer.commit_isolating(changes, T0)
    notes = await _drain(listener)
    raw_orders = writer.names("demo").raw_orders
    stored = await (await listener.execute(sql.SQL(
        "SELECT (SELECT count(*) FROM {t}), (SELECT count(*) FROM accounts.latest_prices)").format(t=raw_orders.ident)
    )).fetchone()
    quarantined = await queries.load_quarantine(listener, 10)
    await writer.close()
    await listener.close()

    assert result.quarantined == 3
    assert stored == (1, 1)
    assert len(notes) == 1
    assert sorted((q.kind, q.account, q.key) for q in quarantined) == [
        ("CashFlows", "demo", "cf-tiny"), ("LatestPrices", None, "MSFT"), ("RawOrders", "demo", bad_order.id)]
    assert all(q.error for q in quarantined)
    assert "\\u0000" in next(q.raw for q in quarantined if q.kind == "RawOrders")
    assert writer.counters["quarantined"] == 3


async def test_writer_reconnects_after_postgres_restart(pg_cluster: Any, migrated_dsn: Any) -> None:
    writer = await _writer(migrated_dsn)
    prices = ch.LatestPrices((("AAPL", Decimal(1), T0),))

    await asyncio.to_thread(pg_cluster.stop, "immediate")
    try:
        with pytest.raises(DatabaseError, match=r"connection lost|not connected"):
            await writer.commit_isolating([prices], T0)
        reconnect = asyncio.create_task(writer.connect())
        await async_wait_for(lambda: writer.counters["db_connect_failures"] >= 1, 10, what="a failed reconnect")
    finally:
        await asyncio.to_thread(pg_cluster.start)
    await asyncio.wait_for(reconnect, 30)
    result = await writer.commit([prices], T0)
    await writer.close()

    assert result.changed == 1
    assert writer.counters["db_reconnects"] == 1


async def test_writer_deletes_canceled_cash_flows_and_a_replay_changes_nothing(migrated_dsn: Any) -> None:
    """docs/spec.md §8 corrections: a canceled activity's row goes, a corrected amount replaces the row."""
    writer = await _writer(migrated_dsn)
    table = writer.names("demo").cash_flows
    div = CashFlow(id="20260105000000000::div", ts=AT, amount=Decimal("2.40"), type="DIV", category=Category.INCOME,
                   description="Cash DIV")
    fee = CashFlow(id="20260105000000000::fee", ts=AT, amount=Decimal("-0.02"), type="FEE", category=Category.FEE)
    await writer.commit([ch.CashFlows("demo", (div, fee))], T0)

    corrected = msgspec.structs.replace(fee, amount=Decimal("-0.05"))
    change = ch.CashFlows("demo", (corrected,), deletes=(div.id,))
    first = await writer.commit([change], T0)
    replay = await writer.commit([change], T0)
    rows = await (await writer._conn.execute(  # type: ignore[union-attr]
        sql.SQL("SELECT id, amount FROM {t} ORDER BY id").format(t=table.ident))).fetchall()
    await writer.close()

    assert first.changed == 2
    assert replay.changed == 0
    assert rows == [(fee.id, Decimal("-0.05"))]


def _session(day: int) -> Session:
    at = datetime(2026, 1, day, 14, 30, tzinfo=UTC)
    return Session(session_date=date(2026, 1, day), pre_open_utc=at, open_utc=at, close_utc=at, post_close_utc=at)


async def test_writer_schedule_refresh_replaces_its_range(migrated_dsn: Any) -> None:
    """Issue 13: a closure declared after the schedule was stored makes its row go away."""
    writer = await _writer(migrated_dsn)
    stored = [_session(d) for d in (5, 6, 7, 8, 9, 12)]
    await writer.commit([ch.MarketSchedule(tuple(stored))], T0)

    refreshed = tuple(s for s in stored[:5] if s.session_date.day != 7)  # 7 Jan closed; 12 Jan outside the range
    span = (date(2026, 1, 5), date(2026, 1, 9))
    change = ch.MarketSchedule(refreshed, replace=span, keep=tuple(s.session_date for s in refreshed))
    first = await writer.commit([change], T0)
    replay = await writer.commit([change], T0)
    rows = await (await writer._conn.execute(  # type: ignore[union-attr]
        "SELECT extract(day FROM session_date)::int FROM accounts.market_schedule ORDER BY 1")).fetchall()
    await writer.close()

    assert first.changed == 1
    assert replay.changed == 0
    assert [d for (d,) in rows] == [5, 6, 8, 9, 12]


async def test_writer_session_commits_synchronously_and_plans_generically(migrated_dsn: Any) -> None:
    """The test cluster defaults to synchronous_commit=off: the writer's own session must not."""
    writer = await _writer(migrated_dsn)
    assert writer._conn is not None
    server = await (await writer._conn.execute("SELECT current_setting('synchronous_commit', false), "
                                               "current_setting('plan_cache_mode'), "
                                               "(SELECT setting FROM pg_settings WHERE name = 'synchronous_commit' "
                                               "AND source = 'client')")).fetchone()
    autocommit = writer._conn.autocommit
    await writer.close()

    assert server == ("on", "force_generic_plan", "on")
    assert autocommit

"""Idempotent upserts against real PostgreSQL: replay returns nothing, stale versions lose; a commit's
parts join into one prepared statement (a table written twice: one pipelined transaction)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from psycopg import sql

from coldharbour.db.names import account_names, shared_names
from coldharbour.db.upserts import MAX_PARTS, Statements
from coldharbour.db.writer import Writer
from coldharbour.domain import changes as ch
from coldharbour.domain import stored as canon
from coldharbour.domain.cashflows import CashFlow, Category
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.types import NS_PER_SECOND, Fill, OpenRow, Order, to_datetime
from coldharbour.errors import DatabaseError
from tests.support import make_settings

pytestmark = pytest.mark.asyncio
T0 = 1_709_305_200 * NS_PER_SECOND


def _order(**fields: object) -> Order:
    base: dict[str, object] = {"id": str(uuid.uuid4()), "symbol": "AAPL", "side": "buy", "order_type": "limit",
                               "status": "new", "created_at": T0, "updated_at": T0, "qty": Decimal(10),
                               "limit_price": Decimal("101.5"), "legs": ("leg-1",)}
    base.update(fields)
    return Order(**base)  # type: ignore[arg-type]


async def _writer(dsn: object) -> Writer:
    writer = Writer(make_settings(dsn))
    await writer.connect()
    return writer


async def test_upserts_raw_order_older_version_never_overwrites_and_links_are_kept(migrated_dsn: Any) -> None:
    table = account_names(make_settings(migrated_dsn), "demo").raw_orders
    writer = await _writer(migrated_dsn)
    newer = _order(status="accepted", updated_at=T0 + NS_PER_SECOND, parent_id="p-1")
    older = msgspec.structs.replace(newer, status="new", updated_at=T0)
    without_links = msgspec.structs.replace(newer, parent_id=None, legs=(), status="filled",
                                            updated_at=T0 + 2 * NS_PER_SECOND)

    def orders(order: Order) -> list[ch.Change]:
        return [ch.RawOrders("demo", ((order, "{}"),))]

    first = await writer.commit(orders(newer), T0)
    replay = await writer.commit(orders(newer), T0)
    stale = await writer.commit(orders(older), T0)
    await writer.commit(orders(without_links), T0)
    stored = await writer._conn.execute(  # type: ignore[union-attr]
        f"SELECT status, parent_id, legs::text FROM {table.schema}.{table.name}")
    result = await stored.fetchall()
    await writer.close()

    assert first.changed == 1
    assert replay.changed == 0
    assert stale.changed == 0
    assert result == [("filled", "p-1", '[{"id": "leg-1"}]')]


async def test_upserts_fill_activity_conflicts_on_execution_id_and_reads_back_as_same_fill(migrated_dsn: Any) -> None:
    table = account_names(make_settings(migrated_dsn), "demo").raw_activities
    writer = await _writer(migrated_dsn)
    fill = Fill(order_id=str(uuid.uuid4()), symbol="AAPL", side="buy", qty=Decimal(3), price=Decimal("99.5"),
                ts=T0 + 123_456_789, execution_id=str(uuid.uuid4()), cum_qty=Decimal(3))
    record, canonical = canon.canonical_fill(fill)
    broker_copy = msgspec.structs.replace(record, id="20240301150000123::other-id")

    def step(record: ActivityRecord) -> list[ch.Change]:
        return [ch.RawActivities("demo", (record,), by_execution=True)]

    first = await writer.commit(step(record), T0)
    again = await writer.commit(step(broker_copy), T0)
    cursor = await writer._conn.execute(f"SELECT count(*) FROM {table.schema}.{table.name}")  # type: ignore[union-attr]
    count = await cursor.fetchone()
    await writer.close()

    assert first.changed == 1
    assert again.changed == 0  # same execution, same values: nothing written
    assert count == (1,)
    assert canonical.key == fill.key
    assert canonical.ts == T0 + 123_456_000


async def test_upserts_large_batch_binds_in_binary_and_stays_idempotent(migrated_dsn: Any) -> None:
    writer = await _writer(migrated_dsn)
    count = 2_000
    at = to_datetime(T0)
    flows = tuple(CashFlow(id=f"cf-{i}", ts=at, amount=Decimal(i), type="FEE", category=Category.FEE)
                  for i in range(count))
    changed = (*flows[:5], *(CashFlow(id=f"cf-{i}", ts=at, amount=Decimal(-i - 1), type="FEE", category=Category.FEE,
                                      description="x") for i in range(5, count)))

    first = await writer.commit([ch.CashFlows("demo", flows)], T0)
    replay = await writer.commit([ch.CashFlows("demo", flows)], T0)
    both = await writer.commit([ch.CashFlows("demo", changed)], T0)
    await writer.close()

    assert first.changed == count
    assert replay.changed == 0
    assert both.changed == count - 5


async def test_upserts_a_fill_commit_is_one_prepared_statement_reused(migrated_dsn: Any) -> None:
    """Positions, raw order and fill activity of one account: one statement, prepared once, one transaction."""
    writer = await _writer(migrated_dsn)
    names = account_names(make_settings(migrated_dsn), "demo")

    def fill_commit(i: int) -> list[ch.Change]:
        order = _order(status="filled", filled_qty=Decimal(10), legs=())
        fill = Fill(order_id=order.id, symbol="AAPL", side="buy", qty=Decimal(10), price=Decimal(100), ts=T0 + i,
                    execution_id=str(uuid.uuid4()), cum_qty=Decimal(10))
        record, _ = canon.canonical_fill(fill)
        return [ch.OpenRows("demo", (_position(order.id, i),)),
                ch.RawOrders("demo", ((order, "{}"),)),
                ch.RawActivities("demo", (record,), by_execution=True)]

    results = [await writer.commit(fill_commit(i), T0) for i in range(3)]
    conn = writer._conn
    assert conn is not None
    prepared = await (await conn.execute("SELECT count(*) FROM pg_prepared_statements")).fetchone()
    stored = await (await conn.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})").format(
        names.positions.ident, names.raw_activities.ident))).fetchone()
    await writer.close()

    assert [r.changed for r in results] == [3, 3, 3]
    assert [r.notified for r in results] == [1, 1, 1]
    assert prepared == (1,)
    assert stored == (3, 3)


async def test_upserts_the_same_table_twice_goes_in_one_transaction(migrated_dsn: Any) -> None:
    """Two parts on one table are two statements: both land, or neither does."""
    writer = await _writer(migrated_dsn)
    names = account_names(make_settings(migrated_dsn), "demo")
    fill = Fill(order_id=str(uuid.uuid4()), symbol="AAPL", side="buy", qty=Decimal(3), price=Decimal("99.5"),
                ts=T0, execution_id=str(uuid.uuid4()), cum_qty=Decimal(3))
    record, _ = canon.canonical_fill(fill)
    fee = ActivityRecord(id="fee-1", activity_type="FEE", transaction_time=T0, net_amount=Decimal("-1.5"))
    bad = msgspec.structs.replace(fee, id="fee-2", raw_json='{"broken')  # jsonb refuses it
    by_execution = ch.RawActivities("demo", (record,), by_execution=True)

    with pytest.raises(DatabaseError, match="on a value"):
        await writer.commit([by_execution, ch.RawActivities("demo", (bad,))], T0)
    after_failure = await _count(writer, names.raw_activities)
    both = await writer.commit([by_execution, ch.RawActivities("demo", (fee,))], T0)
    replay = await writer.commit([by_execution, ch.RawActivities("demo", (fee,))], T0)
    stored = await _count(writer, names.raw_activities)
    await writer.close()

    assert after_failure == 0
    assert (both.changed, replay.changed, stored) == (2, 0, 2)


async def test_upserts_parts_join_with_their_own_names_and_numbered_placeholders() -> None:
    """``group`` cuts where a table repeats (and at MAX_PARTS); ``compose`` numbers each part's ``%s`` in turn."""
    st = Statements(shared_names(make_settings("postgresql://x@127.0.0.1/x")))
    names = account_names(make_settings("postgresql://x@127.0.0.1/x"), "demo")
    other = account_names(make_settings("postgresql://x@127.0.0.1/x"), "other")
    specs = [st.positions(names, upserts=True, deletes=True, announce=True), st.raw_orders(names),
             st.positions(other, upserts=True, deletes=False, announce=False), st.raw_orders(names)]
    text = st.statement(specs[:3]).decode()
    many = [st.raw_orders(account_names(make_settings("postgresql://x@127.0.0.1/x"), f"a{i}"))
            for i in range(MAX_PARTS + 1)]

    assert st.group(specs) == [range(0, 3), range(3, 4)]
    assert st.group(many) == [range(0, MAX_PARTS), range(MAX_PARTS, MAX_PARTS + 1)]
    assert [f"${n}" in text for n in (1, 2, 3, 4)] == [True, True, True, True]
    assert "$5" not in text
    assert "%s" not in text
    assert text.index("c0_input AS") < text.index("c0_del AS") < text.index("c1_input AS") < text.index("c2_input")
    assert st.statement(specs[:3]) is st.statement(specs[:3])  # composed once


def _position(parent_id: str, i: int) -> OpenRow:
    return OpenRow(parent_id=parent_id, symbol="AAPL", side="long", filled_at=T0 + i, qty=Decimal(10),
                  avg_fill=Decimal(100), avg_px_symbol=Decimal(100), sl_child=None, sl_px=None, tp_child=None,
                  tp_px=None, mkt_px=Decimal(101), bar_px=None, bar_ts=None, moved_flag="—", buy_value=Decimal(1000),
                  holding_days=0, days_to_expire=None, mkt_value=Decimal(1010), profit_loss=None,
                  profit_loss_lot=None, tp_sl_reach_pct=None, updated_at=T0)


async def _count(writer: Writer, table: Any) -> int:
    assert writer._conn is not None
    found = await (await writer._conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident))).fetchone()
    assert found is not None
    return int(found[0])


async def test_upserts_one_row_parts_store_exactly_what_the_batch_parts_store(migrated_dsn: Any) -> None:
    """A stream fill's parts (one row each, ``single``) and the general parts write the same values."""
    writer = await _writer(migrated_dsn)
    names = account_names(make_settings(migrated_dsn), "demo")
    tables = (names.positions, names.raw_orders, names.raw_activities)
    commits = []
    for i in range(3):
        order = _order(status="partially_filled", filled_qty=Decimal("0.123456789012345678"), legs=(),
                       filled_avg_price=Decimal("101.000000001") + i, parent_id=None if i else "p-0")
        fill = Fill(order_id=order.id, symbol="AAPL", side="buy", qty=Decimal("0.123456789012345678"),
                    price=Decimal("101.000000001"), ts=T0 + i * 1_000_017, execution_id=str(uuid.uuid4()),
                    cum_qty=Decimal("0.123456789012345678"))
        record, _ = canon.canonical_fill(fill)
        commits.append((_position(order.id, i), (order, '{"id": "x", "é": "a\\"b"}'), record))

    def changes(part: list[tuple[Any, ...]]) -> list[ch.Change]:
        return [ch.OpenRows("demo", tuple(p for p, _, _ in part)), ch.RawOrders("demo", tuple(o for _, o, _ in part)),
                ch.RawActivities("demo", tuple(a for _, _, a in part), by_execution=True)]

    async def stored() -> list[list[tuple[Any, ...]]]:
        found = []
        for table in tables:
            cursor = await writer._conn.execute(sql.SQL(  # type: ignore[union-attr]
                "SELECT to_jsonb(t) - 'ingested_at' FROM {} AS t ORDER BY 1::text").format(table.ident))
            found.append(await cursor.fetchall())
        return found

    singles = [await writer.commit(changes([one]), T0) for one in commits]
    one_by_one = await stored()
    for table in tables:
        await writer._conn.execute(sql.SQL("DELETE FROM {}").format(table.ident))  # type: ignore[union-attr]
    batch = await writer.commit(changes(commits), T0)
    together = await stored()
    replays = [await writer.commit(changes([one]), T0) for one in commits]
    await writer.close()

    assert [s.changed for s in singles] == [3, 3, 3]
    assert batch.changed == 9
    assert [(s.changed, s.notified) for s in replays] == [(0, 0)] * 3
    assert one_by_one == together
    assert [len(rows_) for rows_ in together] == [3, 3, 3]

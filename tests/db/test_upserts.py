"""Idempotent upserts against real PostgreSQL: replay returns nothing, stale versions lose."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from coldharbour.db import rows
from coldharbour.db.names import account_names
from coldharbour.db.writer import Writer
from coldharbour.domain import changes as ch
from coldharbour.domain.types import NS_PER_SECOND, Fill, Order, to_datetime
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
        return [ch.RawOrders("demo", (rows.order_values(order, "{}"),))]

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
    record, canonical = rows.canonical_fill(fill)
    broker_copy = msgspec.structs.replace(record, id="20240301150000123::other-id")

    def step(record: object) -> list[ch.Change]:
        return [ch.RawActivities("demo", (rows.activity_values(record),), by_execution=True)]  # type: ignore[arg-type]

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
    flows = tuple((f"cf-{i}", at, Decimal(i), "FEE", "fee", None) for i in range(count))
    changed = (*flows[:5], *((f"cf-{i}", at, Decimal(-i - 1), "FEE", "fee", "x") for i in range(5, count)))

    first = await writer.commit([ch.CashFlows("demo", flows)], T0)
    replay = await writer.commit([ch.CashFlows("demo", flows)], T0)
    both = await writer.commit([ch.CashFlows("demo", changed)], T0)
    await writer.close()

    assert first.changed == count
    assert replay.changed == 0
    assert both.changed == count - 5

"""Start-up loads read back exactly what the live path wrote (same keys, same values)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from coldharbour.db import loads, rows
from coldharbour.db.names import account_names
from coldharbour.db.writer import Writer
from coldharbour.domain import changes as ch
from coldharbour.domain.ledger import differences, rebuild
from coldharbour.domain.orders import OrderBook
from coldharbour.domain.positions import build_open_row
from coldharbour.domain.types import NS_PER_SECOND, Fill, LotLegs, Order
from tests.support import make_settings

pytestmark = pytest.mark.asyncio
T0 = 1_709_305_200 * NS_PER_SECOND


async def test_loads_round_trip_orders_fills_and_open_rows(migrated_dsn: Any) -> None:
    names = account_names(make_settings(migrated_dsn), "demo")
    entry_id, exit_id = str(uuid.uuid4()), str(uuid.uuid4())
    orders = [Order(id=entry_id, symbol="MSFT", side="buy", order_type="market", status="filled", created_at=T0,
                    updated_at=T0 + 5, qty=Decimal(4), order_class="bracket"),
              Order(id=exit_id, symbol="MSFT", side="sell", order_type="limit", status="filled", created_at=T0,
                    updated_at=T0 + 9, qty=Decimal(1), limit_price=Decimal(420), parent_id=entry_id)]
    fills = [Fill(order_id=entry_id, symbol="MSFT", side="buy", qty=Decimal(4), price=Decimal("410.25"), ts=T0 + 7,
                  execution_id=str(uuid.uuid4())),
             Fill(order_id=exit_id, symbol="MSFT", side="sell", qty=Decimal(1), price=Decimal(420), ts=T0 + 999_999,
                  cum_qty=Decimal(1))]
    canonical = [rows.canonical_fill(f) for f in fills]
    live_orders = [rows.canonical_order(o) for o in orders]
    live = rebuild(live_orders, [f for _, f in canonical])
    lot = next(iter(live.lots.values()))
    row = build_open_row(lot, legs=LotLegs(), mark=Decimal("415.5"), wac=None, now=T0 + NS_PER_SECOND)
    writer = Writer(make_settings(migrated_dsn))
    await writer.connect()
    slug = names.slug
    await writer.commit([
        ch.RawOrders(slug, tuple(rows.order_values(o, "{}") for o in live_orders)),
        ch.RawActivities(slug, (rows.activity_values(canonical[0][0]),), by_execution=True),
        ch.RawActivities(slug, (rows.activity_values(canonical[1][0]),)),
        ch.OpenRows(slug, (rows.open_row_values(row),)),
    ], T0)
    await writer.close()

    async with await psycopg.AsyncConnection.connect(migrated_dsn.reveal()) as conn:
        stored_orders, stored_fills = await loads.load_history(conn, names)
        stored_rows = await loads.load_open_rows(conn, names)

    assert {o.id: o for o in stored_orders} == {o.id: o for o in live_orders}
    assert sorted(f.key for f in stored_fills) == sorted(f.key for _, f in canonical)
    assert differences(live, rebuild(OrderBook(stored_orders), stored_fills)) == []
    assert stored_rows == {row.parent_id: row}

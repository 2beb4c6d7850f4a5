"""Stored history for benchmarks: orders and fills written with COPY, in the tables' stored form.

Rows go through the same converters ``state`` uses (``db.rows``), so what a benchmark loads is
exactly what a real run would have stored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg
from psycopg import sql

from coldharbour.config import load_settings
from coldharbour.db import rows as r
from coldharbour.db.names import AccountNames, account_names
from coldharbour.domain import stored
from coldharbour.domain.types import Fill, Order, OrderSide
from scripts.benchmarks.report import note

START_NS = 1_735_700_000_000_000_000  # 2025-01-01, microsecond-aligned
STEP_NS = 1_000_000  # 1 ms between events
QTY = Decimal(10)


def names(env: dict[str, str]) -> AccountNames:
    """Return the table names of the benchmark account."""
    settings = load_settings(env)
    return account_names(settings, settings.accounts[0].slug)


def symbol(i: int) -> str:
    """Return the benchmark symbol number ``i``."""
    return f"S{i:04d}"


def _order(n: int, sym: str, side: OrderSide, ts: int, price: Decimal) -> tuple[Order, Fill]:
    order_id = str(uuid.UUID(int=n + 1))
    order = Order(id=order_id, symbol=sym, side=side, order_type="market", status="filled", created_at=ts,
                  updated_at=ts, qty=QTY, filled_qty=QTY, filled_avg_price=price, filled_at=ts,
                  client_order_id=f"bench-{n}")  # fmt: skip
    fill = Fill(order_id=order_id, symbol=sym, side=side, qty=QTY, price=price, ts=ts,
                execution_id=str(uuid.UUID(int=(1 << 100) + n)), cum_qty=QTY)  # fmt: skip
    return order, fill


def open_lots(count: int, symbols: int) -> Iterator[tuple[Order, Fill]]:
    """Yield ``count`` filled entry orders (one open lot each) over ``symbols`` symbols."""
    for n in range(count):
        yield _order(n, symbol(n % symbols), "buy", START_NS + n * STEP_NS, Decimal(100))


def round_trips(count: int, symbols: int) -> Iterator[tuple[Order, Fill]]:
    """Yield ``count`` buy-then-sell round trips (two orders, two fills each), all closed."""
    for n in range(count):
        sym, ts = symbol(n % symbols), START_NS + 2 * n * STEP_NS
        yield _order(2 * n, sym, "buy", ts, Decimal(100) + n % 50)
        yield _order(2 * n + 1, sym, "sell", ts + STEP_NS, Decimal(101) + n % 50)


def store(dsn: str, account: AccountNames, history: Iterator[tuple[Order, Fill]]) -> int:
    """COPY the orders and their fills into the raw tables; return the number of rows written."""
    written = 0
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        orders_copy = sql.SQL("COPY {t} ({c}) FROM STDIN").format(
            t=account.raw_orders.ident, c=sql.SQL(", ").join(map(sql.Identifier, r.ORDER_COLUMNS)))
        fills: list[tuple[object, ...]] = []
        with cur.copy(orders_copy) as copy:
            for order, fill in history:
                copy.write_row(r.order_values(order, "{}"))
                fills.append(r.activity_values(stored.activity_from_fill(fill)))
                written += 2
        fills_copy = sql.SQL("COPY {t} ({c}) FROM STDIN").format(
            t=account.raw_activities.ident, c=sql.SQL(", ").join(map(sql.Identifier, r.ACTIVITY_COLUMNS)))
        with cur.copy(fills_copy) as copy:
            for row in fills:
                copy.write_row(row)
        cur.execute(sql.SQL("ANALYZE {}").format(account.raw_orders.ident))
        cur.execute(sql.SQL("ANALYZE {}").format(account.raw_activities.ident))
    note(f"stored {written} order+fill rows in {time.perf_counter() - started:.1f}s")
    return written


def fetch_queries(account: AccountNames) -> list[str]:
    """Return the SELECTs of the rebuild's raw baseline: every stored column the rebuild reads, in its
    stored type (``order_class`` alone out of the order's ``raw_json``), as text."""
    order_cols = ", ".join("jsonb_build_object('order_class', raw_json->'order_class')" if c == "raw_json"
                           else f'"{c}"' for c in r.ORDER_COLUMNS)  # fmt: skip
    activity_cols = ", ".join(f'"{c}"::text' if c == "raw_json" else f'"{c}"' for c in r.ACTIVITY_COLUMNS)
    orders, activities = account.raw_orders, account.raw_activities
    return [
        f'SELECT {order_cols} FROM "{orders.schema}"."{orders.name}" ORDER BY created_at, id',
        f'SELECT {activity_cols} FROM "{activities.schema}"."{activities.name}" '
        "WHERE activity_type = 'FILL' ORDER BY transaction_time, id",
    ]

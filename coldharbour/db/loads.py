"""``state``'s reads: what it loads at start-up and for the ledger check (read-only queries).

Every function takes an open async connection (``state`` uses a read-only one) and returns
domain values through the ``db.rows`` converters, the same ones the live path uses, so a
ledger rebuilt from these rows equals the one ``state`` built incrementally.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, dict_row

from coldharbour.db import rows as r
from coldharbour.db.names import AccountNames, SharedNames
from coldharbour.domain.types import Fill, OpenRow, Order, SliceKey, from_datetime
from coldharbour.messages import ActivityRecord

Connection = psycopg.AsyncConnection[TupleRow]


def _columns(names: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


async def load_open_rows(conn: Connection, names: AccountNames) -> dict[str, OpenRow]:
    """Return the stored open-position rows by ``parent_id``."""
    query = sql.SQL("SELECT {c} FROM {t}").format(c=_columns(r.POSITION_COLUMNS), t=names.positions.ident)
    cursor = await conn.execute(query)
    return {row[0]: r.open_row_from_values(row) for row in await cursor.fetchall()}


async def load_closed_keys(conn: Connection, names: AccountNames) -> set[SliceKey]:
    """Return the (entry_lot_id, exit_order_id) key of every stored closed slice."""
    query = sql.SQL("SELECT entry_lot_id, exit_order_id FROM {t}").format(t=names.closed.ident)
    cursor = await conn.execute(query)
    return {(str(row[0]), str(row[1])) for row in await cursor.fetchall()}


async def load_marks(conn: Connection, shared: SharedNames) -> dict[str, tuple[Decimal, int]]:
    """Return the last stored price and its time (UTC ns) per symbol from ``latest_prices``."""
    query = sql.SQL("SELECT symbol, price, ts FROM {t}").format(t=shared.latest_prices.ident)
    cursor = await conn.execute(query)
    return {row[0]: (row[1], from_datetime(row[2])) for row in await cursor.fetchall()}


async def load_orders(conn: Connection, names: AccountNames) -> list[Order]:
    """Return every stored raw order version (one per id: the newest).

    Of ``raw_json`` (the broker's whole order, parsed client-side) only ``order_class`` is read:
    fetching just that halves the load of a long history (``scripts/bench`` ``rebuild_1m``).
    """
    columns = sql.SQL(", ").join(
        sql.SQL("jsonb_build_object('order_class', raw_json->'order_class') AS raw_json")
        if c == "raw_json" else sql.Identifier(c)
        for c in r.ORDER_COLUMNS
    )  # fmt: skip
    query = sql.SQL("SELECT {c} FROM {t} ORDER BY created_at, id").format(c=columns, t=names.raw_orders.ident)
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query)
        found = await cursor.fetchall()
    orders = []
    for row in found:
        row["id"] = str(row["id"])
        orders.append(r.order_from_values(row))
    return orders


async def load_fill_activities(conn: Connection, names: AccountNames) -> list[ActivityRecord]:
    """Return every stored ``FILL`` activity, oldest first."""
    columns = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c)) if c == "raw_json" else sql.Identifier(c)
        for c in r.ACTIVITY_COLUMNS
    )
    query = sql.SQL("SELECT {c} FROM {t} WHERE activity_type = 'FILL' ORDER BY transaction_time, id").format(
        c=columns, t=names.raw_activities.ident
    )
    cursor = await conn.execute(query)
    return [r.activity_from_values(row) for row in await cursor.fetchall()]


async def load_fills(conn: Connection, names: AccountNames) -> list[Fill]:
    """Return the fills of every stored ``FILL`` activity (incomplete rows are skipped)."""
    fills = (r.fill_from_activity(record) for record in await load_fill_activities(conn, names))
    return [fill for fill in fills if fill is not None]


async def load_history(conn: Connection, names: AccountNames) -> tuple[list[Order], list[Fill]]:
    """Return the stored orders and fills of one account (what a ledger rebuild needs)."""
    return await load_orders(conn, names), await load_fills(conn, names)


def is_json_object(payload: str) -> bool:
    """Return True when ``payload`` is a JSON object (what the KPI column must hold)."""
    try:
        return isinstance(msgspec.json.decode(payload), dict)
    except msgspec.DecodeError:
        return False

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

from coldharbour.broker.convert import CORPORATE_CODES, corporate_legs
from coldharbour.db import rows as r
from coldharbour.db.names import AccountNames, SharedNames
from coldharbour.domain.corporate import CorporateAction, actions_from_legs
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


async def load_activities(conn: Connection, names: AccountNames, types: tuple[str, ...] = ("FILL",)
                          ) -> list[ActivityRecord]:
    """Return every stored activity of ``types`` (default ``FILL``), oldest first."""
    columns = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c)) if c == "raw_json" else sql.Identifier(c)
        for c in r.ACTIVITY_COLUMNS
    )
    query = sql.SQL("SELECT {c} FROM {t} WHERE activity_type = ANY(%s) ORDER BY transaction_time, id").format(
        c=columns, t=names.raw_activities.ident
    )
    cursor = await conn.execute(query, (list(types),))
    return [r.activity_from_values(row) for row in await cursor.fetchall()]


async def load_fill_activities(conn: Connection, names: AccountNames) -> list[ActivityRecord]:
    """Return every stored ``FILL`` activity, oldest first."""
    return await load_activities(conn, names)


def split_busted(records: list[ActivityRecord]) -> tuple[list[Fill], set[str]]:
    """Return the fills of ``records`` without the busted ones, and the busted keys (SPEC §8).

    A ``FILL`` row whose broker status is ``canceled`` busts its execution: every stored row
    of the same key (the stream's and the REST one) leaves the history.
    """
    fills: list[Fill] = []
    busted: set[str] = set()
    for record in records:
        fill = r.fill_from_activity(record)
        if fill is None:
            continue
        if r.is_canceled(record):
            busted.add(fill.key)
        else:
            fills.append(fill)
    return [fill for fill in fills if fill.key not in busted], busted


async def load_fills(conn: Connection, names: AccountNames) -> list[Fill]:
    """Return the fills of every stored ``FILL`` activity (incomplete rows and busts are skipped)."""
    return split_busted(await load_fill_activities(conn, names))[0]


async def load_busted_keys(conn: Connection, names: AccountNames) -> set[str]:
    """Return the keys of the stored executions the broker canceled."""
    return split_busted(await load_fill_activities(conn, names))[1]


async def load_actions(conn: Connection, names: AccountNames) -> list[CorporateAction]:
    """Return the corporate actions the stored SPLIT/SC/NC/MA/SPIN/CIL legs describe (SPEC §8).

    No table of their own: they are re-derived the way ``snapshot`` derived them
    (``corporate_legs`` then ``actions_from_legs``), so the start-up rebuild books the same ones.
    """
    records = await load_activities(conn, names, tuple(sorted(CORPORATE_CODES)))
    return actions_from_legs(corporate_legs(records))[0]


async def load_history(conn: Connection, names: AccountNames) -> tuple[list[Order], list[Fill]]:
    """Return the stored orders and fills of one account (what a ledger rebuild needs)."""
    return await load_orders(conn, names), await load_fills(conn, names)


def is_json_object(payload: str) -> bool:
    """Return True when ``payload`` is a JSON object (what the KPI column must hold)."""
    try:
        return isinstance(msgspec.json.decode(payload), dict)
    except msgspec.DecodeError:
        return False

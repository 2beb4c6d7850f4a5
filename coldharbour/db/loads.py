"""``state``'s reads: what it loads at start-up and for the ledger check (read-only queries).

Every function takes an open async connection (``state`` uses a read-only one) and returns
domain values through the ``db.rows`` converters, so a ledger rebuilt from these rows equals the
one ``state`` built incrementally. The start-up load (``load_start``, ``load_history``) is the
long one: a server-side cursor, conversions done by the server, rows straight into ``Order`` and
``Fill`` with equal strings and numbers shared (``rows.Interner``); its tuple converters follow the
record converters of the live path rule for rule (``tests/db/test_loads.py`` holds them equal).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from coldharbour.db import rows as r
from coldharbour.db import tables
from coldharbour.db.names import AccountNames, SharedNames
from coldharbour.domain import stored
from coldharbour.domain.corporate import (
    CORPORATE_CODES,
    CorporateAction,
    SpinoffBasis,
    actions_from_legs,
    corporate_legs,
    with_bases,
)
from coldharbour.domain.reports import TICK_FUTURE_NS, ActivityRecord
from coldharbour.domain.types import Fill, OpenRow, Order, SliceKey, from_datetime

Connection = psycopg.AsyncConnection[TupleRow]
log = logging.getLogger(__name__)


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


async def load_marks(conn: Connection, shared: SharedNames, *, now_ns: int) -> dict[str, tuple[Decimal, int]]:
    """Return the last stored price and its time (UTC ns) per symbol from ``latest_prices``.

    A mark stamped more than ``reports.TICK_FUTURE_NS`` after ``now_ns`` is left out (logged):
    taken back, its time would outrank every real print after the restart and freeze the mark.
    """
    query = sql.SQL("SELECT symbol, price, ts FROM {t}").format(t=shared.latest_prices.ident)
    cursor = await conn.execute(query)
    horizon_ns = now_ns + TICK_FUTURE_NS
    marks: dict[str, tuple[Decimal, int]] = {}
    future: list[str] = []
    for symbol, price, ts in await cursor.fetchall():
        ts_ns = from_datetime(ts)
        if ts_ns > horizon_ns:
            future.append(symbol)
        else:
            marks[symbol] = (price, ts_ns)
    if future:
        log.warning("stored marks stamped in the future ignored count=%d symbols=%s", len(future),
                    ",".join(sorted(future)[:10]))
    return marks


def _ns(column: str) -> sql.Composable:
    """``column`` (``timestamptz``) as UTC nanoseconds, converted by the server (exact: microseconds)."""
    return sql.SQL("(extract(epoch FROM {}) * 1000000000)::int8").format(sql.Identifier(column))


# What a rebuild needs of a stored order, converted by the server: ids and numbers as text (one
# ``Decimal`` per distinct text: ``rows.Interner``; text is also the fastest way psycopg reads them), times as UTC ns,
# ``order_class`` out of ``raw_json`` (the broker's whole order is never parsed client-side), the
# legs as JSON text (null for all but bracket/OTO/OCO parents). Read by ``rows.order_from_tuple``.
_ORDER_SELECT: Final = sql.SQL(", ").join([
    sql.SQL("id::text"), *map(sql.Identifier, ("symbol", "side", "order_type", "status")), _ns("created_at"),
    sql.SQL("(extract(epoch FROM coalesce(updated_at, created_at)) * 1000000000)::int8"),
    sql.SQL("raw_json->>'order_class'"),
    *(sql.SQL("{}::text").format(sql.Identifier(c))
      for c in ("qty", "filled_qty", "filled_avg_price", "limit_price", "stop_price")),
    *map(sql.Identifier, ("parent_id", "replaces", "replaced_by")),
    sql.SQL("legs::text"), _ns("expires_at"), _ns("filled_at"), sql.Identifier("client_order_id"),
])  # fmt: skip
# What a fill needs of a stored ``FILL`` activity, the ``raw_json`` fallbacks resolved by the
# server (``stored.fill_from_activity``'s rules, column first): read by ``rows.fill_from_tuple``.
_FILL_SELECT: Final = sql.SQL(
    "coalesce(order_id::text, nullif(raw_json->>'order_id', '')), symbol,"
    " lower(coalesce(nullif(side, ''), nullif(raw_json->>'side', ''), '')), qty::text, price::text,"
    " (extract(epoch FROM transaction_time) * 1000000000)::int8,"
    " coalesce(execution_id::text, nullif(raw_json->>'execution_id', ''),"
    " nullif(regexp_replace(id, '^.*::', ''), ''), id),"
    " raw_json->>'cum_qty', jsonb_typeof(raw_json->'cum_qty') = 'string',"
    # the status first: the whole document as text only for the rare canceled row
    " lower(coalesce(raw_json->>'status', '')) = 'canceled' AND strpos(raw_json::text, '\"canceled\"') > 0"
)
FETCH_ROWS: Final = 10_000  # rows per round trip of the server-side cursor


def history_queries(names: AccountNames) -> tuple[sql.Composed, sql.Composed]:
    """Return the SELECTs of the start-up load: orders, then ``FILL`` activities and the
    reconciliation fills (their own table, same columns) in one time order (``scripts/bench`` also
    fetches them raw, beside its baseline)."""
    return (
        sql.SQL("SELECT {c} FROM {t} ORDER BY created_at, id").format(c=_ORDER_SELECT, t=names.raw_orders.ident),
        sql.SQL("SELECT {c} FROM (SELECT * FROM {t} WHERE activity_type = 'FILL' UNION ALL "
                "SELECT * FROM {r} WHERE activity_type = 'FILL') AS fills ORDER BY transaction_time, id").format(
            c=_FILL_SELECT, t=names.raw_activities.ident, r=names.reconciliations.ident),
    )  # fmt: skip


async def _stream(conn: Connection, query: sql.Composed) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Yield the rows of ``query`` in batches from a server-side cursor (never all rows at once).

    The next ``FETCH`` is sent before a batch is handed over: the server prepares it while the
    caller converts this one (either alone left half the start-up load waiting on the other).
    """
    async with conn.transaction(), conn.cursor(name="chmgr_load") as cursor:
        await cursor.execute(query)
        pending = asyncio.ensure_future(cursor.fetchmany(FETCH_ROWS))
        try:
            while batch := await pending:
                pending = asyncio.ensure_future(cursor.fetchmany(FETCH_ROWS))
                await asyncio.sleep(0)  # the task runs up to its wait for the reply: the FETCH is sent
                yield batch
        finally:
            if not pending.done():
                await asyncio.wait([pending])  # the connection must finish the FETCH before the cursor closes


async def load_orders(conn: Connection, names: AccountNames, shared: r.Interner | None = None) -> list[Order]:
    """Return every stored raw order version (one per id: the newest).

    ``shared`` makes equal strings and numbers one object across what is loaded with it.
    """
    interner = r.Interner() if shared is None else shared
    orders: list[Order] = []
    async for batch in _stream(conn, history_queries(names)[0]):
        orders.extend(r.order_from_tuple(row, interner) for row in batch)
    return orders


async def load_fills_and_busted(conn: Connection, names: AccountNames, shared: r.Interner | None = None
                                ) -> tuple[list[Fill], set[str]]:
    """Return the fills of every stored ``FILL`` activity without the busted ones, and the busted keys.

    Same rules as ``split_busted`` over ``load_fill_activities``, read straight from the rows:
    incomplete rows are skipped; a row the broker ``canceled`` busts every row of its key (docs/spec.md §8).
    """
    interner = r.Interner() if shared is None else shared
    fills: list[Fill] = []
    busted: set[str] = set()
    async for batch in _stream(conn, history_queries(names)[1]):
        for row in batch:
            fill = r.fill_from_tuple(row, interner)
            if fill is None:
                continue
            if row[-1]:
                busted.add(fill.key)
            else:
                fills.append(fill)
    return ([fill for fill in fills if fill.key not in busted] if busted else fills), busted


async def load_start(conn: Connection, names: AccountNames) -> tuple[list[Order], list[Fill], set[str]]:
    """Return one account's stored orders, fills (busts left out) and busted keys, sharing equal values."""
    shared = r.Interner()
    orders = await load_orders(conn, names, shared)
    fills, busted = await load_fills_and_busted(conn, names, shared)
    return orders, fills, busted


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
    """Return the fills of ``records`` without the busted ones, and the busted keys (docs/spec.md §8).

    A ``FILL`` row whose broker status is ``canceled`` busts its execution: every stored row
    of the same key (the stream's and the REST one) leaves the history.
    """
    fills: list[Fill] = []
    busted: set[str] = set()
    for record in records:
        fill = stored.fill_from_activity(record)
        if fill is None:
            continue
        if stored.is_canceled(record):
            busted.add(fill.key)
        else:
            fills.append(fill)
    return [fill for fill in fills if fill.key not in busted], busted


async def load_fills(conn: Connection, names: AccountNames) -> list[Fill]:
    """Return the fills of every stored ``FILL`` activity (incomplete rows and busts are skipped)."""
    return (await load_fills_and_busted(conn, names))[0]


async def load_busted_keys(conn: Connection, names: AccountNames) -> set[str]:
    """Return the keys of the stored executions the broker canceled."""
    return (await load_fills_and_busted(conn, names))[1]


async def load_actions(conn: Connection, names: AccountNames) -> list[CorporateAction]:
    """Return the corporate actions the stored SPLIT/SC/NC/MA/SPIN/CIL legs describe (docs/spec.md §8).

    No table of their own: they are re-derived the way ``snapshot`` derived them
    (``corporate_legs`` then ``actions_from_legs``), so the start-up rebuild books the same ones;
    a spin-off takes its stored basis allocation (``spinoff_bases``: the SPIN leg names only the
    new shares).
    """
    records = await load_activities(conn, names, tuple(sorted(CORPORATE_CODES)))
    return with_bases(actions_from_legs(corporate_legs(records))[0], await load_spinoff_bases(conn, names))


async def load_spinoff_bases(conn: Connection, names: AccountNames) -> list[SpinoffBasis]:
    """Return every stored spin-off basis allocation."""
    return [SpinoffBasis(action_id=a, parent=p, parent_share=share, source=src, set_at=from_datetime(at))
            for a, p, share, src, at in await load_rows(conn, tables.SPINOFF_BASES, names)]  # fmt: skip


async def load_rows(conn: Connection, spec: tables.TableSpec, names: AccountNames | SharedNames) -> list[TupleRow]:
    """Return every stored row of a described table: its written columns in row order, ordered by its key."""
    query = sql.SQL("SELECT {c} FROM {t} ORDER BY {k}").format(
        c=_columns(spec.names), t=spec.table(names).ident, k=_columns(spec.key))
    cursor = await conn.execute(query)
    return await cursor.fetchall()


async def load_history(conn: Connection, names: AccountNames) -> tuple[list[Order], list[Fill]]:
    """Return the stored orders and fills of one account (what a ledger rebuild needs)."""
    orders, fills, _ = await load_start(conn, names)
    return orders, fills


def is_json_object(payload: str) -> bool:
    """Return True when ``payload`` is a JSON object (what the KPI column must hold)."""
    try:
        return isinstance(msgspec.json.decode(payload), dict)
    except msgspec.DecodeError:
        return False

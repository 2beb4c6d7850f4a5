"""Idempotent write statements (used only through ``db.writer`` by ``state``).

Every upsert writes only when the stored row differs (``ON CONFLICT … DO UPDATE … WHERE …
IS DISTINCT FROM …``) and ``RETURNING`` reports the rows that really changed, so replaying a
message writes nothing and notifies nothing (STYLE.md §2.5 rule 4). ``updated_at``/``ingested_at``
are never part of the comparison: they say when a change happened, they are not one.

Batches are one statement each: the rows travel as one typed array per column and are
``unnest``-ed server-side, or, from ``COPY_MIN_ROWS`` rows on, are COPY-ed into a temporary table
the statement reads (``db.writer.CopyIn``). Measured on this machine (2 cores, local PostgreSQL,
10,000 open-position rows whose marks all changed, one transaction): ``unnest`` 200–220 ms (of
which ~100 ms is psycopg building the text arrays in Python), ``executemany`` 346–443 ms, COPY +
``INSERT … SELECT … ON CONFLICT`` 117–153 ms (``scripts/bench`` ``flush_10k``). Below a few
hundred rows the temp table's fixed cost makes ``unnest`` the faster form.

Column lists come from ``db.rows`` constants only; identifiers are ``psycopg.sql``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal

from psycopg import sql
from psycopg.rows import TupleRow

from coldharbour.db import rows as r
from coldharbour.db.names import Table
from coldharbour.db.notify import Notification
from coldharbour.db.writer import CopyIn, Step
from coldharbour.domain.types import CLOSED_COLUMNS

Announce = Callable[[list[TupleRow]], list[Notification]]
COPY_MIN_ROWS = 500
_COPY_IDS = itertools.count(1)  # temp table names: two COPY steps of one commit never collide


def _ids(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _unnest(types: Sequence[str]) -> sql.Composed:
    # The types are fixed literals from ``db.rows``, never input.
    return sql.SQL("SELECT * FROM unnest({})").format(
        sql.SQL(", ").join(sql.SQL("%s::" + t + "[]") for t in types)
    )


def _upsert(
    table: Table,
    columns: Sequence[str],
    types: Sequence[str],
    key: Sequence[str],
    rows: Sequence[tuple[object, ...]],
    *,
    compare: Sequence[str] | None = None,
    returning: Sequence[str] | None = None,
    announce: Announce | None = None,
    stamp: str | None = "updated_at",
) -> Step:
    """Return ``INSERT … SELECT unnest … ON CONFLICT (key) DO UPDATE … WHERE distinct RETURNING key``.

    From ``COPY_MIN_ROWS`` rows on, the ``SELECT`` reads a temporary table the rows are COPY-ed into.
    """
    rows = list(rows)
    copy_in = None
    select: sql.Composable = _unnest(types)
    if len(rows) >= COPY_MIN_ROWS:
        copy_in = CopyIn(f"copy_{next(_COPY_IDS)}", table.ident, columns, rows)
        select = sql.SQL("SELECT {cols} FROM {t}").format(cols=_ids(columns), t=sql.Identifier(copy_in.temp))
    updated = [c for c in columns if c not in key]
    compared = list(compare) if compare is not None else [c for c in updated if c != stamp]
    sets = [sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated]
    if stamp is not None and stamp not in columns:
        sets.append(sql.SQL("{c} = now()").format(c=sql.Identifier(stamp)))
    statement = sql.SQL(
        "INSERT INTO {t} AS cur ({cols}) {select} ON CONFLICT ({key}) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING {ret}"
    ).format(
        t=table.ident, cols=_ids(columns), select=select, key=_ids(key),
        sets=sql.SQL(", ").join(sets),
        old=sql.SQL(", ").join(sql.SQL("cur.{}").format(sql.Identifier(c)) for c in compared),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in compared),
        ret=_ids(returning or key),
    )  # fmt: skip
    if copy_in is not None:
        return Step(statement, announce=announce, copy=copy_in)
    return Step(statement, r.columns_of(rows, len(columns)), announce=announce)


def latest_prices(table: Table, prices: Sequence[tuple[str, Decimal, datetime]]) -> Step:
    """Return one statement upserting (symbol, price, ts) rows; an older ``ts`` never wins."""
    statement = sql.SQL(
        """INSERT INTO {t} AS cur (symbol, price, ts)
           SELECT * FROM unnest(%s::text[], %s::numeric[], %s::timestamptz[])
           ON CONFLICT (symbol) DO UPDATE SET price = EXCLUDED.price, ts = EXCLUDED.ts
           WHERE EXCLUDED.ts >= cur.ts AND (cur.price, cur.ts) IS DISTINCT FROM (EXCLUDED.price, EXCLUDED.ts)
           RETURNING symbol"""
    ).format(t=table.ident)
    return Step(statement, ([p[0] for p in prices], [p[1] for p in prices], [p[2] for p in prices]))


def price_bars(table: Table, bars: Sequence[tuple[str, datetime, Decimal, Decimal, Decimal, Decimal, Decimal]]) -> Step:
    """Return one statement merging 1-minute bars (symbol, ts, open, high, low, close, volume).

    A bar already stored for that minute (e.g. by a previous run of ``state``) keeps its open;
    highs and lows widen; the close and the volume are the newest seen.
    """
    statement = sql.SQL(
        """INSERT INTO {t} AS cur (symbol, ts, open, high, low, close, volume)
           SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::numeric[], %s::numeric[],
                                %s::numeric[], %s::numeric[], %s::numeric[])
           ON CONFLICT (symbol, ts) DO UPDATE SET high = greatest(cur.high, EXCLUDED.high),
               low = least(cur.low, EXCLUDED.low), close = EXCLUDED.close,
               volume = greatest(cur.volume, EXCLUDED.volume)
           WHERE (cur.high, cur.low, cur.close, cur.volume) IS DISTINCT FROM
                 (greatest(cur.high, EXCLUDED.high), least(cur.low, EXCLUDED.low), EXCLUDED.close,
                  greatest(cur.volume, EXCLUDED.volume))
           RETURNING symbol"""
    ).format(t=table.ident)
    return Step(statement, r.columns_of(list(bars), 7))


def positions(table: Table, values: Sequence[tuple[object, ...]], announce: Announce | None = None) -> Step:
    """Return the upsert of open-position rows (``rows.POSITION_COLUMNS``); RETURNING parent_id."""
    return _upsert(table, r.POSITION_COLUMNS, r.POSITION_TYPES, ("parent_id",), values, announce=announce)


def delete_positions(table: Table, parent_ids: Sequence[str], announce: Announce | None = None) -> Step:
    """Return the delete of open-position rows by ``parent_id``; RETURNING the deleted ids."""
    statement = sql.SQL("DELETE FROM {t} WHERE parent_id = ANY(%s::text[]) RETURNING parent_id").format(t=table.ident)
    return Step(statement, (list(parent_ids),), announce=announce)


def closed(table: Table, values: Sequence[tuple[object, ...]], announce: Announce | None = None) -> Step:
    """Return the upsert of closed slices (``CLOSED_COLUMNS``); RETURNING the changed keys."""
    return _upsert(
        table, CLOSED_COLUMNS, r.CLOSED_TYPES, ("entry_lot_id", "exit_order_id"), values, announce=announce
    )


def delete_closed(table: Table, keys: Sequence[tuple[str, str]]) -> Step:
    """Return the delete of closed slices by (entry_lot_id, exit_order_id)."""
    statement = sql.SQL(
        "DELETE FROM {t} AS c USING unnest(%s::text[], %s::text[]) AS k(lot, exit) "
        "WHERE c.entry_lot_id = k.lot AND c.exit_order_id = k.exit RETURNING c.entry_lot_id"
    ).format(t=table.ident)
    return Step(statement, ([k[0] for k in keys], [k[1] for k in keys]))


def raw_orders(table: Table, values: Sequence[tuple[object, ...]]) -> Step:
    """Return the upsert of raw order versions; an older ``updated_at`` never overwrites (D38).

    Links and legs a version lacks (a stream payload without ``legs``/``parent_id``) keep their
    stored value instead of being nulled.
    """
    keep = {"parent_id", "replaced_by", "replaces", "legs"}
    updated = [c for c in r.ORDER_COLUMNS if c != "id"]
    sets = [
        sql.SQL("{c} = coalesce(EXCLUDED.{c}, cur.{c})" if c in keep else "{c} = EXCLUDED.{c}").format(
            c=sql.Identifier(c)
        )
        for c in updated
    ]
    sets.append(sql.Composed([sql.SQL("ingested_at = now()")]))
    compared = [sql.SQL("cur.{}").format(sql.Identifier(c)) for c in updated]
    incoming = [
        sql.SQL("coalesce(EXCLUDED.{c}, cur.{c})" if c in keep else "EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in updated
    ]
    statement = sql.SQL(
        "INSERT INTO {t} AS cur ({cols}) {select} ON CONFLICT (id) DO UPDATE SET {sets} "
        "WHERE (cur.updated_at IS NULL OR EXCLUDED.updated_at >= cur.updated_at) "
        "AND ({old}) IS DISTINCT FROM ({new}) RETURNING id"
    ).format(
        t=table.ident, cols=_ids(r.ORDER_COLUMNS), select=_unnest(r.ORDER_TYPES),
        sets=sql.SQL(", ").join(sets), old=sql.SQL(", ").join(compared), new=sql.SQL(", ").join(incoming),
    )  # fmt: skip
    return Step(statement, r.columns_of(list(values), len(r.ORDER_COLUMNS)))


def raw_activities(table: Table, values: Sequence[tuple[object, ...]], *, fills_by_execution: bool) -> Step:
    """Return the upsert of raw activities.

    ``fills_by_execution``: the rows are FILLs with an ``execution_id`` and conflict on the
    partial unique index (one row per execution, whatever id each source gave it); otherwise
    on ``id``. Corrections to an activity are stored (D39).
    """
    if fills_by_execution:
        key = sql.SQL("(execution_id) WHERE activity_type = 'FILL' AND execution_id IS NOT NULL")
    else:
        key = sql.SQL("(id)")
    updated = [c for c in r.ACTIVITY_COLUMNS if c != "id" and (c != "execution_id" or not fills_by_execution)]
    statement = sql.SQL(
        "INSERT INTO {t} AS cur ({cols}) {select} ON CONFLICT {key} DO UPDATE SET {sets}, ingested_at = now() "
        "WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING id"
    ).format(
        t=table.ident, cols=_ids(r.ACTIVITY_COLUMNS), select=_unnest(r.ACTIVITY_TYPES), key=key,
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated),
        old=sql.SQL(", ").join(sql.SQL("cur.{}").format(sql.Identifier(c)) for c in updated),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in updated),
    )  # fmt: skip
    return Step(statement, r.columns_of(list(values), len(r.ACTIVITY_COLUMNS)))


def cash_flows(table: Table, values: Sequence[tuple[object, ...]]) -> Step:
    """Return the upsert of cash-flow rows (``rows.CASH_FLOW_COLUMNS``)."""
    return _upsert(table, r.CASH_FLOW_COLUMNS, r.CASH_FLOW_TYPES, ("id",), values)


def equity_daily(table: Table, values: Sequence[tuple[object, ...]]) -> Step:
    """Return the upsert of daily equity rows (``rows.DAILY_COLUMNS``)."""
    return _upsert(table, r.DAILY_COLUMNS, r.DAILY_TYPES, ("date",), values)


def delete_equity_daily_except(table: Table, keep: Sequence[date]) -> Step:
    """Return the delete of daily rows whose date is not in ``keep`` (after a full rebuild)."""
    statement = sql.SQL("DELETE FROM {t} WHERE NOT (date = ANY(%s::date[])) RETURNING date").format(t=table.ident)
    return Step(statement, (list(keep),))


def equity_intraday(table: Table, values: Sequence[tuple[object, ...]]) -> Step:
    """Return the upsert of intraday equity points (``rows.INTRADAY_COLUMNS``)."""
    return _upsert(table, r.INTRADAY_COLUMNS, r.INTRADAY_TYPES, ("ts",), values)


def metrics(table: Table, payload: str, announce: Announce | None = None) -> Step:
    """Return the write of the ``latest`` KPI document; RETURNING ``updated_at`` only if it changed.

    The comparison ignores ``as_of`` (the computation time, which changes every run): a
    document is new only when a KPI changed.
    """
    statement = sql.SQL(
        """INSERT INTO {t} AS cur (id, metrics_payload) VALUES ('latest', %s)
           ON CONFLICT (id) DO UPDATE SET metrics_payload = EXCLUDED.metrics_payload, updated_at = now()
           WHERE (cur.metrics_payload::jsonb - 'as_of') IS DISTINCT FROM (EXCLUDED.metrics_payload::jsonb - 'as_of')
           RETURNING updated_at"""
    ).format(t=table.ident)
    return Step(statement, (payload,), announce=announce)


def market_schedule(table: Table, values: Sequence[tuple[object, ...]]) -> Step:
    """Return the upsert of market sessions (``rows.SESSION_COLUMNS``)."""
    return _upsert(table, r.SESSION_COLUMNS, r.SESSION_TYPES, ("session_date",), values)


def prune_market_schedule(table: Table, before: date) -> Step:
    """Return the delete of sessions dated before ``before``."""
    statement = sql.SQL("DELETE FROM {t} WHERE session_date < %s RETURNING session_date").format(t=table.ident)
    return Step(statement, (before,))

"""What the dashboard page shows, read from the tables (read-only) as JSON-ready values.

The `web` program's queries (``web.app`` and ``web.hub`` call them); they live in ``db/`` with
the other queries so that ``web/`` holds no SQL.

What one page load or one push shows is read from one snapshot (``queries.one_snapshot``, a
REPEATABLE READ transaction): ``page`` reads the open lots, the closed slices, both curves and the
KPI document together, so a commit of ``state`` between two of its reads cannot make the KPI cards
and the tables describe two different moments; ``equity`` and ``equity_if_moved`` read their
several statements the same way. A function of one statement needs nothing more.

Every function takes one read-only connection and an account's names; rows come back as dicts
keyed by the column names of docs/spec.md §2 (the same keys as the NOTIFY rows, so the page handles
a snapshot row and a pushed row alike). Decimals stay ``Decimal`` until ``notify.to_json``
writes their exact digits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from coldharbour.db import queries
from coldharbour.db.names import AccountNames, SharedNames
from coldharbour.db.rows import POSITION_COLUMNS
from coldharbour.domain.report import daily_curve
from coldharbour.domain.schedule import ny_date, ny_wall_to_utc, phase_at
from coldharbour.domain.types import CLOSED_COLUMNS

Conn = psycopg.AsyncConnection[TupleRow]
Row = dict[str, Any]

CLOSED_LIMIT: Final = 100
DAILY_LIMIT: Final = 400
INTRADAY_LIMIT: Final = 2_000
INTRADAY_COLUMNS: Final = ("ts", "deposit", "cumulative_return", "drawdown", "realised_return")
PHASE_WINDOW: Final = timedelta(days=7)


def _columns(names: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in names)


async def _rows(conn: Conn, query: sql.Composed, columns: Sequence[str], params: Sequence[Any] = ()) -> list[Row]:
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        return [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]


async def positions(conn: Conn, names: AccountNames, parent_id: str | None = None) -> list[Row]:
    """Return the open lots (one, when ``parent_id`` is given), oldest fill first."""
    where = sql.SQL("TRUE") if parent_id is None else sql.SQL("parent_id = %s")
    query = sql.SQL("SELECT {c} FROM {t} WHERE {w} ORDER BY filled_at NULLS LAST, parent_id").format(
        c=_columns(POSITION_COLUMNS), t=names.positions.ident, w=where
    )
    return await _rows(conn, query, POSITION_COLUMNS, [] if parent_id is None else [parent_id])


async def closed(conn: Conn, names: AccountNames, limit: int = CLOSED_LIMIT) -> list[Row]:
    """Return the newest ``limit`` closed slices, newest exit first."""
    query = sql.SQL("SELECT {c} FROM {t} ORDER BY exit_time DESC NULLS LAST, entry_lot_id LIMIT %s").format(
        c=_columns(CLOSED_COLUMNS), t=names.closed.ident
    )
    return await _rows(conn, query, CLOSED_COLUMNS, [limit])


async def equity(conn: Conn, names: AccountNames) -> dict[str, list[Row]]:
    """Return the daily curve (oldest first) and the intraday curve of the newest NY day, read from one snapshot.

    The daily curve is ``domain.report.daily_curve`` of every stored day (the report's cumulative
    time-weighted return, net of cash flows, beside the dollars), its newest ``DAILY_LIMIT`` days.
    """
    async with queries.one_snapshot(conn):
        return await _curves(conn, names)


async def _curves(conn: Conn, names: AccountNames) -> dict[str, list[Row]]:
    days = await queries.daily_summaries_changed(conn, names, None)  # all: the return compounds from the first
    daily = [msgspec.structs.asdict(point) for point in daily_curve(days.rows)[-DAILY_LIMIT:]]
    newest = await _rows(conn, sql.SQL("SELECT max(ts) FROM {t}").format(t=names.equity_intraday.ident), ("ts",))
    intraday: list[Row] = []
    if newest and newest[0]["ts"] is not None:
        start = ny_wall_to_utc(ny_date(newest[0]["ts"]), time(0, 0))
        query = sql.SQL("SELECT {c} FROM {t} WHERE ts >= %s ORDER BY ts LIMIT %s").format(
            c=_columns(INTRADAY_COLUMNS), t=names.equity_intraday.ident
        )
        intraday = await _rows(conn, query, INTRADAY_COLUMNS, [start, INTRADAY_LIMIT])
    return {"daily": daily, "intraday": intraday}


async def equity_if_moved(
    conn: Conn, names: AccountNames, seen: tuple[object, ...] | None
) -> tuple[tuple[object, ...], dict[str, list[Row]] | None]:
    """Return the equity tables' fingerprint and, when it differs from ``seen``, both curves (one snapshot)."""
    async with queries.one_snapshot(conn):
        mark = await equity_fingerprint(conn, names)
        return mark, None if mark == seen else await _curves(conn, names)


async def equity_fingerprint(conn: Conn, names: AccountNames) -> tuple[object, ...]:
    """Return what changes whenever either equity table is written (counts and newest stamps)."""
    query = sql.SQL(
        "SELECT (SELECT count(*) FROM {d}), (SELECT max(updated_at) FROM {d}), "
        "(SELECT count(*) FROM {i}), (SELECT max(updated_at) FROM {i})"
    ).format(d=names.equity_full.ident, i=names.equity_intraday.ident)
    async with conn.cursor() as cur:
        await cur.execute(query)
        row = await cur.fetchone()
    return tuple(row) if row else ()


async def metrics(conn: Conn, names: AccountNames) -> dict[str, Any] | None:
    """Return the KPI document (docs/spec.md §5), or None before the first one (or if unreadable)."""
    text = await queries.stored_metrics_payload(conn, names)
    if not text:
        return None
    try:
        document = json.loads(text, parse_float=Decimal)  # keep the stored digits
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


async def page(conn: Conn, names: AccountNames) -> dict[str, Any]:
    """Return what one page load shows, read from one snapshot: ``positions`` (the open lots),
    ``closed`` (the newest slices), ``equity`` (both curves) and ``metrics`` (the KPI document)."""
    async with queries.one_snapshot(conn):
        return {
            "positions": await positions(conn, names),
            "closed": await closed(conn, names),
            "equity": await _curves(conn, names),
            "metrics": await metrics(conn, names),
        }


async def market_phase(conn: Conn, shared: SharedNames, now: datetime) -> str | None:
    """Return the session phase at ``now`` from the stored schedule (None without one)."""
    today = ny_date(now)
    sessions = await queries.sessions_between(conn, shared, today - PHASE_WINDOW, today + PHASE_WINDOW)
    return str(phase_at(sessions, now)) if sessions else None

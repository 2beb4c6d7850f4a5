"""The read-only queries behind the operator's commands (`chmgr doctor`, `chmgr positions`).

Each takes an open read-only connection and returns plain values; the commands in ``cli/`` word
them. Identifiers come from ``db.names`` through ``psycopg.sql`` (never formatted into text).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final, NamedTuple

import psycopg
from psycopg import sql

from coldharbour.db.names import AccountNames, SharedNames

QUARANTINE_TABLE: Final = "quarantine"  # ``<ACCOUNT_SCHEMA>.quarantine``, written by `state`

Conn = psycopg.Connection[tuple[Any, ...]]


class EquityProof(NamedTuple):
    """Daily rows compared with the broker's portfolio history, those off by more than a cent,
    and the largest difference (``"<date> by <diff>"``)."""

    compared: int
    differ: int
    worst: str | None


class Quarantined(NamedTuple):
    """One change `state` set aside."""

    ts: datetime
    account: str
    kind: str
    key: str
    error: str


def server_version(conn: Conn) -> str:
    """Return the server's version."""
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def current_user(conn: Conn) -> str:
    """Return the role the connection logged in as."""
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"


def equity_proof(conn: Conn, names: AccountNames) -> EquityProof:
    """Return how the account's daily equity compares with the broker's portfolio history."""
    query = sql.SQL(
        "SELECT count(broker_equity), count(*) FILTER (WHERE abs(equity_diff) > 0.01), "
        "(SELECT date || ' by ' || equity_diff FROM {t} ORDER BY abs(equity_diff) DESC NULLS LAST LIMIT 1) "
        "FROM {t}"
    ).format(t=names.equity_full.ident)
    row = conn.execute(query).fetchone()
    return EquityProof(0, 0, None) if row is None else EquityProof(int(row[0]), int(row[1]), row[2])


def unclassified_codes(conn: Conn, names: AccountNames) -> list[tuple[str, int]]:
    """Return the activity codes stored as ``unclassified`` and how many of each."""
    query = sql.SQL(
        "SELECT type, count(*) FROM {t} WHERE category = 'unclassified' GROUP BY type ORDER BY type"
    ).format(t=names.cash_flows.ident)
    return [(str(code), int(n)) for code, n in conn.execute(query).fetchall()]


def schedule_end(conn: Conn, shared: SharedNames) -> date | None:
    """Return the last session date of the stored market schedule (None when empty)."""
    row = conn.execute(sql.SQL("SELECT max(session_date) FROM {t}").format(t=shared.market_schedule.ident)).fetchone()
    return row[0] if row else None


def quarantine(conn: Conn, account_schema: str, limit: int) -> tuple[int, list[Quarantined]] | None:
    """Return how many changes are quarantined and the newest ``limit`` (None: no quarantine table)."""
    found = conn.execute("SELECT to_regclass(%s)", [f"{account_schema}.{QUARANTINE_TABLE}"]).fetchone()
    if not found or found[0] is None:
        return None
    table = sql.Identifier(account_schema, QUARANTINE_TABLE)
    total = conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=table)).fetchone()
    rows = conn.execute(
        sql.SQL("SELECT ts, account, kind, key, error FROM {t} ORDER BY ts DESC LIMIT %s").format(t=table), [limit]
    ).fetchall()
    shown = [Quarantined(ts, str(account), str(kind), str(key), str(error)) for ts, account, kind, key, error in rows]
    return (int(total[0]) if total else 0), shown


def open_positions(conn: Conn, names: AccountNames, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Return ``columns`` of the account's open lots, by symbol then fill time."""
    query = sql.SQL("SELECT {columns} FROM {table} ORDER BY symbol, filled_at, parent_id").format(
        columns=sql.SQL(", ").join(sql.Identifier(column) for column in columns), table=names.positions.ident
    )
    return conn.execute(query).fetchall()


def spinoff_basis(conn: Conn, names: AccountNames, action_id: str) -> tuple[str, Decimal, str] | None:
    """Return the stored (parent, parent share, source) of spin-off ``action_id``, or None."""
    query = sql.SQL("SELECT parent, parent_share, source FROM {t} WHERE action_id = %s").format(
        t=names.spinoff_bases.ident)
    row = conn.execute(query, (action_id,)).fetchone()
    return (str(row[0]), Decimal(row[1]), str(row[2])) if row is not None else None


def listen(conn: Conn, channels: Sequence[str]) -> None:
    """``LISTEN`` on every channel (the connection must be in autocommit)."""
    for channel in channels:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

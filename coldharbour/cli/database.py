"""`chmgr db init`, `chmgr positions`, `chmgr watch`: the database as an operator sees it.

``db init`` is the one command here that writes (DDL through ``schema.ensure_schema``, which
serialises with ``state`` on an advisory lock), and it sets up the read-only role of
``CHMGR_READ_DSN`` (``db.roles``). ``positions`` and ``watch`` use read-only connections as that
role (``default_transaction_read_only=on``), like every program but ``state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from coldharbour import runtime
from coldharbour.cli.terminal import cell, printable
from coldharbour.config import AccountSettings, Settings
from coldharbour.db import checks, roles, schema
from coldharbour.db.connect import connect_sync, describe_error
from coldharbour.db.names import account_names
from coldharbour.domain.schedule import NEW_YORK
from coldharbour.errors import ChmgrError, DatabaseError

PROGRAM: Final = "chmgr"
# (column, heading) of the open-positions table, in display order (docs/spec.md column names).
POSITION_COLUMNS: Final = (
    ("symbol", "symbol"),
    ("side", "side"),
    ("qty", "qty"),
    ("avg_fill", "avg fill"),
    ("mkt_px", "mkt px"),
    ("mkt_value", "mkt value"),
    ("profit_loss", "P&L"),
    ("tp_px", "tp"),
    ("sl_px", "sl"),
    ("moved_flag", "moved"),
    ("holding_days", "days"),
    ("filled_at", "filled at (New York)"),
)


def init() -> None:
    """Create or upgrade the schema for every configured account; print what was applied."""
    settings = runtime.load_from_environment()
    with connect_sync(settings.dsn, PROGRAM, read_only=False) as conn:
        applied = schema.ensure_schema(conn, settings)
        conn.commit()
        with conn.transaction():
            granted = roles.ensure_roles(conn, settings)
    if not applied:
        versions = ", ".join(f"{scope} v{version}" for scope, version in schema.latest_versions(settings).items())
        typer.echo(f"schema is current ({versions})")
    else:
        for scope, version in applied:
            typer.echo(f"applied {scope} v{version}")
        typer.echo(f"schema is current at {settings.dsn}")
    for line in granted:
        typer.echo(line if settings.read_dsn is not None else f"warning: {line}", err=settings.read_dsn is None)


def _format(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}" if value == value.to_integral() else f"{value:f}".rstrip("0")
    if isinstance(value, datetime):
        return value.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M:%S")  # UTC stays in the database
    return str(value)


def load_positions(
    conn: psycopg.Connection[tuple[Any, ...]], settings: Settings, account: AccountSettings
) -> list[tuple[Any, ...]]:
    """Return the open rows of ``account`` (the ``POSITION_COLUMNS``), by symbol then fill time."""
    names = account_names(settings, account.slug)
    table = names.positions
    try:
        return checks.open_positions(conn, names, [column for column, _ in POSITION_COLUMNS])
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        raise DatabaseError(
            f"account {account.name!r}: table {table.schema}.{table.name} does not exist: run `chmgr db init`"
        ) from None


def positions() -> None:
    """Print each account's open positions (read-only connection)."""
    settings = runtime.load_from_environment()
    if not settings.accounts:
        raise ChmgrError("no account configured: set CHMGR_ACCOUNTS and ALPACA_API_KEY_<NAME>/ALPACA_SECRET_KEY_<NAME>")
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped: wide enough that rows do not wrap
    with connect_sync(settings.reader_dsn, PROGRAM, read_only=True) as conn:
        for account in settings.accounts:
            rows = load_positions(conn, settings, account)
            title = printable(f"{account.name} ({account.slug}): {len(rows)} open")
            table = Table(title=cell(title), title_justify="left")
            for _, heading in POSITION_COLUMNS:
                table.add_column(heading, justify="left" if heading in ("symbol", "side", "moved") else "right")
            for row in rows:
                table.add_row(*(cell(_format(value)) for value in row))
            console.print(table)


def channels(settings: Settings, accounts: Sequence[AccountSettings]) -> list[str]:
    """Return every NOTIFY channel of ``accounts``: positions, closed trades, metrics."""
    found = []
    for account in accounts:
        names = account_names(settings, account.slug)
        found += [names.pos_channel, names.closed_channel, names.metrics_channel]
    return found


def watch(
    count: int = typer.Option(0, "--count", min=0, help="stop after this many notifications (0: never)"),
    timeout_s: float = typer.Option(0.0, "--timeout-s", min=0.0, help="stop after this long (0: never)"),
) -> None:
    """Print every NOTIFY on each account's positions, closed and metrics channels until Ctrl-C."""
    settings = runtime.load_from_environment()
    listened = channels(settings, settings.accounts)
    if not listened:
        raise ChmgrError("no account configured: nothing to watch")
    with connect_sync(settings.reader_dsn, PROGRAM, read_only=True) as conn:
        conn.autocommit = True
        checks.listen(conn, listened)
        typer.echo(f"listening on {', '.join(listened)} (Ctrl-C to stop)")
        try:
            # Close the generator before the connection: a suspended one keeps the connection
            # locked, and leaving the `with` block would then wait forever.
            with closing(conn.notifies(timeout=timeout_s or None, stop_after=count or None)) as notes:
                for received, note in enumerate(notes, start=1):
                    stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
                    typer.echo(f"{stamp} {note.channel} {printable(note.payload)}")
                    if count and received >= count:
                        break
        except KeyboardInterrupt:
            return
        except psycopg.OperationalError as e:
            raise DatabaseError(f"lost the database connection: {describe_error(settings.reader_dsn, e)}") from None

"""Database roles: only `state` can write, enforced by PostgreSQL privileges.

Two logins:

- the **writer** is the role of ``CHMGR_DSN``: `chmgr db init` and `state` connect as it, it
  creates (so owns) every schema and table;
- the **reader** is the role of ``CHMGR_READ_DSN``, used by every other program and by the
  read-only CLI commands. `chmgr db init` creates it (``LOGIN``, with the DSN's password) when
  missing, gives it ``USAGE`` on the project's schemas and ``SELECT`` on their tables, now and
  for every table the writer creates later (``ALTER DEFAULT PRIVILEGES``), and nothing else.

A reader that lifts ``default_transaction_read_only`` still cannot write: the privilege is not
there (``InsufficientPrivilege``). Without ``CHMGR_READ_DSN`` every program logs in as the
writer and is read-only by session default only (a warning, and a ``WARN`` in `chmgr doctor`).
Every identifier is ``psycopg.sql``; the password is a ``sql.Literal``, never formatted in.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from coldharbour.config import Dsn, Settings
from coldharbour.errors import ConfigError, DatabaseError


def login_of(dsn: Dsn) -> tuple[str | None, str | None]:
    """Return the (user, password) ``dsn`` logs in with (None when the DSN does not say)."""
    parts: dict[str, Any] = conninfo_to_dict(dsn.reveal())
    user, password = parts.get("user"), parts.get("password")
    return (str(user) if user else None), (str(password) if password else None)


def schemas(settings: Settings) -> list[str]:
    """Return the schemas the project creates (``ACCOUNT_SCHEMA``, ``ACTIVITIES_SCHEMA``)."""
    return list(dict.fromkeys([settings.account_schema, settings.activities_schema]))


def ensure_roles(conn: psycopg.Connection[Any], settings: Settings) -> list[str]:
    """Create/refresh the reader role and its grants; return one line per thing done.

    Run by the writer after the schema exists (same transaction as the migrations).
    """
    if settings.read_dsn is None:
        return ["no CHMGR_READ_DSN: every program logs in as the writer (read-only by session default only)"]
    reader, password = login_of(settings.read_dsn)
    row = conn.execute("SELECT current_user").fetchone()
    writer = str(row[0]) if row else ""
    if not reader:
        raise ConfigError("CHMGR_READ_DSN: names no user: add user=<the read-only role>")
    if reader == writer:
        raise ConfigError(f"CHMGR_READ_DSN: logs in as {reader!r}, the writer itself: use a separate role")
    role = sql.Identifier(reader)
    done = []
    try:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [reader]).fetchone() is not None
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {r} LOGIN").format(r=role))
            done.append(f"created role {reader} (LOGIN)")
        if password:
            conn.execute(sql.SQL("ALTER ROLE {r} LOGIN PASSWORD {p}").format(r=role, p=sql.Literal(password)))
        conn.execute(sql.SQL("ALTER ROLE {r} SET default_transaction_read_only = on").format(r=role))
        for name in schemas(settings):
            schema = sql.Identifier(name)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {s} TO {r}").format(s=schema, r=role))
            conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA {s} FROM {r}").format(s=schema, r=role))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}").format(s=schema, r=role))
            conn.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO {r}").format(s=schema, r=role)
            )
        done.append(f"role {reader} may read (SELECT) {', '.join(schemas(settings))}; role {writer} writes")
    except psycopg.errors.InsufficientPrivilege as e:
        raise DatabaseError(
            f"cannot set up the read-only role {reader!r} as {writer!r} ({' '.join(str(e).split())}): "
            "give the CHMGR_DSN role CREATEROLE, or create the role as a superuser and rerun `chmgr db init`"
        ) from None
    return done


def can_write(conn: psycopg.Connection[Any], settings: Settings) -> list[str]:
    """Return the project tables the connected role may change (INSERT/UPDATE/DELETE/TRUNCATE)."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') "
        "AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') ORDER BY 1",
        [schemas(settings)],
    ).fetchall()
    return [str(row[0]) for row in rows]

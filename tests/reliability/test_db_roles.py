"""Only `state` writes, enforced by the database: `chmgr db init` creates the read-only role.

Against the suite's real PostgreSQL (tests/fixtures/pg.py, trust auth: the password is set on
the role but not checked). Roles are cluster-wide, so each test uses a role name of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from coldharbour.cli import doctor
from coldharbour.config import Dsn
from coldharbour.db import roles, schema
from coldharbour.db.connect import connect_sync
from coldharbour.db.names import account_names
from coldharbour.sim.postgres import PgCluster
from tests.support import make_environ, make_settings
from tests.test_cli import chmgr


def _reader_dsn(pg_dsn: Dsn, role: str) -> str:
    return pg_dsn.reveal().replace("postgresql://postgres@", f"postgresql://{role}:Rd-Hunter%232pw@", 1)


@pytest.fixture
def role(pg_cluster: PgCluster) -> Iterator[str]:
    name = f"chmgr_reader_{uuid.uuid4().hex[:8]}"
    yield name
    with pg_cluster.admin() as admin:
        for db in admin.execute("SELECT datname FROM pg_database WHERE NOT datistemplate").fetchall():
            try:
                with psycopg.connect(pg_cluster.dsn(str(db[0])).reveal(), autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP OWNED BY {r}").format(r=sql.Identifier(name)))
            except psycopg.Error:
                continue
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {r}").format(r=sql.Identifier(name)))


def test_db_init_creates_a_reader_that_cannot_write_even_after_lifting_read_only(
    pg_dsn: Dsn, role: str, tmp_path: Path
) -> None:
    reader = _reader_dsn(pg_dsn, role)
    env = make_environ(pg_dsn, tmp_path, CHMGR_READ_DSN=reader)

    result = chmgr("db", "init", env=env)

    assert result.returncode == 0, result.stderr
    assert f"created role {role} (LOGIN)" in result.stdout
    assert "Hunter" not in result.stdout + result.stderr
    settings = make_settings(pg_dsn, tmp_path, CHMGR_READ_DSN=reader)
    positions = account_names(settings, "demo").positions.ident
    with psycopg.connect(reader, autocommit=True) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=positions)).fetchone() == (0,)
        conn.execute("SET default_transaction_read_only = off")
        refusal = "permission denied for table account_open_positions_demo"
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal):
            conn.execute(sql.SQL("DELETE FROM {t}").format(t=positions))
        refusal = "permission denied for table account_open_positions_demo"
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal):
            conn.execute(
                sql.SQL("INSERT INTO {t} (parent_id, symbol, qty) VALUES ('x', 'AAPL', 1)").format(t=positions)
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for schema accounts"):
            conn.execute(sql.SQL("CREATE TABLE {t} (x int)").format(t=sql.Identifier(settings.account_schema, "evil")))
    again = chmgr("db", "init", env=env)
    assert again.returncode == 0, again.stderr
    assert "created role" not in again.stdout  # idempotent


def test_tables_the_writer_adds_later_are_readable_and_not_writable(pg_dsn: Dsn, role: str, tmp_path: Path) -> None:
    reader = _reader_dsn(pg_dsn, role)
    first = make_settings(pg_dsn, tmp_path, accounts=("demo",), CHMGR_READ_DSN=reader)
    with connect_sync(first.dsn, "test", read_only=False) as conn:
        schema.ensure_schema(conn, first)
        with conn.transaction():
            roles.ensure_roles(conn, first)
        conn.commit()
    later = make_settings(pg_dsn, tmp_path, accounts=("demo", "paper-1"), CHMGR_READ_DSN=reader)
    with connect_sync(later.dsn, "state", read_only=False) as conn:  # as `state` does at start
        schema.ensure_schema(conn, later)
        conn.commit()

    closed = account_names(later, "paper_1").closed.ident
    with psycopg.connect(reader, autocommit=True) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=closed)).fetchone() == (0,)
        conn.execute("SET default_transaction_read_only = off")  # the role's default: lifted here
        refusal = "permission denied for table account_closed_paper_1"
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal):
            conn.execute(sql.SQL("TRUNCATE {t}").format(t=closed))
        assert roles.can_write(conn, later) == []
    assert doctor.check_roles(later).verdict == "OK"


def test_doctor_flags_a_read_dsn_that_can_write_and_a_missing_one(pg_dsn: Dsn, tmp_path: Path) -> None:
    settings = make_settings(pg_dsn, tmp_path, accounts=("demo",))
    with connect_sync(settings.dsn, "test", read_only=False) as conn:
        schema.ensure_schema(conn, settings)
        conn.commit()
    as_writer = make_settings(pg_dsn, tmp_path, accounts=("demo",), CHMGR_READ_DSN=pg_dsn.reveal())

    assert doctor.check_roles(settings).verdict == "WARN"
    verdict, line = doctor.check_roles(as_writer)
    assert verdict == "FAIL"
    assert "can write" in line
    assert [check.line for check in doctor.check_quarantine(settings)] == ["quarantine: none"]  # migration made it

"""Schema: every table and column of docs/spec.md §2, numeric money, idempotent migrations."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldharbour.db import loads, schema, tables
from coldharbour.db.connect import connect_read_only
from coldharbour.db.names import account_names, shared_names
from coldharbour.db.writer import Writer
from coldharbour.domain.cashflows import CashFlow, Category
from coldharbour.errors import SchemaError
from tests.support import make_settings

# The schema the previous version (hand-written DDL, migrations 1-5) created for account "demo".
PREVIOUS_VERSION_SQL = Path(__file__).with_name("schema_v5.sql")
AT = datetime(2026, 1, 5, 15, tzinfo=UTC)

POSITION_COLUMNS = {
    "parent_id": "text", "symbol": "text", "side": "text", "filled_at": "timestamp with time zone",
    "qty": "numeric", "avg_fill": "numeric", "avg_px_symbol": "numeric", "sl_child": "text",
    "sl_px": "numeric", "tp_child": "text", "tp_px": "numeric", "mkt_px": "numeric", "bar_px": "numeric",
    "bar_ts": "timestamp with time zone", "moved_flag": "text", "buy_value": "numeric",
    "holding_days": "integer", "days_to_expire": "integer", "mkt_value": "numeric", "profit_loss": "numeric",
    "profit_loss_lot": "numeric", "tp_sl_reach_pct": "numeric", "updated_at": "timestamp with time zone",
}  # fmt: skip
CLOSED_COLUMNS = {
    "entry_lot_id": "text", "exit_order_id": "text", "exit_parent_id": "text", "symbol": "text", "side": "text",
    "qty": "numeric", "entry_time": "timestamp with time zone", "entry_price": "numeric",
    "exit_time": "timestamp with time zone", "exit_price": "numeric", "exit_type": "text", "pnl_cash": "numeric",
    "pnl_cash_fifo": "numeric", "diff_pnl": "numeric", "pnl_pct": "numeric", "return_pct": "numeric",
    "duration_sec": "numeric",
}  # fmt: skip
EQUITY_COLUMNS = {
    "date": "date", "deposit": "numeric", "cash_balance": "numeric", "market_value": "numeric",
    "daily_return": "numeric", "cumulative_return": "numeric", "drawdown": "numeric", "net_flows": "numeric",
    **{f"{p}_{w}": "double precision" for w in (10, 21, 63, 126, 252) for p in ("sharpe", "smart_sharpe")},
}  # fmt: skip
INTRADAY_COLUMNS = {
    "ts": "timestamp with time zone", "deposit": "numeric", "cumulative_return": "numeric",
    "drawdown": "numeric", "realised_return": "numeric",
}  # fmt: skip
CASH_COLUMNS = {
    "id": "text", "ts": "timestamp with time zone", "amount": "numeric", "type": "text",
    "category": "text", "description": "text",
}  # fmt: skip
ORDER_COLUMNS = {
    "id": "uuid", "client_order_id": "text", "parent_id": "text", "replaced_by": "text", "replaces": "text",
    "symbol": "text", "side": "text", "order_type": "text", "status": "text", "qty": "numeric",
    "filled_qty": "numeric", "filled_avg_price": "numeric", "limit_price": "numeric", "stop_price": "numeric",
    **{c: "timestamp with time zone" for c in (
        "created_at", "updated_at", "submitted_at", "filled_at", "expired_at", "canceled_at", "replaced_at",
        "expires_at", "ingested_at")},
    "raw_json": "jsonb", "legs": "jsonb",
}  # fmt: skip
ACTIVITY_COLUMNS = {
    "id": "text", "activity_type": "text", "transaction_time": "timestamp with time zone", "symbol": "text",
    "side": "text", "qty": "numeric", "price": "numeric", "net_amount": "numeric", "execution_id": "uuid",
    "order_id": "uuid", "raw_json": "jsonb", "ingested_at": "timestamp with time zone",
}  # fmt: skip


def _columns(conn: psycopg.Connection, schema_name: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (schema_name, table),
    ).fetchall()
    return {name: kind for name, kind in rows}


def _primary_key(conn: psycopg.Connection, schema_name: str, table: str) -> list[str]:
    rows = conn.execute(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass AND i.indisprimary
           ORDER BY array_position(i.indkey, a.attnum)""",
        (schema_name, table),
    ).fetchall()
    return [r[0] for r in rows]


def _snapshot(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        """SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns
           WHERE table_schema IN ('accounts', 'account_activities') ORDER BY 1, 2, 3"""
    ).fetchall()


def test_db_init_two_accounts_creates_every_table_with_types_and_keys(pg_dsn) -> None:
    settings = make_settings(pg_dsn)
    with psycopg.connect(pg_dsn.reveal()) as conn:
        applied = schema.ensure_schema(conn, settings)
        tables = {}
        for account in settings.accounts:
            names = account_names(settings, account.slug)
            for table, expected, key in (
                (names.positions, POSITION_COLUMNS, ["parent_id"]),
                (names.closed, CLOSED_COLUMNS, ["entry_lot_id", "exit_order_id"]),
                (names.equity_full, EQUITY_COLUMNS, ["date"]),
                (names.equity_intraday, INTRADAY_COLUMNS, ["ts"]),
                (names.cash_flows, CASH_COLUMNS, ["id"]),
                (names.metrics, {"id": "text", "metrics_payload": "text"}, ["id"]),
                (names.raw_orders, ORDER_COLUMNS, ["id"]),
                (names.raw_activities, ACTIVITY_COLUMNS, ["id"]),
                (names.reconciliations, ACTIVITY_COLUMNS, ["id"]),
            ):
                columns = _columns(conn, table.schema, table.name)
                tables[table.name] = (columns, expected, _primary_key(conn, table.schema, table.name), key)
        shared = {t: _columns(conn, "accounts", t) for t in ("market_schedule", "latest_prices", "price_bars_1min")}
        quarantine = _columns(conn, "accounts", "quarantine")
        shared_keys = {t: _primary_key(conn, "accounts", t) for t in shared}

    account_versions = {m.version for m in schema.ACCOUNT_MIGRATIONS}
    shared_versions = {m.version for m in schema.SHARED_MIGRATIONS}
    assert {(s, v) for s, v in applied} == {("shared", v) for v in shared_versions} | {
        (scope, v) for scope in ("account:demo", "account:paper_1") for v in account_versions
    }
    assert "account_open_positions_paper_1" in tables
    for name, (actual, expected, pk, expected_pk) in tables.items():
        assert {c: actual.get(c) for c in expected} == expected, name
        assert pk == expected_pk, name
    assert shared["latest_prices"] == {"symbol": "text", "price": "numeric", "ts": "timestamp with time zone"}
    assert shared_keys == {
        "market_schedule": ["session_date"], "latest_prices": ["symbol"], "price_bars_1min": ["symbol", "ts"]
    }
    assert all(kind != "real" for cols in shared.values() for kind in cols.values())
    assert set(quarantine) == {"id", "ts", "account", "kind", "key", "raw", "error"}


def test_db_init_second_run_changes_nothing(pg_dsn) -> None:
    settings = make_settings(pg_dsn)
    with psycopg.connect(pg_dsn.reveal()) as conn:
        schema.ensure_schema(conn, settings)
        before = _snapshot(conn)
        versions_before = schema.schema_versions(conn, settings)
        applied = schema.ensure_schema(conn, settings)
        after = _snapshot(conn)
        rows = conn.execute("SELECT count(*) FROM accounts.schema_version").fetchone()

    assert applied == []
    assert before == after
    assert versions_before == schema.latest_versions(settings)
    assert rows == (len(schema.SHARED_MIGRATIONS) + 2 * len(schema.ACCOUNT_MIGRATIONS),)  # shared + two accounts' steps


def test_db_init_account_added_later_gets_only_its_tables(pg_dsn) -> None:
    with psycopg.connect(pg_dsn.reveal()) as conn:
        schema.ensure_schema(conn, make_settings(pg_dsn, accounts=("demo",)))
        applied = schema.ensure_schema(conn, make_settings(pg_dsn, accounts=("demo", "live")))
        live = _columns(conn, "accounts", "account_open_positions_live")

    assert applied == [("account:live", m.version) for m in schema.ACCOUNT_MIGRATIONS]
    assert live["qty"] == "numeric"


def test_db_rejects_nan_and_infinity_in_money_columns(migrated_dsn) -> None:
    with psycopg.connect(migrated_dsn.reveal()) as conn:
        for bad in ("NaN", "Infinity", "-Infinity"):
            refusal = r'value for domain accounts\.finite_numeric violates check constraint "finite_numeric_check"'
            with pytest.raises(psycopg.errors.CheckViolation, match=refusal), conn.transaction():
                conn.execute(
                    "INSERT INTO accounts.latest_prices (symbol, price, ts) VALUES ('X', %s::numeric, now())", (bad,)
                )
        count = conn.execute("SELECT count(*) FROM accounts.latest_prices").fetchone()

    assert count == (0,)


def test_db_newer_than_code_is_refused(migrated_dsn) -> None:
    settings = make_settings(migrated_dsn)
    with psycopg.connect(migrated_dsn.reveal()) as conn:
        conn.execute(
            "INSERT INTO accounts.schema_version (scope, version, description) VALUES ('shared', 99, 'future')"
        )
        conn.commit()
        with pytest.raises(SchemaError, match="version 99"):
            schema.ensure_schema(conn, settings)


def test_db_custom_table_templates_are_used(pg_dsn) -> None:
    settings = make_settings(
        pg_dsn,
        accounts=("live",),
        TABLE_ACCOUNT_POSITIONS="open_trades_{slug}",
        TABLE_ACCOUNT_CLOSED="closed_trades_{slug}",
    )
    with psycopg.connect(pg_dsn.reveal()) as conn:
        schema.ensure_schema(conn, settings)
        columns = _columns(conn, "accounts", "open_trades_live")

    assert columns["avg_fill"] == "numeric"


def test_db_migration_3_allows_spec8_categories_and_corporate_exits_only(migrated_dsn) -> None:
    """docs/spec.md §8: new activity categories and CORPORATE exits are stored; anything else is refused."""
    settings = make_settings(migrated_dsn)
    names = account_names(settings, settings.accounts[0].slug)
    flows, closed = names.cash_flows.ident, names.closed.ident
    with psycopg.connect(migrated_dsn.reveal()) as conn:
        for category in ("interest", "tax", "corporate", "other", "unclassified"):
            conn.execute(
                psycopg.sql.SQL("INSERT INTO {} (id, ts, amount, type, category) VALUES (%s, now(), 1, 'X', %s)")
                .format(flows), (f"id-{category}", category),
            )
        refusal = 'new row for relation "cash_flows_demo" violates check constraint "category_allowed"'
        with pytest.raises(psycopg.errors.CheckViolation, match=refusal), conn.transaction():
            conn.execute(
                psycopg.sql.SQL("INSERT INTO {} (id, ts, amount, type, category) VALUES ('b', now(), 1, 'X', 'bogus')")
                .format(flows)
            )
        conn.execute(psycopg.sql.SQL(
            "INSERT INTO {} (entry_lot_id, exit_order_id, symbol, side, qty, exit_type) "
            "VALUES ('lot', 'exit', 'AAPL', 'long', 1, 'CORPORATE')").format(closed))
        refusal = 'new row for relation "account_closed_demo" violates check constraint "exit_type_allowed"'
        with pytest.raises(psycopg.errors.CheckViolation, match=refusal), conn.transaction():
            conn.execute(psycopg.sql.SQL(
                "INSERT INTO {} (entry_lot_id, exit_order_id, symbol, side, qty, exit_type) "
                "VALUES ('lot', 'exit2', 'AAPL', 'long', 1, 'BOGUS')").format(closed))
        checks = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c' "
            "AND pg_get_constraintdef(oid) LIKE '%%(exit_type %%'", (f"{names.closed.schema}.{names.closed.name}",),
        ).fetchone()

    assert checks == (1,)


def test_db_migration_4_moves_stored_reconciliation_fills_out_of_raw_activities(pg_dsn) -> None:
    """A database where a reconciliation wrote ``recon:`` FILL rows into raw_activities (before v4)."""
    settings = make_settings(pg_dsn, CHMGR_ACCOUNTS="demo")
    names = account_names(settings, "demo")
    raw = names.raw_activities.ident
    insert = psycopg.sql.SQL("INSERT INTO {} (id, activity_type, transaction_time, symbol) "
                             "VALUES (%s, 'FILL', now(), 'AAPL')").format(raw)
    with psycopg.connect(pg_dsn.reveal(), autocommit=True) as conn:
        schema.ensure_schema(conn, settings)
        conn.execute(psycopg.sql.SQL("DROP TABLE {}").format(names.reconciliations.ident))
        conn.execute("DELETE FROM accounts.schema_version WHERE scope = 'account:demo' AND version >= 4")
        conn.execute(insert, ("20240301150000000::recon:AAPL:1709305200000000000",))
        conn.execute(insert, ("20240301150000000::6b7a3c1e-0000-4000-8000-000000000001",))
        applied = schema.ensure_schema(conn, settings)
        left = conn.execute(psycopg.sql.SQL("SELECT id FROM {}").format(raw)).fetchall()
        moved = conn.execute(psycopg.sql.SQL("SELECT id FROM {}").format(names.reconciliations.ident)).fetchall()

    assert applied == [("account:demo", 4), ("account:demo", 5)]  # 5 (spin-off bases) is idempotent
    assert left == [("20240301150000000::6b7a3c1e-0000-4000-8000-000000000001",)]
    assert moved == [("20240301150000000::recon:AAPL:1709305200000000000",)]


class _CountingConnection:
    """The real connection, counting the statements sent (round trips) through ``execute``."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn
        self.round_trips = 0
        self.transactions = 0

    def execute(self, query: Any, params: Any = None) -> Any:
        self.round_trips += 1
        return self._conn.execute(query, params)

    def transaction(self) -> object:
        self.transactions += 1
        return self._conn.transaction()


def test_schema_for_many_accounts_is_created_in_few_round_trips(pg_dsn, tmp_path, caplog) -> None:
    accounts = tuple(f"a{i:03d}" for i in range(60))
    settings = make_settings(pg_dsn, tmp_path, accounts=accounts)

    with psycopg.connect(pg_dsn.reveal(), autocommit=True) as conn, \
            caplog.at_level(logging.INFO, logger="coldharbour.db.schema"):
        counting = _CountingConnection(conn)
        applied = schema.ensure_schema(counting, settings)  # type: ignore[arg-type]
        current = _CountingConnection(conn)
        again = schema.ensure_schema(current, settings)  # type: ignore[arg-type]
        versions = schema.schema_versions(conn, settings)
        last = account_names(settings, "a059")
        columns = _columns(conn, last.closed.schema, last.closed.name)

    assert len(applied) == len(schema.SHARED_MIGRATIONS) + len(accounts) * len(schema.ACCOUNT_MIGRATIONS)
    assert versions == schema.latest_versions(settings)
    assert again == []
    assert CLOSED_COLUMNS.items() <= columns.items()
    # shared + 60 accounts at SCOPES_PER_TRANSACTION (50) a transaction: two, each holding the
    # locks of at most 50 accounts' new relations (PostgreSQL's default lock table fits that)
    assert schema.SCOPES_PER_TRANSACTION == 50
    assert counting.transactions == 2
    assert counting.round_trips < 30  # one per statement would be over 1,800
    # a current start looks at no account: lock, bootstrap (schemas, domains, two tables), versions, digests
    assert current.round_trips == 9
    assert current.transactions == 1
    # one line per start, whatever the number of accounts (each account's detail is at DEBUG)
    assert [r.getMessage().split(" statements=")[0] for r in caplog.records] == [
        "schema ready accounts=60 created=60 migrated=0 current=0 columns_added=0",
        "schema ready accounts=60 created=0 migrated=0 current=60 columns_added=0"]


def _catalog(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every column (type, NOT NULL, default), constraint and index (name left out) of our two schemas."""
    where = "n.nspname IN ('accounts', 'account_activities') AND c.relname <> 'schema_shape'"  # not the previous
    return {
        "columns": conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            f"WHERE {where} AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2").fetchall(),
        "constraints": conn.execute(
            "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
            f"JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {where} "
            "ORDER BY 1, 2").fetchall(),
        "indexes": conn.execute(
            "SELECT c.relname, regexp_replace(pg_get_indexdef(i.indexrelid), 'INDEX \\S+ ON', 'INDEX ON') "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE {where} ORDER BY 1, 2").fetchall(),
    }  # fmt: skip


def test_db_created_by_the_previous_version_converges_with_nothing_to_do(pg_dsn, pg_cluster, caplog) -> None:
    """A database the hand-written DDL made is what the descriptions derive: no version, no column, no index."""
    settings = make_settings(pg_dsn, accounts=("demo",))
    fresh = pg_cluster.create_database()
    try:
        with psycopg.connect(pg_cluster.dsn(fresh).reveal(), autocommit=True) as conn:
            schema.ensure_schema(conn, make_settings(pg_cluster.dsn(fresh), accounts=("demo",)))
            derived = _catalog(conn)
    finally:
        pg_cluster.drop_database(fresh)
    with psycopg.connect(pg_dsn.reveal(), autocommit=True) as conn:
        conn.execute(PREVIOUS_VERSION_SQL.read_text())
        before = _catalog(conn)
        with caplog.at_level(logging.INFO, logger="coldharbour.db.schema"):
            applied = schema.ensure_schema(conn, settings)
        after = _catalog(conn)

    assert applied == []
    assert after == before
    assert before == derived
    assert [r.getMessage().split(" statements=")[0] for r in caplog.records] == [
        "schema ready accounts=1 created=0 migrated=0 current=1 columns_added=0"]


# A description that gained two columns (one with a default, one without): test-local, no other edit.
CASH_FLOWS_PLUS: tables.TableSpec = dataclasses.replace(tables.CASH_FLOWS, columns=(
    *tables.CASH_FLOWS.columns, ("memo", "text", "NOT NULL DEFAULT ''"), ("fee", "numeric")))
# A new table of every account and a new shared one: a description each, nothing in ``db.names``.
NOTES = tables.TableSpec(
    "notes", (("id", "text"), ("body", "text", "NOT NULL"), ("amount", "numeric"), ("at", "timestamptz")),
    key=("id",), stored=(("updated_at", "timestamptz", "NOT NULL DEFAULT now()"),),
    indexes=(tables.Index("at", ("at",)),), template="notes_{slug}")
RATES = tables.TableSpec("rates", (("currency", "text"), ("rate", "float8", "NOT NULL")), key=("currency",),
                         shared=True, template="fx_rates")
ACCOUNT_TABLES = (*(CASH_FLOWS_PLUS if s is tables.CASH_FLOWS else s for s in tables.ACCOUNT_TABLES), NOTES)
SHARED_TABLES = (*tables.SHARED_TABLES, RATES)


@dataclasses.dataclass(frozen=True)
class _Flow:
    """A cash flow with the two new fields (the domain value would gain them)."""

    id: str
    ts: datetime
    amount: Decimal
    type: str
    category: str
    description: str
    memo: str
    fee: Decimal | None


@dataclasses.dataclass(frozen=True)
class _Note:
    id: str
    body: str
    amount: Decimal | None
    at: int  # UTC ns, as the domain keeps times


@dataclasses.dataclass(frozen=True)
class _Rate:
    currency: str
    rate: float


def test_db_a_column_or_table_added_to_the_descriptions_is_created_written_and_read(migrated_dsn, caplog) -> None:
    """An existing database (at the newest version) gains the columns and tables; the writer and loads follow."""
    settings = make_settings(migrated_dsn)
    demo, shared = account_names(settings, "demo"), shared_names(settings)
    old = CashFlow(id="a1", ts=AT, amount=Decimal("-1.5"), type="FEE", category=Category.FEE, description="before")
    new = _Flow(id="a2", ts=AT, amount=Decimal("2.25"), type="DIV", category="income", description="after",
                memo="Q1 dividend", fee=Decimal("0.10"))
    notes = [_Note("n1", "first", Decimal("1.10"), 1_767_625_200_000_000_000), _Note("n2", "second", None, 0)]

    async def write_and_read() -> tuple[list[Any], ...]:
        writer = Writer(settings)
        await writer.connect()
        try:
            first = await writer.upsert(CASH_FLOWS_PLUS, demo, [new])
            await writer.upsert(NOTES, demo, notes)
            replay = await writer.upsert(NOTES, demo, notes)
            await writer.upsert(RATES, shared, [_Rate("EUR", 1.08)])
        finally:
            await writer.close()
        async with await connect_read_only(settings.dsn, "test") as conn:
            return ([first.changed, replay.changed], await loads.load_rows(conn, CASH_FLOWS_PLUS, demo),
                    await loads.load_rows(conn, NOTES, demo), await loads.load_rows(conn, RATES, shared))

    async def write_old_row() -> None:
        writer = Writer(settings)
        await writer.connect()
        try:
            await writer.upsert(tables.CASH_FLOWS, demo, [old])
        finally:
            await writer.close()

    asyncio.run(write_old_row())
    with psycopg.connect(migrated_dsn.reveal(), autocommit=True) as conn, \
            caplog.at_level(logging.INFO, logger="coldharbour.db.schema"):
        applied = schema.ensure_schema(conn, settings, account_tables=ACCOUNT_TABLES, shared_tables=SHARED_TABLES)
        again = schema.ensure_schema(conn, settings, account_tables=ACCOUNT_TABLES, shared_tables=SHARED_TABLES)
        indexes = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'notes_paper_1'").fetchall()
    counts, flows, stored_notes, rates = asyncio.run(write_and_read())

    assert applied == again == []  # no version: the descriptions are not migrations
    assert [r.getMessage().split(" statements=")[0] for r in caplog.records] == [
        "schema ready accounts=2 created=0 migrated=2 current=0 columns_added=4 "
        "(cash_flows.fee,cash_flows.memo)",
        "schema ready accounts=2 created=0 migrated=0 current=2 columns_added=0"]
    assert sorted(indexes) == [("ix_notes_paper_1_at",), ("notes_paper_1_pkey",)]
    assert counts == [1, 0]  # a replay writes nothing
    assert flows == [
        ("a1", AT, Decimal("-1.5"), "FEE", "fee", "before", "", None),  # the row stored before: the default
        ("a2", AT, Decimal("2.25"), "DIV", "income", "after", "Q1 dividend", Decimal("0.10"))]
    assert stored_notes == [("n1", "first", Decimal("1.10"), datetime(2026, 1, 5, 15, tzinfo=UTC)),
                            ("n2", "second", None, datetime(1970, 1, 1, tzinfo=UTC))]
    assert rates == [("EUR", 1.08)]


def test_db_a_fresh_database_from_the_extended_descriptions_is_at_the_newest_version(pg_dsn) -> None:
    settings = make_settings(pg_dsn, accounts=("demo",))
    with psycopg.connect(pg_dsn.reveal(), autocommit=True) as conn:
        applied = schema.ensure_schema(conn, settings, account_tables=ACCOUNT_TABLES, shared_tables=SHARED_TABLES)
        columns = _columns(conn, "accounts", "notes_demo")
        memo = _columns(conn, "accounts", "cash_flows_demo")["memo"]

    assert applied == [("shared", 1), ("shared", 2), *(("account:demo", m.version) for m in schema.ACCOUNT_MIGRATIONS)]
    assert columns == {"id": "text", "body": "text", "amount": "numeric", "at": "timestamp with time zone",
                       "updated_at": "timestamp with time zone"}
    assert memo == "text"


def test_db_a_column_added_without_a_default_to_a_table_with_rows_is_refused_whole(migrated_dsn) -> None:
    """NOT NULL with no default cannot reach stored rows: nothing is changed, the error names the column."""
    settings = make_settings(migrated_dsn)
    strict = dataclasses.replace(tables.CASH_FLOWS, columns=(*tables.CASH_FLOWS.columns, ("memo", "text", "NOT NULL")))
    with psycopg.connect(migrated_dsn.reveal(), autocommit=True) as conn:
        conn.execute("INSERT INTO accounts.cash_flows_demo (id, ts, amount, type, category) "
                     "VALUES ('x', now(), 1, 'FEE', 'fee')")
        with pytest.raises(SchemaError, match='column "memo" of relation "cash_flows_demo" contains null values'):
            schema.ensure_schema(conn, settings, account_tables=[
                strict if s is tables.CASH_FLOWS else s for s in tables.ACCOUNT_TABLES])
        columns = _columns(conn, "accounts", "cash_flows_paper_1")

    assert "memo" not in columns  # one transaction: the other account did not get it either


class _LockCountingConnection(_CountingConnection):
    """The real connection; records the locks this session holds at the end of each transaction
    (before its commit releases them)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        super().__init__(conn)
        self.held: list[int] = []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[object]:
        self.transactions += 1
        with self._conn.transaction() as tx:
            yield tx
            row = self._conn.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()").fetchone()
            self.held.append(int(row[0]))  # type: ignore[index]


DEFAULT_LOCK_SLOTS = 64 * 100  # max_locks_per_transaction x max_connections, PostgreSQL's defaults


@pytest.mark.integration
def test_a_first_start_with_many_new_accounts_holds_a_bounded_number_of_locks(pg_cluster, tmp_path,
                                                                               monkeypatch) -> None:  # fmt: skip
    """Every relation a transaction creates stays locked until it commits, in PostgreSQL's shared
    lock table (default 64 x 100 slots). 120 new accounts (about 74 locks each) in one transaction
    would hold more than that table; ``SCOPES_PER_TRANSACTION`` (50) at a time hold under 4,000."""
    accounts = tuple(f"n{i:03d}" for i in range(120))
    chunked = make_settings(pg_cluster.dsn(pg_cluster.create_database()), tmp_path, accounts=accounts)
    whole = make_settings(pg_cluster.dsn(pg_cluster.create_database()), tmp_path, accounts=accounts)
    with psycopg.connect(chunked.dsn.reveal(), autocommit=True) as conn:
        counting = _LockCountingConnection(conn)
        applied = schema.ensure_schema(counting, chunked)  # type: ignore[arg-type]
        versions = schema.schema_versions(conn, chunked)
    monkeypatch.setattr(schema, "SCOPES_PER_TRANSACTION", len(accounts) + 1)
    with psycopg.connect(whole.dsn.reveal(), autocommit=True) as conn:
        one = _LockCountingConnection(conn)
        schema.ensure_schema(one, whole)  # type: ignore[arg-type]

    assert counting.transactions == 3
    assert max(counting.held) < 4_000
    assert one.held[0] > DEFAULT_LOCK_SLOTS  # the control: all at once would not fit a default server
    assert len(applied) == len(schema.SHARED_MIGRATIONS) + len(accounts) * len(schema.ACCOUNT_MIGRATIONS)
    assert versions == schema.latest_versions(chunked)

"""DDL and ordered migrations; ``ensure_schema`` applies what has not run yet.

Migrations are versioned per *scope*: ``shared`` (market schedule, prices, bars) and
``account:<slug>`` (the tables of one account), recorded in ``<ACCOUNT_SCHEMA>.schema_version``.
Running twice is a no-op; adding an account later runs that account's migrations only. A
database whose recorded version is newer than this code is refused (``SchemaError``).

Money and quantities are ``finite_numeric`` (a domain over ``numeric`` that refuses NaN and
±Infinity), ratios that are not money are ``finite_double``: the database itself rejects a
non-finite number, whatever the code above it does. Every identifier is ``psycopg.sql``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

import psycopg
from psycopg import sql

from coldharbour.config import Settings
from coldharbour.db.names import AccountNames, SharedNames, Table, account_names, shared_names
from coldharbour.errors import SchemaError

log = logging.getLogger(__name__)

SHARED_SCOPE: Final = "shared"
SHARPE_WINDOWS: Final = (10, 21, 63, 126, 252)
# Any constant works: it only has to be the same in every process that migrates.
_MIGRATION_LOCK_KEY: Final = 0x43484D4752  # "CHMGR"
STATEMENTS_PER_ROUND_TRIP: Final = 300


class Migration(NamedTuple):
    """One schema step: its version within its scope, what it does, and its statements."""

    version: int
    description: str
    statements: Callable[..., list[sql.Composed]]


def _q(text: str, **identifiers: sql.Composable) -> sql.Composed:
    return sql.SQL(text).format(**identifiers)


def _index(table: Table, suffix: str, columns: str, *, unique: bool = False, where: str = "") -> sql.Composed:
    """Return ``CREATE [UNIQUE] INDEX IF NOT EXISTS`` on ``columns`` (a fixed literal, never input)."""
    text = "CREATE " + ("UNIQUE " if unique else "") + "INDEX IF NOT EXISTS {i} ON {t} (" + columns + ")"
    return _q(text + (" WHERE " + where if where else ""), i=table.index(suffix), t=table.ident)


def _shared_v1(names: SharedNames, schema: str) -> list[sql.Composed]:
    s = sql.Identifier(schema)
    return [
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                session_date date PRIMARY KEY,
                pre_open_utc timestamptz NOT NULL,
                open_utc timestamptz NOT NULL,
                close_utc timestamptz NOT NULL,
                post_close_utc timestamptz NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now())""",
            t=names.market_schedule.ident,
        ),
        _index(names.market_schedule, "open", "open_utc"),
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                symbol text PRIMARY KEY,
                price {s}.finite_numeric NOT NULL CHECK (price > 0),
                ts timestamptz NOT NULL)""",
            t=names.latest_prices.ident, s=s,
        ),
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                symbol text NOT NULL,
                ts timestamptz NOT NULL,
                open {s}.finite_numeric NOT NULL,
                high {s}.finite_numeric NOT NULL,
                low {s}.finite_numeric NOT NULL,
                close {s}.finite_numeric NOT NULL,
                volume {s}.finite_numeric NOT NULL DEFAULT 0,
                PRIMARY KEY (symbol, ts))""",
            t=names.price_bars_1min.ident, s=s,
        ),
    ]  # fmt: skip


def _positions_ddl(names: AccountNames, s: sql.Identifier) -> sql.Composed:
    return _q(
        """CREATE TABLE IF NOT EXISTS {t} (
            parent_id text PRIMARY KEY,
            symbol text NOT NULL,
            side text NOT NULL CHECK (side IN ('long', 'short')),
            filled_at timestamptz,
            qty {s}.finite_numeric NOT NULL CHECK (qty >= 0),
            avg_fill {s}.finite_numeric,
            avg_px_symbol {s}.finite_numeric,
            sl_child text,
            sl_px {s}.finite_numeric,
            tp_child text,
            tp_px {s}.finite_numeric,
            mkt_px {s}.finite_numeric,
            bar_px {s}.finite_numeric,
            bar_ts timestamptz,
            moved_flag text NOT NULL DEFAULT '—',
            buy_value {s}.finite_numeric,
            holding_days integer,
            days_to_expire integer,
            mkt_value {s}.finite_numeric,
            profit_loss {s}.finite_numeric,
            profit_loss_lot {s}.finite_numeric,
            tp_sl_reach_pct {s}.finite_numeric,
            updated_at timestamptz NOT NULL DEFAULT now())""",
        t=names.positions.ident, s=s,
    )  # fmt: skip


def _closed_ddl(names: AccountNames, s: sql.Identifier) -> sql.Composed:
    return _q(
        """CREATE TABLE IF NOT EXISTS {t} (
            entry_lot_id text NOT NULL,
            exit_order_id text NOT NULL,
            exit_parent_id text,
            symbol text NOT NULL,
            side text NOT NULL CHECK (side IN ('long', 'short')),
            qty {s}.finite_numeric NOT NULL CHECK (qty > 0),
            entry_time timestamptz,
            entry_price {s}.finite_numeric,
            exit_time timestamptz,
            exit_price {s}.finite_numeric,
            exit_type text NOT NULL CHECK (exit_type IN ('TP', 'SL', 'MANUAL')),
            pnl_cash {s}.finite_numeric,
            pnl_cash_fifo {s}.finite_numeric,
            diff_pnl {s}.finite_numeric,
            pnl_pct {s}.finite_numeric,
            return_pct {s}.finite_numeric,
            duration_sec {s}.finite_numeric,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (entry_lot_id, exit_order_id))""",
        t=names.closed.ident, s=s,
    )  # fmt: skip


def _equity_ddl(names: AccountNames, s: sql.Identifier) -> list[sql.Composed]:
    sharpe = sql.SQL(", ").join(
        sql.SQL("{} {}.finite_double").format(sql.Identifier(f"{prefix}_{w}"), s)
        for w in SHARPE_WINDOWS
        for prefix in ("sharpe", "smart_sharpe")
    )
    return [
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                date date PRIMARY KEY,
                deposit {s}.finite_numeric,
                cash_balance {s}.finite_numeric,
                market_value {s}.finite_numeric,
                daily_return {s}.finite_numeric,
                cumulative_return {s}.finite_numeric,
                drawdown {s}.finite_numeric,
                net_flows {s}.finite_numeric,
                {sharpe},
                updated_at timestamptz NOT NULL DEFAULT now())""",
            t=names.equity_full.ident, s=s, sharpe=sharpe,
        ),
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                ts timestamptz PRIMARY KEY,
                deposit {s}.finite_numeric,
                cumulative_return {s}.finite_numeric,
                drawdown {s}.finite_numeric,
                realised_return {s}.finite_numeric,
                updated_at timestamptz NOT NULL DEFAULT now())""",
            t=names.equity_intraday.ident, s=s,
        ),
    ]  # fmt: skip


def _raw_ddl(names: AccountNames, s: sql.Identifier) -> list[sql.Composed]:
    orders, activities = names.raw_orders, names.raw_activities
    return [
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                id uuid PRIMARY KEY,
                client_order_id text,
                request_id text,
                parent_id text,
                replaced_by text,
                replaces text,
                symbol text NOT NULL,
                side text NOT NULL,
                order_type text NOT NULL,
                status text NOT NULL,
                qty {s}.finite_numeric,
                filled_qty {s}.finite_numeric NOT NULL DEFAULT 0,
                filled_avg_price {s}.finite_numeric,
                limit_price {s}.finite_numeric,
                stop_price {s}.finite_numeric,
                created_at timestamptz NOT NULL,
                updated_at timestamptz,
                submitted_at timestamptz,
                filled_at timestamptz,
                expired_at timestamptz,
                canceled_at timestamptz,
                replaced_at timestamptz,
                expires_at timestamptz,
                raw_json jsonb,
                legs jsonb,
                ingested_at timestamptz NOT NULL DEFAULT now())""",
            t=orders.ident, s=s,
        ),
        _index(orders, "updated", "updated_at"),
        _index(orders, "symbol", "symbol"),
        _index(orders, "created", "created_at"),
        _index(orders, "parent", "parent_id"),
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                id text PRIMARY KEY,
                activity_type text NOT NULL,
                transaction_time timestamptz NOT NULL,
                symbol text,
                side text,
                qty {s}.finite_numeric,
                price {s}.finite_numeric,
                net_amount {s}.finite_numeric,
                execution_id uuid,
                order_id uuid,
                raw_json jsonb,
                ingested_at timestamptz NOT NULL DEFAULT now())""",
            t=activities.ident, s=s,
        ),
        _index(activities, "time", "transaction_time"),
        _index(activities, "type", "activity_type"),
        _index(
            activities, "exec", "execution_id", unique=True,
            where="activity_type = 'FILL' AND execution_id IS NOT NULL",
        ),
    ]  # fmt: skip


def _account_v1(names: AccountNames, schema: str) -> list[sql.Composed]:
    s = sql.Identifier(schema)
    return [
        _positions_ddl(names, s),
        _index(names.positions, "symbol", "symbol"),
        _closed_ddl(names, s),
        _index(names.closed, "symbol_time", "symbol, entry_time"),
        _index(names.closed, "exit_time", "exit_time"),
        *_equity_ddl(names, s),
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                id text PRIMARY KEY,
                ts timestamptz NOT NULL,
                amount {s}.finite_numeric,
                type text NOT NULL,
                category text NOT NULL CHECK (category IN ('trade', 'income', 'fee', 'external')),
                description text,
                updated_at timestamptz NOT NULL DEFAULT now())""",
            t=names.cash_flows.ident, s=s,
        ),
        _index(names.cash_flows, "ts", "ts"),
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                id text PRIMARY KEY,
                metrics_payload text NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now())""",
            t=names.metrics.ident,
        ),
        *_raw_ddl(names, s),
    ]  # fmt: skip


def _shared_quarantine(names: SharedNames, schema: str) -> list[sql.Composed]:
    return [
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                id bigserial PRIMARY KEY,
                ts timestamptz NOT NULL DEFAULT now(),
                account text,
                kind text NOT NULL,
                key text,
                raw text NOT NULL,
                error text NOT NULL)""",
            t=names.quarantine.ident,
        ),
    ]


SHARED_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "market schedule, latest prices, 1-minute bars", _shared_v1),
    Migration(2, "quarantine: changes a commit refused on their data", _shared_quarantine),
)
def _account_equity_proof(names: AccountNames, schema: str) -> list[sql.Composed]:
    """The daily proof against the broker's portfolio history (docs/spec.md §8)."""
    s = sql.Identifier(schema)
    return [
        _q(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS broker_equity {s}.finite_numeric, "
            "ADD COLUMN IF NOT EXISTS equity_diff {s}.finite_numeric",
            t=names.equity_full.ident, s=s,
        ),
    ]  # fmt: skip


def _replace_check(table: Table, column: str, allowed: tuple[str, ...]) -> list[sql.Composed]:
    """Drop every CHECK constraint on ``column`` of ``table`` and add one allowing ``allowed``."""
    drop = _q(
        """DO $$ DECLARE c record; BEGIN
             FOR c IN SELECT conname FROM pg_constraint
                      WHERE conrelid = (quote_ident({schema}) || '.' || quote_ident({table}))::regclass
                        AND contype = 'c' AND pg_get_constraintdef(oid) LIKE {pattern}
             LOOP EXECUTE format('ALTER TABLE %s.%s DROP CONSTRAINT %I',
                                 quote_ident({schema}), quote_ident({table}), c.conname);
             END LOOP; END $$""",
        schema=sql.Literal(table.schema), table=sql.Literal(table.name), pattern=sql.Literal(f"%({column} %"),
    )
    add = _q(
        "ALTER TABLE {t} ADD CONSTRAINT {c} CHECK ({col} IN ({allowed}))",
        t=table.ident, c=sql.Identifier(f"{column}_allowed"), col=sql.Identifier(column),
        allowed=sql.SQL(", ").join(map(sql.Literal, allowed)),
    )
    return [drop, add]


def _account_real_events(names: AccountNames, schema: str) -> list[sql.Composed]:
    """docs/spec.md §8: every activity category, and ``CORPORATE`` exits (cash mergers, cash in lieu)."""
    return [
        *_replace_check(names.closed, "exit_type", ("TP", "SL", "MANUAL", "CORPORATE")),
        *_replace_check(names.cash_flows, "category", ("trade", "income", "interest", "fee", "tax", "external",
                                                       "corporate", "other", "unclassified")),
    ]


def _account_reconciliations(names: AccountNames, schema: str) -> list[sql.Composed]:
    """Reconciliation fills leave ``raw_activities`` (nothing synthetic in a raw table; ``docs/startup.md``).

    Same columns as ``raw_activities`` (the start-up load reads both with one select list); rows
    a reconciliation stored there before (id ``<stamp>::recon:…``) move over.
    """
    raw, recon = names.raw_activities, names.reconciliations
    pattern = sql.Literal("%::recon:%")
    return [
        _q("CREATE TABLE IF NOT EXISTS {t} (LIKE {raw} INCLUDING ALL)", t=recon.ident, raw=raw.ident),
        _q("INSERT INTO {t} SELECT * FROM {raw} WHERE id LIKE {p} ON CONFLICT DO NOTHING",
           t=recon.ident, raw=raw.ident, p=pattern),
        _q("DELETE FROM {raw} WHERE id LIKE {p}", raw=raw.ident, p=pattern),
    ]


def _account_spinoff_bases(names: AccountNames, schema: str) -> list[sql.Composed]:
    """How each spin-off's basis is split (docs/corporate-actions.md "Spin-offs"), by action id."""
    return [
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                action_id text PRIMARY KEY,
                parent text NOT NULL,
                parent_share {s}.finite_numeric NOT NULL CHECK (parent_share > 0 AND parent_share < 1),
                source text NOT NULL CHECK (source IN ('default', 'override')),
                set_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now())""",
            t=names.spinoff_bases.ident, s=sql.Identifier(schema),
        ),
    ]  # fmt: skip


ACCOUNT_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "positions, closed, equity, cash flows, metrics, raw orders/activities", _account_v1),
    Migration(2, "daily equity: broker_equity, equity_diff", _account_equity_proof),
    Migration(3, "real broker events: activity categories, CORPORATE exits", _account_real_events),
    Migration(4, "reconciliation fills in their own table, out of raw_activities", _account_reconciliations),
    Migration(5, "spin-off bases: how each spin-off's basis is split", _account_spinoff_bases),
)


def _bootstrap(conn: psycopg.Connection[object], settings: Settings) -> None:
    """Create the schemas, the finite domains and the version table (idempotent)."""
    schema = sql.Identifier(settings.account_schema)
    version = shared_names(settings).schema_version.ident
    conn.execute(_q("CREATE SCHEMA IF NOT EXISTS {s}", s=schema))
    conn.execute(_q("CREATE SCHEMA IF NOT EXISTS {s}", s=sql.Identifier(settings.activities_schema)))
    for domain, base in (("finite_numeric", "numeric"), ("finite_double", "double precision")):
        exists = conn.execute(
            "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE t.typname = %s AND n.nspname = %s",
            (domain, settings.account_schema),
        ).fetchone()
        if not exists:
            conn.execute(
                _q(
                    "CREATE DOMAIN {s}.{d} AS " + base + " CHECK (VALUE IS NULL OR "
                    "(VALUE <> 'NaN' AND VALUE <> 'Infinity' AND VALUE <> '-Infinity'))",
                    s=schema, d=sql.Identifier(domain),
                )
            )  # fmt: skip
    conn.execute(
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                scope text NOT NULL,
                version integer NOT NULL,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (scope, version))""",
            t=version,
        )
    )


def _applied(conn: psycopg.Connection[object], settings: Settings) -> dict[str, int]:
    table = shared_names(settings).schema_version.ident
    rows = conn.execute(_q("SELECT scope, max(version) FROM {t} GROUP BY scope", t=table)).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}  # type: ignore[index]


def _pending(
    settings: Settings,
    scope: str,
    migrations: Sequence[Migration],
    current: int,
    names: object,
) -> tuple[list[sql.Composed], list[tuple[str, int]]]:
    """Return the statements of ``scope``'s migrations after ``current`` (with their version rows), and the versions."""
    known = max(m.version for m in migrations)
    if current > known:
        raise SchemaError(
            f"database scope {scope!r} is at version {current}, this code knows up to {known}: upgrade the code"
        )
    statements: list[sql.Composed] = []
    done = []
    table = shared_names(settings).schema_version.ident
    for migration in migrations:
        if migration.version <= current:
            continue
        statements += migration.statements(names, settings.account_schema)
        statements.append(_q(
            "INSERT INTO {t} (scope, version, description) VALUES ({scope}, {version}, {description})",
            t=table, scope=sql.Literal(scope), version=sql.Literal(migration.version),
            description=sql.Literal(migration.description),
        ))  # fmt: skip
        done.append((scope, migration.version))
    return statements, done


def _execute_batched(conn: psycopg.Connection[object], statements: Sequence[sql.Composed]) -> None:
    """Run ``statements`` (no parameters) ``STATEMENTS_PER_ROUND_TRIP`` at a time, each batch one round trip."""
    for start in range(0, len(statements), STATEMENTS_PER_ROUND_TRIP):
        conn.execute(sql.SQL(";\n").join(statements[start:start + STATEMENTS_PER_ROUND_TRIP]))


def ensure_schema(conn: psycopg.Connection[object], settings: Settings) -> list[tuple[str, int]]:
    """Apply every pending migration for the shared scope and each account, in one transaction.

    Returns the (scope, version) pairs applied; an empty list means the schema was current.
    Concurrent callers (``state`` and ``chmgr db init``) serialise on an advisory lock. The
    pending statements go ``STATEMENTS_PER_ROUND_TRIP`` per round trip (a thousand new accounts
    are about a hundred round trips, not thirty thousand; docs/scaling.md).
    """
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
            _bootstrap(conn, settings)
            applied = _applied(conn, settings)
            statements, done = _pending(
                settings, SHARED_SCOPE, SHARED_MIGRATIONS, applied.get(SHARED_SCOPE, 0), shared_names(settings),
            )  # fmt: skip
            for account in settings.accounts:
                scope = f"account:{account.slug}"
                more, versions = _pending(
                    settings, scope, ACCOUNT_MIGRATIONS, applied.get(scope, 0), account_names(settings, account.slug),
                )  # fmt: skip
                statements += more
                done += versions
            _execute_batched(conn, statements)
    except psycopg.Error as e:
        raise SchemaError(f"schema migration failed: {e.diag.message_primary or e}") from e
    if done:
        log.info("applied migrations count=%d scopes=%d statements=%d",
                 len(done), len({scope for scope, _ in done}), len(statements))
    return done


def schema_versions(conn: psycopg.Connection[object], settings: Settings) -> dict[str, int]:
    """Return {scope: version} as recorded in the database (empty when never initialised)."""
    table = shared_names(settings).schema_version
    exists = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (table.schema, table.name),
    ).fetchone()
    return _applied(conn, settings) if exists else {}


def latest_versions(settings: Settings) -> dict[str, int]:
    """Return {scope: version} this code would bring the database to."""
    versions = {SHARED_SCOPE: max(m.version for m in SHARED_MIGRATIONS)}
    for account in settings.accounts:
        versions[f"account:{account.slug}"] = max(m.version for m in ACCOUNT_MIGRATIONS)
    return versions

"""The schema, derived from the table descriptions (``db.tables``), and the ordered migrations.

``ensure_schema`` brings the database to the descriptions, ``SCOPES_PER_TRANSACTION`` scopes per
transaction (a current database: one transaction, a few reads):

- **derived**: a table missing is created from its description (``CREATE TABLE`` with its typed
  columns, constraints and key, then its indexes); a table that exists gets every column its
  description has and it lacks (``ALTER TABLE … ADD COLUMN IF NOT EXISTS``, with the
  description's default) and every described index it has no index for (same columns, same
  uniqueness). Adding a column or a table is an edit of ``db.tables`` only (docs/write-path.md).
  Each scope's digest of what its descriptions derive is kept in ``schema_shape``: a scope whose
  digest and version are current is not looked at, so a current start is three reads and no
  DDL; the catalog is read (once, for the tables of the other scopes) only when there is work.
- **migrations**: what cannot be derived (a constraint replaced, rows moved) is an ordered,
  never rewritten step, versioned per *scope*: ``shared`` and ``account:<slug>``, recorded in
  ``<ACCOUNT_SCHEMA>.schema_version``. A scope whose tables were all just created from the
  descriptions is at the newest version already: its steps are recorded, not run. A scope of an
  older database runs the steps after its version (after the derived step, so every table
  they touch exists). A database whose recorded version is newer than this code is refused
  (``SchemaError``).

Running twice is a no-op; adding an account later creates that account's tables only. Money and
quantities are ``finite_numeric`` (a domain over ``numeric`` that refuses NaN and ±Infinity),
ratios that are not money ``finite_double``: the database itself rejects a non-finite number,
whatever the code above it does. Every identifier is ``psycopg.sql``; type names and constraint
text are fixed literals of ``db.tables``, never input.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, cast

import psycopg
from psycopg import sql

from coldharbour.config import Settings
from coldharbour.db import tables
from coldharbour.db.names import AccountNames, SharedNames, Table, account_names, shared_names
from coldharbour.db.tables import Column, Index, TableSpec
from coldharbour.errors import SchemaError

log = logging.getLogger(__name__)

SHARED_SCOPE: Final = "shared"
# Any constant works: it only has to be the same in every process that migrates.
_MIGRATION_LOCK_KEY: Final = 0x43484D4752  # "CHMGR"
STATEMENTS_PER_ROUND_TRIP: Final = 300
# Scopes (accounts) brought to their descriptions per transaction. A transaction holds a lock on
# every relation it creates until it commits, in PostgreSQL's shared lock table
# (max_locks_per_transaction x max_connections slots, by default 64 x 100): about 74 per new
# account (its tables, their keys, indexes and TOAST relations), so 50 accounts take well under
# the default table and a thousand new accounts start on a default server (one transaction for
# all of them ran out of it: "out of shared memory").
SCOPES_PER_TRANSACTION: Final = 50
_DOMAINS: Final = {"numeric": "finite_numeric", "float8": "finite_double"}  # description type → checked domain

Names = AccountNames | SharedNames


class Migration(NamedTuple):
    """One schema step: its version within its scope, what it does, and its statements.

    ``statements`` None: a step that only created tables or added columns, which the
    descriptions now do (kept so the numbering of existing databases stays what it was).
    """

    version: int
    description: str
    statements: Callable[..., list[sql.Composed]] | None = None


def _q(text: str, **identifiers: sql.Composable) -> sql.Composed:
    return sql.SQL(text).format(**identifiers)


# -- derived from the descriptions ---------------------------------------------------------------


def _column(column: Column, schema: sql.Identifier) -> sql.Composed:
    """Return ``name type [constraint]``: a ``numeric``/``float8`` column is of the finite domain."""
    name, kind, *constraint = column
    domain = _DOMAINS.get(kind)
    typed = sql.SQL("{}.{}").format(schema, sql.Identifier(domain)) if domain else sql.SQL(kind)
    return sql.SQL(" ").join([sql.Identifier(name), typed, *map(sql.SQL, constraint)])


def _index(table: Table, index: Index) -> sql.Composed:
    """Return ``CREATE [UNIQUE] INDEX IF NOT EXISTS ix_<table>_<suffix> ON table (columns) [WHERE …]``."""
    return _q(
        "CREATE " + ("UNIQUE " if index.unique else "") + "INDEX IF NOT EXISTS {i} ON {t} ({c})"
        + (" WHERE " + index.where if index.where else ""),
        i=table.index(index.suffix), t=table.ident, c=sql.SQL(", ").join(map(sql.Identifier, index.columns)),
    )  # fmt: skip


def create_table(spec: TableSpec, table: Table, schema: str) -> list[sql.Composed]:
    """Return the statements creating ``table`` as ``spec`` describes it: the table, then its indexes."""
    s = sql.Identifier(schema)
    body = [_column(column, s) for column in spec.all_columns]
    body.append(_q("PRIMARY KEY ({k})", k=sql.SQL(", ").join(map(sql.Identifier, spec.key))))
    create = _q("CREATE TABLE IF NOT EXISTS {t} ({body})", t=table.ident, body=sql.SQL(", ").join(body))
    return [create, *(_index(table, index) for index in spec.indexes)]


def add_columns(table: Table, columns: Sequence[Column], schema: str) -> sql.Composed:
    """Return one ``ALTER TABLE`` adding ``columns`` (each ``IF NOT EXISTS``, with its constraint and default)."""
    s = sql.Identifier(schema)
    adds = sql.SQL(", ").join(_q("ADD COLUMN IF NOT EXISTS {c}", c=_column(column, s)) for column in columns)
    return _q("ALTER TABLE {t} {adds}", t=table.ident, adds=adds)


@dataclass
class _Catalog:
    """What the database has: columns of each table, and each index as (columns, unique)."""

    columns: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    indexes: dict[tuple[str, str], set[tuple[tuple[str, ...], bool]]] = field(default_factory=dict)

    @classmethod
    def read(cls, conn: psycopg.Connection[object], schemas: Sequence[str], names: Sequence[str]) -> _Catalog:
        """Read the tables named ``names`` in ``schemas`` and their indexes (two queries)."""
        catalog = cls()
        rows = conn.execute(
            "SELECT n.nspname, c.relname, array_agg(a.attname::text) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s) AND c.relname = ANY(%s) GROUP BY 1, 2",
            (list(schemas), list(names)),
        ).fetchall()
        for row in rows:
            schema, name, columns = cast("tuple[str, str, list[str]]", row)
            catalog.columns[(schema, name)] = set(columns)
        rows = conn.execute(
            "SELECT n.nspname, t.relname, i.indisunique, ARRAY(SELECT a.attname::text "
            "  FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
            "  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.ord) "
            "FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = ANY(%s) AND t.relname = ANY(%s)",
            (list(schemas), list(names)),
        ).fetchall()
        for row in rows:
            schema, name, unique, columns = cast("tuple[str, str, bool, list[str]]", row)
            catalog.indexes.setdefault((schema, name), set()).add((tuple(columns), bool(unique)))
        return catalog


@dataclass
class _Scope:
    """What the derived step does to one scope's tables."""

    statements: list[sql.Composed] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # tables created
    added: list[str] = field(default_factory=list)  # ``<table description>.<column>`` added
    existed: bool = False  # one of its tables was there before


def _derive(specs: Sequence[TableSpec], names: Names, schema: str, catalog: _Catalog) -> _Scope:
    """Return the statements bringing ``specs``' tables of ``names`` to their descriptions."""
    scope = _Scope()
    for spec in specs:
        table = spec.table(names)
        found = catalog.columns.get((table.schema, table.name))
        if found is None:
            scope.statements += create_table(spec, table, schema)
            scope.created.append(table.name)
            continue
        scope.existed = True
        missing = [column for column in spec.all_columns if column[0] not in found]
        if missing:
            scope.statements.append(add_columns(table, missing, schema))
            scope.added += [f"{spec.names_field}.{column[0]}" for column in missing]
        have = catalog.indexes.get((table.schema, table.name), set())
        scope.statements += [_index(table, i) for i in spec.indexes if (i.columns, i.unique) not in have]
    return scope


def _digest(specs: Sequence[TableSpec], names: Names) -> str:
    """Return the digest of what ``specs`` derive for ``names``: table names, columns, keys, indexes."""
    shape = [(spec.table(names), spec.all_columns, spec.key, spec.indexes) for spec in specs]
    return hashlib.sha256(repr(shape).encode()).hexdigest()


def _shapes(conn: psycopg.Connection[object], settings: Settings) -> dict[str, str]:
    table = shared_names(settings).schema_shape.ident
    rows = conn.execute(_q("SELECT scope, digest FROM {t}", t=table)).fetchall()
    return {str(row[0]): str(row[1]) for row in rows}  # type: ignore[index]


def _record_shapes(settings: Settings, digests: Sequence[tuple[str, str]]) -> list[sql.Composed]:
    if not digests:
        return []
    rows = sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(s), sql.Literal(d)) for s, d in digests)
    return [_q("INSERT INTO {t} (scope, digest) VALUES {rows} ON CONFLICT (scope) DO UPDATE "
               "SET digest = EXCLUDED.digest, updated_at = now()", t=shared_names(settings).schema_shape.ident,
               rows=rows)]  # fmt: skip


# -- migrations: what the descriptions cannot say ----------------------------------------------------------


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


SHARED_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "market schedule, latest prices, 1-minute bars"),
    Migration(2, "quarantine: changes a commit refused on their data"),
)
ACCOUNT_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "positions, closed, equity, cash flows, metrics, raw orders/activities"),
    Migration(2, "daily equity: broker_equity, equity_diff"),
    Migration(3, "real broker events: activity categories, CORPORATE exits", _account_real_events),
    Migration(4, "reconciliation fills in their own table, out of raw_activities", _account_reconciliations),
    Migration(5, "spin-off bases: how each spin-off's basis is split"),
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
    conn.execute(
        _q(
            """CREATE TABLE IF NOT EXISTS {t} (
                scope text PRIMARY KEY,
                digest text NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now())""",
            t=shared_names(settings).schema_shape.ident,
        )
    )


def _applied(conn: psycopg.Connection[object], settings: Settings) -> dict[str, int]:
    table = shared_names(settings).schema_version.ident
    rows = conn.execute(_q("SELECT scope, max(version) FROM {t} GROUP BY scope", t=table)).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}  # type: ignore[index]


def _migrations(
    settings: Settings, scope: str, migrations: Sequence[Migration], current: int, names: Names, *, run: bool
) -> tuple[list[sql.Composed], list[tuple[str, int]]]:
    """Return the statements of ``scope``'s steps after ``current`` and the row recording them, and the versions.

    ``run`` False: the scope's tables were just created from the descriptions, which already
    are what the steps lead to; the steps are only recorded.
    """
    known = max(m.version for m in migrations)
    if current > known:
        raise SchemaError(
            f"database scope {scope!r} is at version {current}, this code knows up to {known}: upgrade the code"
        )
    pending = [m for m in migrations if m.version > current]
    if not pending:
        return [], []
    statements: list[sql.Composed] = []
    for migration in pending:
        if run and migration.statements is not None:
            statements += migration.statements(names, settings.account_schema)
    rows = sql.SQL(", ").join(
        sql.SQL("({}, {}, {})").format(sql.Literal(scope), sql.Literal(m.version), sql.Literal(m.description))
        for m in pending
    )
    table = shared_names(settings).schema_version.ident
    statements.append(_q("INSERT INTO {t} (scope, version, description) VALUES {rows}", t=table, rows=rows))
    return statements, [(scope, m.version) for m in pending]


def _execute_batched(conn: psycopg.Connection[object], statements: Sequence[sql.Composed]) -> None:
    """Run ``statements`` (no parameters) ``STATEMENTS_PER_ROUND_TRIP`` at a time, each batch one round trip."""
    for start in range(0, len(statements), STATEMENTS_PER_ROUND_TRIP):
        conn.execute(sql.SQL(";\n").join(statements[start:start + STATEMENTS_PER_ROUND_TRIP]))


class _Versioned(NamedTuple):
    """One versioned scope: ``shared`` or ``account:<slug>``, its steps, its descriptions and names."""

    scope: str
    steps: Sequence[Migration]
    specs: Sequence[TableSpec]
    names: Names

    @property
    def newest(self) -> int:
        return max(m.version for m in self.steps)


def _bring(
    conn: psycopg.Connection[object], settings: Settings, work: Sequence[tuple[_Versioned, str]],
    applied: dict[str, int], summary: Counter[str], added: set[str], done: list[tuple[str, int]],
) -> int:
    """Derive and migrate the ``work`` scopes (inside the caller's transaction); return the statements sent."""
    if not work:
        return 0
    wanted = sorted({spec.table(scope.names).name for scope, _ in work for spec in scope.specs})
    catalog = _Catalog.read(conn, sorted({settings.account_schema, settings.activities_schema}), wanted)
    derived: list[sql.Composed] = []
    migrations: list[sql.Composed] = []
    for scope, _ in work:
        shape = _derive(scope.specs, scope.names, settings.account_schema, catalog)
        current = applied.get(scope.scope, 0)
        more, versions = _migrations(
            settings, scope.scope, scope.steps, current, scope.names, run=current > 0 or shape.existed)
        derived += shape.statements
        migrations += more
        done += versions
        added.update(shape.added)
        outcome = "created" if not shape.existed else "migrated" if versions or shape.added else "current"
        summary[outcome] += scope.scope != SHARED_SCOPE
        summary["columns"] += len(shape.added)
        if outcome != "current":
            log.debug("schema scope=%s %s tables_created=%d columns_added=%s versions=%s", scope.scope, outcome,
                      len(shape.created), ",".join(shape.added) or "-", [v for _, v in versions])
    migrations += _record_shapes(settings, [(scope.scope, digest) for scope, digest in work])
    _execute_batched(conn, derived + migrations)
    return len(derived) + len(migrations)


def ensure_schema(
    conn: psycopg.Connection[object],
    settings: Settings,
    *,
    account_tables: Sequence[TableSpec] = tables.ACCOUNT_TABLES,
    shared_tables: Sequence[TableSpec] = tables.SHARED_TABLES,
) -> list[tuple[str, int]]:
    """Bring the shared tables and each account's to their descriptions and run pending migrations.

    Returns the (scope, version) pairs recorded; an empty list means no version was pending
    (columns a description gained may still have been added). The scopes with work go
    ``SCOPES_PER_TRANSACTION`` per transaction (each scope's tables, steps and recorded version
    commit together; a crash between two leaves the rest for the next start). Logs one summary line (accounts
    created, migrated, columns added, time); per-account detail at DEBUG. Concurrent callers
    (``state`` and ``chmgr db init``) serialise on an advisory lock. The statements go
    ``STATEMENTS_PER_ROUND_TRIP`` per round trip (a thousand new accounts are about a hundred
    round trips, not thirty thousand; docs/scaling.md). ``account_tables``/``shared_tables``:
    the descriptions (a test passes its own).
    """
    started = time.monotonic()
    summary: Counter[str] = Counter()
    added: set[str] = set()
    statements = 0
    done: list[tuple[str, int]] = []
    pending: list[_Versioned] = [_Versioned(SHARED_SCOPE, SHARED_MIGRATIONS, shared_tables, shared_names(settings))]
    pending += [_Versioned(f"account:{account.slug}", ACCOUNT_MIGRATIONS, account_tables,
                       account_names(settings, account.slug)) for account in settings.accounts]  # fmt: skip
    first = True
    try:
        while pending:  # one transaction per SCOPES_PER_TRANSACTION scopes with work; a current start is one
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
                if first:
                    _bootstrap(conn, settings)
                    first = False
                applied, recorded = _applied(conn, settings), _shapes(conn, settings)
                work = []  # the scopes not known to be current: a new digest, or a version pending
                for scope in pending:
                    digest = _digest(scope.specs, scope.names)
                    if recorded.get(scope.scope) != digest or applied.get(scope.scope, 0) != scope.newest:
                        work.append((scope, digest))
                    else:
                        summary["current"] += scope.scope != SHARED_SCOPE
                work, rest = work[:SCOPES_PER_TRANSACTION], work[SCOPES_PER_TRANSACTION:]
                statements += _bring(conn, settings, work, applied, summary, added, done)
            pending = [scope for scope, _ in rest]
    except psycopg.Error as e:
        raise SchemaError(f"schema migration failed: {e.diag.message_primary or e}") from e
    log.info(
        "schema ready accounts=%d created=%d migrated=%d current=%d columns_added=%d%s statements=%d elapsed_ms=%.0f",
        len(settings.accounts), summary["created"], summary["migrated"], summary["current"], summary["columns"],
        f" ({','.join(sorted(added))})" if added else "", statements,
        (time.monotonic() - started) * 1000,
    )  # fmt: skip
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

"""The table descriptions are the schema: every described column exists with its type, keys are unique.

``db.tables`` is what the writer builds its statements from; ``db.schema`` is what creates the
tables. This holds the two together against a migrated database (real PostgreSQL).
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
import pytest

from coldharbour.db import tables
from coldharbour.db.names import account_names, shared_names
from coldharbour.domain.cashflows import CashFlow
from coldharbour.domain.corporate import SpinoffBasis
from coldharbour.domain.equity import DailyRow, IntradayPoint
from coldharbour.domain.schedule import Session
from coldharbour.domain.types import CLOSED_COLUMNS, ClosedSlice, OpenRow
from tests.support import make_settings

SPECS = [tables.POSITIONS, tables.CLOSED, tables.RAW_ORDERS, tables.RAW_ACTIVITIES, tables.RECONCILIATIONS,
         tables.CASH_FLOWS, tables.DAILY_EQUITY, tables.INTRADAY_EQUITY, tables.METRICS, tables.MARKET_SCHEDULE,
         tables.LATEST_PRICES, tables.PRICE_BARS, tables.SPINOFF_BASES]
UDT = {"int": "int4", "float8": "float8"}  # the description's type → information_schema.udt_name, when they differ


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.names_field)
def test_tables_description_matches_the_migrated_table(migrated_dsn: Any, spec: tables.TableSpec) -> None:
    settings = make_settings(migrated_dsn)
    names = account_names(settings, "demo") if hasattr(account_names(settings, "demo"), spec.names_field) \
        else shared_names(settings)
    table = spec.table(names)
    with psycopg.connect(migrated_dsn.reveal()) as conn:
        found: dict[str, str] = dict(conn.execute(
            "SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (table.schema, table.name)).fetchall())
        unique = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND i.indisunique "
            "AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a "
            "     WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) = %s",
            (table.schema, table.name, sorted(spec.key))).fetchone()

    assert {name: found.get(name) for name in spec.names} == {
        name: UDT.get(kind, kind) for name, kind in spec.columns}
    assert unique == (1,), f"one unique index on {spec.key}"


def test_tables_closed_columns_are_the_slice_fields_the_domain_names() -> None:
    assert tables.CLOSED.names == CLOSED_COLUMNS


def test_tables_a_key_outside_the_columns_is_refused() -> None:
    with pytest.raises(ValueError, match=r"table nowhere: key columns \['id'\] are not among its columns"):
        tables.TableSpec("nowhere", (("name", "text"),), key=("id",))


@pytest.mark.parametrize(("spec", "value_type"), [
    (tables.POSITIONS, OpenRow), (tables.CLOSED, ClosedSlice), (tables.CASH_FLOWS, CashFlow),
    (tables.DAILY_EQUITY, DailyRow), (tables.INTRADAY_EQUITY, IntradayPoint), (tables.MARKET_SCHEDULE, Session),
    (tables.SPINOFF_BASES, SpinoffBasis),
], ids=lambda v: getattr(v, "names_field", ""))
def test_tables_rows_read_from_fields_name_every_column_as_a_field(spec: tables.TableSpec, value_type: type) -> None:
    """``db.rows.row_of`` reads each column as the domain value's field of that name."""
    fields = {field.name for field in msgspec.structs.fields(value_type)}

    assert [name for name in spec.names if name not in fields] == []

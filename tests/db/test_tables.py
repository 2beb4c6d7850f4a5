"""The table descriptions are the schema: every described column exists with its type, keys are unique.

``db.tables`` is what the writer builds its statements from and what ``db.schema`` creates the
tables from. This holds the migrated database to them (real PostgreSQL); tests/db/test_schema.py
shows a description's new column or table reaching the database, the writer and the loads.
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

SPECS = [*tables.ACCOUNT_TABLES, *tables.SHARED_TABLES]
UDT = {"int": "int4", "bigserial": "int8"}  # the description's type → information_schema.udt_name, when they differ


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.names_field)
def test_tables_description_matches_the_migrated_table(migrated_dsn: Any, spec: tables.TableSpec) -> None:
    settings = make_settings(migrated_dsn)
    names = shared_names(settings) if spec.shared else account_names(settings, "demo")
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

    assert found == {column[0]: UDT.get(column[1], column[1]) for column in spec.all_columns}
    assert unique == (1,), f"one unique index on {spec.key}"


def test_tables_closed_columns_are_the_slice_fields_the_domain_names() -> None:
    assert tables.CLOSED.names == CLOSED_COLUMNS


def test_tables_a_key_outside_the_columns_is_refused() -> None:
    with pytest.raises(ValueError, match=r"table nowhere: key columns \['id'\] are not among its columns"):
        tables.TableSpec("nowhere", (("name", "text"),), key=("id",))


def test_tables_a_column_described_twice_or_an_index_on_no_column_is_refused() -> None:
    with pytest.raises(ValueError, match=r"table twice: columns \['id'\] are described twice"):
        tables.TableSpec("twice", (("id", "text"),), key=("id",), stored=(("id", "text"),))
    with pytest.raises(ValueError, match=r"table nowhere: index columns \['at'\] are not among its columns"):
        tables.TableSpec("nowhere", (("id", "text"),), key=("id",), indexes=(tables.Index("at", ("at",)),))


def test_tables_every_table_is_in_one_set_once() -> None:
    fields = [spec.names_field for spec in SPECS]

    assert sorted(fields) == sorted(set(fields))
    assert [spec.names_field for spec in tables.SHARED_TABLES if not spec.shared] == []
    assert [spec.names_field for spec in tables.ACCOUNT_TABLES if spec.shared] == []


@pytest.mark.parametrize(("spec", "value_type"), [
    (tables.POSITIONS, OpenRow), (tables.CLOSED, ClosedSlice), (tables.CASH_FLOWS, CashFlow),
    (tables.DAILY_EQUITY, DailyRow), (tables.INTRADAY_EQUITY, IntradayPoint), (tables.MARKET_SCHEDULE, Session),
    (tables.SPINOFF_BASES, SpinoffBasis),
], ids=lambda v: getattr(v, "names_field", ""))
def test_tables_rows_read_from_fields_name_every_column_as_a_field(spec: tables.TableSpec, value_type: type) -> None:
    """``db.rows.row_of`` reads each column as the domain value's field of that name."""
    fields = {field.name for field in msgspec.structs.fields(value_type)}

    assert [name for name in spec.names if name not in fields] == []

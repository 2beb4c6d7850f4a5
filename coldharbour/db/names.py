"""Account slug → validated schema/table identifiers (``psycopg.sql``) and channel names.

Every identifier that reaches SQL is built here with ``sql.Identifier`` from names that
``config`` already validated (lower-case, ≤ 63 bytes); nothing is formatted into SQL by hand.
"""

from __future__ import annotations

from typing import Final

import msgspec
from psycopg import sql

from coldharbour.config import Settings, check_identifier

SCHEMA_VERSION_TABLE: Final = "schema_version"
SCHEMA_SHAPE_TABLE: Final = "schema_shape"
LATEST_PRICES_TABLE: Final = "latest_prices"
PRICE_BARS_TABLE: Final = "price_bars_1min"
QUARANTINE_TABLE: Final = "quarantine"


class Table(msgspec.Struct, frozen=True):
    """A schema-qualified table name."""

    schema: str
    name: str

    @property
    def ident(self) -> sql.Identifier:
        """Return the quoted ``schema.name`` identifier."""
        return sql.Identifier(self.schema, self.name)

    def index(self, suffix: str) -> sql.Identifier:
        """Return an index name derived from the table (truncated to stay ≤ 63 bytes)."""
        return sql.Identifier(f"ix_{self.name}"[: 63 - len(suffix) - 1] + "_" + suffix)


class AccountNames(msgspec.Struct, frozen=True, kw_only=True):
    """Every table and NOTIFY channel of one account."""

    slug: str
    schema: str  # the account schema (ACCOUNT_SCHEMA): where a described table without a field here lives
    positions: Table
    closed: Table
    equity_full: Table
    equity_intraday: Table
    cash_flows: Table
    metrics: Table
    raw_orders: Table
    raw_activities: Table
    # Reconciliation fills (``recon:``): our own bookings, kept out of the raw broker tables so no
    # replay reads them as broker history; the ledger rebuild reads them with the fills.
    reconciliations: Table
    spinoff_bases: Table  # how each spin-off's basis is split (a reload books it the same)
    pos_channel: str
    closed_channel: str
    metrics_channel: str


class SharedNames(msgspec.Struct, frozen=True, kw_only=True):
    """Tables shared by all accounts."""

    schema: str  # the account schema (ACCOUNT_SCHEMA)
    schema_version: Table
    schema_shape: Table  # per scope, the digest of the descriptions its tables were last brought to
    market_schedule: Table
    latest_prices: Table
    price_bars_1min: Table
    quarantine: Table  # changes a commit refused on their data (docs/write-path.md)


def account_names(settings: Settings, slug: str) -> AccountNames:
    """Return the validated names of ``slug``'s tables and channels."""
    schema = check_identifier(settings.account_schema, what="ACCOUNT_SCHEMA")
    raw_schema = check_identifier(settings.activities_schema, what="ACTIVITIES_SCHEMA")

    def table(template: str, what: str, in_schema: str = schema) -> Table:
        return Table(in_schema, check_identifier(template.format(slug=slug), what=what))

    def channel(template: str, what: str) -> str:
        return check_identifier(template.format(slug=slug), what=what)

    return AccountNames(
        slug=slug,
        schema=schema,
        positions=table(settings.table_account_positions, "TABLE_ACCOUNT_POSITIONS"),
        closed=table(settings.table_account_closed, "TABLE_ACCOUNT_CLOSED"),
        equity_full=table(settings.table_account_equity_full, "TABLE_ACCOUNT_EQUITY_FULL"),
        equity_intraday=table(settings.table_account_equity_intraday, "TABLE_ACCOUNT_EQUITY_INTRADAY"),
        cash_flows=table(settings.table_cash_flows, "TABLE_CASH_FLOWS"),
        metrics=table(settings.table_account_metrics, "TABLE_ACCOUNT_METRICS"),
        raw_orders=table("raw_orders_{slug}", "raw orders table", raw_schema),
        raw_activities=table("raw_activities_{slug}", "raw activities table", raw_schema),
        reconciliations=table("reconciliations_{slug}", "reconciliations table"),
        spinoff_bases=table("spinoff_bases_{slug}", "spin-off bases table"),
        pos_channel=channel(settings.pos_channel, "POS_CHANNEL"),
        closed_channel=channel(settings.closed_channel, "CLOSED_CHANNEL"),
        metrics_channel=channel(settings.metrics_channel, "METRICS_CHANNEL"),
    )


def shared_names(settings: Settings) -> SharedNames:
    """Return the validated names of the shared tables."""
    schema = check_identifier(settings.account_schema, what="ACCOUNT_SCHEMA")
    return SharedNames(
        schema=schema,
        schema_version=Table(schema, SCHEMA_VERSION_TABLE),
        schema_shape=Table(schema, SCHEMA_SHAPE_TABLE),
        market_schedule=Table(schema, check_identifier(settings.table_market_schedule, what="TABLE_MARKET_SCHEDULE")),
        latest_prices=Table(schema, LATEST_PRICES_TABLE),
        price_bars_1min=Table(schema, PRICE_BARS_TABLE),
        quarantine=Table(schema, QUARANTINE_TABLE),
    )

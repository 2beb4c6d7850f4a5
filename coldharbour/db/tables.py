"""Every table, described once: its name, typed columns with their constraints, key, indexes, announcement.

The schema and the write path are both derived from these entries. ``db.schema`` creates each
table from its description (``CREATE TABLE``, its indexes) and brings an existing one to it
(``ADD COLUMN IF NOT EXISTS`` for a column the description gained); ``db.upserts`` builds the
statements (the column list, the cast of each JSON element to its type, the conflict key);
``db.writer`` checks row widths against them; ``db.rows`` reads a domain value's fields in
column order (``row_of``) and takes its ``*_COLUMNS`` constants (what the loaders select) here.

A column is ``(name, type)`` or ``(name, type, constraint)``: ``constraint`` is fixed SQL text
written here (``NOT NULL``, ``DEFAULT …``, ``CHECK (…)``), never input. ``numeric`` columns are
stored as the ``finite_numeric`` domain and ``float8`` as ``finite_double`` (no NaN, no ±Infinity).
``columns`` are the ones the writer writes, in row order; ``stored`` the ones it never writes
(``updated_at``/``ingested_at`` filled by their default, broker fields kept for reading).

Adding a column or a table (docs/write-path.md): its entry here, and the domain value's field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Any, Final

from coldharbour.config import check_identifier
from coldharbour.db.names import AccountNames, SharedNames, Table

Column = tuple[str, str] | tuple[str, str, str]  # (name, type) or (name, type, constraint SQL)


class Announced(StrEnum):
    """How a table's changes reach the UI (docs/spec.md §6)."""

    NOTHING = "nothing"
    OPEN_ROWS = "open_rows"  # positions channel: {"row"}, {"op": "delete"}, {"op": "batch"}, refetch
    CLOSED = "closed"  # closed channel: {"op": "insert"}, refetch
    METRICS = "metrics"  # metrics channel: {"op": "metrics"} when a KPI changed


@dataclass(frozen=True, slots=True)
class Index:
    """An index of a table: named ``ix_<table>_<suffix>``; ``where`` is fixed SQL text (a partial index)."""

    suffix: str
    columns: tuple[str, ...]
    unique: bool = False
    where: str = ""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table: where its name is, its typed columns in row order, its key, indexes, how it is announced.

    The name is the ``AccountNames``/``SharedNames`` field ``names_field`` (the names a setting can
    change); a table without one there gives its ``template`` (``"notes_{slug}"``, in the account
    schema) and needs no entry in ``db.names``. ``shared``: one table for every account.
    """

    names_field: str
    columns: tuple[Column, ...]  # written by the writer, in row order
    key: tuple[str, ...]
    announced: Announced = Announced.NOTHING
    stored: tuple[Column, ...] = ()  # never written by the writer: filled by their default, or read only
    indexes: tuple[Index, ...] = ()
    shared: bool = False
    template: str | None = None
    names: tuple[str, ...] = field(init=False)
    types: tuple[str, ...] = field(init=False)
    times: tuple[int, ...] = field(init=False, repr=False, compare=False)  # positions of ``timestamptz`` columns
    getter: Callable[[Any], Any] = field(init=False, repr=False, compare=False)  # value → its column attributes

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(column[0] for column in self.columns))
        object.__setattr__(self, "types", tuple(column[1] for column in self.columns))
        object.__setattr__(self, "times", tuple(i for i, kind in enumerate(self.types) if kind == "timestamptz"))
        one = attrgetter(self.names[0]) if len(self.names) == 1 else None
        object.__setattr__(self, "getter", attrgetter(*self.names) if one is None else lambda v: (one(v),))
        every = [column[0] for column in self.all_columns]
        missing = [k for k in self.key if k not in every]
        if missing:
            raise ValueError(f"table {self.names_field}: key columns {missing} are not among its columns")
        twice = sorted({name for name in every if every.count(name) > 1})
        if twice:
            raise ValueError(f"table {self.names_field}: columns {twice} are described twice")
        unknown = sorted({c for index in self.indexes for c in index.columns if c not in every})
        if unknown:
            raise ValueError(f"table {self.names_field}: index columns {unknown} are not among its columns")

    @property
    def width(self) -> int:
        """Return the number of columns of a row."""
        return len(self.columns)

    @property
    def all_columns(self) -> tuple[Column, ...]:
        """Return every column of the table: the written ones, then the stored-only ones."""
        return self.columns + self.stored

    def table(self, names: AccountNames | SharedNames) -> Table:
        """Return this table's validated name among ``names`` (or made from its ``template``)."""
        found = getattr(names, self.names_field, None)
        if isinstance(found, Table):
            return found
        if self.template is None or found is not None:
            raise TypeError(f"{self.names_field} is not a table of {type(names).__name__}")
        slug = names.slug if isinstance(names, AccountNames) else ""
        return Table(names.schema, check_identifier(self.template.format(slug=slug), what=f"{self.names_field} table"))


_TIME: Final = "timestamptz"
_NUMBER: Final = "numeric"
_REQUIRED: Final = "NOT NULL"
_SIDE: Final = "NOT NULL CHECK (side IN ('long', 'short'))"
_UPDATED: Final = ("updated_at", _TIME, "NOT NULL DEFAULT now()")
_INGESTED: Final = ("ingested_at", _TIME, "NOT NULL DEFAULT now()")

POSITIONS: Final = TableSpec("positions", (
    ("parent_id", "text"), ("symbol", "text", _REQUIRED), ("side", "text", _SIDE), ("filled_at", _TIME),
    ("qty", _NUMBER, "NOT NULL CHECK (qty >= 0)"), ("avg_fill", _NUMBER), ("avg_px_symbol", _NUMBER),
    ("sl_child", "text"), ("sl_px", _NUMBER), ("tp_child", "text"), ("tp_px", _NUMBER), ("mkt_px", _NUMBER),
    ("bar_px", _NUMBER), ("bar_ts", _TIME), ("moved_flag", "text", "NOT NULL DEFAULT '—'"), ("buy_value", _NUMBER),
    ("holding_days", "int"), ("days_to_expire", "int"), ("mkt_value", _NUMBER), ("profit_loss", _NUMBER),
    ("profit_loss_lot", _NUMBER), ("tp_sl_reach_pct", _NUMBER), _UPDATED,
), key=("parent_id",), announced=Announced.OPEN_ROWS, indexes=(Index("symbol", ("symbol",)),))  # fmt: skip

CLOSED: Final = TableSpec("closed", (
    ("entry_lot_id", "text"), ("exit_order_id", "text"), ("exit_parent_id", "text"), ("symbol", "text", _REQUIRED),
    ("side", "text", _SIDE), ("qty", _NUMBER, "NOT NULL CHECK (qty > 0)"), ("entry_time", _TIME),
    ("entry_price", _NUMBER), ("exit_time", _TIME), ("exit_price", _NUMBER),
    ("exit_type", "text", "NOT NULL CONSTRAINT exit_type_allowed CHECK (exit_type IN ('TP', 'SL', 'MANUAL', "
                          "'CORPORATE'))"),  # CORPORATE: cash mergers, cash in lieu (docs/spec.md §8)
    ("pnl_cash", _NUMBER), ("pnl_cash_fifo", _NUMBER), ("diff_pnl", _NUMBER), ("pnl_pct", _NUMBER),
    ("return_pct", _NUMBER), ("duration_sec", _NUMBER),
), key=("entry_lot_id", "exit_order_id"), announced=Announced.CLOSED, stored=(_UPDATED,), indexes=(
    Index("symbol_time", ("symbol", "entry_time")), Index("exit_time", ("exit_time",)),
))  # fmt: skip

RAW_ORDERS: Final = TableSpec("raw_orders", (
    ("id", "uuid"), ("client_order_id", "text"), ("parent_id", "text"), ("replaced_by", "text"),
    ("replaces", "text"), ("symbol", "text", _REQUIRED), ("side", "text", _REQUIRED),
    ("order_type", "text", _REQUIRED), ("status", "text", _REQUIRED), ("qty", _NUMBER),
    ("filled_qty", _NUMBER, "NOT NULL DEFAULT 0"), ("filled_avg_price", _NUMBER), ("limit_price", _NUMBER),
    ("stop_price", _NUMBER), ("created_at", _TIME, _REQUIRED), ("updated_at", _TIME), ("filled_at", _TIME),
    ("expires_at", _TIME), ("raw_json", "jsonb"), ("legs", "jsonb"),
), key=("id",), stored=(
    ("request_id", "text"), ("submitted_at", _TIME), ("expired_at", _TIME), ("canceled_at", _TIME),
    ("replaced_at", _TIME), _INGESTED,
), indexes=(
    Index("updated", ("updated_at",)), Index("symbol", ("symbol",)), Index("created", ("created_at",)),
    Index("parent", ("parent_id",)),
))  # fmt: skip

_ACTIVITY: Final = (
    ("id", "text"), ("activity_type", "text", _REQUIRED), ("transaction_time", _TIME, _REQUIRED),
    ("symbol", "text"), ("side", "text"), ("qty", _NUMBER), ("price", _NUMBER), ("net_amount", _NUMBER),
    ("execution_id", "uuid"), ("order_id", "uuid"), ("raw_json", "jsonb"),
)  # fmt: skip
_ACTIVITY_INDEXES: Final = (
    Index("time", ("transaction_time",)), Index("type", ("activity_type",)),
    Index("exec", ("execution_id",), unique=True, where="activity_type = 'FILL' AND execution_id IS NOT NULL"),
)  # FILLs are upserted by execution_id too
RAW_ACTIVITIES: Final = TableSpec("raw_activities", _ACTIVITY, key=("id",), stored=(_INGESTED,),
                                  indexes=_ACTIVITY_INDEXES)
# Reconciliation fills: our own bookings, the columns of raw_activities (one select list reads both).
RECONCILIATIONS: Final = TableSpec("reconciliations", _ACTIVITY, key=("id",), stored=(_INGESTED,),
                                   indexes=_ACTIVITY_INDEXES)

CASH_FLOWS: Final = TableSpec("cash_flows", (
    ("id", "text"), ("ts", _TIME, _REQUIRED), ("amount", _NUMBER), ("type", "text", _REQUIRED),
    ("category", "text", "NOT NULL CONSTRAINT category_allowed CHECK (category IN ('trade', 'income', "
                         "'interest', 'fee', 'tax', 'external', 'corporate', 'other', 'unclassified'))"),
    ("description", "text"),
), key=("id",), stored=(_UPDATED,), indexes=(Index("ts", ("ts",)),))  # fmt: skip

# How each spin-off's basis is split (docs/corporate-actions.md "Spin-offs"): a reload applies it
# to the action its stored SPIN leg describes.
SPINOFF_BASES: Final = TableSpec("spinoff_bases", (
    ("action_id", "text"), ("parent", "text", _REQUIRED),
    ("parent_share", _NUMBER, "NOT NULL CHECK (parent_share > 0 AND parent_share < 1)"),
    ("source", "text", "NOT NULL CHECK (source IN ('default', 'override'))"), ("set_at", _TIME, _REQUIRED),
), key=("action_id",), stored=(_UPDATED,))  # fmt: skip

DAILY_EQUITY: Final = TableSpec("equity_full", (
    ("date", "date"), ("deposit", _NUMBER), ("cash_balance", _NUMBER), ("market_value", _NUMBER),
    ("daily_return", _NUMBER), ("cumulative_return", _NUMBER), ("drawdown", _NUMBER), ("net_flows", _NUMBER),
    ("sharpe_10", "float8"), ("sharpe_21", "float8"), ("sharpe_63", "float8"), ("sharpe_126", "float8"),
    ("sharpe_252", "float8"), ("smart_sharpe_10", "float8"), ("smart_sharpe_21", "float8"),
    ("smart_sharpe_63", "float8"), ("smart_sharpe_126", "float8"), ("smart_sharpe_252", "float8"),
    ("broker_equity", _NUMBER), ("equity_diff", _NUMBER),
), key=("date",), stored=(_UPDATED,))  # fmt: skip

INTRADAY_EQUITY: Final = TableSpec("equity_intraday", (
    ("ts", _TIME), ("deposit", _NUMBER), ("cumulative_return", _NUMBER), ("drawdown", _NUMBER),
    ("realised_return", _NUMBER),
), key=("ts",), stored=(_UPDATED,))  # fmt: skip

METRICS: Final = TableSpec("metrics", (("id", "text"), ("metrics_payload", "text", _REQUIRED), _UPDATED),
                           key=("id",), announced=Announced.METRICS)

MARKET_SCHEDULE: Final = TableSpec("market_schedule", (
    ("session_date", "date"), ("pre_open_utc", _TIME, _REQUIRED), ("open_utc", _TIME, _REQUIRED),
    ("close_utc", _TIME, _REQUIRED), ("post_close_utc", _TIME, _REQUIRED),
), key=("session_date",), stored=(_UPDATED,), indexes=(Index("open", ("open_utc",)),), shared=True)  # fmt: skip

LATEST_PRICES: Final = TableSpec("latest_prices", (
    ("symbol", "text"), ("price", _NUMBER, "NOT NULL CHECK (price > 0)"), ("ts", _TIME, _REQUIRED),
), key=("symbol",), shared=True)  # fmt: skip

PRICE_BARS: Final = TableSpec("price_bars_1min", (
    ("symbol", "text"), ("ts", _TIME), ("open", _NUMBER, _REQUIRED), ("high", _NUMBER, _REQUIRED),
    ("low", _NUMBER, _REQUIRED), ("close", _NUMBER, _REQUIRED), ("volume", _NUMBER, "NOT NULL DEFAULT 0"),
), key=("symbol", "ts"), shared=True)  # fmt: skip

# Changes a commit refused on their data (docs/write-path.md); inserted, never upserted.
QUARANTINE: Final = TableSpec("quarantine", (
    ("account", "text"), ("kind", "text", _REQUIRED), ("key", "text"), ("raw", "text", _REQUIRED),
    ("error", "text", _REQUIRED),
), key=("id",), stored=(("id", "bigserial"), ("ts", _TIME, "NOT NULL DEFAULT now()")), shared=True)  # fmt: skip

# Every table, in the order ``db.schema`` creates them: one account's, then the shared ones.
ACCOUNT_TABLES: Final = (POSITIONS, CLOSED, DAILY_EQUITY, INTRADAY_EQUITY, CASH_FLOWS, METRICS, RAW_ORDERS,
                         RAW_ACTIVITIES, RECONCILIATIONS, SPINOFF_BASES)
SHARED_TABLES: Final = (MARKET_SCHEDULE, LATEST_PRICES, PRICE_BARS, QUARANTINE)

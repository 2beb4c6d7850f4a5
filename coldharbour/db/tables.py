"""Every table ``state`` writes, described once: its name, key, typed columns and how it is announced.

``db.upserts`` builds its statements from these entries (the column list, the cast of each JSON
element to its type, the conflict key); ``db.writer`` checks row widths against them; ``db.rows``
takes its ``*_COLUMNS`` constants (what the loaders select) from them. The row of each table is
made from the domain value by one function of ``db.rows`` (``open_row_values``, …), in column order.

Adding a column (docs/write-path.md): its ``(name, type)`` here, its value in the table's row
function, and a migration in ``db.schema``. Adding a table: an entry here, its name in
``db.names``, a change kind in ``domain.changes`` and its entry in ``db.writer.WRITES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from coldharbour.db.names import AccountNames, SharedNames, Table


class Announced(StrEnum):
    """How a table's changes reach the UI (docs/spec.md §6)."""

    NOTHING = "nothing"
    OPEN_ROWS = "open_rows"  # positions channel: {"row"}, {"op": "delete"}, {"op": "batch"}, refetch
    CLOSED = "closed"  # closed channel: {"op": "insert"}, refetch
    METRICS = "metrics"  # metrics channel: {"op": "metrics"} when a KPI changed


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table: where its name is, its typed columns in row order, its key, how it is announced."""

    names_field: str  # the ``AccountNames``/``SharedNames`` field holding its validated name
    columns: tuple[tuple[str, str], ...]  # (column, PostgreSQL type)
    key: tuple[str, ...]
    announced: Announced = Announced.NOTHING
    names: tuple[str, ...] = field(init=False)
    types: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(name for name, _ in self.columns))
        object.__setattr__(self, "types", tuple(kind for _, kind in self.columns))
        missing = [k for k in self.key if k not in self.names]
        if missing:
            raise ValueError(f"table {self.names_field}: key columns {missing} are not among its columns")

    @property
    def width(self) -> int:
        """Return the number of columns of a row."""
        return len(self.columns)

    def table(self, names: AccountNames | SharedNames) -> Table:
        """Return this table's validated name among ``names``."""
        found = getattr(names, self.names_field)
        if not isinstance(found, Table):
            raise TypeError(f"{self.names_field} is not a table of {type(names).__name__}")
        return found


_TIME: Final = "timestamptz"
_NUMBER: Final = "numeric"

POSITIONS: Final = TableSpec("positions", (
    ("parent_id", "text"), ("symbol", "text"), ("side", "text"), ("filled_at", _TIME), ("qty", _NUMBER),
    ("avg_fill", _NUMBER), ("avg_px_symbol", _NUMBER), ("sl_child", "text"), ("sl_px", _NUMBER),
    ("tp_child", "text"), ("tp_px", _NUMBER), ("mkt_px", _NUMBER), ("bar_px", _NUMBER), ("bar_ts", _TIME),
    ("moved_flag", "text"), ("buy_value", _NUMBER), ("holding_days", "int"), ("days_to_expire", "int"),
    ("mkt_value", _NUMBER), ("profit_loss", _NUMBER), ("profit_loss_lot", _NUMBER), ("tp_sl_reach_pct", _NUMBER),
    ("updated_at", _TIME),
), key=("parent_id",), announced=Announced.OPEN_ROWS)  # fmt: skip

CLOSED: Final = TableSpec("closed", (
    ("entry_lot_id", "text"), ("exit_order_id", "text"), ("exit_parent_id", "text"), ("symbol", "text"),
    ("side", "text"), ("qty", _NUMBER), ("entry_time", _TIME), ("entry_price", _NUMBER), ("exit_time", _TIME),
    ("exit_price", _NUMBER), ("exit_type", "text"), ("pnl_cash", _NUMBER), ("pnl_cash_fifo", _NUMBER),
    ("diff_pnl", _NUMBER), ("pnl_pct", _NUMBER), ("return_pct", _NUMBER), ("duration_sec", _NUMBER),
), key=("entry_lot_id", "exit_order_id"), announced=Announced.CLOSED)  # fmt: skip

RAW_ORDERS: Final = TableSpec("raw_orders", (
    ("id", "uuid"), ("client_order_id", "text"), ("parent_id", "text"), ("replaced_by", "text"),
    ("replaces", "text"), ("symbol", "text"), ("side", "text"), ("order_type", "text"), ("status", "text"),
    ("qty", _NUMBER), ("filled_qty", _NUMBER), ("filled_avg_price", _NUMBER), ("limit_price", _NUMBER),
    ("stop_price", _NUMBER), ("created_at", _TIME), ("updated_at", _TIME), ("filled_at", _TIME),
    ("expires_at", _TIME), ("raw_json", "jsonb"), ("legs", "jsonb"),
), key=("id",))  # fmt: skip

_ACTIVITY: Final = (
    ("id", "text"), ("activity_type", "text"), ("transaction_time", _TIME), ("symbol", "text"), ("side", "text"),
    ("qty", _NUMBER), ("price", _NUMBER), ("net_amount", _NUMBER), ("execution_id", "uuid"), ("order_id", "uuid"),
    ("raw_json", "jsonb"),
)  # fmt: skip
RAW_ACTIVITIES: Final = TableSpec("raw_activities", _ACTIVITY, key=("id",))  # FILLs: by execution_id too
RECONCILIATIONS: Final = TableSpec("reconciliations", _ACTIVITY, key=("id",))

CASH_FLOWS: Final = TableSpec("cash_flows", (
    ("id", "text"), ("ts", _TIME), ("amount", _NUMBER), ("type", "text"), ("category", "text"),
    ("description", "text"),
), key=("id",))  # fmt: skip

# How each spin-off's basis is split (docs/corporate-actions.md "Spin-offs"): a reload applies it
# to the action its stored SPIN leg describes.
SPINOFF_BASES: Final = TableSpec("spinoff_bases", (
    ("action_id", "text"), ("parent", "text"), ("parent_share", _NUMBER), ("source", "text"), ("set_at", _TIME),
), key=("action_id",))  # fmt: skip

DAILY_EQUITY: Final = TableSpec("equity_full", (
    ("date", "date"), ("deposit", _NUMBER), ("cash_balance", _NUMBER), ("market_value", _NUMBER),
    ("daily_return", _NUMBER), ("cumulative_return", _NUMBER), ("drawdown", _NUMBER), ("net_flows", _NUMBER),
    ("sharpe_10", "float8"), ("sharpe_21", "float8"), ("sharpe_63", "float8"), ("sharpe_126", "float8"),
    ("sharpe_252", "float8"), ("smart_sharpe_10", "float8"), ("smart_sharpe_21", "float8"),
    ("smart_sharpe_63", "float8"), ("smart_sharpe_126", "float8"), ("smart_sharpe_252", "float8"),
    ("broker_equity", _NUMBER), ("equity_diff", _NUMBER),
), key=("date",))  # fmt: skip

INTRADAY_EQUITY: Final = TableSpec("equity_intraday", (
    ("ts", _TIME), ("deposit", _NUMBER), ("cumulative_return", _NUMBER), ("drawdown", _NUMBER),
    ("realised_return", _NUMBER),
), key=("ts",))  # fmt: skip

METRICS: Final = TableSpec("metrics", (("id", "text"), ("metrics_payload", "text"), ("updated_at", _TIME)),
                           key=("id",), announced=Announced.METRICS)

MARKET_SCHEDULE: Final = TableSpec("market_schedule", (
    ("session_date", "date"), ("pre_open_utc", _TIME), ("open_utc", _TIME), ("close_utc", _TIME),
    ("post_close_utc", _TIME),
), key=("session_date",))  # fmt: skip

LATEST_PRICES: Final = TableSpec("latest_prices", (("symbol", "text"), ("price", _NUMBER), ("ts", _TIME)),
                                 key=("symbol",))

PRICE_BARS: Final = TableSpec("price_bars_1min", (
    ("symbol", "text"), ("ts", _TIME), ("open", _NUMBER), ("high", _NUMBER), ("low", _NUMBER),
    ("close", _NUMBER), ("volume", _NUMBER),
), key=("symbol", "ts"))  # fmt: skip

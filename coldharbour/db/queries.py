"""Read-only queries for the analytics workers; every function returns domain types.

Reads are incremental (docs/defects.md D48): a worker keeps a ``Cursor`` per table (the newest ``updated_at``
it has seen) and asks only for rows changed since, minus ``CHANGE_LAG`` so a row committed by a
transaction that began before the last read is not missed (``state`` is the single, serial
writer, so the lag is only a safety margin; re-reading a row is harmless: consumers key rows).
The open-positions table is small but read every few seconds, so ``open_fingerprint`` (row
count and newest ``updated_at``) tells whether it changed at all before it is re-read.

Rows that cannot become domain values (a NULL where a number is needed) are skipped and
counted in the returned ``skipped``; nothing here writes (the connections are read-only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Generic, NamedTuple, TypeVar

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from coldharbour.db.names import QUARANTINE_TABLE, AccountNames, SharedNames
from coldharbour.domain.cashflows import CashFlow, Category, Execution, Rejection, to_execution
from coldharbour.domain.equity import Bar, IntradayLot
from coldharbour.domain.metrics import SHARPE_WINDOWS, ClosedTrade, DailySummary, OpenLot
from coldharbour.domain.schedule import Session
from coldharbour.domain.types import TERMINAL_STATUSES

Conn = psycopg.AsyncConnection[TupleRow]
T = TypeVar("T")

CHANGE_LAG: Final = timedelta(seconds=2)
METRICS_ROW_ID: Final = "latest"


class Changes(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """Rows changed since a cursor, the cursor to pass next time, and how many rows were unusable."""

    rows: list[T]
    cursor: datetime | None
    skipped: int = 0


def _since(cursor: datetime | None) -> datetime | None:
    return None if cursor is None else cursor - CHANGE_LAG


def _newest(cursor: datetime | None, stamps: Sequence[datetime]) -> datetime | None:
    return max([*([] if cursor is None else [cursor]), *stamps], default=None)


async def _fetch(conn: Conn, query: sql.Composed, params: Sequence[Any] = ()) -> list[TupleRow]:
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def _changed_where(cursor: datetime | None) -> tuple[sql.Composable, list[Any]]:
    since = _since(cursor)
    if since is None:
        return sql.SQL("TRUE"), []
    return sql.SQL("updated_at > %s"), [since]


# --- cash flows and activities ---------------------------------------------------------------


def _cash_flow(row: TupleRow) -> CashFlow | None:
    flow_id, ts, amount, flow_type, category, description = row[:6]
    if amount is None:
        return None
    return CashFlow(
        id=flow_id, ts=ts, amount=amount, type=flow_type, category=Category(category), description=description or ""
    )


async def cash_flow_cursor(conn: Conn, names: AccountNames) -> str | None:
    """Return the newest stored Alpaca-shaped activity id (the cash-flow worker's resume point).

    Only ids stamped ``YYYYMMDDHHMMSSmmm::`` count: a foreign id (another ingester's) would sort
    anywhere and could not give the time to resume from.
    """
    query = sql.SQL("SELECT max(id) FROM {t} WHERE id ~ '^[0-9]{{17}}::'").format(t=names.cash_flows.ident)
    rows = await _fetch(conn, query)
    return rows[0][0] if rows else None


async def cash_flows_from(conn: Conn, names: AccountNames, first_id: str) -> dict[str, CashFlow]:
    """Return the stored Alpaca-shaped activity rows with id ``>= first_id`` (the overlap window), by id.

    What ``cashflows`` compares a re-read window with (docs/spec.md §8 corrections). Rows the mirror
    keys otherwise (``commission:<order>``) are not activities and are left out.
    """
    query = sql.SQL(
        "SELECT id, ts, amount, type, category, description FROM {t} WHERE id >= %s AND id ~ '^[0-9]{{17}}::'"
    ).format(t=names.cash_flows.ident)
    rows = await _fetch(conn, query, [first_id])
    return {flow.id: flow for flow in (_cash_flow(row) for row in rows) if flow is not None}


async def cash_flow_count(conn: Conn, names: AccountNames) -> int:
    """Return how many usable cash-flow rows (with an amount) are stored: a drop means rows were deleted."""
    rows = await _fetch(conn, sql.SQL("SELECT count(amount) FROM {t}").format(t=names.cash_flows.ident))
    return int(rows[0][0]) if rows else 0


async def cash_flow_ids(conn: Conn, names: AccountNames) -> set[str]:
    """Return every stored cash-flow id."""
    return {row[0] for row in await _fetch(conn, sql.SQL("SELECT id FROM {t}").format(t=names.cash_flows.ident))}


async def cash_flows_changed(conn: Conn, names: AccountNames, cursor: datetime | None) -> Changes[CashFlow]:
    """Return cash flows written since ``cursor`` (all of them when None)."""
    where, params = _changed_where(cursor)
    query = sql.SQL(
        "SELECT id, ts, amount, type, category, description, updated_at FROM {t} WHERE {w} ORDER BY updated_at"
    ).format(t=names.cash_flows.ident, w=where)
    rows = await _fetch(conn, query, params)
    flows = [flow for flow in (_cash_flow(row) for row in rows) if flow is not None]
    return Changes(rows=flows, cursor=_newest(cursor, [row[6] for row in rows]), skipped=len(rows) - len(flows))


async def cash_flows_between(
    conn: Conn, names: AccountNames, start: datetime | None, end: datetime | None = None
) -> list[CashFlow]:
    """Return non-trade cash flows with ``start <= ts < end`` (open bounds when None), by time."""
    query = sql.SQL(
        "SELECT id, ts, amount, type, category, description FROM {t} "
        "WHERE category <> 'trade' AND (%s::timestamptz IS NULL OR ts >= %s) "
        "AND (%s::timestamptz IS NULL OR ts < %s) ORDER BY ts, id"
    ).format(t=names.cash_flows.ident)
    rows = await _fetch(conn, query, [start, start, end, end])
    return [flow for flow in (_cash_flow(row) for row in rows) if flow is not None]


class CurveInputs(NamedTuple):
    """What a daily curve was built from, as stored: cash flows and FILL activities (count, newest stamp)."""

    flows: int
    flows_stamp: datetime | None
    fills: int
    fills_stamp: datetime | None


async def curve_inputs(conn: Conn, names: AccountNames) -> CurveInputs:
    """Return the count and newest write stamp of the stored cash flows and FILL activities."""
    query = sql.SQL(
        "SELECT (SELECT count(*) FROM {c} WHERE category <> 'trade'), "
        "(SELECT max(updated_at) FROM {c} WHERE category <> 'trade'), "
        "(SELECT count(*) FROM {a} WHERE activity_type IN ('FILL', 'PARTIAL_FILL')), "
        "(SELECT max(ingested_at) FROM {a} WHERE activity_type IN ('FILL', 'PARTIAL_FILL'))"
    ).format(c=names.cash_flows.ident, a=names.raw_activities.ident)
    row = (await _fetch(conn, query))[0]
    return CurveInputs(int(row[0]), row[1], int(row[2]), row[3])


async def earliest_input_after(conn: Conn, names: AccountNames, seen: CurveInputs) -> datetime | None:
    """Return the earliest ``ts`` of a cash flow or FILL stored (or changed) after ``seen`` was read."""
    query = sql.SQL(
        "SELECT least("
        "(SELECT min(ts) FROM {c} WHERE category <> 'trade' AND (%s::timestamptz IS NULL OR updated_at > %s)), "
        "(SELECT min(transaction_time) FROM {a} WHERE activity_type IN ('FILL', 'PARTIAL_FILL') "
        "AND (%s::timestamptz IS NULL OR ingested_at > %s)))"
    ).format(c=names.cash_flows.ident, a=names.raw_activities.ident)
    rows = await _fetch(conn, query, [seen.flows_stamp, seen.flows_stamp, seen.fills_stamp, seen.fills_stamp])
    return rows[0][0] if rows else None


async def executions_between(
    conn: Conn, names: AccountNames, start: datetime | None, end: datetime | None = None
) -> tuple[list[Execution], list[Rejection]]:
    """Return the FILL executions with ``start <= transaction_time < end`` and the unusable rows."""
    query = sql.SQL(
        "SELECT id, activity_type, transaction_time, symbol, side, qty, price, net_amount FROM {t} "
        "WHERE activity_type IN ('FILL', 'PARTIAL_FILL') AND (%s::timestamptz IS NULL OR transaction_time >= %s) "
        "AND (%s::timestamptz IS NULL OR transaction_time < %s) ORDER BY transaction_time, id"
    ).format(t=names.raw_activities.ident)
    executions: list[Execution] = []
    rejected: list[Rejection] = []
    for row in await _fetch(conn, query, [start, start, end, end]):
        keys = ("id", "activity_type", "transaction_time", "symbol", "side", "qty", "price", "net_amount")
        result = to_execution(dict(zip(keys, row, strict=True)))
        (rejected if isinstance(result, Rejection) else executions).append(result)  # type: ignore[arg-type]
    return executions, rejected


async def first_activity_time(conn: Conn, names: AccountNames) -> datetime | None:
    """Return the time of the oldest cash flow or fill (where a daily rebuild starts)."""
    query = sql.SQL("SELECT least((SELECT min(ts) FROM {c}), (SELECT min(transaction_time) FROM {a}))").format(
        c=names.cash_flows.ident, a=names.raw_activities.ident
    )
    rows = await _fetch(conn, query)
    return rows[0][0] if rows else None


# --- closed trades and open positions ----------------------------------------------------------


def _closed_slice(row: TupleRow) -> ClosedTrade | None:
    lot, exit_order, side, qty, entry_time, entry_price, exit_time, exit_price, exit_type, pnl, fifo = row[:11]
    if None in (entry_time, entry_price, exit_time, exit_price, pnl):
        return None
    return ClosedTrade(
        entry_lot_id=lot, exit_order_id=exit_order, side=side, qty=qty, entry_time=entry_time,
        entry_price=entry_price, exit_time=exit_time, exit_price=exit_price, exit_type=exit_type,
        pnl_cash=pnl, pnl_cash_fifo=pnl if fifo is None else fifo, symbol=row[12] or "",
    )  # fmt: skip


_CLOSED_COLUMNS: Final = sql.SQL(
    "entry_lot_id, exit_order_id, side, qty, entry_time, entry_price, exit_time, exit_price, exit_type, "
    "pnl_cash, pnl_cash_fifo, updated_at, symbol"
)


async def closed_slices_changed(conn: Conn, names: AccountNames, cursor: datetime | None) -> Changes[ClosedTrade]:
    """Return closed slices written since ``cursor`` (all of them when None)."""
    where, params = _changed_where(cursor)
    query = sql.SQL("SELECT {c} FROM {t} WHERE {w} ORDER BY updated_at").format(
        c=_CLOSED_COLUMNS, t=names.closed.ident, w=where
    )
    rows = await _fetch(conn, query, params)
    slices = [piece for piece in (_closed_slice(row) for row in rows) if piece is not None]
    return Changes(rows=slices, cursor=_newest(cursor, [row[11] for row in rows]), skipped=len(rows) - len(slices))


async def slices_exited_since(conn: Conn, names: AccountNames, since: datetime) -> list[IntradayLot]:
    """Return the slices whose exit is at or after ``since`` as intraday lots (closed today)."""
    query = sql.SQL("SELECT {c} FROM {t} WHERE exit_time >= %s ORDER BY exit_time").format(
        c=_CLOSED_COLUMNS, t=names.closed.ident
    )
    lots: list[IntradayLot] = []
    for row in await _fetch(conn, query, [since]):
        piece = _closed_slice(row)
        if piece is not None:
            lots.append(
                IntradayLot(
                    symbol=row[12], side=piece.side, qty=piece.qty, entry_price=piece.entry_price,
                    entry_time=piece.entry_time, exit_price=piece.exit_price, exit_time=piece.exit_time,
                )
            )  # fmt: skip
    return lots


async def open_fingerprint(conn: Conn, names: AccountNames) -> tuple[int, datetime | None]:
    """Return (row count, newest ``updated_at``) of the open positions: it changes with any write."""
    rows = await _fetch(conn, sql.SQL("SELECT count(*), max(updated_at) FROM {t}").format(t=names.positions.ident))
    return (int(rows[0][0]), rows[0][1]) if rows else (0, None)


async def open_rows(conn: Conn, names: AccountNames) -> tuple[list[OpenLot], list[IntradayLot]]:
    """Return the open positions as KPI lots and as intraday lots (rows without a fill time skip the latter)."""
    query = sql.SQL(
        "SELECT parent_id, symbol, side, qty, avg_fill, profit_loss, mkt_value, filled_at, mkt_px, avg_px_symbol, "
        "updated_at FROM {t} ORDER BY parent_id"
    ).format(t=names.positions.ident)
    kpi: list[OpenLot] = []
    intraday: list[IntradayLot] = []
    for row in await _fetch(conn, query):
        parent_id, symbol, side, qty, avg_fill, profit_loss, mkt_value, filled_at, mkt_px, avg_px_symbol, updated = row
        if qty is None or avg_fill is None or qty == 0:
            continue
        kpi.append(
            OpenLot(
                parent_id=parent_id, side=side, qty=qty, avg_fill=avg_fill,
                profit_loss=profit_loss, mkt_value=mkt_value, symbol=symbol, mkt_px=mkt_px,
                avg_px_symbol=avg_px_symbol, updated_at=updated, filled_at=filled_at,
            )
        )  # fmt: skip
        if filled_at is not None:
            intraday.append(IntradayLot(symbol=symbol, side=side, qty=qty, entry_price=avg_fill, entry_time=filled_at))
    return kpi, intraday


# --- equity and metrics ------------------------------------------------------------------------


async def daily_summaries_changed(conn: Conn, names: AccountNames, cursor: datetime | None) -> Changes[DailySummary]:
    """Return the daily equity rows written since ``cursor`` as KPI summaries."""
    where, params = _changed_where(cursor)
    query = sql.SQL(
        "SELECT date, cumulative_return, drawdown, sharpe_10, sharpe_21, sharpe_63, sharpe_126, sharpe_252, "
        "updated_at, daily_return, deposit, market_value, net_flows FROM {t} WHERE {w} ORDER BY updated_at"
    ).format(t=names.equity_full.ident, w=where)
    rows = await _fetch(conn, query, params)
    summaries = [
        DailySummary(
            date=row[0],
            cumulative_return=row[1],
            drawdown=row[2],
            sharpe=dict(zip(SHARPE_WINDOWS, row[3:8], strict=True)),
            daily_return=row[9],
            deposit=row[10],
            market_value=row[11],
            net_flows=row[12],
        )
        for row in rows
        if row[10] is not None  # returns are null after equity ≤ 0; the row still counts
    ]
    return Changes(rows=summaries, cursor=_newest(cursor, [row[8] for row in rows]), skipped=len(rows) - len(summaries))


async def newest_intraday_return(conn: Conn, names: AccountNames, since: datetime) -> Decimal | None:
    """Return ``cumulative_return`` of the newest intraday row at or after ``since`` (None if none)."""
    query = sql.SQL("SELECT cumulative_return FROM {t} WHERE ts >= %s ORDER BY ts DESC LIMIT 1").format(
        t=names.equity_intraday.ident
    )
    rows = await _fetch(conn, query, [since])
    return rows[0][0] if rows else None


async def first_intraday_ts(conn: Conn, names: AccountNames, since: datetime) -> datetime | None:
    """Return ``ts`` of the oldest intraday row at or after ``since`` (None if none)."""
    query = sql.SQL("SELECT ts FROM {t} WHERE ts >= %s ORDER BY ts LIMIT 1").format(t=names.equity_intraday.ident)
    rows = await _fetch(conn, query, [since])
    return rows[0][0] if rows else None


async def stored_metrics_payload(conn: Conn, names: AccountNames) -> str | None:
    """Return the stored KPI document (JSON text), or None before the first one."""
    query = sql.SQL("SELECT metrics_payload FROM {t} WHERE id = %s").format(t=names.metrics.ident)
    rows = await _fetch(conn, query, [METRICS_ROW_ID])
    return rows[0][0] if rows else None


# --- shared: prices, bars, schedule ------------------------------------------------------------


async def latest_prices(conn: Conn, shared: SharedNames, symbols: Sequence[str]) -> dict[str, tuple[Decimal, datetime]]:
    """Return ``{symbol: (price, ts)}`` from ``latest_prices`` for ``symbols``."""
    query = sql.SQL("SELECT symbol, price, ts FROM {t} WHERE symbol = ANY(%s)").format(t=shared.latest_prices.ident)
    return {row[0]: (row[1], row[2]) for row in await _fetch(conn, query, [list(symbols)])}


async def bars_between(
    conn: Conn, shared: SharedNames, symbols: Sequence[str], start: datetime, end: datetime
) -> dict[str, list[Bar]]:
    """Return 1-minute bar closes per symbol with ``start <= ts < end``, oldest first."""
    query = sql.SQL(
        "SELECT symbol, ts, close FROM {t} WHERE symbol = ANY(%s) AND ts >= %s AND ts < %s ORDER BY symbol, ts"
    ).format(t=shared.price_bars_1min.ident)
    bars: dict[str, list[Bar]] = {}
    for symbol, ts, close in await _fetch(conn, query, [list(symbols), start, end]):
        bars.setdefault(symbol, []).append(Bar(ts=ts, close=close))
    return bars


async def session_closes_from_bars(
    conn: Conn, shared: SharedNames, symbols: Sequence[str], first: date, last: date
) -> dict[date, dict[str, Decimal]]:
    """Return ``{session date: {symbol: close}}``: the last regular-hours 1-minute bar of each session."""
    query = sql.SQL(
        "SELECT DISTINCT ON (b.symbol, s.session_date) s.session_date, b.symbol, b.close "
        "FROM {s} s JOIN {b} b ON b.ts >= s.open_utc AND b.ts < s.close_utc "
        "WHERE b.symbol = ANY(%s) AND s.session_date BETWEEN %s AND %s "
        "ORDER BY b.symbol, s.session_date, b.ts DESC"
    ).format(s=shared.market_schedule.ident, b=shared.price_bars_1min.ident)
    closes: dict[date, dict[str, Decimal]] = {}
    for day, symbol, close in await _fetch(conn, query, [list(symbols), first, last]):
        closes.setdefault(day, {})[symbol] = close
    return closes


async def sessions_between(conn: Conn, shared: SharedNames, first: date, last: date) -> list[Session]:
    """Return the stored sessions from ``first`` to ``last`` inclusive, by date."""
    query = sql.SQL(
        "SELECT session_date, pre_open_utc, open_utc, close_utc, post_close_utc FROM {t} "
        "WHERE session_date BETWEEN %s AND %s ORDER BY session_date"
    ).format(t=shared.market_schedule.ident)
    return [
        Session(session_date=row[0], pre_open_utc=row[1], open_utc=row[2], close_utc=row[3], post_close_utc=row[4])
        for row in await _fetch(conn, query, [first, last])
    ]


# --- prices ----------------------------------------------------------------------------------

# Order statuses that still work (or may): everything but the final ones (domain.types).
_DONE_STATUSES: Final = (*sorted(TERMINAL_STATUSES), "done_for_day")


async def symbols_in_play(conn: Conn, names: AccountNames) -> set[str]:
    """Return the symbols the account holds (an open lot) or has an open order on."""
    query = sql.SQL(
        "SELECT symbol FROM {positions} WHERE qty > 0 UNION SELECT symbol FROM {orders} WHERE status <> ALL(%s)"
    ).format(positions=names.positions.ident, orders=names.raw_orders.ident)
    return {row[0] for row in await _fetch(conn, query, [list(_DONE_STATUSES)])}


class Quarantined(msgspec.Struct, frozen=True, kw_only=True):
    """One change a commit refused on its data (``state`` stored it instead of writing it)."""

    id: int
    ts: datetime
    account: str | None
    kind: str
    key: str | None
    raw: str
    error: str


async def load_quarantine(conn: Conn, limit: int, *, shared: SharedNames | None = None) -> list[Quarantined]:
    """Return the newest ``limit`` quarantined changes, newest first.

    ``shared``: the shared names from the settings (default: the ``accounts`` schema's table).
    """
    table = shared.quarantine.ident if shared is not None else sql.Identifier("accounts", QUARANTINE_TABLE)
    query = sql.SQL("SELECT id, ts, account, kind, key, raw, error FROM {t} ORDER BY id DESC LIMIT %s").format(t=table)
    rows = await _fetch(conn, query, (limit,))
    return [Quarantined(id=i, ts=ts, account=a, kind=k, key=key, raw=raw, error=e) for i, ts, a, k, key, raw, e in rows]


# --- the report ----------------------------------------------------------------------------------


@asynccontextmanager
async def one_snapshot(conn: Conn) -> AsyncIterator[None]:
    """Run the reads inside in one REPEATABLE READ transaction: they all see the same committed state.

    Read committed (the default) gives each statement its own snapshot, so two reads a commit of
    ``state`` falls between describe two different moments. ``conn`` must be idle (no transaction open).
    """
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


async def report_inputs(conn: Conn, names: AccountNames) -> tuple[list[DailySummary], list[ClosedTrade]]:
    """Return every daily equity row and every closed slice, read from one snapshot.

    One REPEATABLE READ transaction: the rows and the trades describe the same moment (a commit
    of ``state`` between the two reads cannot show a trade whose day is not in the curve).
    """
    async with one_snapshot(conn):
        daily = await daily_summaries_changed(conn, names, None)
        closed = await closed_slices_changed(conn, names, None)
    return sorted(daily.rows, key=lambda row: row.date), closed.rows

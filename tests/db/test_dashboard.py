"""The dashboard's reads: what one page load shows comes from one database snapshot.

A commit of ``state`` is made to land *between* two reads of ``dashboard.page`` (a cursor that
commits on another connection right after the first read), and the page read must not see it:
the KPI document, the open lots, the closed slices and the curves describe the same moment. The
same interleaving without the snapshot (the reads one by one, each its own statement) does see
it, so the test proves the write really fell between the reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from coldharbour.config import Settings
from coldharbour.db import dashboard
from tests.analytics.helpers import Rows, insert, utc
from tests.support import make_settings

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(migrated_dsn):
    return make_settings(migrated_dsn, accounts=("demo",))


@pytest.fixture
def rows(settings):
    builder = Rows(settings)
    yield builder
    builder.close()


async def _interleaving(settings: Settings, between: Callable[[], None]) -> psycopg.AsyncConnection[TupleRow]:
    """Return a read connection that runs ``between`` once, right after its first statement that reads rows."""
    pending = [between]

    class Interleaved(psycopg.AsyncCursor[TupleRow]):
        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            result = await super().execute(query, params, **kwargs)
            if pending and self.description is not None:  # a SELECT, not the SET TRANSACTION
                pending.pop()()
            return result

    read_only = "-c default_transaction_read_only=on"
    return await psycopg.AsyncConnection.connect(
        settings.dsn.reveal(), autocommit=True, cursor_factory=Interleaved, options=read_only
    )


def _metrics(rows: Rows, closed_trades: int) -> None:
    document = {"Closed Trades (n)": closed_trades, "as_of": datetime.now(UTC).isoformat()}
    statement = sql.SQL(
        "INSERT INTO {t} (id, metrics_payload, updated_at) VALUES ('latest', %s, now()) "
        "ON CONFLICT (id) DO UPDATE SET metrics_payload = EXCLUDED.metrics_payload"
    ).format(t=rows.names.metrics.ident)
    rows.conn.execute(statement, [json.dumps(document)])


def _day(rows: Rows, day: date, equity: str) -> None:
    insert(rows.conn, rows.names.equity_full.ident, {
        "date": day, "deposit": Decimal(equity), "cash_balance": Decimal(equity), "market_value": Decimal(0),
        "net_flows": Decimal(0), "daily_return": Decimal(0), "cumulative_return": Decimal(0), "drawdown": Decimal(0),
    })  # fmt: skip


def _state_commits_a_close(rows: Rows) -> Callable[[], None]:
    """What `state` commits when lot-2 closes: its slice, the lot gone, a day, and the KPIs counting it."""

    def commit() -> None:
        with rows.conn.transaction():
            rows.closed("lot-2", "exit-2", "30")
            drop = sql.SQL("DELETE FROM {t} WHERE parent_id = 'lot-2'").format(t=rows.names.positions.ident)
            rows.conn.execute(drop)
            _day(rows, date(2024, 3, 5), "100030")
            _metrics(rows, closed_trades=2)

    return commit


def _before(rows: Rows) -> None:
    rows.closed("lot-1", "exit-1", "50")
    rows.position("lot-2", "MSFT", "5", "400", utc(2024, 3, 4, 15))
    _day(rows, date(2024, 3, 4), "100000")
    _metrics(rows, closed_trades=1)


def _shape(read: dict[str, Any]) -> tuple[int, list[str], list[str], list[date]]:
    return (
        read["metrics"]["Closed Trades (n)"],
        [r["entry_lot_id"] for r in read["closed"]],
        [r["parent_id"] for r in read["positions"]],
        [r["date"] for r in read["equity"]["daily"]],
    )


async def test_page_reads_kpis_tables_and_curves_from_one_snapshot(settings, rows) -> None:
    _before(rows)
    conn = await _interleaving(settings, _state_commits_a_close(rows))
    try:
        during = await dashboard.page(conn, rows.names)  # the commit lands after its first read
        after = await dashboard.page(conn, rows.names)
    finally:
        await conn.close()

    assert _shape(during) == (1, ["lot-1"], ["lot-2"], [date(2024, 3, 4)])  # all before the commit
    assert sorted(_shape(after)[1]) == ["lot-1", "lot-2"]
    assert _shape(after)[0] == 2
    assert _shape(after)[2] == []
    assert len(_shape(after)[3]) == 2


async def test_the_same_reads_one_by_one_see_the_commit_between_them(settings, rows) -> None:
    """The control: without one snapshot, the first read and the later ones disagree."""
    _before(rows)
    conn = await _interleaving(settings, _state_commits_a_close(rows))
    try:
        lots = await dashboard.positions(conn, rows.names)  # the commit lands after this read
        closed = await dashboard.closed(conn, rows.names)
        document = await dashboard.metrics(conn, rows.names)
    finally:
        await conn.close()

    assert [r["parent_id"] for r in lots] == ["lot-2"]  # still open here ...
    assert sorted(r["entry_lot_id"] for r in closed) == ["lot-1", "lot-2"]  # ... and closed here
    assert document is not None
    assert document["Closed Trades (n)"] == 2


async def test_equity_if_moved_reads_the_fingerprint_and_the_curves_from_one_snapshot(settings, rows) -> None:
    _before(rows)
    conn = await _interleaving(settings, _state_commits_a_close(rows))
    try:
        mark, curves = await dashboard.equity_if_moved(conn, rows.names, None)
        again, unchanged = await dashboard.equity_if_moved(conn, rows.names, mark)
    finally:
        await conn.close()

    assert curves is not None
    assert [r["date"] for r in curves["daily"]] == [date(2024, 3, 4)]
    assert mark[0] == 1  # the fingerprint counts the row the curves show, not the one committed between
    assert again != mark
    assert unchanged is not None
    assert len(unchanged["daily"]) == 2

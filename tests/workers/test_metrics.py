"""`metrics`: KPI documents from a real PostgreSQL, published on the in-proc bus only when they change."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import partial

import psycopg
import pytest
from psycopg import sql

from coldharbour.db.names import account_names
from coldharbour.domain.metrics import KPI_KEYS
from coldharbour.jobs.clock import ManualClock
from coldharbour.messages import MetricsComputed, topic_metrics
from tests.analytics.helpers import Rows, context, insert, running, settings_for, utc
from tests.support import async_wait_for
from workers import metrics

pytestmark = pytest.mark.asyncio
INTERVAL_S = 5


def _documents(observer) -> list[dict]:
    return [json.loads(m.payload) for m in observer.messages() if isinstance(m, MetricsComputed)]


async def _tick(clock: ManualClock, ctx, runs: int) -> None:
    """Step the clock one interval and wait until the worker finished that run and sleeps again."""
    clock.advance(timedelta(seconds=INTERVAL_S))
    await async_wait_for(lambda: ctx.counters["metrics_runs"] >= runs and clock.sleepers == 1, what=f"run {runs}")


def _store(rows: Rows, observer) -> None:
    """Store the newest published document as ``state`` would."""
    payload = [m for m in observer.messages() if isinstance(m, MetricsComputed)][-1].payload
    insert(rows.conn, rows.names.metrics.ident, {"id": "latest", "metrics_payload": payload})


@pytest.fixture
def rows(migrated_dsn, tmp_path, bus):
    builder = Rows(settings_for(migrated_dsn, tmp_path, bus))
    yield builder
    builder.close()


async def test_metrics_publishes_once_while_unchanged_then_again_on_a_new_trade(
    migrated_dsn, tmp_path, bus, rows
) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    ctx = context("metrics", settings, bus)
    clock = ManualClock(utc(2024, 3, 16, 15))  # a Saturday: no session
    rows.closed("lot-1", "tp-1", "50", exit_type="TP")
    rows.closed("lot-2", "sl-2", "-20", exit_type="SL")
    rows.cash_flow("20240301000000000::fee", utc(2024, 3, 1, 5), "-1.50", "FEE", "fee")
    rows.cash_flow("20240302000000000::div", utc(2024, 3, 2, 5), "2.40", "DIV", "income")
    observer = bus.observe(topic_metrics("demo"))

    async with running(partial(metrics.run, settings, ctx, clock=clock), ctx):
        await async_wait_for(lambda: ctx.counters["metrics_runs"] == 1 and clock.sleepers == 1)
        await async_wait_for(lambda: _documents(observer), what="first document")
        _store(rows, observer)  # as state would
        for run in (2, 3, 4):
            await _tick(clock, ctx, run)
        unchanged = len(_documents(observer))
        rows.closed("lot-3", "tp-3", "30", exit_type="TP")
        await _tick(clock, ctx, 5)
        await async_wait_for(lambda: len(_documents(observer)) == 2, what="second document")

    first, second = _documents(observer)
    assert unchanged == 1
    assert list(first) == list(KPI_KEYS)
    assert first["Closed Trades (n)"] == 2
    assert first["Win Rate %"] == 50.0
    assert first["Total Fees"] == -1.5
    assert first["Net Dividends"] == 2.4
    assert first["NET REALIZED CASH (FIFO)"] == 30.9
    assert first["Risk-Reward Ratio"] == 2.5
    assert first["Total Return %"] is None
    assert second["Closed Trades (n)"] == 3
    assert second["Realized P/L (Strategy Only)"] == 60.0


async def test_metrics_restart_with_the_same_stored_document_publishes_nothing(
    migrated_dsn, tmp_path, bus, rows
) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    rows.closed("lot-1", "tp-1", "50")
    observer = bus.observe(topic_metrics("demo"))
    first_ctx = context("metrics", settings, bus)
    clock = ManualClock(utc(2024, 3, 16, 15))
    async with running(partial(metrics.run, settings, first_ctx, clock=clock), first_ctx):
        await async_wait_for(lambda: _documents(observer), what="first document")
    (stored,) = [m for m in observer.messages() if isinstance(m, MetricsComputed)]
    insert(rows.conn, rows.names.metrics.ident, {"id": "latest", "metrics_payload": stored.payload})  # as state would
    second_ctx = context("metrics", settings, bus)
    later = ManualClock(utc(2024, 3, 16, 16))

    async with running(partial(metrics.run, settings, second_ctx, clock=later), second_ctx):
        await async_wait_for(lambda: second_ctx.counters["metrics_runs"] == 1 and later.sleepers == 1)
        await _tick(later, second_ctx, 2)

    assert len(_documents(observer)) == 1


async def test_issue_6_kpi_document_lost_on_the_bus_is_sent_again(migrated_dsn, tmp_path, bus, rows) -> None:
    """Issue 6 bug: ``metrics`` published a document once and afterwards only when its figures
    moved, so a document lost on the bus (``state`` not subscribed yet when every program starts
    together, or restarting) never reached the table: on an idle account the KPI row stayed
    missing. Each run now compares with the stored document and re-sends until it is stored."""
    settings = settings_for(migrated_dsn, tmp_path, bus)
    ctx = context("metrics", settings, bus)
    clock = ManualClock(utc(2024, 3, 16, 15))  # a Saturday: nothing moves
    rows.closed("lot-1", "tp-1", "50")
    observer = bus.observe(topic_metrics("demo"))

    async with running(partial(metrics.run, settings, ctx, clock=clock), ctx):
        await async_wait_for(lambda: ctx.counters["metrics_runs"] == 1 and clock.sleepers == 1)
        lost = len(_documents(observer))  # published; nobody stored it
        await _tick(clock, ctx, 2)
        resent = len(_documents(observer))
        _store(rows, observer)
        for run in (3, 4):
            await _tick(clock, ctx, run)

    first, again = _documents(observer)
    assert (lost, resent) == (1, 2)
    assert {k: v for k, v in first.items() if k != "as_of"} == {k: v for k, v in again.items() if k != "as_of"}


async def test_metrics_total_return_uses_the_intraday_row_in_session(migrated_dsn, tmp_path, bus, rows) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    ctx = context("metrics", settings, bus)
    session = rows.session(utc(2024, 3, 12).date())
    insert(rows.conn, rows.names.equity_intraday.ident, {"ts": session.open_utc, "cumulative_return": 0.0123})
    observer = bus.observe(topic_metrics("demo"))

    async with running(
        partial(metrics.run, settings, ctx, clock=ManualClock(session.open_utc + timedelta(minutes=5))), ctx
    ):
        await async_wait_for(lambda: _documents(observer), what="document")

    assert _documents(observer)[0]["Total Return %"] == 1.23


async def test_metrics_pool_is_refused_writes(migrated_dsn, tmp_path, bus) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    table = account_names(settings, "demo").metrics.ident

    async with metrics.open_pool(settings) as pool, pool.connection() as conn:
        refusal = "cannot execute INSERT in a read-only transaction"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match=refusal):
            await conn.execute(
                sql.SQL("INSERT INTO {t} (id, metrics_payload) VALUES ('latest', '{{}}')").format(t=table)
            )

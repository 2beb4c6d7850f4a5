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
from coldharbour.messages import AccountChanged, MetricsComputed, topic_metrics, topic_state
from tests.analytics.helpers import Rows, context, insert, running, settings_for, utc
from tests.support import async_wait_for
from workers import metrics

pytestmark = pytest.mark.asyncio
GAP_S = 5  # METRICS_INTERVAL_S: at most one run per account per gap


def _documents(observer) -> list[dict]:
    return [json.loads(m.payload) for m in observer.messages() if isinstance(m, MetricsComputed)]


async def _listening(bus, ctx) -> None:
    """Wait until metrics hears ``state.*`` (a change of no KPI input, announced until heard)."""
    heard = ctx.counters["metrics_changes_heard"]

    def probed() -> bool:
        bus.inject(topic_state("demo"), AccountChanged(account="demo", kinds=("orders",)))
        return ctx.counters["metrics_changes_heard"] > heard

    await async_wait_for(probed, what="metrics subscribed to state.*")


async def _idle(clock: ManualClock, ctx, runs: int) -> None:
    await async_wait_for(lambda: ctx.counters["metrics_runs"] == runs and clock.sleepers == 1, what=f"run {runs}")


async def _changed(bus, clock: ManualClock, ctx, runs: int, kinds: tuple[str, ...] = ("closed",)) -> None:
    """Announce a commit as ``state`` does, past the gap, and wait until that run finished."""
    clock.advance(timedelta(seconds=GAP_S))
    bus.inject(topic_state("demo"), AccountChanged(account="demo", kinds=kinds))
    await _idle(clock, ctx, runs)


def _store(rows: Rows, observer) -> None:
    """Store the newest published document as ``state`` would."""
    payload = [m for m in observer.messages() if isinstance(m, MetricsComputed)][-1].payload
    insert(rows.conn, rows.names.metrics.ident, {"id": "latest", "metrics_payload": payload})


@pytest.fixture
def rows(migrated_dsn, tmp_path, bus):
    builder = Rows(settings_for(migrated_dsn, tmp_path, bus))
    yield builder
    builder.close()


async def test_metrics_runs_only_when_an_input_changed_and_publishes_only_a_changed_document(
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
        await _idle(clock, ctx, 1)
        await async_wait_for(lambda: _documents(observer), what="first document")
        _store(rows, observer)  # as state would
        await _listening(bus, ctx)  # a change of raw orders only: no run
        clock.advance(timedelta(seconds=metrics.RECHECK_S))
        await _idle(clock, ctx, 2)  # the published document read back: stored, nothing more to do
        clock.advance(timedelta(hours=6))  # time alone runs nothing
        await _changed(bus, clock, ctx, 3, kinds=("cash_flows",))  # nothing new in the rows: no document
        unchanged = len(_documents(observer))
        rows.closed("lot-3", "tp-3", "30", exit_type="TP")
        await _changed(bus, clock, ctx, 4)
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


async def test_metrics_changes_within_the_gap_make_one_run(migrated_dsn, tmp_path, bus, rows) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    ctx = context("metrics", settings, bus)
    clock = ManualClock(utc(2024, 3, 16, 15))
    async with running(partial(metrics.run, settings, ctx, clock=clock), ctx):
        await _idle(clock, ctx, 1)
        await _listening(bus, ctx)
        heard = ctx.counters["metrics_changes_heard"]
        for kinds in (("closed",), ("open_rows",), ("intraday",)):
            bus.inject(topic_state("demo"), AccountChanged(account="demo", kinds=kinds))
        await async_wait_for(lambda: ctx.counters["metrics_changes_heard"] >= heard + 3, what="three changes heard")
        assert ctx.counters["metrics_runs"] == 1  # still inside the gap
        clock.advance(timedelta(seconds=GAP_S))
        await _idle(clock, ctx, 2)
        await _changed(bus, clock, ctx, 3)  # the next change is the next run: the three made one

    assert ctx.counters["metrics_runs"] == 3


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
        await _idle(later, second_ctx, 1)
        await _listening(bus, second_ctx)
        await _changed(bus, later, second_ctx, 2)

    assert len(_documents(observer)) == 1


async def test_issue_6_kpi_document_lost_on_the_bus_is_sent_again(migrated_dsn, tmp_path, bus, rows) -> None:
    """Issue 6 bug: ``metrics`` published a document once and afterwards only when its figures
    moved, so a document lost on the bus (``state`` not subscribed yet when every program starts
    together, or restarting) never reached the table: on an idle account the KPI row stayed
    missing. A published document is read back after ``RECHECK_S`` and sent again until stored."""
    settings = settings_for(migrated_dsn, tmp_path, bus)
    ctx = context("metrics", settings, bus)
    clock = ManualClock(utc(2024, 3, 16, 15))  # a Saturday: nothing moves
    rows.closed("lot-1", "tp-1", "50")
    observer = bus.observe(topic_metrics("demo"))

    async with running(partial(metrics.run, settings, ctx, clock=clock), ctx):
        await _idle(clock, ctx, 1)
        # A run is counted once it published; the observer's thread receives the document a little later.
        await async_wait_for(lambda: len(_documents(observer)) == 1, what="the document")  # nobody stores it
        clock.advance(timedelta(seconds=metrics.RECHECK_S))
        await _idle(clock, ctx, 2)
        await async_wait_for(lambda: len(_documents(observer)) == 2, what="the document sent again")
        _store(rows, observer)
        clock.advance(timedelta(seconds=metrics.RECHECK_S))
        await _idle(clock, ctx, 3)  # read back: stored
        clock.advance(timedelta(hours=1))
        await _changed(bus, clock, ctx, 4)  # proves no run came between

    first, again = _documents(observer)  # not sent again once stored
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

    document = _documents(observer)[0]
    assert document["Total Return %"] == document["MTD %"] == document["YTD %"] == 1.23  # no daily row yet


async def test_metrics_pool_is_refused_writes(migrated_dsn, tmp_path, bus) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    table = account_names(settings, "demo").metrics.ident

    async with metrics.open_pool(settings) as pool, pool.connection() as conn:
        refusal = "cannot execute INSERT in a read-only transaction"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match=refusal):
            await conn.execute(
                sql.SQL("INSERT INTO {t} (id, metrics_payload) VALUES ('latest', '{{}}')").format(t=table)
            )

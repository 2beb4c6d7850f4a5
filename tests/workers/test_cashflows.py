"""`cashflows` against the fake broker, a real PostgreSQL and the in-proc bus."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from decimal import Decimal
from functools import partial

import psycopg
import pytest
from psycopg import sql

from coldharbour.analytics.cashflows import RESEND_AFTER_RUNS
from coldharbour.db.names import account_names
from coldharbour.domain import cashflows as flows_domain
from coldharbour.domain.cashflows import Category
from coldharbour.jobs.clock import ManualClock
from coldharbour.messages import (
    ActivitiesPage,
    ResyncRequested,
    SessionPhaseChanged,
    cash_complete_detail,
    topic_cash,
    topic_resync,
)
from tests.analytics.helpers import Rows, context, running, settings_for, utc
from tests.support import async_wait_for
from tests.workers.state_harness import StateHarness
from workers import cashflows, metrics

pytestmark = pytest.mark.asyncio
INTERVAL_S = 300


def _pages(observer) -> list[ActivitiesPage]:
    return [m for m in observer.messages() if isinstance(m, ActivitiesPage)]


def _ids(page: ActivitiesPage) -> list[str]:
    return [flow.id for flow in page.cash_flows]


async def test_cashflows_second_run_publishes_only_new_activities(migrated_dsn, tmp_path, bus, fake_broker) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, CASH_FLOWS_INTERVAL_S=str(INTERVAL_S))
    ctx = context("cashflows", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 15))
    observer = bus.observe(topic_cash("demo"))
    first_batch = fake_broker.post_activities([
        {"activity_type": "DIV", "net_amount": "2.40", "symbol": "MSFT", "description": "Cash DIV"},
        {"activity_type": "FEE", "net_amount": "-0.02", "description": "REG/TAF fee"},
    ])  # fmt: skip

    async with running(partial(cashflows.run, settings, ctx, clock=clock), ctx):
        await async_wait_for(lambda: len(_pages(observer)) == 1 and clock.sleepers == 1, what="first page")
        new = fake_broker.post_activities([{"activity_type": "CSW", "net_amount": "-500", "description": "withdrawal"}])
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: len(_pages(observer)) == 2, what="second page")
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: ctx.counters["cashflows_runs"] == 3, what="third run")

    first, second = _pages(observer)
    first_ids = {a["id"] for a in first_batch}
    assert first_ids <= set(_ids(first))
    assert _ids(second) == [new[0]["id"]]
    assert second.cash_flows[0].category is Category.EXTERNAL
    assert second.cash_flows[0].amount == Decimal("-500")
    assert [a.id for a in second.activities] == [new[0]["id"]]
    by_type = {flow.type: flow for flow in first.cash_flows}
    assert by_type["DIV"].category is Category.INCOME
    assert by_type["FEE"].category is Category.FEE
    assert len(_pages(observer)) == 2  # the third run found nothing new and published nothing


def _store_as_state(settings, fake_broker) -> None:
    """Store every activity the broker lists as ``state`` stores it (``cash_flows``)."""
    rows = Rows(settings)
    for activity in fake_broker.request("GET", "/v2/account/activities").json():
        flow = flows_domain.to_cash_flow(activity)
        assert isinstance(flow, flows_domain.CashFlow)
        rows.cash_flow(flow.id, flow.ts, str(flow.amount), flow.type, flow.category.value,
                       description=flow.description)  # fmt: skip
    rows.close()


async def test_cashflows_says_the_activities_are_complete_only_once_a_read_finds_them_stored(
    migrated_dsn, tmp_path, bus, fake_broker
) -> None:
    """docs/startup.md "Completeness watermarks": the heartbeat's ``cash_complete_<slug>`` is the
    start of a broker read that found nothing to send; a run that published proves nothing yet."""
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, CASH_FLOWS_INTERVAL_S=str(INTERVAL_S))
    ctx = context("cashflows", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 15))
    observer = bus.observe(topic_cash("demo"))
    fake_broker.post_activities([{"activity_type": "DIV", "net_amount": "2.40", "symbol": "MSFT"}])
    key = cash_complete_detail("demo")

    async with running(partial(cashflows.run, settings, ctx, clock=clock), ctx):
        await async_wait_for(lambda: len(_pages(observer)) == 1 and clock.sleepers == 1, what="first page")
        unstored = dict(ctx.details)
        _store_as_state(settings, fake_broker)
        before_ns = time.time_ns()
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: key in ctx.details, what="the activities said complete")

    assert key not in unstored
    assert int(ctx.details[key]) >= before_ns  # the second read started after the rows were stored
    assert len(_pages(observer)) == 1


async def test_cashflows_reads_back_what_it_published_within_seconds_not_a_whole_interval(
    migrated_dsn, tmp_path, bus, fake_broker
) -> None:
    """A run that published reads again ``READ_BACK_S`` later (not ``CASH_FLOWS_INTERVAL_S``): on a
    first start with history, ``equity`` learns the flows are complete seconds after ``state``
    stored them. A run that found everything stored waits the whole interval."""
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, CASH_FLOWS_INTERVAL_S=str(INTERVAL_S))
    ctx = context("cashflows", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 15))
    observer = bus.observe(topic_cash("demo"))
    fake_broker.post_activities([{"activity_type": "DIV", "net_amount": "2.40", "symbol": "MSFT"}])
    key = cash_complete_detail("demo")

    async with running(partial(cashflows.run, settings, ctx, clock=clock), ctx):
        await async_wait_for(lambda: len(_pages(observer)) == 1 and clock.sleepers == 1, what="first page")
        _store_as_state(settings, fake_broker)
        clock.advance(timedelta(seconds=cashflows.READ_BACK_S))
        await async_wait_for(lambda: key in ctx.details and clock.sleepers == 1, what="the read-back run's mark")
        runs_at_mark = ctx.counters["cashflows_runs"]  # counted before the loop sleeps again
        clock.advance(timedelta(seconds=INTERVAL_S - 1))  # complete: no read-back, the next run is a period away
        await asyncio.sleep(0)
        runs_before_period = ctx.counters["cashflows_runs"]

    assert runs_at_mark == 2
    assert runs_before_period == 2
    assert len(_pages(observer)) == 1


async def test_cashflows_resume_from_the_stored_cursor_after_a_restart(
    migrated_dsn, tmp_path, bus, fake_broker
) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url)
    ctx = context("cashflows", settings, bus)
    known = fake_broker.post_activities([{"activity_type": "DIV", "net_amount": "1.00", "symbol": "MSFT"}])
    rows = Rows(settings)
    for activity in fake_broker.request("GET", "/v2/account/activities").json():
        flow = flows_domain.to_cash_flow(activity)  # stored as `state` stores it: an unchanged row is not re-sent
        assert isinstance(flow, flows_domain.CashFlow)
        rows.cash_flow(flow.id, flow.ts, str(flow.amount), flow.type, flow.category.value, description=flow.description)
    rows.close()
    fresh = fake_broker.post_activities([{"activity_type": "INT", "net_amount": "3.12"}])
    observer = bus.observe(topic_cash("demo"))

    async with running(partial(cashflows.run, settings, ctx, clock=ManualClock(utc(2024, 3, 12, 15))), ctx):
        await async_wait_for(lambda: _pages(observer), what="a page")
        await async_wait_for(lambda: ctx.counters["cashflows_runs"] == 1)

    (page,) = _pages(observer)
    assert _ids(page) == [fresh[0]["id"]]
    assert known[0]["id"] not in _ids(page)


async def test_cashflows_session_start_pulls_at_once(migrated_dsn, tmp_path, bus, fake_broker) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url)
    ctx = context("cashflows", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 7, 59))
    observer = bus.observe(topic_cash("demo"))

    async with running(partial(cashflows.run, settings, ctx, clock=clock), ctx):
        await async_wait_for(lambda: ctx.counters["cashflows_runs"] == 1 and clock.sleepers == 1)
        posted = fake_broker.post_activities([{"activity_type": "JNLC", "net_amount": "250"}])

        def session_started() -> bool:
            # Repeated closed → pre pairs: the worker's subscription may still be joining.
            bus.inject("session", SessionPhaseChanged(phase="closed"))
            bus.inject("session", SessionPhaseChanged(phase="pre", session_date="2024-03-12"))
            return any(posted[0]["id"] in _ids(page) for page in _pages(observer))

        await async_wait_for(session_started, what="pull at session start")

    assert clock.now() == utc(2024, 3, 12, 7, 59)  # no interval elapsed: the phase change did it


async def test_cashflows_refused_by_the_broker_counts_and_never_logs_the_secret(
    migrated_dsn, tmp_path, bus, fake_broker, caplog
) -> None:
    secret = "wrong-secret-QQQQ9999"
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, ALPACA_SECRET_KEY_DEMO=secret)
    ctx = context("cashflows", settings, bus)
    caplog.set_level(logging.DEBUG)

    async with running(partial(cashflows.run, settings, ctx, clock=ManualClock(utc(2024, 3, 12, 15))), ctx):
        await async_wait_for(lambda: ctx.counters["cashflows_failures"] == 1, what="a counted failure")

    assert "job failed job=cashflows" in caplog.text
    assert secret not in caplog.text
    assert "demo-key" not in caplog.text


async def test_cashflows_pool_is_refused_writes(migrated_dsn, tmp_path, bus) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    table = account_names(settings, "demo").cash_flows.ident

    async with cashflows.open_pool(settings) as pool, pool.connection() as conn:
        refusal = "cannot execute DELETE in a read-only transaction"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match=refusal):
            await conn.execute(sql.SQL("DELETE FROM {t}").format(t=table))


async def test_cashflows_resends_what_state_never_stored(migrated_dsn, tmp_path, bus, fake_broker) -> None:
    """Activities published while `state` is down are not lost: the cursor is what is *stored*.

    Nothing stores the first page here (as when `state` is down). `state`'s start resync makes
    `cashflows` re-send it at once; once the rows are stored (as `state` would), nothing is sent.
    """
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, CASH_FLOWS_INTERVAL_S=str(INTERVAL_S))
    ctx = context("cashflows", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 15))
    observer = bus.observe(topic_cash("demo"))
    posted = fake_broker.post_activities([{"activity_type": "DIV", "net_amount": "1.25", "symbol": "MSFT"}])

    async def next_run() -> None:
        runs = ctx.counters["cashflows_runs"]
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: ctx.counters["cashflows_runs"] > runs and clock.sleepers == 1, what="a run")

    async with running(partial(cashflows.run, settings, ctx, clock=clock), ctx):
        await async_wait_for(lambda: len(_pages(observer)) == 1 and clock.sleepers == 1, what="first page")

        def resynced() -> bool:  # repeated: the worker's resync subscription may still be joining
            if ctx.counters["resyncs"] == 0:
                bus.inject(topic_resync("demo"), ResyncRequested(account="demo", reason="start"))
            return len(_pages(observer)) >= 2

        await async_wait_for(resynced, what="re-sent after the resync")
        first, second = _pages(observer)[:2]
        rows = Rows(settings)
        for flow in first.cash_flows:
            rows.cash_flow(
                flow.id, flow.ts, str(flow.amount), flow.type, flow.category.value, description=flow.description
            )
        rows.close()
        await next_run()
        await next_run()  # this one started after the rows were stored
        sent = len(_pages(observer))
        resyncs = ctx.counters["resyncs"]
        bus.inject(topic_resync("demo"), ResyncRequested(account="demo", reason="start"))
        await async_wait_for(lambda: ctx.counters["resyncs"] > resyncs and clock.sleepers == 1, what="resync")
        for _ in range(RESEND_AFTER_RUNS):
            await next_run()

    assert _ids(first) == _ids(second) == [posted[0]["id"]]
    assert ctx.counters["activities_resent"] >= 1
    assert len(_pages(observer)) == sent  # stored: never sent again, resync or not


async def test_cashflows_resends_unstored_after_some_runs_without_a_resync(
    migrated_dsn, tmp_path, bus, fake_broker
) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, CASH_FLOWS_INTERVAL_S=str(INTERVAL_S))
    ctx = context("cashflows", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 15))
    observer = bus.observe(topic_cash("demo"))
    posted = fake_broker.post_activities([{"activity_type": "INT", "net_amount": "0.50"}])

    async with running(partial(cashflows.run, settings, ctx, clock=clock), ctx):
        for run in range(1, RESEND_AFTER_RUNS + 2):
            await async_wait_for(lambda: ctx.counters["cashflows_runs"] == run and clock.sleepers == 1)  # noqa: B023
            clock.advance(timedelta(seconds=INTERVAL_S))
        # A run is counted once it published; the observer's thread receives the page a little later.
        await async_wait_for(lambda: len(_pages(observer)) >= 2, what="the page sent again")
        await async_wait_for(lambda: ctx.counters["cashflows_runs"] == RESEND_AFTER_RUNS + 2 and clock.sleepers == 1)

    assert [_ids(page) for page in _pages(observer)] == [[posted[0]["id"]]] * 2


async def test_cashflows_one_poison_activity_never_sinks_its_page(
    migrated_dsn, tmp_path, bus, fake_broker, caplog
) -> None:
    """A NUL in a description and a date in 9999: each rejected alone, counted, logged once.

    Shapes: Alpaca's non-trade activity (docs.alpaca.markets/reference/getaccountactivities),
    booked through the fake broker's ``POST /sim/activities``.
    """
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, CASH_FLOWS_INTERVAL_S=str(INTERVAL_S))
    ctx = context("cashflows", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 15))
    observer = bus.observe(topic_cash("demo"))
    good = fake_broker.post_activities([
        {"activity_type": "DIV", "net_amount": "2.40", "symbol": "MSFT", "description": "Cash DIV"},
        {"activity_type": "DIV", "net_amount": "1.10", "symbol": "AAPL", "description": "Cash\x00DIV"},
        {"activity_type": "DIV", "net_amount": "3.00", "symbol": "KO", "date": "9999-12-31"},
        {"activity_type": "DIV", "net_amount": "0.70", "symbol": "PEP", "description": "Cash DIV"},
    ])  # fmt: skip
    caplog.set_level(logging.WARNING)

    async with running(partial(cashflows.run, settings, ctx, clock=clock), ctx):
        await async_wait_for(lambda: len(_pages(observer)) == 1 and clock.sleepers == 1, what="first page")
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: ctx.counters["cashflows_runs"] == 2 and clock.sleepers == 1, what="run 2")

    published = {flow_id for page in _pages(observer) for flow_id in _ids(page)}
    assert published == {good[0]["id"], good[3]["id"]}
    assert ctx.counters["rejects_activity_text"] == 2  # counted on every run
    assert ctx.counters["rejects_activity_future"] + ctx.counters["rejects_activity_time"] == 2
    assert caplog.text.count("rejected activity") == 2  # logged once each
    assert ctx.counters["cashflows_failures"] == 0


async def test_a_canceled_dividend_leaves_cash_flows_and_the_kpis_and_a_correction_replaces_its_amount(
    migrated_dsn, tmp_path, bus, fake_broker
) -> None:
    """docs/spec.md §8 corrections through `cashflows` → `state` → `metrics`, on the fake broker.

    The broker re-states an activity under its ``id`` (``POST /sim/activities``): ``"status":
    "canceled"`` or a new ``net_amount``, as Alpaca's non-trade activity does
    (docs.alpaca.markets/reference/getaccountactivities: ``status`` executed/correct/canceled).
    """
    harness = StateHarness(migrated_dsn, bus)
    await harness.start()
    settings = settings_for(
        migrated_dsn,
        tmp_path,
        bus,
        fake_broker.base_url,
        CASH_FLOWS_INTERVAL_S=str(INTERVAL_S),
        METRICS_INTERVAL_S=str(INTERVAL_S),
    )
    cash_ctx, kpi_ctx = context("cashflows", settings, bus), context("metrics", settings, bus)
    cash_clock, kpi_clock = ManualClock(utc(2024, 3, 16, 15)), ManualClock(utc(2024, 3, 16, 15))  # a Saturday
    canceled, corrected = fake_broker.post_activities([
        {"activity_type": "DIV", "net_amount": "2.40", "symbol": "MSFT", "description": "Cash DIV"},
        {"activity_type": "DIV", "net_amount": "1.00", "symbol": "KO", "description": "Cash DIV"},
    ])  # fmt: skip

    async def flows() -> list[tuple[str, Decimal]]:
        return [(i, a) for i, a in await harness.query("SELECT id, amount FROM accounts.cash_flows_demo")]

    async def dividends() -> float | None:
        rows = await harness.query("SELECT metrics_payload FROM accounts.account_metrics_demo")
        return json.loads(rows[0][0]).get("Net Dividends") if rows else None

    async def next_runs() -> None:
        runs = (cash_ctx.counters["cashflows_runs"], kpi_ctx.counters["metrics_runs"])
        cash_clock.advance(timedelta(seconds=INTERVAL_S))
        kpi_clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(
            lambda: (
                cash_ctx.counters["cashflows_runs"] > runs[0]
                and cash_clock.sleepers == 1
                and kpi_ctx.counters["metrics_runs"] > runs[1]
                and kpi_clock.sleepers == 1
            ),
            what="runs",
        )

    async def until_dividends(expected: float) -> None:
        """Step both workers until the stored KPI document shows ``expected`` (bounded)."""
        for _ in range(30):
            await harness.settle()
            if await dividends() == expected:
                return
            await next_runs()
        raise AssertionError(f"Net Dividends never became {expected}: {await dividends()}")

    try:
        async with (
            running(partial(cashflows.run, settings, cash_ctx, clock=cash_clock), cash_ctx),
            running(partial(metrics.run, settings, kpi_ctx, clock=kpi_clock), kpi_ctx),
        ):
            await async_wait_for(lambda: cash_ctx.counters["activities_published"] == 2, what="first page")
            await until_dividends(3.4)
            booked = await flows()

            fake_broker.post_activities(
                [{"id": canceled["id"], "status": "canceled"}, {"id": corrected["id"], "net_amount": "1.50"}]
            )
            await next_runs()
            await until_dividends(1.5)
            after = await flows()
            published = cash_ctx.counters["activities_published"] + cash_ctx.counters["activities_canceled"]
            await next_runs()
            await harness.settle()
            replayed = await flows()
    finally:
        await harness.close()

    assert sorted(booked) == sorted([(canceled["id"], Decimal("2.40")), (corrected["id"], Decimal("1.00"))])
    assert after == [(corrected["id"], Decimal("1.50"))]
    assert cash_ctx.counters["activities_canceled"] == 1
    assert cash_ctx.counters["activities_corrected"] == 1
    assert cash_ctx.counters["activities_published"] + cash_ctx.counters["activities_canceled"] == published
    assert replayed == after


class _Activities:
    """A broker whose activities include a code Alpaca may add later (the fake refuses unknown codes).

    Shape: Alpaca's non-trade activity (docs.alpaca.markets/reference/getaccountactivities).
    """

    def __init__(self, activities: list[dict[str, object]]) -> None:
        self.activities_list = activities

    async def activities(self, after: object) -> list[dict[str, object]]:
        return list(self.activities_list)


async def test_unclassified_codes_are_published_counted_and_logged_once(migrated_dsn, tmp_path, bus, caplog) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, CASH_FLOWS_INTERVAL_S=str(INTERVAL_S))
    ctx = context("cashflows", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 15))
    observer = bus.observe(topic_cash("demo"))
    new_code = {
        "activity_type": "ZZNEW",
        "date": "2024-03-11",
        "net_amount": "-4.10",
        "status": "executed",
        "description": "a code the catalogue does not know",
    }
    source = _Activities(
        [
            {**new_code, "id": "20240311000000000::a"},
            {**new_code, "id": "20240311000000000::b"},
            {
                "id": "20240311000000000::c",
                "activity_type": "DIV",
                "date": "2024-03-11",
                "net_amount": "2.40",
                "symbol": "MSFT",
                "status": "executed",
            },
        ]
    )
    caplog.set_level(logging.WARNING)

    async with running(partial(cashflows.run, settings, ctx, clock=clock, sources={"demo": source}), ctx):
        await async_wait_for(lambda: len(_pages(observer)) == 1 and clock.sleepers == 1, what="first page")
        source.activities_list.append({**new_code, "id": "20240311000000000::d"})
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: len(_pages(observer)) == 2 and clock.sleepers == 1, what="second page")

    first, second = _pages(observer)
    assert {f.id[-1]: f.category for f in first.cash_flows} == {
        "a": Category.UNCLASSIFIED,
        "b": Category.UNCLASSIFIED,
        "c": Category.INCOME,
    }
    assert [f.id[-1] for f in second.cash_flows] == ["d"]  # nothing was stored: a, b, c are held
    assert ctx.counters["activities_unclassified"] == 3
    assert caplog.text.count("unclassified activity code account=demo type=ZZNEW") == 1

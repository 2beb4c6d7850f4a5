"""`cashflows` against the fake broker, a real PostgreSQL and the in-proc bus."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from functools import partial

import psycopg
import pytest
from psycopg import sql

from coldharbour.analytics.clock import ManualClock
from coldharbour.db.names import account_names
from coldharbour.domain.cashflows import Category
from coldharbour.messages import ActivitiesPage, SessionPhaseChanged, topic_cash
from tests.analytics.helpers import Rows, context, running, settings_for, utc
from tests.support import async_wait_for
from workers import cashflows

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


async def test_cashflows_resume_from_the_stored_cursor_after_a_restart(
    migrated_dsn, tmp_path, bus, fake_broker
) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url)
    ctx = context("cashflows", settings, bus)
    known = fake_broker.post_activities([{"activity_type": "DIV", "net_amount": "1.00", "symbol": "MSFT"}])
    rows = Rows(settings)
    for activity in fake_broker.request("GET", "/v2/account/activities").json():
        rows.cash_flow(
            activity["id"], utc(2024, 3, 12), activity.get("net_amount") or "0", activity["activity_type"], "external"
        )
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
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute(sql.SQL("DELETE FROM {t}").format(t=table))

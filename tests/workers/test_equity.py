"""`equity`: the daily curve (rebuilt once, then extended) and the intraday curve from 1-minute bars.

Arrange (as ``state`` would have written it): a $10,000 deposit and a buy of 10 AAPL at 100 on
Monday 2024-03-11, whose last regular-hours bar closes at 101; on Tuesday bars at 102, 103, 104.
Hand-computed: Monday's deposit = 9,000 cash + 10 × 101 = 10,010, return 10/10,000 = 0.1 %;
Tuesday 14:04 UTC (the last whole minute at 14:05:30) = 10,010 + 10 × (104 − 101) = 10,040.
These runs set ``EQUITY_INIT_CASH_DEMO=0`` (the deposit is the base); without it the opening is
the fake broker's own equity on Friday 2024-03-08 (its default $100,000 account).
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from decimal import Decimal
from functools import partial

import msgspec
import psycopg
import pytest
from psycopg import sql

from coldharbour.cli.doctor import check_equity_proof
from coldharbour.db.names import account_names
from coldharbour.domain.equity import DailyRow
from coldharbour.domain.types import from_datetime
from coldharbour.errors import ConfigError
from coldharbour.jobs.clock import ManualClock
from coldharbour.messages import (
    AccountChanged,
    EquityComputed,
    Heartbeat,
    cash_complete_detail,
    topic_equity,
    topic_heartbeat,
    topic_state,
)
from tests.analytics.helpers import Rows, context, insert, running, settings_for, utc
from tests.support import async_wait_for
from tests.workers.state_harness import StateHarness
from workers import equity

pytestmark = pytest.mark.asyncio
INTERVAL_S = 60
# The cash activities known complete (as cashflows' heartbeat says) past every test's clock.
COMPLETE = {"demo": utc(2100, 1, 1)}
TUESDAY_1405 = utc(2024, 3, 12, 14, 5, 30)


def _messages(observer) -> list[EquityComputed]:
    return [m for m in observer.messages() if isinstance(m, EquityComputed)]


@pytest.fixture
def arranged(migrated_dsn, tmp_path, bus):
    rows = Rows(settings_for(migrated_dsn, tmp_path, bus))
    monday = rows.session(date(2024, 3, 11))
    tuesday = rows.session(date(2024, 3, 12))
    rows.cash_flow("20240311100000000::csd", utc(2024, 3, 11, 14), "10000", "CSD", "external")
    rows.cash_flow("20240311110000000::fill", utc(2024, 3, 11, 15), "-1000", "FILL", "trade")
    rows.fill("20240311110000000::fill", utc(2024, 3, 11, 15), "AAPL", "buy", "10", "100")
    rows.bar("AAPL", monday.close_utc - timedelta(minutes=1), "101")
    rows.position("lot-aapl", "AAPL", "10", "100", utc(2024, 3, 11, 15))
    for minute, close in (
        (utc(2024, 3, 12, 13, 30), "102"),
        (utc(2024, 3, 12, 14), "103"),
        (utc(2024, 3, 12, 14, 4), "104"),
    ):
        rows.bar("AAPL", minute, close)
    yield tuesday
    rows.close()


async def test_equity_builds_the_daily_curve_and_the_intraday_curve_from_bars(
    migrated_dsn, tmp_path, bus, fake_broker, arranged
) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, EQUITY_INIT_CASH_DEMO="0")
    ctx = context("equity", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 14, 5, 30))
    observer = bus.observe(topic_equity("demo"))

    async with running(partial(equity.run, settings, ctx, cash_complete=COMPLETE, clock=clock), ctx):
        await async_wait_for(lambda: len(_messages(observer)) == 2, what="daily and intraday messages")

    daily, intraday = _messages(observer)
    (monday,) = daily.daily
    assert daily.is_rebuild
    assert (monday.date, monday.deposit, monday.cash_balance, monday.market_value) == (
        date(2024, 3, 11), Decimal(10010), Decimal(9000), Decimal(1010),
    )  # fmt: skip
    assert (monday.net_flows, monday.daily_return) == (Decimal(10000), Decimal("0.001"))
    points = {p.ts: p for p in intraday.intraday}
    assert min(points) == arranged.pre_open_utc
    assert max(points) == utc(2024, 3, 12, 14, 4)
    assert points[utc(2024, 3, 12, 9)].deposit == Decimal(10010)  # before the first bar: at the close
    assert points[utc(2024, 3, 12, 14, 3)].deposit == Decimal(10030)  # the 14:00 bar (103) carried forward
    last = points[utc(2024, 3, 12, 14, 4)]
    assert last.deposit == Decimal(10040)
    assert last.cumulative_return == Decimal("1.001") * (1 + Decimal(30) / Decimal(10010)) - 1
    assert intraday.bars == {"AAPL": (Decimal(104), from_datetime(utc(2024, 3, 12, 14, 4)))}
    assert ctx.counters["daily_bar_requests"] == 0  # our bars had every close


async def test_equity_extends_the_daily_curve_after_the_close_without_a_rebuild(
    migrated_dsn, tmp_path, bus, fake_broker, arranged
) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, EQUITY_INIT_CASH_DEMO="0")
    ctx = context("equity", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 14, 5, 30))
    observer = bus.observe(topic_equity("demo"))

    async with running(partial(equity.run, settings, ctx, cash_complete=COMPLETE, clock=clock), ctx):
        await async_wait_for(lambda: ctx.counters["equity_runs"] == 1 and clock.sleepers == 1)
        _store_intraday(migrated_dsn, tmp_path, bus, _messages(observer))  # as state would
        clock.set(arranged.close_utc + timedelta(seconds=30))
        await async_wait_for(lambda: ctx.counters["equity_runs"] == 2, what="second run")

    daily = [m for m in _messages(observer) if m.daily]
    assert [m.is_rebuild for m in daily] == [True, False]
    (tuesday,) = daily[1].daily
    assert (tuesday.date, tuesday.deposit, tuesday.net_flows) == (date(2024, 3, 12), Decimal(10040), Decimal(0))
    assert ctx.counters["daily_rebuilds"] == 1
    later_intraday = [m for m in _messages(observer) if m.intraday][-1]
    assert min(p.ts for p in later_intraday.intraday) > arranged.pre_open_utc  # only recent minutes again


async def test_issue_6_intraday_points_lost_on_the_bus_are_sent_again_from_pre_open(
    migrated_dsn, tmp_path, bus, fake_broker, arranged
) -> None:
    """Issue 6 bug: after its first run of a session ``equity`` sent only the recent minutes, so
    when that first message was lost on the bus (``state`` not subscribed yet when every program
    starts together, or restarting) the stored intraday curve never covered the session from
    pre-open. Until the stored curve starts at the session's first point, a run sends it all."""
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, EQUITY_INIT_CASH_DEMO="0")
    ctx = context("equity", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 14, 5, 30))
    observer = bus.observe(topic_equity("demo"))

    async with running(partial(equity.run, settings, ctx, cash_complete=COMPLETE, clock=clock), ctx):
        await async_wait_for(lambda: ctx.counters["equity_runs"] == 1 and clock.sleepers == 1)
        clock.advance(timedelta(seconds=INTERVAL_S))  # nobody stored the first points
        await async_wait_for(lambda: ctx.counters["equity_runs"] == 2 and clock.sleepers == 1, what="second run")
        # the counter moves before the bus delivers: wait for the message itself
        await async_wait_for(lambda: len([m for m in _messages(observer) if m.intraday]) == 2, what="two curves")
        _store_intraday(migrated_dsn, tmp_path, bus, _messages(observer))
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: ctx.counters["equity_runs"] == 3 and clock.sleepers == 1, what="third run")
        await async_wait_for(lambda: len([m for m in _messages(observer) if m.intraday]) == 3, what="three curves")

    first, again, stored = [min(p.ts for p in m.intraday) for m in _messages(observer) if m.intraday]
    assert first == again == arranged.pre_open_utc
    assert stored > arranged.pre_open_utc  # once stored: only the recent minutes


async def test_equity_anchors_the_opening_balance_on_the_brokers_portfolio_history(
    migrated_dsn, tmp_path, bus, fake_broker, arranged
) -> None:
    """Issue 13: the fake's default account holds $100,000 with no deposit activity; the opening
    is the broker's equity at Friday's close (``GET /v2/account/portfolio/history``, 1D), so
    Monday = 100,000 + 10,010 and the $10,000 deposit is a flow, not a gain."""
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url)
    ctx = context("equity", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 14, 5, 30))
    observer = bus.observe(topic_equity("demo"))

    async with running(partial(equity.run, settings, ctx, cash_complete=COMPLETE, clock=clock), ctx):
        await async_wait_for(lambda: len(_messages(observer)) == 2, what="daily and intraday messages")

    daily, intraday = _messages(observer)
    (monday,) = daily.daily
    assert (monday.deposit, monday.net_flows) == (Decimal(110010), Decimal(10000))
    assert monday.daily_return == Decimal(10) / Decimal(110000)
    last = max(intraday.intraday, key=lambda p: p.ts)
    assert last.deposit == Decimal(110040)
    assert ctx.counters["broker_history_requests"] >= 1


async def test_equity_init_cash_per_account_overrides_the_broker(
    migrated_dsn, tmp_path, bus, fake_broker, arranged
) -> None:
    settings = settings_for(
        migrated_dsn, tmp_path, bus, fake_broker.base_url, EQUITY_INIT_CASH="1", EQUITY_INIT_CASH_DEMO="5000"
    )
    ctx = context("equity", settings, bus)
    observer = bus.observe(topic_equity("demo"))

    clock = ManualClock(TUESDAY_1405)
    async with running(partial(equity.run, settings, ctx, cash_complete=COMPLETE, clock=clock), ctx):
        await async_wait_for(lambda: len(_messages(observer)) == 2, what="daily and intraday messages")

    (monday,) = _messages(observer)[0].daily
    assert monday.deposit == Decimal(15010)
    assert ctx.counters["broker_history_requests"] == 1  # the daily proof only, not the anchor


async def test_equity_proves_each_daily_row_against_the_brokers_history(
    migrated_dsn, tmp_path, bus, fake_broker, arranged, caplog
) -> None:
    """Issue 13 daily proof: the arranged rows are not the fake's own trades, so Monday differs
    from the broker's $100,000 by our 10,010: stored, logged and counted once."""
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, EQUITY_INIT_CASH_DEMO="0")
    ctx = context("equity", settings, bus)
    observer = bus.observe(topic_equity("demo"))
    caplog.set_level(logging.INFO, logger="coldharbour.analytics.equity")

    clock = ManualClock(TUESDAY_1405)
    async with running(partial(equity.run, settings, ctx, cash_complete=COMPLETE, clock=clock), ctx):
        await async_wait_for(lambda: len(_messages(observer)) == 2, what="daily and intraday messages")

    (monday,) = _messages(observer)[0].daily
    assert (monday.broker_equity, monday.equity_diff) == (Decimal(100000), Decimal(-89990))
    assert ctx.counters["equity_mismatches"] == 1
    assert "daily equity differs from the broker account=demo date=2024-03-11" in caplog.text
    assert "equity proof account=demo days=1 match=0 differ=1 no_broker_point=0" in caplog.text


def _store_intraday(dsn, tmp_path, bus, messages: list[EquityComputed]) -> None:
    """Store the published intraday points as ``state`` would."""
    rows = Rows(settings_for(dsn, tmp_path, bus))
    try:
        for point in {p.ts: p for m in messages for p in m.intraday}.values():
            insert(rows.conn, rows.names.equity_intraday.ident, {"ts": point.ts, "deposit": point.deposit})
    finally:
        rows.close()


async def test_equity_pool_is_refused_writes(migrated_dsn, tmp_path, bus) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    table = account_names(settings, "demo").equity_full.ident

    async with equity.open_pool(settings) as pool, pool.connection() as conn:
        refusal = "cannot execute DELETE in a read-only transaction"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match=refusal):
            await conn.execute(sql.SQL("DELETE FROM {t}").format(t=table))


async def test_doctor_shows_days_whose_equity_differs_from_the_broker(migrated_dsn, tmp_path, bus) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    rows = Rows(settings)
    try:
        assert list(check_equity_proof(settings)) == []  # nothing proven yet: nothing to say
        for day, deposit, broker in ((11, "100.00", "100.00"), (12, "101.00", "100.50"), (13, "102.00", None)):
            diff = None if broker is None else Decimal(deposit) - Decimal(broker)
            insert(
                rows.conn,
                rows.names.equity_full.ident,
                {"date": date(2024, 3, day), "deposit": Decimal(deposit), "broker_equity": broker, "equity_diff": diff},
            )
        (check,) = check_equity_proof(settings)
    finally:
        rows.close()

    assert check.verdict == "WARN"
    assert "differs from the broker's portfolio history on 1 of 2 days (largest 2024-03-12 by 0.50)" in check.line


@pytest.mark.parametrize("value", ["-5", "1e5", "12.345", "abc"])
async def test_equity_init_cash_per_account_is_a_plain_amount(migrated_dsn, tmp_path, bus, value) -> None:
    with pytest.raises(ConfigError, match=r"^EQUITY_INIT_CASH_DEMO: expected a non-negative amount"):
        settings_for(migrated_dsn, tmp_path, bus, EQUITY_INIT_CASH_DEMO=value)


MANY_ROWS = 600  # one commit carrying hundreds of daily rows (a rebuild)


async def test_state_stores_the_daily_proof_columns_and_null_returns(migrated_dsn, bus) -> None:
    """The proof columns (account migration 2) and the null returns after equity ≤ 0 reach the
    table through ``state``, for one row and for many in one commit."""
    harness = StateHarness(migrated_dsn, bus)
    await harness.start()
    try:
        proven = DailyRow(
            date=date(2024, 3, 11), deposit=Decimal("100100.00"), cash_balance=Decimal(0), market_value=Decimal(0),
            net_flows=Decimal(0), daily_return=None, cumulative_return=None, drawdown=None,
            broker_equity=Decimal("100099.99"), equity_diff=Decimal("0.01"),
        )  # fmt: skip
        many = [
            msgspec.structs.replace(proven, date=date(2020, 1, 1) + timedelta(days=i), equity_diff=Decimal(i))
            for i in range(MANY_ROWS)
        ]
        harness.inject(topic_equity("demo"), EquityComputed(account="demo", daily=(proven, *many)))
        await harness.settle()
        stored = await harness.query(
            "SELECT broker_equity, equity_diff, daily_return, cumulative_return, drawdown "
            "FROM accounts.account_equity_full_demo ORDER BY date DESC LIMIT 1"
        )
        count = await harness.query("SELECT count(equity_diff) FROM accounts.account_equity_full_demo")
    finally:
        await harness.close()

    assert stored == [(Decimal("100099.99"), Decimal("0.01"), None, None, None)]
    assert count == [(MANY_ROWS + 1,)]


async def test_a_cash_flow_stored_late_for_a_built_day_re_extends_the_curve_from_that_day(
    migrated_dsn, tmp_path, bus, fake_broker, arranged
) -> None:
    """The issue's 4-in-10 start: `equity` built the curve after the fills were stored but before
    the cash flows were, and nothing re-read them: the deposit day stayed wrong for hours. A flow
    stored later for a day the curve has re-extends it from that day at the next run (no new
    session needed): Tuesday's late dividend writes Tuesday again, never Monday."""
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, EQUITY_INIT_CASH_DEMO="0")
    ctx = context("equity", settings, bus)
    clock = ManualClock(arranged.close_utc + timedelta(minutes=5))  # Monday and Tuesday closed
    observer = bus.observe(topic_equity("demo"))
    rows = Rows(settings)

    try:
        async with running(partial(equity.run, settings, ctx, cash_complete=COMPLETE, clock=clock), ctx):
            await async_wait_for(lambda: ctx.counters["equity_runs"] == 1 and clock.sleepers == 1)
            rows.cash_flow("20240312150000000::div", utc(2024, 3, 12, 15, 30), "25", "DIV", "income")  # late
            clock.advance(timedelta(seconds=INTERVAL_S))
            await async_wait_for(lambda: ctx.counters["equity_runs"] == 2 and clock.sleepers == 1, what="run 2")
            rows.cash_flow("20240311150000000::div", utc(2024, 3, 11, 15, 30), "5", "DIV", "income")  # later still
            clock.advance(timedelta(seconds=INTERVAL_S))
            await async_wait_for(lambda: ctx.counters["equity_runs"] == 3, what="run 3")
    finally:
        rows.close()

    daily = [m for m in _messages(observer) if m.daily]
    assert [m.is_rebuild for m in daily] == [True, False, False]
    assert [(d.date, d.deposit) for d in daily[0].daily] == [
        (date(2024, 3, 11), Decimal(10010)), (date(2024, 3, 12), Decimal(10040)),
    ]  # fmt: skip
    assert [(d.date, d.deposit) for d in daily[1].daily] == [(date(2024, 3, 12), Decimal(10065))]  # Tuesday only
    assert [(d.date, d.deposit) for d in daily[2].daily] == [
        (date(2024, 3, 11), Decimal(10015)),
        (date(2024, 3, 12), Decimal(10070)),
    ]  # from Monday: Tuesday carries Monday's cash
    assert ctx.counters["daily_rebuilds"] == 1
    assert ctx.counters["daily_rebuilds_late_input"] == ctx.counters["daily_reextends_late_input"] == 2


async def test_equity_builds_no_daily_row_before_cashflows_says_the_flows_are_complete(
    migrated_dsn, tmp_path, bus, fake_broker, arranged
) -> None:
    """Absence is not evidence: until ``cashflows``' heartbeat says how far the stored cash
    activities are complete, no daily row (nor intraday point) is written; then only the sessions
    that closed by that mark are built, and a later mark extends the curve to its days."""
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, EQUITY_INIT_CASH_DEMO="0")
    ctx = context("equity", settings, bus)
    clock = ManualClock(arranged.close_utc + timedelta(minutes=5))  # Monday and Tuesday closed
    observer = bus.observe(topic_equity("demo"))
    monday_close = arranged.close_utc - timedelta(days=1)

    def said(mark, heard: int) -> bool:  # cashflows' heartbeat, repeated until equity heard it
        details = {cash_complete_detail("demo"): str(from_datetime(mark)), cash_complete_detail("other"): "x"}
        bus.inject(topic_heartbeat("cashflows"), Heartbeat(program="cashflows", pid=1, uptime_s=1.0, details=details))
        return ctx.counters["cash_complete_heard"] > heard

    async with running(partial(equity.run, settings, ctx, clock=clock), ctx):
        await async_wait_for(lambda: ctx.counters["equity_runs"] == 1 and clock.sleepers == 1)
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: ctx.counters["equity_runs"] == 2 and clock.sleepers == 1, what="run 2")
        before = list(_messages(observer))
        heard = ctx.counters["cash_complete_heard"]
        await async_wait_for(partial(said, monday_close + timedelta(hours=1), heard), what="Monday complete heard")
        await async_wait_for(lambda: [m for m in _messages(observer) if m.daily], what="Monday's row")
        heard = ctx.counters["cash_complete_heard"]
        await async_wait_for(partial(said, arranged.close_utc + timedelta(minutes=1), heard), what="Tuesday heard")
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: len([m for m in _messages(observer) if m.daily]) == 2, what="Tuesday's row")

    assert before == []
    assert ctx.counters["equity_waits_cash_complete"] == 2
    first, second = [m for m in _messages(observer) if m.daily]
    assert [(d.date, d.deposit) for d in first.daily] == [(date(2024, 3, 11), Decimal(10010))]
    assert first.is_rebuild
    assert [(d.date, d.deposit) for d in second.daily] == [(date(2024, 3, 12), Decimal(10040))]
    assert not second.is_rebuild


def _ran(ctx, clock: ManualClock, runs: int) -> bool:
    return ctx.counters["equity_runs"] == runs and clock.sleepers == 1


async def test_equity_reads_nothing_for_an_account_holding_nothing_until_state_announces_a_change(
    migrated_dsn, tmp_path, bus, fake_broker
) -> None:
    rows = Rows(settings_for(migrated_dsn, tmp_path, bus))
    rows.session(date(2024, 3, 11))
    rows.session(date(2024, 3, 12))
    rows.cash_flow("20240311100000000::csd", utc(2024, 3, 11, 14), "10000", "CSD", "external")
    rows.close()
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, EQUITY_INIT_CASH_DEMO="0")
    ctx = context("equity", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 14, 5, 30))
    observer = bus.observe(topic_equity("demo"))

    async with running(partial(equity.run, settings, ctx, cash_complete=COMPLETE, clock=clock), ctx):
        await async_wait_for(lambda: ctx.counters["equity_runs"] == 1 and clock.sleepers == 1)
        await async_wait_for(lambda: [m for m in _messages(observer) if m.intraday], what="the first curve")
        _store_intraday(migrated_dsn, tmp_path, bus, _messages(observer))
        heard = ctx.counters["equity_changes_heard"]

        def listening() -> bool:  # a change of no input of the curve, announced until heard
            bus.inject(topic_state("demo"), AccountChanged(account="demo", kinds=("metrics",)))
            return ctx.counters["equity_changes_heard"] > heard

        await async_wait_for(listening, what="equity subscribed to state.*")
        for run in (2, 3, 4):  # nothing held, nothing changed: nothing read
            clock.advance(timedelta(seconds=INTERVAL_S))
            await async_wait_for(partial(_ran, ctx, clock, run), what=f"run {run}")
        still = ctx.counters["equity_runs_still"]
        curves = len([m for m in _messages(observer) if m.intraday])
        unread = ctx.counters["equity_input_changes"]  # listening may be heard more than once: not a count to wait on
        bus.inject(topic_state("demo"), AccountChanged(account="demo", kinds=("cash_flows",)))
        await async_wait_for(lambda: ctx.counters["equity_input_changes"] == 1, what="the change heard")
        clock.advance(timedelta(seconds=INTERVAL_S))
        await async_wait_for(lambda: ctx.counters["equity_runs"] == 5 and clock.sleepers == 1, what="run after it")
        await async_wait_for(lambda: len([m for m in _messages(observer) if m.intraday]) == curves + 1, what="curve")

    last = [m for m in _messages(observer) if m.intraday][-1]
    assert unread == 0  # a change of no input of the curve is heard but not read
    assert still == 3
    assert curves == 1
    assert ctx.counters["equity_runs_still"] == 3  # the run after the change read
    assert min(p.ts for p in last.intraday) <= utc(2024, 3, 12, 14, 5)  # every minute since the last computation
    assert max(p.ts for p in last.intraday) >= utc(2024, 3, 12, 14, 8)


async def test_a_new_account_without_any_activity_has_a_live_return_from_the_first_minute(
    migrated_dsn, tmp_path, bus, fake_broker
) -> None:
    """Nothing stored yet (no fill, no cash flow): the broker's equity at the close before today
    (the fake's default $100,000 account, ``GET /v2/account/portfolio/history`` 1D) anchors the
    intraday curve, so its return reads 0 from pre-open, never null until a first daily row."""
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url)
    ctx = context("equity", settings, bus)
    observer = bus.observe(topic_equity("demo"))

    clock = ManualClock(TUESDAY_1405)
    async with running(partial(equity.run, settings, ctx, cash_complete=COMPLETE, clock=clock), ctx):
        await async_wait_for(lambda: [m for m in _messages(observer) if m.intraday], what="the intraday curve")

    (curve,) = [m for m in _messages(observer) if m.intraday]
    assert not [m for m in _messages(observer) if m.daily]  # no session completed since the opening
    assert len(curve.intraday) > 1
    assert {(p.deposit, p.cumulative_return, p.drawdown) for p in curve.intraday} == {
        (Decimal(100000), Decimal(0), Decimal(0))
    }

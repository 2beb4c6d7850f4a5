"""`scheduler` with an injected clock: phase changes at the exact instant, programs started and
stopped through a hand-written supervisord fake, the session-start bootstrap, the schedule."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from functools import partial

import psycopg
import pytest
from psycopg import sql

from coldharbour import runtime
from coldharbour.cli.doctor import check_schedule_horizon
from coldharbour.db.names import shared_names
from coldharbour.domain.schedule import NEW_YORK
from coldharbour.domain.types import from_datetime
from coldharbour.errors import BrokerError
from coldharbour.jobs.clock import ManualClock
from coldharbour.messages import (
    LedgerCheckRequested,
    ResyncRequested,
    ScheduleComputed,
    SessionPhaseChanged,
)
from coldharbour.runtime import PROGRAMS, SESSION_PROGRAMS
from tests.analytics.helpers import Rows, context, running, settings_for, utc
from tests.support import async_wait_for
from tests.workers.state_harness import StateHarness
from workers import scheduler

pytestmark = pytest.mark.asyncio


class FakeSupervisor:
    """supervisord as the scheduler sees it: program states, and the calls it received."""

    def __init__(self, state: str) -> None:
        self.state: dict[str, str] = {name: state for name in PROGRAMS}
        self.calls: list[tuple[str, str]] = []

    def start(self, name: str) -> None:
        self.calls.append(("start", name))
        self.state[name] = "RUNNING"

    def stop(self, name: str) -> None:
        self.calls.append(("stop", name))
        self.state[name] = "STOPPED"

    def states(self) -> dict[str, str]:
        return dict(self.state)


class DownCalendar:
    """A calendar source whose broker is unreachable."""

    async def calendar(self, start: date, end: date) -> list[dict[str, object]]:
        raise BrokerError("GET /v2/calendar account=demo: HTTP 503")


def _phases(observer) -> list[SessionPhaseChanged]:
    return [m for m in observer.messages() if isinstance(m, SessionPhaseChanged)]


def _last_phase(observer) -> str | None:
    phases = _phases(observer)
    return phases[-1].phase if phases else None


async def test_scheduler_changes_phase_at_the_exact_instant_and_drives_the_programs(
    migrated_dsn, tmp_path, bus, fake_broker
) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url)
    ctx = context("scheduler", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 7, 59))  # 03:59 New York (EDT since 2024-03-10)
    supervisor = FakeSupervisor("RUNNING")
    session_observer, schedule_observer, command_observer = (
        bus.observe("session"),
        bus.observe("schedule"),
        bus.observe("cmd."),
    )
    pre_open, open_ = utc(2024, 3, 12, 8), utc(2024, 3, 12, 13, 30)

    async with running(partial(scheduler.run, settings, ctx, clock=clock, control=supervisor), ctx):
        await async_wait_for(lambda: len(_phases(session_observer)) == 1 and clock.sleepers == 1, what="closed")
        await async_wait_for(lambda: len(supervisor.calls) == len(SESSION_PROGRAMS), what="programs stopped")
        stopped_at_start = list(supervisor.calls)
        clock.set(pre_open)
        await async_wait_for(lambda: len(_phases(session_observer)) == 2 and clock.sleepers == 1, what="pre")
        await async_wait_for(lambda: len(command_observer.messages()) == 2, what="bootstrap")
        await async_wait_for(lambda: len(supervisor.calls) == 2 * len(SESSION_PROGRAMS), what="programs started")
        clock.set(open_ + timedelta(seconds=1))  # woke a little late: the stamp is still the boundary
        await async_wait_for(lambda: len(_phases(session_observer)) == 3, what="open")

    closed, pre, opened = _phases(session_observer)
    assert (closed.phase, closed.at_ns) == ("closed", from_datetime(utc(2024, 3, 12, 0)))  # Monday's 20:00 EDT
    assert (pre.phase, pre.session_date, pre.at_ns) == ("pre", "2024-03-12", from_datetime(pre_open))
    assert (opened.phase, opened.at_ns) == ("open", from_datetime(open_))
    assert stopped_at_start == [("stop", name) for name in SESSION_PROGRAMS]
    assert supervisor.calls[len(SESSION_PROGRAMS) :] == [("start", name) for name in SESSION_PROGRAMS]
    assert {type(m) for m in command_observer.messages()} == {ResyncRequested, LedgerCheckRequested}
    assert all(m.account == "demo" for m in command_observer.messages())
    (schedule,) = [m for m in schedule_observer.messages() if isinstance(m, ScheduleComputed)]
    assert schedule.sessions[0].session_date == date(2024, 3, 5)  # today − 7 days (a Tuesday)
    assert schedule.sessions[-1].session_date <= date(2024, 6, 10)  # today + 90 days
    today_row = next(s for s in schedule.sessions if s.session_date == date(2024, 3, 12))
    assert (today_row.pre_open_utc, today_row.open_utc, today_row.post_close_utc) == (
        pre_open, open_, utc(2024, 3, 13, 0),
    )  # fmt: skip
    cutoff = datetime.combine(date(2024, 3, 12) - timedelta(days=120), time(0), tzinfo=NEW_YORK)
    assert schedule.prune_before_ns == from_datetime(cutoff)


async def test_scheduler_disable_session_sleep_keeps_programs_on(migrated_dsn, tmp_path, bus, fake_broker) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus, fake_broker.base_url, DISABLE_SESSION_SLEEP="1")
    ctx = context("scheduler", settings, bus)
    clock = ManualClock(utc(2024, 3, 16, 12))  # Saturday: closed
    supervisor = FakeSupervisor("STOPPED")
    observer = bus.observe("session")

    async with running(partial(scheduler.run, settings, ctx, clock=clock, control=supervisor), ctx):
        await async_wait_for(lambda: len(supervisor.calls) == len(SESSION_PROGRAMS) and clock.sleepers == 1)
        clock.set(utc(2024, 3, 18, 8))  # Monday pre-open
        await async_wait_for(lambda: len(_phases(observer)) == 2 and clock.sleepers == 1, what="pre")
        clock.set(utc(2024, 3, 19, 0))  # Monday post-close: closed again
        await async_wait_for(lambda: len(_phases(observer)) == 3 and clock.sleepers == 1, what="closed")
        await async_wait_for(lambda: ctx.counters["phase_changes"] == 3)

    assert [p.phase for p in _phases(observer)] == ["closed", "pre", "closed"]
    assert supervisor.calls == [("start", name) for name in SESSION_PROGRAMS]  # never stopped


async def test_scheduler_uses_the_stored_schedule_while_the_broker_is_down(migrated_dsn, tmp_path, bus) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    rows = Rows(settings)
    rows.session(date(2024, 3, 12))
    rows.close()
    ctx = context("scheduler", settings, bus)
    observer = bus.observe("session")

    async with running(
        partial(scheduler.run, settings, ctx, clock=ManualClock(utc(2024, 3, 12, 10)), calendar=DownCalendar()), ctx
    ):
        await async_wait_for(lambda: _phases(observer), what="phase from the stored schedule")

    assert [(p.phase, p.session_date) for p in _phases(observer)] == [("pre", "2024-03-12")]
    assert ctx.counters["calendar_failures"] == 1


async def test_scheduler_pool_is_refused_writes(migrated_dsn, tmp_path, bus) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    table = shared_names(settings).market_schedule.ident

    async with scheduler.open_pool(settings) as pool, pool.connection() as conn:
        refusal = "cannot execute DELETE in a read-only transaction"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match=refusal):
            await conn.execute(sql.SQL("DELETE FROM {t}").format(t=table))


class HandCalendar:
    """A calendar source answering hand-written ``GET /v2/calendar`` rows (shape: docs/broker.md §3,
    Alpaca's calendar API page: ``date``, ``open``/``close`` NY wall-clock ``HH:MM``), which the
    test can change between refreshes."""

    def __init__(self, days: list[date]) -> None:
        self.days = days

    async def calendar(self, start: date, end: date) -> list[dict[str, object]]:
        return [
            {"date": d.isoformat(), "open": "09:30", "close": "16:00", "session_open": "0400", "session_close": "2000"}
            for d in self.days
            if start <= d <= end
        ]


def _weekdays(first: date, last: date) -> list[date]:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [d for d in days if d.weekday() < 5]


async def test_issue_13_a_calendar_that_ends_in_ten_days_warns_and_programs_keep_running(
    migrated_dsn, tmp_path, bus, caplog
) -> None:
    """Issue 13 bug: the schedule silently ended where the broker's calendar ended, and with no
    session ahead the session programs were stopped for good. Now: a warning and a counter at
    the refresh, and past the last session the programs stay on (fail open)."""
    settings = settings_for(migrated_dsn, tmp_path, bus)
    ctx = context("scheduler", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 7, 59))  # Tuesday 03:59 New York
    supervisor = FakeSupervisor("RUNNING")
    calendar = HandCalendar(_weekdays(date(2024, 3, 5), date(2024, 3, 22)))  # ends in 10 days
    observer = bus.observe("session")

    async with running(
        partial(scheduler.run, settings, ctx, clock=clock, calendar=calendar, control=supervisor), ctx
    ):
        await async_wait_for(lambda: len(supervisor.calls) == len(SESSION_PROGRAMS), what="stopped for the night")
        clock.set(utc(2024, 3, 22, 20))  # Friday 16:00 New York, the last session's close
        await async_wait_for(lambda: _last_phase(observer) == "post" and clock.sleepers == 1, what="post")
        clock.set(utc(2024, 3, 23, 0, 0, 1))  # past the last post-close: nothing known ahead
        await async_wait_for(lambda: _last_phase(observer) == "closed", what="closed")
        await async_wait_for(lambda: ctx.counters["schedule_exhausted"] >= 1 and clock.sleepers == 1)

    assert ctx.counters["schedule_short"] >= 1  # once per refresh (the clock jumped past several)
    assert "broker calendar covers 10 days (2024-03-22) ahead, fewer than SCHEDULE_FORWARD_DAYS=90" in caplog.text
    stops = [call for call in supervisor.calls if call[0] == "stop"]
    assert len(stops) == len(SESSION_PROGRAMS)  # only the night before the 12th, never after the end
    assert all(supervisor.state[name] == "RUNNING" for name in SESSION_PROGRAMS)


async def test_issue_13_a_closure_declared_after_the_schedule_was_stored_replaces_the_range(
    migrated_dsn, tmp_path, bus
) -> None:
    """Issue 13 bug: a refresh only upserted, so a session the broker later declared closed kept
    its stale row. A refresh now names the range it replaces; the closed day is not in it."""
    settings = settings_for(migrated_dsn, tmp_path, bus, MARKET_REFRESH_SEC="60")
    ctx = context("scheduler", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 7, 59))
    calendar = HandCalendar(_weekdays(date(2024, 3, 5), date(2024, 6, 14)))
    observer = bus.observe("schedule")

    def schedules() -> list[ScheduleComputed]:
        return [m for m in observer.messages() if isinstance(m, ScheduleComputed)]

    harness = StateHarness(migrated_dsn, bus)  # `state` stores what the scheduler publishes
    await harness.start()

    async def stored() -> set[date]:
        return {d for (d,) in await harness.query("SELECT session_date FROM accounts.market_schedule")}

    try:
        async with running(partial(scheduler.run, settings, ctx, clock=clock, calendar=calendar), ctx):
            await async_wait_for(lambda: len(schedules()) == 1 and clock.sleepers == 1, what="first schedule")
            await harness.settle()
            before = await stored()
            calendar.days.remove(date(2024, 3, 14))  # an unscheduled closure, declared after
            clock.advance(timedelta(seconds=60))
            await async_wait_for(lambda: len(schedules()) == 2, what="refresh")
            await harness.settle()
            after = await stored()
    finally:
        await harness.close()

    assert date(2024, 3, 14) in before
    assert before - after == {date(2024, 3, 14)}  # the stale row went, in the same commit as the upserts
    first, refreshed = schedules()
    assert date(2024, 3, 14) in {s.session_date for s in first.sessions}
    assert date(2024, 3, 14) not in {s.session_date for s in refreshed.sessions}
    assert (refreshed.replace_from, refreshed.replace_to) == (date(2024, 3, 5), date(2024, 6, 10))
    assert ctx.counters["schedule_short"] == 0


async def test_doctor_warns_when_the_stored_schedule_ends_short(migrated_dsn, tmp_path, bus) -> None:
    settings = settings_for(migrated_dsn, tmp_path, bus)
    (empty,) = check_schedule_horizon(settings, date(2024, 3, 12))
    rows = Rows(settings)
    for day in _weekdays(date(2024, 3, 11), date(2024, 3, 22)):
        rows.session(day)
    rows.close()

    (short,) = check_schedule_horizon(settings, date(2024, 3, 12))
    (enough,) = check_schedule_horizon(settings, date(2024, 3, 12) - timedelta(days=80))

    assert empty.verdict == "WARN"
    assert short.verdict == "WARN"
    assert "market schedule ends on 2024-03-22, 10 days ahead, short of SCHEDULE_FORWARD_DAYS=90" in short.line
    assert enough.verdict == "OK"


async def test_a_schedule_published_before_state_reads_the_bus_is_re_sent_when_state_is_ready(
    migrated_dsn, tmp_path, bus
) -> None:
    """Issue: the schedule went out 0.6 s after `state` started, before it subscribed, and nothing
    re-sent it for MARKET_REFRESH_SEC. Now `state` announces it is ready (its heartbeat) and the
    scheduler re-sends its current schedule: stored although the clock never reaches a refresh."""
    settings = settings_for(migrated_dsn, tmp_path, bus, MARKET_REFRESH_SEC="3600")
    ctx = context("scheduler", settings, bus)
    clock = ManualClock(utc(2024, 3, 12, 7, 59))
    calendar = HandCalendar(_weekdays(date(2024, 3, 5), date(2024, 6, 14)))
    observer = bus.observe("schedule")
    harness = StateHarness(migrated_dsn, bus)

    async def stored() -> int:
        return len(await harness.query("SELECT session_date FROM accounts.market_schedule"))

    async with running(partial(scheduler.run, settings, ctx, clock=clock, calendar=calendar), ctx):
        await async_wait_for(lambda: observer.messages() and clock.sleepers == 1, what="first schedule, no reader")
        await harness.start()  # state comes up late: the schedule went out before it subscribed
        heartbeat = asyncio.create_task(runtime.heartbeat_loop(harness.ctx, harness.stop, interval_s=0.05))
        try:
            await async_wait_for(lambda: ctx.counters["schedule_resent"] >= 1, what="schedule re-sent")
            await harness.settle()
            count = await stored()
        finally:
            await harness.close()
            await heartbeat

    assert count > 0
    assert ctx.counters["state_ready_seen"] == 1
    assert len([m for m in observer.messages() if isinstance(m, ScheduleComputed)]) == 2  # first, then re-sent

"""The manual clock and the periodic-job loop: exact wake-ups, reschedule-first, wake events, backoff."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from coldharbour.errors import BrokerError
from coldharbour.jobs.clock import ManualClock, run_per_account, run_periodic
from tests.analytics.helpers import utc
from tests.support import async_wait_for

pytestmark = pytest.mark.asyncio


async def test_manual_clock_wakes_a_sleeper_exactly_at_its_deadline() -> None:
    clock = ManualClock(utc(2024, 3, 12, 7, 59))
    deadline = utc(2024, 3, 12, 8)
    sleeper = asyncio.create_task(clock.wait_until(deadline))
    await async_wait_for(lambda: clock.sleepers == 1)

    clock.set(deadline - timedelta(microseconds=1))
    await asyncio.sleep(0)  # let the sleeper re-check: it must still be asleep
    still_sleeping = not sleeper.done()
    clock.set(deadline)
    await asyncio.wait_for(sleeper, 1)

    assert still_sleeping
    assert clock.now() == deadline


async def test_run_periodic_runs_at_once_then_every_interval_and_on_wake() -> None:
    clock = ManualClock(utc(2024, 3, 12, 12))
    stop, wake = asyncio.Event(), asyncio.Event()
    counters: Counter[str] = Counter()
    runs: list[object] = []

    async def job() -> None:
        runs.append(clock.now())

    task = asyncio.create_task(run_periodic("job", 60, job, clock=clock, stop=stop, counters=counters, wake=wake))
    await async_wait_for(lambda: len(runs) == 1 and clock.sleepers == 1)
    clock.advance(timedelta(seconds=59))
    await asyncio.sleep(0)
    runs_before_due = len(runs)
    clock.advance(timedelta(seconds=1))
    await async_wait_for(lambda: len(runs) == 2)
    wake.set()
    await async_wait_for(lambda: len(runs) == 3)
    stop.set()
    await asyncio.wait_for(task, 1)

    assert runs_before_due == 1
    assert runs == [utc(2024, 3, 12, 12), utc(2024, 3, 12, 12, 1), utc(2024, 3, 12, 12, 1)]
    assert counters["job_runs"] == 3


async def test_run_periodic_counts_a_failure_and_retries_before_the_interval() -> None:
    clock = ManualClock(utc(2024, 3, 12, 12))
    stop = asyncio.Event()
    counters: Counter[str] = Counter()
    calls: list[object] = []

    async def job() -> None:
        calls.append(clock.now())
        if len(calls) == 1:
            raise BrokerError("GET /v2/calendar: HTTP 503")

    task = asyncio.create_task(run_periodic("job", 300, job, clock=clock, stop=stop, counters=counters))
    await async_wait_for(lambda: counters["job_failures"] == 1 and clock.sleepers == 1)
    clock.advance(timedelta(seconds=2))  # the first retry is due after about one second
    await async_wait_for(lambda: counters["job_runs"] == 1)
    stop.set()
    await asyncio.wait_for(task, 1)

    assert len(calls) == 2


async def test_run_periodic_cancels_a_running_job_when_stopped() -> None:
    clock = ManualClock(utc(2024, 3, 12, 12))
    stop = asyncio.Event()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hanging_job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # a broker call stuck in its retry chain
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(run_periodic("job", 60, hanging_job, clock=clock, stop=stop, counters=Counter()))
    await asyncio.wait_for(started.wait(), 1)
    stop.set()
    await asyncio.wait_for(task, 1)

    assert cancelled.is_set()


async def test_run_per_account_restarts_a_crashed_loop_through_the_clock() -> None:
    clock = ManualClock(utc(2024, 3, 12, 12))
    stop = asyncio.Event()
    counters: Counter[str] = Counter()
    calls: list[object] = []

    async def job() -> None:
        calls.append(clock.now())
        if len(calls) == 1:
            raise RuntimeError("a bug, not the broker")

    task = asyncio.create_task(run_per_account("job", 300, {"demo": job}, clock=clock, stop=stop, counters=counters))
    await async_wait_for(lambda: counters["task_restarts"] == 1 and clock.sleepers == 1)
    calls_before_backoff = len(calls)
    clock.advance(timedelta(seconds=1))  # the supervisor's first backoff is at most one second
    await async_wait_for(lambda: counters["job_runs"] == 1)
    stop.set()
    await asyncio.wait_for(task, 1)

    assert calls_before_backoff == 1
    assert counters["job_failures"] == 1
    assert calls == [utc(2024, 3, 12, 12), utc(2024, 3, 12, 12, 0, 1)]


async def test_run_periodic_rechecks_sooner_after_a_true_run_and_backs_off_to_the_period() -> None:
    """``recheck_s``: a run that returned True runs again within ``recheck_s`` (equal jitter: between
    half and all of it), the next within twice that, and a run that returned False waits the period."""
    clock = ManualClock(utc(2024, 3, 12, 12))
    stop = asyncio.Event()
    counters: Counter[str] = Counter()
    runs: list[object] = []
    answers = iter([True, True, False])

    async def job() -> bool:
        runs.append(clock.now())
        return next(answers, False)

    task = asyncio.create_task(
        run_periodic("job", 300, job, clock=clock, stop=stop, counters=counters, recheck_s=5)
    )  # fmt: skip
    await async_wait_for(lambda: len(runs) == 1 and clock.sleepers == 1)
    clock.advance(timedelta(seconds=5))
    await async_wait_for(lambda: len(runs) == 2 and clock.sleepers == 1)
    clock.advance(timedelta(seconds=10))
    await async_wait_for(lambda: len(runs) == 3 and clock.sleepers == 1)
    clock.advance(timedelta(seconds=299))
    await asyncio.sleep(0)
    runs_before_period = len(runs)
    clock.advance(timedelta(seconds=1))
    await async_wait_for(lambda: len(runs) == 4)
    stop.set()
    await asyncio.wait_for(task, 1)

    assert runs_before_period == 3
    start = utc(2024, 3, 12, 12)
    assert runs[1] == start + timedelta(seconds=5)
    assert runs[2] == start + timedelta(seconds=15)
    assert runs[3] == start + timedelta(seconds=315)

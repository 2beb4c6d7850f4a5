"""The clock port of the analytics workers, a real one, a manual one, and the periodic-job loop.

Workers never read the time themselves: they ask a ``Clock`` (``now``) and sleep through it
(``wait_until``), so a test can put the scheduler at 03:59:59 New York and step it to the exact
instant of a phase change. ``ManualClock`` is that test clock: time moves only when ``set`` or
``advance`` is called, and every sleeper re-checks its deadline then.

``run_periodic`` is the one loop the periodic jobs share: reschedule first, then work (docs/architecture.md
§7); a transient failure is logged, counted and retried with ``retry.Backoff``; a
``wake`` event runs the job at once (session start). ``run_on_change`` is the loop of a job that
runs only when told something changed (its ``wake``), at most once per gap (docs/scaling.md).
``run_per_account`` runs one such loop per account under ``retry.supervise``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import psycopg

from coldharbour.errors import ChmgrError
from coldharbour.retry import Backoff, Sleep, supervise, until_stopped, wait_any

log = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 1.0  # a failed job retries sooner than its interval (cap: the interval)
# Broker or database unavailable (psycopg_pool's PoolTimeout is an OperationalError): retried.
TRANSIENT: Final = (ChmgrError, psycopg.OperationalError)


class Clock(Protocol):
    """Where workers get the time and how they sleep (injectable: ``ManualClock`` in tests)."""

    def now(self) -> datetime:
        """Return the current aware UTC instant."""
        ...

    async def wait_until(self, instant: datetime, *events: asyncio.Event) -> None:
        """Return once ``instant`` is reached or any of ``events`` is set."""
        ...


class SystemClock:
    """The wall clock (UTC); sleeps re-check the deadline, so an early timer wake-up is harmless."""

    def now(self) -> datetime:
        """Return the current UTC instant."""
        return datetime.now(UTC)

    async def wait_until(self, instant: datetime, *events: asyncio.Event) -> None:
        """Sleep until ``instant`` or until one of ``events`` is set."""
        while not any(event.is_set() for event in events):
            remaining = (instant - self.now()).total_seconds()
            if remaining <= 0:
                return
            await wait_any(remaining, *events)


class ManualClock:
    """A clock that moves only when told to (tests); sleepers wake when it passes their deadline."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"start: expected an aware datetime, found naive {start}")
        self._now = start.astimezone(UTC)
        self._changed = asyncio.Event()
        self.sleepers = 0

    def now(self) -> datetime:
        """Return the manual time."""
        return self._now

    def set(self, instant: datetime) -> None:
        """Move the clock to ``instant`` (never backwards) and wake every sleeper."""
        if instant < self._now:
            raise ValueError(f"instant: the clock does not go back ({instant} < {self._now})")
        self._now = instant.astimezone(UTC)
        self._changed.set()
        self._changed = asyncio.Event()

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self.set(self._now + delta)

    async def wait_until(self, instant: datetime, *events: asyncio.Event) -> None:
        """Return once the manual time reaches ``instant`` or one of ``events`` is set."""
        self.sleepers += 1
        try:
            while self._now < instant and not any(event.is_set() for event in events):
                await wait_any(None, self._changed, *events)
        finally:
            self.sleepers -= 1


Job = Callable[[], Awaitable[object]]


async def run_periodic(
    name: str,
    interval_s: float,
    job: Job,
    *,
    clock: Clock,
    stop: asyncio.Event,
    counters: Counter[str],
    wake: asyncio.Event | None = None,
    recheck_s: float | None = None,
) -> None:
    """Run ``job`` now and then every ``interval_s`` until ``stop``; ``wake`` runs it at once.

    The next run is scheduled before the job starts, so a slow job does not drift the period.
    With ``recheck_s``, a run that returned True (it published something it must read back) runs
    again sooner: ``recheck_s`` later, doubling (with jitter) while runs keep returning True,
    never later than the period.
    A transient error (``ChmgrError``, a lost DB connection) is logged at WARNING, counted
    (``<name>_failures``) and retried after a ``Backoff`` delay capped at ``interval_s``. Any
    other error is counted and raised: the task's supervisor (``run_per_account``) logs it and
    restarts the loop, which runs the job again at once.
    """
    events = (stop,) if wake is None else (stop, wake)
    interval = timedelta(seconds=interval_s)
    backoff = Backoff(min(BACKOFF_BASE_S, interval_s), interval_s)
    rechecks = None if recheck_s is None else Backoff(min(recheck_s, interval_s), interval_s)
    while not stop.is_set():
        if wake is not None:
            wake.clear()
        due = clock.now() + interval
        run = asyncio.ensure_future(job())
        try:
            if not await until_stopped(run, stop):
                return
        except TRANSIENT as e:
            counters[f"{name}_failures"] += 1
            delay_s = backoff.next_delay()
            log.warning("job failed job=%s error=%s retry_in_s=%.1f", name, e, delay_s)
            due = min(due, clock.now() + timedelta(seconds=delay_s))
        except Exception:
            counters[f"{name}_failures"] += 1
            raise  # unexpected: the supervisor logs the traceback and restarts the loop
        else:
            counters[f"{name}_runs"] += 1
            backoff.reset()
            if rechecks is not None and run.result() is True:
                due = min(due, clock.now() + timedelta(seconds=rechecks.next_delay()))
            elif rechecks is not None:
                rechecks.reset()
        await clock.wait_until(due, *events)


ChangeJob = Callable[[], Awaitable[bool]]  # True: it published what must be read back (check again later)
_IDLE_WAIT = timedelta(days=1)  # how long one wait for a change sleeps before it looks again


async def run_on_change(
    name: str,
    job: ChangeJob,
    *,
    clock: Clock,
    stop: asyncio.Event,
    counters: Counter[str],
    wake: asyncio.Event,
    min_gap_s: float,
    recheck_s: float,
) -> None:
    """Run ``job`` now, then each time ``wake`` is set, at most once per ``min_gap_s``, until ``stop``.

    Debounced: the changes that arrive while a run or its gap lasts are taken by one run at the
    gap's end. No timer runs an idle job, except one: a run that returned True (it published a
    document that must be read back) runs again ``recheck_s`` later even without a change. A
    transient error (``TRANSIENT``) is logged, counted (``<name>_failures``) and retried after a
    ``Backoff`` delay; any other error is counted and raised (the supervisor restarts the loop).
    """
    backoff = Backoff(min(BACKOFF_BASE_S, min_gap_s), max(min_gap_s, recheck_s))
    while not stop.is_set():
        wake.clear()
        started = clock.now()
        run = asyncio.ensure_future(job())
        try:
            if not await until_stopped(run, stop):
                return
        except TRANSIENT as e:
            counters[f"{name}_failures"] += 1
            delay_s = backoff.next_delay()
            log.warning("job failed job=%s error=%s retry_in_s=%.1f", name, e, delay_s)
            await clock.wait_until(clock.now() + timedelta(seconds=delay_s), stop)
            continue
        except Exception:
            counters[f"{name}_failures"] += 1
            raise
        counters[f"{name}_runs"] += 1
        backoff.reset()
        recheck = clock.now() + timedelta(seconds=recheck_s) if run.result() else None
        while not (stop.is_set() or wake.is_set() or (recheck is not None and clock.now() >= recheck)):
            await clock.wait_until(recheck or clock.now() + _IDLE_WAIT, stop, wake)
        await clock.wait_until(started + timedelta(seconds=min_gap_s), stop)


def clock_sleep(clock: Clock) -> Sleep:
    """Return a ``sleep_or_stop`` that sleeps through ``clock`` (a ``ManualClock`` in tests)."""

    async def sleep(stop: asyncio.Event, seconds: float) -> bool:
        await clock.wait_until(clock.now() + timedelta(seconds=seconds), stop)
        return stop.is_set()

    return sleep


async def run_per_account(
    name: str,
    interval_s: float,
    jobs: Mapping[str, Job],
    *,
    clock: Clock,
    stop: asyncio.Event,
    counters: Counter[str],
    wakes: Mapping[str, asyncio.Event] | None = None,
    recheck_s: float | None = None,
) -> None:
    """Run each account's job with ``run_periodic`` as its own supervised task until ``stop``.

    ``jobs`` maps account slug to job; ``wakes`` (by slug) runs a job at once. A loop that
    crashes is restarted by ``coldharbour.retry.supervise`` (backoff through ``clock``); when it
    keeps crashing the error propagates and the worker exits.
    """

    def periodic(slug: str, job: Job) -> Callable[[], Awaitable[None]]:
        wake = None if wakes is None else wakes[slug]
        return lambda: run_periodic(name, interval_s, job, clock=clock, stop=stop, counters=counters, wake=wake,
                                    recheck_s=recheck_s)  # fmt: skip

    await _supervised(name, {slug: periodic(slug, job) for slug, job in jobs.items()}, clock, stop, counters)


async def run_per_account_on_change(
    name: str,
    jobs: Mapping[str, ChangeJob],
    wakes: Mapping[str, asyncio.Event],
    *,
    min_gap_s: float,
    recheck_s: float,
    clock: Clock,
    stop: asyncio.Event,
    counters: Counter[str],
) -> None:
    """Run each account's job with ``run_on_change`` (woken by ``wakes[slug]``) as its own supervised task."""

    def on_change(slug: str, job: ChangeJob) -> Callable[[], Awaitable[None]]:
        return lambda: run_on_change(name, job, clock=clock, stop=stop, counters=counters, wake=wakes[slug],
                                     min_gap_s=min_gap_s, recheck_s=recheck_s)

    await _supervised(name, {slug: on_change(slug, job) for slug, job in jobs.items()}, clock, stop, counters)


async def _supervised(
    name: str, loops: Mapping[str, Callable[[], Awaitable[None]]], clock: Clock, stop: asyncio.Event,
    counters: Counter[str],
) -> None:
    tasks = [
        asyncio.create_task(
            supervise(
                f"{name}-{slug}", loop, stop, counters,
                sleep=clock_sleep(clock), monotonic=lambda: clock.now().timestamp(),
            ),
            name=f"{name}-{slug}",
        )
        for slug, loop in loops.items()
    ]  # fmt: skip
    await asyncio.gather(*tasks)

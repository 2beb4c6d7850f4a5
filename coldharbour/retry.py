"""Waiting, retrying and supervising: the one backoff policy, stoppable waits, the task supervisor.

Every loop that waits, retries or reconnects is written with these; none sleeps on its own.

- ``Backoff``: capped exponential backoff with equal jitter. Attempt ``n`` (from 1) waits a
  random time in ``[c/2, c]`` with ``c = min(cap, base·2^(n-1))`` — the shape alpaca-py 0.44
  uses for its stream (docs/broker.md §4), so a fleet of restarted clients spreads out instead of
  hammering the broker or the database in lockstep. ``next_delay()`` counts an attempt,
  ``reset()`` starts again after a success (like psycopg_pool's ``AttemptWithBackoff``).
  Constants follow one scheme: ``BACKOFF_BASE_S`` and ``BACKOFF_CAP_S`` in a module with one
  policy, ``<WHAT>_BACKOFF_BASE_S``/``<WHAT>_BACKOFF_CAP_S`` beside others.
- ``wait_any(timeout_s, *events)``: wait until one of ``events`` is set or ``timeout_s`` passed;
  True when an event is set. ``sleep_or_stop(stop, seconds)`` is its one-event form, and
  ``until_stopped(work, stop, grace_s=…)`` awaits a piece of work unless ``stop`` comes first
  (then gives it ``grace_s`` to end on its own); ``finish_or_cancel(task, grace_s)`` gives a
  task asked to stop that long, then cancels it.
- ``retry(attempt, stop=…, backoff=…, retry_if=…)``: await ``attempt()`` until it succeeds; a
  failure ``retry_if`` accepts waits the next backoff delay, any other propagates at once; a
  ``stop`` during a wait raises ``RetryStopped`` (carrying the last failure).
- ``keep_connected(session, stop, backoff)``: run a connection's ``session()`` again and again
  until ``stop``, backing off between sessions that delivered nothing (the reconnect loops).
- ``poll_until(ready, timeout_s)``: for synchronous code with only a condition to wait on
  (supervisord's socket, a pid that is not our child): check every ``interval_s`` until true
  or the deadline.
- ``supervise(name, run, stop, counters)``: the task boundary. An unexpected error in one
  account's task is logged with its traceback, counted (``task_restarts``), and the task
  restarts after a backoff delay; after ``MAX_CONSECUTIVE_CRASHES`` crashes in a row the error
  propagates and the process exits (supervisord restarts it). A run that lasted at least
  ``healthy_after_s`` before crashing starts the count (and the backoff) again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)

_RANDOM: Final = random.Random()  # noqa: S311 - jitter, not cryptography

SUPERVISE_BACKOFF_BASE_S: Final = 1.0
SUPERVISE_BACKOFF_CAP_S: Final = 60.0
MAX_CONSECUTIVE_CRASHES: Final = 5

T = TypeVar("T")
Sleep = Callable[[asyncio.Event, float], Awaitable[bool]]


class Backoff:
    """Capped exponential backoff with equal jitter (see the module docstring)."""

    def __init__(self, base_s: float, cap_s: float, *, attempts: int = 0, rng: random.Random = _RANDOM) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff: expected 0 < base_s <= cap_s, found base_s={base_s} cap_s={cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempts = attempts
        self._rng = rng

    def next_delay(self) -> float:
        """Count one more failed attempt and return the seconds to wait before the next one."""
        self.attempts += 1
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.attempts - 1, 30))
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        """Start again from the first delay (after a success)."""
        self.attempts = 0


async def wait_any(timeout_s: float | None, *events: asyncio.Event) -> bool:
    """Wait until one of ``events`` is set or ``timeout_s`` passed; return True when one is set.

    ``timeout_s`` None waits for an event only; without events it is a plain sleep.
    """
    if any(event.is_set() for event in events):
        return True
    if not events:
        if timeout_s is not None:
            await asyncio.sleep(max(0.0, timeout_s))
        return False
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=None if timeout_s is None else max(0.0, timeout_s),
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return any(event.is_set() for event in events)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; return True when stopped."""
    return await wait_any(seconds, stop)


def poll_until(
    ready: Callable[[], bool],
    timeout_s: float,
    *,
    interval_s: float = 0.1,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Return True once ``ready()`` is true, False when ``timeout_s`` passed first (checked once more then)."""
    deadline = monotonic() + timeout_s
    while not ready():
        if monotonic() >= deadline:
            return False
        sleep(interval_s)
    return True


async def until_stopped(work: Awaitable[object], stop: asyncio.Event, *, grace_s: float = 0.0) -> bool:
    """Await ``work``, cancelling it if ``stop`` is set first; return True when it completed.

    A SIGTERM must not wait for a broker call's retry chain; the jobs hold no state that a
    cancellation could corrupt (they publish only after computing). ``grace_s``: once ``stop``
    is set, the time ``work`` still has to finish on its own (a connection closing cleanly).
    """
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and grace_s > 0:
            await asyncio.wait((task,), timeout=grace_s)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(stopper, task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()  # re-raise the job's own error
    return True


async def finish_or_cancel(task: asyncio.Future[Any], grace_s: float) -> bool:
    """Give ``task`` ``grace_s`` to finish (after it was asked to stop), then cancel it; True when it finished.

    Its own error is logged here at DEBUG, not raised: the caller is stopping (a socket already closed).
    """
    done, _ = await asyncio.wait((task,), timeout=grace_s)
    if not done:
        task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    if done and isinstance(results[0], Exception):
        log.debug("task ended with an error while stopping: %s", results[0])
    return bool(done)


class RetryStopped(Exception):
    """``stop`` was set while ``retry`` waited to try again; ``last`` is the failure it waited on."""

    def __init__(self, last: Exception) -> None:
        super().__init__(f"stopped while retrying after: {last}")
        self.last = last


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event,
    backoff: Backoff,
    retry_if: Callable[[Exception], bool],
    on_retry: Callable[[Exception, int, float], None] | None = None,
    max_delay_s: float | None = None,
    sleep: Sleep = sleep_or_stop,
) -> T:
    """Return ``await attempt()``, trying again after each failure ``retry_if`` accepts.

    Each such failure is reported to ``on_retry(error, attempt_number, delay_s)`` (log and count
    there), then the next ``backoff`` delay (at most ``max_delay_s``) is waited. Any other
    exception propagates at once; ``stop`` during a wait raises ``RetryStopped``. ``backoff`` is
    not reset on success: its ``attempts`` tells the caller how many failures came first.
    """
    while True:
        try:
            return await attempt()
        except Exception as e:
            if not retry_if(e):
                raise
            delay = backoff.next_delay()
            if max_delay_s is not None:
                delay = min(delay, max_delay_s)
            if on_retry is not None:
                on_retry(e, backoff.attempts, delay)
            if stop.is_set() or await sleep(stop, delay):
                raise RetryStopped(e) from e


class Session(enum.Enum):
    """How one connection session of ``keep_connected`` ended."""

    DELIVERED = "delivered"  # it brought something: the backoff starts again from its first delay
    FAILED = "failed"  # nothing came through: wait the next, longer delay
    AT_ONCE = "at_once"  # our own decision to reconnect (a watchdog): no wait


async def keep_connected(
    session: Callable[[], Awaitable[Session]],
    stop: asyncio.Event,
    backoff: Backoff,
    *,
    on_retry: Callable[[int, float], None] | None = None,
    sleep: Sleep = sleep_or_stop,
) -> None:
    """Run ``session()`` again and again until ``stop``, backing off between failed sessions.

    The attempt counter resets only after a session that delivered (as alpaca-py's stream does),
    so a server that accepts and drops us at once cannot cause a storm of reconnects.
    ``on_retry(attempt_number, delay_s)`` is called before each wait.
    """
    while not stop.is_set():
        outcome = await session()
        if stop.is_set():
            return
        if outcome is Session.AT_ONCE:
            continue
        if outcome is Session.DELIVERED:
            backoff.reset()
        delay = backoff.next_delay()
        if on_retry is not None:
            on_retry(backoff.attempts, delay)
        if await sleep(stop, delay):
            return


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    counters: Counter[str],
    *,
    backoff: Backoff | None = None,
    max_crashes: int = MAX_CONSECUTIVE_CRASHES,
    healthy_after_s: float | None = None,
    sleep: Sleep = sleep_or_stop,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``run()`` until it returns or ``stop``; restart it with backoff after an unexpected error.

    ``healthy_after_s`` defaults to the backoff's cap; ``sleep``/``monotonic`` are the clock
    (a test, or a worker on a ``ManualClock``, passes its own).
    """
    backoff = backoff or Backoff(SUPERVISE_BACKOFF_BASE_S, SUPERVISE_BACKOFF_CAP_S)
    healthy_s = backoff.cap_s if healthy_after_s is None else healthy_after_s
    crashes = 0
    while not stop.is_set():
        started = monotonic()
        try:
            await run()
            return
        except Exception:  # the task boundary: log with traceback, count, restart
            if monotonic() - started >= healthy_s:
                crashes = 0
                backoff.reset()
            crashes += 1
            counters["task_restarts"] += 1
            log.exception("task failed name=%s crashes=%d", name, crashes)
            if crashes >= max_crashes:
                raise  # it keeps failing: let the process exit and supervisord restart it
            if await sleep(stop, backoff.next_delay()):
                return

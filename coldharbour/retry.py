"""Waiting, retrying and supervising: the one backoff policy, stoppable sleep and task supervisor.

- ``Backoff``: capped exponential backoff with equal jitter. Attempt ``n`` (from 1) waits a
  random time in ``[c/2, c]`` with ``c = min(cap, base·2^(n-1))`` — the shape alpaca-py 0.44
  uses for its stream (ALPACA.md §4), so a fleet of restarted clients spreads out instead of
  hammering the broker or the database in lockstep. ``next_delay()`` counts an attempt,
  ``reset()`` starts again after a success (like psycopg_pool's ``AttemptWithBackoff``).
- ``sleep_or_stop(stop, seconds)``: wait ``seconds`` or until ``stop``; True when stopped.
- ``supervise(name, run, stop, counters)``: the task boundary STYLE §2.9 asks for. An unexpected
  error in one account's task is logged with its traceback, counted (``task_restarts``), and
  the task restarts after a backoff delay; after ``MAX_CONSECUTIVE_CRASHES`` crashes in a row
  the error propagates and the process exits (supervisord restarts it). A run that lasted at
  least ``healthy_after_s`` before crashing starts the count (and the backoff) again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Final

log = logging.getLogger(__name__)

_RANDOM: Final = random.Random()  # noqa: S311 - jitter, not cryptography

SUPERVISE_BASE_S: Final = 1.0
SUPERVISE_CAP_S: Final = 60.0
MAX_CONSECUTIVE_CRASHES: Final = 5

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


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; return True when stopped."""
    if not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, seconds))
    return stop.is_set()


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
    backoff = backoff or Backoff(SUPERVISE_BASE_S, SUPERVISE_CAP_S)
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

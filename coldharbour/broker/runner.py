"""Scheduling for the broker-facing workers: per-account loops, resync routing, task restarts.

``SnapshotRunner`` drives one account's ``AccountSync``: the start-up backfill, a full snapshot
at start, every ``SNAPSHOT_SEC`` and on every full ``ResyncRequested`` (rewinding the cursors
first for the ``REWIND_REASONS``), and partial (per-symbol)
snapshots as soon as they are asked for — in their own loop, so a WAC refresh after a fill never
waits behind a backfill or a full snapshot. Requests arriving while one runs are coalesced; after
one, the next waits ``partial_gap_s`` (the key's budget, docs/broker-budget.md).

Each account's loops run under ``coldharbour.retry.supervise`` (the workers start them); broker
failures inside a loop are retried with ``coldharbour.retry.retry`` (capped, jittered backoff),
and every wait is ``coldharbour.retry.wait_any`` on the ``stop`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from coldharbour import runtime
from coldharbour.broker.sync import AccountSync
from coldharbour.errors import BrokerError
from coldharbour.messages import ResyncRequested
from coldharbour.retry import Backoff, RetryStopped, Sleep, retry, sleep_or_stop, wait_any

log = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 60.0
# Resync reasons meaning ``state`` may have missed pages already published (it started, the bus
# lost messages or a publisher restarted, a commit failed): the next full snapshot re-sends the
# history from the backfill floor instead of from the cursors. A stream ``reconnect`` needs no
# rewind: what the stream missed is newer than the cursors.
REWIND_REASONS: Final = frozenset({"start", "gap", "restart", "commit_failed", "locks_retaken"})


async def run_until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Wait for ``stop`` (or a task ending with an error, which is re-raised); then end them all."""
    for task in tasks:
        task.add_done_callback(runtime.log_task_exception)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            error = None if not task.done() or task.cancelled() else task.exception()
            if error is not None:
                raise error
    finally:
        waiter.cancel()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def cancel_quietly(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` (an endless reader) and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def next_slot_s(now_s: float, period_s: float, phase_s: float) -> float:
    """Return the seconds from ``now_s`` to the account's next slot: ``phase_s`` past a multiple of ``period_s``.

    The slot at least half a period away, so two snapshots are 0.5 to 1.5 periods apart and each
    account keeps its own place in the period (docs/scaling.md: snapshots spread over the minute).
    """
    delay = (phase_s - now_s) % period_s
    return delay if delay >= period_s / 2 else delay + period_s


class SnapshotRunner:
    """One account's snapshot schedule (see the module docstring).

    ``phase_s`` (0 ≤ phase < ``snapshot_sec``) places the account's periodic snapshots in the
    period, so that the accounts of one program do not all read the broker at once; None waits a
    whole period after each snapshot.
    """

    def __init__(
        self,
        sync: AccountSync,
        *,
        snapshot_sec: float,
        backfill_days: int,
        phase_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        partial_gap_s: float = 0.0,
        sleep: Sleep = sleep_or_stop,
    ) -> None:
        self.sync = sync
        # After a partial snapshot the next waits this long: under a stream of fills, refreshes
        # take at most half the key's budget and full snapshots keep the other half.
        self._partial_gap_s = partial_gap_s
        self._sleep = sleep
        self.slug = sync.slug
        self._phase_s = phase_s
        self._monotonic = monotonic
        self._snapshot_sec = snapshot_sec
        self._backfill_days = backfill_days
        self._full_wanted = asyncio.Event()
        self._full_reason = "start"
        self._partial_wanted = asyncio.Event()
        self._symbols: set[str] = set()
        self._rewind = False

    def request(self, message: ResyncRequested) -> None:
        """Queue a resync: partial when it names symbols, full otherwise (coalesced)."""
        if message.symbols:
            self._symbols.update(message.symbols)
            self._partial_wanted.set()
        else:
            self._full_reason = message.reason or "resync"
            # Coalesced with the next full snapshot: the rewind happens right before it.
            self._rewind = self._rewind or message.reason in REWIND_REASONS
            self._full_wanted.set()

    async def run_full(self, stop: asyncio.Event) -> None:
        """Backfill, then take full snapshots until ``stop``."""
        await self._retrying(stop, "backfill", lambda: self.sync.backfill(self._backfill_days))
        reason = "start"
        while not stop.is_set():
            if self._rewind:
                self._rewind = False
                self.sync.rewind()
            await self._retrying(stop, "snapshot", functools.partial(self.sync.full, reason))
            reason = await self._next_full(stop)

    async def _next_full(self, stop: asyncio.Event) -> str:
        wait_s = (self._snapshot_sec if self._phase_s is None
                  else next_slot_s(self._monotonic(), self._snapshot_sec, self._phase_s))
        await wait_any(wait_s, self._full_wanted, stop)
        if self._full_wanted.is_set():
            self._full_wanted.clear()
            return self._full_reason
        return "periodic"

    async def run_partial(self, stop: asyncio.Event) -> None:
        """Serve per-symbol position requests as they come, until ``stop``."""
        while not stop.is_set():
            await wait_any(None, self._partial_wanted, stop)
            if stop.is_set():
                return
            try:  # wait for the key's budget first: fills arriving meanwhile join this refresh
                await self.sync.wait_partial_turn()
            except BrokerError:
                return  # stopped while waiting
            self._partial_wanted.clear()
            symbols, self._symbols = sorted(self._symbols), set()
            try:
                await self.sync.partial(symbols)
            except BrokerError as e:
                self.sync.counters["snapshot_failures"] += 1
                log.warning("partial snapshot failed account=%s symbols=%s error=%s", self.slug, symbols, e)
            if self._partial_gap_s > 0 and await self._sleep(stop, self._partial_gap_s):
                return  # fills arriving meanwhile wait for the next refresh, together

    async def _retrying(self, stop: asyncio.Event, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` until it succeeds or ``stop``; broker failures back off (capped, jittered)."""

        def failed(error: Exception, attempt_number: int, delay: float) -> None:
            self.sync.counters["snapshot_failures"] += 1
            log.warning(
                "%s failed account=%s attempt=%d retry_in_s=%.1f error=%s",
                what, self.slug, attempt_number, delay, error,
            )  # fmt: skip

        backoff = Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S)
        if stop.is_set():
            return
        try:
            await retry(step, stop=stop, backoff=backoff, retry_if=lambda e: isinstance(e, BrokerError),
                        on_retry=failed, max_delay_s=self._snapshot_sec)  # fmt: skip
        except RetryStopped:
            return
        if backoff.attempts:
            log.info("%s recovered account=%s after_attempts=%d", what, self.slug, backoff.attempts)

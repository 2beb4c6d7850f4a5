"""Scheduling for the broker-facing workers: per-account loops, resync routing, task restarts.

``SnapshotRunner`` drives one account's ``AccountSync``: the start-up backfill, a full snapshot
at start, every ``SNAPSHOT_SEC`` and on every full ``ResyncRequested`` (rewinding the cursors
first for the ``REWIND_REASONS``), and partial (per-symbol)
snapshots as soon as they are asked for — in their own loop, so a WAC refresh after a fill never
waits behind a backfill or a full snapshot. Requests arriving while one runs are coalesced; after
one, the next waits ``partial_gap_s`` (the key's budget, docs/broker-budget.md).

A **still** account (``AccountSync.still``: its last two full snapshots found nothing held,
nothing open, the same cash and equity and nothing new) whose trade stream ``trades`` says has
been open since before its last full snapshot (``StreamEvidence``, from ``trades``' heartbeat)
and has sent nothing for it since, skips its periodic slot: its full snapshot runs every
``IDLE_EVERY``-th slot, in the slots of its turn (``still_reads``: accounts take turns, so their
reads spread over ``IDLE_EVERY`` periods). Any order update, fill refresh, resync request, a stream not known open
since then, or a snapshot that found something brings back the next slot (docs/scaling.md).

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
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from coldharbour import runtime
from coldharbour.broker.sync import AccountSync
from coldharbour.domain.types import Order
from coldharbour.errors import BrokerError
from coldharbour.health import NEED_STREAM
from coldharbour.messages import Heartbeat, ResyncRequested
from coldharbour.retry import Backoff, RetryStopped, Sleep, retry, sleep_or_stop, wait_any

log = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 60.0
# Resync reasons meaning ``state`` may have missed pages already published (it started, the bus
# lost messages or a publisher restarted, a commit failed): the next full snapshot re-sends the
# history from the backfill floor instead of from the cursors. A stream ``reconnect`` needs no
# rewind: what the stream missed is newer than the cursors.
REWIND_REASONS: Final = frozenset({"start", "gap", "restart", "commit_failed", "locks_retaken"})
# A still account's full snapshot runs every IDLE_EVERY-th slot (docs/scaling.md "snapshot").
IDLE_EVERY: Final = 5
# trades beats every second: a word of it older than this says nothing about a stream now.
STREAM_WORD_FRESH_S: Final = 5.0


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


def still_reads(slot: int | None, idle_turn: int, skipped: int) -> bool:
    """Return True when a still account takes its full snapshot in this slot.

    Its turn: slots ``k`` with ``(k + idle_turn) % IDLE_EVERY == 0`` (``slot`` None: no slot
    numbers, only the count), and never more than ``IDLE_EVERY - 1`` slots skipped in a row.
    Accounts numbered one after another take their turns in different periods, so a thousand
    that became still together read about a fifth each minute, not all in the same one.
    """
    return skipped >= IDLE_EVERY - 1 or (slot is not None and (slot + idle_turn) % IDLE_EVERY == 0)


class StreamEvidence:
    """What ``trades`` last said of each account's trade stream: open since when (UTC ns).

    Fed with ``trades``' heartbeats (its ``stream`` conditions; ``since`` is when one last
    changed, so a reconnect moves it). A stream is known open only from a heartbeat at most
    ``STREAM_WORD_FRESH_S`` old that says so: no word, an old word or a failed condition is
    not known open (absence is not evidence).
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._heard_at: float | None = None
        self._open_since: dict[str, int] = {}

    def heard(self, beat: Heartbeat) -> None:
        """Take ``trades``' latest heartbeat."""
        self._heard_at = self._monotonic()
        self._open_since = {c.account: c.since for c in beat.conditions if c.need == NEED_STREAM and c.ok}

    def open_since(self, slug: str) -> int | None:
        """Return since when ``slug``'s stream is known open, or None when it is not known open."""
        if self._heard_at is None or self._monotonic() - self._heard_at > STREAM_WORD_FRESH_S:
            return None
        return self._open_since.get(slug)


class SnapshotRunner:
    """One account's snapshot schedule (see the module docstring).

    ``phase_s`` (0 ≤ phase < ``snapshot_sec``) places the account's periodic snapshots in the
    period, so that the accounts of one program do not all read the broker at once; None waits a
    whole period after each snapshot. With ``streams`` a still account skips slots (the module
    docstring); without, every slot runs.
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
        streams: StreamEvidence | None = None,
        idle_turn: int = 0,
    ) -> None:
        self.sync = sync
        self._streams = streams
        # With ``phase_s``, a still account's full snapshot falls in the slots k with
        # (k + idle_turn) % IDLE_EVERY == 0: accounts with different turns take different minutes,
        # so a thousand accounts that became still together do not all read in the same minute.
        self._idle_turn = idle_turn % IDLE_EVERY
        self._heard = False  # an order update, a fill refresh or a resync since the last full snapshot began
        self._skipped = 0  # slots skipped in a row
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
        self._heard = True
        if message.symbols:
            self._symbols.update(message.symbols)
            self._partial_wanted.set()
        else:
            self._full_reason = message.reason or "resync"
            # Coalesced with the next full snapshot: the rewind happens right before it.
            self._rewind = self._rewind or message.reason in REWIND_REASONS
            self._full_wanted.set()

    def note_update(self, order: Order, legs: Iterable[Order] = ()) -> None:
        """Take an order update of the trade stream (the account is not still)."""
        self._heard = True
        self.sync.note_update(order, legs)

    async def run_full(self, stop: asyncio.Event) -> None:
        """Backfill, then take full snapshots until ``stop``."""
        await self._retrying(stop, "backfill", lambda: self.sync.backfill(self._backfill_days))
        reason = "start"
        while not stop.is_set():
            if self._rewind:
                self._rewind = False
                self.sync.rewind()
            self._heard = False  # what arrives from now on is news for the next decision
            await self._retrying(stop, "snapshot", functools.partial(self.sync.full, reason))
            reason = await self._next_full(stop)

    async def _next_full(self, stop: asyncio.Event) -> str:
        while True:
            wait_s = (
                self._snapshot_sec
                if self._phase_s is None
                else next_slot_s(self._monotonic(), self._snapshot_sec, self._phase_s)
            )
            await wait_any(wait_s, self._full_wanted, stop)
            if self._full_wanted.is_set():
                self._full_wanted.clear()
                self._skipped = 0
                return self._full_reason
            if stop.is_set() or not self._is_still():
                self._skipped = 0
                return "periodic"
            self._skipped += 1
            self.sync.counters["snapshots_idle_skipped"] += 1

    def _is_still(self) -> bool:
        """Return True when this slot may be skipped (the module docstring)."""
        if self._streams is None or self._heard or not self.sync.still:
            return False
        slot = None if self._phase_s is None else round((self._monotonic() - self._phase_s) / self._snapshot_sec)
        if still_reads(slot, self._idle_turn, self._skipped):
            return False
        since, started = self._streams.open_since(self.slug), self.sync.full_started_ns
        return since is not None and started is not None and since <= started

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

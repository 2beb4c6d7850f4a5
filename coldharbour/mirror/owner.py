"""The state owner: a drained batch of events is planned, committed, then swapped in.

``StateOwner.apply(events, now)`` is the whole commit protocol of ``state`` (docs/architecture.md §3), in
one method: it asks the mirror for the plan of the events up to the next barrier
(``Mirror.stage``), commits the plan's changes through the ``Store``, and only when the commit
succeeded swaps the plan into memory (``Mirror.swap``) and publishes its messages; then it
handles the barrier (a flush or a reconciliation is planned on the memory just swapped in, a
ledger check compares it with the stored history) and goes on with the events after it. A
failed commit drops the rest of the batch and keeps memory as it was: every account is
resynced (rate-limited), which brings back what was dropped.

The owner reaches the database only through the ``Store`` port (``db.store.StateStore`` in
``state``; a dict in ``tests/mirror``) and the bus through ``Publisher``: the mirror package
imports nothing from ``db/``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Final, Protocol

from coldharbour.domain.changes import Change, CommitOutcome, changed_kinds, chunks
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.types import Fill, OpenRow, Order, SliceKey
from coldharbour.errors import ChmgrError
from coldharbour.messages import AccountChanged, Msg, ResyncRequested, SnapshotTaken, topic_resync, topic_state
from coldharbour.mirror.core import Event, Mirror
from coldharbour.mirror.plan import Flush, LedgerCheck, Plan, Reconcile

log = logging.getLogger(__name__)

RESYNC_MIN_INTERVAL_S: Final = 10.0  # per account and reason: a failing commit never turns into a snapshot storm
# An account nothing was committed to since its last clean ledger check is checked only every
# this many requests (docs/scaling.md): memory and the stored history did not move, and a
# database that lost acknowledged commits is still found within the hour at CLOSED_SYNC_SEC 60.
LEDGER_CHECK_IDLE_EVERY: Final = 30


History = tuple[list[Order], list[Fill], list[CorporateAction]]  # one account's stored history
# One account as stored: orders, fills, busted fill keys, open rows, closed slice keys, corporate actions.
Stored = tuple[list[Order], list[Fill], set[str], dict[str, OpenRow], set[SliceKey], list[CorporateAction]]


class Store(Protocol):
    """The database side of the owner."""

    async def commit(self, changes: Sequence[Change]) -> CommitOutcome:
        """Commit ``changes`` in one transaction (an empty sequence commits trivially)."""

    async def load_history(self, slug: str) -> History | None:
        """Return ``slug``'s stored history, None when the database cannot be read now."""

    async def load_marks(self) -> dict[str, tuple[Decimal, int]]:
        """Return the stored last price and its time (ns) per symbol."""

    async def load_account(self, slug: str) -> Stored:
        """Return ``slug``'s state as stored."""


class Publisher(Protocol):
    """The bus side of the owner."""

    def publish(self, topic: str, message: Msg) -> object:
        """Publish ``message`` on ``topic``."""


class Resyncs:
    """Resync requests: at most one per account and reason per ``RESYNC_MIN_INTERVAL_S``.

    Suppressed requests are counted. A ``fill`` resync (the broker WAC of the symbols just
    filled) is not limited: one goes out per committed batch of stream fills.
    """

    def __init__(self, publisher: Publisher, counters: Counter[str],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._publisher = publisher
        self._counters = counters
        self._monotonic = monotonic
        self._last: dict[str, float] = {}

    def request(self, slug: str, reason: str, symbols: tuple[str, ...] = ()) -> None:
        """Publish a resync for ``slug`` unless one went out less than the interval ago."""
        now, key = self._monotonic(), f"{slug}:{reason}"
        if reason != "fill":
            if now - self._last.get(key, -RESYNC_MIN_INTERVAL_S) < RESYNC_MIN_INTERVAL_S:
                self._counters["resyncs_suppressed"] += 1
                return
            self._last[key] = now
        self._counters["resyncs_requested"] += 1
        self._publisher.publish(topic_resync(slug), ResyncRequested(account=slug, reason=reason, symbols=symbols))


class StateOwner:
    """The mirror, the store it commits to and the bus it announces on; mutated only by ``apply``/``start``."""

    def __init__(self, mirror: Mirror, store: Store, publisher: Publisher, counters: Counter[str]) -> None:
        self.mirror = mirror
        self.store = store
        self.publisher = publisher
        self.counters = counters
        self.resyncs = Resyncs(publisher, counters)
        self._suspect: set[str] = set()  # accounts whose last ledger check differed (waiting for a second)
        self._idle_checks: dict[str, int] = {}  # clean accounts nothing was committed to since: checks skipped
        # Told the account of each broker snapshot once what it staged is committed (state's
        # heartbeat: "first snapshot stored", coldharbour.health).
        self.snapshot_stored: Callable[[str], None] | None = None

    async def load(self) -> None:
        """Take the stored state of every account and the last prices (start-up; reads only)."""
        self.mirror.load_marks(await self.store.load_marks())
        for slug, account in self.mirror.accounts.items():
            orders, fills, busted, rows, closed_keys, actions = await self.store.load_account(slug)
            account.load(orders, fills, rows, closed_keys, actions=actions, busted=busted)
            log.info("loaded account=%s orders=%d fills=%d lots=%d", slug, len(orders), len(fills),
                     len(account.ledger.lots))
        self.mirror.restore_marks()

    def resync_all(self, reason: str) -> None:
        """Ask for a full snapshot of every account now (not rate-limited: at start, locks taken again)."""
        self._idle_checks.clear()  # locks taken again after a lost session (a failover): check every account again
        for slug in self.mirror.accounts:
            self.publisher.publish(topic_resync(slug), ResyncRequested(account=slug, reason=reason))

    async def start(self, now: int, *, chunk_rows: int) -> bool:
        """Converge the stored rows and slices on the loaded ledger; return True when all committed.

        The convergence is committed in chunks of about ``chunk_rows`` rows (a plan of 100k rows
        would hold its thousands of NOTIFYs at once). Every write is idempotent, so a failure
        part-way is converged again by the next start or resync; memory swaps only if all committed.
        """
        plan = self.mirror.start_plan(now)
        for group in chunks(plan.changes, chunk_rows):
            if not await self._commit_changes(group):
                return False
        self.take(plan)
        return True

    async def apply(self, events: Sequence[Event], now: int) -> None:
        """Plan, commit and swap in ``events`` in order; stop at the first commit that fails.

        Raises ``ChmgrError`` when a ledger check finds memory differing from the stored history
        (a broken invariant: ``state`` exits and its restart reloads).
        """
        done = 0
        try:
            while done < len(events):
                step = self.mirror.stage(events, done, now)
                consumed = events[done : done + step.consumed]
                done += step.consumed
                if step.plan is not None and not await self._commit(step.plan):
                    return  # the rest of the batch is dropped; the resync brings it back
                match step.barrier:
                    case LedgerCheck(slug=slug):
                        await self._check_ledger(slug)
                    case Flush() | Reconcile() as barrier:
                        if not await self._commit(self.mirror.barrier_plan(barrier, now)):
                            return
                self._tell_snapshots(consumed)
        finally:
            self.mirror.tick_lag.observe(time.time_ns())

    def _tell_snapshots(self, events: Sequence[Event]) -> None:
        if self.snapshot_stored is None:
            return
        for event in events:
            if isinstance(event, tuple) and isinstance(event[1], SnapshotTaken):
                self.snapshot_stored(event[1].account)

    async def _commit(self, plan: Plan) -> bool:
        if not await self._commit_changes(plan.changes):
            return False
        self.take(plan)
        return True

    async def _commit_changes(self, changes: Sequence[Change]) -> bool:
        outcome = await self.store.commit(changes) if changes else CommitOutcome.COMMITTED
        if outcome is CommitOutcome.FAILED:
            self._idle_checks.clear()  # the database may have lost commits (a failover): check every account again
            for slug, account in self.mirror.accounts.items():
                account.forget_completeness()  # what was staged may not be stored: complete after the rewind
                self.resyncs.request(slug, "commit_failed")
        if outcome is CommitOutcome.COMMITTED:  # readers of the rows recompute on this (metrics)
            for slug, kinds in changed_kinds(changes).items():
                self._idle_checks.pop(slug, None)
                self.publisher.publish(topic_state(slug), AccountChanged(account=slug, kinds=kinds))
        return outcome is CommitOutcome.COMMITTED

    def take(self, plan: Plan) -> None:
        """Swap ``plan`` into memory and publish its messages (only after its changes committed)."""
        self.mirror.swap(plan)
        for topic, message in plan.messages:
            if isinstance(message, ResyncRequested):
                self.resyncs.request(message.account, message.reason, message.symbols)
            else:
                self.publisher.publish(topic, message)

    async def _check_ledger(self, slug: str) -> None:
        """Compare memory with the stored history; exit when a difference has no innocent cause.

        Innocent causes wait instead (absence is not evidence): a corporate action whose legs
        ``cashflows`` stored before ``snapshot``'s page booked it is left out of the rebuild until
        booked; any other difference is confirmed only by the next check, after a rewound resync
        had the chance to bring what was in flight.
        """
        skipped = self._idle_checks.get(slug)
        if skipped is not None and skipped + 1 < LEDGER_CHECK_IDLE_EVERY:
            self._idle_checks[slug] = skipped + 1
            self.counters["ledger_checks"] += 1  # answered: clean as of its last check, nothing committed since
            self.counters["ledger_checks_idle_skipped"] += 1
            return
        self._idle_checks.pop(slug, None)
        history = await self.store.load_history(slug)
        if history is None:
            return
        orders, fills, actions = history
        booked = self.mirror.accounts[slug].actions
        pending = any(action.id not in booked for action in actions)
        if pending:
            self.counters["ledger_check_actions_pending"] += 1
            actions = [action for action in actions if action.id in booked]
        found = await asyncio.to_thread(self.mirror.check_ledger, slug, orders, fills, actions)
        if not found:
            self._suspect.discard(slug)
            if not pending:  # clean: the next checks wait for a commit to this account
                self._idle_checks[slug] = 0
            return
        if slug not in self._suspect:
            self._suspect.add(slug)
            self.counters["ledger_check_suspect"] += 1
            log.warning("ledger differs from the stored history account=%s: checking again after a resync", slug)
            self.resyncs.request(slug, "restart")  # a rewind: what was in flight arrives before the next check
            return
        # Still different: memory is not what the database holds (a commit acknowledged, then lost
        # in a crash or a failover): a broken invariant. Exit; the restart reloads and resyncs.
        raise ChmgrError(f"ledger differs from the stored history account={slug} differences={len(found)}")

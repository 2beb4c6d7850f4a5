"""The database side of ``state``'s owner (``mirror.owner.Store``): guarded commits and stored history.

``StateStore.commit`` sends a plan's changes through the one ``Writer`` only while this stack
holds its account locks (``db.ownership``), without the shared-table changes unless it writes
the shared tables; a value PostgreSQL refuses is quarantined and the rest commits
(``Writer.commit_isolating``). A lost connection is reported as ``FAILED`` after the writer
reconnected (with backoff, until ``stop``): memory stays as it was and the owner resyncs.
The reads (``load_marks``, ``load_account`` at start-up, ``load_history`` for a ledger check)
each use a read-only connection of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from decimal import Decimal

from coldharbour.config import Settings
from coldharbour.db import loads
from coldharbour.db.connect import connect_read_only
from coldharbour.db.names import account_names, shared_names
from coldharbour.db.ownership import Ownership
from coldharbour.db.writer import Writer
from coldharbour.domain.changes import Change, CommitOutcome
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.types import Fill, OpenRow, Order, SliceKey
from coldharbour.errors import DatabaseError
from coldharbour.health import NEED_DATABASE
from coldharbour.runtime import Conditions

log = logging.getLogger(__name__)


class StateStore:
    """Commits through ``writer`` guarded by ``ownership``; history reads on their own connection."""

    def __init__(
        self,
        settings: Settings,
        writer: Writer,
        ownership: Ownership,
        stop: asyncio.Event,
        conditions: Conditions | None = None,
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._ownership = ownership
        self._stop = stop
        self._conditions = conditions  # state's heartbeat: "database" (coldharbour.health)

    async def commit(self, changes: Sequence[Change]) -> CommitOutcome:
        """Commit ``changes`` (those this stack may write) in one transaction."""
        writable = self._ownership.writable(changes)
        if not writable:
            return CommitOutcome.COMMITTED
        if not self._ownership.held:  # the lock session ended: another stack may own our accounts now
            self._ownership.counters["commits_withheld"] += 1
            return CommitOutcome.WITHHELD  # the resync after the locks are re-taken brings it back
        try:
            await self._writer.commit_isolating(writable, time.time_ns())
            if self._conditions is not None:
                self._conditions.ok(NEED_DATABASE)
            return CommitOutcome.COMMITTED
        except DatabaseError as e:
            log.warning("commit failed, memory kept, reconnecting: %s", e)
            if self._conditions is not None:  # said before the reconnect, which waits until it is back
                self._conditions.failed(NEED_DATABASE, "database unreachable: state's commit failed, reconnecting")
        try:
            if not self._stop.is_set():
                await self._writer.connect(self._stop)
        except DatabaseError:
            return CommitOutcome.WITHHELD  # stopped while reconnecting
        return CommitOutcome.FAILED

    async def load_history(self, slug: str) -> tuple[list[Order], list[Fill], list[CorporateAction]] | None:
        """Return ``slug``'s stored orders, fills and corporate actions; None when unreadable now."""
        names = account_names(self._settings, slug)
        try:
            async with await connect_read_only(self._settings.dsn, "state") as conn:
                orders, fills = await loads.load_history(conn, names)
                return orders, fills, await loads.load_actions(conn, names)
        except DatabaseError as e:
            log.warning("ledger check skipped account=%s: %s", slug, e)
            return None

    async def load_marks(self) -> dict[str, tuple[Decimal, int]]:
        """Return the stored last price and its time (ns) per symbol."""
        async with await connect_read_only(self._settings.dsn, "state") as conn:
            return await loads.load_marks(conn, shared_names(self._settings), now_ns=time.time_ns())

    async def load_account(self, slug: str) -> tuple[list[Order], list[Fill], set[str], dict[str, OpenRow],
                                                     set[SliceKey], list[CorporateAction]]:
        """Return ``slug``'s stored orders, fills, busted fill keys, open rows, slice keys and actions."""
        names = account_names(self._settings, slug)
        async with await connect_read_only(self._settings.dsn, "state") as conn:
            orders, fills, busted = await loads.load_start(conn, names)
            return (orders, fills, busted, await loads.load_open_rows(conn, names),
                    await loads.load_closed_keys(conn, names), await loads.load_actions(conn, names))

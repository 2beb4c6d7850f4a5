"""Ownership of accounts and of the shared tables when several stacks share one database.

Each stack's ``state`` holds a PostgreSQL *session* advisory lock per account it serves, in the
two-int form ``(LOCK_CLASS, key)``: ``LOCK_CLASS`` is a constant for "chmgr account", ``key`` a
stable 31-bit hash of ``ACCOUNT_SCHEMA`` and the account slug (``lock_key``). One more key,
``SHARED``, marks the writer of the shared tables (``market_schedule``, ``latest_prices``,
``price_bars_1min``): the stack holding it writes them, the others drop those changes from their
plans (``Ownership.writable``) and retry the lock every ``CHECK_INTERVAL_S``, so when the holder's
session ends another stack takes over within a few seconds (a ``state`` that starts while other
stacks hold locks waits ``SHARED_GRACE_S`` first, so a dead writer's restart does not take the
shared writes back from the stack that just took them over).

The locks live on a dedicated connection, not the writer's: the writer reconnects after a
failed commit, and a session lock does not survive a reconnect. If the lock connection is lost
(a PostgreSQL restart or failover), the locks are gone: ``held`` turns False, so ``state``
withholds every commit, and ``watch`` reconnects with backoff and takes the same locks again.
If another stack took one of our accounts meanwhile, ``watch`` raises ``AccountOwned``: ``state``
exits with one line. After a re-take ``on_retaken`` runs (``state`` asks for a resync of every
account: what it withheld is read again from the broker). The
``quarantine`` table needs no owner: its rows are inserted (never updated) by the stack that
owns the refusing change's account.

The connection's ``application_name`` is ``chmgr-state@<host>:<pid>``, so ``pg_locks`` joined
with ``pg_stat_activity`` says which process holds what (``owners``; ``chmgr doctor`` prints it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple

import psycopg
from psycopg.rows import TupleRow

from coldharbour.config import Dsn
from coldharbour.db.connect import CONNECT_TIMEOUT_S, describe_error
from coldharbour.domain import changes as c
from coldharbour.errors import ChmgrError, DatabaseError
from coldharbour.retry import Backoff, RetryStopped, retry, sleep_or_stop

log = logging.getLogger(__name__)

LOCK_CLASS: Final = 0x43484D47  # "CHMG": the advisory-lock class id of chmgr ownership locks
SHARED: Final = "*shared*"  # the pseudo-account whose lock marks the shared-table writer
CHECK_INTERVAL_S: Final = 2.0
# A state starting while other stacks hold locks leaves the shared lock to them this long: a
# running stack (retrying every CHECK_INTERVAL_S) takes over from a dead writer before the dead
# writer's own restart could take it back, so shared writes move once, not back and forth.
SHARED_GRACE_S: Final = 3 * CHECK_INTERVAL_S
SHARED_KINDS: Final = (c.MarketSchedule, c.LatestPrices, c.PriceBars)
BACKOFF_BASE_S: Final = 0.2
BACKOFF_CAP_S: Final = 10.0
APPLICATION_NAME_MAX: Final = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names
RELEASE_TIMEOUT_S: Final = 2.0  # unlocking before close; a lost connection just ends the session

_UNLOCK_ALL: Final = "SELECT pg_advisory_unlock_all()"

_OWNERS: Final = """
    SELECT l.objid::bigint, l.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local')
    FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = %s::int4::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY l.objid"""


class AccountOwned(ChmgrError):
    """Another live stack holds an account's lock."""


class LockLost(ChmgrError):
    """The connection holding the ownership locks is gone: our accounts are no longer ours."""


class Owner(NamedTuple):
    """One held ownership lock: its key, the holder's backend pid, application name and address."""

    key: int
    backend_pid: int
    application_name: str
    client: str


def lock_key(account_schema: str, slug: str) -> int:
    """Return the stable 31-bit lock key of ``slug`` in ``account_schema`` (same in every process)."""
    digest = hashlib.blake2b(f"{account_schema}\x00{slug}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def application_name(program: str = "state") -> str:
    """Return ``chmgr-<program>@<host>:<pid>`` (cut to PostgreSQL's limit, the pid kept)."""
    tail = f":{os.getpid()}"
    head = f"chmgr-{program}@{socket.gethostname()}"
    return head[: APPLICATION_NAME_MAX - len(tail)] + tail


def describe_owner(owner: Owner | None) -> str:
    """Return ``pid N on host H`` from the holder's application name (or its backend when foreign)."""
    if owner is None:
        return "owner not visible"
    name = owner.application_name
    if name.startswith("chmgr-") and "@" in name and ":" in name:
        host, _, pid = name.partition("@")[2].rpartition(":")
        return f"pid {pid} on host {host}"
    return f"backend pid {owner.backend_pid}, application {name or '?'} from {owner.client}"


def owners(conn: psycopg.Connection[TupleRow]) -> list[Owner]:
    """Return every ownership lock held in the database (blocking; ``chmgr doctor``)."""
    return [Owner(int(k), int(p), str(a), str(h)) for k, p, a, h in conn.execute(_OWNERS, (LOCK_CLASS,)).fetchall()]


class Ownership:
    """The locks of one ``state``: every served account (or refuse to start) and, when free, the shared one."""

    def __init__(self, dsn: Dsn, account_schema: str, slugs: Iterable[str], counters: Counter[str]) -> None:
        self._dsn = dsn
        self._schema = account_schema
        self._slugs = tuple(slugs)
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self.counters = counters
        self.shared_writer = False
        self.counters["shared_writer"] = 0
        self._shared_not_before = 0.0
        self.held = False  # every account lock is held (False before ``acquire`` and after a loss)
        self.on_retaken: Callable[[], None] | None = None

    async def acquire(self, stop: asyncio.Event | None = None) -> None:
        """Connect and lock every account; raise ``AccountOwned`` naming the first one held elsewhere.

        While PostgreSQL is unreachable (a restart during an outage or a failover) this retries
        with capped exponential backoff and jitter until it connects or ``stop`` is set, so a
        ``state`` restarted during a long outage waits for the database instead of exhausting
        supervisord's start retries. Without ``stop`` it waits until the database answers.
        """

        def waiting(error: Exception, attempt_number: int, wait: float) -> None:
            self.counters["lock_connect_failures"] += 1
            self.counters["db_start_retries"] += 1  # one counter for every wait on the database at start
            log.warning("account locks attempt=%d failed, retrying in %.2fs: %s", attempt_number, wait, error)

        try:
            await retry(
                self._acquire_once, stop=stop or asyncio.Event(), backoff=Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S),
                retry_if=lambda e: isinstance(e, DatabaseError), on_retry=waiting,
            )  # fmt: skip
        except RetryStopped as e:
            raise e.last from None

    async def _acquire_once(self) -> None:
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn.reveal(), autocommit=True, application_name=application_name(),
                connect_timeout=CONNECT_TIMEOUT_S,
            )  # fmt: skip
            for slug in self._slugs:
                if not await self._try(slug):
                    found = {o.key: o for o in await self._owners()}
                    owner = describe_owner(found.get(lock_key(self._schema, slug)))
                    await self.close()
                    raise AccountOwned(f"account {slug} is owned by another stack ({owner})")
            mine = {lock_key(self._schema, slug) for slug in self._slugs}
            others = [o for o in await self._owners() if o.key not in mine]
        except psycopg.Error as e:
            await self.close()
            raise DatabaseError(f"cannot take the account locks: {describe_error(self._dsn, e)}") from None
        if others:
            self._shared_not_before = time.monotonic() + SHARED_GRACE_S
        log.info("accounts owned=%s other_stack_locks=%d", ",".join(self._slugs), len(others))
        self.held = True
        await self.refresh()

    async def refresh(self) -> None:
        """Take the shared lock when free (log and count the takeover); prove the session is alive.

        Raises ``LockLost`` when the lock connection is gone.
        """
        try:
            if self.shared_writer:
                await self._execute("SELECT 1")
            elif time.monotonic() >= self._shared_not_before and await self._try(SHARED):
                self.shared_writer = True
                self.counters["shared_writer"] = 1
                self.counters["shared_takeovers"] += 1
                log.info("shared tables: this stack is now their writer (market_schedule, latest_prices, bars)")
        except (psycopg.Error, DatabaseError) as e:
            self.counters["lock_connection_lost"] += 1
            raise LockLost(f"lock connection lost, the account locks are gone: {e}") from None

    async def watch(self, stop: asyncio.Event, interval_s: float = CHECK_INTERVAL_S) -> None:
        """``refresh`` every ``interval_s`` until ``stop``; re-take the locks after a lost connection.

        Raises ``AccountOwned`` when another stack owns one of our accounts by then.
        """
        while not await sleep_or_stop(stop, interval_s):
            try:
                await self.refresh()
            except LockLost as e:
                await self._retake(stop, e)

    async def _retake(self, stop: asyncio.Event, lost: LockLost) -> None:
        self.held = self.shared_writer = False
        self.counters["shared_writer"] = 0
        log.warning("%s; commits withheld until the locks are taken again", lost)
        await self.close()
        try:
            await self.acquire(stop)  # AccountOwned propagates: another stack has one of ours
        except DatabaseError:
            if stop.is_set():
                return
            raise
        self.counters["locks_retaken"] += 1
        log.info("account locks taken again after a lost connection accounts=%s", ",".join(self._slugs))
        if self.on_retaken is not None:
            self.on_retaken()

    def writable(self, changes: Sequence[c.Change]) -> Sequence[c.Change]:
        """Return ``changes`` without the shared-table ones unless this stack writes the shared tables."""
        if self.shared_writer:
            return changes
        kept = [change for change in changes if not isinstance(change, SHARED_KINDS)]
        self.counters["shared_changes_skipped"] += len(changes) - len(kept)
        return kept

    async def close(self) -> None:
        """Release the locks, then close the lock connection.

        The locks would also end with the session, but PostgreSQL ends a session after the client
        has gone: a ``state`` restarted at once (supervisord, ``chmgr restart``) could find its own
        accounts still locked by the ending backend and exit with ``AccountOwned``. Unlocking first
        frees them before ``close`` returns (bounded: a lost connection only fails or times out).
        """
        if self._conn is not None:
            try:
                if not self._conn.closed:
                    await asyncio.wait_for(self._conn.execute(_UNLOCK_ALL), RELEASE_TIMEOUT_S)
            except (psycopg.Error, TimeoutError):
                log.debug("releasing the account locks failed (they end with the session)", exc_info=True)
            try:
                await self._conn.close()
            except psycopg.Error:
                log.debug("closing the lock connection failed", exc_info=True)
            self._conn = None

    async def _try(self, slug: str) -> bool:
        key = lock_key(self._schema, slug)
        row = await self._execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (LOCK_CLASS, key))
        return bool(row and row[0])

    async def _owners(self) -> list[Owner]:
        if self._conn is None:
            return []
        cur = await self._conn.execute(_OWNERS, (LOCK_CLASS,))
        return [Owner(int(k), int(p), str(a), str(h)) for k, p, a, h in await cur.fetchall()]

    async def _execute(self, query: str, params: tuple[object, ...] = ()) -> TupleRow | None:
        if self._conn is None or self._conn.closed:
            raise DatabaseError("lock connection is closed")
        cur = await self._conn.execute(query, params)
        return await cur.fetchone()

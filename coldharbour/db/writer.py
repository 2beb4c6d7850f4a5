"""The single writer: one connection, one transaction per commit, NOTIFY inside it.

Only ``workers/state.py`` builds a ``Writer`` (``tests/test_architecture.py`` enforces it).
A commit runs its statements, builds the notifications from what the statements returned
(``RETURNING`` tells which rows really changed), sends them with ``pg_notify`` in the same
transaction — PostgreSQL delivers them only at commit, so a UI never sees a row that did not
commit — and commits. A failed commit rolls back entirely and is reported to the caller, whose
in-memory mirror must stay as it was. A lost connection is re-opened with capped exponential
backoff and jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from coldharbour.config import Dsn
from coldharbour.db.connect import connect_writer, describe_error
from coldharbour.db.notify import Notification
from coldharbour.errors import DatabaseError

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S: Final = 0.2
BACKOFF_MAX_S: Final = 10.0
_NOTIFY_MANY: Final = sql.SQL("SELECT count(pg_notify(c, p)) FROM unnest(%s::text[], %s::text[]) AS n(c, p)")

class CopyIn(NamedTuple):
    """Rows to COPY into a temporary table (``like``'s column types) before the step's statement runs.

    The table (``temp``, unique in the session, dropped at commit) holds ``columns``; the
    statement reads it. COPY
    skips building one array parameter per column: 10,000 open-position rows flush in
    about half the time of an ``unnest`` statement (``scripts/bench`` ``flush_10k``).
    """

    temp: str
    like: sql.Composable
    columns: Sequence[str]
    rows: Sequence[Sequence[object]]


class Step(NamedTuple):
    """One statement of a commit.

    ``many`` runs it with ``executemany`` over ``params`` (a sequence of parameter sets).
    ``copy`` first loads rows into a temporary table that the statement reads.
    ``announce`` turns the rows the statement returned into notifications.
    """

    statement: sql.Composed | sql.SQL
    params: Any = None
    many: bool = False
    announce: Callable[[list[TupleRow]], list[Notification]] | None = None
    copy: CopyIn | None = None


class CommitResult(NamedTuple):
    """What a commit did: rows returned per step, and the notifications sent."""

    rows: list[list[TupleRow]]
    notifications: list[Notification]


class Writer:
    """The one write connection of the ``state`` program."""

    def __init__(self, dsn: Dsn, *, counters: Counter[str] | None = None) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self.counters: Counter[str] = counters if counters is not None else Counter()

    async def connect(self, stop: asyncio.Event | None = None) -> None:
        """Open the connection, retrying with capped exponential backoff until it works or ``stop``."""
        delay = BACKOFF_INITIAL_S
        attempt = 0
        while self._conn is None or self._conn.closed:
            attempt += 1
            try:
                self._conn = await connect_writer(self._dsn)
            except DatabaseError as e:
                self.counters["db_connect_failures"] += 1
                wait = delay * (0.5 + random.random())  # noqa: S311 - jitter, not crypto
                log.warning("writer connect attempt=%d failed, retrying in %.2fs: %s", attempt, wait, e)
                if stop is not None:
                    try:
                        await asyncio.wait_for(stop.wait(), wait)
                        raise DatabaseError("stopped while connecting the writer") from None
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if attempt > 1:
                self.counters["db_reconnects"] += 1
                log.info("writer connected after attempt=%d", attempt)

    @property
    def connected(self) -> bool:
        """Return True when the connection is open (it may still turn out broken)."""
        return self._conn is not None and not self._conn.closed

    async def commit(self, steps: Sequence[Step], notifications: Sequence[Notification] = ()) -> CommitResult:
        """Run ``steps`` and send notifications in one transaction; raise ``DatabaseError`` on failure.

        On failure nothing was written and nothing was notified.
        """
        if self._conn is None or self._conn.closed:
            raise DatabaseError("writer is not connected")
        conn = self._conn
        results: list[list[TupleRow]] = []
        notes = list(notifications)
        try:
            if any(step.copy is not None for step in steps):
                await self._commit_sequential(conn, steps, results, notes)
            else:
                await self._commit_pipelined(conn, steps, results, notes)
        except psycopg.OperationalError as e:
            self.counters["commit_failures"] += 1
            if isinstance(e, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
                self.counters["db_timeouts"] += 1  # connect.WRITER_*_TIMEOUT_MS: `chmgr status` degraded
                self.counters["db_degraded"] = 1
            await self._drop()
            raise DatabaseError(f"commit failed, connection lost: {describe_error(self._dsn, e)}") from None
        except psycopg.Error as e:
            self.counters["commit_failures"] += 1
            raise DatabaseError(f"commit failed: {describe_error(self._dsn, e)}") from e
        self.counters["commits"] += 1
        self.counters["notifications"] += len(notes)
        if self.counters.get("db_degraded"):
            self.counters["db_degraded"] = 0
        return CommitResult(results, notes)

    @staticmethod
    async def _commit_sequential(
        conn: psycopg.AsyncConnection[TupleRow], steps: Sequence[Step], results: list[list[TupleRow]],
        notes: list[Notification],
    ) -> None:
        """One statement at a time (COPY cannot run in pipeline mode)."""
        async with conn.transaction(), conn.cursor() as cur:
            for step in steps:
                rows = await Writer._run(cur, step)
                results.append(rows)
                if step.announce is not None:
                    notes.extend(step.announce(rows))
            if notes:
                await cur.execute(_NOTIFY_MANY, ([n.channel for n in notes], [n.payload for n in notes]))

    @staticmethod
    async def _commit_pipelined(
        conn: psycopg.AsyncConnection[TupleRow], steps: Sequence[Step], results: list[list[TupleRow]],
        notes: list[Notification],
    ) -> None:
        """Send every statement in one round trip (pipeline mode), then read what each returned.

        A commit of a fill is several small statements; waiting for each in turn made the
        commit — and so the push — a sum of round trips (measured by ``fill_to_notify``).
        """
        async with conn.pipeline() as pipeline, conn.transaction():
            cursors: list[psycopg.AsyncCursor[TupleRow]] = []
            for step in steps:
                cur = conn.cursor()
                if step.many:
                    await cur.executemany(step.statement, step.params, returning=step.announce is not None)
                else:
                    await cur.execute(step.statement, step.params)
                cursors.append(cur)
            await pipeline.sync()
            for cur, step in zip(cursors, steps, strict=True):
                rows = await Writer._fetch(cur, step)
                results.append(rows)
                if step.announce is not None:
                    notes.extend(step.announce(rows))
            if notes:
                await conn.execute(_NOTIFY_MANY, ([n.channel for n in notes], [n.payload for n in notes]))

    @staticmethod
    async def _fetch(cur: psycopg.AsyncCursor[TupleRow], step: Step) -> list[TupleRow]:
        rows: list[TupleRow] = []
        if step.many:
            if step.announce is not None:
                while True:
                    rows.extend(await cur.fetchall())
                    if not cur.nextset():
                        break
            return rows
        return await cur.fetchall() if cur.description is not None else []

    @staticmethod
    async def _run(cur: psycopg.AsyncCursor[TupleRow], step: Step) -> list[TupleRow]:
        if step.copy is not None:
            await Writer._copy_in(cur, step.copy)
        if step.many:
            await cur.executemany(step.statement, step.params, returning=step.announce is not None)
            rows: list[TupleRow] = []
            if step.announce is not None:
                while True:
                    rows.extend(await cur.fetchall())
                    if not cur.nextset():
                        break
            return rows
        await cur.execute(step.statement, step.params)
        return await cur.fetchall() if cur.description is not None else []

    @staticmethod
    async def _copy_in(cur: psycopg.AsyncCursor[TupleRow], copy_in: CopyIn) -> None:
        temp = sql.Identifier(copy_in.temp)
        columns = sql.SQL(", ").join(map(sql.Identifier, copy_in.columns))
        create = sql.SQL("CREATE TEMP TABLE {t} ON COMMIT DROP AS SELECT {c} FROM {like} WITH NO DATA")
        await cur.execute(create.format(t=temp, c=columns, like=copy_in.like))  # the types, no constraints
        async with cur.copy(sql.SQL("COPY {t} ({c}) FROM STDIN").format(t=temp, c=columns)) as copy:
            for row in copy_in.rows:
                await copy.write_row(row)

    async def _drop(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            except psycopg.Error:
                log.debug("closing a broken writer connection failed", exc_info=True)
        self._conn = None

    async def close(self) -> None:
        """Close the connection."""
        await self._drop()

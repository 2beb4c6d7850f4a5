"""Connections: the read-only factories every program uses, and the one writer for ``state``.

Every connection but the writer is opened with ``default_transaction_read_only=on`` and, when
``CHMGR_READ_DSN`` is set (``reader_dsn``), as the read-only role that has no write privilege
at all (``db.roles``): the single-writer rule is enforced by PostgreSQL itself (a write fails
with ``InsufficientPrivilege``, or ``ReadOnlySqlTransaction`` without the role). The writer has
a ``statement_timeout`` and a ``lock_timeout`` (``WRITER_STATEMENT_TIMEOUT_MS``,
``WRITER_LOCK_TIMEOUT_MS``): a held table lock fails a commit (counted, shown as degraded by
`chmgr status`) instead of stalling every write unseen. Errors leave this module as
``DatabaseError`` with the DSN redacted; no part of a password appears in a message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from coldharbour.config import Dsn, Settings, dsn_secrets, redact_dsn
from coldharbour.errors import DatabaseError, SchemaError
from coldharbour.retry import Backoff, RetryStopped, retry

T = TypeVar("T")

log = logging.getLogger(__name__)

READ_ONLY_OPTIONS: Final = "-c default_transaction_read_only=on"
CONNECT_TIMEOUT_S: Final = 5
WRITER_STATEMENT_TIMEOUT_MS: Final = 30_000  # the largest commit (a year's backfill) takes ~2 s
WRITER_LOCK_TIMEOUT_MS: Final = 10_000  # someone holding a table lock: fail, count, retry
# synchronous_commit=on whatever the server's default: a commit acknowledged is a commit kept
# (``state`` swaps memory on the acknowledgement; with it off, a crash of PostgreSQL loses the last
# acknowledged commits and memory runs ahead of the tables). Generic plans: planning the joined
# statement of a commit (db.upserts) costs more than running it.
WRITER_OPTIONS: Final = (f"-c statement_timeout={WRITER_STATEMENT_TIMEOUT_MS} -c lock_timeout={WRITER_LOCK_TIMEOUT_MS} "
                         "-c synchronous_commit=on -c plan_cache_mode=force_generic_plan")
_warned_no_reader = False
BACKOFF_BASE_S: Final = 0.5  # waiting for the database at start (retry_database)
BACKOFF_CAP_S: Final = 15.0


def reader_dsn(settings: Settings) -> Dsn:
    """Return the DSN read-only programs use; warn once per process when it is the writer's."""
    global _warned_no_reader
    if settings.read_dsn is None and not _warned_no_reader:
        _warned_no_reader = True
        log.warning(
            "CHMGR_READ_DSN is not set: this program logs in as the writer and is read-only by session "
            "default only; set CHMGR_READ_DSN and run `chmgr db init` (docs/operations.md: Database roles)"
        )
    return settings.reader_dsn


def describe_error(dsn: Dsn, error: BaseException) -> str:
    """Return a one-line description of ``error`` with any trace of the password removed."""
    text = " ".join(str(error).split())
    text = text.replace(dsn.reveal(), redact_dsn(dsn.reveal()))
    for secret in dsn_secrets(dsn.reveal()):
        text = text.replace(secret, "***")
    return text


def _kwargs(program: str, read_only: bool, options: str = "") -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "application_name": f"chmgr-{program}",
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    if read_only:
        kwargs["options"] = READ_ONLY_OPTIONS
    elif options:
        kwargs["options"] = options
    return kwargs


async def connect_writer(dsn: Dsn, program: str = "state") -> psycopg.AsyncConnection[TupleRow]:
    """Return the single writer connection: autocommit (a commit is one statement, or an explicit
    transaction when it needs several; ``db.writer``)."""
    try:
        return await psycopg.AsyncConnection.connect(
            dsn.reveal(), autocommit=True, **_kwargs(program, read_only=False, options=WRITER_OPTIONS)
        )
    except psycopg.Error as e:
        raise DatabaseError(f"cannot connect writer to {dsn}: {describe_error(dsn, e)}") from None


async def connect_read_only(dsn: Dsn, program: str) -> psycopg.AsyncConnection[TupleRow]:
    """Return one read-only async connection (autocommit, for LISTEN and simple reads)."""
    try:
        return await psycopg.AsyncConnection.connect(
            dsn.reveal(), autocommit=True, **_kwargs(program, read_only=True)
        )
    except psycopg.Error as e:
        raise DatabaseError(f"cannot connect to {dsn}: {describe_error(dsn, e)}") from None


def read_only_pool(dsn: Dsn, program: str, *, min_size: int = 1, max_size: int = 4) -> AsyncConnectionPool:
    """Return a closed read-only pool; ``await pool.open()`` it (reconnects on its own)."""
    return AsyncConnectionPool(
        dsn.reveal(),
        min_size=min_size,
        max_size=max_size,
        kwargs=_kwargs(program, read_only=True),
        name=f"chmgr-{program}-ro",
        open=False,
    )


def connect_sync(dsn: Dsn, program: str, *, read_only: bool = True) -> psycopg.Connection[TupleRow]:
    """Return a blocking connection (CLI, schema migration); read-only unless asked otherwise."""
    try:
        return psycopg.connect(dsn.reveal(), **_kwargs(program, read_only=read_only))
    except psycopg.Error as e:
        raise DatabaseError(f"cannot connect to {dsn}: {describe_error(dsn, e)}") from None


def _unreachable(error: Exception) -> bool:
    """Return True when ``error`` says the server is not there (retry), not that data is wrong."""
    if isinstance(error, SchemaError):  # a DatabaseError too: only a lost connection is retried
        return isinstance(error.__cause__, psycopg.OperationalError)
    return isinstance(error, DatabaseError)


async def retry_database(
    attempt: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    what: str,
    counters: Counter[str] | None = None,
) -> T:
    """Return ``await attempt()``, retried with capped, jittered backoff while the database is
    unreachable (``DatabaseError``, or a migration cut by a lost connection), until ``stop``.

    For `state`'s start: PostgreSQL down at start is waited for, never a crash loop that
    supervisord gives up on. Any other error (a schema newer than the code) is raised at once.
    """

    def waiting(error: Exception, attempt_number: int, wait: float) -> None:
        if counters is not None:
            counters["db_start_retries"] += 1
        log.warning("%s: database unreachable attempt=%d, retrying in %.1fs: %s", what, attempt_number, wait, error)

    try:
        return await retry(attempt, stop=stop, backoff=Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S),
                           retry_if=_unreachable, on_retry=waiting)  # fmt: skip
    except RetryStopped:
        raise DatabaseError(f"{what}: stopped while waiting for the database") from None


async def listen(conn: psycopg.AsyncConnection[Any], channels: Iterable[str]) -> None:
    """``LISTEN`` on every channel of ``channels`` (names through ``psycopg.sql.Identifier``)."""
    for channel in channels:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

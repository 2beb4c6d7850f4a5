"""Connections: the read-only factories every program uses, and the one writer for ``state``.

Every connection but the writer is opened with ``default_transaction_read_only=on``, so the
single-writer rule is enforced by PostgreSQL itself (a write fails with
``ReadOnlySqlTransaction``). Errors leave this module as ``DatabaseError`` with the DSN
redacted; the password never appears in a message.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from coldharbour.config import Dsn, dsn_secrets, redact_dsn
from coldharbour.errors import DatabaseError

log = logging.getLogger(__name__)

READ_ONLY_OPTIONS: Final = "-c default_transaction_read_only=on"
CONNECT_TIMEOUT_S: Final = 5


def describe_error(dsn: Dsn, error: BaseException) -> str:
    """Return a one-line description of ``error`` with any trace of the password removed."""
    text = " ".join(str(error).split())
    text = text.replace(dsn.reveal(), redact_dsn(dsn.reveal()))
    for secret in dsn_secrets(dsn.reveal()):
        text = text.replace(secret, "***")
    return text


def _kwargs(program: str, read_only: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "application_name": f"chmgr-{program}",
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    if read_only:
        kwargs["options"] = READ_ONLY_OPTIONS
    return kwargs


async def connect_writer(dsn: Dsn, program: str = "state") -> psycopg.AsyncConnection[TupleRow]:
    """Return the single writer connection (transactions explicit, not autocommit)."""
    try:
        return await psycopg.AsyncConnection.connect(dsn.reveal(), **_kwargs(program, read_only=False))
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

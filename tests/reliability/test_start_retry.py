"""`state` waits for PostgreSQL at start instead of exiting (supervisord would give up on it).

The suite's real cluster is stopped, the start-up migration is attempted through
``retry_database`` (what ``workers/state.py`` does), the cluster comes back, and the migration
completes with no manual step.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from coldharbour.db import schema
from coldharbour.db.connect import connect_sync, retry_database
from coldharbour.errors import DatabaseError, SchemaError
from tests.support import async_wait_for, make_settings

pytestmark = pytest.mark.asyncio


async def test_migration_at_start_waits_for_postgres_then_succeeds(pg_cluster, pg_dsn) -> None:
    settings = make_settings(pg_dsn)

    def migrate() -> list[tuple[str, int]]:
        with connect_sync(settings.dsn, "state", read_only=False) as conn:
            return schema.ensure_schema(conn, settings)

    counters: Counter[str] = Counter()
    stop = asyncio.Event()
    pg_cluster.stop()
    try:
        task = asyncio.create_task(
            retry_database(lambda: asyncio.to_thread(migrate), stop, what="schema migration", counters=counters)
        )
        await async_wait_for(lambda: counters["db_start_retries"] >= 2, 30, what="retries while down")
        assert not task.done()
    finally:
        pg_cluster.start()
    applied = await asyncio.wait_for(task, 60)

    assert ("shared", 1) in applied
    assert counters["db_start_retries"] >= 2


async def test_retry_stops_on_stop_and_never_retries_a_schema_refusal() -> None:
    stop = asyncio.Event()
    calls = 0

    async def newer_schema() -> None:
        nonlocal calls
        calls += 1
        raise SchemaError("schema newer than this code")

    with pytest.raises(SchemaError):
        await retry_database(newer_schema, stop, what="schema migration")
    assert calls == 1

    async def unreachable() -> None:
        stop.set()
        raise DatabaseError("cannot connect")

    with pytest.raises(DatabaseError, match="stopped while waiting"):
        await retry_database(unreachable, stop, what="schema migration")

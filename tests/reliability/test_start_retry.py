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


@pytest.mark.asyncio
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


@pytest.mark.asyncio
async def test_retry_stops_on_stop_and_never_retries_a_schema_refusal() -> None:
    stop = asyncio.Event()
    calls = 0

    async def newer_schema() -> None:
        nonlocal calls
        calls += 1
        raise SchemaError("schema newer than this code")

    with pytest.raises(SchemaError, match="schema newer than this code"):
        await retry_database(newer_schema, stop, what="schema migration")
    assert calls == 1

    async def unreachable() -> None:
        stop.set()
        raise DatabaseError("cannot connect")

    with pytest.raises(DatabaseError, match="stopped while waiting"):
        await retry_database(unreachable, stop, what="schema migration")


@pytest.mark.integration
def test_state_started_while_postgres_is_down_runs_once_it_returns(pg_cluster, migrated_dsn, tmp_path) -> None:
    """The real `state` program: PostgreSQL down at its start, up later, no manual step."""
    import shutil

    from tests.fixtures.stack import Programs, all_clean, broker_environ, short_directory
    from tests.support import wait_for

    directory = short_directory()
    env = broker_environ(migrated_dsn, directory, "http://127.0.0.1:9", FLUSH_INTERVAL_S="3600")
    programs = Programs(env, directory)
    try:
        programs.start("bus")
        pg_cluster.stop()
        try:
            programs.start("state")  # heartbeats while it waits for the database
            programs.wait_counter("state", "db_start_retries", 3, timeout_s=60)
            alive_while_down = programs.running["state"].process.poll() is None
        finally:
            pg_cluster.start()
        wait_for(lambda: programs.counter("state", "commits") >= 1, 60, what="state committing after the outage")
        alive_after = programs.running["state"].process.poll() is None
    finally:
        codes = programs.close()
        shutil.rmtree(directory, ignore_errors=True)

    assert alive_while_down
    assert alive_after
    assert all_clean(codes), programs.logs()

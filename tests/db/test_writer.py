"""The single writer: NOTIFY reaches LISTEN only after commit; failures leave nothing behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from coldharbour.db import notify, upserts
from coldharbour.db.connect import connect_read_only
from coldharbour.db.names import shared_names
from coldharbour.db.writer import Step, Writer
from coldharbour.errors import DatabaseError
from tests.support import async_wait_for, make_settings

pytestmark = pytest.mark.asyncio


async def _listener(dsn, channel: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(dsn.reveal(), autocommit=True)
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return conn


async def _drain(conn: psycopg.AsyncConnection, timeout_s: float = 0.3) -> list[str]:
    return [n.payload async for n in conn.notifies(timeout=timeout_s)]


async def test_writer_notify_reaches_listener_only_after_commit(migrated_dsn) -> None:
    settings = make_settings(migrated_dsn)
    table = shared_names(settings).latest_prices
    listener = await _listener(migrated_dsn, "pos_channel_demo")
    reader = await connect_read_only(migrated_dsn, "test")
    writer = Writer(migrated_dsn)
    await writer.connect()
    seen_rows_at_notify: list[int] = []

    async def hold_transaction_open() -> list[str]:
        return await _drain(listener, 0.3)

    step = upserts.latest_prices(table, [("AAPL", Decimal("187.25"), datetime(2026, 1, 5, 15, tzinfo=UTC))])
    note = notify.heartbeat("pos_channel_demo", datetime(2026, 1, 5, 15, tzinfo=UTC))
    result = await writer.commit([step], [note])
    async for received in listener.notifies(timeout=5, stop_after=1):
        row = await (await reader.execute("SELECT count(*) FROM accounts.latest_prices")).fetchone()
        seen_rows_at_notify.append(row[0])
        payload = received.payload
    await writer.close()
    await listener.close()
    await reader.close()

    assert result.rows == [[("AAPL",)]]
    assert seen_rows_at_notify == [1]
    assert payload.startswith('{"op":"heartbeat","version":"2026-01-05T15:00:00')


async def test_writer_failed_commit_writes_and_notifies_nothing(migrated_dsn) -> None:
    settings = make_settings(migrated_dsn)
    table = shared_names(settings).latest_prices
    listener = await _listener(migrated_dsn, "pos_channel_demo")
    writer = Writer(migrated_dsn)
    await writer.connect()
    good = upserts.latest_prices(table, [("AAPL", Decimal("1"), datetime(2026, 1, 5, tzinfo=UTC))])
    bad = upserts.latest_prices(table, [("MSFT", Decimal("-1"), datetime(2026, 1, 5, tzinfo=UTC))])

    with pytest.raises(DatabaseError, match="commit failed"):
        await writer.commit([good, bad], [notify.heartbeat("pos_channel_demo", datetime.now(UTC))])
    received = await _drain(listener)
    rows = await (await listener.execute("SELECT count(*) FROM accounts.latest_prices")).fetchone()
    await writer.close()
    await listener.close()

    assert received == []
    assert rows == (0,)
    assert writer.counters["commit_failures"] == 1


async def test_writer_replayed_upsert_returns_no_changed_rows(migrated_dsn) -> None:
    settings = make_settings(migrated_dsn)
    table = shared_names(settings).latest_prices
    writer = Writer(migrated_dsn)
    await writer.connect()
    rows = [("AAPL", Decimal("187.25"), datetime(2026, 1, 5, 15, tzinfo=UTC))]
    older = [("AAPL", Decimal("100"), datetime(2026, 1, 5, 14, tzinfo=UTC))]

    first = await writer.commit([upserts.latest_prices(table, rows)])
    replay = await writer.commit([upserts.latest_prices(table, rows)])
    stale = await writer.commit([upserts.latest_prices(table, older)])
    await writer.close()

    assert first.rows == [[("AAPL",)]]
    assert replay.rows == [[]]
    assert stale.rows == [[]]


async def test_writer_reconnects_after_postgres_restart(pg_cluster, migrated_dsn) -> None:
    settings = make_settings(migrated_dsn)
    table = shared_names(settings).latest_prices
    writer = Writer(migrated_dsn)
    await writer.connect()
    step = upserts.latest_prices(table, [("AAPL", Decimal("1"), datetime(2026, 1, 5, tzinfo=UTC))])

    await asyncio.to_thread(pg_cluster.stop, "immediate")
    try:
        with pytest.raises(DatabaseError):
            await writer.commit([step])
        reconnect = asyncio.create_task(writer.connect())
        await async_wait_for(lambda: writer.counters["db_connect_failures"] >= 1, 10, what="a failed reconnect")
    finally:
        await asyncio.to_thread(pg_cluster.start)
    await asyncio.wait_for(reconnect, 30)
    result = await writer.commit([step])
    await writer.close()

    assert result.rows == [[("AAPL",)]]
    assert writer.counters["db_reconnects"] == 1

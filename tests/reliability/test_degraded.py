"""A held table lock makes `state`'s writer fail fast (lock_timeout) and `chmgr status` degraded.

Real PostgreSQL (suite cluster): another session holds an ACCESS EXCLUSIVE lock on
``latest_prices`` while the writer commits. The lock timeout is shortened for the test through
``connect.WRITER_OPTIONS`` (the production value is 10 s).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from coldharbour.cli.status import DEGRADED, _row, is_degraded
from coldharbour.db import connect
from coldharbour.db.writer import Writer
from coldharbour.domain.changes import LatestPrices
from coldharbour.domain.types import from_datetime
from coldharbour.errors import DatabaseError
from coldharbour.messages import Heartbeat
from tests.support import make_settings

pytestmark = pytest.mark.asyncio


async def test_held_lock_times_out_and_flags_degraded_until_a_commit_succeeds(migrated_dsn, monkeypatch) -> None:
    monkeypatch.setattr(connect, "WRITER_OPTIONS", "-c statement_timeout=5000 -c lock_timeout=200")
    step = LatestPrices((("AAPL", Decimal("187.25"), from_datetime(datetime(2026, 1, 5, 15, tzinfo=UTC))),))
    writer = Writer(make_settings(migrated_dsn))
    await writer.connect()
    try:
        with psycopg.connect(migrated_dsn.reveal()) as holder:
            holder.execute("LOCK TABLE accounts.latest_prices IN ACCESS EXCLUSIVE MODE")
            refusal = "commit failed, connection lost: canceling statement due to lock timeout"
            with pytest.raises(DatabaseError, match=refusal):
                await writer.commit([step], 0)
            holder.rollback()
        assert writer.counters["db_timeouts"] == 1
        assert writer.counters["db_degraded"] == 1
        beat = Heartbeat(program="state", pid=os.getpid(), uptime_s=1.0, counters=dict(writer.counters))
        assert is_degraded(beat)
        assert _row("state", "RUNNING", None, beat, beat.ts)[1] == f"[yellow]RUNNING ({DEGRADED})[/yellow]"

        await writer.connect()
        await writer.commit([step], 0)
        assert writer.counters["db_degraded"] == 0
    finally:
        await writer.close()

"""``state`` and its ownership locks (issue 17): the real ``amain`` on the in-proc bus and a real database."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from coldharbour.db import ownership as own
from tests.workers.state_harness import StateHarness

pytestmark = pytest.mark.asyncio


async def test_state_holds_its_accounts_and_exits_when_the_lock_connection_is_lost(
    migrated_dsn: Any, bus: Any
) -> None:
    harness = StateHarness(migrated_dsn, bus)
    await harness.start()
    try:
        assert harness.ctx.counters["shared_writer"] == 1
        with psycopg.connect(migrated_dsn.reveal(), autocommit=True) as conn:
            held = own.owners(conn)
            expected = {own.lock_key("accounts", s) for s in ("demo", "paper_1", own.SHARED)}
            assert {o.key for o in held} == expected
            conn.execute("SELECT pg_terminate_backend(%s)", (held[0].backend_pid,))
        with pytest.raises(own.LockLost):
            await asyncio.wait_for(harness.task, 15)
        assert harness.ctx.counters["lock_connection_lost"] == 1
    finally:
        harness._listen.cancel()
        await asyncio.gather(harness._listen, return_exceptions=True)
        await harness.listener.close()
        harness.ctx.close()

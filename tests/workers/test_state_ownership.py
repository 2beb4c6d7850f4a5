"""``state`` and its ownership locks: the real ``amain`` on the in-proc bus and a real database."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from coldharbour.db import ownership as own
from tests.support import async_wait_for
from tests.workers.state_harness import StateHarness

pytestmark = pytest.mark.asyncio


async def test_state_holds_its_accounts_and_takes_them_again_when_the_lock_connection_is_lost(
    migrated_dsn: Any, bus: Any
) -> None:
    """A lost lock session (a PostgreSQL restart, a killed backend) withholds commits, then the same
    locks are taken again and every account is resynced; nobody else owned them meanwhile."""
    harness = StateHarness(migrated_dsn, bus)
    resyncs = bus.observe("cmd.resync.")
    await harness.start()
    try:
        assert harness.ctx.counters["shared_writer"] == 1
        with psycopg.connect(migrated_dsn.reveal(), autocommit=True) as conn:
            held = own.owners(conn)
            expected = {own.lock_key("accounts", s) for s in ("demo", "paper_1", own.SHARED)}
            assert {o.key for o in held} == expected
            conn.execute("SELECT pg_terminate_backend(%s)", (held[0].backend_pid,))
            await async_wait_for(lambda: harness.ctx.counters["locks_retaken"] == 1, 15, what="locks re-taken")
            again = {o.key for o in own.owners(conn)}
        reasons = {m.reason for m in resyncs.messages()}
    finally:
        await harness.close()

    assert harness.ctx.counters["lock_connection_lost"] == 1
    assert again == expected
    assert "locks_retaken" in reasons
    # close() stopped state: it ran until the stop and returned normally (result() re-raises an error).
    assert harness.task.done()
    assert harness.task.result() is None


async def test_state_exits_when_another_stack_took_an_account_while_its_locks_were_lost(
    migrated_dsn: Any, bus: Any
) -> None:
    harness = StateHarness(migrated_dsn, bus)
    await harness.start()
    try:
        with psycopg.connect(migrated_dsn.reveal(), autocommit=True) as thief:
            held = own.owners(thief)
            thief.execute("SELECT pg_terminate_backend(%s)", (held[0].backend_pid,))
            key = own.lock_key("accounts", "demo")
            await async_wait_for(
                lambda: (thief.execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (own.LOCK_CLASS, key))
                         .fetchone() or (False,))[0], 15, what="the other session takes account demo",
            )
            with pytest.raises(own.AccountOwned, match="account demo is owned by another stack"):
                await asyncio.wait_for(harness.task, 30)
    finally:
        harness._listen.cancel()
        await asyncio.gather(harness._listen, return_exceptions=True)
        await harness.listener.close()
        harness.ctx.close()

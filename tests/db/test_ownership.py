"""Ownership locks on a real PostgreSQL: accounts refused to a second owner, the shared writer, takeover, loss."""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from coldharbour.db import ownership as own
from coldharbour.domain import changes as c
from tests.support import async_wait_for


def _stack(dsn: Any, *slugs: str) -> own.Ownership:
    return own.Ownership(dsn, "accounts", slugs, Counter())


def test_lock_key_is_stable_and_31_bit() -> None:
    assert own.lock_key("accounts", "alpha") == own.lock_key("accounts", "alpha")
    assert own.lock_key("accounts", "alpha") != own.lock_key("other", "alpha")
    assert own.lock_key("accounts", "alpha") != own.lock_key("accounts", "beta")
    assert 0 <= own.lock_key("accounts", "x" * 60) < 2**31


def test_application_name_fits_and_keeps_the_pid() -> None:
    name = own.application_name()
    assert len(name) <= own.APPLICATION_NAME_MAX
    assert name.endswith(f":{os.getpid()}")
    assert own.describe_owner(own.Owner(1, 99, "chmgr-state@h1:42", "local")) == "pid 42 on host h1"
    assert own.describe_owner(own.Owner(1, 99, "psql", "10.0.0.1")) == (
        "backend pid 99, application psql from 10.0.0.1")


@pytest.mark.asyncio
async def test_second_owner_refused_shared_writer_takes_over(migrated_dsn: Any) -> None:
    first, second = _stack(migrated_dsn, "alpha", "beta"), _stack(migrated_dsn, "gamma")
    await first.acquire()
    await second.acquire()
    try:
        assert first.shared_writer
        assert first.counters["shared_writer"] == 1
        assert not second.shared_writer
        assert second.counters["shared_writer"] == 0
        third = _stack(migrated_dsn, "delta", "alpha")
        with pytest.raises(own.AccountOwned) as refused:
            await third.acquire()
        assert str(refused.value) == (f"account alpha is owned by another stack "
                                      f"(pid {os.getpid()} on host {socket.gethostname()})")
        # The refused stack let go of what it had taken (delta is free again).
        fourth = _stack(migrated_dsn, "delta")
        await fourth.acquire()
        await fourth.close()

        shared: list[c.Change] = [c.LatestPrices((("AAPL", Decimal(1), 2),)), c.MetricsDoc("gamma", "{}"),
                                  c.PriceBars(()), c.MarketSchedule()]
        assert second.writable(shared) == [c.MetricsDoc("gamma", "{}")]
        assert second.counters["shared_changes_skipped"] == 3
        assert first.writable(shared) == shared

        await second.refresh()
        assert not second.shared_writer  # still held by the first
        await first.close()  # the owner's session ends: its locks free (once its backend has exited)

        async def taken() -> bool:
            await second.refresh()
            return second.shared_writer

        await async_wait_for(taken, 15, interval_s=0.05, what="the shared lock taken over")
        assert second.shared_writer
        assert second.counters["shared_takeovers"] == 1
        assert second.counters["shared_writer"] == 1
    finally:
        await first.close()
        await second.close()


@pytest.mark.asyncio
async def test_closed_owner_frees_its_locks_before_close_returns(migrated_dsn: Any) -> None:
    """A restart takes the accounts back at once: ``close`` does not leave them to the ending backend.

    PostgreSQL ends a session (and frees its session locks) only after the client has gone, so a
    ``state`` restarted right away could otherwise be refused its own accounts.
    """
    slugs = ("restart-a", "restart-b")
    keys = {own.lock_key("accounts", slug) for slug in slugs}
    stack = _stack(migrated_dsn, *slugs)
    await stack.acquire()
    for _ in range(20):  # each round: the owner stops and its restart takes the same accounts at once
        await stack.close()
        stack = _stack(migrated_dsn, *slugs)
        await stack.acquire()
        assert stack.held
    await stack.close()
    with psycopg.connect(migrated_dsn.reveal(), autocommit=True) as conn:
        assert [o for o in own.owners(conn) if o.key in keys] == []


@pytest.mark.asyncio
async def test_lost_lock_connection_raises(migrated_dsn: Any) -> None:
    stack = _stack(migrated_dsn, "alpha")
    await stack.acquire()
    try:
        with psycopg.connect(migrated_dsn.reveal(), autocommit=True) as conn:
            found = own.owners(conn)
            assert {o.key for o in found} == {own.lock_key("accounts", "alpha"), own.lock_key("accounts", own.SHARED)}
            conn.execute("SELECT pg_terminate_backend(%s)", (found[0].backend_pid,))
        refusal = "lock connection lost, the account locks are gone: terminating connection due to administrator"
        with pytest.raises(own.LockLost, match=refusal):
            await stack.refresh()  # ``watch`` turns this into a re-take (tests/workers/test_state_ownership.py)
        assert stack.counters["lock_connection_lost"] == 1
    finally:
        await stack.close()


@pytest.mark.asyncio
async def test_doctor_says_who_owns_what(migrated_dsn: Any) -> None:
    from coldharbour.cli.doctor import check_ownership
    from tests.support import make_settings

    stack = _stack(migrated_dsn, "demo")
    await stack.acquire()
    try:
        settings = make_settings(migrated_dsn, accounts=("demo", "alpha"))
        lines = await asyncio.to_thread(lambda: [f"{v} {line}" for v, line in check_ownership(settings)])
    finally:
        await stack.close()
    me = f"chmgr-state@{socket.gethostname()}:{os.getpid()}"
    assert f"OK shared tables: owned by {me}" in "\n".join(lines)
    assert any(line.startswith(f"OK account demo: owned by {me}") for line in lines), lines
    assert "WARN account alpha: no owner (no `state` running for it)" in lines


@pytest.mark.asyncio
async def test_acquire_waits_for_an_unreachable_database_until_stopped() -> None:
    from coldharbour.config import Dsn
    from coldharbour.errors import DatabaseError
    from coldharbour.sim.postgres import free_port

    stack = own.Ownership(Dsn(f"postgresql://u:pw-Zq81@127.0.0.1:{free_port()}/x"), "accounts", ("alpha",), Counter())
    stop = asyncio.Event()
    task = asyncio.create_task(stack.acquire(stop))
    await async_wait_for(lambda: stack.counters["lock_connect_failures"] >= 2, 15, what="two failed attempts")
    assert not task.done()  # still waiting for the database, not exited
    stop.set()
    with pytest.raises(DatabaseError) as stopped:
        await asyncio.wait_for(task, 15)
    assert "pw-Zq81" not in str(stopped.value)

"""Chaos and security on the whole stack: PostgreSQL restart, stream chaos, hostile updates.

One supervisord stack serves the module (``chaos_stack``). Scenarios, in order:

- PostgreSQL stopped (``immediate``) for ~5 s during a burst of fills, then started: every
  program survives (same pid, or restarted by supervisord and beating), nothing is lost, the
  stored history explains every row (no partial write);
- the stream dropped every ~2 s during fills, then its upgrade refused with 429 twice;
- a duplicate fill (same ``execution_id`` twice), updates replayed out of order, and a fill for
  an order the broker does not know;

after each: the database equals the broker (``Stack.figures``). Then security: no secret in any
log line or NOTIFY of the whole module, every program but ``state`` is refused a write by the
database, the run directory and sockets are private, everything listens on loopback only.
Hostile account names are rejected at config load: ``tests/test_config.py`` and
``tests/reliability/test_corpus_config.py``.
"""

from __future__ import annotations

import asyncio
import copy
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from coldharbour.db.connect import connect_read_only, read_only_pool
from coldharbour.runtime import PROGRAMS
from coldharbour.sim.postgres import PgCluster
from coldharbour.supervisor import socket_path
from tests.fixtures.stack import Figures, Stack, leaked_secrets, report
from tests.integration.test_chaos_kill import Burst
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

OUTAGE_S = 5.0
# Deadlines for a run that never converges, not speed targets: the seconds are reported figures.
CONVERGE_TIMEOUT_S = 120.0
RECOVER_S = 30.0  # the writer reconnects with backoff capped at 10 s
DROP_EVERY_S = 2.0
STREAM_CHAOS_S = 5.0
REJECTED_UPGRADES = 2
RECONNECT_S = 100.0
OUTAGE_ORDERS = 40
STREAM_CHAOS_ORDERS = 60


def _clean(stack: Stack) -> Figures | None:
    figures = stack.figures()
    return figures if figures.clean else None


def _converge(stack: Stack, timeout_s: float, what: str) -> tuple[Figures, float]:
    started = time.monotonic()
    try:
        figures = wait_for(lambda: _clean(stack), timeout_s, interval_s=0.25, what=what)
    except AssertionError:
        report(what, converged=False, detail=stack.figures().detail)
        raise
    assert figures is not None
    return figures, time.monotonic() - started


def test_chaos_postgres_restart_under_load_every_program_survives(chaos_stack: Stack, pg_cluster: PgCluster) -> None:
    stack = chaos_stack
    wait_for(stack.beating, 60, interval_s=0.2, what="every program healthy")
    pids = stack.running_pids()
    burst = Burst(stack, seed=100)
    fills_before = len(stack.broker.fill_executions())

    for _ in range(5):
        burst.step()
    pg_cluster.stop("immediate")
    try:
        down_until = time.monotonic() + OUTAGE_S
        while time.monotonic() < down_until:  # trade, then move prices, for the whole outage
            burst.step() if burst.orders < OUTAGE_ORDERS else burst.move()
    finally:
        pg_cluster.start()
    started = time.monotonic()
    for _ in range(5):
        burst.step()
    wait_for(stack.beating, RECOVER_S, interval_s=0.2, what="every program beating after the outage")
    figures, _ = _converge(stack, RECOVER_S, "postgres restart")
    seconds = time.monotonic() - started
    wait_for(stack.beating, RECOVER_S, interval_s=0.2, what="every program beating after convergence")
    after = stack.running_pids()
    orphans = _fills_without_orders(stack)
    report("postgres restart", outage_s=OUTAGE_S, events_sent=burst.sent, orders=burst.orders,
           fills=figures.fills - fills_before, lost=figures.lost, duplicates=figures.duplicates,
           mismatches=figures.mismatches, partial_writes=len(orphans),
           restarted=sorted(p for p in PROGRAMS if after[p] != pids[p]),
           seconds_to_converge=round(seconds, 2))  # fmt: skip

    assert all(after[p] is not None for p in PROGRAMS)
    # The cluster runs with synchronous_commit=off; the writer's session turns it on, so no
    # acknowledged commit is lost in the crash: memory never runs ahead of the tables (the
    # ledger check would otherwise find the difference and restart ``state``).
    assert after["state"] == pids["state"]
    assert figures.lost == figures.duplicates == figures.mismatches == 0
    assert orphans == []


def _fills_without_orders(stack: Stack) -> list[str]:
    """Return stored real fills whose order is not stored (a write that stopped half-way)."""
    statement = psycopg.sql.SQL(
        "SELECT a.id FROM {a} a LEFT JOIN {o} o ON o.id = a.order_id "
        "WHERE a.activity_type = 'FILL' AND a.order_id IS NOT NULL AND o.id IS NULL"
    ).format(a=stack.names.raw_activities.ident, o=stack.names.raw_orders.ident)
    return [str(row[0]) for row in stack.query(statement)]


def test_chaos_stream_drops_and_429_on_upgrade_during_fills_converge(chaos_stack: Stack) -> None:
    stack = chaos_stack
    wait_for(lambda: stack.stream_listeners() == 1, 60, what="trades connected")
    burst = Burst(stack, seed=200)
    fills_before = len(stack.broker.fill_executions())
    connects_before = stack.beats()["trades"].counters.get("stream_connects", 0)

    drops = requests_sent = 0
    end = time.monotonic() + STREAM_CHAOS_S
    next_drop = time.monotonic()
    while time.monotonic() < end:
        if time.monotonic() >= next_drop:
            drops += stack.broker.drop_stream()
            requests_sent += 1
            next_drop += DROP_EVERY_S
        burst.step() if burst.orders < STREAM_CHAOS_ORDERS else burst.move()
    stack.broker.fail(ws_reject=REJECTED_UPGRADES)
    drops += stack.broker.drop_stream()
    for _ in range(10):
        burst.step()
    # The REST snapshots heal the database while the stream is still backing off ...
    figures, seconds = _converge(stack, CONVERGE_TIMEOUT_S, "stream chaos")
    # ... and the stream comes back once the broker stops refusing (alpaca-py's backoff, capped at 30 s).
    wait_for(lambda: stack.stream_listeners() == 1, RECONNECT_S, interval_s=0.5, what="trades reconnected after 429s")
    trades = stack.beats()["trades"].counters
    report("stream drops + 429", events_sent=burst.sent, orders=burst.orders, drop_requests=requests_sent,
           dropped=drops,
           refused_upgrades=trades.get("stream_connect_failures", 0),
           reconnects=trades.get("stream_connects", 0) - connects_before, fills=figures.fills - fills_before,
           lost=figures.lost, duplicates=figures.duplicates, mismatches=figures.mismatches,
           seconds_to_converge=round(seconds, 2))  # fmt: skip

    assert requests_sent >= 3
    assert drops >= 2
    assert trades.get("stream_connect_failures", 0) >= REJECTED_UPGRADES
    assert figures.lost == figures.duplicates == figures.mismatches == 0


def _fill_update(order: dict[str, Any], activity: dict[str, Any], event: str = "fill") -> dict[str, Any]:
    return {
        "event": event, "execution_id": activity["id"].split("::")[-1], "timestamp": activity["transaction_time"],
        "order": order, "price": activity["price"], "qty": activity["qty"], "position_qty": activity["qty"],
    }  # fmt: skip


def _order_and_fills(stack: Stack, order_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    order = stack.broker.v2(f"/v2/orders/{order_id}", {"nested": "true"})
    fills = stack.broker.v2("/v2/account/activities/FILL", {"direction": "desc"})[::-1]
    return order, [a for a in fills if a["order_id"] == order_id]


def _placed_with_fills(stack: Stack, symbol: str, qty: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Place a market order filled in three executions; return its JSON and FILL activities.

    ``symbol`` must be one the bursts never trade: a position they left (a short, say) would make
    the broker refuse a buy that crosses through zero.
    """
    broker = stack.broker
    broker.set_prices({symbol: 50.0})
    broker.control("POST", "/sim/config", {"partial_fills": True, "partial_fill_slices": 3})
    try:
        placed = broker.trading_client().submit_order(_market(symbol, qty))
    finally:
        broker.control("POST", "/sim/config", {"partial_fills": False})
    order_id = str(placed["id"])  # type: ignore[index]
    wait_for(lambda: _order_and_fills(stack, order_id)[1], 10, what="the order's fills")
    wait_for(lambda: _clean(stack), CONVERGE_TIMEOUT_S, interval_s=0.25, what="the order stored")
    return _order_and_fills(stack, order_id)


def test_chaos_duplicate_and_out_of_order_updates_change_nothing(chaos_stack: Stack) -> None:
    stack = chaos_stack
    wait_for(lambda: stack.stream_listeners() == 1, 60, what="trades connected")
    order, fills = _placed_with_fills(stack, "DUPX", 9)
    stored_before = stack.db_fills()
    closed_before = stack.db_closed()
    heard_before = stack.beats()["trades"].counters.get("trade_updates", 0)

    sent = 0
    for activity in (fills[-1], fills[-1]):  # the same execution twice
        stack.broker.emit(_fill_update(order, activity))
        sent += 1
    earlier = copy.deepcopy(order)
    earlier.update(status="new", filled_qty="0", filled_avg_price=None, filled_at=None)
    for activity in reversed(fills):  # every execution again, newest first, then the order as new
        stack.broker.emit(_fill_update(order, activity, "fill" if activity is fills[-1] else "partial_fill"))
        sent += 1
    stack.broker.emit({"event": "new", "execution_id": str(uuid.uuid4()), "timestamp": order["created_at"],
                       "order": earlier})  # fmt: skip
    sent += 1
    wait_for(lambda: stack.beats()["trades"].counters.get("trade_updates", 0) >= heard_before + sent, 10,
             what="every replayed update heard")  # fmt: skip
    wait_for(lambda: stack.beats()["state"].counters.get("ledger_checks", 0) > 0, 10, what="a ledger check")
    figures, seconds = _converge(stack, CONVERGE_TIMEOUT_S, "duplicate + out-of-order updates")
    report("duplicate + out-of-order updates", events_sent=sent, executions=len(fills), lost=figures.lost,
           duplicates=figures.duplicates, mismatches=figures.mismatches, recon_fills=figures.recon_fills,
           seconds_to_converge=round(seconds, 2))  # fmt: skip

    assert stack.db_fills() == stored_before
    assert sorted(map(str, stack.db_closed())) == sorted(map(str, closed_before))
    assert figures.lost == figures.duplicates == figures.mismatches == 0


def test_issue_9_fill_for_unknown_order_leaves_database_equal_to_broker(chaos_stack: Stack) -> None:
    """Bug: a stream fill for an order the broker does not know was booked as real; reconciliation
    restored the position but a phantom closed slice stayed. ``trades`` now checks such fills
    against REST (404 → rejected and counted) before publishing."""
    stack = chaos_stack
    wait_for(lambda: stack.stream_listeners() == 1, 60, what="trades connected")
    order, fills = _placed_with_fills(stack, "UNKX", 6)
    stranger = copy.deepcopy(order)
    stranger.update(id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), side="sell", qty="7", filled_qty="7")
    unknown = {**_fill_update(stranger, fills[-1]), "execution_id": str(uuid.uuid4()), "qty": "7"}

    stack.broker.emit(unknown)
    wait_for(lambda: stack.beats()["state"].counters.get("ledger_checks", 0) > 0, 10, what="a ledger check")
    figures, seconds = _converge(stack, CONVERGE_TIMEOUT_S, "fill for an unknown order")
    report("fill for an unknown order", events_sent=1, lost=figures.lost, duplicates=figures.duplicates,
           mismatches=figures.mismatches, recon_fills=figures.recon_fills, seconds_to_converge=round(seconds, 2))

    assert figures.lost == figures.duplicates == figures.mismatches == 0
    assert unknown["execution_id"] not in stack.db_fills()


def _market(symbol: str, qty: int) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.GTC)


# ----- security ---------------------------------------------------------------------------------

DB_PROGRAMS = ("equity", "metrics", "cashflows", "scheduler")  # each opens ``read_only_pool``


@pytest.mark.parametrize("program", DB_PROGRAMS)
def test_security_program_read_only_pool_is_refused_a_write(chaos_stack: Stack, program: str) -> None:
    dsn = chaos_stack.settings.dsn
    table = chaos_stack.names.positions.ident

    async def attempt() -> type[BaseException] | None:
        async with read_only_pool(dsn, program) as pool, pool.connection() as conn:
            try:
                await conn.execute(psycopg.sql.SQL("DELETE FROM {}").format(table))
            except psycopg.Error as e:
                return type(e)
        return None

    assert asyncio.run(attempt()) is psycopg.errors.ReadOnlySqlTransaction


def test_security_only_state_holds_a_writable_session(chaos_stack: Stack) -> None:
    async def attempt() -> type[BaseException] | None:
        async with await connect_read_only(chaos_stack.settings.dsn, "state") as conn:
            try:
                await conn.execute(psycopg.sql.SQL("DELETE FROM {}").format(chaos_stack.names.closed.ident))
            except psycopg.Error as e:
                return type(e)
        return None

    sessions = chaos_stack.query(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'chmgr-%%'"
    )
    # state's ownership-lock session is named chmgr-state@<host>:<pid>
    names = {str(row[0]).removeprefix("chmgr-").partition("@")[0] for row in sessions}

    assert asyncio.run(attempt()) is psycopg.errors.ReadOnlySqlTransaction
    assert names <= {"state", "web", *DB_PROGRAMS}  # bus, trades, snapshot never; prices only for PRICE_SOURCE=alpaca
    assert "state" in names


def test_security_run_dir_and_sockets_are_private(chaos_stack: Stack) -> None:
    run_dir = chaos_stack.run_dir
    sockets = [socket_path(run_dir), *run_dir.glob("*.sock")]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in sockets}

    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "logs").stat().st_mode) == 0o700
    assert modes["supervisor.sock"] == 0o700
    assert {"bus-in.sock", "bus-out.sock"} <= set(modes)
    assert {path.parent for path in sockets} == {run_dir}  # every socket is reachable only through the 0700 dir


def _listening(pid: int) -> list[str]:
    """Return the local addresses of every TCP socket ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1])
    return found


def _is_loopback(address: str) -> bool:
    host = address.split(":")[0]
    return host.endswith("7F") if len(host) == 8 else host == "00000000000000000000000001000000"


def test_security_broker_and_bus_listen_on_loopback_only(chaos_stack: Stack) -> None:
    pids = {name: pid for name, pid in chaos_stack.running_pids().items() if pid}
    pids["broker"] = chaos_stack.broker.process.pid
    listening = {name: _listening(pid) for name, pid in pids.items()}

    assert listening["broker"], "the fake broker listens on TCP"
    assert {name: [a for a in found if not _is_loopback(a)] for name, found in listening.items()} == {
        name: [] for name in listening
    }
    assert listening["bus"] == []  # ipc:// only


def test_security_no_secret_in_any_log_or_notify(chaos_stack: Stack) -> None:
    wait_for(chaos_stack.beating, 60, interval_s=0.2, what="every program healthy")

    assert leaked_secrets(chaos_stack) == []
    assert chaos_stack.notifies is not None
    assert len(chaos_stack.notifies.payloads) > 0

"""The whole stack under a real supervisord, driven by `chmgr` exactly as an operator would.

supervisord runs from ``render_config`` (the production ``supervisord.conf``, ``%(here)s`` pinned
to the project, its ``%(here)s/run`` replaced by ``CHMGR_RUN_DIR``) with ``CHMGR_RUN_DIR`` in a
short temporary directory (unix socket paths must stay under ~100 characters), every program
against a fresh migrated database and a fake broker process. One stack serves the module; every
test leaves it healthy. Teardown runs ``chmgr down`` and proves that no process it started is
left.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial

import pytest

from coldharbour.config import load_settings
from coldharbour.jobs.clock import ManualClock
from coldharbour.runtime import PROGRAMS, SESSION_PROGRAMS, WorkerContext
from coldharbour.sim.postgres import PgCluster
from coldharbour.supervisor import SupervisorClient, socket_path
from tests.analytics.helpers import running
from tests.fixtures.bus import InprocBus
from tests.fixtures.stack import Stack, start_stack
from tests.support import async_wait_for, wait_for
from workers import scheduler

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(pg_cluster: PgCluster, migrated_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start supervisord with every program via `chmgr up`; `chmgr down` and prove nothing is left."""
    with start_stack(pg_cluster, migrated_template, tmp_path_factory.mktemp("supervisord")) as running:
        yield running


def test_supervisord_status_shows_every_program_running_with_heartbeat(stack: Stack) -> None:
    rows = stack.wait_healthy()
    status = stack.chmgr("status")

    assert list(rows) == list(PROGRAMS)
    for name in PROGRAMS:
        assert "RUNNING" in rows[name]
        assert f" {stack.pid(name)} " in rows[name]
    assert status.returncode == 0, status.stdout + status.stderr
    assert "trades: 1 of 1 accounts streaming" in status.stdout.splitlines()  # the start-up's progress


def test_supervisord_restart_state_gives_a_new_pid(stack: Stack) -> None:
    stack.wait_healthy()
    before = stack.pid("state")

    result = stack.chmgr("restart", "state")

    after = stack.pid("state")
    assert result.returncode == 0, result.stderr
    assert after is not None
    assert after != before
    assert result.stdout.strip() == f"state: restarted, running (pid {before} -> {after})"
    assert f" {after} " in stack.wait_healthy()["state"]


def test_supervisord_restart_trades_gives_a_new_pid_and_it_reconnects(stack: Stack) -> None:
    stack.wait_healthy()
    wait_for(lambda: stack.stream_listeners() == 1, 60, what="trades connected to the broker")
    before = stack.pid("trades")

    result = stack.chmgr("restart", "trades")

    after = stack.pid("trades")
    assert result.returncode == 0, result.stderr
    assert after is not None
    assert after != before
    wait_for(lambda: stack.stream_listeners() == 1, 60, what="the restarted trades to reconnect")
    assert f" {after} " in stack.wait_healthy()["trades"]


def test_supervisord_kill_9_of_state_is_restarted_healthy(stack: Stack) -> None:
    stack.wait_healthy()
    killed = stack.pid("state")
    assert killed is not None

    os.kill(killed, signal.SIGKILL)

    restarted = wait_for(lambda: (pid := stack.pid("state")) not in (None, killed) and pid, 60, what="a new state")
    assert f" {restarted} " in stack.wait_healthy()["state"]


def test_supervisord_stop_then_start_bus(stack: Stack) -> None:
    stack.wait_healthy()

    stopped = stack.chmgr("stop", "bus")
    status = stack.chmgr("status")
    started = stack.chmgr("start", "bus")

    assert stopped.returncode == 0
    assert stopped.stdout.strip() == "bus: stopped"
    assert status.returncode == 1
    assert status.stderr == "chmgr: not working: bus: STOPPED\n"  # the health model's first cause
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("bus: running (pid ")
    stack.wait_healthy()  # every program's heartbeat comes back through the new proxy


def test_supervisord_restart_all_gives_every_program_a_new_pid(stack: Stack) -> None:
    stack.wait_healthy()
    before = {name: stack.pid(name) for name in PROGRAMS}

    result = stack.chmgr("restart", "all")

    after = {name: stack.pid(name) for name in PROGRAMS}
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == list(PROGRAMS)
    assert all(after[name] is not None for name in PROGRAMS)
    assert all(after[name] != before[name] for name in PROGRAMS)
    stack.wait_healthy()


def test_supervisord_restart_unknown_program_exits_1_with_one_line(stack: Stack) -> None:
    result = stack.chmgr("restart", "nosuch")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"chmgr: no such program 'nosuch' (known: {', '.join(PROGRAMS)}, or all)"
    ]


def test_supervisord_run_dir_and_socket_are_private(stack: Stack) -> None:
    run_mode = stat.S_IMODE(stack.run_dir.stat().st_mode)
    logs_mode = stat.S_IMODE((stack.run_dir / "logs").stat().st_mode)
    socket_mode = stat.S_IMODE(socket_path(stack.run_dir).stat().st_mode)

    assert (run_mode, logs_mode, socket_mode) == (0o700, 0o700, 0o700)
    assert all((stack.run_dir / "logs" / f"{name}.log").exists() for name in PROGRAMS)


def test_supervisord_up_again_reports_already_running(stack: Stack) -> None:
    result = stack.chmgr("up", "--conf", str(stack.conf))

    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"supervisord is already running (socket {socket_path(stack.run_dir)})",
        "working: account demo",  # and it waited for that, as a first `up` does
    ]


def test_supervisord_no_secret_in_any_log(stack: Stack) -> None:
    stack.wait_healthy()
    logs = "".join(path.read_text(errors="replace") for path in (stack.run_dir / "logs").glob("*.log"))

    assert "demo-secret" not in logs


@pytest.mark.asyncio
async def test_supervisord_scheduler_stops_and_starts_the_session_programs(stack: Stack, bus: InprocBus) -> None:
    """The scheduler (injected clock, the fake broker's calendar) drives this real supervisord:
    on a Saturday it stops the session programs, at Monday's pre-open it starts them again. The
    stack's own scheduler is stopped meanwhile (it keeps them on: DISABLE_SESSION_SLEEP=1)."""
    stack.wait_healthy()
    stack.client.stop("scheduler")
    before = {name: stack.pid(name) for name in SESSION_PROGRAMS}
    env = {**stack.env, "CHMGR_BUS_IN": bus.bus_in, "CHMGR_BUS_OUT": bus.bus_out, "DISABLE_SESSION_SLEEP": "0"}
    settings = load_settings(env)
    ctx = WorkerContext("scheduler", settings, bus.ctx)
    clock = ManualClock(datetime(2024, 3, 16, 12, tzinfo=UTC))  # a Saturday: closed
    control = SupervisorClient(socket_path(stack.run_dir))

    def states(wanted: str) -> bool:
        found = control.states()
        return all(found[name] == wanted for name in SESSION_PROGRAMS)

    async with running(partial(scheduler.run, settings, ctx, clock=clock, control=control), ctx):
        await async_wait_for(lambda: states("STOPPED"), 60, interval_s=0.2, what="session programs stopped")
        others = control.states()
        clock.set(datetime(2024, 3, 18, 8, tzinfo=UTC))  # Monday 04:00 New York: pre-open
        await async_wait_for(lambda: states("RUNNING"), 60, interval_s=0.2, what="session programs started")
    after = {name: stack.pid(name) for name in SESSION_PROGRAMS}
    stack.client.start("scheduler")

    assert all(others[name] == "RUNNING" for name in PROGRAMS if name not in (*SESSION_PROGRAMS, "scheduler"))
    assert all(after[name] not in (None, before[name]) for name in SESSION_PROGRAMS)
    assert (ctx.counters["phase_changes"], ctx.counters["supervisor_failures"]) == (2, 0)
    stack.wait_healthy()

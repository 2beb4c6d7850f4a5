"""The whole stack under a real supervisord, driven by `chmgr` exactly as an operator would.

supervisord runs from ``render_config`` (the production ``supervisord.conf``, ``%(here)s`` pinned
to the project) with ``CHMGR_RUN_DIR`` in a short temporary directory (unix socket paths must
stay under ~100 characters), every program against a fresh migrated database and a fake broker
process. One stack serves the module; every test leaves it healthy. Teardown runs
``chmgr down`` and proves that no process it started is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from coldharbour.runtime import PROGRAMS
from coldharbour.sim.postgres import PgCluster
from coldharbour.supervisor import SupervisorClient, render_config, socket_path
from tests.support import make_environ, wait_for

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 120
HEALTHY_TIMEOUT_S = 90.0


class Stack:
    """A running supervisord with every program, its environment and its client."""

    def __init__(self, env: dict[str, str], run_dir: Path, conf: Path, broker_url: str) -> None:
        self.env = env
        self.run_dir = run_dir
        self.conf = conf
        self.broker_url = broker_url
        self.client = SupervisorClient(socket_path(run_dir))

    def chmgr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``chmgr args…`` in this stack's environment."""
        return subprocess.run(
            [sys.executable, "-m", "coldharbour.cli", *args],
            env=self.env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
        )  # fmt: skip

    def pid(self, program: str) -> int | None:
        """Return ``program``'s pid while it is RUNNING, else None."""
        info = self.client.process(program)
        return info.pid if info.state == "RUNNING" else None

    def status_rows(self) -> dict[str, str]:
        """Return {program: its status row} once `chmgr status` says all are healthy, else {}."""
        result = self.chmgr("status")
        if result.returncode != 0:
            return {}
        rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("│")}
        return rows if all("ago" in rows.get(name, "") for name in PROGRAMS) else {}

    def wait_healthy(self) -> dict[str, str]:
        """Wait until every program is RUNNING with a fresh heartbeat; return the status rows."""
        return wait_for(
            self.status_rows, HEALTHY_TIMEOUT_S, interval_s=0.5, what="every program RUNNING with a heartbeat"
        )

    def stream_listeners(self) -> int:
        """Return how many trade_updates connections the fake broker has."""
        with urllib.request.urlopen(f"{self.broker_url}/sim/state", timeout=10) as response:
            return int(json.load(response)["stream"]["listeners"])

    def processes(self) -> list[int]:
        """Return supervisord's pid and every program pid it reports."""
        return [self.client.pid(), *(info.pid for info in self.client.info() if info.pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_broker(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    with log_path.open("wb") as log:
        broker = subprocess.Popen(
            [sys.executable, "-m", "coldharbour.sim.broker", "--port", "0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    line = wait_for(
        lambda: next((x for x in log_path.read_text().splitlines() if "listening port=" in x), ""),
        30, what="the fake broker to listen",
    )  # fmt: skip
    return broker, f"http://127.0.0.1:{line.split('port=')[1].split()[0]}"


@pytest.fixture(scope="module")
def stack(pg_cluster: PgCluster, migrated_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start supervisord with every program via `chmgr up`; `chmgr down` and prove nothing is left."""
    database = pg_cluster.create_database(template=migrated_template)
    run_dir = Path(tempfile.mkdtemp(prefix="chs-", dir="/tmp"))
    work = tmp_path_factory.mktemp("supervisord")
    broker, broker_url = _start_broker(work / "broker.log")
    env = {
        **{key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ},
        **make_environ(
            pg_cluster.dsn(database), run_dir, ("demo",),
            ALPACA_SECRET_KEY_DEMO="demo-secret", ALPACA_BASE_URL_DEMO=broker_url,
            ZMQ_SIP_STREAM_ENDPOINT=f"ipc://{run_dir}/feed.sock", DISABLE_SESSION_SLEEP="1",
        ),
    }  # fmt: skip
    running = Stack(env, run_dir, render_config(work), broker_url)
    started: list[int] = []
    try:
        up = running.chmgr("up", "--conf", str(running.conf))
        assert up.returncode == 0, up.stderr
        started = running.processes()
        yield running
        started = running.processes()
        down = running.chmgr("down")
        assert down.returncode == 0, down.stderr
        assert down.stdout.startswith("supervisord stopped")
        wait_for(lambda: not any(_alive(pid) for pid in started), 30, what="every started process to exit")
        assert not socket_path(run_dir).exists()
    finally:
        for pid in started:  # only if an assertion above failed: leave nothing behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        broker.send_signal(signal.SIGTERM)
        broker.wait(30)
        pg_cluster.drop_database(database)
        shutil.rmtree(run_dir, ignore_errors=True)


def test_supervisord_status_shows_every_program_running_with_heartbeat(stack: Stack) -> None:
    rows = stack.wait_healthy()

    assert list(rows) == list(PROGRAMS)
    for name in PROGRAMS:
        assert "RUNNING" in rows[name]
        assert f" {stack.pid(name)} " in rows[name]


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
    assert "bus STOPPED" in status.stderr
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
    assert result.stdout.strip() == f"supervisord is already running (socket {socket_path(stack.run_dir)})"


def test_supervisord_no_secret_in_any_log(stack: Stack) -> None:
    stack.wait_healthy()
    logs = "".join(path.read_text(errors="replace") for path in (stack.run_dir / "logs").glob("*.log"))

    assert "demo-secret" not in logs

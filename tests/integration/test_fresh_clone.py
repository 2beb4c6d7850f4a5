"""`supervisord -c supervisord.conf` exactly as a new user runs it, from a fresh clone (issue #19).

Each test clones this repository's committed HEAD (``git clone``) into a short directory under
/tmp (unix socket paths must stay under ~100 characters). The clone reuses the suite's venv
instead of installing one: ``<clone>/.venv`` is a symlink to the venv running the suite, and
``PYTHONPATH=<clone>`` makes the clone's code win over the venv's editable install, for `chmgr`
and for every program supervisord starts (they run in the clone, ``python`` from
``<clone>/.venv/bin``). The settings are exported as a user would (the suite's PostgreSQL, the
fake broker of tests/fixtures/broker.py, ``DISABLE_SESSION_SLEEP=1``), without
``CHMGR_RUN_DIR``: supervisord, its programs, `chmgr` and `supervisorctl` must all agree on
``<clone>/run`` by themselves.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coldharbour.config import Dsn, env_suffix
from coldharbour.runtime import PROGRAMS
from coldharbour.sim.postgres import free_port
from coldharbour.supervisor import SupervisorClient
from tests.fixtures.broker import FakeBroker
from tests.support import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT_S = 120
HEALTHY_TIMEOUT_S = 90.0
FATAL_TIMEOUT_S = 90.0
GONE_TIMEOUT_S = 60.0
STARTRETRIES = 3  # supervisord.conf: a failed start is retried this often, then FATAL
GAVE_UP = {"FATAL", "EXITED"}  # states supervisord never leaves by itself


class Clone:
    """A fresh clone of the repository and the user's shell in it (exported settings, cwd)."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env
        self.run_dir = path / "run"

    def run(self, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``command`` from the clone root, as the user types it (``.venv/bin/...``)."""
        return subprocess.run(
            list(command), cwd=self.path, env=env or self.env, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT_S, check=False,
        )  # fmt: skip

    def chmgr(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``.venv/bin/chmgr args…`` from the clone root."""
        return self.run(".venv/bin/chmgr", *args, env=env)

    @property
    def client(self) -> SupervisorClient:
        """The XML-RPC client on the clone's ``run/supervisor.sock``."""
        return SupervisorClient(self.run_dir / "supervisor.sock")

    def status_rows(self, env: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        """Return `chmgr status`'s exit code, its rows by program, and its whole output."""
        result = self.chmgr("status", env=env)
        rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("│")}
        return result.returncode, rows, result.stdout + result.stderr

    def processes(self) -> set[int]:
        """Return every process whose working directory is the clone (supervisord's programs)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if Path(os.readlink(entry / "cwd")) == self.path:
                        found.add(int(entry.name))
                except OSError:
                    continue  # exited meanwhile, or not ours to read
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _environ(pid: int) -> dict[str, str]:
    """Return the environment process ``pid`` was started with."""
    items = Path(f"/proc/{pid}/environ").read_text().split("\0")
    return dict(item.split("=", 1) for item in items if "=" in item)


def _settings(dsn: Dsn, broker: FakeBroker, work: Path) -> dict[str, str]:
    """The settings a user exports: DSN, one account on the fake broker, no CHMGR_RUN_DIR."""
    key, secret = broker.keys("demo")
    suffix = env_suffix("demo")
    return {
        "CHMGR_DSN": dsn.reveal(),
        "CHMGR_ACCOUNTS": "demo",
        f"ALPACA_API_KEY_{suffix}": key,
        f"ALPACA_SECRET_KEY_{suffix}": secret,
        f"ALPACA_BASE_URL_{suffix}": broker.base_url,
        "ZMQ_SIP_STREAM_ENDPOINT": f"ipc://{work}/feed.sock",  # nobody publishes: prices waits
        "DISABLE_SESSION_SLEEP": "1",
        "CHMGR_WEB_BIND": f"127.0.0.1:{free_port()}",  # not 8765: another stack on this machine may hold it
    }


def _healthy(clone: Clone) -> dict[str, str]:
    """Return `chmgr status`'s rows once it exits 0 with every program's heartbeat, else {}."""
    code, rows, _ = clone.status_rows()
    return rows if code == 0 and all("ago" in rows.get(name, "") for name in PROGRAMS) else {}


@pytest.fixture
def clone(migrated_dsn: Dsn, fake_broker: FakeBroker, tmp_path: Path) -> Iterator[Clone]:
    """Clone HEAD into /tmp, export the settings; afterwards kill whatever is left and remove it."""
    work = Path(tempfile.mkdtemp(prefix="chf-", dir="/tmp"))
    path = work / "c"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(path)], check=True, timeout=60)
    subprocess.run(["git", "-C", str(path), "checkout", "-q", head.stdout.strip()], check=True, timeout=60)
    (path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)  # the venv running this suite
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env = {**base, "PYTHONPATH": str(path), **_settings(migrated_dsn, fake_broker, work)}
    assert "CHMGR_RUN_DIR" not in env
    fresh = Clone(path, env)
    try:
        yield fresh
    finally:
        for pid in fresh.processes():  # only if a test failed half-way: leave nothing behind
            os.kill(pid, signal.SIGKILL)
        fresh.run(".venv/bin/supervisorctl", "-c", "supervisord.conf", "shutdown")
        logs = fresh.run_dir / "logs"
        if logs.is_dir():
            shutil.copytree(logs, tmp_path / "logs", dirs_exist_ok=True)  # kept with pytest's temporary files
        shutil.rmtree(work, ignore_errors=True)


def test_fresh_clone_supervisord_conf_runs_every_program_and_chmgr_controls_it(clone: Clone) -> None:
    assert (clone.run_dir / "logs").is_dir()  # shipped with the clone: supervisord needs it first

    started = clone.run(".venv/bin/supervisord", "-c", "supervisord.conf")

    assert started.returncode == 0, started.stderr
    rows = wait_for(
        lambda: _healthy(clone), HEALTHY_TIMEOUT_S, interval_s=0.5,
        what="every program RUNNING with a heartbeat in `chmgr status`",
    )  # fmt: skip
    assert list(rows) == list(PROGRAMS)
    assert all("RUNNING" in rows[name] for name in PROGRAMS)
    # One run directory for all: the conf's, which every program got as CHMGR_RUN_DIR.
    assert {_environ(info.pid).get("CHMGR_RUN_DIR") for info in clone.client.info() if info.pid} == {str(clone.run_dir)}
    in_run_dir = {path.name for path in clone.run_dir.iterdir()}
    assert {"supervisor.sock", "supervisord.pid", "bus-in.sock", "bus-out.sock"} <= in_run_dir
    assert {f"{name}.log" for name in PROGRAMS} <= {p.name for p in (clone.run_dir / "logs").iterdir()}
    modes = [stat.S_IMODE(path.stat().st_mode) for path in (clone.run_dir, clone.run_dir / "logs")]
    assert modes == [0o700, 0o700]  # git does not store it: the programs tightened the project's own dir
    assert clone.run("git", "status", "--porcelain", "run").stdout == ""  # everything in run/ is ignored

    before = clone.client.process("trades").pid
    restarted = clone.chmgr("restart", "trades")
    after = clone.client.process("trades")

    assert restarted.returncode == 0, restarted.stderr
    assert after.state == "RUNNING"
    assert after.pid not in (None, before)
    assert restarted.stdout.strip() == f"trades: restarted, running (pid {before} -> {after.pid})"

    ctl_status = clone.run(".venv/bin/supervisorctl", "-c", "supervisord.conf", "status")
    assert ctl_status.returncode == 0, ctl_status.stdout + ctl_status.stderr
    assert sum("RUNNING" in line for line in ctl_status.stdout.splitlines()) == len(PROGRAMS)
    supervisord_pid = int((clone.run_dir / "supervisord.pid").read_text())
    programs = clone.processes()
    assert {info.pid for info in clone.client.info()} <= programs
    assert len(programs) >= len(PROGRAMS)

    shutdown = clone.run(".venv/bin/supervisorctl", "-c", "supervisord.conf", "shutdown")

    assert shutdown.returncode == 0, shutdown.stdout + shutdown.stderr
    wait_for(
        lambda: not any(_alive(pid) for pid in {supervisord_pid, *programs}) and not clone.processes(),
        GONE_TIMEOUT_S, interval_s=0.2, what="supervisord and every program to exit",
    )  # fmt: skip
    assert not (clone.run_dir / "supervisor.sock").exists()


def test_fresh_clone_missing_setting_ends_fatal_with_the_line_naming_it(clone: Clone) -> None:
    """supervisord started from a shell without CHMGR_DSN: every program exits at once with one
    line naming it (status 78), is retried at most STARTRETRIES times, then stays FATAL (EXITED
    if this machine was so loaded that its imports outlasted startsecs: supervisord had already
    counted it as started, and exit status 78 is not restarted either); `chmgr status`, from a
    shell that has the settings, shows that state and that line."""
    without_dsn = {name: value for name, value in clone.env.items() if name != "CHMGR_DSN"}

    started = clone.run(".venv/bin/supervisord", "-c", "supervisord.conf", env=without_dsn)

    assert started.returncode == 0, started.stderr

    def all_gave_up() -> dict[str, str] | None:
        found = {i.name: i.state for i in clone.client.info()}
        return found if found and set(found.values()) <= GAVE_UP else None

    states = wait_for(all_gave_up, FATAL_TIMEOUT_S, interval_s=0.5, what="every program FATAL (or EXITED)")
    code, rows, output = clone.status_rows()
    assert code == 1
    assert sorted(states) == sorted(PROGRAMS)
    for name in PROGRAMS:
        assert states[name] in rows[name]
        log = [entry for entry in (clone.run_dir / "logs" / f"{name}.log").read_text().splitlines() if entry]
        assert log[-1].startswith(f"{name}: configuration error: CHMGR_DSN: required, not set")
        assert log == [log[-1]] * len(log)  # one line per start and nothing else
        assert len(log) == STARTRETRIES + 1 if states[name] == "FATAL" else 1 <= len(log) <= STARTRETRIES + 1
        assert f"{name} {states[name]}: {log[-1]} (last line of {clone.run_dir}/logs/{name}.log)" in output
    supervisord_pid = int((clone.run_dir / "supervisord.pid").read_text())
    assert clone.processes() == {supervisord_pid}  # no program left running or respawning


def test_fresh_clone_chmgr_run_dir_wins_through_chmgr_up(clone: Clone) -> None:
    """With CHMGR_RUN_DIR exported, `chmgr up` runs supervisord from a copy of the conf rendered
    for it: every socket, log and the programs' CHMGR_RUN_DIR are there, nothing in the clone's
    run/, and `supervisorctl -c $CHMGR_RUN_DIR/supervisord.conf` talks to it."""
    run_dir = clone.path.parent / "r"  # /tmp/chf-…/r: created by `chmgr up`
    env = {**clone.env, "CHMGR_RUN_DIR": str(run_dir)}

    up = clone.chmgr("up", env=env)

    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("supervisord running (pid ")
    client = SupervisorClient(run_dir / "supervisor.sock")
    wait_for(
        lambda: all(info.state == "RUNNING" for info in client.info()), HEALTHY_TIMEOUT_S, interval_s=0.5,
        what="every program RUNNING",
    )  # fmt: skip
    programs = {info.pid for info in client.info() if info.pid is not None}  # all RUNNING: each has one
    run_dirs = {_environ(info.pid).get("CHMGR_RUN_DIR") for info in client.info() if info.pid}
    ctl = clone.run(".venv/bin/supervisorctl", "-c", str(run_dir / "supervisord.conf"), "status", env=env)
    assert ctl.returncode == 0, ctl.stdout + ctl.stderr
    assert sum("RUNNING" in line for line in ctl.stdout.splitlines()) == len(PROGRAMS)
    assert run_dirs == {str(run_dir)}  # the conf's environment= handed every program the same
    assert {"bus-in.sock", "bus-out.sock", "supervisord.pid"} <= {path.name for path in run_dir.iterdir()}
    assert {path.name for path in clone.run_dir.rglob("*")} == {".gitignore", "logs"}  # the clone's run/ untouched
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700  # created by chmgr, so made private

    down = clone.chmgr("down", env=env)

    assert down.returncode == 0, down.stderr
    wait_for(lambda: not any(_alive(pid) for pid in programs) and not clone.processes(), GONE_TIMEOUT_S,
             interval_s=0.2, what="every program to exit")  # fmt: skip

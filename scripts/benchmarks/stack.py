"""Real programs for benchmarks: environment, start/stop, a throwaway database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import zmq

from coldharbour.config import load_settings
from coldharbour.db import schema
from coldharbour.messages import Heartbeat, decode
from coldharbour.sim.postgres import PgCluster, free_port

ACCOUNT = "bench"


def environ(dsn: str, run_dir: Path, **extra: str) -> dict[str, str]:
    """Return the environment for the programs of one benchmark."""
    env = {
        "CHMGR_DSN": dsn,
        "CHMGR_RUN_DIR": str(run_dir),
        "CHMGR_ACCOUNTS": ACCOUNT,
        "ALPACA_API_KEY_BENCH": "bench-key",
        "ALPACA_SECRET_KEY_BENCH": "bench-secret",
        "ALPACA_BASE_URL_BENCH": "http://127.0.0.1:9",
        "LOG_LEVEL": "WARNING",
        # Its own port: web's default (8765) is taken by any other stack on the host, and a web
        # that cannot bind exits (it did in a 1,000-account step beside another benchmark).
        "CHMGR_WEB_BIND": f"127.0.0.1:{free_port()}",
    }
    env.update(extra)
    return env


def migrate(dsn: str, env: dict[str, str]) -> None:
    """Create the schema for the benchmark account."""
    settings = load_settings(env)
    with psycopg.connect(dsn) as conn:
        schema.ensure_schema(conn, settings)


@contextmanager
def cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL for the whole run."""
    pg = PgCluster()
    pg.init()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@contextmanager
def run_dir() -> Iterator[Path]:
    """A short temporary run directory (unix socket paths must stay short)."""
    with tempfile.TemporaryDirectory(prefix="chb-", dir="/tmp") as path:
        yield Path(path)


class Program:
    """One real program (``python -m workers.<name>``) for a benchmark."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = (log_dir / f"{name}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"workers.{name}"], env={**os.environ, **env},
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.close()


def rss_mb(pid: int) -> float:
    """Return the resident set size of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """Return the proportional set size of ``pid`` in MB (shared pages split among their users: sums add up)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident set size (VmHWM) of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_until(predicate, timeout_s: float, what: str):
    """Poll ``predicate`` until truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"bench: timed out waiting for {what}")


class Heartbeats:
    """A SUB on ``bus_out`` keeping every heartbeat (``hb.*``) in arrival order."""

    def __init__(self, bus_out: str) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"hb.")
        self._sock.connect(bus_out)
        self.seen: list[Heartbeat] = []

    def poll(self, timeout_ms: int = 10) -> list[Heartbeat]:
        """Drain what arrived; return every heartbeat so far."""
        while self._sock.poll(timeout_ms):
            _topic, payload = self._sock.recv_multipart()
            message = decode(payload)
            if isinstance(message, Heartbeat):
                self.seen.append(message)
            timeout_ms = 0
        return self.seen

    def latest(self, program: str) -> Heartbeat | None:
        """Return the newest heartbeat of ``program``."""
        found = [hb for hb in self.poll() if hb.program == program]
        return found[-1] if found else None

    def counter(self, program: str, name: str) -> int:
        """Return ``program``'s counter ``name`` in its newest heartbeat (0 before any)."""
        latest = self.latest(program)
        return 0 if latest is None else latest.counters.get(name, 0)

    def next(self, program: str, timeout_s: float = 10.0) -> Heartbeat:
        """Wait for a heartbeat of ``program`` newer than the ones seen so far."""
        count = len([hb for hb in self.poll() if hb.program == program])
        found: list[Heartbeat] = wait_until(
            lambda: [hb for hb in self.poll() if hb.program == program][count:][-1:] or None,
            timeout_s, f"a heartbeat of {program}")
        return found[0]

    def close(self) -> None:
        """Close the socket."""
        self._sock.close(linger=0)
        self._ctx.term()


_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int) -> float:
    """Return user + system CPU of ``pid`` in ms (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * _TICK_MS


def reaped_cpu_ms(pid: int) -> float:
    """Return the user + system CPU of ``pid``'s children that ended and were waited for, in ms."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) * _TICK_MS


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent:
                found.append(int(entry.name))
    return found


def postmaster(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:  # read while the backend lives: its parent is the postmaster
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(Path(f"/proc/{row[0]}/stat").read_text().rpartition(")")[2].split()[1])


class CpuMeter:
    """CPU per program (and the PostgreSQL cluster) between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int], postmaster: int) -> None:
        self._pids = pids
        self._postmaster = postmaster
        self._before: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_ms(pid) for name, pid in self._pids.items()}
        sample["postgres"] = (cpu_ms(self._postmaster) + reaped_cpu_ms(self._postmaster)
                              + sum(map(cpu_ms, children(self._postmaster))))  # backends that ended count too
        return sample

    def start(self) -> None:
        self._before = self._sample()

    def spent_ms(self) -> dict[str, float]:
        """Return the CPU ms each spent since ``start``."""
        after = self._sample()
        return {name: after[name] - self._before[name] for name in after}

    def per_fill(self, fills: int) -> dict[str, float]:
        after = self._sample()
        return {name: round((after[name] - self._before[name]) / max(fills, 1), 4) for name in after}

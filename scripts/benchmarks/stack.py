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

from coldharbour.config import load_settings
from coldharbour.db import schema
from coldharbour.sim.postgres import PgCluster

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
    }
    env.update(extra)
    return env


def migrate(dsn: str, env: dict[str, str]) -> None:
    """Create the schema for the benchmark account."""
    settings = load_settings(env)
    with psycopg.connect(dsn) as conn:
        schema.ensure_schema(conn, settings)  # type: ignore[arg-type]


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


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident set size (VmHWM) of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_until(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"bench: timed out waiting for {what}")

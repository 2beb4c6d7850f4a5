"""A throwaway PostgreSQL cluster for tests, the demo and benchmarks (never production).

``initdb``/``pg_ctl`` refuse to run as root, so when we are root they run as the ``postgres``
user, in a temporary directory it owns. The server listens on 127.0.0.1 only, on a free port,
with its unix socket directory inside the temporary directory; speed settings (``fsync=off``)
are fine here because the data is thrown away.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from coldharbour.config import Dsn


class ClusterError(RuntimeError):
    """The throwaway cluster could not be created or started."""


def find_bindir() -> Path:
    """Return the directory holding ``initdb`` and ``pg_ctl``; raise ``ClusterError`` if none."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise ClusterError("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql-15")


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<port>; ``destroy()`` removes everything."""

    def __init__(self, base: Path | None = None) -> None:
        self.bindir = find_bindir()
        self.base = base or Path(tempfile.mkdtemp(prefix="chmgr-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.log = self.base / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        return subprocess.run(command, capture_output=True, text=True, cwd=self.base, env=env, timeout=120)

    def init(self) -> None:
        """Create the data directory (as ``postgres`` when root)."""
        self.sockets.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            for path in (self.base, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(self.base, 0o755)  # noqa: S103 - postgres must traverse it; the data dir stays 0700
        result = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"
        )
        if result.returncode != 0:
            raise ClusterError(f"initdb failed: {result.stderr.strip()[-500:]}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        result = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )
        if result.returncode != 0:
            log_tail = self.log.read_text()[-800:] if self.log.exists() else ""
            raise ClusterError(f"pg_ctl start failed: {result.stderr.strip()[-300:]} {log_tail}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` simulates a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def dsn(self, dbname: str = "postgres", password: str | None = None) -> Dsn:
        """Return a DSN for ``dbname`` (a password is accepted and ignored: trust auth)."""
        auth = f"postgres:{password}" if password else "postgres"
        return Dsn(f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}")

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """Return an autocommit superuser connection to the ``postgres`` database."""
        return psycopg.connect(self.dsn().reveal(), autocommit=True)

    def create_database(self, template: str = "template0", name: str | None = None) -> str:
        """Create and return a fresh database cloned from ``template``."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
            conn.execute(statement.format(sql.Identifier(name), sql.Identifier(template)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever is still connected."""
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def destroy(self) -> None:
        """Stop the server and remove every file."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

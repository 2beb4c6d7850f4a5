"""Shared pieces of the end-to-end tests: real programs over ipc://, a feed PUB, a LISTEN client.

``Programs`` starts ``python -m workers.<name>`` processes (``tests.integration.programs``) in
one short run directory and watches their heartbeats; ``Feed`` is the external price feed (a
ZMQ PUB the test binds, SPEC §4 frames from ``coldharbour.sim.feed.encode_trade``); ``Notes``
is a LISTEN client that records each NOTIFY with its arrival time; ``Db`` is one autocommit
connection for the test's own reads.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import zmq
from psycopg import sql

from coldharbour.config import Dsn
from coldharbour.messages import Heartbeat
from coldharbour.sim.feed import Tick as SimTick
from coldharbour.sim.feed import encode_trade
from tests.integration.programs import HeartbeatWatch, Program
from tests.support import make_environ, wait_for

POSITIONS = "accounts.account_open_positions_demo"
CLOSED = "accounts.account_closed_demo"
RAW_ORDERS = "account_activities.raw_orders_demo"
RAW_ACTIVITIES = "account_activities.raw_activities_demo"
RECONCILIATIONS = "accounts.reconciliations_demo"  # our recon: fills, never among the broker's activities
CHANNELS = ("pos_channel_demo", "closed_channel_demo", "metrics_channel_demo")


@dataclass(frozen=True)
class Note:
    """One NOTIFY as the LISTEN client received it."""

    channel: str
    payload: dict[str, Any]
    at: float  # time.monotonic() when it was read


@dataclass
class Notes:
    """A LISTEN connection on ``channels``; ``poll()`` reads whatever has arrived."""

    dsn: Dsn
    channels: Iterable[str] = CHANNELS
    items: list[Note] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._conn = psycopg.connect(self.dsn.reveal(), autocommit=True)
        for channel in self.channels:
            self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def poll(self, timeout_s: float = 0.0) -> list[Note]:
        """Read the notifications that arrived (waiting up to ``timeout_s`` for the first); return all."""
        for note in self._conn.notifies(timeout=timeout_s, stop_after=10_000):
            self.items.append(Note(note.channel, json.loads(note.payload), time.monotonic()))
        if timeout_s == 0.0:  # notifies(timeout=0) may return before reading what is buffered
            for note in self._conn.notifies(timeout=0.001, stop_after=10_000):
                self.items.append(Note(note.channel, json.loads(note.payload), time.monotonic()))
        return self.items

    def mark(self) -> int:
        """Return the current count (for ``since``)."""
        self.poll()
        return len(self.items)

    def since(self, start: int, channel: str) -> list[Note]:
        """Return the notes on ``channel`` received after ``mark()`` returned ``start``."""
        return [note for note in self.poll()[start:] if note.channel == channel]

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def pushed_rows(notes: Iterable[Note]) -> list[dict[str, Any]]:
    """Return every open-position row pushed in ``notes`` (single rows and batches)."""
    rows: list[dict[str, Any]] = []
    for note in notes:
        if "row" in note.payload:
            rows.append(note.payload["row"])
        elif note.payload.get("op") == "batch":
            rows.extend(note.payload["rows"])
    return rows


def pushed_deletes(notes: Iterable[Note]) -> list[str]:
    """Return every ``parent_id`` whose deletion was pushed in ``notes``."""
    deleted: list[str] = []
    for note in notes:
        if note.payload.get("op") == "delete":
            deleted.append(note.payload["parent_id"])
        elif note.payload.get("op") == "batch":
            deleted.extend(note.payload["deletes"])
    return deleted


class Db:
    """One autocommit connection for the test's reads."""

    def __init__(self, dsn: Dsn) -> None:
        self._conn = psycopg.connect(dsn.reveal(), autocommit=True)

    def rows(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Return the rows of ``query``."""
        return self._conn.execute(query, params or None).fetchall()

    def dicts(self, query: str, *params: object) -> list[dict[str, Any]]:
        """Return the rows of ``query`` as column → value mappings."""
        cursor = self._conn.execute(query, params or None)
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class Feed:
    """The external price feed: a PUB socket the ``prices`` program subscribes to."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.bind(endpoint)

    def send(self, symbol: str, price: float, size: int = 100) -> None:
        """Publish one trade at ``price`` stamped now."""
        self._sock.send(encode_trade(SimTick(symbol, price, size, (), time.time_ns())))

    def close(self) -> None:
        """Close the socket and its context."""
        self._sock.close(linger=0)
        self._ctx.term()


class Programs:
    """Real programs in one run directory, their heartbeats, and a clean stop."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.running: dict[str, Program] = {}
        self.exit_codes: dict[str, list[int]] = {}
        self.watch = HeartbeatWatch(env.get("CHMGR_BUS_OUT", f"ipc://{directory}/run/bus-out.sock"))

    def start(self, *names: str, timeout_s: float = 30.0) -> None:
        """Start ``names`` and wait for a heartbeat from each new process."""
        for name in names:
            self.running[name] = Program(name, self.env, self.directory)
        pids = {name: self.running[name].process.pid for name in names}
        self.watch.wait(
            lambda beats: all(name in beats and beats[name].pid == pid for name, pid in pids.items()),
            timeout_s,
            what=f"heartbeats of {', '.join(names)}",
        )

    def stop(self, name: str) -> int:
        """SIGTERM ``name``; return and remember its exit code."""
        program = self.running.pop(name)
        code = program.terminate()
        self.exit_codes.setdefault(name, []).append(code)
        return code

    def heartbeat(self, name: str) -> Heartbeat | None:
        """Return the newest heartbeat of ``name`` (drains the watch)."""
        return self.watch.poll().get(name)

    def counter(self, name: str, key: str) -> int:
        """Return ``key`` of ``name``'s newest heartbeat counters (0 before any)."""
        beat = self.heartbeat(name)
        return 0 if beat is None else beat.counters.get(key, 0)

    def wait_counter(self, name: str, key: str, at_least: int, timeout_s: float = 20.0) -> int:
        """Wait until ``name``'s heartbeat shows ``key`` ≥ ``at_least``; return the value."""
        return wait_for(
            lambda: (value := self.counter(name, key)) >= at_least and value,
            timeout_s,
            interval_s=0.05,
            what=f"{name} counter {key} >= {at_least}",
        )

    def logs(self) -> dict[str, str]:
        """Return the tail of every program's log (for assertion messages)."""
        return {path.stem: path.read_text(errors="replace")[-3000:] for path in self.directory.glob("*.log")}

    def close(self) -> dict[str, list[int]]:
        """Stop every running program (last started first); return all exit codes."""
        try:
            for name in reversed(list(self.running)):
                self.stop(name)
        finally:
            for program in self.running.values():
                program.kill()
            self.watch.close()
        return self.exit_codes


def all_clean(exit_codes: dict[str, list[int]]) -> bool:
    """Return True when every program exited 0 every time it was stopped."""
    return all(code == 0 for codes in exit_codes.values() for code in codes)


def short_directory() -> Path:
    """Return a new short directory for ipc:// sockets (paths are limited to ~107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="chm-e2e-"))


def broker_environ(dsn: Dsn, directory: Path, broker_url: str, **extra: str) -> dict[str, str]:
    """Return the environment of programs mirroring the fake broker's ``demo`` account."""
    return make_environ(
        dsn,
        directory / "run",
        ("demo",),
        ALPACA_API_KEY_DEMO="demo-key",
        ALPACA_SECRET_KEY_DEMO="demo-secret",
        ALPACA_BASE_URL_DEMO=broker_url,
        ZMQ_SIP_STREAM_ENDPOINT=f"ipc://{directory}/feed.sock",
        **extra,
    )

"""Helpers for tests that run real programs as subprocesses (``python -m workers.<name>``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import zmq

from coldharbour.messages import Heartbeat, decode
from tests.support import wait_for


class Program:
    """One real program process with its stderr captured to a file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"workers.{name}"],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        """Return everything the program printed so far."""
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 20.0) -> int:
        """Send SIGTERM and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL the process group (teardown)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()


class HeartbeatWatch:
    """A SUB socket on ``bus_out`` collecting heartbeats (polled from the test thread)."""

    def __init__(self, bus_out: str) -> None:
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"hb.")
        self._sock.connect(bus_out)
        self.latest: dict[str, Heartbeat] = {}

    def poll(self) -> dict[str, Heartbeat]:
        """Drain what arrived and return the latest heartbeat per program."""
        while self._sock.poll(10):
            _topic, payload = self._sock.recv_multipart()
            try:
                message = decode(payload)
            except msgspec.DecodeError:
                continue
            if isinstance(message, Heartbeat):
                self.latest[message.program] = message
        return self.latest

    def wait(self, predicate, timeout_s: float = 20.0, what: str = "heartbeat"):
        """Wait until ``predicate(latest)`` holds."""
        return wait_for(lambda: predicate(self.poll()), timeout_s, what=what)

    def close(self) -> None:
        """Close the socket and context."""
        self._sock.close(linger=0)
        self._ctx.term()

"""The `web` program's code run in-process for the fast tests: a thread with its own event loop.

``Dashboard`` starts ``run_dashboard`` on port 0 (the bound port comes back through
``on_ready``), exposes its ``Hub`` and URL, and stops it with the same ``stop`` event SIGTERM
sets in the real program.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import zmq

from coldharbour import runtime
from coldharbour.config import Settings
from coldharbour.web import guard
from coldharbour.web.hub import Hub
from coldharbour.web.service import run_dashboard


class Dashboard:
    """A running dashboard: ``url``, ``hub``, ``counters``; ``close()`` stops it."""

    def __init__(self, settings: Settings, timeout_s: float = 20.0, max_connections: int | None = None) -> None:
        self.settings = settings
        self._max_connections = guard.MAX_CONNECTIONS if max_connections is None else max_connections
        self.url = ""
        self.hub: Hub | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._zmq: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.ctx = runtime.WorkerContext("web", settings, self._zmq)
        self._thread = threading.Thread(target=self._run, name="dashboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self.error is not None:
            raise AssertionError(f"dashboard did not start: {self.error!r}")

    @property
    def counters(self) -> Any:
        """Return the program's counters."""
        return self.ctx.counters

    def _on_ready(self, hub: Hub, port: int) -> None:
        self.hub = hub
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            await run_dashboard(
                self.settings,
                self.ctx,
                self._stop,
                port=0,
                on_ready=self._on_ready,
                max_connections=self._max_connections,
            )

        try:
            self.loop.run_until_complete(main())
        except BaseException as e:  # reported by the constructor or close()
            self.error = e
            self._ready.set()
        finally:
            self.loop.close()

    def call(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the dashboard's loop (e.g. ``hub.close_all``)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        """Stop serving and wait for the thread."""
        if self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
        self.ctx.close()
        self._zmq.destroy(linger=0)
        if self.error is not None:
            raise AssertionError(f"dashboard failed: {self.error!r}")

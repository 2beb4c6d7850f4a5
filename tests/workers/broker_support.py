"""Run a broker-facing worker's ``amain`` in-process against the bus fixture and a fake broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path

from coldharbour import runtime
from coldharbour.config import Settings
from tests.fixtures.broker import FakeBroker
from tests.fixtures.bus import InprocBus
from tests.support import make_settings

AMain = Callable[[Settings, runtime.WorkerContext, asyncio.Event], Coroutine[object, object, None]]
UNUSED_DSN = "postgresql://chmgr@127.0.0.1:1/unused"


def worker_settings(bus: InprocBus, tmp_path: Path, broker: FakeBroker | None = None, **env: str) -> Settings:
    """Return settings for account ``demo`` on ``bus`` (and ``broker``, with its real keys)."""
    # A budget far above the fake's limit: these tests are about other things (tests of the
    # budget set ALPACA_REST_BUDGET_PER_MIN themselves).
    extra = {"CHMGR_BUS_IN": bus.bus_in, "CHMGR_BUS_OUT": bus.bus_out, "ALPACA_REST_BUDGET_PER_MIN": "6000", **env}
    if broker is not None:
        key, secret = broker.keys("demo")
        extra.setdefault("ALPACA_API_KEY_DEMO", key)
        extra.setdefault("ALPACA_SECRET_KEY_DEMO", secret)
        extra["ALPACA_BASE_URL_DEMO"] = broker.base_url
    settings: Settings = make_settings(UNUSED_DSN, tmp_path, ("demo",), **extra)
    return settings


class InProcessWorker:
    """``amain`` running as a task with a real ``WorkerContext`` on the bus fixture's context."""

    def __init__(self, program: str, amain: AMain, settings: Settings, bus: InprocBus) -> None:
        self.ctx = runtime.WorkerContext(program, settings, bus.ctx)
        self.stop = asyncio.Event()
        self._amain, self._settings = amain, settings
        self.task: asyncio.Task[None] | None = None

    def start(self) -> InProcessWorker:
        self.task = asyncio.create_task(self._amain(self._settings, self.ctx, self.stop))
        return self

    async def close(self, timeout_s: float = 15.0) -> None:
        """Stop the worker like SIGTERM would and wait for a clean return."""
        self.stop.set()
        assert self.task is not None
        try:
            await asyncio.wait_for(self.task, timeout_s)
        finally:
            self.ctx.close()

"""The `web` program's life: check the bind, open the read-only pool, LISTEN, serve, stop.

``run_dashboard`` is what ``workers/web.py`` runs (and what tests run in-process, with port 0
and ``on_ready`` to learn the bound port). A non-loopback bind without ``CHMGR_WEB_TOKEN``
raises ``ConfigError`` before anything is opened (``runtime.run`` logs it as one line, exit 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from coldharbour import runtime
from coldharbour.config import Settings
from coldharbour.db.connect import read_only_pool
from coldharbour.messages import PREFIX_HEARTBEAT
from coldharbour.retry import sleep_or_stop
from coldharbour.web import access, app, guard
from coldharbour.web.figures import PREFIX_SNAPSHOT, AccountFigures
from coldharbour.web.health import Heartbeats
from coldharbour.web.hub import Clock, Hub

PROGRAM = "web"
POOL_SIZE = 4


def _now() -> datetime:
    return datetime.now(UTC)


async def run_dashboard(
    settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event, *,
    clock: Clock = _now, port: int | None = None, on_ready: Callable[[Hub, int], None] | None = None,
    max_connections: int = guard.MAX_CONNECTIONS,
) -> None:  # fmt: skip
    """Serve the dashboard until ``stop`` (``port`` overrides the bind's port, 0 = any free one;
    past ``max_connections`` open at once a new connection is answered 503)."""
    host, bind_port = access.check_bind(settings)
    beats = Heartbeats(ctx.subscriber([PREFIX_HEARTBEAT]), ctx.counters)
    async with read_only_pool(settings.reader_dsn, PROGRAM, max_size=POOL_SIZE) as pool:
        hub = Hub(settings, pool, ctx.counters, clock, beats.latest)
        figures = AccountFigures(ctx.subscriber([PREFIX_SNAPSHOT]), hub)
        tasks = [
            asyncio.create_task(hub.listen(stop), name="web-listen"),
            asyncio.create_task(hub.metrics_loop(stop), name="web-metrics"),
            asyncio.create_task(hub.equity_loop(stop), name="web-equity"),
            asyncio.create_task(hub.status_loop(stop), name="web-status"),
            asyncio.create_task(hub.keepalive_loop(stop), name="web-keepalive"),
            asyncio.create_task(beats.run(stop), name="web-heartbeats"),
            asyncio.create_task(figures.run(stop), name="web-figures"),
        ]
        for task in tasks:
            task.add_done_callback(runtime.log_task_exception)
        runner, bound = await app.start(hub, host, bind_port if port is None else port, max_connections)
        try:
            if on_ready is not None:
                on_ready(hub, bound)
            ctx.counters["sse_clients"] = hub.client_count()
            while not await sleep_or_stop(stop, 1.0):
                ctx.counters["sse_clients"] = hub.client_count()
        finally:
            await app.stop_serving(hub, runner)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            beats.close()
            figures.close()

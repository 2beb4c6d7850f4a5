"""`web`: the dashboard and its JSON API (``coldharbour.web``), on ``CHMGR_WEB_BIND``.

Inputs: the DB read-only (one LISTEN connection on every account's channels, a small pool for
reads), bus heartbeats and supervisord (program health). Outputs: HTTP and Server-Sent Events
to browsers; nothing on the bus but its own heartbeat.
"""

from __future__ import annotations

import asyncio
import sys

from coldharbour import runtime
from coldharbour.config import Settings
from coldharbour.web.service import run_dashboard


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Serve the dashboard with the wall clock."""
    await run_dashboard(settings, ctx, stop)


def main() -> int:
    """Run the web program."""
    return runtime.run("web", amain)


if __name__ == "__main__":
    sys.exit(main())

"""`bus`: the XSUB/XPUB proxy every other program publishes into and subscribes from.

Inputs: PUB connections on ``CHMGR_BUS_IN``. Outputs: SUB connections on ``CHMGR_BUS_OUT``.
No DB, no broker. Started first (supervisord priority); publishes its own ``hb.bus``.
"""

from __future__ import annotations

import asyncio
import sys

from coldharbour import runtime
from coldharbour.bus import Proxy
from coldharbour.config import Settings


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Forward messages from ``bus_in`` to ``bus_out`` until stopped."""
    proxy = Proxy(ctx.zmq, settings.bus_in, settings.bus_out)
    proxy.start()
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(proxy.stop)


def main() -> int:
    """Run the bus proxy program."""
    return runtime.run("bus", amain)


if __name__ == "__main__":
    sys.exit(main())

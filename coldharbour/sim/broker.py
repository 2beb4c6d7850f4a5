"""Run the fake Alpaca broker: REST under /v2, control routes under /sim, the stream at /stream.

Usage::

    python -m coldharbour.sim.broker --port 8765 [--seed 7] [--partial-fills]
        [--account NAME:KEY:SECRET ...] [--rest-limit-per-min 200] [--history-sessions N]

Without ``--account`` there is one account ``demo`` (key ``demo-key``, secret ``demo-secret``);
every account starts with $100,000 cash (``--history-sessions N``: and has traded the last N
completed sessions, with deposits, a dividend, fees, a withdrawal: ``sim/past.py``). The server
listens on 127.0.0.1 only and, once bound,
prints ``listening port=<N>`` on stdout (useful with ``--port 0``). Point alpaca-py at it with
``TradingClient(key, secret, url_override="http://127.0.0.1:<N>")``,
``TradingStream(key, secret, url_override="ws://127.0.0.1:<N>/stream")`` and, for bars,
``StockHistoricalDataClient(key, secret, url_override="http://127.0.0.1:<N>")`` and, for live
trades of the prices it is given, ``StockDataStream(key, secret,
url_override="ws://127.0.0.1:<N>/v2/iex")`` (sim/market_stream.py).
Each key may make ``--rest-limit-per-min`` REST requests a minute (Alpaca's 200 by default; 0:
no limit, for load generators whose own orders are the load); beyond, 429 (sim/limits.py).
SIGTERM or Ctrl-C stops it with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from coldharbour.retry import finish_or_cancel, sleep_or_stop
from coldharbour.sim.calendar import MarketCalendar, load_calendar
from coldharbour.sim.control import add_control_routes
from coldharbour.sim.engine import DEFAULT_ACCOUNTS, AccountSpec, Engine, EngineConfig
from coldharbour.sim.http import (
    CONTEXT,
    BrokerContext,
    add_trading_routes,
    alpaca_auth,
    errors_as_json,
    injected_faults,
    rate_limits,
)
from coldharbour.sim.limits import DEFAULT_REST_LIMIT_PER_MIN, RestLimits
from coldharbour.sim.market_stream import add_market_data_routes
from coldharbour.sim.past import history_start, trade_past_sessions
from coldharbour.sim.ws import StreamHub

log = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
EXPIRY_INTERVAL_S: Final = 1.0


def system_clock() -> datetime:
    """Return the current time, aware UTC."""
    return datetime.now(UTC)


def build_app(context: BrokerContext) -> web.Application:
    """Return the aiohttp application serving every route of the fake broker."""
    app = web.Application(middlewares=[errors_as_json, injected_faults, alpaca_auth, rate_limits])
    app[CONTEXT] = context
    add_trading_routes(app)
    add_control_routes(app)
    app.router.add_get("/stream", context.hub.handle)
    app.router.add_get("/stream/", context.hub.handle)
    add_market_data_routes(app)  # /v2/iex, /v2/sip, /v1beta3/crypto/us and their /sim controls

    async def close_streams(_: web.Application) -> None:
        await context.hub.drop_all()

    app.on_shutdown.append(close_streams)
    return app


class BrokerServer:
    """One fake broker on ``127.0.0.1``; ``start`` binds it, ``stop`` closes everything."""

    def __init__(
        self,
        accounts: Sequence[AccountSpec] = DEFAULT_ACCOUNTS,
        *,
        port: int = 0,
        seed: int = 0,
        partial_fills: bool = False,
        clock: Callable[[], datetime] = system_clock,
        calendar: MarketCalendar | None = None,
        rest_limit_per_min: int = DEFAULT_REST_LIMIT_PER_MIN,
        history_sessions: int = 0,
    ) -> None:
        self.requested_port = port
        calendar = calendar or load_calendar()
        now = clock()
        engine = Engine(
            accounts,
            history_start(calendar, now, history_sessions),
            seed=seed,
            config=EngineConfig(partial_fills=False),
            session_close=calendar.session_close,
        )
        # An account with history (sim/past.py): traded over the last sessions before it serves.
        self.history = trade_past_sessions(engine, calendar, now, sessions=history_sessions, seed=seed)
        engine.config.partial_fills = partial_fills
        hub = StreamHub(self._authenticate)
        self.context = BrokerContext(
            engine=engine, hub=hub, calendar=calendar, clock=clock, limits=RestLimits(rest_per_min=rest_limit_per_min)
        )
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _authenticate(self, key_id: str, secret: str) -> str | None:
        account = self.context.engine.account_for_key(key_id)
        return account.name if account is not None and account.secret_key == secret else None

    @property
    def base_url(self) -> str:
        """Return the HTTP origin (no trailing slash), as alpaca-py's ``url_override`` wants."""
        return f"http://{HOST}:{self.port}"

    @property
    def stream_url(self) -> str:
        """Return the trade_updates WebSocket URL."""
        return f"ws://{HOST}:{self.port}/stream"

    async def start(self) -> int:
        """Bind and serve; return the bound port."""
        self._runner = web.AppRunner(build_app(self.context), access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.requested_port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._expiry_task = asyncio.create_task(self._expire_forever(), name="sim-expiry")
        log.info("fake broker listening port=%d accounts=%d", self.port, len(self.context.engine.accounts))
        return self.port

    async def _expire_forever(self) -> None:
        while not await sleep_or_stop(self._stopping, EXPIRY_INTERVAL_S):
            try:
                self.context.publish(self.context.engine.expire_orders(self.context.clock()))
            except Exception:
                log.exception("order expiry failed")

    async def stop(self) -> None:
        """Close the stream connections and the listening socket."""
        self._stopping.set()
        if self._expiry_task is not None:
            await finish_or_cancel(self._expiry_task, EXPIRY_INTERVAL_S)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def parse_account(text: str) -> AccountSpec:
    """Return the account of a ``NAME:KEY:SECRET`` argument."""
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected NAME:KEY:SECRET, found {text!r}")
    return AccountSpec(*parts)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Return the parsed command line (exits 2 on a usage error)."""
    parser = argparse.ArgumentParser(prog="python -m coldharbour.sim.broker", description="Run the fake Alpaca broker.")
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and bar history")
    parser.add_argument(
        "--account",
        type=parse_account,
        action="append",
        default=[],
        metavar="NAME:KEY:SECRET",
        help="an account (repeatable)",
    )
    parser.add_argument("--partial-fills", action="store_true", help="fill orders in several executions")
    parser.add_argument(
        "--history-sessions",
        type=int,
        default=0,
        metavar="N",
        help="trade every account over the last N completed sessions before serving (sim/past.py)",
    )
    parser.add_argument(
        "--rest-limit-per-min",
        type=int,
        default=DEFAULT_REST_LIMIT_PER_MIN,
        help="REST requests a minute per key before 429 (0: no limit)",
    )
    return parser.parse_args(argv)


async def serve(arguments: argparse.Namespace) -> None:
    """Run the broker until SIGTERM/SIGINT."""
    server = BrokerServer(
        arguments.account or DEFAULT_ACCOUNTS,
        port=arguments.port,
        seed=arguments.seed,
        partial_fills=arguments.partial_fills,
        rest_limit_per_min=max(0, arguments.rest_limit_per_min),
        history_sessions=max(0, arguments.history_sessions),
    )
    port = await server.start()
    print(f"listening port={port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the fake broker from the command line; return the exit code."""
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(serve(arguments))
    except OSError as e:
        log.error("cannot serve port=%d error=%s", arguments.port, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

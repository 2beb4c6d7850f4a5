"""`trades`: one trade_updates stream per account, published as order/fill updates.

Inputs: the broker's trade_updates WebSocket of every account with ``ENABLE_TRADE_STREAM``
(alpaca-py ``TradingStream``, our own client as fallback); bus ``snap.*`` (the open orders the
silence watchdog needs); REST only to check a fill for an order it never heard of (urgent, within
the key's request budget, ``broker.budget``).
Outputs: ``trade.<slug>`` (``OrderUpdated``), ``cmd.resync.<slug>``
(``ResyncRequested`` after every (re)connect; the WAC refresh after a fill is ``state``'s). No DB.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys

import aiohttp

from coldharbour import runtime
from coldharbour.broker.budget import budget_for
from coldharbour.broker.listener import UpdateListener
from coldharbour.broker.rest import BrokerRest
from coldharbour.broker.runner import cancel_quietly, run_until_stopped
from coldharbour.broker.stream import TradeStream
from coldharbour.config import AccountSettings, Settings
from coldharbour.messages import SnapshotTaken
from coldharbour.retry import supervise

log = logging.getLogger("workers.trades")

PREFIX_SNAPSHOT = "snap."


async def _follow_snapshots(ctx: runtime.WorkerContext, listeners: dict[str, UpdateListener]) -> None:
    subscriber = ctx.subscriber([PREFIX_SNAPSHOT])
    try:
        while True:
            for _, message in await subscriber.recv_batch():
                if isinstance(message, SnapshotTaken) and not message.symbols and message.account in listeners:
                    listeners[message.account].set_open_orders(o.id for o in message.open_orders if o.is_live)
    finally:
        subscriber.close()


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Keep one stream per enabled account until stopped."""
    accounts = [account for account in settings.accounts if account.enable_trade_stream]
    if not accounts:
        log.warning("no account has the trade stream enabled; idle")
    async with aiohttp.ClientSession() as session:
        listeners = {
            a.slug: UpdateListener(
                a.slug, ctx.publisher, ctx.counters,
                check_order=BrokerRest(
                    a, session, ctx.counters, budget=budget_for(settings, a), stop=stop
                ).urgent().order_exists,
                conditions=ctx.conditions, account_name=a.name,
            )
            for a in accounts
        }
        await _run_streams(accounts, listeners, ctx, stop)


async def _run_streams(
    accounts: list[AccountSettings],
    listeners: dict[str, UpdateListener],
    ctx: runtime.WorkerContext,
    stop: asyncio.Event,
) -> None:
    tasks = [
        asyncio.create_task(
            supervise(
                f"trades-{a.slug}", functools.partial(TradeStream(a, listeners[a.slug]).run, stop), stop, ctx.counters
            ),
            name=f"trades-{a.slug}",
        )
        for a in accounts
    ]
    follower = asyncio.create_task(_follow_snapshots(ctx, listeners), name="trades-snapshots")
    try:
        await run_until_stopped(stop, tasks)
    finally:
        await cancel_quietly(follower)


def main() -> int:
    """Run the trades program."""
    return runtime.run("trades", amain)


if __name__ == "__main__":
    sys.exit(main())

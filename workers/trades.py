"""`trades`: one trade_updates stream per account, published as order/fill updates.

Inputs: the broker's trade_updates WebSocket of every account with ``ENABLE_TRADE_STREAM``
(alpaca-py ``TradingStream``, our own client as fallback); bus ``snap.*`` (the open orders the
silence watchdog needs); REST only to check a fill for an order it never heard of (urgent, within
the key's request budget, ``broker.budget``).
Outputs: ``trade.<slug>`` (``OrderUpdated``), ``cmd.resync.<slug>``
(``ResyncRequested`` after every (re)connect; the WAC refresh after a fill is ``state``'s). No DB.
Heartbeat: ``streams_open`` of ``streams_total`` (start-up progress: n of N accounts streaming).

Start-up: at most ``OPENING_AT_ONCE`` streams are being opened at a time, and an account's
stream is opened only when its key's REST budget would let a background request through (each
(re)connect asks ``snapshot`` for a full resync, which spends that budget): a thousand accounts
open in waves instead of a thousand handshakes and resyncs at once (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from typing import Final

import aiohttp

from coldharbour import runtime
from coldharbour.broker.budget import BudgetStopped, RestBudget, budget_for
from coldharbour.broker.listener import UpdateListener
from coldharbour.broker.rest import BrokerRest
from coldharbour.broker.runner import cancel_quietly, run_until_stopped
from coldharbour.broker.stream import TradeStream
from coldharbour.config import AccountSettings, Settings
from coldharbour.messages import SnapshotTaken
from coldharbour.retry import sleep_or_stop, supervise, wait_any

log = logging.getLogger("workers.trades")

PREFIX_SNAPSHOT = "snap."
OPENING_AT_ONCE: Final = 16  # streams in their handshake at the same time
OPEN_WAIT_S: Final = 10.0  # a stream not open by then gives its turn to the next (it keeps trying)
PROGRESS_INTERVAL_S: Final = 1.0


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
    budgets = {a.slug: budget_for(settings, a) for a in accounts}
    async with aiohttp.ClientSession() as session:
        listeners = {
            a.slug: UpdateListener(
                a.slug, ctx.publisher, ctx.counters,
                check_order=BrokerRest(
                    a, session, ctx.counters, budget=budgets[a.slug], stop=stop
                ).urgent().order_exists,
                conditions=ctx.conditions, account_name=a.name,
            )
            for a in accounts
        }
        await _run_streams(accounts, listeners, budgets, ctx, stop)


async def _open_then_keep(
    stream: TradeStream, budget: RestBudget, opening: asyncio.Semaphore, stop: asyncio.Event
) -> None:
    """Open ``stream`` in its turn (a free opening slot, its key's budget ready), then keep it until ``stop``."""
    task: asyncio.Task[None] | None = None
    try:
        async with opening:
            try:
                await budget.wait_ready(stop, urgent=False)
            except BudgetStopped:
                return
            task = asyncio.create_task(stream.run(stop), name=f"trades-{stream.account.slug}-run")
            await wait_any(OPEN_WAIT_S, stream.listener.open, stop)
        await task
    finally:
        if task is not None and not task.done():
            await cancel_quietly(task)


async def _report_progress(listeners: dict[str, UpdateListener], ctx: runtime.WorkerContext,
                           stop: asyncio.Event) -> None:
    ctx.counters["streams_total"] = len(listeners)
    while True:
        ctx.counters["streams_open"] = sum(listener.open.is_set() for listener in listeners.values())
        if await sleep_or_stop(stop, PROGRESS_INTERVAL_S):
            return


async def _run_streams(
    accounts: list[AccountSettings],
    listeners: dict[str, UpdateListener],
    budgets: dict[str, RestBudget],
    ctx: runtime.WorkerContext,
    stop: asyncio.Event,
) -> None:
    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    tasks = [
        asyncio.create_task(
            supervise(
                f"trades-{a.slug}",
                functools.partial(_open_then_keep, TradeStream(a, listeners[a.slug]), budgets[a.slug], opening, stop),
                stop, ctx.counters,
            ),
            name=f"trades-{a.slug}",
        )
        for a in accounts
    ]
    tasks.append(asyncio.create_task(_report_progress(listeners, ctx, stop), name="trades-progress"))
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

"""`snapshot`: REST reconciliation — backfill, periodic and on-demand snapshots, order history.

Inputs: the broker's REST API per account (positions, account, open orders, order history,
FILL activities), within each key's request budget (``broker.budget``); bus ``cmd.resync.*``
(full resync, or per-symbol positions after a fill), ``trade.*`` (orders the stream reported
final need no read by id) and ``hb.trades`` (which streams are open: a still account's periodic
snapshot runs every ``IDLE_EVERY``-th slot, ``broker.runner``). Heartbeat: each key's requests
of the last minute and its budget; ``snapshots_idle_skipped``.
Outputs: ``orders.<slug>`` (``OrdersPage``), ``fills.<slug>`` (``FillsPage``), ``snap.<slug>``
(``SnapshotTaken``, after the pages that explain it) and, every ``CLOSED_SYNC_SEC``,
``cmd.ledger_check.<slug>`` (``LedgerCheckRequested``). No DB.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys

import aiohttp
import msgspec

from coldharbour import runtime
from coldharbour.broker.budget import budget_for, report_forever
from coldharbour.broker.reads import data_url
from coldharbour.broker.rest import BrokerRest
from coldharbour.broker.runner import SnapshotRunner, StreamEvidence, cancel_quietly, run_until_stopped
from coldharbour.broker.sync import AccountSync
from coldharbour.config import Settings
from coldharbour.messages import (
    PREFIX_RESYNC,
    PREFIX_TRADE,
    Heartbeat,
    LedgerCheckRequested,
    OrderUpdated,
    ResyncRequested,
    topic_heartbeat,
    topic_ledger_check,
)
from coldharbour.retry import sleep_or_stop, supervise

log = logging.getLogger("workers.snapshot")
# Refreshes after fills take at most half the budget: one every 120 s / budget (3 s at 40 a minute).
PARTIAL_SHARE_S = 120.0
TRADES_PROGRAM = "trades"  # whose heartbeat says which streams are open (a still account's slots)
START_RESYNC_WINDOW_NS = 120 * 1_000_000_000  # a state's start resync precedes its ready announcement


async def _route_resyncs(
    ctx: runtime.WorkerContext, runners: dict[str, SnapshotRunner], starts: dict[str, int], streams: StreamEvidence
) -> None:
    subscriber = ctx.subscriber([PREFIX_RESYNC, PREFIX_TRADE, topic_heartbeat(TRADES_PROGRAM)])
    try:
        while True:
            for _, message in await subscriber.recv_batch():
                if isinstance(message, Heartbeat) and message.program == TRADES_PROGRAM:
                    streams.heard(message)
                elif isinstance(message, OrderUpdated) and message.account in runners:
                    runners[message.account].note_update(message.order, message.legs)
                elif isinstance(message, ResyncRequested) and message.account in runners:
                    if message.reason == "start" and message.src == runtime.STATE_PROGRAM:
                        starts[message.account] = message.ts
                    runners[message.account].request(message)
                elif isinstance(message, ResyncRequested):
                    ctx.counters["resync_unknown_account"] += 1
    finally:
        subscriber.close()


async def _ledger_checks(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    while not await sleep_or_stop(stop, settings.closed_sync_sec):
        for account in settings.accounts:
            ctx.publisher.publish(topic_ledger_check(account.slug), LedgerCheckRequested(account=account.slug))


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Run every account's snapshot loops until stopped."""
    budgets = {a.slug: budget_for(settings, a) for a in settings.accounts}
    async with aiohttp.ClientSession() as session:
        streams = StreamEvidence()
        runners = {
            a.slug: SnapshotRunner(
                AccountSync(
                    BrokerRest(a, session, ctx.counters, budget=budgets[a.slug], stop=stop, conditions=ctx.conditions),
                    ctx.publisher, ctx.counters, details=ctx.details,
                    announcements=BrokerRest(msgspec.structs.replace(a, base_url=data_url(a.base_url)), session,
                                             ctx.counters, budget=budgets[a.slug], stop=stop, version="/v1"),
                    bars=BrokerRest(msgspec.structs.replace(a, base_url=data_url(a.base_url)), session,
                                    ctx.counters, budget=budgets[a.slug], stop=stop),  # a spin-off's ex-date closes
                ),
                snapshot_sec=settings.snapshot_sec,
                backfill_days=settings.backfill_days,
                phase_s=settings.snapshot_sec * i / len(settings.accounts),  # spread over the period
                idle_turn=i,  # still accounts' reads spread over IDLE_EVERY periods too
                partial_gap_s=PARTIAL_SHARE_S / settings.alpaca_rest_budget_per_min,
                streams=streams,
            )
            for i, a in enumerate(settings.accounts)
        }
        starts: dict[str, int] = {}  # account -> time of the last ``start`` resync state sent us
        router = asyncio.create_task(_route_resyncs(ctx, runners, starts, streams), name="snapshot-resyncs")

        def on_state_ready(instance_ns: int) -> None:
            # state asks each account's resync just before it reads the bus: if that request did
            # not reach us (we were not subscribed yet), take it from the announcement instead.
            for slug, runner in runners.items():
                if not instance_ns - START_RESYNC_WINDOW_NS <= starts.get(slug, 0) <= instance_ns:
                    runner.request(ResyncRequested(account=slug, reason="start"))

        ready = runtime.watch_state_ready(ctx, on_state_ready)
        tasks = [
            asyncio.create_task(_ledger_checks(settings, ctx, stop), name="snapshot-ledger-check"),
            asyncio.create_task(report_forever(budgets.values(), ctx.counters, stop), name="snapshot-budgets"),
        ]
        for slug, runner in runners.items():
            for kind, loop in (("full", runner.run_full), ("partial", runner.run_partial)):
                name = f"snapshot-{slug}-{kind}"
                tasks.append(
                    asyncio.create_task(supervise(name, functools.partial(loop, stop), stop, ctx.counters), name=name)
                )
        try:
            await run_until_stopped(stop, tasks)
        finally:
            ready.cancel()
            await cancel_quietly(router)


def main() -> int:
    """Run the snapshot program."""
    return runtime.run("snapshot", amain)


if __name__ == "__main__":
    sys.exit(main())

"""`snapshot`: REST reconciliation — backfill, periodic and on-demand snapshots, order history.

Inputs: the broker's REST API per account (positions, account, open orders, order history,
FILL activities); bus ``cmd.resync.*`` (full resync, or per-symbol positions after a fill).
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

from coldharbour import runtime
from coldharbour.broker.rest import BrokerRest
from coldharbour.broker.runner import SnapshotRunner, cancel_quietly, run_until_stopped
from coldharbour.broker.sync import AccountSync
from coldharbour.config import Settings
from coldharbour.messages import PREFIX_RESYNC, LedgerCheckRequested, ResyncRequested, topic_ledger_check
from coldharbour.retry import sleep_or_stop, supervise

log = logging.getLogger("workers.snapshot")


async def _route_resyncs(ctx: runtime.WorkerContext, runners: dict[str, SnapshotRunner]) -> None:
    subscriber = ctx.subscriber([PREFIX_RESYNC])
    try:
        while True:
            for _, message in await subscriber.recv_batch():
                if isinstance(message, ResyncRequested) and message.account in runners:
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
    async with aiohttp.ClientSession() as session:
        runners = {
            a.slug: SnapshotRunner(
                AccountSync(
                    BrokerRest(a, session, ctx.counters, conditions=ctx.conditions),
                    ctx.publisher,
                    ctx.counters,
                    details=ctx.details,
                ),
                snapshot_sec=settings.snapshot_sec,
                backfill_days=settings.backfill_days,
            )
            for a in settings.accounts
        }
        router = asyncio.create_task(_route_resyncs(ctx, runners), name="snapshot-resyncs")
        tasks = [asyncio.create_task(_ledger_checks(settings, ctx, stop), name="snapshot-ledger-check")]
        for slug, runner in runners.items():
            for kind, loop in (("full", runner.run_full), ("partial", runner.run_partial)):
                name = f"snapshot-{slug}-{kind}"
                tasks.append(
                    asyncio.create_task(supervise(name, functools.partial(loop, stop), stop, ctx.counters), name=name)
                )
        try:
            await run_until_stopped(stop, tasks)
        finally:
            await cancel_quietly(router)


def main() -> int:
    """Run the snapshot program."""
    return runtime.run("snapshot", amain)


if __name__ == "__main__":
    sys.exit(main())

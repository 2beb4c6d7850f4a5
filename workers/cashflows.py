"""`cashflows`: account activities (dividends, fees, journals, deposits, fills) for every account.

Inputs: broker REST ``GET /v2/account/activities`` (since the last stored id), the DB read-only
(the stored cursor and ids, every run), bus ``session`` (a session start pulls at once), bus
``cmd.resync.<slug>`` (a full resync re-sends at once what was published but is not stored).
Outputs: ``ActivitiesPage`` on ``cash.<slug>`` (``state`` writes raw activities and cash flows, and
deletes the cash flows of activities the broker canceled since: docs/spec.md §8 corrections);
``details["cash_complete_<slug>"]`` in its heartbeat, how far the stored activities are complete
(``equity`` builds no daily row past it; docs/startup.md).

Runs every ``CASH_FLOWS_INTERVAL_S`` (300) per account, one task per account.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from functools import partial
from typing import Final

from psycopg_pool import AsyncConnectionPool

from coldharbour import runtime
from coldharbour.analytics.cashflows import ActivitySource, CashflowsJob
from coldharbour.broker.budget import budget_for
from coldharbour.broker.reads import BrokerReads
from coldharbour.config import Settings
from coldharbour.db.connect import read_only_pool, reader_dsn
from coldharbour.db.names import account_names
from coldharbour.jobs.clock import Clock, SystemClock, run_per_account
from coldharbour.jobs.phases import is_session_start, start_watch
from coldharbour.messages import PREFIX_RESYNC, ResyncRequested, SessionPhaseChanged, cash_complete_detail

PROGRAM = "cashflows"
READ_BACK_S: Final = 5.0  # a run that published reads again this soon (doubling) until it finds them stored
log = logging.getLogger("workers.cashflows")


def open_pool(settings: Settings) -> AsyncConnectionPool:
    """Return this program's (closed) read-only pool: the database refuses its writes."""
    return read_only_pool(reader_dsn(settings), PROGRAM, max_size=2)


async def run(
    settings: Settings,
    ctx: runtime.WorkerContext,
    stop: asyncio.Event,
    *,
    clock: Clock | None = None,
    sources: Mapping[str, ActivitySource] | None = None,
) -> None:
    """Pull activities per account until ``stop``; ``clock``/``sources`` are injectable for tests."""
    clock = clock or SystemClock()
    brokers = (
        {a.slug: BrokerReads(a, ctx.counters, budget=budget_for(settings, a)) for a in settings.accounts}
        if sources is None
        else {}
    )
    chosen: Mapping[str, ActivitySource] = sources if sources is not None else brokers
    wakes = {a.slug: asyncio.Event() for a in settings.accounts}

    def on_phase(previous: str | None, message: SessionPhaseChanged) -> None:
        if is_session_start(previous, message.phase):
            for wake in wakes.values():
                wake.set()

    watcher = start_watch(ctx, on_phase)
    async with open_pool(settings) as pool:
        jobs = [
            CashflowsJob(account_names(settings, a.slug), pool, chosen[a.slug], ctx.publisher, ctx.counters)
            for a in settings.accounts
        ]
        resyncs = asyncio.create_task(_watch_resyncs(ctx, {job.names.slug: job for job in jobs}, wakes))
        resyncs.add_done_callback(runtime.log_task_exception)

        def on_state_ready(_instance_ns: int) -> None:  # re-send at once what state has not stored
            for job in jobs:
                job.resync()
                wakes[job.names.slug].set()

        ready = runtime.watch_state_ready(ctx, on_state_ready)
        try:
            await run_per_account(
                PROGRAM,
                settings.cash_flows_interval_s,
                {job.names.slug: partial(_run, ctx, job) for job in jobs},
                clock=clock,
                stop=stop,
                counters=ctx.counters,
                wakes=wakes,
                recheck_s=READ_BACK_S,
            )
        finally:
            watcher.cancel()
            resyncs.cancel()
            ready.cancel()
            for broker in brokers.values():
                await broker.close()


async def _run(ctx: runtime.WorkerContext, job: CashflowsJob) -> bool:
    """Pull one account; say in the heartbeat how far its stored activities are complete (``equity`` waits on it).

    True while something published is not stored yet: the loop reads again after ``READ_BACK_S``
    (doubling), so the read that proves the store complete follows the commit by seconds, not by a
    whole ``CASH_FLOWS_INTERVAL_S`` (the first start on an account with history).
    """
    await job.run_once()
    if job.complete_to_ns is not None:
        ctx.details[cash_complete_detail(job.names.slug)] = str(job.complete_to_ns)
    return job.awaiting_store


async def _watch_resyncs(
    ctx: runtime.WorkerContext, jobs: Mapping[str, CashflowsJob], wakes: Mapping[str, asyncio.Event]
) -> None:
    """On a full ``ResyncRequested`` for an account, re-send its unstored activities at once."""
    subscriber = ctx.subscriber([PREFIX_RESYNC])
    try:
        while True:
            _, message = await subscriber.recv()
            if not isinstance(message, ResyncRequested) or message.symbols or message.account not in jobs:
                continue
            log.info("resync requested account=%s reason=%s", message.account, message.reason)
            ctx.counters["resyncs"] += 1
            jobs[message.account].resync()
            wakes[message.account].set()
    finally:
        subscriber.close()


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Run the cash-flow pulls with the wall clock and the broker's REST API."""
    await run(settings, ctx, stop)


def main() -> int:
    """Run the cashflows program."""
    return runtime.run("cashflows", amain)


if __name__ == "__main__":
    sys.exit(main())

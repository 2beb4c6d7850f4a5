"""`equity`: the daily equity curve and the 1-minute intraday curve of every account.

Inputs: the DB read-only (cash flows, fills in raw activities, open positions, closed trades,
1-minute bars, latest prices), broker REST (``/v2/calendar`` and daily bars ``/v2/stocks/bars``
for closes our bars do not have), bus ``session`` (session start and the close rebuild the
daily curve). Outputs: ``EquityComputed`` on ``equity.<slug>`` (daily rows, intraday points,
``bar_px``/``bar_ts`` marks; ``state`` writes them).

Runs every ``EQUITY_UPDATE_INTERVAL_S`` (60), one task per account; an account whose curve no
mark can move (outside a session, or holding nothing) reads nothing until ``state`` announces a
change of its fills, lots or cash flows (bus ``state.*``), a rebuild is due or 15 minutes passed
(``analytics.equity.STILL_REFRESH``; docs/scaling.md). No daily row is built for a session that
closed after the account's cash activities are known complete (``cashflows``' heartbeat,
``details["cash_complete_<slug>"]``; docs/startup.md).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Final

from psycopg_pool import AsyncConnectionPool

from coldharbour import runtime
from coldharbour.analytics.equity import DailyBarsSource, EquityJob
from coldharbour.broker.budget import budget_for
from coldharbour.broker.reads import BrokerReads
from coldharbour.config import Settings
from coldharbour.db.connect import read_only_pool, reader_dsn
from coldharbour.db.names import account_names, shared_names
from coldharbour.jobs.clock import Clock, SystemClock, run_per_account
from coldharbour.jobs.phases import is_after_close, is_session_start, start_watch
from coldharbour.messages import (
    PREFIX_STATE,
    AccountChanged,
    Heartbeat,
    SessionPhaseChanged,
    cash_complete_marks,
    topic_heartbeat,
)

PROGRAM = "equity"
CASHFLOWS_PROGRAM: Final = "cashflows"  # whose heartbeat says how far the cash activities are complete
# What ``state`` commits that moves an account's curve (not the curve itself: no loop on our own rows).
INPUT_KINDS: Final = frozenset({"open_rows", "closed", "cash_flows", "orders", "activities", "reconciliations"})


def open_pool(settings: Settings) -> AsyncConnectionPool:
    """Return this program's (closed) read-only pool: the database refuses its writes."""
    return read_only_pool(reader_dsn(settings), PROGRAM, max_size=min(max(2, len(settings.accounts)), 8))


async def _follow_changes(ctx: runtime.WorkerContext, jobs: list[EquityJob]) -> None:
    subscriber = ctx.subscriber([PREFIX_STATE])
    try:
        while True:
            batch = await subscriber.recv_batch()
            by_slug = {job.names.slug: job for job in jobs}  # after the wait: the jobs exist once the pool is open
            for _, message in batch:
                if not isinstance(message, AccountChanged):
                    continue
                ctx.counters["equity_changes_heard"] += 1
                job = by_slug.get(message.account)
                if job is not None and INPUT_KINDS.intersection(message.kinds):
                    job.changed = True
                    ctx.counters["equity_input_changes"] += 1  # a change the next run reads
    finally:
        subscriber.close()


async def _follow_cash_complete(
    ctx: runtime.WorkerContext, jobs: list[EquityJob], wakes: Mapping[str, asyncio.Event]
) -> None:
    """Hand each job how far ``cashflows`` knows its stored cash activities complete (its heartbeat)."""
    subscriber = ctx.subscriber([topic_heartbeat(CASHFLOWS_PROGRAM)])
    try:
        while True:
            _, message = await subscriber.recv()
            if not isinstance(message, Heartbeat) or message.program != CASHFLOWS_PROGRAM:
                continue
            marks = cash_complete_marks(message)
            ctx.counters["cash_complete_heard"] += 1
            for job in jobs:
                mark = marks.get(job.names.slug)
                if mark is None:
                    continue
                before = job.cashflows_complete_to
                job.cash_complete(datetime.fromtimestamp(mark / 1e9, tz=UTC))
                if before is None:
                    wakes[job.names.slug].set()  # the first complete read: build now, not at the next tick
    finally:
        subscriber.close()


def _given_complete(jobs: list[EquityJob], cash_complete: Mapping[str, datetime]) -> None:
    for job in jobs:
        if job.names.slug in cash_complete:
            job.cash_complete(cash_complete[job.names.slug])


async def _tick(job: EquityJob, clock: Clock) -> None:
    await job.run_once(clock.now())


async def run(
    settings: Settings,
    ctx: runtime.WorkerContext,
    stop: asyncio.Event,
    *,
    clock: Clock | None = None,
    brokers: Mapping[str, DailyBarsSource] | None = None,
    cash_complete: Mapping[str, datetime] | None = None,
) -> None:
    """Compute equity curves per account until ``stop``; ``clock``/``brokers`` are injectable;
    ``cash_complete`` (per account, how far the cash activities are complete) is known from the
    start, as if ``cashflows``' heartbeat had said it (tests)."""
    clock = clock or SystemClock()
    owned = (
        {a.slug: BrokerReads(a, ctx.counters, budget=budget_for(settings, a)) for a in settings.accounts}
        if brokers is None
        else {}
    )
    chosen: Mapping[str, DailyBarsSource] = brokers if brokers is not None else owned
    wakes = {a.slug: asyncio.Event() for a in settings.accounts}
    jobs: list[EquityJob] = []

    def on_phase(previous: str | None, message: SessionPhaseChanged) -> None:
        if is_session_start(previous, message.phase) or is_after_close(previous, message.phase):
            for job in jobs:
                job.rebuild_requested = True
                wakes[job.names.slug].set()

    def on_state_ready(_instance_ns: int) -> None:  # what was published before state read the bus is computed again
        for job in jobs:
            job.rebuild_requested = True
            wakes[job.names.slug].set()

    watcher = start_watch(ctx, on_phase)
    ready = runtime.watch_state_ready(ctx, on_state_ready)
    follower = asyncio.create_task(_follow_changes(ctx, jobs), name="equity-changes")
    follower.add_done_callback(runtime.log_task_exception)
    complete = asyncio.create_task(_follow_cash_complete(ctx, jobs, wakes), name="equity-cash-complete")
    complete.add_done_callback(runtime.log_task_exception)
    async with open_pool(settings) as pool:
        jobs.extend(
            EquityJob(
                settings,
                account_names(settings, a.slug),
                shared_names(settings),
                pool,
                chosen[a.slug],
                ctx.publisher,
                ctx.counters,
            )
            for a in settings.accounts
        )
        _given_complete(jobs, cash_complete or {})
        try:
            await run_per_account(
                PROGRAM,
                settings.equity_update_interval_s,
                {job.names.slug: partial(_tick, job, clock) for job in jobs},
                clock=clock,
                stop=stop,
                counters=ctx.counters,
                wakes=wakes,
            )
        finally:
            watcher.cancel()
            ready.cancel()
            follower.cancel()
            complete.cancel()
            for broker in owned.values():
                await broker.close()


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Run the equity curves with the wall clock and the broker's REST API."""
    await run(settings, ctx, stop)


def main() -> int:
    """Run the equity program."""
    return runtime.run("equity", amain)


if __name__ == "__main__":
    sys.exit(main())

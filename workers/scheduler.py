"""`scheduler`: the market schedule, the session phase, and the session-scoped programs.

Inputs: broker REST ``GET /v2/calendar`` (first account's credentials; the calendar is the
same for all), every ``MARKET_REFRESH_SEC``; the DB read-only (the stored schedule, only when
the broker is unreachable at start); supervisord's XML-RPC socket ``$CHMGR_RUN_DIR/supervisor.sock``.
Outputs: ``ScheduleComputed`` on ``schedule`` (``state`` writes and prunes ``market_schedule``;
re-sent whenever a ``state`` instance announces it is ready: ``runtime.watch_state_ready``),
``SessionPhaseChanged`` on ``session`` at the exact instant of each change, and at session
start ``cmd.resync.<slug>`` and ``cmd.ledger_check.<slug>`` for every account. Starts the
session programs (prices, trades, snapshot, equity, cashflows) at pre-open and stops them when
the session ends, unless ``DISABLE_SESSION_SLEEP``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from coldharbour import runtime
from coldharbour.broker.budget import budget_for
from coldharbour.broker.reads import BrokerReads
from coldharbour.config import Settings
from coldharbour.db.connect import read_only_pool, reader_dsn
from coldharbour.jobs.clock import Clock, SystemClock
from coldharbour.jobs.scheduler import CalendarSource, ProgramControl, Scheduler
from coldharbour.retry import until_stopped

PROGRAM = "scheduler"
SUPERVISOR_SOCKET = "supervisor.sock"


def open_pool(settings: Settings) -> AsyncConnectionPool:
    """Return this program's (closed) read-only pool: the database refuses its writes."""
    return read_only_pool(reader_dsn(settings), PROGRAM, min_size=0, max_size=1)


def supervisor_control(settings: Settings) -> ProgramControl:
    """Return the supervisord client on ``$CHMGR_RUN_DIR/supervisor.sock``."""
    from coldharbour.supervisor import SupervisorClient  # deferred: only the real program needs it

    client: ProgramControl = SupervisorClient(Path(settings.run_dir) / SUPERVISOR_SOCKET)
    return client


async def run(
    settings: Settings,
    ctx: runtime.WorkerContext,
    stop: asyncio.Event,
    *,
    clock: Clock | None = None,
    calendar: CalendarSource | None = None,
    control: ProgramControl | None = None,
) -> None:
    """Run the scheduler until ``stop``; the clock, calendar and supervisord are injectable."""
    broker = None
    if calendar is None and settings.accounts:
        first = settings.accounts[0]
        broker = BrokerReads(first, ctx.counters, budget=budget_for(settings, first))
    async with open_pool(settings) as pool:
        scheduler = Scheduler(
            settings,
            publisher=ctx.publisher,
            counters=ctx.counters,
            clock=clock or SystemClock(),
            calendar=calendar or broker,
            control=control,
            pool=pool,
        )
        ready = runtime.watch_state_ready(ctx, scheduler.resend)
        try:
            await until_stopped(scheduler.run(stop), stop)
        finally:
            ready.cancel()
            if broker is not None:
                await broker.close()


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Run the scheduler with the wall clock, the broker calendar and supervisord."""
    await run(settings, ctx, stop, control=supervisor_control(settings))


def main() -> int:
    """Run the scheduler program."""
    return runtime.run("scheduler", amain)


if __name__ == "__main__":
    sys.exit(main())

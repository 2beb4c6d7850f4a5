"""`metrics`: the KPI document of every account (SPEC §5 keys), only when it changed.

Inputs: the DB read-only, incrementally (closed trades, cash flows and daily equity by
``updated_at``; open positions when their fingerprint moved; the newest intraday return; the
market schedule for "in session"). Outputs: ``MetricsComputed`` on ``metrics.<slug>``
(``state`` writes ``account_metrics_<slug>`` and notifies ``metrics_channel_<slug>``).

Runs every ``METRICS_INTERVAL_S`` (5), one task per account.
"""

from __future__ import annotations

import asyncio
import sys
from functools import partial

from psycopg_pool import AsyncConnectionPool

from coldharbour import runtime
from coldharbour.analytics.metrics import MetricsJob
from coldharbour.config import Settings
from coldharbour.db.connect import read_only_pool, reader_dsn
from coldharbour.db.names import account_names, shared_names
from coldharbour.jobs.clock import Clock, SystemClock, run_per_account

PROGRAM = "metrics"


def open_pool(settings: Settings) -> AsyncConnectionPool:
    """Return this program's (closed) read-only pool: the database refuses its writes."""
    return read_only_pool(reader_dsn(settings), PROGRAM, max_size=max(2, len(settings.accounts)))


async def _tick(job: MetricsJob, clock: Clock) -> None:
    await job.run_once(clock.now())


async def run(
    settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event, *, clock: Clock | None = None
) -> None:
    """Compute KPI documents per account until ``stop``; ``clock`` is injectable for tests."""
    clock = clock or SystemClock()
    async with open_pool(settings) as pool:
        jobs = [
            MetricsJob(account_names(settings, a.slug), shared_names(settings), pool, ctx.publisher, ctx.counters)
            for a in settings.accounts
        ]
        await run_per_account(
            PROGRAM,
            settings.metrics_interval_s,
            {job.names.slug: partial(_tick, job, clock) for job in jobs},
            clock=clock,
            stop=stop,
            counters=ctx.counters,
        )


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Run the KPI computation with the wall clock."""
    await run(settings, ctx, stop)


def main() -> int:
    """Run the metrics program."""
    return runtime.run("metrics", amain)


if __name__ == "__main__":
    sys.exit(main())

"""`metrics`: the KPI document of every account (docs/spec.md §5 keys), computed when its inputs changed.

Inputs: bus ``state.*`` (``AccountChanged``: what a commit of ``state`` changed in an account),
``session`` (a phase change: a new day, in or out of session) and ``state``'s ready
announcement; the DB read-only, incrementally (closed trades, cash flows and daily equity by
``updated_at``; open positions when their fingerprint moved; the newest intraday return; the
market schedule for "in session"). Outputs: ``MetricsComputed`` on ``metrics.<slug>``
(``state`` writes ``account_metrics_<slug>`` and notifies ``metrics_channel_<slug>``).

One task per account runs when one of its inputs changed (``INPUT_KINDS``), at most once per
``METRICS_INTERVAL_S`` (5): the changes of that gap are taken by one run. An idle account costs
nothing; the only timer is the read-back of a published document (``RECHECK_S``), which is sent
again until ``state`` stored it (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Final

from psycopg_pool import AsyncConnectionPool

from coldharbour import runtime
from coldharbour.analytics.metrics import MetricsJob
from coldharbour.config import Settings
from coldharbour.db.connect import read_only_pool, reader_dsn
from coldharbour.db.names import account_names, shared_names
from coldharbour.jobs.clock import ChangeJob, Clock, SystemClock, run_per_account_on_change
from coldharbour.jobs.phases import start_watch
from coldharbour.messages import PREFIX_STATE, AccountChanged, SessionPhaseChanged

PROGRAM = "metrics"
# The rows the KPI document is computed from (``domain.changes.changed_kinds``): fills and closes
# (open rows, closed slices; open rows are announced when a mark passed the push threshold),
# cash flows, the daily and the intraday equity curves.
INPUT_KINDS: Final = frozenset({"open_rows", "closed", "cash_flows", "daily_equity", "intraday"})
RECHECK_S: Final = 30.0  # a published document not stored by then is sent again


def open_pool(settings: Settings) -> AsyncConnectionPool:
    """Return this program's (closed) read-only pool: the database refuses its writes."""
    return read_only_pool(reader_dsn(settings), PROGRAM, max_size=min(max(2, len(settings.accounts)), 8))


def _job(job: MetricsJob, clock: Clock) -> ChangeJob:
    async def run() -> bool:
        return await job.run_once(clock.now())

    return run


async def _follow_changes(ctx: runtime.WorkerContext, wakes: dict[str, asyncio.Event]) -> None:
    subscriber = ctx.subscriber([PREFIX_STATE])
    try:
        while True:
            for _, message in await subscriber.recv_batch():
                if isinstance(message, AccountChanged) and message.account in wakes:
                    ctx.counters["metrics_changes_heard"] += 1
                    if INPUT_KINDS.intersection(message.kinds):
                        wakes[message.account].set()
    finally:
        subscriber.close()


async def run(
    settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event, *, clock: Clock | None = None
) -> None:
    """Compute KPI documents per account until ``stop``; ``clock`` is injectable for tests."""
    clock = clock or SystemClock()
    wakes = {a.slug: asyncio.Event() for a in settings.accounts}

    def wake_all(*_: object) -> None:
        for wake in wakes.values():
            wake.set()

    def on_phase(previous: str | None, _message: SessionPhaseChanged) -> None:
        if previous is not None:  # the first message tells the phase the start-up run already saw
            wake_all()

    follower = asyncio.create_task(_follow_changes(ctx, wakes), name="metrics-changes")
    follower.add_done_callback(runtime.log_task_exception)
    watcher = start_watch(ctx, on_phase)
    ready = runtime.watch_state_ready(ctx, wake_all)  # a new state: each stored document is read back
    try:
        async with open_pool(settings) as pool:
            jobs = [
                MetricsJob(account_names(settings, a.slug), shared_names(settings), pool, ctx.publisher, ctx.counters)
                for a in settings.accounts
            ]
            await run_per_account_on_change(
                PROGRAM,
                {job.names.slug: _job(job, clock) for job in jobs},
                wakes,
                min_gap_s=settings.metrics_interval_s,
                recheck_s=RECHECK_S,
                clock=clock,
                stop=stop,
                counters=ctx.counters,
            )
    finally:
        for task in (follower, watcher, ready):
            task.cancel()
        await asyncio.gather(follower, watcher, ready, return_exceptions=True)


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Run the KPI computation with the wall clock."""
    await run(settings, ctx, stop)


def main() -> int:
    """Run the metrics program."""
    return runtime.run("metrics", amain)


if __name__ == "__main__":
    sys.exit(main())

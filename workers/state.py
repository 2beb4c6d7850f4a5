"""`state`: the single writer — every DB upsert, delete and NOTIFY goes through here.

Inputs: ``px.*`` ticks, ``trade.<slug>`` order/fill updates, ``snap.<slug>`` snapshots,
``orders.<slug>``/``fills.<slug>`` history pages, ``cash.<slug>`` activities, ``equity.<slug>``,
``metrics.<slug>``, ``schedule``, ``session``, ``cmd.ledger_check.<slug>``. Outputs: PostgreSQL
(positions, closed slices, raw orders/activities, cash flows, equity, KPI document, schedule,
latest prices, 1-minute bars) with their NOTIFYs; ``cmd.resync.<slug>`` (start, fill, gap,
failed commit). One consumer task drains one queue into ``mirror.owner.StateOwner.apply``
(plan, commit, then swap); the subscriber and timers only enqueue (docs/architecture.md §3).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from coldharbour import messages as m
from coldharbour import runtime
from coldharbour.config import Settings
from coldharbour.db import schema
from coldharbour.db.connect import connect_sync, retry_database
from coldharbour.db.ownership import Ownership
from coldharbour.db.store import StateStore
from coldharbour.db.writer import Writer
from coldharbour.health import NEED_SNAPSHOT
from coldharbour.mirror import Event, FlushDue, GapDetected, HeartbeatDue, Mirror, StateOwner
from coldharbour.retry import sleep_or_stop

log = logging.getLogger("workers.state")

QUEUE_MAX = 100_000
MAX_BATCH = 5_000
MAX_BATCH_TICKS = 20_000  # ticks in one batch of events (a ``TickBatch`` weighs its ticks)
FINAL_FLUSH_TIMEOUT_S = 10.0
START_CHUNK_ROWS = 5_000  # rows per start-up commit (a 100k-row plan held its 6,250 NOTIFYs at once)
BROKER_PREFIXES = (m.topic_trade(""), m.topic_snapshot(""), m.topic_orders(""), m.topic_fills(""))  # gap: resync
PREFIXES = [m.PREFIX_TICK, *BROKER_PREFIXES, m.topic_cash(""), m.topic_equity(""), m.topic_metrics(""),
            m.TOPIC_SCHEDULE, m.TOPIC_SESSION, m.topic_ledger_check(""), m.topic_spinoff_basis("")]  # fmt: skip


def _migrate(settings: Settings) -> list[tuple[str, int]]:
    with connect_sync(settings.dsn, "state", read_only=False) as conn:
        return schema.ensure_schema(conn, settings)


async def _feed(ctx: runtime.WorkerContext, queue: asyncio.Queue[Event]) -> None:
    gaps: list[GapDetected] = []

    def on_sequence(kind: str, src: str, topic: str, value: int) -> None:
        if kind in ("gap", "restart") and topic.startswith(BROKER_PREFIXES):
            gaps.append(GapDetected(topic.partition(".")[2], kind))

    subscriber, early = await runtime.live_subscriber(ctx, PREFIXES, on_sequence=on_sequence)
    runtime.announce_ready(ctx, time.time_ns())  # producers re-send what we could not read before
    try:
        while True:
            batch, early = early or await subscriber.recv_batch(1000), []
            pending: list[Event] = [*gaps, *batch]
            gaps.clear()
            for item in pending:
                await queue.put(item)
    finally:
        subscriber.close()


async def _every(interval_s: float, event: Event, queue: asyncio.Queue[Event], stop: asyncio.Event) -> None:
    while not await sleep_or_stop(stop, interval_s):
        await queue.put(event)


def _weight(event: Event) -> int:
    return len(event[1].symbols) if isinstance(event, tuple) and isinstance(event[1], m.TickBatch) else 1


async def _consume(queue: asyncio.Queue[Event], owner: StateOwner) -> None:
    while True:
        events = [await queue.get()]
        weight = _weight(events[0])
        while len(events) < MAX_BATCH and weight < MAX_BATCH_TICKS and not queue.empty():
            events.append(queue.get_nowait())
            weight += _weight(events[-1])
        try:
            await owner.apply(events, time.time_ns())
        finally:
            for _ in events:
                queue.task_done()
        await asyncio.sleep(0)  # a long burst must not starve the feed task and the heartbeat


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Own the accounts, migrate, load, converge, then consume bus events and timers until stopped."""
    ownership = Ownership(settings.dsn, settings.account_schema, (a.slug for a in settings.accounts), ctx.counters)
    await ownership.acquire(stop)  # another live stack owns one of our accounts: one line, exit 1
    writer = Writer(settings, counters=ctx.counters)
    try:
        await retry_database(lambda: asyncio.to_thread(_migrate, settings), stop,  # logs one summary line
                             what="schema migration", counters=ctx.counters)
        await writer.connect(stop)
        store = StateStore(settings, writer, ownership, stop, conditions=ctx.conditions)  # says "database"
        owner = StateOwner(Mirror(settings, ctx.counters), store, ctx.publisher, ctx.counters)
        owner.snapshot_stored = lambda slug: ctx.conditions.ok(NEED_SNAPSHOT, slug)
        await owner.load()
        await owner.start(time.time_ns(), chunk_rows=START_CHUNK_ROWS)
        runtime.return_memory()
        await _serve(settings, ctx, stop, ownership, owner)
    finally:
        await writer.close()
        await ownership.close()


async def _serve(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event, ownership: Ownership,
                 owner: StateOwner) -> None:
    owner.resync_all("start")
    ownership.on_retaken = lambda: owner.resync_all("locks_retaken")  # commits were withheld meanwhile
    queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_MAX)
    tasks = [asyncio.create_task(_feed(ctx, queue), name="state-feed"),
             asyncio.create_task(_every(settings.flush_interval_s, FlushDue(), queue, stop), name="state-flush"),
             asyncio.create_task(_every(settings.ui_heartbeat_s, HeartbeatDue(), queue, stop), name="state-heartbeat")]
    consumer = asyncio.create_task(_consume(queue, owner), name="state-consumer")
    guard = asyncio.create_task(ownership.watch(stop), name="state-ownership")
    for task in (*tasks, consumer):
        task.add_done_callback(runtime.log_task_exception)
    done, _ = await asyncio.wait([consumer, guard, asyncio.create_task(stop.wait())],
                                 return_when=asyncio.FIRST_COMPLETED)
    for task in (*tasks, guard):
        task.cancel()
    await asyncio.gather(*tasks, guard, return_exceptions=True)
    if consumer in done or (guard in done and guard.exception() is not None):
        consumer.cancel()  # a broken invariant, or another stack owns an account now: not one more write
        await asyncio.gather(consumer, return_exceptions=True)
        (consumer if consumer in done else guard).result()  # raise: exit 1, supervisord restarts us
    await queue.put(FlushDue())  # final flush before exit
    try:
        await asyncio.wait_for(queue.join(), FINAL_FLUSH_TIMEOUT_S)
    except TimeoutError:
        log.error("final flush did not finish within %.0fs; unflushed prices are lost", FINAL_FLUSH_TIMEOUT_S)
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)


def main() -> int:
    """Run the state owner program."""
    return runtime.run("state", amain)


if __name__ == "__main__":
    sys.exit(main())

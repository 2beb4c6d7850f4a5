"""`state`: the single writer — every DB upsert, delete and NOTIFY goes through here.

Inputs: ``px.*`` ticks, ``trade.<slug>`` order/fill updates, ``snap.<slug>`` snapshots,
``orders.<slug>``/``fills.<slug>`` history pages, ``cash.<slug>`` activities, ``equity.<slug>``,
``metrics.<slug>``, ``schedule``, ``session``, ``cmd.ledger_check.<slug>``. Outputs: PostgreSQL
(positions, closed slices, raw orders/activities, cash flows, equity, KPI document, schedule,
latest prices, 1-minute bars) with their NOTIFYs; ``cmd.resync.<slug>`` (start, fill, gap,
failed commit).

One consumer task drains one queue and alone touches the mirror and the writer; the subscriber
and timers only enqueue (STYLE.md §2.5). Each batch is planned, committed, then swapped in. A
failed commit keeps memory, reconnects with backoff and resyncs every account.
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
from coldharbour.db.connect import connect_read_only, connect_sync, retry_database
from coldharbour.db.writer import Writer
from coldharbour.errors import ChmgrError, DatabaseError
from coldharbour.mirror import Event, FlushDue, GapDetected, HeartbeatDue, LedgerCheck, Mirror, Plan

log = logging.getLogger("workers.state")

QUEUE_MAX = 100_000
MAX_BATCH = 5_000
MAX_BATCH_TICKS = 20_000  # ticks in one batch of events (a ``TickBatch`` weighs its ticks)
FINAL_FLUSH_TIMEOUT_S = 10.0
BROKER_PREFIXES = (m.topic_trade(""), m.topic_snapshot(""), m.topic_orders(""), m.topic_fills(""))  # gap: resync
PREFIXES = [m.PREFIX_TICK, *BROKER_PREFIXES, m.topic_cash(""), m.topic_equity(""), m.topic_metrics(""),
            m.TOPIC_SCHEDULE, m.TOPIC_SESSION, m.topic_ledger_check("")]  # fmt: skip


def _migrate(settings: Settings) -> list[tuple[str, int]]:
    with connect_sync(settings.dsn, "state", read_only=False) as conn:
        return schema.ensure_schema(conn, settings)


async def _feed(ctx: runtime.WorkerContext, queue: asyncio.Queue[Event]) -> None:
    gaps: list[GapDetected] = []

    def on_sequence(kind: str, src: str, topic: str, value: int) -> None:
        if kind in ("gap", "restart") and topic.startswith(BROKER_PREFIXES):
            gaps.append(GapDetected(topic.partition(".")[2], kind))

    subscriber = ctx.subscriber(PREFIXES, on_sequence=on_sequence)
    try:
        while True:
            batch = await subscriber.recv_batch(1000)
            pending: list[Event] = [*gaps, *batch]
            gaps.clear()
            for item in pending:
                await queue.put(item)
    finally:
        subscriber.close()


async def _every(interval_s: float, event: Event, queue: asyncio.Queue[Event], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            await queue.put(event)


async def _commit(plan: Plan, writer: Writer, ctx: runtime.WorkerContext, mirror: Mirror, stop: asyncio.Event) -> bool:
    if not plan.needs_commit:
        return True
    try:
        await writer.commit(plan.steps, plan.notifications)
        return True
    except DatabaseError as e:
        log.warning("commit failed, memory kept, reconnecting: %s", e)
    try:
        if not stop.is_set():
            await writer.connect(stop)
    except DatabaseError:
        return False
    for slug in mirror.accounts:
        ctx.publisher.publish(m.topic_resync(slug), m.ResyncRequested(account=slug, reason="commit_failed"))
    return False


async def _check_ledger(slug: str, settings: Settings, mirror: Mirror) -> None:
    try:
        async with await connect_read_only(settings.dsn, "state") as conn:
            found = await mirror.check_ledger(conn, slug)
    except DatabaseError as e:
        log.warning("ledger check skipped account=%s: %s", slug, e)
        return
    if found:
        # Memory is no longer what the database holds (a commit acknowledged, then lost in a
        # crash or a failover): a broken invariant. Exit; the restart reloads and resyncs.
        raise ChmgrError(f"ledger differs from the stored history account={slug} differences={len(found)}")


def _weight(event: Event) -> int:
    if isinstance(event, tuple) and isinstance(event[1], m.TickBatch):
        return len(event[1].symbols)
    return 1


async def _consume(settings: Settings, ctx: runtime.WorkerContext, queue: asyncio.Queue[Event], writer: Writer,
                   mirror: Mirror, stop: asyncio.Event) -> None:
    while True:
        events = [await queue.get()]
        weight = _weight(events[0])
        while len(events) < MAX_BATCH and weight < MAX_BATCH_TICKS and not queue.empty():
            events.append(queue.get_nowait())
            weight += _weight(events[-1])
        try:
            for item in mirror.plans(events, time.time_ns()):
                if isinstance(item, LedgerCheck):
                    await _check_ledger(item.slug, settings, mirror)
                    continue
                if not await _commit(item, writer, ctx, mirror, stop):
                    break  # the rest of the batch is dropped; the resync brings it back
                item.swap()
                for topic, message in item.messages:
                    ctx.publisher.publish(topic, message)
        finally:
            mirror.tick_lag.observe(time.time_ns())
            for _ in events:
                queue.task_done()
        await asyncio.sleep(0)  # a long burst must not starve the feed task and the heartbeat


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Migrate, load, converge, then consume bus events and timers until stopped."""
    applied = await retry_database(
        lambda: asyncio.to_thread(_migrate, settings), stop, what="schema migration", counters=ctx.counters
    )
    log.info("schema current applied=%s", applied)
    writer = Writer(settings.dsn, counters=ctx.counters)
    await writer.connect(stop)
    mirror = Mirror(settings, ctx.counters)
    async with await connect_read_only(settings.dsn, "state") as conn:
        await mirror.load(conn)
    start = mirror.start_plan(time.time_ns())
    if await _commit(start, writer, ctx, mirror, stop):
        start.swap()
    queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_MAX)
    for account in settings.accounts:
        ctx.publisher.publish(m.topic_resync(account.slug), m.ResyncRequested(account=account.slug, reason="start"))
    tasks = [
        asyncio.create_task(_feed(ctx, queue), name="state-feed"),
        asyncio.create_task(_every(settings.flush_interval_s, FlushDue(), queue, stop), name="state-flush"),
        asyncio.create_task(_every(settings.ui_heartbeat_s, HeartbeatDue(), queue, stop), name="state-ui-heartbeat"),
    ]
    consumer = asyncio.create_task(_consume(settings, ctx, queue, writer, mirror, stop), name="state-consumer")
    for task in (*tasks, consumer):
        task.add_done_callback(runtime.log_task_exception)
    done, _ = await asyncio.wait([consumer, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if consumer in done:
        consumer.result()  # a broken invariant: raise, exit 1, supervisord restarts us
    await queue.put(FlushDue())  # final flush before exit
    try:
        await asyncio.wait_for(queue.join(), FINAL_FLUSH_TIMEOUT_S)
    except TimeoutError:
        log.error("final flush did not finish within %.0fs; unflushed prices are lost", FINAL_FLUSH_TIMEOUT_S)
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    await writer.close()


def main() -> int:
    """Run the state owner program."""
    return runtime.run("state", amain)


if __name__ == "__main__":
    sys.exit(main())

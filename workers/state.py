"""`state`: the single writer — every DB upsert, delete and NOTIFY goes through here.

Inputs: bus topics ``hb.*`` (program heartbeats), ``px.*`` (ticks). Outputs: PostgreSQL
(``latest_prices``, UI heartbeat NOTIFY on every account's positions channel), ``cmd.resync.*``.

One consumer task drains one queue and is the only code that touches the mirror or the writer;
the subscriber and the timers only enqueue (STYLE.md §2.5). Ticks update memory only; dirty
prices are flushed every ``FLUSH_INTERVAL_S`` in one statement. A lost database connection is
re-opened with backoff and the pending work is kept and retried.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime

from coldharbour import runtime
from coldharbour.config import Settings
from coldharbour.db import schema
from coldharbour.db.connect import connect_sync
from coldharbour.db.names import account_names, shared_names
from coldharbour.db.writer import Writer
from coldharbour.errors import DatabaseError
from coldharbour.messages import (
    PREFIX_HEARTBEAT,
    PREFIX_TICK,
    Message,
    ResyncRequested,
    topic_resync,
)
from coldharbour.mirror import Mirror

log = logging.getLogger("workers.state")

QUEUE_MAX = 100_000
FINAL_FLUSH_TIMEOUT_S = 10.0


class FlushDue:
    """Timer event: write the dirty prices."""


class HeartbeatDue:
    """Timer event: send the UI heartbeat NOTIFY."""


Event = tuple[str, Message] | FlushDue | HeartbeatDue


def _migrate(settings: Settings) -> list[tuple[str, int]]:
    with connect_sync(settings.dsn, "state", read_only=False) as conn:
        return schema.ensure_schema(conn, settings)


async def _feed(ctx: runtime.WorkerContext, queue: asyncio.Queue[Event]) -> None:
    subscriber = ctx.subscriber([PREFIX_HEARTBEAT, PREFIX_TICK])
    try:
        while True:
            for item in await subscriber.recv_batch(1000):
                await queue.put(item)
    finally:
        subscriber.close()


async def _every(interval_s: float, event: Event, queue: asyncio.Queue[Event], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            await queue.put(event)


async def _consume(
    settings: Settings, ctx: runtime.WorkerContext, queue: asyncio.Queue[Event], writer: Writer, stop: asyncio.Event
) -> None:
    mirror = Mirror(shared_names(settings), [account_names(settings, a.slug) for a in settings.accounts])
    while True:
        event = await queue.get()
        try:
            await _handle(event, mirror, writer, stop)
        finally:
            queue.task_done()


async def _handle(event: Event, mirror: Mirror, writer: Writer, stop: asyncio.Event) -> None:
    if isinstance(event, tuple):
        mirror.apply(*event)
        return
    steps = mirror.flush_steps() if isinstance(event, FlushDue) else []
    notes = mirror.heartbeat_notifications(datetime.now(UTC)) if isinstance(event, HeartbeatDue) else []
    if not steps and not notes:
        return
    try:
        await writer.commit(steps, notes)
    except DatabaseError as e:
        log.warning("commit failed, reconnecting: %s", e)
        if not stop.is_set():
            await writer.connect(stop)
        return  # dirty prices stay dirty: the next flush retries them
    if isinstance(event, FlushDue):
        mirror.flushed()


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Migrate, connect the writer, then consume bus events and timers until stopped."""
    applied = await asyncio.to_thread(_migrate, settings)
    log.info("schema current applied=%s", applied)
    writer = Writer(settings.dsn, counters=ctx.counters)
    await writer.connect(stop)
    queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_MAX)
    for account in settings.accounts:
        ctx.publisher.publish(topic_resync(account.slug), ResyncRequested(account=account.slug, reason="start"))
    tasks = [
        asyncio.create_task(_feed(ctx, queue), name="state-feed"),
        asyncio.create_task(_every(settings.flush_interval_s, FlushDue(), queue, stop), name="state-flush"),
        asyncio.create_task(_every(settings.ui_heartbeat_s, HeartbeatDue(), queue, stop), name="state-ui-heartbeat"),
    ]
    consumer = asyncio.create_task(_consume(settings, ctx, queue, writer, stop), name="state-consumer")
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

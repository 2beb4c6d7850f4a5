"""`state`: the single writer — every DB upsert, delete and NOTIFY goes through here.

Inputs: ``px.*`` ticks, ``trade.<slug>`` order/fill updates, ``snap.<slug>`` snapshots,
``orders.<slug>``/``fills.<slug>`` history pages, ``cash.<slug>`` activities, ``equity.<slug>``,
``metrics.<slug>``, ``schedule``, ``session``, ``cmd.ledger_check.<slug>``. Outputs: PostgreSQL
(positions, closed slices, raw orders/activities, cash flows, equity, KPI document, schedule,
latest prices, 1-minute bars) with their NOTIFYs; ``cmd.resync.<slug>`` (start, fill, gap,
failed commit).

One consumer task drains one queue and alone touches the mirror and the writer; the subscriber
and timers only enqueue (STYLE.md §2.5). Each batch is planned, committed, then swapped in. A
commit refused on a value quarantines the refusing rows and commits the rest (no resync); a
failed commit keeps memory, reconnects with backoff and resyncs every account. Resyncs are
rate-limited per account.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
import time

from coldharbour import messages as m
from coldharbour import runtime
from coldharbour.config import Settings
from coldharbour.db import loads, schema
from coldharbour.db.connect import connect_read_only, connect_sync, retry_database
from coldharbour.db.ownership import Ownership
from coldharbour.db.writer import Writer
from coldharbour.domain import changes
from coldharbour.errors import ChmgrError, DatabaseError
from coldharbour.mirror import Event, FlushDue, GapDetected, HeartbeatDue, LedgerCheck, Mirror, Plan
from coldharbour.retry import sleep_or_stop

log = logging.getLogger("workers.state")

QUEUE_MAX = 100_000
MAX_BATCH = 5_000
MAX_BATCH_TICKS = 20_000  # ticks in one batch of events (a ``TickBatch`` weighs its ticks)
FINAL_FLUSH_TIMEOUT_S = 10.0
START_CHUNK_ROWS = 5_000  # rows per start-up commit (a 100k-row plan held its 6,250 NOTIFYs at once)
RESYNC_MIN_INTERVAL_S = 10.0  # per account: a failing commit never turns into a snapshot storm
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
    while not await sleep_or_stop(stop, interval_s):
        await queue.put(event)


class Resyncs:
    """Resync requests: at most one per account and reason per ``RESYNC_MIN_INTERVAL_S`` (issue 14).

    Suppressed requests are counted. A ``fill`` resync (the broker WAC of the symbols just
    filled) is not limited: one goes out per committed batch of stream fills.
    """

    def __init__(self, ctx: runtime.WorkerContext) -> None:
        self._ctx = ctx
        self._last: dict[str, float] = {}

    def request(self, slug: str, reason: str, symbols: tuple[str, ...] = ()) -> None:
        """Publish a resync for ``slug`` unless one went out less than the interval ago."""
        now, key = time.monotonic(), f"{slug}:{reason}"
        if reason != "fill":
            if now - self._last.get(key, -RESYNC_MIN_INTERVAL_S) < RESYNC_MIN_INTERVAL_S:
                self._ctx.counters["resyncs_suppressed"] += 1
                return
            self._last[key] = now
        self._ctx.counters["resyncs_requested"] += 1
        self._ctx.publisher.publish(m.topic_resync(slug), m.ResyncRequested(account=slug, reason=reason,
                                                                            symbols=symbols))


async def _commit(plan: Plan, writer: Writer, resyncs: Resyncs, mirror: Mirror, stop: asyncio.Event,
                  ownership: Ownership) -> bool:
    """Commit ``plan``; a refused value is quarantined and the rest commits (no resync for it).

    Shared-table changes are dropped unless this stack holds the shared lock (issue 17).
    """
    changes = ownership.writable(plan.changes)
    if not changes:
        return True
    if not ownership.held:  # the lock session ended: another stack may own our accounts now
        ownership.counters["commits_withheld"] += 1
        return False  # memory kept; the resync after the locks are re-taken brings it back
    try:
        await writer.commit_isolating(changes, time.time_ns())
        return True
    except DatabaseError as e:
        log.warning("commit failed, memory kept, reconnecting: %s", e)
    try:
        if not stop.is_set():
            await writer.connect(stop)
    except DatabaseError:
        return False
    for slug in mirror.accounts:
        resyncs.request(slug, "commit_failed")
    return False


async def _commit_start(plan: Plan, writer: Writer, resyncs: Resyncs, mirror: Mirror, stop: asyncio.Event,
                        ownership: Ownership) -> bool:
    """Commit the start-up convergence in chunks of ``START_CHUNK_ROWS`` rows (idempotent, so a
    failure part-way is converged again by the next start or resync); swap only if all committed."""
    for group in changes.chunks(plan.changes, START_CHUNK_ROWS):
        if not await _commit(Plan(changes=group), writer, resyncs, mirror, stop, ownership):
            return False
    return True


def _return_memory() -> None:
    """Give the start-up garbage back to the system (the load and start plan peak far above steady state)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        log.debug("malloc_trim unavailable")


async def _load(conn: loads.Connection, mirror: Mirror) -> None:
    """Take the stored state of every account and the last prices (start-up; reads only)."""
    mirror.marks.prices.update(await loads.load_marks(conn, mirror.shared, now_ns=time.time_ns()))
    for slug, account in mirror.accounts.items():
        orders, fills, busted = await loads.load_start(conn, account.names)
        account.load(orders, fills, await loads.load_open_rows(conn, account.names),
                     await loads.load_closed_keys(conn, account.names),
                     actions=await loads.load_actions(conn, account.names), busted=busted)
        log.info("loaded account=%s orders=%d fills=%d lots=%d", slug, len(orders), len(fills),
                 len(account.ledger.lots))
    mirror.restore_marks()


async def _check_ledger(slug: str, settings: Settings, mirror: Mirror) -> None:
    try:
        async with await connect_read_only(settings.dsn, "state") as conn:
            names = mirror.accounts[slug].names
            orders, fills = await loads.load_history(conn, names)
            actions = await loads.load_actions(conn, names)
        found = await asyncio.to_thread(mirror.check_ledger, slug, orders, fills, actions)
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
                   mirror: Mirror, stop: asyncio.Event, ownership: Ownership) -> None:
    resyncs = Resyncs(ctx)
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
                if not await _commit(item, writer, resyncs, mirror, stop, ownership):
                    break  # the rest of the batch is dropped; the resync brings it back
                item.swap()
                for topic, message in item.messages:
                    if isinstance(message, m.ResyncRequested):
                        resyncs.request(message.account, message.reason, message.symbols)
                    else:
                        ctx.publisher.publish(topic, message)
        finally:
            mirror.tick_lag.observe(time.time_ns())
            for _ in events:
                queue.task_done()
        await asyncio.sleep(0)  # a long burst must not starve the feed task and the heartbeat


async def amain(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event) -> None:
    """Own the accounts, migrate, load, converge, then consume bus events and timers until stopped."""
    ownership = Ownership(settings.dsn, settings.account_schema, (a.slug for a in settings.accounts), ctx.counters)
    await ownership.acquire(stop)  # another live stack owns one of our accounts: one line, exit 1
    try:
        await _serve(settings, ctx, stop, ownership)
    finally:
        await ownership.close()


async def _serve(settings: Settings, ctx: runtime.WorkerContext, stop: asyncio.Event, ownership: Ownership) -> None:
    applied = await retry_database(
        lambda: asyncio.to_thread(_migrate, settings), stop, what="schema migration", counters=ctx.counters
    )
    log.info("schema current applied=%s", applied)
    writer = Writer(settings, counters=ctx.counters)
    await writer.connect(stop)
    mirror = Mirror(settings, ctx.counters)
    async with await connect_read_only(settings.dsn, "state") as conn:
        await _load(conn, mirror)
    start = mirror.start_plan(time.time_ns())
    if await _commit_start(start, writer, Resyncs(ctx), mirror, stop, ownership):
        start.swap()
    del start
    _return_memory()
    queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_MAX)
    for account in settings.accounts:
        ctx.publisher.publish(m.topic_resync(account.slug), m.ResyncRequested(account=account.slug, reason="start"))
    tasks = [
        asyncio.create_task(_feed(ctx, queue), name="state-feed"),
        asyncio.create_task(_every(settings.flush_interval_s, FlushDue(), queue, stop), name="state-flush"),
        asyncio.create_task(_every(settings.ui_heartbeat_s, HeartbeatDue(), queue, stop), name="state-ui-heartbeat"),
    ]
    consumer = asyncio.create_task(_consume(settings, ctx, queue, writer, mirror, stop, ownership),
                                   name="state-consumer")
    for task in (*tasks, consumer):
        task.add_done_callback(runtime.log_task_exception)
    def resync_all() -> None:  # commits were withheld while the locks were lost: read them again
        for account in settings.accounts:
            ctx.publisher.publish(m.topic_resync(account.slug),
                                  m.ResyncRequested(account=account.slug, reason="locks_retaken"))

    ownership.on_retaken = resync_all
    guard = asyncio.create_task(ownership.watch(stop), name="state-ownership")
    done, _ = await asyncio.wait([consumer, guard, asyncio.create_task(stop.wait())],
                                 return_when=asyncio.FIRST_COMPLETED)
    for task in (*tasks, guard):
        task.cancel()
    await asyncio.gather(*tasks, guard, return_exceptions=True)
    if guard in done and guard.exception() is not None:
        consumer.cancel()  # another stack owns one of our accounts now: not one more write (exit 1)
        await asyncio.gather(consumer, return_exceptions=True)
        await writer.close()
        guard.result()
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

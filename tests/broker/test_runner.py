"""Snapshot scheduling: each account keeps its own slot in the period (spread, not all at once), and a
still account whose stream is known open skips slots."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable

import pytest

from coldharbour.broker.runner import (
    IDLE_EVERY,
    STREAM_WORD_FRESH_S,
    SnapshotRunner,
    StreamEvidence,
    next_slot_s,
    still_reads,
)
from coldharbour.domain.types import Order
from coldharbour.health import NEED_STREAM
from coldharbour.messages import Condition, Heartbeat, ResyncRequested
from tests.domain.builders import make_order
from tests.support import async_wait_for


@pytest.mark.parametrize(("now_s", "phase_s", "expected"), [
    (1000.0, 30.0, 50.0),   # 1000 is 40 past a minute: the slot at 30 past is 50 s away
    (1000.0, 50.0, 70.0),   # 10 s away is under half a period: the slot after it
    (1020.0, 0.0, 60.0),    # on the slot itself: the next one
    (1030.0, 0.0, 50.0),
])  # fmt: skip
def test_next_slot_is_the_accounts_place_in_the_period_at_least_half_a_period_away(
    now_s: float, phase_s: float, expected: float
) -> None:
    assert next_slot_s(now_s, 60.0, phase_s) == pytest.approx(expected)


def test_accounts_with_spread_phases_read_the_broker_at_different_instants() -> None:
    accounts = 100
    instants = {round((1000.0 + next_slot_s(1000.0, 60.0, 60.0 * i / accounts)) % 60.0, 6) for i in range(accounts)}

    assert len(instants) == accounts


def _reads_per_slot(accounts: int, slots: int, turns: bool) -> tuple[list[int], int]:
    """Simulate ``accounts`` still accounts (turn = their number) over ``slots`` slots, all still
    from slot 0: reads per slot, and the longest run of slots an account went without a read."""
    per_slot = [0] * slots
    longest = 0
    for account in range(accounts):
        skipped = 0
        for slot in range(slots):
            if still_reads(slot if turns else None, account, skipped):
                per_slot[slot] += 1
                skipped = 0
            else:
                skipped += 1
                longest = max(longest, skipped)
    return per_slot, longest


def test_still_accounts_take_turns_so_their_reads_spread_over_idle_every_periods() -> None:
    per_slot, longest = _reads_per_slot(1_000, 4 * IDLE_EVERY, turns=True)
    together, _ = _reads_per_slot(1_000, 4 * IDLE_EVERY, turns=False)

    assert per_slot == [1_000 // IDLE_EVERY] * (4 * IDLE_EVERY)
    assert longest == IDLE_EVERY - 1  # never longer than IDLE_EVERY periods between two reads
    assert max(together) == 1_000  # without turns, accounts that became still together read together


# --- a still account's slots (docs/scaling.md "snapshot") ------------------------------------

SINCE_NS = 1_000  # the stream opened before every full snapshot below (they start at 10_000)


class StillSync:
    """Stands for ``AccountSync``: a still account; records, at each full snapshot, the slots skipped so far."""

    slug = "demo"

    def __init__(self, on_full: Callable[[int], None] = lambda n: None) -> None:
        self.counters: Counter[str] = Counter()
        self.still = False
        self.full_started_ns: int | None = None
        self.skipped_at_full: list[int] = []
        self.updates: list[str] = []
        self._on_full = on_full

    async def backfill(self, days: int) -> None:
        return None

    def rewind(self) -> None:
        return None

    def note_update(self, order: Order, legs: Iterable[Order] = ()) -> None:
        self.updates.append(order.id)

    async def full(self, reason: str) -> None:
        self.full_started_ns = 10_000 * (len(self.skipped_at_full) + 1)
        self.skipped_at_full.append(self.counters["snapshots_idle_skipped"])
        self.still = True
        self._on_full(len(self.skipped_at_full))


def _trades_beat(*conditions: Condition) -> Heartbeat:
    return Heartbeat(src="trades", seq=1, ts=0, program="trades", pid=1, uptime_s=1.0, conditions=conditions)


def _open(since: int = SINCE_NS) -> Condition:
    return Condition(need=NEED_STREAM, account="demo", ok=True, since=since)


async def _fulls(runner: SnapshotRunner, sync: StillSync, count: int) -> list[int]:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_full(stop))
    try:
        await async_wait_for(lambda: len(sync.skipped_at_full) >= count, 10, what=f"{count} full snapshots")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    return sync.skipped_at_full[:count]


@pytest.mark.asyncio
async def test_a_still_account_with_its_stream_open_runs_every_idle_every_th_slot() -> None:
    sync = StillSync()
    streams = StreamEvidence()
    streams.heard(_trades_beat(_open()))
    runner = SnapshotRunner(sync, snapshot_sec=0.01, backfill_days=1, streams=streams)  # type: ignore[arg-type]

    skipped = await _fulls(runner, sync, 3)

    assert skipped == [0, IDLE_EVERY - 1, 2 * (IDLE_EVERY - 1)]


@pytest.mark.asyncio
async def test_an_order_update_or_a_fill_refresh_brings_back_the_next_slot() -> None:
    def on_full(n: int) -> None:  # news while the first and the third full snapshots run
        if n == 1:
            runner.note_update(make_order(id="o7", status="new"))
        elif n == 3:
            runner.request(ResyncRequested(account="demo", reason="fill", symbols=("AAPL",)))

    sync = StillSync(on_full)
    streams = StreamEvidence()
    streams.heard(_trades_beat(_open()))
    runner = SnapshotRunner(sync, snapshot_sec=0.01, backfill_days=1, streams=streams)  # type: ignore[arg-type]

    skipped = await _fulls(runner, sync, 5)

    assert skipped == [0, 0, IDLE_EVERY - 1, IDLE_EVERY - 1, 2 * (IDLE_EVERY - 1)]
    assert sync.updates == ["o7"]  # still handed to the sync (the order reads it saves)


@pytest.mark.parametrize("word", ["none", "stale", "failed", "reopened", "another account"])
@pytest.mark.asyncio
async def test_every_slot_runs_while_the_stream_is_not_known_open_since_the_last_full_snapshot(word: str) -> None:
    clock = [100.0]
    streams = StreamEvidence(monotonic=lambda: clock[0])
    if word == "stale":
        streams.heard(_trades_beat(_open()))
        clock[0] += STREAM_WORD_FRESH_S + 1
    elif word == "failed":
        streams.heard(_trades_beat(Condition(need=NEED_STREAM, account="demo", ok=False, cause="disconnected")))
    elif word == "reopened":  # reconnected after the last full snapshot began
        streams.heard(_trades_beat(_open(since=10**12)))
    elif word == "another account":
        streams.heard(_trades_beat(Condition(need=NEED_STREAM, account="paper_1", ok=True, since=SINCE_NS)))
    sync = StillSync()
    runner = SnapshotRunner(sync, snapshot_sec=0.01, backfill_days=1, streams=streams)  # type: ignore[arg-type]

    assert await _fulls(runner, sync, 3) == [0, 0, 0]


@pytest.mark.asyncio
async def test_an_account_that_is_not_still_runs_every_slot() -> None:
    sync = StillSync()
    streams = StreamEvidence()
    streams.heard(_trades_beat(_open()))
    runner = SnapshotRunner(sync, snapshot_sec=0.01, backfill_days=1, streams=streams)  # type: ignore[arg-type]
    full = sync.full

    async def busy(reason: str) -> None:
        await full(reason)
        sync.still = False

    sync.full = busy  # type: ignore[method-assign]

    assert await _fulls(runner, sync, 3) == [0, 0, 0]

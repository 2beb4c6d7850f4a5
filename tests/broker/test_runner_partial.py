"""The partial-snapshot loop under a stream of fills: coalesced, and spaced by the budget's share."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest

from coldharbour.broker.runner import SnapshotRunner
from coldharbour.messages import ResyncRequested
from tests.support import async_wait_for


class Sync:
    """Stands for ``AccountSync``: records each partial snapshot's symbols."""

    slug = "demo"

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.partials: list[list[str]] = []

    async def wait_partial_turn(self) -> None:
        return None

    async def partial(self, symbols: Sequence[str]) -> None:
        self.partials.append(list(symbols))


@pytest.mark.asyncio
async def test_fills_during_the_gap_join_one_refresh() -> None:
    sync = Sync()
    gaps: list[float] = []
    gate = asyncio.Event()

    async def sleep(stop: asyncio.Event, seconds: float) -> bool:  # the gap, held open by the test
        gaps.append(seconds)
        await gate.wait()
        gate.clear()
        return stop.is_set()

    runner = SnapshotRunner(sync, snapshot_sec=60, backfill_days=1, partial_gap_s=3.0, sleep=sleep)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_partial(stop))
    runner.request(ResyncRequested(account="demo", reason="fill", symbols=("AAPL",)))
    await async_wait_for(lambda: gaps, 5, what="the first refresh, then the gap")
    for symbol in ("MSFT", "NVDA", "MSFT"):  # fills during the gap
        runner.request(ResyncRequested(account="demo", reason="fill", symbols=(symbol,)))
    gate.set()
    await async_wait_for(lambda: len(gaps) == 2, 5, what="the second refresh")
    stop.set()
    gate.set()
    await asyncio.wait_for(task, 5)

    assert sync.partials == [["AAPL"], ["MSFT", "NVDA"]]  # one read for the fills of the gap
    assert gaps == [3.0, 3.0]

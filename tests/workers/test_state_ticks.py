"""``state`` under a tick storm: 10,000 ticks for 1,000 lots write nothing per tick, the flush
writes every dirty row in one commit, and only rows whose mark crossed the threshold are pushed.

In-process ``state`` (``workers.state.amain``) on the in-proc bus with real PostgreSQL and a
LISTEN client. Writes are counted with the writer's ``commits`` counter (one per transaction;
``pg_stat_statements`` is not available) and pushes by reading every NOTIFY on the positions
channel. ``FLUSH_INTERVAL_S`` is an hour: the flush under test is the final one at stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio

from coldharbour.messages import OrderUpdated, Tick, topic_tick, topic_trade
from tests.support import async_wait_for
from tests.workers.state_harness import T0, StateHarness, fill, new_id, order

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]

POS = "accounts.account_open_positions_demo"
SYMBOLS = [f"S{n:03d}" for n in range(100)]
LOTS_PER_SYMBOL = 10
MOVED = SYMBOLS[:10]  # their last tick is +1 %: past UI_PUSH_PCT_THRESHOLD (0.25 %)
TICKS = 10_000


@pytest_asyncio.fixture
async def state(migrated_dsn: Any, bus: Any) -> AsyncIterator[StateHarness]:
    harness = StateHarness(migrated_dsn, bus)
    await harness.start()
    yield harness
    await harness.close()


def _entry(symbol: str) -> OrderUpdated:
    entry_id = new_id()
    entry = order(id=entry_id, symbol=symbol, status="filled", filled_qty=Decimal(10),
                  filled_avg_price=Decimal(100))  # fmt: skip
    return OrderUpdated(account="demo", event="fill", order=entry, event_ts=T0,
                        fill=fill(entry_id, symbol=symbol, cum_qty=Decimal(10)))  # fmt: skip


def _storm() -> list[Tick]:
    """Return 10,000 ticks: every symbol wanders within ±0.19 % of 100, the MOVED end at 101."""
    ticks = []
    for n in range(TICKS - len(SYMBOLS)):
        symbol = SYMBOLS[n % len(SYMBOLS)]
        price = round(100 + ((n // 7) % 39 - 19) / 100, 2)
        ticks.append(Tick(symbol=symbol, price=price, ts_event=T0 + 1000 * (n + 1)))
    last = T0 + 1000 * TICKS
    ticks += [Tick(symbol=s, price=101.0 if s in MOVED else 100.05, ts_event=last) for s in SYMBOLS]
    return ticks


async def _marks(state: StateHarness) -> dict[Decimal | None, int]:
    rows = await state.query(f"SELECT mkt_px, count(*) FROM {POS} GROUP BY mkt_px")
    return {mark: count for mark, count in rows}


async def test_state_10000_ticks_for_1000_lots_no_per_tick_write_one_flush_pushes_past_threshold(
    state: StateHarness,
) -> None:
    for symbol in SYMBOLS:
        for _ in range(LOTS_PER_SYMBOL):
            state.inject(topic_trade("demo"), _entry(symbol))
    await async_wait_for(lambda: _count(state), 30, what="1,000 open rows")
    for symbol in SYMBOLS:  # the first mark of each symbol is pushed and written
        state.inject(topic_tick(symbol), Tick(symbol=symbol, price=100.0, ts_event=T0))
    await async_wait_for(lambda: _all_marked(state), 30, what="first marks written")
    await state.settle()
    counters = state.ctx.counters
    commits, ticks, start = counters["commits"], counters["ticks"], state.mark()
    storm = _storm()

    for tick in storm[: -len(SYMBOLS)]:
        state.inject(topic_tick(tick.symbol), tick)
    await async_wait_for(lambda: counters["ticks"] >= ticks + len(storm) - len(SYMBOLS), 60, what="small ticks")
    await state.settle()  # one commit: the sentinel
    quiet_commits, quiet_notes = counters["commits"] - commits, state.notes_since(start, "pos_channel_demo")
    quiet_marks = await _marks(state)
    moved_at = state.mark()
    for tick in storm[-len(SYMBOLS) :]:
        state.inject(topic_tick(tick.symbol), tick)
    await async_wait_for(lambda: counters["ticks"] >= ticks + len(storm), 30, what="last ticks")
    await state.settle()
    pushed = [row for note in state.notes_since(moved_at, "pos_channel_demo") for row in _rows(note)]
    moved_marks = await _marks(state)
    before_flush = counters["commits"]
    await state.shutdown()  # the final flush
    flush_commits = counters["commits"] - before_flush
    flushed_marks = await _marks(state)
    prices = await state.query("SELECT symbol, price FROM accounts.latest_prices WHERE symbol LIKE 'S%%'")

    moved_lots = {
        r[0] for r in await state.query(f"SELECT parent_id FROM {POS} WHERE symbol = ANY(%s)", MOVED)
    }
    assert quiet_commits == 1  # the settle sentinel: 9,900 ticks wrote nothing
    assert quiet_notes == []
    assert quiet_marks == {Decimal(100): 1000}
    assert len(pushed) == len(moved_lots) == 100  # each row past the threshold pushed once, no other
    assert {row["parent_id"] for row in pushed} == moved_lots
    assert {row["mkt_px"] for row in pushed} == {101.0}
    assert moved_marks == {Decimal(100): 900, Decimal(101): 100}
    assert flush_commits == 1
    assert flushed_marks == {Decimal("100.05"): 900, Decimal(101): 100}
    assert dict(prices) == {s: Decimal(101) if s in MOVED else Decimal("100.05") for s in SYMBOLS}


async def _count(state: StateHarness) -> bool:
    rows = await state.query(f"SELECT count(*) FROM {POS}")
    return bool(rows[0][0] == len(SYMBOLS) * LOTS_PER_SYMBOL)


async def _all_marked(state: StateHarness) -> bool:
    return await _marks(state) == {Decimal(100): len(SYMBOLS) * LOTS_PER_SYMBOL}


def _rows(note: dict[str, Any]) -> list[dict[str, Any]]:
    if "row" in note:
        return [note["row"]]
    rows: list[dict[str, Any]] = note.get("rows", [])
    return rows

"""`snapshot` in-process: backfill, full and partial snapshots, history pages, ledger checks."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from coldharbour import retry as retry_module
from coldharbour.broker import rest as rest_module
from coldharbour.broker import runner as runner_module
from coldharbour.health import NEED_STREAM
from coldharbour.messages import (
    Condition,
    FillsPage,
    Heartbeat,
    LedgerCheckRequested,
    OrdersPage,
    ResyncRequested,
    SnapshotTaken,
    topic_heartbeat,
    topic_resync,
)
from tests.fixtures.broker import FakeBroker
from tests.fixtures.bus import InprocBus, Observer
from tests.support import async_wait_for
from tests.workers.broker_support import InProcessWorker, worker_settings
from workers import snapshot

M = TypeVar("M")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest_module, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(rest_module, "BACKOFF_CAP_S", 0.02)
    monkeypatch.setattr(runner_module, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(runner_module, "BACKOFF_CAP_S", 0.05)
    monkeypatch.setattr(retry_module, "SUPERVISE_BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(retry_module, "SUPERVISE_BACKOFF_CAP_S", 0.05)


def _of(observer: Observer, kind: type[M]) -> list[M]:
    return [m for m in observer.messages() if isinstance(m, kind)]


def _snapshots(observer: Observer, *, partial: bool = False) -> list[SnapshotTaken]:
    return [m for m in _of(observer, SnapshotTaken) if bool(m.symbols) == partial]


def _order_ids(observer: Observer) -> set[str]:
    return {o.id for page in _of(observer, OrdersPage) for o in page.orders}


def _bracket(broker: FakeBroker, qty: int = 5) -> str:
    request = MarketOrderRequest(
        symbol="AAPL", qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class="bracket",
        take_profit={"limit_price": 110}, stop_loss={"stop_price": 90},
    )  # fmt: skip
    return str(broker.trading_client().submit_order(request).id)  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_snapshot_backfill_then_snapshot_and_paged_history(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rest_module, "ORDERS_PAGE_LIMIT", 2)
    monkeypatch.setattr(rest_module, "ACTIVITIES_PAGE_SIZE", 2)
    fake_broker.set_prices({"AAPL": 100})
    for _ in range(3):
        await asyncio.to_thread(_bracket, fake_broker, 1)
    fake_broker.fail("500", "html500")  # the first calls fail: retried, never a crash
    observer = bus.observe("")
    worker = InProcessWorker("snapshot", snapshot.amain, worker_settings(bus, tmp_path, fake_broker), bus).start()
    try:
        await async_wait_for(lambda: _snapshots(observer), 10, what="first snapshot")
    finally:
        await worker.close()

    backfill = [p for p in _of(observer, OrdersPage) if p.is_backfill]
    fills = [p for p in _of(observer, FillsPage) if p.is_backfill]
    first = _snapshots(observer)[0]
    assert len({o.id for p in backfill for o in p.orders}) == 9  # 3 parents + 6 legs
    assert [p.is_last for p in backfill][-1] is True
    assert sum(len(p.fills) for p in fills) == 3
    assert fills[-1].is_last
    assert first.reason == "start"
    assert [(p.symbol, p.qty) for p in first.positions] == [("AAPL", Decimal(3))]
    assert first.cash is not None
    assert len(first.open_orders) == 9  # parents listed with their live legs
    assert worker.ctx.counters["broker_retries"] == 2


@pytest.mark.asyncio
async def test_snapshot_partial_of_many_symbols_reads_the_position_list_once(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    """Three or more symbols: one ``GET /v2/positions`` filtered to them, not one request each."""
    fake_broker.set_prices({"AAPL": 100, "MSFT": 50})
    await asyncio.to_thread(_bracket, fake_broker)
    observer = bus.observe("")
    worker = InProcessWorker("snapshot", snapshot.amain, worker_settings(bus, tmp_path, fake_broker), bus).start()
    try:
        await async_wait_for(lambda: _snapshots(observer), 10, what="first snapshot")
        before = len(fake_broker.request("GET", "/sim/log", account=None).json())
        bus.inject(topic_resync("demo"), ResyncRequested(account="demo", reason="fill",
                                                         symbols=("MSFT", "AAPL", "NVDA", "BTC/USD")))
        await async_wait_for(lambda: _snapshots(observer, partial=True), 10, what="partial snapshot")
    finally:
        await worker.close()
    paths = [r["path"] for r in fake_broker.request("GET", "/sim/log", account=None).json()[before:]]

    partial = _snapshots(observer, partial=True)[0]
    assert partial.symbols == ("AAPL", "BTC/USD", "MSFT", "NVDA")
    assert [(p.symbol, p.qty) for p in partial.positions] == [("AAPL", Decimal(5))]
    assert [p for p in paths if p.startswith("/v2/positions")] == ["/v2/positions"]


@pytest.mark.asyncio
async def test_snapshot_resync_requests_partial_and_full(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    fake_broker.set_prices({"AAPL": 100})
    observer = bus.observe("")
    worker = InProcessWorker("snapshot", snapshot.amain, worker_settings(bus, tmp_path, fake_broker), bus).start()
    try:
        await async_wait_for(lambda: _snapshots(observer), 10, what="first snapshot")
        parent = await asyncio.to_thread(_bracket, fake_broker)
        bus.inject(topic_resync("demo"), ResyncRequested(account="demo", reason="fill", symbols=("AAPL", "MSFT")))
        await async_wait_for(lambda: _snapshots(observer, partial=True), 10, what="partial snapshot")
        bus.inject(topic_resync("demo"), ResyncRequested(account="demo", reason="reconnect"))
        await async_wait_for(lambda: parent in _order_ids(observer), 10, what="new order in history")
        await async_wait_for(lambda: any(s.reason == "reconnect" for s in _snapshots(observer)), 10, what="full")
        fake_broker.set_prices({"AAPL": 111})  # the take-profit fills: the family leaves the open list
        bus.inject(topic_resync("demo"), ResyncRequested(account="demo", reason="gap"))
        await async_wait_for(lambda: any(s.reason == "gap" for s in _snapshots(observer)), 10, what="after TP")
    finally:
        await worker.close()

    partial = _snapshots(observer, partial=True)[0]
    assert partial.symbols == ("AAPL", "MSFT")
    assert [(p.symbol, p.qty) for p in partial.positions] == [("AAPL", Decimal(5))]
    statuses = {o.id: o.status for page in _of(observer, OrdersPage) for o in page.orders if o.parent_id == parent}
    assert sorted(statuses.values()) == ["canceled", "filled"]  # TP filled, stop canceled
    assert _snapshots(observer)[-1].positions == ()
    assert _snapshots(observer)[-1].open_orders == ()


@pytest.mark.asyncio
async def test_snapshot_periodic_and_ledger_checks(bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path) -> None:
    observer = bus.observe("")
    settings = worker_settings(bus, tmp_path, fake_broker, SNAPSHOT_SEC="0.1", CLOSED_SYNC_SEC="0.1")
    worker = InProcessWorker("snapshot", snapshot.amain, settings, bus).start()
    try:
        await async_wait_for(lambda: any(s.reason == "periodic" for s in _snapshots(observer)), 10, what="periodic")
        await async_wait_for(lambda: _of(observer, LedgerCheckRequested), 10, what="ledger check")
    finally:
        await worker.close()

    assert _of(observer, LedgerCheckRequested)[0].account == "demo"


@pytest.mark.asyncio
async def test_snapshot_a_still_account_skips_slots_while_trades_says_its_stream_is_open(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    """docs/scaling.md "snapshot": a flat account with nothing new, whose stream ``trades``' heartbeat
    says has been open since before its last full snapshot, is read every ``IDLE_EVERY``-th slot."""
    observer = bus.observe("")
    opened = time.time_ns()  # the stream opened before the worker's first full snapshot
    beat = Heartbeat(src="trades", seq=1, ts=opened, program="trades", pid=1, uptime_s=1.0,
                     conditions=(Condition(need=NEED_STREAM, account="demo", ok=True, since=opened),))  # fmt: skip

    async def trades_beating() -> None:  # trades' heartbeat, once a second in production
        while True:
            bus.inject(topic_heartbeat("trades"), beat)
            await asyncio.sleep(0.2)  # the heartbeat's pace, not a synchronisation

    beating = asyncio.create_task(trades_beating())
    settings = worker_settings(bus, tmp_path, fake_broker, SNAPSHOT_SEC="0.1")
    worker = InProcessWorker("snapshot", snapshot.amain, settings, bus).start()
    skipped = lambda: worker.ctx.counters["snapshots_idle_skipped"]  # noqa: E731
    try:
        await async_wait_for(lambda: skipped() >= 1, 20, what="a skipped slot")
        periodic = len([s for s in _snapshots(observer) if s.reason == "periodic"])
        await async_wait_for(lambda: skipped() >= 2 * (runner_module.IDLE_EVERY - 1) + 1, 20, what="more skipped")
        read_meanwhile = len([s for s in _snapshots(observer) if s.reason == "periodic"]) - periodic
    finally:
        beating.cancel()
        await worker.close()

    assert read_meanwhile >= 1  # still read, every IDLE_EVERY-th slot
    assert _snapshots(observer)[-1].positions == ()


@pytest.mark.asyncio
async def test_snapshot_broker_down_keeps_retrying_without_crash(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    fake_broker.fail(*["503"] * 12)
    observer = bus.observe("snap.")
    worker = InProcessWorker("snapshot", snapshot.amain, worker_settings(bus, tmp_path, fake_broker), bus).start()
    try:
        await async_wait_for(lambda: _snapshots(observer), 15, what="snapshot after outage")
    finally:
        await worker.close()

    assert worker.ctx.counters["snapshot_failures"] >= 2
    assert worker.ctx.counters["task_restarts"] == 0


def _fill_ids(pages: list[FillsPage]) -> set[str]:
    return {f.key for page in pages for f in page.fills}


@pytest.mark.asyncio
@pytest.mark.parametrize("reason", ["start", "gap", "restart", "commit_failed"])
async def test_issue_9_resync_after_missed_pages_resends_history(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path, reason: str
) -> None:
    """Bug: a full resync sent only the history after snapshot's cursors, which say what was
    *published*, not what ``state`` received. A ``state`` that started after the backfill, or
    lost pages to a bus restart, then reconciled against positions its history could not explain:
    synthetic ``recon:`` fills, then the real fills on top (double), then a reversing ``recon:``
    exit — a phantom closed trade (seen in the demo at every start and in kill -9 of ``bus``)."""
    fake_broker.set_prices({"AAPL": 100})
    await asyncio.to_thread(_bracket, fake_broker, 2)
    observer = bus.observe("")
    worker = InProcessWorker("snapshot", snapshot.amain, worker_settings(bus, tmp_path, fake_broker), bus).start()
    try:
        await async_wait_for(lambda: _snapshots(observer), 10, what="first snapshot")
        backfilled = _fill_ids([p for p in _of(observer, FillsPage) if p.is_backfill])
        bus.inject(topic_resync("demo"), ResyncRequested(account="demo", reason="reconnect"))
        await async_wait_for(lambda: any(s.reason == "reconnect" for s in _snapshots(observer)), 10, what="reconnect")
        after_reconnect, taken = len(_of(observer, FillsPage)), len(_snapshots(observer))
        reconnect_fills = _fill_ids([p for p in _of(observer, FillsPage) if not p.is_backfill])
        bus.inject(topic_resync("demo"), ResyncRequested(account="demo", reason=reason))
        await async_wait_for(lambda: any(s.reason == reason for s in _snapshots(observer)[taken:]), 10, what=reason)
    finally:
        await worker.close()

    resent = _fill_ids([p for p in _of(observer, FillsPage)[after_reconnect:] if not p.is_backfill])
    assert len(backfilled) == 1
    assert reconnect_fills == set()  # a stream reconnect needs no rewind: the cursors hold
    assert resent == backfilled
    assert worker.ctx.counters["rewinds"] == 1


@pytest.mark.asyncio
async def test_issue_9_full_snapshot_reads_positions_before_history(
    bus: InprocBus, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    """Bug: a full snapshot read the fill history first and the positions after it, so a fill in
    between was in the positions but not in the pages published before them: ``state`` booked a
    ``recon:`` fill for it, then the real fill from the stream doubled the position."""
    observer = bus.observe("")
    worker = InProcessWorker("snapshot", snapshot.amain, worker_settings(bus, tmp_path, fake_broker), bus).start()
    try:
        await async_wait_for(lambda: _snapshots(observer), 10, what="first snapshot")
    finally:
        await worker.close()

    paths = [entry["path"] for entry in fake_broker.request("GET", "/sim/log", account=None).json()]
    backfill_done = paths.index("/v2/account/activities/FILL")  # the backfill reads history only
    full = paths[backfill_done + 1 :]
    assert full.index("/v2/positions") < full.index("/v2/account/activities/FILL")

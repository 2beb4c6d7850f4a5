"""The trade_updates connection against the fake broker: alpaca-py primary, our fallback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from coldharbour.broker import stream as stream_module
from coldharbour.broker.listener import UpdateListener
from coldharbour.broker.sdk_stream import PrimaryClient
from coldharbour.broker.stream import FallbackClient, TradeStream
from coldharbour.messages import OrderUpdated, ResyncRequested
from tests.broker.support import RecordingSink, account_for
from tests.fixtures.broker import FakeBroker
from tests.support import async_wait_for


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink reconnect delays and the watchdog period so tests take milliseconds, not seconds."""
    monkeypatch.setattr(stream_module, "BACKOFF_BASE_S", 0.05)
    monkeypatch.setattr(stream_module, "BACKOFF_CAP_S", 0.2)
    monkeypatch.setattr(stream_module, "WATCHDOG_INTERVAL_S", 0.05)


class Running:
    """A ``TradeStream`` running as a task, with its sink and counters."""

    def __init__(self, broker: FakeBroker, *, use_primary: bool = True, secret: str | None = None) -> None:
        self.sink = RecordingSink()
        self.counters: Counter[str] = Counter()
        self.listener = UpdateListener("demo", self.sink, self.counters)
        self.stream = TradeStream(account_for(broker, secret=secret), self.listener, use_primary=use_primary)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Running:
        self.task = asyncio.create_task(self.stream.run(self.stop))
        return self

    async def close(self) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)

    def resyncs(self, reason: str) -> list[ResyncRequested]:
        return [m for m in self.sink.of(ResyncRequested) if m.reason == reason]

    def updates(self, event: str | None = None) -> list[OrderUpdated]:
        return [m for m in self.sink.of(OrderUpdated) if event is None or m.event == event]


@pytest_asyncio.fixture
async def primary(fake_broker: FakeBroker) -> AsyncIterator[Running]:
    running = Running(fake_broker).start()
    yield running
    await running.close()


async def _buy(broker: FakeBroker, symbol: str = "AAPL", qty: float = 10) -> None:
    client = broker.trading_client()
    request = MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    await asyncio.to_thread(client.submit_order, request)


@pytest.mark.asyncio
async def test_primary_fill_published_without_a_resync_of_its_own(fake_broker: FakeBroker, primary: Running) -> None:
    await async_wait_for(lambda: primary.resyncs("reconnect"), 10, what="first connect")
    fake_broker.set_prices({"AAPL": 180.25})

    await _buy(fake_broker)
    await async_wait_for(lambda: primary.updates("fill"), 10, what="fill update")

    fill_update = primary.updates("fill")[0]
    assert isinstance(primary.stream.client, PrimaryClient)
    assert fill_update.account == "demo"
    assert fill_update.fill is not None
    assert fill_update.fill.symbol == "AAPL"
    assert str(fill_update.fill.price) == "180.25"
    assert fill_update.fill.execution_id
    assert primary.resyncs("fill") == []  # the WAC refresh after a fill is state's to ask


@pytest.mark.asyncio
async def test_primary_drop_stream_reconnects_and_requests_resync(fake_broker: FakeBroker, primary: Running) -> None:
    await async_wait_for(lambda: primary.resyncs("reconnect"), 10, what="first connect")
    fake_broker.set_prices({"AAPL": 100})

    await asyncio.to_thread(fake_broker.drop_stream)
    await async_wait_for(lambda: len(primary.resyncs("reconnect")) >= 2, 10, what="reconnect resync")
    await async_wait_for(lambda: fake_broker.listener_count() == 1, 10, what="listening again")
    await _buy(fake_broker)
    await async_wait_for(lambda: primary.updates("fill"), 10, what="fill after reconnect")

    assert primary.counters["stream_connects"] == 2
    assert primary.counters["stream_disconnects"] >= 1


@pytest.mark.asyncio
async def test_primary_ws_reject_429_backs_off_then_connects(fake_broker: FakeBroker) -> None:
    fake_broker.fail(ws_reject=2)
    running = Running(fake_broker).start()
    try:
        await async_wait_for(lambda: running.resyncs("reconnect"), 10, what="connect after 429s")
    finally:
        await running.close()

    state = fake_broker.state()
    assert state["stream"]["upgrades_to_reject"] == 0
    assert running.counters["stream_connect_failures"] == 2
    assert isinstance(running.stream.client, PrimaryClient)


@pytest.mark.asyncio
async def test_primary_never_connecting_switches_to_fallback(fake_broker: FakeBroker) -> None:
    fake_broker.fail(ws_reject=stream_module.PRIMARY_MAX_FAILED_CONNECTS + 1)
    running = Running(fake_broker).start()
    try:
        await async_wait_for(lambda: running.resyncs("reconnect"), 15, what="connect through the fallback")
    finally:
        await running.close()

    assert isinstance(running.stream.client, FallbackClient)
    assert running.counters["stream_fallbacks"] == 1


@pytest.mark.asyncio
async def test_fallback_alone_receives_fills_and_reconnects(fake_broker: FakeBroker) -> None:
    running = Running(fake_broker, use_primary=False).start()
    try:
        await async_wait_for(lambda: running.resyncs("reconnect"), 10, what="fallback connect")
        fake_broker.set_prices({"MSFT": 400})
        await _buy(fake_broker, "MSFT", 2)
        await async_wait_for(lambda: running.updates("fill"), 10, what="fill via fallback")
        await asyncio.to_thread(fake_broker.drop_stream)
        await async_wait_for(lambda: len(running.resyncs("reconnect")) >= 2, 10, what="fallback reconnect")
    finally:
        await running.close()

    assert isinstance(running.stream.client, FallbackClient)
    assert [u.fill.symbol for u in running.updates("fill") if u.fill is not None] == ["MSFT"]
    assert fake_broker.listener_count() == 0


@pytest.mark.asyncio
async def test_fallback_wrong_secret_backs_off_without_storm(
    fake_broker: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "BACKOFF_BASE_S", 0.2)
    monkeypatch.setattr(stream_module, "BACKOFF_CAP_S", 0.4)
    started = time.monotonic()
    running = Running(fake_broker, use_primary=False, secret="wrong").start()
    try:
        await async_wait_for(lambda: running.counters["stream_auth_failures"] >= 3, 10, what="three refusals")
        elapsed_s = time.monotonic() - started
        failures = running.counters["stream_auth_failures"]
        total = fake_broker.state()["stream"]["connections_total"]
    finally:
        await running.close()

    # Attempts 1 and 2 wait at least 0.1 s and 0.2 s (equal jitter): no storm.
    assert elapsed_s >= 0.3
    assert total <= failures + 1
    assert running.resyncs("reconnect") == []


@pytest.mark.asyncio
async def test_watchdog_silent_with_open_orders_reconnects(
    fake_broker: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "SILENCE_RECONNECT_S", 0.3)
    running = Running(fake_broker).start()
    try:
        await async_wait_for(lambda: running.resyncs("reconnect"), 10, what="connect")
        fake_broker.set_prices({"AAPL": 100})
        client = fake_broker.trading_client()
        request = LimitOrderRequest(
            symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=50
        )
        await asyncio.to_thread(client.submit_order, request)
        await async_wait_for(lambda: running.listener.open_orders, 10, what="open order seen")
        await async_wait_for(lambda: running.counters["stream_silent_reconnects"] >= 1, 10, what="watchdog")
        await async_wait_for(lambda: len(running.resyncs("reconnect")) >= 2, 10, what="resync after watchdog")
    finally:
        await running.close()


@pytest.mark.asyncio
async def test_handler_bad_frames_counted_stream_keeps_going(fake_broker: FakeBroker, primary: Running) -> None:
    await async_wait_for(lambda: primary.resyncs("reconnect"), 10, what="connect")

    fake_broker.emit({"event": "fill", "timestamp": "2024-03-01T15:00:00Z", "order": {"id": "x"}})
    fake_broker.emit({"event": "weird", "timestamp": "2024-03-01T15:00:00Z"})
    fake_broker.set_prices({"AAPL": 100})
    await _buy(fake_broker)
    await async_wait_for(lambda: primary.updates("fill"), 10, what="fill after bad frames")

    assert primary.counters["rejects"] == 2
    assert primary.counters["stream_handler_errors"] == 0

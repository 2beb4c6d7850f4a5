"""The trade_updates connection against the fake broker: alpaca-py primary, our fallback."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from websockets.asyncio.server import Server, ServerConnection, serve

from coldharbour.broker import stream as stream_module
from coldharbour.broker.listener import UpdateListener
from coldharbour.broker.sdk_stream import PrimaryClient
from coldharbour.broker.stream import FallbackClient, TradeStream
from coldharbour.config import AccountSettings, Secret
from coldharbour.messages import OrderUpdated, ResyncRequested
from tests.broker.corpus import TRADE_UPDATES
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


async def _hostile_stream_server(frames: list[str | bytes]) -> tuple[Server, str]:
    """A WebSocket server that does Alpaca's handshake (docs/broker.md §4), then sends ``frames``.

    The fake broker only sends well-formed JSON; this one sends what a broken proxy might.
    """

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # authenticate
        await ws.send(json.dumps({"stream": "authorization", "data": {"status": "authorized"}}))
        await ws.recv()  # listen
        await ws.send(json.dumps({"stream": "listening", "data": {"streams": ["trade_updates"]}}))
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    server = await serve(handler, "127.0.0.1", 0)
    port = next(iter(server.sockets)).getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/stream"


@pytest.mark.asyncio
@pytest.mark.parametrize("use_primary", [True, False], ids=["primary", "fallback"])
async def test_frames_that_are_not_updates_are_counted_and_the_stream_goes_on(use_primary: bool) -> None:
    """Both clients decode frames with ``decode_frame``: not JSON, a JSON array and JSON the SDK's
    decoder takes but msgspec does not (``NaN``) are counted rejections; the update after them is
    published."""
    fill = json.dumps(TRADE_UPDATES["fill"])
    nan_price = fill.replace('"price": "180.25"', '"price": NaN')
    frames: list[str | bytes] = [b"<html>502</html>", "[1, 2]", nan_price, fill.encode()]
    server, url = await _hostile_stream_server(frames)
    sink = RecordingSink()
    counters: Counter[str] = Counter()
    listener = UpdateListener("demo", sink, counters)
    account = AccountSettings(
        name="demo", slug="demo", api_key=Secret("k"), secret_key=Secret("s"), base_url="http://127.0.0.1:9"
    )
    client: PrimaryClient | FallbackClient = (
        PrimaryClient(listener, "k", "s", url, backoff_base_s=0.05, backoff_cap_s=0.2)
        if use_primary
        else FallbackClient(listener, account, url=url)
    )
    task = asyncio.create_task(client.run())
    try:
        await async_wait_for(lambda: sink.of(OrderUpdated), 10, what="the update after the bad frames")
    finally:
        await client.stop(task)
        server.close()
        await server.wait_closed()

    assert counters["rejects_stream_not_json"] == 1
    assert counters["rejects_stream_frame_shape"] == 1
    assert counters["rejects_stream_update_value"] == 1  # price NaN
    assert counters["rejects"] == 3
    assert counters["stream_handler_errors"] == 0
    assert [m.event for m in sink.of(OrderUpdated)] == ["fill"]

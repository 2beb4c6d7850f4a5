"""The trade_updates stream through the real alpaca-py ``TradingStream`` and a raw client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import MarketOrderRequest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.fixtures.broker import BrokerFactory, FakeBroker
from tests.support import async_wait_for

STREAM_TIMEOUT_S = 10.0


@contextlib.asynccontextmanager
async def running_stream(broker: FakeBroker, account: str = "demo") -> AsyncIterator[list[TradeUpdate]]:
    """Run an alpaca-py TradingStream in this loop until the block ends; yield what it receives."""
    stream = broker.trading_stream(account)
    received: list[TradeUpdate] = []

    async def on_update(update: TradeUpdate) -> None:
        received.append(update)

    stream.subscribe_trade_updates(on_update)
    task = asyncio.create_task(stream._run_forever())
    await async_wait_for(lambda: broker.listener_count() > 0, STREAM_TIMEOUT_S, what="stream listening")
    try:
        yield received
    finally:
        await stream.stop_ws()
        await stream.close()  # public; without it stopping waits for the SDK's 5 s receive poll
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _buy(broker: FakeBroker, qty: float = 10, account: str = "demo") -> None:
    broker.trading_client(account).submit_order(
        MarketOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )


def _fills(received: list[TradeUpdate]) -> list[TradeUpdate]:
    return [update for update in received if update.event == "fill"]


@pytest.mark.asyncio
async def test_trading_stream_authenticates_listens_and_receives_fill(fake_broker: FakeBroker) -> None:
    fake_broker.set_prices({"AAPL": 180})

    async with running_stream(fake_broker) as received:
        _buy(fake_broker)
        await async_wait_for(lambda: _fills(received), STREAM_TIMEOUT_S, what="fill update")

    new, fill = received
    assert new.event == "new"
    assert fill.order.status == OrderStatus.FILLED
    assert (fill.price, fill.qty, fill.position_qty) == (180.0, 10.0, 10.0)
    assert isinstance(fill.execution_id, uuid.UUID)
    assert fill.order.filled_qty == "10"


@pytest.mark.asyncio
async def test_trading_stream_reconnects_after_drop_and_receives_next_fill(fake_broker: FakeBroker) -> None:
    fake_broker.set_prices({"AAPL": 50})

    async with running_stream(fake_broker) as received:
        _buy(fake_broker, 1)
        await async_wait_for(lambda: len(_fills(received)) == 1, STREAM_TIMEOUT_S, what="first fill")
        dropped = fake_broker.drop_stream()
        await async_wait_for(
            lambda: fake_broker.state()["stream"]["connections_total"] == 2 and fake_broker.listener_count() == 1,
            STREAM_TIMEOUT_S,
            what="reconnected stream",
        )
        _buy(fake_broker, 2)
        await async_wait_for(lambda: len(_fills(received)) == 2, STREAM_TIMEOUT_S, what="fill after reconnect")

    assert dropped == 1
    assert [fill.position_qty for fill in _fills(received)] == [1.0, 3.0]


@pytest.mark.asyncio
async def test_each_account_receives_only_its_own_updates(fake_broker_factory: BrokerFactory) -> None:
    broker = fake_broker_factory(accounts=["alpha", "beta"])
    broker.set_prices({"AAPL": 20})

    async with running_stream(broker, "alpha") as received:
        _buy(broker, 3, account="beta")
        _buy(broker, 1, account="alpha")
        await async_wait_for(lambda: _fills(received), STREAM_TIMEOUT_S, what="alpha fill")

    assert [fill.qty for fill in _fills(received)] == [1.0]


async def _frame(socket: object) -> dict[str, object]:
    raw = await asyncio.wait_for(socket.recv(), STREAM_TIMEOUT_S)  # type: ignore[attr-defined]
    return json.loads(raw)


@pytest.mark.asyncio
async def test_handshake_frames_match_alpaca_on_trailing_slash_path(fake_broker: FakeBroker) -> None:
    key_id, secret = fake_broker.keys()
    fake_broker.set_prices({"AAPL": 10})

    async with connect(fake_broker.stream_url + "/") as socket:
        await socket.send(json.dumps({"action": "authenticate", "data": {"key_id": key_id, "secret_key": secret}}))
        authorization = await _frame(socket)
        await socket.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        listening = await _frame(socket)
        await asyncio.to_thread(_buy, fake_broker, 1)
        raw_update = await asyncio.wait_for(socket.recv(), STREAM_TIMEOUT_S)

    assert authorization == {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}}
    assert listening == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    assert isinstance(raw_update, bytes)  # binary frames, like the paper endpoint
    update = json.loads(raw_update)
    assert update["stream"] == "trade_updates"
    assert update["data"]["event"] == "new"
    assert TradeUpdate(**update["data"]).order.symbol == "AAPL"


@pytest.mark.asyncio
async def test_wrong_secret_gets_unauthorized_and_close(fake_broker: FakeBroker) -> None:
    async with connect(fake_broker.stream_url) as socket:
        await socket.send(json.dumps({"action": "authenticate", "data": {"key_id": "demo-key", "secret_key": "x"}}))
        reply = await _frame(socket)
        await asyncio.wait_for(socket.wait_closed(), STREAM_TIMEOUT_S)

    assert reply["data"] == {
        "action": "authenticate",
        "status": "unauthorized",
        "message": "access key verification failed",
    }


@pytest.mark.asyncio
async def test_queued_upgrade_rejection_answers_429(fake_broker: FakeBroker) -> None:
    fake_broker.fail(ws_reject=1)

    with pytest.raises(InvalidStatus) as refused:
        async with connect(fake_broker.stream_url):
            pass
    async with connect(fake_broker.stream_url) as socket:
        await socket.send(json.dumps({"action": "auth", "key": "demo-key", "secret": "demo-secret"}))
        reply = await _frame(socket)

    assert refused.value.response.status_code == 429
    assert reply["data"]["status"] == "authorized"  # type: ignore[index]


@pytest.mark.asyncio
async def test_stream_sent_log_records_when_each_update_was_written(fake_broker: FakeBroker) -> None:
    """``GET /sim/stream-sent``: (order id, account, ns) per trade update, at the moment it is written."""
    fake_broker.set_prices({"AAPL": 180})
    before = time.time_ns()

    async with running_stream(fake_broker) as received:
        _buy(fake_broker)
        await async_wait_for(lambda: _fills(received), STREAM_TIMEOUT_S, what="fill update")
        after = time.time_ns()
    sent = fake_broker.request("GET", "/sim/stream-sent", account=None).json()

    order_id = str(received[-1].order.id)
    assert [(o, a) for o, a, _ in sent] == [(order_id, "demo"), (order_id, "demo")]  # new, fill
    assert before <= sent[0][2] <= sent[1][2] <= after


@pytest.mark.asyncio
async def test_the_fake_serves_a_thousand_accounts_each_its_own_stream(fake_broker_factory: BrokerFactory) -> None:
    """Frames as Alpaca documents them (https://docs.alpaca.markets/docs/websocket-streaming):
    authenticate, then listen to ``trade_updates``; each connection hears its own account only."""
    names = [f"acct{i:04d}" for i in range(1000)]
    broker = fake_broker_factory(accounts=names)
    gate = asyncio.Semaphore(32)
    sockets: dict[str, object] = {}

    async def open_one(name: str) -> None:
        key, secret = broker.keys(name)
        async with gate:
            ws = await connect(broker.stream_url)
            await ws.send(json.dumps({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}}))
            authorized = json.loads(await ws.recv())
            await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            await ws.recv()
        assert authorized["data"]["status"] == "authorized", authorized
        sockets[name] = ws

    try:
        await asyncio.gather(*(open_one(name) for name in names))
        listening = await asyncio.to_thread(broker.listener_count)
        broker.set_prices({"AAPL": 180.25})
        client = broker.trading_client(names[-1])
        request = MarketOrderRequest(symbol="AAPL", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
        order = await asyncio.to_thread(client.submit_order, request)
        last = sockets[names[-1]]
        frames: list[dict[str, Any]] = []
        while not any(f["data"]["event"] == "fill" for f in frames):
            frames.append(json.loads(await asyncio.wait_for(last.recv(), STREAM_TIMEOUT_S)))  # type: ignore[attr-defined]
        own = await asyncio.to_thread(broker.trading_client(names[0]).submit_order, request)
        heard_first = json.loads(await asyncio.wait_for(sockets[names[0]].recv(), STREAM_TIMEOUT_S))  # type: ignore[attr-defined]
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets.values()), return_exceptions=True)  # type: ignore[attr-defined]

    assert listening == len(names)
    assert {f["data"]["order"]["id"] for f in frames} == {str(order.id)}  # type: ignore[union-attr]
    assert heard_first["data"]["order"]["id"] == str(own.id)  # type: ignore[union-attr]  # not the other's fill

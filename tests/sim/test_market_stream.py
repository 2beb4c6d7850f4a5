"""The fake broker's market-data stream through unmodified alpaca-py and a raw client.

Shapes follow Alpaca's public pages: "WebSocket Stream" (docs.alpaca.markets/docs/
streaming-market-data: the connected/authenticated/error messages and codes), "Real-time Stock
Data" (docs.alpaca.markets/docs/real-time-stock-pricing-data: the trade message ``T,S,i,x,p,s,c,
t,z`` and the subscription acknowledgement) and alpaca-py's ``alpaca/data/live/websocket.py``
(msgpack frames, ``Content-Type: application/msgpack``, ``t`` as a msgpack timestamp).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from alpaca.data.live.crypto import CryptoDataStream
from alpaca.data.live.stock import StockDataStream
from alpaca.data.live.websocket import DataStream
from alpaca.data.models import Trade
from websockets.asyncio.client import ClientConnection, connect

from tests.fixtures.broker import BrokerFactory, FakeBroker
from tests.support import async_wait_for

TIMEOUT_S = 10.0
# The fake broker's own time in the tests that read a trade's timestamp (it stamps posted prices with it).
BROKER_NOW = datetime(2024, 12, 3, 15, 30, 0, 123456, tzinfo=UTC)


def _url(broker: FakeBroker, path: str) -> str:
    return f"ws://127.0.0.1:{broker.port}{path}"


def _data_state(broker: FakeBroker) -> dict[str, Any]:
    return broker.request("GET", "/sim/data-stream", account=None).json()


def _subscribed(broker: FakeBroker) -> list[list[str]]:
    return [c["trades"] for c in _data_state(broker)["connections"] if c["authenticated"]]


@contextlib.asynccontextmanager
async def running(stream: DataStream) -> AsyncIterator[None]:
    """Run an alpaca-py data stream in this loop until the block ends."""
    task = asyncio.create_task(stream._run_forever())
    try:
        yield
    finally:
        await stream.stop_ws()
        await stream.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/v2/iex", "/v2/sip"])
async def test_stock_data_stream_receives_trades_of_posted_prices(
    fake_broker_factory: BrokerFactory, path: str
) -> None:
    fake_broker = fake_broker_factory(clock=lambda: BROKER_NOW)
    key_id, secret = fake_broker.keys()
    stream = StockDataStream(key_id, secret, url_override=_url(fake_broker, path))
    received: list[Trade] = []

    async def on_trade(trade: Trade | dict[str, Any]) -> None:
        assert isinstance(trade, Trade)
        received.append(trade)

    stream.subscribe_trades(on_trade, "AAPL")
    async with running(stream):
        await async_wait_for(lambda: _subscribed(fake_broker) == [["AAPL"]], TIMEOUT_S, what="subscription")
        await asyncio.to_thread(fake_broker.set_prices, {"AAPL": "187.25", "MSFT": "400"})
        await async_wait_for(lambda: received, TIMEOUT_S, what="trade")

    (trade,) = received
    assert trade.symbol == "AAPL"
    assert trade.price == 187.25
    assert trade.size == 100
    assert trade.conditions == ["@"]
    assert trade.exchange == ("V" if path == "/v2/iex" else "Q")
    assert trade.timestamp == BROKER_NOW


@pytest.mark.asyncio
async def test_crypto_data_stream_receives_trades_of_slash_symbols(fake_broker: FakeBroker) -> None:
    key_id, secret = fake_broker.keys()
    stream = CryptoDataStream(key_id, secret, url_override=_url(fake_broker, "/v1beta3/crypto/us"))
    received: list[Trade] = []

    async def on_trade(trade: Trade | dict[str, Any]) -> None:
        assert isinstance(trade, Trade)
        received.append(trade)

    stream.subscribe_trades(on_trade, "BTC/USD")
    async with running(stream):
        await async_wait_for(lambda: _subscribed(fake_broker) == [["BTC/USD"]], TIMEOUT_S, what="subscription")
        await asyncio.to_thread(fake_broker.set_prices, {"BTC/USD": "65000.5", "AAPL": "10"})
        await async_wait_for(lambda: received, TIMEOUT_S, what="trade")

    assert [(t.symbol, t.price) for t in received] == [("BTC/USD", 65000.5)]


async def _json_frame(socket: ClientConnection) -> list[dict[str, Any]]:
    raw = await asyncio.wait_for(socket.recv(), TIMEOUT_S)
    assert isinstance(raw, str)  # the data stream sends TEXT frames to JSON clients
    return json.loads(raw)


@pytest.mark.asyncio
async def test_json_client_gets_alpaca_handshake_ack_and_trade_with_nanosecond_time(fake_broker: FakeBroker) -> None:
    key_id, secret = fake_broker.keys()
    async with connect(_url(fake_broker, "/v2/iex")) as socket:
        connected = await _json_frame(socket)
        await socket.send(json.dumps({"action": "auth", "key": key_id, "secret": secret}))
        authenticated = await _json_frame(socket)
        await socket.send(json.dumps({"action": "subscribe", "trades": ["AAPL", "TSLA"], "quotes": ["AMD"]}))
        ack = await _json_frame(socket)
        await asyncio.to_thread(fake_broker.set_prices, {"AAPL": "101.5"})
        (trade,) = await _json_frame(socket)
        await socket.send(json.dumps({"action": "unsubscribe", "trades": ["AAPL"]}))
        after_unsubscribe = await _json_frame(socket)
        await asyncio.to_thread(fake_broker.set_prices, {"AAPL": "102", "TSLA": "250"})
        (next_trade,) = await _json_frame(socket)

    assert connected == [{"T": "success", "msg": "connected"}]
    assert authenticated == [{"T": "success", "msg": "authenticated"}]
    assert ack == [{
        "T": "subscription", "trades": ["AAPL", "TSLA"], "quotes": ["AMD"], "bars": [], "updatedBars": [],
        "dailyBars": [], "statuses": [], "lulds": [], "corrections": ["AAPL", "TSLA"],
        "cancelErrors": ["AAPL", "TSLA"],
    }]  # fmt: skip
    assert set(trade) == {"T", "S", "i", "x", "p", "s", "c", "t", "z"}
    assert (trade["T"], trade["S"], trade["p"], trade["x"], trade["z"]) == ("t", "AAPL", 101.5, "V", "C")
    assert len(trade["t"].split(".")[1]) == len("123456789Z")
    assert datetime.fromisoformat(trade["t"]).tzinfo is not None
    assert after_unsubscribe[0]["trades"] == ["TSLA"]
    assert next_trade["S"] == "TSLA"
    assert next_trade["i"] > trade["i"]


@pytest.mark.asyncio
async def test_msgpack_client_gets_binary_frames_with_msgpack_timestamp(fake_broker_factory: BrokerFactory) -> None:
    fake_broker = fake_broker_factory(clock=lambda: BROKER_NOW)
    key_id, secret = fake_broker.keys()
    headers = {"Content-Type": "application/msgpack"}
    async with connect(_url(fake_broker, "/v2/iex"), additional_headers=headers) as socket:
        connected = msgpack.unpackb(await socket.recv())
        await socket.send(msgpack.packb({"action": "auth", "key": key_id, "secret": secret}))
        authenticated = msgpack.unpackb(await socket.recv())
        await socket.send(msgpack.packb({"action": "subscribe", "trades": ["*"]}))
        ack = msgpack.unpackb(await socket.recv())
        await asyncio.to_thread(fake_broker.set_prices, {"NVDA": "900.125"})
        raw = await asyncio.wait_for(socket.recv(), TIMEOUT_S)

    (trade,) = msgpack.unpackb(raw)
    assert isinstance(raw, bytes)
    assert connected == [{"T": "success", "msg": "connected"}]
    assert authenticated == [{"T": "success", "msg": "authenticated"}]
    assert ack[0]["trades"] == ["*"]
    assert (trade["S"], trade["p"]) == ("NVDA", 900.125)
    assert isinstance(trade["t"], msgpack.Timestamp)
    assert trade["t"].to_datetime() == BROKER_NOW


@pytest.mark.asyncio
async def test_wrong_secret_gets_402_and_close(fake_broker: FakeBroker) -> None:
    async with connect(_url(fake_broker, "/v2/iex")) as socket:
        await _json_frame(socket)
        await socket.send(json.dumps({"action": "auth", "key": "demo-key", "secret": "wrong"}))
        reply = await _json_frame(socket)
        await asyncio.wait_for(socket.wait_closed(), TIMEOUT_S)

    assert reply == [{"T": "error", "code": 402, "msg": "auth failed"}]


@pytest.mark.asyncio
async def test_subscribe_before_auth_gets_401_and_second_connection_gets_406(fake_broker: FakeBroker) -> None:
    key_id, secret = fake_broker.keys()
    auth = json.dumps({"action": "auth", "key": key_id, "secret": secret})
    async with connect(_url(fake_broker, "/v2/iex")) as first, connect(_url(fake_broker, "/v2/iex")) as second:
        await _json_frame(first)
        await first.send(json.dumps({"action": "subscribe", "trades": ["AAPL"]}))
        not_authenticated = await _json_frame(first)
        await first.send(auth)
        await _json_frame(first)
        await _json_frame(second)
        await second.send(auth)
        limit = await _json_frame(second)
        await asyncio.wait_for(second.wait_closed(), TIMEOUT_S)

    assert not_authenticated == [{"T": "error", "code": 401, "msg": "not authenticated"}]
    assert limit == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]


@pytest.mark.asyncio
async def test_more_symbols_than_the_limit_gets_405_and_keeps_the_subscription(fake_broker: FakeBroker) -> None:
    key_id, secret = fake_broker.keys()
    fake_broker.request("POST", "/sim/data-stream", account=None, json={"symbol_limit": 2})
    async with connect(_url(fake_broker, "/v2/iex")) as socket:
        await _json_frame(socket)
        await socket.send(json.dumps({"action": "auth", "key": key_id, "secret": secret}))
        await _json_frame(socket)
        await socket.send(json.dumps({"action": "subscribe", "trades": ["A", "B"]}))
        ack = await _json_frame(socket)
        await socket.send(json.dumps({"action": "subscribe", "trades": ["C"]}))
        refused = await _json_frame(socket)
        state = await asyncio.to_thread(_data_state, fake_broker)

    assert ack[0]["trades"] == ["A", "B"]
    assert refused == [{"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
    assert state["connections"][0]["trades"] == ["A", "B"]


@pytest.mark.asyncio
async def test_drop_data_stream_closes_data_connections_only(fake_broker: FakeBroker) -> None:
    async with connect(_url(fake_broker, "/v2/iex")) as socket:
        await _json_frame(socket)
        dropped = fake_broker.request("POST", "/sim/drop-data-stream", account=None).json()
        await asyncio.wait_for(socket.wait_closed(), TIMEOUT_S)

    assert dropped == {"dropped": 1}
    assert socket.close_code == 1001


def test_data_stream_paths_need_no_rest_headers_and_rest_still_does(fake_broker: FakeBroker) -> None:
    plain_get = fake_broker.request("GET", "/v2/iex", account=None)
    rest = fake_broker.request("GET", "/v2/account", account=None)

    assert plain_get.status_code != 401  # a WebSocket route, not REST: no 401 for missing key headers
    assert rest.status_code == 401

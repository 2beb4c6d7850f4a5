"""The market-data stream client against the fake broker's stream, and its pure planner.

Trade and control messages follow Alpaca's "Real-time Stock Data" and "WebSocket Stream" pages
(docs.alpaca.markets/docs/real-time-stock-pricing-data, .../streaming-market-data); the fake
broker (coldharbour/sim/market_stream.py) produces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from coldharbour.broker import market_stream
from coldharbour.broker.market_stream import DataStreamPrices, MarketDataStream, plan_subscriptions
from coldharbour.config import Secret
from coldharbour.messages import Tick
from tests.fixtures.broker import FakeBroker
from tests.support import async_wait_for

TIMEOUT_S = 10.0


class Received:
    """The ticks a stream handed over, frame by frame."""

    def __init__(self) -> None:
        self.frames: list[list[Tick]] = []

    def __call__(self, ticks: Sequence[Tick]) -> None:
        self.frames.append(list(ticks))

    @property
    def ticks(self) -> list[Tick]:
        return [tick for frame in self.frames for tick in frame]


def _stream(
    url: str, key: str, secret: str, received: Received, counters: Counter[str], **kwargs: Any
) -> MarketDataStream:
    return MarketDataStream(
        "stock", url, Secret(key), Secret(secret), on_ticks=received, counters=counters,
        exclude=("D", "M", "E"), backoff_base_s=0.05, backoff_cap_s=0.2, **kwargs,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running(stream: MarketDataStream) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT_S)


def _data_state(broker: FakeBroker) -> dict[str, Any]:
    return broker.request("GET", "/sim/data-stream", account=None).json()


def _server_trades(broker: FakeBroker) -> list[list[str]]:
    return [c["trades"] for c in _data_state(broker)["connections"] if c["authenticated"]]


@pytest.mark.asyncio
@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_stream_subscribes_relays_and_unsubscribes(fake_broker: FakeBroker, codec: str) -> None:
    received, counters = Received(), Counter[str]()
    stream = _stream(f"ws://127.0.0.1:{fake_broker.port}/v2/iex", *fake_broker.keys(), received, counters, codec=codec)
    stream.want({"AAPL", "MSFT"})

    async with running(stream):
        await async_wait_for(lambda: stream.subscribed == {"AAPL", "MSFT"}, TIMEOUT_S, what="ack")
        await asyncio.to_thread(fake_broker.set_prices, {"AAPL": "190.5", "MSFT": "410", "TSLA": "250"})
        await async_wait_for(lambda: len(received.ticks) == 2, TIMEOUT_S, what="two ticks")
        stream.want({"MSFT"})
        await async_wait_for(lambda: stream.subscribed == {"MSFT"}, TIMEOUT_S, what="unsubscribe ack")
        server_side = await asyncio.to_thread(_server_trades, fake_broker)
        await asyncio.to_thread(fake_broker.set_prices, {"AAPL": "191", "MSFT": "411"})
        await async_wait_for(lambda: len(received.ticks) == 3, TIMEOUT_S, what="third tick")

    assert len(received.frames[0]) == 2  # one frame's trades reach the sink together
    assert sorted((t.symbol, t.price, t.size) for t in received.ticks[:2]) == [
        ("AAPL", 190.5, 100.0),
        ("MSFT", 410.0, 100.0),
    ]
    assert received.ticks[2].symbol == "MSFT"
    assert all(t.ts_event > 1_600_000_000 * 10**9 for t in received.ticks)
    assert server_side == [["MSFT"]]
    assert counters["rejects"] == 0


@pytest.mark.asyncio
async def test_stream_reconnects_after_drop_and_resubscribes(fake_broker: FakeBroker) -> None:
    received, counters = Received(), Counter[str]()
    stream = _stream(f"ws://127.0.0.1:{fake_broker.port}/v2/iex", *fake_broker.keys(), received, counters)
    stream.want({"AAPL"})

    async with running(stream):
        await async_wait_for(lambda: stream.subscribed == {"AAPL"}, TIMEOUT_S, what="ack")
        dropped = fake_broker.request("POST", "/sim/drop-data-stream", account=None).json()
        await async_wait_for(
            lambda: stream.connects == 2 and stream.subscribed == {"AAPL"}, TIMEOUT_S, what="resubscribed"
        )
        await asyncio.to_thread(fake_broker.set_prices, {"AAPL": "77"})
        await async_wait_for(lambda: received.ticks, TIMEOUT_S, what="tick after reconnect")

    assert dropped == {"dropped": 1}
    assert counters["data_stream_reconnects"] == 1
    assert received.ticks[0].price == 77.0


@pytest.mark.asyncio
async def test_wrong_keys_are_refused_and_retried_with_backoff(fake_broker: FakeBroker) -> None:
    received, counters = Received(), Counter[str]()
    stream = _stream(f"ws://127.0.0.1:{fake_broker.port}/v2/iex", "demo-key", "wrong", received, counters)
    stream.want({"AAPL"})

    async with running(stream):
        await async_wait_for(lambda: counters["data_stream_reconnects"] >= 2, TIMEOUT_S, what="retries")

    assert stream.connects == 0
    assert not received.ticks


@pytest.mark.asyncio
async def test_no_connection_until_a_symbol_is_wanted(fake_broker: FakeBroker) -> None:
    stream = _stream(f"ws://127.0.0.1:{fake_broker.port}/v2/iex", *fake_broker.keys(), Received(), Counter())

    async with running(stream):
        for _ in range(20):  # let run() reach its wait: it connects at once if it does not wait
            await asyncio.sleep(0)
        before = (await asyncio.to_thread(_data_state, fake_broker))["connections_total"]
        stream.want({"AAPL"})
        await async_wait_for(lambda: stream.subscribed == {"AAPL"}, TIMEOUT_S, what="ack")

    assert before == 0


async def _bad_trades_server(connection: ServerConnection) -> None:
    await connection.send(json.dumps([{"T": "success", "msg": "connected"}]))
    await connection.recv()
    await connection.send(json.dumps([{"T": "success", "msg": "authenticated"}]))
    await connection.recv()
    good = {
        "T": "t",
        "S": "AAPL",
        "i": 1,
        "x": "V",
        "p": 10.5,
        "s": 5,
        "c": ["@"],
        "t": "2024-03-01T15:00:00.123456789Z",
        "z": "C",
    }
    await connection.send("not json")
    await connection.send(json.dumps([
        {**good, "p": -1}, {**good, "p": "NaN"}, {**good, "S": ""}, {**good, "c": ["@", "M"]},
        {**good, "t": "yesterday"}, {"T": "c", "S": "AAPL"}, 7, {**good, "p": 99.0, "t": "2099-01-01T00:00:00Z"},
        good,
    ]))  # fmt: skip
    await connection.wait_closed()


@pytest.mark.asyncio
async def test_bad_trades_are_rejected_and_counted_and_good_ones_pass() -> None:
    received, counters = Received(), Counter[str]()
    async with serve(_bad_trades_server, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        stream = _stream(f"ws://127.0.0.1:{port}/v2/iex", "k", "s", received, counters, codec="json")
        stream.want({"AAPL"})
        async with running(stream):
            await async_wait_for(lambda: received.ticks, TIMEOUT_S, what="the good tick")

    assert [(t.symbol, t.price, t.size) for t in received.ticks] == [("AAPL", 10.5, 5.0)]
    assert received.ticks[0].ts_event == 1_709_305_200_123_456_000
    assert counters["rejects_data_stream_decode"] == 1
    assert counters["rejects_data_stream_price_value"] == 1
    assert counters["rejects_data_stream_price_type"] == 1
    assert counters["rejects_data_stream_symbol"] == 1
    assert counters["rejects_data_stream_time"] == 1
    assert counters["rejects_data_stream_shape"] == 1
    assert counters["skipped_data_stream_condition_excluded"] == 1
    assert counters["skipped_data_stream_kind_c"] == 1
    assert counters["rejects_data_stream_time_future"] == 1  # the 2099 print; the next good one passes
    assert counters["rejects"] == 7


def test_plan_caps_each_stream_keeps_current_and_routes_crypto() -> None:
    plan = plan_subscriptions(["msft", "AAPL", "TSLA", "BTC/USD", " "], 2, stock_now={"TSLA"})

    assert plan.stock == {"TSLA", "AAPL"}
    assert plan.crypto == {"BTC/USD"}
    assert plan.unpriced == ("MSFT",)


def test_prices_gauges_and_unpriced_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    counters: Counter[str] = Counter()
    details: dict[str, str] = {}
    streams = [_stream(f"ws://127.0.0.1:9/{name}", "k", "s", Received(), counters) for name in ("iex", "crypto")]
    prices = DataStreamPrices(streams, limit=1, counters=counters, details=details)

    with caplog.at_level("WARNING", logger=market_stream.__name__):
        prices.follow({"AAPL", "MSFT"})
        prices.follow({"AAPL", "MSFT"})
        prices.follow({"AAPL", "MSFT", "ETH/USD"})

    unpriced_lines = [r.getMessage() for r in caplog.records if "unpriced" in r.getMessage()]
    assert len(unpriced_lines) == 1  # the log line is the contract: said once per change
    assert "MSFT" in unpriced_lines[0]
    assert streams[0].wanted == {"AAPL"}
    assert streams[1].wanted == {"ETH/USD"}
    assert counters["data_stream_unpriced"] == 1
    assert details["price_source"] == "alpaca-stream"


async def _mute_server(connection: ServerConnection) -> None:
    await connection.wait_closed()  # accepts the upgrade, never says "connected"


@pytest.mark.asyncio
async def test_stop_during_a_silent_handshake_ends_run_within_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    # The handshake's reply timeout far beyond the wait below: only the stop can end the run in time.
    monkeypatch.setattr(market_stream, "REPLY_TIMEOUT_S", 3600.0)
    async with serve(_mute_server, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        stream = _stream(f"ws://127.0.0.1:{port}/v2/iex", "k", "s", Received(), Counter())
        stream.want({"AAPL"})
        stop = asyncio.Event()
        task = asyncio.create_task(stream.run(stop))
        await async_wait_for(lambda: len(server.connections) == 1, TIMEOUT_S, what="the upgrade")
        stop.set()
        await asyncio.wait_for(task, TIMEOUT_S)  # not held for the handshake's whole timeout

    assert task.exception() is None

"""The local market-data proxy: an unmodified alpaca-py ``StockDataStream`` shares our one connection.

Protocol: Alpaca's "WebSocket Stream" page and alpaca-py ``alpaca/data/live/websocket.py`` (the
client used here, unmodified, with ``url_override``); upstream is the fake broker's stream
(coldharbour/sim/market_stream.py), which allows one connection per key and path.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

import pytest
from alpaca.data.live import StockDataStream
from alpaca.data.models import Trade
from websockets.asyncio.client import connect

from coldharbour.broker.data_proxy import DataProxy
from coldharbour.config import Secret
from tests.broker.test_market_stream import TIMEOUT_S, Received, _stream
from tests.fixtures.broker import FakeBroker
from tests.support import async_wait_for


def _server_trades(broker: FakeBroker) -> list[list[str]]:
    state = broker.request("GET", "/sim/data-stream", account=None).json()
    return [c["trades"] for c in state["connections"] if c["authenticated"]]


class Bot(threading.Thread):
    """The trader's bot: alpaca-py's own data stream, pointed at our proxy, trades of ``symbols``."""

    def __init__(self, url: str, key: str, secret: str, symbols: tuple[str, ...]) -> None:
        super().__init__(name="bot-data", daemon=True)
        self.trades: list[Trade] = []
        self.client = StockDataStream(key, secret, url_override=url)

        async def on_trade(trade: Trade | dict[Any, Any]) -> None:
            assert isinstance(trade, Trade)  # not raw_data: alpaca-py's own model
            self.trades.append(trade)

        self.client.subscribe_trades(on_trade, *symbols)

    def run(self) -> None:
        self.client.run()


@pytest.mark.asyncio
async def test_alpaca_py_gets_only_its_symbols_while_our_prices_follow_ours(fake_broker: FakeBroker) -> None:
    key, secret = fake_broker.keys()
    received, counters = Received(), Counter[str]()
    stream = _stream(f"ws://127.0.0.1:{fake_broker.port}/v2/iex", key, secret, received, counters)
    proxy = DataProxy(stream, Secret(key), Secret(secret), counters)
    stream.want({"AAPL"})
    stop = asyncio.Event()
    tasks = [asyncio.create_task(stream.run(stop)), asyncio.create_task(proxy.run("127.0.0.1", 0, stop))]
    bot: Bot | None = None
    try:
        await async_wait_for(lambda: proxy.port and stream.subscribed == {"AAPL"}, TIMEOUT_S, what="ours up")
        bot = Bot(f"ws://127.0.0.1:{proxy.port}", key, secret, ("MSFT", "NVDA"))
        bot.start()
        await async_wait_for(
            lambda: _server_trades(fake_broker) == [["AAPL", "MSFT", "NVDA"]], TIMEOUT_S, what="merged upstream"
        )
        await asyncio.to_thread(fake_broker.set_prices, {"AAPL": 101, "MSFT": 202, "NVDA": 303, "SPY": 404})
        await async_wait_for(lambda: len(bot.trades) >= 2 and received.ticks, TIMEOUT_S, what="trades both ways")
        await asyncio.to_thread(fake_broker.set_prices, {"AAPL": 102, "MSFT": 203})
        await async_wait_for(lambda: len(bot.trades) >= 3 and len(received.ticks) >= 2, TIMEOUT_S, what="more")
        # A client with the wrong secret is refused and changes nothing upstream.
        async with connect(f"ws://127.0.0.1:{proxy.port}") as intruder:
            hello = json.loads(await intruder.recv())
            await intruder.send(json.dumps({"action": "auth", "key": key, "secret": "wrong"}))
            refused = json.loads(await intruder.recv())
        connections = _server_trades(fake_broker)
    finally:
        if bot is not None:
            bot.client.stop()
            await asyncio.to_thread(bot.join, TIMEOUT_S)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT_S)

    bot_trades: list[tuple[str, Any]] = [(t.symbol, t.price) for t in bot.trades]
    assert bot_trades == [("MSFT", 202.0), ("NVDA", 303.0), ("MSFT", 203.0)]  # only its own symbols
    assert [(t.symbol, t.price) for t in received.ticks] == [("AAPL", 101.0), ("AAPL", 102.0)]  # only ours
    assert connections == [["AAPL", "MSFT", "NVDA"]]  # one upstream connection for both
    assert hello == [{"T": "success", "msg": "connected"}]
    assert refused == [{"T": "error", "code": 402, "msg": "auth failed"}]
    assert counters["data_proxy_auth_failures"] == 1

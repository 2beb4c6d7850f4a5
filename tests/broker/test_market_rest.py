"""Prices through market-data REST (the default source), and the stream's 406 fallback to it.

The snapshot route and its shape are alpaca-py's ``StockHistoricalDataClient.get_stock_snapshot``
(``GET /v2/stocks/snapshots?symbols=…``, ``alpaca/data/historical/stock.py``; crypto
``/v1beta3/crypto/us/snapshots``, ``alpaca/data/historical/crypto.py``); the refusal is the
"WebSocket Stream" page's ``[{"T":"error","code":406,"msg":"connection limit exceeded"}]``.
All of it is produced by the fake broker (coldharbour/sim/market_stream.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from coldharbour.broker.budget import RestBudget, key_file
from coldharbour.broker.market_rest import SnapshotPrices
from coldharbour.broker.rest import BrokerRest
from coldharbour.messages import Tick
from tests.broker.support import account_for
from tests.broker.test_market_stream import TIMEOUT_S, Received, _stream, running
from tests.fixtures.broker import FakeBroker
from tests.support import async_wait_for


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _source(
    broker: FakeBroker, session: aiohttp.ClientSession, received: Received, counters: Counter[str], budget: RestBudget
) -> SnapshotPrices:
    account = account_for(broker)
    stock, crypto = (
        BrokerRest(account, session, counters, budget=budget, is_urgent=True, version=v) for v in ("/v2", "/v1beta3")
    )
    return SnapshotPrices(stock, crypto, feed="iex", poll_s=0.05, on_ticks=received, counters=counters,
                          details={}, exclude=("D", "M", "E"))  # fmt: skip


def _prices(ticks: list[Tick]) -> dict[str, float]:
    return {t.symbol: t.price for t in ticks}


@pytest.mark.asyncio
async def test_rest_source_relays_each_new_print_once_within_the_data_budget(
    fake_broker: FakeBroker, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    received, counters = Received(), Counter[str]()
    budget = RestBudget(key_file(tmp_path, "demo-key", "data"), 40)
    source = _source(fake_broker, session, received, counters, budget)
    fake_broker.set_prices({"AAPL": 100, "BTC/USD": 65000})
    started = time.time()

    first = await source.poll({"AAPL", "BTC/USD", "NVDA"})
    again = await source.poll({"AAPL", "BTC/USD", "NVDA"})
    fake_broker.set_prices({"AAPL": 101.5})
    moved = await source.poll({"AAPL", "BTC/USD", "NVDA"})

    assert _prices(first) == {"AAPL": 100.0, "BTC/USD": 65000.0}  # NVDA never printed: nothing
    assert again == []  # the same prints are not relayed twice
    assert _prices(moved) == {"AAPL": 101.5}
    assert _prices(received.ticks) == {"AAPL": 101.5, "BTC/USD": 65000.0}
    counts = fake_broker.request("GET", "/sim/requests", account=None, params={"since": str(started - 1)}).json()
    mine = counts["keys"]["demo-key"]["agents"]["coldharbour-rest"]
    assert mine == {"trading": 0, "data": 6}  # one stock + one crypto request a poll
    assert budget.figures().last_min == 6


@pytest.mark.asyncio
async def test_rest_source_counts_a_failed_poll_and_goes_on(
    fake_broker: FakeBroker, session: aiohttp.ClientSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coldharbour.broker import rest as rest_module

    monkeypatch.setattr(rest_module, "MAX_ATTEMPTS", 1)
    received, counters = Received(), Counter[str]()
    source = _source(fake_broker, session, received, counters, RestBudget(tmp_path / "d.json", 600))
    fake_broker.set_prices({"AAPL": 100})
    fake_broker.fail("500")
    assert await source.poll({"AAPL"}) == []
    assert counters["price_poll_failures"] == 1
    assert _prices(await source.poll({"AAPL"})) == {"AAPL": 100.0}


@pytest.mark.asyncio
async def test_stream_refused_406_leaves_the_bot_its_connection_and_prices_come_through_rest(
    fake_broker: FakeBroker, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = f"ws://127.0.0.1:{fake_broker.port}/v2/iex"
    key, secret = fake_broker.keys()
    async with connect(url) as bot:  # the trader's bot holds the key's one connection
        assert json.loads(await bot.recv()) == [{"T": "success", "msg": "connected"}]
        await bot.send(json.dumps({"action": "auth", "key": key, "secret": secret}))
        assert json.loads(await bot.recv()) == [{"T": "success", "msg": "authenticated"}]

        received, counters = Received(), Counter[str]()
        stream = _stream(url, key, secret, Received(), counters)
        stream.limited_retry_s = 3600.0
        stream.want({"AAPL"})
        fallback = SnapshotPrices(
            BrokerRest(account_for(fake_broker), session, counters, budget=RestBudget(tmp_path / "d.json", 600)),
            BrokerRest(account_for(fake_broker), session, counters, version="/v1beta3"),
            feed="iex", poll_s=0.05, on_ticks=received, counters=counters,
            wanted=lambda: stream.wanted if stream.limited else frozenset(),
        )  # fmt: skip
        fake_broker.set_prices({"AAPL": 187.5})
        async with running(stream) as stop:
            poller = asyncio.create_task(fallback.run(stop))
            await async_wait_for(lambda: stream.limited, TIMEOUT_S, what="the 406")
            await async_wait_for(lambda: received.ticks, TIMEOUT_S, what="a price through REST")
            connections = fake_broker.request("GET", "/sim/data-stream", account=None).json()["connections"]
        await asyncio.wait_for(poller, TIMEOUT_S)
        await bot.send(json.dumps({"action": "subscribe", "trades": ["AAPL"]}))
        ack = json.loads(await bot.recv())  # the bot's connection was never disturbed

    assert counters["data_stream_limit_refusals"] == 1  # then it waits limited_retry_s, not a backoff
    assert counters["data_rest_fallback_symbols"] == 1
    assert _prices(received.ticks) == {"AAPL": 187.5}
    assert [c["authenticated"] for c in connections] == [True]
    assert ack[0]["T"] == "subscription"
    assert ack[0]["trades"] == ["AAPL"]

"""A good guest on the trader's key (docs/broker-budget.md), measured at the fake broker.

The programs that use the broker (bus, state, trades, snapshot, prices, metrics, equity,
cashflows) run as real processes against the in-process fake broker, which limits and counts
every key's REST requests as Alpaca does (coldharbour/sim/limits.py) and allows one market-data
connection per key. Our requests are told apart from the bot's by their User-Agent
(``coldharbour-rest``). Four minutes, in order:

1. a bot on the same key (unmodified alpaca-py ``TradingClient``) submits an order a second for
   a minute and connects to the market-data stream after the stack started: never a 429, the
   connection is accepted, and a held position's mark follows a price change within 15 s
   (prices come through market-data REST, ``PRICE_SOURCE=alpaca``);
2. two minutes idle: our trading-API requests in the second ≤ 8 (the first still holds the
   after-effects of the bot's minute: the equity curve's first rebuild; it is reported);
3. a minute of 50 fills a second (the fake's limit lifted for the load generator): our
   trading-API requests ≤ 40 (``ALPACA_REST_BUDGET_PER_MIN``), and afterwards the mirror's
   positions equal the broker's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from alpaca.common.exceptions import APIError
from alpaca.data.live import StockDataStream
from alpaca.data.models import Trade
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from websockets.sync.client import ClientConnection, connect

from coldharbour.config import Dsn
from coldharbour.sim.postgres import free_port
from tests.fixtures.broker import FakeBroker
from tests.fixtures.stack import POSITIONS, Db, Programs, all_clean, broker_environ
from tests.support import wait_for

pytestmark = pytest.mark.integration

PROGRAMS = ("bus", "state", "trades", "snapshot", "prices", "metrics", "equity", "cashflows")
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")
MINUTE_S = 60.0
LOAD_PER_S = 50
BUDGET_PER_MIN = 40
IDLE_MAX = 8
TIMEOUT_S = 30.0


def _ours(broker: FakeBroker, since: float, until: float) -> dict[str, int]:
    """Our requests (User-Agent coldharbour-rest) on each API of the demo key in ``[since, until)``."""
    params = {"since": str(since), "until": str(until)}
    counts = broker.request("GET", "/sim/requests", account=None, params=params).json()["keys"]["demo-key"]
    agents: dict[str, dict[str, int]] = counts.get("agents", {})
    return agents.get("coldharbour-rest", {"trading": 0, "data": 0})


def _our_paths(broker: FakeBroker, since: float, until: float) -> dict[str, int]:
    """Our requests in ``[since, until)`` by path (``GET /sim/log``: the fake's last requests)."""
    log = broker.request("GET", "/sim/log", account=None).json()
    return dict(Counter(
        e["path"] for e in log if e["agent"].startswith("coldharbour-rest") and since <= e["at"] < until
    ))  # fmt: skip


def _refused(broker: FakeBroker) -> int:
    counts = broker.request("GET", "/sim/requests", account=None).json()["keys"]["demo-key"]
    return int(counts["trading_refused"])


def _wait_until(moment: float) -> None:
    wait_for(lambda: time.time() >= moment, moment - time.time() + 10, interval_s=0.2, what="the minute to pass")


def _mark(db: Db, symbol: str) -> Decimal | None:
    rows = db.rows(f"SELECT mkt_px FROM {POSITIONS} WHERE symbol = %s", symbol)
    return rows[0][0] if rows else None


def _mirrored(db: Db) -> dict[str, Decimal]:
    return {symbol: qty for symbol, qty in db.rows(f"SELECT symbol, qty FROM {POSITIONS}") if qty}


def _broker_positions(broker: FakeBroker) -> dict[str, Decimal]:
    listed = broker.request("GET", "/v2/positions").json()
    return {p["symbol"]: Decimal(p["qty"]) for p in listed if Decimal(p["qty"])}


class Bot(threading.Thread):
    """The trader's bot: an order a second through alpaca-py, and the key's market-data stream."""

    def __init__(self, broker: FakeBroker, seconds: float) -> None:
        super().__init__(name="bot", daemon=True)
        self.broker, self.seconds = broker, seconds
        self.errors: list[APIError] = []
        self.orders = 0

    def run(self) -> None:
        client = self.broker.trading_client()
        started = time.monotonic()
        step = 0
        while time.monotonic() - started < self.seconds:
            side = OrderSide.BUY if step % 2 == 0 or step < 2 else OrderSide.SELL
            symbol = "AAPL" if step < 2 else SYMBOLS[step % len(SYMBOLS)]
            try:
                client.submit_order(MarketOrderRequest(symbol=symbol, qty=1, side=side, time_in_force=TimeInForce.DAY))
                self.orders += 1
            except APIError as e:
                self.errors.append(e)
            step += 1
            time.sleep(max(0.0, started + step - time.monotonic()))  # the bot's pace: one a second


def _data_stream_handshake(broker: FakeBroker, socket: ClientConnection) -> list[Any]:
    key, secret = broker.keys()
    replies = [json.loads(socket.recv(10))]
    socket.send(json.dumps({"action": "auth", "key": key, "secret": secret}))
    replies.append(json.loads(socket.recv(10)))
    return replies


async def _load(url: str, headers: dict[str, str], per_s: int, seconds: float) -> int:
    """Submit ``per_s`` market orders a second for ``seconds`` (each fills at once); return the fills."""
    filled = 0
    async with aiohttp.ClientSession(headers={**headers, "User-Agent": "load"}) as session:

        async def one(i: int) -> None:
            nonlocal filled
            side = "buy" if (i // len(SYMBOLS)) % 2 == 0 else "sell"
            body = {"symbol": SYMBOLS[i % len(SYMBOLS)], "qty": "1", "side": side, "type": "market",
                    "time_in_force": "day"}  # fmt: skip
            async with session.post(f"{url}/v2/orders", json=body) as response:
                filled += response.status == 200

        started = time.monotonic()
        tasks = []
        for i in range(int(per_s * seconds)):
            await asyncio.sleep(max(0.0, started + i / per_s - time.monotonic()))  # the load's pace
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return filled


@pytest.mark.timeout(600)  # four measured minutes, then the catch-up
def test_a_bot_on_the_same_key_is_never_refused_and_our_requests_stay_in_budget(
    migrated_dsn: Dsn, fake_broker: FakeBroker, stack_dir: Path
) -> None:
    env = broker_environ(
        migrated_dsn, stack_dir, fake_broker.base_url,
        PRICE_SOURCE="alpaca", ALPACA_DATA_STREAM_URL=f"ws://127.0.0.1:{fake_broker.port}/v2/iex",
        ALPACA_REST_BUDGET_PER_MIN=str(BUDGET_PER_MIN), DISABLE_SESSION_SLEEP="1", FLUSH_INTERVAL_S="0.5",
        BACKFILL_DAYS="1",
    )  # fmt: skip
    env.pop("ZMQ_SIP_STREAM_ENDPOINT")
    fake_broker.set_prices({symbol: 100 for symbol in SYMBOLS})
    db = Db(migrated_dsn)
    programs = Programs(env, stack_dir)
    try:
        programs.start(*PROGRAMS)
        wait_for(lambda: fake_broker.listener_count() == 1, TIMEOUT_S, what="trades stream listening")
        programs.wait_counter("snapshot", "snapshots", 1, timeout_s=TIMEOUT_S)

        # 1. the bot, after the stack started: the key's data connection and an order a second
        with connect(f"ws://127.0.0.1:{fake_broker.port}/v2/iex") as socket:
            handshake = _data_stream_handshake(fake_broker, socket)
            bot = Bot(fake_broker, MINUTE_S)
            bot_started = time.time()
            bot.start()
            wait_for(lambda: _mark(db, "AAPL"), TIMEOUT_S, what="the bot's AAPL position mirrored")
            fake_broker.set_prices({"AAPL": 123.45})
            moved_at = time.monotonic()
            wait_for(lambda: _mark(db, "AAPL") == Decimal("123.45"), 15, interval_s=0.1, what="the mark to follow")
            mark_s = time.monotonic() - moved_at
            bot.join(MINUTE_S + TIMEOUT_S)
        bot_window = _ours(fake_broker, bot_started, bot_started + MINUTE_S)
        refused_by_bot = _refused(fake_broker)

        # 2. idle
        wait_for(lambda: _mirrored(db) == _broker_positions(fake_broker), TIMEOUT_S * 2, interval_s=0.5,
                 what="the mirror to catch up with the bot")  # fmt: skip
        after_from = time.time()  # the minute after the bot: equity's first rebuild, the last refreshes
        _wait_until(after_from + MINUTE_S)
        after_bot = _ours(fake_broker, after_from, after_from + MINUTE_S)
        idle_from = time.time()  # then a steady idle minute
        _wait_until(idle_from + MINUTE_S)
        idle = _ours(fake_broker, idle_from, idle_from + MINUTE_S)
        idle_paths = _our_paths(fake_broker, idle_from, idle_from + MINUTE_S)

        # 3. a minute of 50 fills a second (the load's own orders are not limited: they are the load)
        fake_broker.configure(rest_limit_per_min=0)
        load_from = time.time()
        filled = asyncio.run(_load(fake_broker.base_url, fake_broker.headers(), LOAD_PER_S, MINUTE_S))
        _wait_until(load_from + MINUTE_S)
        loaded = _ours(fake_broker, load_from, load_from + MINUTE_S)
        load_paths = _our_paths(fake_broker, load_from, load_from + MINUTE_S)
        wait_for(lambda: _mirrored(db) == _broker_positions(fake_broker), 3 * MINUTE_S, interval_s=1.0,
                 what="the mirror to equal the broker after the load")  # fmt: skip
        settled_s = time.time() - load_from - MINUTE_S
        saved = programs.counter("snapshot", "order_reads_saved_by_stream")
    finally:
        db.close()
        codes = programs.close()

    print(  # the figures docs/broker-budget.md quotes
        f"\nguest figures: bot minute ours={bot_window} bot_orders={bot.orders} mark_s={mark_s:.1f}"
        f" | minute after the bot ours={after_bot} | idle minute ours={idle}"
        f" | load minute fills={filled} ours={loaded} settled_s={settled_s:.0f} saved_reads={saved}"
        f"\nidle paths {idle_paths}\nload paths {load_paths}"
    )
    assert all_clean(codes), programs.logs()
    assert handshake == [[{"T": "success", "msg": "connected"}], [{"T": "success", "msg": "authenticated"}]]
    assert bot.errors == []
    assert refused_by_bot == 0  # no 429 for anyone on the key
    assert bot.orders >= MINUTE_S - 2
    assert bot_window["trading"] <= BUDGET_PER_MIN
    assert idle["trading"] <= IDLE_MAX
    assert filled >= LOAD_PER_S * MINUTE_S * 0.9
    assert loaded["trading"] <= BUDGET_PER_MIN


def test_proxy_shares_the_keys_connection_with_an_unmodified_alpaca_py_stream(
    migrated_dsn: Dsn, fake_broker: FakeBroker, stack_dir: Path
) -> None:
    """``PRICE_SOURCE=alpaca-stream`` with ``CHMGR_DATA_PROXY_BIND``: the bot's alpaca-py
    ``StockDataStream`` on our proxy gets the trades of its symbols only, our marks follow ours,
    and the fake broker sees one connection for both (it would refuse a second with 406)."""
    port = free_port()
    env = broker_environ(
        migrated_dsn, stack_dir, fake_broker.base_url,
        PRICE_SOURCE="alpaca-stream", ALPACA_DATA_STREAM_URL=f"ws://127.0.0.1:{fake_broker.port}/v2/iex",
        CHMGR_DATA_PROXY_BIND=f"127.0.0.1:{port}", DISABLE_SESSION_SLEEP="1", FLUSH_INTERVAL_S="0.5",
        BACKFILL_DAYS="1",
    )  # fmt: skip
    env.pop("ZMQ_SIP_STREAM_ENDPOINT")
    fake_broker.set_prices({"AAPL": 100, "MSFT": 200})
    db = Db(migrated_dsn)
    programs = Programs(env, stack_dir)
    bot_trades: list[tuple[str, float]] = []
    key, secret = fake_broker.keys()
    client = StockDataStream(key, secret, url_override=f"ws://127.0.0.1:{port}")

    async def on_trade(trade: Trade | dict[Any, Any]) -> None:
        assert isinstance(trade, Trade)
        bot_trades.append((trade.symbol, trade.price))

    client.subscribe_trades(on_trade, "MSFT")
    runner = threading.Thread(target=client.run, name="bot-data", daemon=True)
    try:
        programs.start("bus", "state", "trades", "snapshot", "prices")
        wait_for(lambda: fake_broker.listener_count() == 1, TIMEOUT_S, what="trades stream listening")
        fake_broker.trading_client().submit_order(
            MarketOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
        )
        wait_for(lambda: _mark(db, "AAPL"), TIMEOUT_S, what="the AAPL lot")
        runner.start()
        wait_for(lambda: _server_trades(fake_broker) == [["AAPL", "MSFT"]], TIMEOUT_S, what="one merged connection")
        fake_broker.set_prices({"AAPL": 105.5, "MSFT": 205.25})
        wait_for(lambda: _mark(db, "AAPL") == Decimal("105.5"), TIMEOUT_S, what="our mark from the shared stream")
        wait_for(lambda: bot_trades, TIMEOUT_S, what="the bot's trade")
        connections = _server_trades(fake_broker)
    finally:
        if runner.is_alive():
            client.stop()
            runner.join(TIMEOUT_S)
        db.close()
        codes = programs.close()

    assert all_clean(codes), programs.logs()
    assert bot_trades == [("MSFT", 205.25)]  # only what it subscribed to
    assert connections == [["AAPL", "MSFT"]]


def _server_trades(broker: FakeBroker) -> list[list[str]]:
    state = broker.request("GET", "/sim/data-stream", account=None).json()
    return [c["trades"] for c in state["connections"] if c["authenticated"]]

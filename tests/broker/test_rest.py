"""The REST adapter against the fake broker: routes, paging to the end, faults and deadlines."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from coldharbour.broker import rest as rest_module
from coldharbour.broker.budget import RestBudget, key_file
from coldharbour.broker.rest import BrokerRest
from coldharbour.errors import BrokerError
from tests.broker.support import account_for
from tests.fixtures.broker import FakeBroker


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest_module, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(rest_module, "BACKOFF_CAP_S", 0.02)


@pytest_asyncio.fixture
async def rest(fake_broker: FakeBroker) -> AsyncIterator[BrokerRest]:
    async with aiohttp.ClientSession() as session:
        yield BrokerRest(account_for(fake_broker), session, Counter())


def _place(broker: FakeBroker, count: int, symbol: str = "AAPL") -> None:
    client = broker.trading_client()
    for _ in range(count):
        client.submit_order(MarketOrderRequest(symbol=symbol, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))


@pytest.mark.asyncio
async def test_rest_account_and_positions(fake_broker: FakeBroker, rest: BrokerRest) -> None:
    fake_broker.set_prices({"AAPL": 100})
    await asyncio.to_thread(_place, fake_broker, 2)

    account = await rest.account()
    positions = await rest.positions()
    held = await rest.position("AAPL")
    flat = await rest.position("MSFT")

    assert account["cash"] == "99800"
    assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "2")]
    assert held is not None
    assert held["avg_entry_price"] == "100"
    assert flat is None


@pytest.mark.asyncio
async def test_rest_order_pages_never_truncated(
    fake_broker: FakeBroker, rest: BrokerRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rest_module, "ORDERS_PAGE_LIMIT", 3)
    fake_broker.set_prices({"AAPL": 100})
    await asyncio.to_thread(_place, fake_broker, 10)

    pages = [page async for page in rest.order_pages("all", None)]

    ids = [order["id"] for page in pages for order in page]
    assert len(ids) == 10
    assert len(set(ids)) == 10
    # Each request after the first starts just before the previous page's last order (pages
    # overlap by PAGE_OVERLAP_NS; the orders are HTTP round trips apart), so it re-reads that one
    # order and yields 2 fresh ones; the short page (2 orders) ends the listing.
    assert [len(page) for page in pages] == [3, 2, 2, 2, 1]


@pytest.mark.asyncio
async def test_rest_open_orders_nested(fake_broker: FakeBroker, rest: BrokerRest) -> None:
    fake_broker.set_prices({"AAPL": 100})
    client = fake_broker.trading_client()
    request = MarketOrderRequest(
        symbol="AAPL", qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class="bracket",
        take_profit={"limit_price": 110}, stop_loss={"stop_price": 90},
    )  # fmt: skip
    await asyncio.to_thread(client.submit_order, request)
    await asyncio.to_thread(
        client.submit_order,
        LimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=50),
    )

    orders = await rest.open_orders()

    assert len(orders) == 2
    bracket = next(o for o in orders if o["order_class"] == "bracket")
    assert sorted(leg["type"] for leg in bracket["legs"]) == ["limit", "stop"]


@pytest.mark.asyncio
async def test_rest_fill_activity_pages_by_token(
    fake_broker: FakeBroker, rest: BrokerRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rest_module, "ACTIVITIES_PAGE_SIZE", 2)
    fake_broker.set_prices({"AAPL": 100})
    await asyncio.to_thread(_place, fake_broker, 5)
    fake_broker.post_activities([{"activity_type": "DIV", "symbol": "AAPL", "net_amount": "1.5"}])

    pages = [page async for page in rest.activity_pages("FILL")]
    first = pages[0][0]["id"]
    after_first = [a async for page in rest.activity_pages("FILL", after_id=first) for a in page]

    assert [len(page) for page in pages] == [2, 2, 1]
    assert all(a["activity_type"] == "FILL" for page in pages for a in page)
    assert len(after_first) == 4


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", ["429", "500", "503", "html500", "malformed"])
async def test_rest_transient_fault_retried_then_succeeds(
    fake_broker: FakeBroker, rest: BrokerRest, fault: str
) -> None:
    fake_broker.fail(fault, fault)

    account = await rest.account()

    assert account["status"] == "ACTIVE"
    assert rest.counters["broker_retries"] == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "text"), [("html500", "non-JSON body"), ("malformed", "malformed JSON"), ("429", "rate limit")]
)
async def test_rest_persistent_fault_one_clear_error(
    fake_broker: FakeBroker, rest: BrokerRest, fault: str, text: str
) -> None:
    fake_broker.fail(*[fault] * rest_module.MAX_ATTEMPTS)

    with pytest.raises(BrokerError) as caught:
        await rest.positions()

    message = str(caught.value)
    assert text in message
    assert "GET /positions" in message
    assert f"after {rest_module.MAX_ATTEMPTS} attempts" in message
    assert "demo-secret" not in message


@pytest.mark.asyncio
async def test_rest_wrong_secret_final_at_once_without_secret(fake_broker: FakeBroker) -> None:
    async with aiohttp.ClientSession() as session:
        rest = BrokerRest(account_for(fake_broker, secret="wrong-secret-XYZ"), session, Counter())
        with pytest.raises(BrokerError) as caught:
            await rest.account()

    assert "status 403" in str(caught.value)
    assert "wrong-secret-XYZ" not in str(caught.value)
    assert rest.counters["broker_retries"] == 0


@pytest.mark.asyncio
async def test_rest_unreachable_broker_retried_then_error() -> None:
    from coldharbour.config import AccountSettings, Secret

    account = AccountSettings(
        name="x", slug="x", api_key=Secret("k"), secret_key=Secret("s"), base_url="http://127.0.0.1:9"
    )
    async with aiohttp.ClientSession() as session:
        rest = BrokerRest(account, session, Counter())
        with pytest.raises(BrokerError, match="connection failed"):
            await rest.account()

    assert rest.counters["broker_retries"] == rest_module.MAX_ATTEMPTS


@pytest.mark.asyncio
async def test_rest_hung_broker_hits_the_deadline() -> None:
    """A server that accepts and never answers: each attempt ends at the deadline."""
    from coldharbour.config import AccountSettings, Secret

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    account = AccountSettings(
        name="x", slug="x", api_key=Secret("k"), secret_key=Secret("s"), base_url=f"http://127.0.0.1:{port}"
    )
    async with server, aiohttp.ClientSession() as session:
        rest = BrokerRest(account, session, Counter(), deadline_s=0.1)
        with pytest.raises(BrokerError, match="no answer within"):
            await rest.account()  # the silent server never answers: only the deadline ends the call


@pytest.mark.asyncio
async def test_rest_429_pauses_the_key_by_its_reset_header_and_counts(fake_broker: FakeBroker, tmp_path: Path) -> None:
    budget = RestBudget(key_file(tmp_path, "demo-key", "trading"), 40)
    counters: Counter[str] = Counter()
    fake_broker.fail("429")  # answered as Alpaca does: X-RateLimit-Reset one second ahead
    async with aiohttp.ClientSession() as session:
        rest = BrokerRest(account_for(fake_broker), session, counters, budget=budget)
        account = await rest.account()
    assert account["cash"] == "100000"
    assert counters["broker_rate_limited"] == 1
    figures = budget.figures()
    assert figures.limited == 1
    assert figures.last_min == 2  # the refused attempt and the retry both counted against the budget


@pytest.mark.asyncio
async def test_rest_pauses_when_the_key_is_nearly_spent_by_someone_else(
    fake_broker: FakeBroker, tmp_path: Path
) -> None:
    fake_broker.configure(rest_limit_per_min=10)
    for _ in range(8):  # the trader's bot, same key
        assert fake_broker.request("GET", "/v2/account").status_code == 200
    budget = RestBudget(key_file(tmp_path, "demo-key", "trading"), 40)
    counters: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        await BrokerRest(account_for(fake_broker), session, counters, budget=budget).positions()
    assert counters["broker_key_busy"] == 1  # 1 of 10 left: below a fifth
    assert budget.figures().paused_s > 30  # until the broker's window has room again
    assert budget.figures().limited == 0


@pytest.mark.asyncio
async def test_rest_stop_ends_a_wait_for_the_budget(fake_broker: FakeBroker, tmp_path: Path) -> None:
    budget = RestBudget(key_file(tmp_path, "demo-key", "trading"), 40)
    budget.pause_until(time.time() + 60, limited=False)
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        rest = BrokerRest(account_for(fake_broker), session, Counter(), budget=budget, stop=stop)
        call = asyncio.create_task(rest.account())
        await asyncio.sleep(0)
        stop.set()
        with pytest.raises(BrokerError, match="stopped"):
            await asyncio.wait_for(call, 5)

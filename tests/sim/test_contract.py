"""Contract: every REST answer of the fake broker parses with alpaca-py's own models, and errors
come back with Alpaca's status codes and JSON bodies (never an HTML page)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Calendar, Clock, Order, PortfolioHistory, Position, TradeAccount
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetCalendarRequest,
    GetOrderByIdRequest,
    GetOrdersRequest,
    GetPortfolioHistoryRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)

from tests.fixtures.broker import BrokerFactory, FakeBroker


def _bracket(qty: float = 10, take_profit: float = 200, stop: float = 170) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol="AAPL",
        qty=qty,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.GTC,
        order_class=OrderClass.BRACKET,
        take_profit=TakeProfitRequest(limit_price=take_profit),
        stop_loss=StopLossRequest(stop_price=stop, limit_price=stop - 1),
    )


def test_account_and_positions_parse_with_sdk_models(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 180, "MSFT": 400})
    client.submit_order(MarketOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    client.submit_order(MarketOrderRequest(symbol="MSFT", qty=2, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
    fake_broker.set_prices({"AAPL": 185, "MSFT": 390})

    account = client.get_account()
    positions = {p.symbol: p for p in client.get_all_positions()}
    single = client.get_open_position("AAPL")

    assert isinstance(account, TradeAccount)
    assert account.status == "ACTIVE"
    assert (account.cash, account.equity) == ("99000", "100070")
    assert all(isinstance(p, Position) for p in positions.values())
    assert (positions["AAPL"].side, positions["AAPL"].qty, positions["AAPL"].unrealized_pl) == ("long", "10", "50")
    assert (positions["MSFT"].side, positions["MSFT"].qty, positions["MSFT"].market_value) == ("short", "-2", "-780")
    assert isinstance(single, Position)
    assert single.cost_basis == "1800"


def test_bracket_order_with_legs_parses_flat_and_nested(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 180})

    submitted = client.submit_order(_bracket())
    nested = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))
    flat = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
    by_id = client.get_order_by_id(submitted.id, GetOrderByIdRequest(nested=True))

    assert isinstance(submitted, Order)
    assert submitted.status == OrderStatus.FILLED
    assert submitted.legs is not None
    assert [leg.status for leg in submitted.legs] == [OrderStatus.NEW, OrderStatus.NEW]
    assert [leg.order_type for leg in submitted.legs] == ["limit", "stop_limit"]
    assert len(nested) == 1
    assert len(nested[0].legs or []) == 2
    assert len(flat) == 3
    assert all(order.legs is None for order in flat)
    assert by_id.legs is not None
    assert by_id.expires_at is not None


def test_every_order_type_is_accepted_and_parses(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 180})
    client.submit_order(MarketOrderRequest(symbol="AAPL", qty=30, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    requests_ = [
        MarketOrderRequest(symbol="AAPL", notional=1000, side=OrderSide.BUY, time_in_force=TimeInForce.DAY),
        LimitOrderRequest(
            symbol="AAPL",
            qty=1,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.GTC,
            limit_price=150,
            client_order_id="my-1",
        ),
        StopOrderRequest(symbol="AAPL", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, stop_price=170),
        TrailingStopOrderRequest(
            symbol="AAPL", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, trail_percent=2.5
        ),
        LimitOrderRequest(
            symbol="AAPL",
            qty=10,
            side=OrderSide.SELL,
            time_in_force=TimeInForce.GTC,
            order_class=OrderClass.OCO,
            limit_price=200,
            take_profit=TakeProfitRequest(limit_price=200),
            stop_loss=StopLossRequest(stop_price=160),
        ),
    ]

    orders = [client.submit_order(request) for request in requests_]
    by_client_id = client.get_order_by_client_id("my-1")

    assert [o.status for o in orders] == [OrderStatus.FILLED] + [OrderStatus.NEW] * 4
    assert orders[3].hwm == "180"
    assert orders[3].stop_price == "175.5"
    assert by_client_id.id == orders[1].id


def test_replace_and_cancel_through_the_sdk(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    order = client.submit_order(
        LimitOrderRequest(symbol="AAPL", qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=100)
    )

    replacement = client.replace_order_by_id(order.id, ReplaceOrderRequest(qty=6, limit_price=101.5))
    cancel_result = client.cancel_order_by_id(replacement.id)
    old, new = client.get_order_by_id(order.id), client.get_order_by_id(replacement.id)

    assert replacement.replaces == order.id
    assert (replacement.qty, replacement.limit_price) == ("6", "101.5")
    assert cancel_result is None
    assert (old.status, old.replaced_by) == (OrderStatus.REPLACED, replacement.id)
    assert new.status == OrderStatus.CANCELED


def test_cancel_all_and_close_positions_answer_207_lists(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 180, "MSFT": 400})
    client.submit_order(MarketOrderRequest(symbol="MSFT", qty=4, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    client.submit_order(_bracket())
    client.submit_order(
        LimitOrderRequest(symbol="MSFT", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=300)
    )

    half = client.close_position("MSFT", ClosePositionRequest(percentage="50"))
    canceled = client.cancel_orders()
    closed = client.close_all_positions(cancel_orders=True)
    raw_cancel = fake_broker.request("DELETE", "/v2/orders")

    assert (half.qty, half.side, half.status) == ("2", OrderSide.SELL, OrderStatus.FILLED)
    assert sorted(c.status for c in canceled) == [200, 200, 200]
    assert sorted(c.symbol or "" for c in closed) == ["AAPL", "MSFT"]
    assert {c.status for c in closed} == {200}
    assert client.get_all_positions() == []
    assert raw_cancel.status_code == 207


# The broker's own time: Tuesday 2024-12-03 10:00 New York, inside that day's session.
BROKER_NOW = datetime(2024, 12, 3, 15, 0, tzinfo=UTC)
# 1M of daily points ending then: the sessions of 2024-11-04 .. 2024-12-03 (19 in November, the
# 28th a holiday, and December 2 and 3).
SESSIONS_IN_THE_MONTH = 21


def test_calendar_clock_and_portfolio_history_parse(fake_broker_factory: BrokerFactory) -> None:
    fake_broker = fake_broker_factory(clock=lambda: BROKER_NOW)
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 10})
    client.submit_order(MarketOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))

    calendar = client.get_calendar(GetCalendarRequest(start=date(2024, 11, 27), end=date(2024, 12, 2)))
    clock = client.get_clock()
    history = client.get_portfolio_history(GetPortfolioHistoryRequest(period="1M", timeframe="1D"))
    intraday = client.get_portfolio_history(GetPortfolioHistoryRequest(period="1D", timeframe="15Min"))

    assert all(isinstance(day, Calendar) for day in calendar)
    assert [(d.date, d.close.strftime("%H:%M")) for d in calendar] == [
        (date(2024, 11, 27), "16:00"),
        (date(2024, 11, 29), "13:00"),  # day after Thanksgiving: early close; the 28th is a holiday
        (date(2024, 12, 2), "16:00"),
    ]
    assert isinstance(clock, Clock)
    assert (clock.timestamp, clock.is_open) == (BROKER_NOW, True)
    assert (clock.next_open, clock.next_close) == (
        datetime(2024, 12, 4, 14, 30, tzinfo=UTC),  # Wednesday 09:30 New York
        datetime(2024, 12, 3, 21, 0, tzinfo=UTC),  # today 16:00 New York
    )
    assert isinstance(history, PortfolioHistory)
    assert len(history.equity) == len(history.timestamp) == SESSIONS_IN_THE_MONTH
    assert history.equity[-1] == 100_000.0
    assert isinstance(intraday, PortfolioHistory)


def test_activities_page_by_token_and_filter_by_type(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 10})
    for _ in range(3):
        client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    fake_broker.post_activities([{"activity_type": "DIV", "symbol": "AAPL", "net_amount": "0.30"}])

    first = client.get("/account/activities", {"page_size": 2})
    second = client.get("/account/activities", {"page_size": 2, "page_token": first[-1]["id"]})
    past_end = client.get("/account/activities", {"page_size": 2, "page_token": second[-1]["id"]})
    fills = client.get("/account/activities/FILL", {"direction": "asc"})
    by_query = client.get("/account/activities", {"activity_types": "DIV,FEE"})

    ids = [a["id"] for a in first + second]
    assert len(set(ids)) == 4
    assert ids == sorted(ids, reverse=True)
    assert past_end == []
    assert [a["cum_qty"] for a in fills] == ["1", "1", "1"]
    assert {a["order_status"] for a in fills} == {"filled"}
    assert [a["activity_type"] for a in by_query] == ["DIV"]


def test_bars_route_serves_seen_prices_and_seeded_history(fake_broker_factory: BrokerFactory) -> None:
    fake_broker = fake_broker_factory(clock=lambda: BROKER_NOW)
    fake_broker.set_prices({"AAPL": 123.45})
    data: Any = fake_broker.data_client()  # alpaca-py returns `Model | RawData` unions
    start = BROKER_NOW - timedelta(days=30)  # a Sunday: the first bar is Monday 2024-11-04's

    bars = data.get_stock_bars(
        StockBarsRequest(symbol_or_symbols=["AAPL", "ZZZZ"], timeframe=TimeFrame.Day, start=start)
    )
    again = data.get_stock_bars(StockBarsRequest(symbol_or_symbols="ZZZZ", timeframe=TimeFrame.Day, start=start))

    assert len(bars.data["ZZZZ"]) == SESSIONS_IN_THE_MONTH  # one daily bar per session opened by then
    assert [b.close for b in bars.data["ZZZZ"]] == [b.close for b in again.data["ZZZZ"]]
    assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in bars.data["ZZZZ"])
    assert len(bars.data["AAPL"]) == SESSIONS_IN_THE_MONTH
    assert bars.data["AAPL"][-1].close == 123.45  # today's bar ends at the price just posted


def test_missing_keys_get_401_and_wrong_secret_gets_403(fake_broker: FakeBroker) -> None:
    missing = fake_broker.request("GET", "/v2/account", account=None)
    wrong = fake_broker.request(
        "GET", "/v2/account", account=None, headers={"APCA-API-KEY-ID": "demo-key", "APCA-API-SECRET-KEY": "nope"}
    )

    assert (missing.status_code, missing.json()) == (401, {"code": 40110000, "message": "request is not authorized"})
    assert wrong.status_code == 403
    assert wrong.json()["code"] == 40310000


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        (
            "POST",
            "/v2/orders",
            {"symbol": "AAPL", "qty": 1, "side": "buy", "type": "limit", "time_in_force": "day"},
            422,
            42210000,
        ),
        (
            "POST",
            "/v2/orders",
            {"symbol": "AAPL", "qty": 1, "side": "up", "type": "market", "time_in_force": "day"},
            422,
            40010001,
        ),
        ("GET", "/v2/orders/6aa91d53-7fe6-4d24-9b5f-e5b78b643dd2", None, 404, 40410000),
        ("GET", "/v2/positions/AAPL", None, 404, 40410000),
        ("DELETE", "/v2/positions/AAPL", None, 404, 40410000),
        ("GET", "/v2/account/activities/NOPE", None, 422, 40010001),
        ("GET", "/v2/orders?status=weird", None, 422, 40010001),
        ("GET", "/v2/no-such-route", None, 404, 40410000),
        ("PUT", "/v2/account", None, 405, 40010000),
    ],
)
def test_bad_requests_get_alpaca_status_and_json_body(
    fake_broker: FakeBroker, method: str, path: str, body: object, status: int, code: int
) -> None:
    response = fake_broker.request(method, path, json=body)

    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["code"] == code
    assert isinstance(response.json()["message"], str)


def test_body_that_is_not_json_gets_400(fake_broker: FakeBroker) -> None:
    response = fake_broker.request("POST", "/v2/orders", data="{not json", headers={"Content-Type": "application/json"})

    assert (response.status_code, response.json()["code"]) == (400, 40010000)


def test_sdk_raises_api_error_with_alpaca_code(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 100})

    filled = client.submit_order(
        MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )

    with pytest.raises(APIError) as refused:
        client.submit_order(
            MarketOrderRequest(symbol="AAPL", qty=5, side=OrderSide.SELL, time_in_force=TimeInForce.GTC)
        )
    with pytest.raises(APIError) as not_cancelable:
        client.cancel_order_by_id(filled.id)

    assert (refused.value.status_code, refused.value.code) == (403, 40310000)
    assert (not_cancelable.value.status_code, not_cancelable.value.code) == (422, 42210000)


def test_queued_429_is_retried_by_the_sdk(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    client._retry_wait = 0  # the SDK sleeps 3 s per retry by default
    fake_broker.fail(429, 429)

    account = client.get_account()

    assert account.status == "ACTIVE"
    assert fake_broker.state()["requests_total"] == 3


def test_faults_surface_as_the_sdk_errors_alpaca_would_cause(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.fail("html500", "malformed", 503)

    with pytest.raises(APIError) as html:
        client.get_account()
    with pytest.raises(requests.exceptions.JSONDecodeError, match="Unterminated string starting at: line 1 column 8"):
        client.get_account()
    with pytest.raises(APIError) as unavailable:
        client.get_account()

    assert html.value.status_code == 500
    assert unavailable.value.status_code == 503
    assert client.get_account().status == "ACTIVE"

"""Trading scenarios end to end through the real alpaca-py ``TradingClient`` and ``/sim`` routes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    TakeProfitRequest,
)

from tests.fixtures.broker import BrokerFactory, FakeBroker


def _legs(order: Order) -> list[Order]:
    assert order.legs is not None
    return order.legs


def _bracket(side: OrderSide, take_profit: float, stop: float, limit: float | None = None) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol="AAPL",
        qty=10,
        side=side,
        limit_price=limit,
        time_in_force=TimeInForce.GTC,
        order_class=OrderClass.BRACKET,
        take_profit=TakeProfitRequest(limit_price=take_profit),
        stop_loss=StopLossRequest(stop_price=stop),
    )


def test_bracket_buy_fills_legs_go_held_to_new_take_profit_fills_at_limit(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 181})
    parent = client.submit_order(_bracket(OrderSide.BUY, take_profit=190, stop=170, limit=180))
    nested = GetOrderByIdRequest(nested=True)

    held = client.get_order_by_id(parent.id, nested)
    fake_broker.set_prices({"AAPL": 179.5})
    active = client.get_order_by_id(parent.id, nested)
    fake_broker.set_prices({"AAPL": 192.25})
    done = client.get_order_by_id(parent.id, nested)

    take_profit, stop_loss = _legs(done)
    assert held.status == OrderStatus.NEW
    assert [leg.status for leg in _legs(held)] == [OrderStatus.HELD, OrderStatus.HELD]
    assert (active.status, active.filled_avg_price) == (OrderStatus.FILLED, "180")
    assert [leg.status for leg in _legs(active)] == [OrderStatus.NEW, OrderStatus.NEW]
    assert (take_profit.status, take_profit.filled_avg_price) == (OrderStatus.FILLED, "190")
    assert stop_loss.status == OrderStatus.CANCELED
    assert client.get_all_positions() == []
    assert client.get_account().cash == "100100"


def test_replaced_stop_shows_replaces_and_replaced_by_chain(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 180})
    parent = client.submit_order(_bracket(OrderSide.BUY, take_profit=200, stop=170, limit=180))
    old_stop = _legs(parent)[1]

    new_stop = client.replace_order_by_id(old_stop.id, ReplaceOrderRequest(stop_price=176))
    old_after = client.get_order_by_id(old_stop.id)
    parent_after = client.get_order_by_id(parent.id, GetOrderByIdRequest(nested=True))
    fake_broker.set_prices({"AAPL": 175})
    closed = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))

    assert (old_after.status, old_after.replaced_by) == (OrderStatus.REPLACED, new_stop.id)
    assert old_after.replaced_at is not None
    assert (new_stop.replaces, new_stop.stop_price) == (old_stop.id, "176")
    assert [leg.id for leg in _legs(parent_after)][1] == new_stop.id
    statuses = {order.id: order.status for order in closed}
    assert statuses[new_stop.id] == OrderStatus.FILLED
    assert statuses[_legs(parent)[0].id] == OrderStatus.CANCELED


def test_short_bracket_sells_first_and_stop_covers_above(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    fake_broker.set_prices({"AAPL": 100})

    parent = client.submit_order(_bracket(OrderSide.SELL, take_profit=90, stop=105, limit=100))
    position = client.get_open_position("AAPL")
    fake_broker.set_prices({"AAPL": 106})
    legs = _legs(client.get_order_by_id(parent.id, GetOrderByIdRequest(nested=True)))
    sells = client.get("/account/activities/FILL", {"direction": "asc"})

    assert (position.side, position.qty, position.avg_entry_price) == ("short", "-10", "100")
    assert [leg.side for leg in legs] == [OrderSide.BUY, OrderSide.BUY]
    assert [leg.status for leg in legs] == [OrderStatus.CANCELED, OrderStatus.FILLED]
    assert legs[1].filled_avg_price == "106"
    assert [(a["side"], a["price"]) for a in sells] == [("sell_short", "100"), ("buy", "106")]
    assert client.get_account().cash == "99940"


def test_partial_fills_sum_to_the_order_quantity(fake_broker_factory: BrokerFactory) -> None:
    broker = fake_broker_factory(partial_fills=True)
    client: Any = broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    broker.set_prices({"AAPL": 10})

    order = client.submit_order(
        MarketOrderRequest(symbol="AAPL", qty=9, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )
    broker.set_prices({"AAPL": 11})
    middle = client.get_order_by_id(order.id)
    broker.set_prices({"AAPL": 12})
    final = client.get_order_by_id(order.id)
    fills = client.get("/account/activities/FILL", {"direction": "asc"})

    assert (order.status, order.filled_qty) == (OrderStatus.PARTIALLY_FILLED, "3")
    assert (middle.status, middle.filled_qty) == (OrderStatus.PARTIALLY_FILLED, "6")
    assert (final.status, final.filled_qty, final.filled_avg_price) == (OrderStatus.FILLED, "9", "11")
    assert [(a["type"], a["qty"], a["cum_qty"]) for a in fills] == [
        ("partial_fill", "3", "3"),
        ("partial_fill", "3", "6"),
        ("fill", "3", "9"),
    ]
    assert sum(Decimal(a["qty"]) for a in fills) == 9


def test_partial_fills_switched_on_at_run_time(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions
    config = fake_broker.configure(partial_fills=True, partial_fill_slices=2)
    fake_broker.set_prices({"AAPL": 10})

    order = client.submit_order(
        MarketOrderRequest(symbol="AAPL", qty=4, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )

    assert config["partial_fills"] is True
    assert order.filled_qty == "2"


def test_dividend_posted_through_sim_appears_in_activities_and_cash(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()  # alpaca-py returns `Model | RawData` unions

    posted = fake_broker.post_activities(
        [{"activity_type": "DIV", "symbol": "MSFT", "net_amount": "2.40", "description": "Cash DIV @ 0.24"}]
    )
    dividends = client.get("/account/activities/DIV", {})
    account = client.get_account()

    assert dividends == posted
    assert dividends[0]["net_amount"] == "2.4"
    assert dividends[0]["description"] == "Cash DIV @ 0.24"
    assert (account.cash, account.equity) == ("100002.4", "100002.4")


def test_activities_go_to_the_named_account(fake_broker_factory: BrokerFactory) -> None:
    broker = fake_broker_factory(accounts=["alpha", "beta:beta-key:beta-secret"])

    broker.post_activities([{"account": "beta", "activity_type": "CSD", "net_amount": "500"}])
    refused = broker.request(
        "POST", "/sim/activities", account=None, json=[{"activity_type": "CSD", "net_amount": "1"}]
    )

    alpha: Any = broker.trading_client("alpha")
    beta: Any = broker.trading_client("beta")
    assert alpha.get_account().cash == "100000"
    assert beta.get_account().cash == "100500"
    assert refused.status_code == 422

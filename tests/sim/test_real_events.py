"""The fake broker produces the events real accounts see (issue #12): corporate actions,
crypto pairs, activity corrections and busts, fills without execution ids, and real-looking
details (submission lag, commission, ``accepted`` without execution data, 9-digit stamps).

Shapes followed: Alpaca's account-activities page (https://docs.alpaca.markets/us/docs/account-activities.md,
the NonTradeActivity object), its activity types changelog (docs.alpaca.markets changelog
2026-11-06 "activity types": SC, SSO, SSP, DIVFEE, ...), the trade_updates stream
(ALPACA.md §4; accepted events carry only event, timestamp, order: alpaca-py#371), and alpaca-py's
``Position``/``Order`` models (alpaca/trading/models.py), which must still parse every payload.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from alpaca.trading.enums import AssetClass, OrderSide, TimeInForce
from alpaca.trading.models import Order, Position, TradeUpdate
from alpaca.trading.requests import MarketOrderRequest

from coldharbour.domain.cashflows import CashFlow, Rejection, to_cash_flow, to_corporate_execution, to_execution
from coldharbour.sim.engine import Engine
from coldharbour.sim.wire import SimError
from tests.fixtures.broker import FakeBroker
from tests.sim.builders import at, make_engine, order_body, order_of, price


def _hold(engine: Engine, symbol: str = "AAPL", qty: int = 10, px: str = "100") -> None:
    engine.set_prices({symbol: price(px)}, at(0))
    engine.submit_order("demo", order_body(symbol=symbol, qty=qty), at(1))


def _activities(engine: Engine, code: str) -> list[dict[str, object]]:
    return [a for a in engine.accounts["demo"].activities if a["activity_type"] == code]


def test_split_doubles_qty_halves_entry_books_the_split_pair_and_cancels_open_orders() -> None:
    engine = make_engine()
    _hold(engine)
    engine.submit_order("demo", order_body(side="sell", type="limit", limit_price=150, time_in_force="gtc"), at(2))
    cash = engine.accounts["demo"].cash

    booked, updates = engine.corporate_action({"type": "split", "symbol": "AAPL", "ratio": "2"}, at(3))

    position = engine.accounts["demo"].positions["AAPL"]
    assert (position.qty, position.avg_entry_price) == (Decimal(20), Decimal(50))
    assert engine.accounts["demo"].cash == cash
    assert engine.prices["AAPL"] == Decimal(50)
    assert [(a["activity_type"], a["qty"], a["price"], a["net_amount"]) for a in booked] == [
        ("SPLIT", "-10", "100", "0"),
        ("SPLIT", "20", "50", "0"),
    ]
    assert [(u.data["event"], order_of(u)["status"]) for u in updates] == [("canceled", "canceled")]


def test_reverse_split_pays_cash_in_lieu_for_the_fraction() -> None:
    engine = make_engine()
    _hold(engine, qty=15)
    cash = engine.accounts["demo"].cash

    booked, _ = engine.corporate_action({"type": "split", "symbol": "AAPL", "ratio": "0.1"}, at(3))

    position = engine.accounts["demo"].positions["AAPL"]
    assert (position.qty, position.avg_entry_price) == (Decimal(1), Decimal(1000))
    assert [a["activity_type"] for a in booked] == ["SPLIT", "SPLIT", "CIL"]
    cil = booked[-1]
    assert (cil["qty"], cil["price"], cil["net_amount"]) == ("-0.5", "1000", "500")
    assert engine.accounts["demo"].cash == cash + 500


def test_symbol_change_stock_merger_cash_merger_and_spinoff() -> None:
    engine = make_engine()
    _hold(engine, "OLD", 10, "40")
    _hold(engine, "TGT", 10, "30")
    _hold(engine, "PAR", 10, "20")

    engine.corporate_action({"type": "symbol_change", "symbol": "OLD", "new_symbol": "NEW"}, at(3))
    engine.corporate_action({"type": "stock_merger", "symbol": "NEW", "new_symbol": "ACQ", "ratio": "0.5"}, at(4))
    cash = engine.accounts["demo"].cash
    engine.corporate_action({"type": "cash_merger", "symbol": "TGT", "cash_per_share": "35"}, at(5))
    spin = {"type": "spinoff", "symbol": "PAR", "new_symbol": "KID", "ratio": "0.2", "price": "4"}
    engine.corporate_action(spin, at(6))

    positions = engine.accounts["demo"].positions
    assert sorted(positions) == ["ACQ", "KID", "PAR"]
    assert (positions["ACQ"].qty, positions["ACQ"].avg_entry_price) == (Decimal(5), Decimal(80))
    assert (positions["KID"].qty, positions["KID"].avg_entry_price) == (Decimal(2), Decimal(4))
    assert positions["PAR"].qty == Decimal(10)
    assert engine.accounts["demo"].cash == cash + 350
    assert [a["symbol"] for a in _activities(engine, "NC")] == ["OLD", "NEW"]
    assert [(a["symbol"], a["net_amount"]) for a in _activities(engine, "MA")] == [
        ("NEW", "0"),
        ("ACQ", "0"),
        ("TGT", "350"),
    ]
    assert [(a["symbol"], a["qty"], a["price"]) for a in _activities(engine, "SPIN")] == [("KID", "2", "4")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "JSON object"),
        ({"type": "dividend", "symbol": "AAPL"}, "type"),
        ({"type": "split", "symbol": "AAPL"}, "ratio"),
        ({"type": "split", "symbol": "AAPL", "ratio": "0"}, "ratio"),
        ({"type": "split", "symbol": "AAPL", "ratio": "1"}, "ratio"),
        ({"type": "symbol_change", "symbol": "AAPL"}, "new_symbol"),
        ({"type": "symbol_change", "symbol": "AAPL", "new_symbol": "AAPL"}, "new_symbol"),
        ({"type": "cash_merger", "symbol": "AAPL", "cash_per_share": "x"}, "cash_per_share"),
        ({"type": "split", "symbol": "", "ratio": "2"}, "symbol"),
    ],
)
def test_bad_corporate_action_is_a_400_with_a_one_line_reason(body: object, reason: str) -> None:
    engine = make_engine()
    _hold(engine)

    with pytest.raises(SimError) as caught:
        engine.corporate_action(body, at(3))

    assert caught.value.status == 400
    assert reason in caught.value.message
    assert "\n" not in caught.value.message
    assert engine.accounts["demo"].positions["AAPL"].qty == Decimal(10)


def test_dividend_correction_and_cancel_replace_the_activity_and_its_cash() -> None:
    engine = make_engine()
    cash = engine.accounts["demo"].cash
    dividend = engine.post_activity("demo", {"activity_type": "DIV", "net_amount": "12", "symbol": "AAPL"}, at(1))

    corrected = engine.post_activity("demo", {"id": dividend["id"], "net_amount": "10"}, at(2))
    assert (corrected["id"], corrected["net_amount"], corrected["status"]) == (dividend["id"], "10", "correct")
    assert engine.accounts["demo"].cash == cash + 10
    canceled = engine.post_activity("demo", {"id": dividend["id"], "status": "canceled"}, at(3))

    assert canceled["status"] == "canceled"
    assert engine.accounts["demo"].cash == cash
    assert [a["status"] for a in _activities(engine, "DIV")] == ["canceled"]


def test_fill_bust_reverses_position_and_cash() -> None:
    engine = make_engine()
    cash = engine.accounts["demo"].cash
    _hold(engine)
    (fill,) = _activities(engine, "FILL")

    busted = engine.post_activity("demo", {"id": fill["id"], "status": "canceled"}, at(5))

    assert busted["status"] == "canceled"
    assert "AAPL" not in engine.accounts["demo"].positions
    assert engine.accounts["demo"].cash == cash
    with pytest.raises(SimError, match="canceled"):
        engine.post_activity("demo", {"id": fill["id"], "status": "canceled"}, at(6))


def test_crypto_pair_fractional_gtc_and_ioc_any_hour() -> None:
    engine = make_engine()
    night = datetime.fromisoformat("2024-03-03T03:00:00+00:00")  # a Sunday night
    engine.set_prices({"BTC/USD": price("60000")}, night)

    order, updates = engine.submit_order(
        "demo", order_body(symbol="BTC/USD", qty="0.123456789", time_in_force="gtc"), night
    )
    engine.submit_order("demo", order_body(symbol="BTC/USD", qty="0.1", side="sell", time_in_force="ioc"), night)

    assert order.status == "filled"
    assert order_of(updates[-1])["asset_class"] == "crypto"
    position = engine.position_json("demo", "BTC/USD")
    assert (position["symbol"], position["asset_class"], position["qty"]) == ("BTCUSD", "crypto", "0.023456789")
    with pytest.raises(SimError, match="insufficient balance"):
        engine.submit_order("demo", order_body(symbol="BTC/USD", qty="1", side="sell", time_in_force="gtc"), night)
    with pytest.raises(SimError, match="time_in_force"):
        engine.submit_order("demo", order_body(symbol="BTC/USD", qty="0.1", time_in_force="day"), night)


def test_ioc_limit_that_does_not_fill_is_canceled_at_once() -> None:
    engine = make_engine()
    engine.set_prices({"ETH/USD": price("3000")}, at(0))

    order, updates = engine.submit_order(
        "demo", order_body(symbol="ETH/USD", qty="1", type="limit", limit_price="2000", time_in_force="ioc"), at(1)
    )

    assert order.status == "canceled"
    assert [u.data["event"] for u in updates] == ["new", "canceled"]


def test_omit_execution_id_accepted_events_and_real_looking_details() -> None:
    engine = make_engine()
    engine.config.omit_execution_id = True
    engine.config.accepted_events = True
    engine.set_prices({"AAPL": price("100")}, at(0))

    _, updates = engine.submit_order("demo", order_body(), at(1))

    accepted, new, fill = updates
    assert set(accepted.data) == {"event", "timestamp", "order"}
    assert accepted.data["event"] == "accepted"
    assert "execution_id" in new.data
    assert fill.data["event"] == "fill"
    assert "execution_id" not in fill.data
    (activity,) = _activities(engine, "FILL")
    assert "::" in str(activity["id"])  # the REST FILL keeps its execution id
    stamp = str(fill.data["timestamp"])
    assert len(stamp.split(".")[1]) == len("123456789-05:00")
    order = order_of(fill)
    submitted = datetime.fromisoformat(order["submitted_at"])
    created = datetime.fromisoformat(order["created_at"])
    assert 1 <= (created - submitted).total_seconds() * 1000 <= 170
    assert order["commission"] == "0"


def test_activity_index_stays_sorted_and_finds_every_id() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price("100")}, at(0))
    for n in range(20):
        engine.submit_order("demo", order_body(qty=1, side="buy" if n % 2 else "sell"), at(1 + n))
    engine.post_activity("demo", {"activity_type": "DIV", "net_amount": "1", "date": "2024-02-28"}, at(30))

    log = engine.accounts["demo"].activities
    assert log.ids == sorted(log.ids) == [str(a["id"]) for a in log]
    assert all(log.find(i) is not None for i in log.ids)
    assert log.find("nope") is None


# ----- at the wire, with the unmodified alpaca-py


def test_wire_crypto_position_both_forms_and_sdk_models(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()
    fake_broker.set_prices({"BTC/USD": "60000"})
    order = client.submit_order(
        MarketOrderRequest(symbol="BTC/USD", qty=0.5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC)
    )

    listed = client.get_all_positions()
    by_plain = client.get_open_position("BTCUSD")
    encoded = fake_broker.request("GET", "/v2/positions/BTC%2FUSD")
    bare = fake_broker.request("GET", "/v2/positions/BTC/USD")

    assert isinstance(order, Order)
    assert order.symbol == "BTC/USD"
    assert [(p.symbol, p.asset_class) for p in listed] == [("BTCUSD", AssetClass.CRYPTO)]
    assert isinstance(by_plain, Position)
    assert by_plain.qty == "0.5"
    assert encoded.status_code == bare.status_code == 200
    assert encoded.json()["symbol"] == bare.json()["symbol"] == "BTCUSD"


def test_wire_corporate_action_route_and_activities(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()
    fake_broker.set_prices({"AAPL": 100})
    client.submit_order(MarketOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))

    bad = fake_broker.request("POST", "/sim/corporate-actions", account=None, json={"type": "split"})
    ok = fake_broker.request(
        "POST", "/sim/corporate-actions", account=None, json={"type": "split", "symbol": "AAPL", "ratio": "2"}
    )
    activities = client.get("/account/activities/SPLIT", {"direction": "asc"})
    position = client.get_open_position("AAPL")

    assert bad.status_code == 400
    assert "symbol" in bad.json()["message"]
    assert ok.status_code == 200
    assert [(a["qty"], a["price"]) for a in activities] == [("-10", "100"), ("20", "50")]
    assert (position.qty, position.avg_entry_price, position.cost_basis) == ("20", "50", "1000")


def test_wire_trade_updates_parse_with_sdk_model() -> None:
    engine = make_engine()
    engine.config.omit_execution_id = True
    engine.config.accepted_events = True
    engine.set_prices({"BTC/USD": price("60000")}, at(0))

    _, updates = engine.submit_order("demo", order_body(symbol="BTC/USD", qty="0.01", time_in_force="gtc"), at(1))

    parsed = [TradeUpdate(**u.data) for u in updates]  # type: ignore[arg-type]
    assert [str(p.event) for p in parsed][-1].endswith("fill")
    assert parsed[-1].execution_id is None
    assert parsed[-1].order.asset_class == AssetClass.CRYPTO


def test_wire_former_codes_are_listed_but_refused_as_filters(fake_broker: FakeBroker) -> None:
    refused = fake_broker.request("GET", "/v2/account/activities", params={"activity_types": "SPLIT,SSO"})
    accepted = fake_broker.request("GET", "/v2/account/activities", params={"activity_types": "SPLIT,SC,CIL"})

    assert refused.status_code == 422
    assert "SSO" in refused.json()["message"]
    assert accepted.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"type": "split", "symbol": "AAPL", "ratio": "2"},
        {"type": "split", "symbol": "AAPL", "ratio": "0.25"},
        {"type": "symbol_change", "symbol": "AAPL", "new_symbol": "APPL"},
        {"type": "stock_merger", "symbol": "AAPL", "new_symbol": "ACQ", "ratio": "0.5"},
        {"type": "cash_merger", "symbol": "AAPL", "cash_per_share": "125"},
        {"type": "spinoff", "symbol": "AAPL", "new_symbol": "KID", "ratio": "0.2"},
    ],
)
def test_executions_and_corporate_legs_add_up_to_the_positions_and_cash(body: dict[str, str]) -> None:
    """The equity replay's view (domain/cashflows.py): executions + zero-price corporate legs
    give the broker's positions, and cash flows give its cash."""
    engine = make_engine()
    engine.set_prices({"AAPL": price("100")}, at(0))
    engine.submit_order("demo", order_body(qty=10), at(1))
    engine.corporate_action(body, at(60))
    book = engine.accounts["demo"]

    held: dict[str, Decimal] = {}
    cash = Decimal(100_000)
    for activity in book.activities:
        moved = to_execution(activity) if activity["activity_type"] == "FILL" else to_corporate_execution(activity)
        assert not isinstance(moved, Rejection)
        if moved is not None:
            held[moved.symbol] = held.get(moved.symbol, Decimal(0)) + moved.qty
        flow = to_cash_flow(activity)
        assert isinstance(flow, CashFlow)
        cash += flow.amount

    assert {s: q for s, q in held.items() if q} == {s: p.qty for s, p in book.positions.items()}
    assert cash == book.cash


def test_wire_close_crypto_position_by_either_symbol_form(fake_broker: FakeBroker) -> None:
    client: Any = fake_broker.trading_client()
    fake_broker.set_prices({"BTC/USD": "60000", "ETH/USD": "3000"})
    for symbol in ("BTC/USD", "ETH/USD"):
        request = MarketOrderRequest(symbol=symbol, qty=0.5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC)
        client.submit_order(request)

    closed_plain = client.close_position("BTCUSD")
    closed_encoded = fake_broker.request("DELETE", "/v2/positions/ETH%2FUSD")

    assert isinstance(closed_plain, Order)
    assert (closed_plain.symbol, closed_plain.time_in_force) == ("BTC/USD", TimeInForce.GTC)
    assert closed_encoded.status_code == 200
    assert client.get_all_positions() == []

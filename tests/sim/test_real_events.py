"""The fake broker produces the events real accounts see (issue #12): corporate actions,
crypto pairs, activity corrections and busts, fills without execution ids, and real-looking
details (submission lag, commission, ``accepted`` without execution data, 9-digit stamps).

Shapes followed: Alpaca's account-activities page (https://docs.alpaca.markets/us/docs/account-activities.md,
the NonTradeActivity object), its activity types changelog (docs.alpaca.markets changelog
2026-11-06 "activity types": SC, SSO, SSP, DIVFEE, ...), the trade_updates stream
(docs/broker.md §4; accepted events carry only event, timestamp, order: alpaca-py#371), and alpaca-py's
``Position``/``Order`` models (alpaca/trading/models.py), which must still parse every payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alpaca.data.enums import CorporateActionsType
from alpaca.data.historical.corporate_actions import CorporateActionsClient
from alpaca.data.models.corporate_actions import CorporateActionsSet, ForwardSplit
from alpaca.data.requests import CorporateActionsRequest
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


def _act(engine: Engine, body: Mapping[str, object], seconds: float = 3) -> tuple[str, list[dict[str, object]]]:
    action_id, booked, _ = engine.corporate_action(body, at(seconds))
    return action_id, booked


def _legs(booked: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(a["activity_type"], a["symbol"], a["qty"], a["price"], a["net_amount"]) for a in booked]


def test_split_doubles_qty_halves_entry_books_the_split_pair_and_cancels_open_orders() -> None:
    engine = make_engine()
    _hold(engine)
    engine.submit_order("demo", order_body(side="sell", type="limit", limit_price=150, time_in_force="gtc"), at(2))
    cash = engine.accounts["demo"].cash

    _, booked, updates = engine.corporate_action(
        {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2"}, at(3)
    )

    position = engine.accounts["demo"].positions["AAPL"]
    assert (position.qty, position.avg_entry_price) == (Decimal(20), Decimal(50))
    assert engine.accounts["demo"].cash == cash
    assert engine.prices["AAPL"] == Decimal(50)
    assert _legs(booked) == [("SPLIT", "AAPL", "-10", "100", "0"), ("SPLIT", "AAPL", "20", "50", "0")]
    assert all("per_share_amount" not in a and a["description"] == "Split: 2 for 1 AAPL" for a in booked)
    assert [a["activity_sub_type"] for a in booked] == ["shares_out", "shares_in"]
    # by default the legs are stamped when the fake books them (10:00:03 New York)
    assert [str(a["id"])[:17] for a in booked] == ["20240301100003000", "20240301100003001"]
    assert [(u.data["event"], order_of(u)["status"]) for u in updates] == [("canceled", "canceled")]


def test_reverse_split_pays_cash_in_lieu_for_the_fraction() -> None:
    engine = make_engine()
    _hold(engine, qty=15)
    cash = engine.accounts["demo"].cash

    _, booked = _act(engine, {"type": "reverse_split", "symbol": "AAPL", "old_rate": "10", "new_rate": "1"})

    position = engine.accounts["demo"].positions["AAPL"]
    assert (position.qty, position.avg_entry_price) == (Decimal(1), Decimal(1000))
    assert [a["activity_type"] for a in booked] == ["SPLIT", "SPLIT", "CIL"]
    cil = booked[-1]
    assert (cil["qty"], cil["price"], cil["net_amount"]) == ("-0.5", "1000", "500")
    assert engine.accounts["demo"].cash == cash + 500


def test_each_type_books_the_legs_a_real_account_lists() -> None:
    """Leg shapes of docs/corporate-actions.md ("Legs"): the cash merger is two MA legs (shares
    out with net_amount 0, cash with qty 0), the spin-off leg is priced 0, the removal is REORG,
    the unit split three SPLIT legs, the name change NC."""
    engine = make_engine()
    for symbol, px in (("OLD", "40"), ("TGT", "30"), ("PAR", "20"), ("DUD", "5"), ("UNIT", "10"), ("MIX", "50")):
        _hold(engine, symbol, 10, px)
    engine.set_prices({"UNA": price("9"), "UNW": price("1"), "BIG": price("100")}, at(2))
    cash = engine.accounts["demo"].cash

    _act(engine, {"type": "name_change", "symbol": "OLD", "new_symbol": "NEW"})
    _act(engine, {"type": "stock_merger", "symbol": "NEW", "acquirer_symbol": "ACQ", "acquirer_rate": "1",
                  "acquiree_rate": "2"}, 4)  # fmt: skip
    _, cash_merger = _act(engine, {"type": "cash_merger", "symbol": "TGT", "rate": "35"}, 5)
    _, spin = _act(engine, {"type": "spin_off", "symbol": "PAR", "new_symbol": "KID", "source_rate": "5",
                            "new_rate": "1"}, 6)  # fmt: skip
    _, removal = _act(engine, {"type": "worthless_removal", "symbol": "DUD"}, 7)
    _, unit = _act(engine, {"type": "unit_split", "symbol": "UNIT", "old_rate": "1", "new_symbol": "UNA",
                            "new_rate": "1", "alternate_symbol": "UNW", "alternate_rate": "1"}, 8)  # fmt: skip
    _, mixed = _act(engine, {"type": "stock_and_cash_merger", "symbol": "MIX", "acquirer_symbol": "BIG",
                             "acquirer_rate": "1", "acquiree_rate": "4", "cash_rate": "20"}, 9)  # fmt: skip

    positions = engine.accounts["demo"].positions
    assert sorted(positions) == ["ACQ", "BIG", "KID", "PAR", "UNA", "UNW"]
    assert (positions["ACQ"].qty, positions["ACQ"].avg_entry_price) == (Decimal(5), Decimal(80))
    assert (positions["KID"].qty, positions["PAR"].qty) == (Decimal(2), Decimal(10))
    assert (positions["UNA"].qty, positions["UNW"].qty) == (Decimal(10), Decimal(10))
    assert positions["UNA"].qty * positions["UNA"].avg_entry_price == Decimal(90)  # basis split 9:1
    assert positions["BIG"].qty == Decimal("2")
    assert engine.accounts["demo"].cash == cash + 350 + 200 + Decimal("0.5") * 100
    assert [a["symbol"] for a in _activities(engine, "NC")] == ["OLD", "NEW"]
    assert _legs(cash_merger) == [("MA", "TGT", "-10", "0", "0"), ("MA", "TGT", "0", "0", "350")]
    assert _legs(spin) == [("SPIN", "KID", "2", "0", "0")]
    assert _legs(removal) == [("REORG", "DUD", "-10", "0", "0")]
    assert [(a["symbol"], a["qty"]) for a in unit] == [("UNIT", "-10"), ("UNA", "10"), ("UNW", "10")]
    assert [(a["activity_type"], a["symbol"], a["qty"], a["net_amount"]) for a in mixed] == [
        ("MA", "MIX", "-10", "0"), ("MA", "BIG", "2.5", "0"), ("MA", "MIX", "0", "200"), ("CIL", "BIG", "-0.5", "50"),
    ]  # fmt: skip


def test_leg_timings_and_the_position_before_or_after_the_legs() -> None:
    engine = make_engine()
    _hold(engine)
    split = {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2", "ex_date": "2024-03-04",
             "payable_date": "2024-03-01", "legs": "payable_date", "position": "after_legs"}  # fmt: skip

    action_id, listed = _act(engine, split)
    before = engine.accounts["demo"].positions["AAPL"].qty
    completed = engine.complete_corporate_action(action_id, at(4))

    assert [(str(a["id"])[:17], a["date"]) for a in listed] == [("20240301000000000", "2024-03-01"),
                                                               ("20240301000000001", "2024-03-01")]  # fmt: skip
    assert (before, completed) == (Decimal(10), [])
    assert engine.accounts["demo"].positions["AAPL"].qty == Decimal(20)

    later = {**split, "legs": "executed_at", "position": "before_legs", "ex_date": "2024-03-05"}
    second_id, listed_now = _act(engine, later, 5)
    moved = engine.accounts["demo"].positions["AAPL"].qty
    shown = engine.complete_corporate_action(second_id, at(6))
    _, on_ex_date = _act(engine, {**split, "legs": "ex_date", "position": "together", "ex_date": "2024-03-06"}, 7)

    assert (listed_now, moved) == ([], Decimal(40))
    assert [(str(a["id"])[:17], a["date"]) for a in shown] == [("20240305120000000", "2024-03-05"),
                                                              ("20240305120000001", "2024-03-05")]  # fmt: skip
    assert [str(a["id"])[:17] for a in on_ex_date] == ["20240306040000000", "20240306040000001"]


def test_cancel_lists_the_legs_as_canceled_restores_the_position_and_rebooks() -> None:
    engine = make_engine()
    _hold(engine)
    cash = engine.accounts["demo"].cash
    action_id, booked = _act(engine, {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "3"})

    canceled, new_id = engine.cancel_corporate_action(
        action_id, {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2"}, at(5)
    )

    splits = _activities(engine, "SPLIT")
    assert [a["id"] for a in canceled] == [a["id"] for a in booked]
    assert sorted((a["qty"], a["status"]) for a in splits) == [
        ("-10", "canceled"), ("-10", "executed"), ("20", "executed"), ("30", "canceled"),
    ]  # fmt: skip
    position = engine.accounts["demo"].positions["AAPL"]
    assert (position.qty, position.avg_entry_price, engine.accounts["demo"].cash) == (Decimal(20), Decimal(50), cash)
    assert engine.prices["AAPL"] == Decimal(50)
    assert new_id is not None
    assert next(a for a, _ in engine.corporate_announcements()).rate("new_rate") == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "JSON object"),
        ({"type": "dividend", "symbol": "AAPL"}, "type"),
        ({"type": "split", "symbol": "AAPL", "ratio": "2"}, "type"),
        ({"type": "forward_split", "symbol": "AAPL", "old_rate": "1"}, "new_rate"),
        ({"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "0"}, "new_rate"),
        ({"type": "forward_split", "symbol": "AAPL", "old_rate": "2", "new_rate": "1"}, "new_rate"),
        ({"type": "reverse_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2"}, "new_rate"),
        ({"type": "name_change", "symbol": "AAPL"}, "new_symbol"),
        ({"type": "name_change", "symbol": "AAPL", "new_symbol": "AAPL"}, "new_symbol"),
        ({"type": "cash_merger", "symbol": "AAPL", "rate": "x"}, "rate"),
        ({"type": "forward_split", "symbol": "", "old_rate": "1", "new_rate": "2"}, "symbol"),
        ({"type": "name_change", "symbol": "AAPL", "new_symbol": "B", "legs": "later"}, "legs"),
        ({"type": "name_change", "symbol": "AAPL", "new_symbol": "B", "effective_date": "3/1"}, "effective_date"),
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


def test_wire_corporate_action_route_cancel_rebook_and_announcements(fake_broker: FakeBroker) -> None:
    """The routes of sim/control.py, the legs through alpaca-py's TradingClient, and the
    announcements through alpaca-py's own ``CorporateActionsClient`` (its
    ``alpaca/data/historical/corporate_actions.py`` path and ``alpaca/data/models/corporate_actions.py``
    groups), which must parse what the fake serves."""
    client: Any = fake_broker.trading_client()
    fake_broker.set_prices({"AAPL": 100})
    client.submit_order(MarketOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    key_id, secret = fake_broker.keys()
    announcements = CorporateActionsClient(key_id, secret, url_override=fake_broker.base_url)

    bad = fake_broker.request("POST", "/sim/corporate-actions", account=None, json={"type": "forward_split"})
    ok = fake_broker.request("POST", "/sim/corporate-actions", account=None,
                             json={"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "3"})
    action_id = ok.json()["id"]
    today = datetime.now(UTC).date()  # the ex-date defaults to the next weekday
    start, end = today - timedelta(days=2), today + timedelta(days=7)
    announced = announcements.get_corporate_actions(CorporateActionsRequest(symbols=["AAPL"], start=start, end=end))
    rebooked = fake_broker.request("POST", f"/sim/corporate-actions/{action_id}/cancel", account=None, json={
        "rebook": {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2"}})  # fmt: skip
    missing = fake_broker.request("POST", f"/sim/corporate-actions/{action_id}/cancel", account=None, json={})
    activities = client.get("/account/activities/SPLIT", {"direction": "asc"})
    position = client.get_open_position("AAPL")
    splits_only = CorporateActionsRequest(symbols=["AAPL"], types=[CorporateActionsType.FORWARD_SPLIT], start=start,
                                          end=end)
    after = announcements.get_corporate_actions(splits_only)

    assert bad.status_code == 400
    assert "symbol" in bad.json()["message"]
    assert ok.status_code == rebooked.status_code == 200
    assert missing.status_code == 404
    assert isinstance(announced, CorporateActionsSet)
    (split,) = announced.data["forward_splits"]
    assert isinstance(split, ForwardSplit)
    assert (str(split.id), split.symbol, split.old_rate, split.new_rate) == (action_id, "AAPL", 1, 3)
    assert sorted((a["qty"], a["price"], a["status"]) for a in activities) == [
        ("-10", "100", "canceled"), ("-10", "100", "executed"), ("20", "50", "executed"),
        ("30", "33.333333333", "canceled"),
    ]  # fmt: skip
    assert (position.qty, position.avg_entry_price, position.cost_basis) == ("20", "50", "1000")
    assert isinstance(after, CorporateActionsSet)
    assert [str(s.id) for s in after.data["forward_splits"]] == [rebooked.json()["id"]]


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
        {"type": "forward_split", "symbol": "AAPL", "old_rate": "1", "new_rate": "2"},
        {"type": "reverse_split", "symbol": "AAPL", "old_rate": "4", "new_rate": "1"},
        {"type": "reverse_split", "symbol": "AAPL", "old_rate": "3", "new_rate": "1"},
        {"type": "name_change", "symbol": "AAPL", "new_symbol": "APPL"},
        {"type": "stock_merger", "symbol": "AAPL", "acquirer_symbol": "ACQ", "acquirer_rate": "1",
         "acquiree_rate": "2"},
        {"type": "stock_and_cash_merger", "symbol": "AAPL", "acquirer_symbol": "ACQ", "acquirer_rate": "1",
         "acquiree_rate": "3", "cash_rate": "10"},
        {"type": "cash_merger", "symbol": "AAPL", "rate": "125"},
        {"type": "redemption", "symbol": "AAPL", "rate": "101"},
        {"type": "worthless_removal", "symbol": "AAPL"},
        {"type": "spin_off", "symbol": "AAPL", "new_symbol": "KID", "source_rate": "5", "new_rate": "1"},
        {"type": "stock_dividend", "symbol": "AAPL", "rate": "0.25"},
        {"type": "unit_split", "symbol": "AAPL", "old_rate": "1", "new_symbol": "UA", "new_rate": "1",
         "alternate_symbol": "UW", "alternate_rate": "0.5"},
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

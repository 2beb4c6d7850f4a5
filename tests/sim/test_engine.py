"""The pure matching engine: fill rules, linked orders, replace/cancel, expiry, cash and refusals."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from coldharbour.sim.engine import AccountSpec
from coldharbour.sim.wire import SimError
from tests.sim.builders import T0, at, bracket_body, events, make_engine, order_body, order_of, price


def test_market_buy_fills_at_current_price_and_moves_cash() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)

    order, updates = engine.submit_order("demo", order_body(), T0)

    fill = updates[-1].data
    book = engine.accounts["demo"]
    assert events(updates) == [("new", "market"), ("fill", "market")]
    assert (fill["price"], fill["qty"], fill["position_qty"]) == ("180", "10", "10")
    assert order_of(updates[-1])["status"] == "filled"
    assert order_of(updates[-1])["filled_avg_price"] == "180"
    assert book.cash == Decimal(100_000 - 1800)
    assert book.positions["AAPL"].qty == 10
    assert order.status == "filled"


def test_market_order_without_price_waits_for_first_price() -> None:
    engine = make_engine()

    order, updates = engine.submit_order("demo", order_body(), T0)
    later = engine.set_prices({"AAPL": price(50)}, at(1))

    assert events(updates) == [("new", "market")]
    assert events(later) == [("fill", "market")]
    assert later[0].data["price"] == "50"
    assert order.status == "filled"


@pytest.mark.parametrize(
    ("side", "limit", "current", "expected"),
    [
        ("buy", 181, 180, "180"),  # current price already better: fills at once at it
        ("sell", 179, 180, "180"),
    ],
)
def test_marketable_limit_fills_at_once_at_current_price(side: str, limit: int, current: int, expected: str) -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(current)}, T0)
    if side == "sell":
        engine.submit_order("demo", order_body(), T0)

    _, updates = engine.submit_order("demo", order_body(side=side, type="limit", limit_price=limit), at(1))

    assert updates[-1].data["event"] == "fill"
    assert updates[-1].data["price"] == expected


def test_resting_limit_fills_at_its_limit_when_price_gaps_through() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    _, placed = engine.submit_order("demo", order_body(type="limit", limit_price=175), T0)

    untouched = engine.set_prices({"AAPL": price(176)}, at(1))
    filled = engine.set_prices({"AAPL": price(170)}, at(2))

    assert events(placed) == [("new", "limit")]
    assert untouched == []
    assert filled[0].data["price"] == "175"


@pytest.mark.parametrize(
    ("side", "stop", "path", "expected"),
    [
        ("sell", 170, [175, 165], "165"),  # gap through the stop: fills at the triggering price
        ("sell", 170, [175, 170], "170"),
        ("buy", 190, [185, 193], "193"),
    ],
)
def test_stop_triggers_and_fills_at_triggering_price(side: str, stop: int, path: list[int], expected: str) -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    if side == "sell":
        engine.submit_order("demo", order_body(), T0)
    engine.submit_order("demo", order_body(side=side, type="stop", stop_price=stop, time_in_force="gtc"), T0)

    first = engine.set_prices({"AAPL": price(path[0])}, at(1))
    second = engine.set_prices({"AAPL": price(path[1])}, at(2))

    assert first == []
    assert [u.data["event"] for u in second] == ["fill"]
    assert second[0].data["price"] == expected


def test_stop_limit_triggers_then_rests_as_limit() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    engine.submit_order("demo", order_body(), T0)
    body = order_body(side="sell", type="stop_limit", stop_price=170, limit_price=169)
    order, _ = engine.submit_order("demo", body, T0)

    gapped = engine.set_prices({"AAPL": price(165)}, at(1))  # triggers; 165 is below the 169 limit
    recovered = engine.set_prices({"AAPL": price(169.5)}, at(2))

    assert gapped == []
    assert order.is_triggered
    assert recovered[0].data["price"] == "169"


def test_triggered_stop_limit_fills_at_once_when_trigger_price_is_within_limit() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    engine.submit_order("demo", order_body(), T0)
    engine.submit_order("demo", order_body(side="sell", type="stop_limit", stop_price=170, limit_price=168), T0)

    updates = engine.set_prices({"AAPL": price(169)}, at(1))

    assert updates[0].data["price"] == "169"


def test_trailing_stop_follows_high_water_mark_then_triggers() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(100)}, T0)
    engine.submit_order("demo", order_body(), T0)
    order, _ = engine.submit_order(
        "demo", order_body(side="sell", type="trailing_stop", trail_percent=5, time_in_force="gtc"), T0
    )

    engine.set_prices({"AAPL": price(120)}, at(1))
    held = engine.set_prices({"AAPL": price(115)}, at(2))
    triggered = engine.set_prices({"AAPL": price(113)}, at(3))

    assert held == []
    assert order.hwm == 120
    assert order.stop_price == 114
    assert triggered[0].data["price"] == "113"


def test_bracket_legs_held_until_parent_fills_then_take_profit_fills_and_stop_is_canceled() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)

    parent, placed = engine.submit_order("demo", bracket_body(type="limit", limit_price=179), T0)
    legs_before = [engine.orders[i].status for i in parent.leg_ids]
    entry = engine.set_prices({"AAPL": price(178)}, at(1))
    exit_updates = engine.set_prices({"AAPL": price(205)}, at(2))

    take_profit, stop_loss = (engine.orders[i] for i in parent.leg_ids)
    assert events(placed) == [("new", "limit")]
    assert [leg["status"] for leg in order_of(placed[0])["legs"]] == ["held", "held"]
    assert legs_before == ["held", "held"]
    assert events(entry) == [("fill", "limit"), ("new", "limit"), ("new", "stop")]
    assert entry[0].data["price"] == "179"
    assert events(exit_updates) == [("fill", "limit"), ("canceled", "stop")]
    assert exit_updates[0].data["price"] == "200"
    assert exit_updates[0].data["position_qty"] == "0"
    assert (take_profit.status, stop_loss.status) == ("filled", "canceled")
    assert engine.accounts["demo"].cash == Decimal(100_000 - 1790 + 2000)


def test_bracket_stop_loss_fills_and_take_profit_is_canceled() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    engine.submit_order("demo", bracket_body(), T0)

    updates = engine.set_prices({"AAPL": price(160)}, at(1))

    assert events(updates) == [("fill", "stop"), ("canceled", "limit")]
    assert updates[0].data["price"] == "160"
    assert "AAPL" not in engine.accounts["demo"].positions


def test_short_bracket_opens_short_and_covers_at_take_profit() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)

    parent, placed = engine.submit_order("demo", bracket_body(take_profit=160, stop=190, side="sell"), T0)
    covered = engine.set_prices({"AAPL": price(159)}, at(1))

    fill_activity = engine.accounts["demo"].activities[0]
    assert placed[1].data["position_qty"] == "-10"
    assert [engine.orders[i].side for i in parent.leg_ids] == ["buy", "buy"]
    assert fill_activity["side"] == "sell_short"
    assert events(covered) == [("fill", "limit"), ("canceled", "stop")]
    assert covered[0].data["price"] == "160"
    assert engine.accounts["demo"].cash == Decimal(100_000 + 1800 - 1600)


def test_oto_leg_is_held_until_parent_fills() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    body = order_body(type="limit", limit_price=175, order_class="oto", stop_loss={"stop_price": 170})

    parent, _ = engine.submit_order("demo", body, T0)
    leg = engine.orders[parent.leg_ids[0]]
    status_before = leg.status
    engine.set_prices({"AAPL": price(175)}, at(1))

    assert (status_before, leg.status, leg.type) == ("held", "new", "stop")


def test_oco_exit_stop_fills_and_cancels_take_profit() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    engine.submit_order("demo", order_body(), T0)
    body = order_body(
        side="sell",
        type="limit",
        time_in_force="gtc",
        order_class="oco",
        take_profit={"limit_price": 200},
        stop_loss={"stop_price": 170},
    )

    parent, placed = engine.submit_order("demo", body, T0)
    updates = engine.set_prices({"AAPL": price(169)}, at(1))

    assert events(placed) == [("new", "limit"), ("new", "stop")]
    assert parent.limit_price == 200
    assert events(updates) == [("fill", "stop"), ("canceled", "limit")]


def test_replace_creates_successor_with_replaces_and_replaced_by() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    parent, _ = engine.submit_order("demo", bracket_body(), T0)
    old_stop = engine.orders[parent.leg_ids[1]]

    new_stop, updates = engine.replace_order("demo", old_stop.id, {"stop_price": 175.0}, at(1))
    stopped = engine.set_prices({"AAPL": price(174)}, at(2))

    assert events(updates) == [("replaced", "stop"), ("new", "stop")]
    assert order_of(updates[0])["replaced_by"] == new_stop.id
    assert old_stop.status == "replaced"
    assert new_stop.replaces == old_stop.id
    assert new_stop.stop_price == 175
    assert parent.leg_ids[1] == new_stop.id
    assert events(stopped) == [("fill", "stop"), ("canceled", "limit")]


def test_order_accepted_without_price_is_rejected_at_fill_time_when_unaffordable() -> None:
    engine = make_engine()
    parent, placed = engine.submit_order("demo", bracket_body(take_profit=2000, stop=500, qty=250), T0)

    updates = engine.set_prices({"AAPL": price(1000)}, at(1))

    assert events(placed) == [("new", "market")]
    assert [u.data["event"] for u in updates] == ["rejected", "canceled", "canceled"]
    assert order_of(updates[0])["failed_at"] is not None
    assert parent.status == "rejected"
    assert engine.accounts["demo"].positions == {}


def test_cancel_open_order_then_cancel_again_is_not_cancelable() -> None:
    engine = make_engine()
    order, _ = engine.submit_order("demo", order_body(type="limit", limit_price=100), T0)

    updates = engine.cancel_order("demo", order.id, at(1))
    with pytest.raises(SimError) as refused:
        engine.cancel_order("demo", order.id, at(2))

    assert events(updates) == [("canceled", "limit")]
    assert order_of(updates[0])["canceled_at"] is not None
    assert (refused.value.status, refused.value.to_body()) == (
        422,
        {"code": 42210000, "message": "order is not cancelable"},
    )


def test_cancel_bracket_parent_cancels_held_legs() -> None:
    engine = make_engine()
    parent, _ = engine.submit_order("demo", bracket_body(type="limit", limit_price=180), T0)

    updates = engine.cancel_order("demo", parent.id, at(1))

    assert [u.data["event"] for u in updates] == ["canceled"] * 3
    assert {engine.orders[i].status for i in parent.leg_ids} == {"canceled"}


def test_sell_more_than_position_is_refused_with_available_qty() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    engine.submit_order("demo", order_body(qty=10), T0)

    with pytest.raises(SimError) as refused:
        engine.submit_order("demo", order_body(side="sell", qty=15), at(1))

    assert refused.value.status == 403
    assert refused.value.to_body() == {
        "code": 40310000,
        "message": "insufficient qty available for order (requested: 15, available: 10)",
        "available": "10",
        "existing_qty": "10",
        "held_for_orders": "0",
        "symbol": "AAPL",
    }


def test_exit_legs_hold_the_position_against_another_sell() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)
    engine.submit_order("demo", bracket_body(), T0)

    with pytest.raises(SimError) as refused:
        engine.submit_order("demo", order_body(side="sell", qty=1), at(1))

    assert refused.value.to_body()["held_for_orders"] == "10"


def test_order_beyond_buying_power_is_refused() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(1000)}, T0)

    with pytest.raises(SimError) as refused:
        engine.submit_order("demo", order_body(qty=201), T0)

    assert (refused.value.status, refused.value.to_body()) == (
        403,
        {"code": 40310000, "message": "insufficient buying power"},
    )
    assert engine.orders == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"qty": None}, "qty or notional is required, but not both"),
        ({"qty": -1}, "qty must be > 0"),
        ({"side": "hold"}, "invalid side: 'hold'"),
        ({"type": "limit"}, "limit_price is required for limit orders"),
        ({"type": "stop"}, "stop_price is required for stop orders"),
        ({"type": "trailing_stop"}, "trailing stop orders need exactly one of trail_price, trail_percent"),
        ({"time_in_force": "ioc"}, "time_in_force ioc is not supported by the simulator"),
        ({"symbol": None}, "symbol is required"),
        (
            {"order_class": "bracket", "take_profit": {"limit_price": 200}},
            "bracket orders require take_profit and stop_loss",
        ),
        ({"qty": "abc"}, "invalid qty: 'abc'"),
        ({"qty": 1.5, "time_in_force": "gtc"}, "fractional orders must be DAY orders"),
    ],
)
def test_invalid_order_is_refused_with_422(overrides: dict[str, object], message: str) -> None:
    engine = make_engine()

    with pytest.raises(SimError) as refused:
        engine.submit_order("demo", order_body(**overrides), T0)

    assert refused.value.status == 422
    assert refused.value.message == message


def test_bracket_take_profit_below_base_price_is_refused() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(180)}, T0)

    with pytest.raises(SimError) as refused:
        engine.submit_order("demo", bracket_body(take_profit=179), T0)

    assert refused.value.to_body() == {
        "code": 42210000,
        "message": "take_profit.limit_price must be >= base_price + 0.01",
    }


def test_duplicate_client_order_id_is_refused() -> None:
    engine = make_engine()
    engine.submit_order("demo", order_body(client_order_id="c-1"), T0)

    with pytest.raises(SimError) as refused:
        engine.submit_order("demo", order_body(client_order_id="c-1"), at(1))

    assert refused.value.message == "client_order_id must be unique"


def test_day_order_expires_at_session_close_and_gtc_lives_ninety_days() -> None:
    engine = make_engine()
    day_order, _ = engine.submit_order("demo", order_body(type="limit", limit_price=1), T0)
    gtc_order, _ = engine.submit_order("demo", order_body(type="limit", limit_price=1, time_in_force="gtc"), T0)
    assert day_order.expires_at is not None
    assert gtc_order.expires_at is not None

    updates = engine.expire_orders(day_order.expires_at)

    assert events(updates) == [("expired", "limit")]
    assert day_order.expired_at == day_order.expires_at
    assert gtc_order.expires_at - T0 >= timedelta(days=90)
    assert gtc_order.status == "new"


def test_partial_fills_split_into_executions_one_per_price() -> None:
    engine = make_engine(partial_fills=True, slices=3)
    engine.set_prices({"AAPL": price(100)}, T0)

    order, first = engine.submit_order("demo", order_body(qty=10), T0)
    second = engine.set_prices({"AAPL": price(101)}, at(1))
    third = engine.set_prices({"AAPL": price(102)}, at(2))

    fills = [u.data for u in first[1:] + second + third]
    assert [f["event"] for f in fills] == ["partial_fill", "partial_fill", "fill"]
    assert [f["qty"] for f in fills] == ["4", "4", "2"]
    assert [f["position_qty"] for f in fills] == ["4", "8", "10"]
    assert order.filled_qty == 10
    assert order.filled_avg_price == Decimal("100.8")
    assert [a["cum_qty"] for a in engine.accounts["demo"].activities] == ["4", "8", "10"]


def test_pending_new_events_precede_new_when_configured() -> None:
    engine = make_engine(pending_new=True)

    _, updates = engine.submit_order("demo", order_body(type="limit", limit_price=1), T0)

    assert [(u.data["event"], order_of(u)["status"]) for u in updates] == [
        ("pending_new", "pending_new"),
        ("new", "new"),
    ]


def test_notional_order_fills_fractional_qty() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": price(300)}, T0)

    order, updates = engine.submit_order("demo", order_body(qty=None, notional=1000), T0)

    assert updates[-1].data["qty"] == "3.333333333"
    assert order_of(updates[-1])["notional"] == "1000"
    assert order.status == "filled"


def test_dividend_activity_moves_cash_and_equity() -> None:
    engine = make_engine()

    activity = engine.post_activity("demo", {"activity_type": "DIV", "symbol": "MSFT", "net_amount": "2.40"}, T0)
    engine.post_activity("demo", {"activity_type": "FEE", "net_amount": "-0.02", "date": "2024-02-01"}, T0)

    account = engine.account_json("demo", T0)
    assert activity["activity_type"] == "DIV"
    assert activity["date"] == "2024-03-01"
    assert str(activity["id"]).startswith("20240301100000000::")
    assert (account["cash"], account["equity"]) == ("100002.38", "100002.38")


def test_accounts_are_separate_books() -> None:
    engine = make_engine(AccountSpec("alpha", "a-key", "a-secret"), AccountSpec("beta", "b-key", "b-secret"))
    engine.set_prices({"AAPL": price(10)}, T0)

    order, updates = engine.submit_order("beta", order_body(), T0)

    assert {u.account for u in updates} == {"beta"}
    assert engine.accounts["alpha"].positions == {}
    with pytest.raises(SimError) as refused:
        engine.find_order("alpha", order.id)
    assert refused.value.status == 404

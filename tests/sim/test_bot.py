"""Demo bot: the pure decision policy, the broker-view conversion, then real alpaca-py runs."""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from uuid import uuid4

import pytest
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import Order, Position
from alpaca.trading.requests import GetOrdersRequest

from coldharbour.sim.bot import (
    DEFAULT_WEIGHTS,
    BotPolicy,
    BracketEntry,
    ClosePosition,
    Idle,
    MarketOrder,
    MarketView,
    PositionView,
    ReplaceStop,
    StopLeg,
    TradingBot,
    fetch_broker_prices,
    main,
    parse_prices,
    round_price,
    view_from_broker,
)
from tests.fixtures.broker import FakeBroker
from tests.support import wait_for

SYMBOLS = ("AAPL", "MSFT", "PENNY")
PRICES = {"AAPL": Decimal("190.00"), "MSFT": Decimal("410.50"), "PENNY": Decimal("0.5123")}


def _view(**overrides: object) -> MarketView:
    fields: dict[str, object] = {"prices": PRICES}
    fields.update(overrides)
    return MarketView(**fields)  # type: ignore[arg-type]


def _tick(price: Decimal) -> Decimal:
    return Decimal("0.01") if price >= 1 else Decimal("0.0001")


def _decisions(view: MarketView, count: int = 300, seed: int = 11) -> list[object]:
    policy = BotPolicy(SYMBOLS, seed=seed)
    return [policy.decide(view) for _ in range(count)]


def test_policy_same_seed_same_decisions() -> None:
    view = _view(positions={"AAPL": PositionView("AAPL", Decimal(10), Decimal(10))})

    assert _decisions(view, seed=3) == _decisions(view, seed=3)
    assert _decisions(view, seed=3) != _decisions(view, seed=4)


def test_policy_without_prices_idles() -> None:
    action = BotPolicy(SYMBOLS, seed=1).decide(MarketView(prices={}))

    assert isinstance(action, Idle)


def test_policy_flat_account_opens_brackets_longs_and_shorts() -> None:
    actions = _decisions(_view())

    kinds = Counter(a.kind for a in actions if not isinstance(a, Idle))  # type: ignore[attr-defined]
    assert set(kinds) == {"bracket_buy", "short_bracket", "market_buy"}


def test_policy_brackets_straddle_price_on_tick() -> None:
    brackets = [a for a in _decisions(_view(), 500) if isinstance(a, BracketEntry)]

    assert {b.side for b in brackets} == {"buy", "sell"}
    for bracket in brackets:
        price = PRICES[bracket.symbol]
        tick = _tick(price)
        sign = 1 if bracket.side == "buy" else -1
        assert sign * (bracket.take_profit - price) >= Decimal("0.01"), bracket
        assert sign * (price - bracket.stop_loss) >= Decimal("0.01"), bracket
        assert bracket.take_profit % tick == 0
        assert bracket.stop_loss % tick == 0
        assert bracket.stop_loss > 0
        assert bracket.take_profit > 0
        assert bracket.qty >= 1


def test_policy_quantity_follows_notional() -> None:
    policy = BotPolicy(("AAPL",), seed=2, min_notional=Decimal(1000), max_notional=Decimal(1000))

    action = policy.decide(MarketView(prices={"AAPL": Decimal(100)}))

    assert isinstance(action, BracketEntry | MarketOrder)
    assert action.qty == 10


def test_policy_never_shorts_a_held_symbol_nor_buys_a_short_one() -> None:
    positions = {
        "AAPL": PositionView("AAPL", Decimal(5), Decimal(0)),
        "MSFT": PositionView("MSFT", Decimal(-3), Decimal(3)),
    }

    actions = _decisions(_view(positions=positions), 500)

    for action in actions:
        if isinstance(action, BracketEntry) and action.side == "sell":
            assert action.symbol == "PENNY"
        if isinstance(action, BracketEntry | MarketOrder) and action.side == "buy":
            assert action.symbol != "MSFT"
        if isinstance(action, MarketOrder) and action.side == "sell":
            pytest.fail(f"sold shares held by orders: {action}")


def test_policy_sells_at_most_available_shares() -> None:
    positions = {"AAPL": PositionView("AAPL", Decimal(10), Decimal(4))}

    sells = [a for a in _decisions(_view(positions=positions), 500) if isinstance(a, MarketOrder) and a.side == "sell"]

    assert sells
    assert all(a.symbol == "AAPL" and 1 <= a.qty <= 4 for a in sells)


def test_policy_closes_positions_canceling_their_orders_first() -> None:
    positions = {"AAPL": PositionView("AAPL", Decimal(10), Decimal(0))}
    view = _view(positions=positions, open_order_ids={"AAPL": ("tp-1", "sl-1")})

    closes = [a for a in _decisions(view, 500) if isinstance(a, ClosePosition)]

    assert closes
    assert all(c == ClosePosition("AAPL", ("tp-1", "sl-1")) for c in closes)


def test_policy_trails_stops_toward_price_only() -> None:
    legs = [
        StopLeg("long-stop", "AAPL", "sell", Decimal("180.00")),
        StopLeg("short-stop", "MSFT", "buy", Decimal("430.00")),
        StopLeg("already-tight", "PENNY", "sell", Decimal("0.5120")),
    ]
    view = _view(stop_legs=legs)

    replaces = [a for a in _decisions(view, 600) if isinstance(a, ReplaceStop)]

    assert {r.order_id for r in replaces} == {"long-stop", "short-stop"}
    for replace in replaces:
        price = PRICES[replace.symbol]
        assert replace.stop_price % _tick(price) == 0
        if replace.order_id == "long-stop":
            assert Decimal("180.00") < replace.stop_price < price
        else:
            assert price < replace.stop_price < Decimal("430.00")


def test_policy_zero_weight_kind_never_drawn() -> None:
    weights = {"bracket_buy": 0.0, "market_buy": 0.0, "short_bracket": 1.0}
    policy = BotPolicy(SYMBOLS, seed=5, weights=weights)  # type: ignore[arg-type]

    actions = [policy.decide(_view()) for _ in range(100)]

    assert all(isinstance(a, BracketEntry) and a.side == "sell" for a in actions)


@pytest.mark.parametrize(
    ("price", "up", "expected"),
    [
        (Decimal("190.001"), True, Decimal("190.01")),
        (Decimal("190.009"), False, Decimal("190.00")),
        (Decimal("0.51234"), True, Decimal("0.5124")),
        (Decimal("0.51236"), False, Decimal("0.5123")),
    ],
)
def test_round_price_direction_and_tick(price: Decimal, up: bool, expected: Decimal) -> None:
    assert round_price(price, up=up) == expected


def test_parse_prices_tolerates_strings_numbers_and_garbage() -> None:
    state = {"prices": {"AAPL": "190.25", "MSFT": 410.5, "BAD": "x", "NEG": "-1", "NAN": "NaN"}}

    assert parse_prices(state) == {"AAPL": Decimal("190.25"), "MSFT": Decimal("410.5")}
    assert parse_prices({"accounts": {}}) == {}
    assert parse_prices([1, 2]) == {}


def test_main_bad_broker_url_is_usage_error() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--broker-url", "file:///etc/passwd", "--key", "k", "--secret", "s"])

    assert raised.value.code == 2


def _order(order_id: str, **fields: object) -> Order:
    body: dict[str, object] = {
        "id": order_id,
        "client_order_id": f"c-{order_id[:4]}",
        "created_at": "2024-03-01T15:00:00Z",
        "updated_at": "2024-03-01T15:00:00Z",
        "submitted_at": "2024-03-01T15:00:00Z",
        "symbol": "AAPL",
        "qty": "10",
        "side": "buy",
        "type": "market",
        "order_type": "market",
        "time_in_force": "gtc",
        "status": "filled",
        "extended_hours": False,
        "order_class": "bracket",
        "legs": None,
    }
    body.update(fields)
    return Order.model_validate(body)


def _position(symbol: str, qty: str, side: str, available: str | None) -> Position:
    return Position.model_validate(
        {
            "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "avg_entry_price": "180.25",
            "qty": qty,
            "qty_available": available,
            "side": side,
            "cost_basis": "1802.5",
        }
    )


def test_view_from_broker_signs_positions_and_finds_live_stop_legs() -> None:
    take_profit = _order(str(uuid4()), side="sell", type="limit", order_type="limit", status="new", limit_price="195")
    stop = _order(str(uuid4()), side="sell", type="stop", order_type="stop", status="new", stop_price="170")
    held_stop = _order(
        str(uuid4()),
        symbol="MSFT",
        side="buy",
        type="stop",
        order_type="stop",
        status="held",
        stop_price="420",
    )
    parent = _order(str(uuid4()), legs=[take_profit.model_dump(), stop.model_dump()])
    open_parent = _order(str(uuid4()), symbol="MSFT", side="sell", status="new", legs=[held_stop.model_dump()])
    positions = [_position("AAPL", "10", "long", "0"), _position("TSLA", "-3", "short", None)]

    view = view_from_broker(positions, [parent, open_parent], PRICES)

    assert view.positions == {
        "AAPL": PositionView("AAPL", Decimal(10), Decimal(0)),
        "TSLA": PositionView("TSLA", Decimal(-3), Decimal(3)),
    }
    assert view.stop_legs == [StopLeg(str(stop.id), "AAPL", "sell", Decimal(170))]
    assert view.open_order_ids == {
        "AAPL": (str(take_profit.id), str(stop.id)),
        "MSFT": (str(open_parent.id),),
    }
    assert view.prices == PRICES


def _step_with_moving_prices(fake_broker: FakeBroker, bot: TradingBot, steps: int) -> None:
    # Between steps every price moves a little (seeded, drifting up) so brackets fill and
    # stops have room to trail.
    mover = random.Random(1)
    for _ in range(steps):
        bot.step()
        prices = fetch_broker_prices(fake_broker.base_url)
        fake_broker.set_prices(
            {
                symbol: str(round_price(price * Decimal(1 + mover.uniform(-0.006, 0.008)), up=False))
                for symbol, price in prices.items()
            }
        )


def test_bot_steps_against_fake_broker_place_every_kind_of_order(fake_broker: FakeBroker) -> None:
    fake_broker.configure(rest_limit_per_min=0)  # 60 steps without pacing: faster than a key may go
    fake_broker.set_prices({"AAPL": "190.00", "MSFT": "410.50", "PENNY": "0.5123"})
    client = fake_broker.trading_client()
    bot = TradingBot(client, BotPolicy(SYMBOLS, seed=1), lambda: fetch_broker_prices(fake_broker.base_url))

    _step_with_moving_prices(fake_broker, bot, 60)

    response = fake_broker.request("GET", "/v2/orders", params={"status": "all", "limit": "500", "nested": "true"})
    orders = [leg for order in response.json() for leg in [order, *(order.get("legs") or [])]]
    bot_orders = [o for o in orders if o["client_order_id"].startswith("bot-")]
    order_classes = {o["order_class"] for o in bot_orders}
    assert response.status_code == 200
    assert bot.stats.failures == 0
    assert set(bot.stats.actions) == set(DEFAULT_WEIGHTS)
    assert {"bracket", "simple"} <= order_classes
    assert any(o["order_class"] == "bracket" and o["side"] == "sell" for o in bot_orders)  # a short
    assert any(o["replaces"] and o["type"] == "stop" for o in orders)  # a trailed stop leg


def test_bot_broker_error_is_one_warning_and_next_step_works(
    fake_broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    fake_broker.set_prices({"AAPL": "190.00"})
    bot = TradingBot(
        fake_broker.trading_client(), BotPolicy(("AAPL",), seed=2), lambda: fetch_broker_prices(fake_broker.base_url)
    )
    fake_broker.fail("html500", "500")

    with caplog.at_level(logging.WARNING, logger="coldharbour.sim.bot"):
        failed = [bot.step(), bot.step()]
    recovered = bot.step()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert failed == [None, None]
    assert isinstance(recovered, BracketEntry | MarketOrder)
    assert bot.stats.failures == 2
    assert len(warnings) == 2
    assert all("\n" not in r.getMessage() for r in warnings)


def test_bot_without_broker_prices_idles(fake_broker: FakeBroker) -> None:
    bot = TradingBot(fake_broker.trading_client(), BotPolicy(SYMBOLS, seed=3), lambda: {})

    action = bot.step()

    assert isinstance(action, Idle)
    assert bot.stats.actions == {}


def test_bot_process_trades_and_exits_0_on_sigterm(fake_broker: FakeBroker) -> None:
    fake_broker.set_prices({"AAPL": "190.00", "MSFT": "410.50"})
    key, secret = fake_broker.keys()
    command = [sys.executable, "-m", "coldharbour.sim.bot", "--broker-url", fake_broker.base_url]
    command += ["--key", key, "--secret", secret, "--pace-s", "0.05", "--symbols", "AAPL,MSFT", "--seed", "4"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    client = fake_broker.trading_client()
    every_order = GetOrdersRequest(status=QueryOrderStatus.ALL)
    try:
        wait_for(lambda: len(client.get_orders(every_order)) >= 3, 20, what="3 bot orders")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)

    assert process.returncode == 0, stderr
    assert "bot stopped" in stderr
    assert secret not in stderr

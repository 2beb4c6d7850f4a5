"""Every payload of the real-shaped corpus (``tests/broker/corpus.py``, sources named there)
converts to the expected domain values, or is rejected with a named reason."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from alpaca.trading.models import Order as SdkOrder
from alpaca.trading.models import Position as SdkPosition
from alpaca.trading.models import TradeAccount

from coldharbour.broker.convert import (
    AccountFigures,
    ConvertedActivity,
    Rejected,
    canonical_symbol,
    convert_account,
    convert_activity,
    convert_orders,
    convert_position,
    convert_trade_update,
)
from coldharbour.domain.cashflows import CashFlow, Category, to_cash_flow
from coldharbour.messages import OrderUpdated
from tests.broker import corpus as c


@pytest.mark.parametrize("name", sorted(c.ORDERS))
def test_every_order_converts_and_parses_with_alpaca_py(name: str) -> None:
    payload = c.ORDERS[name]

    converted, rejects = convert_orders([payload])

    assert rejects == []
    top = converted[0].order
    assert top.id == payload["id"]
    assert top.symbol == payload["symbol"]
    assert top.submitted_at is not None
    assert top.submitted_at < top.created_at
    assert len(converted) == 1 + len(payload["legs"] or [])
    assert all(item.order.parent_id == top.id for item in converted[1:])
    assert SdkOrder(**payload).id is not None  # the shape is one alpaca-py accepts


def test_order_details_notional_crypto_commission_and_trailing() -> None:
    (notional,), _ = convert_orders([c.ORDERS["notional"]])
    (crypto,), _ = convert_orders([c.ORDERS["crypto"]])
    (trailing,), _ = convert_orders([c.ORDERS["trailing_stop"]])

    assert (notional.order.qty, notional.order.filled_qty) == (None, Decimal("5.547850208"))
    assert (crypto.order.symbol, crypto.order.commission) == ("BTC/USD", Decimal("1.85"))
    assert crypto.order.filled_qty == Decimal("0.123456789")
    assert (trailing.order.order_type, trailing.order.stop_price) == ("trailing_stop", Decimal("179.4975"))


@pytest.mark.parametrize(
    ("name", "symbol", "qty"),
    [
        ("long", "AAPL", Decimal(10)),
        ("short", "MSFT", Decimal(-2)),
        ("fractional", "AAPL", Decimal("5.547850208")),
        ("crypto", "BTC/USD", Decimal("0.123456789")),
    ],
)
def test_every_position_converts_with_one_canonical_symbol(name: str, symbol: str, qty: Decimal) -> None:
    payload = c.POSITIONS[name]

    position = convert_position(payload)

    assert not isinstance(position, Rejected)
    assert (position.symbol, position.qty) == (symbol, qty)
    assert SdkPosition(**payload).symbol == payload["symbol"]


@pytest.mark.parametrize(
    ("symbol", "asset_class", "expected"),
    [
        ("BTCUSD", "crypto", "BTC/USD"),
        ("ETHUSDT", "crypto", "ETH/USDT"),
        ("ETHBTC", "crypto", "ETH/BTC"),
        ("BTC/USD", "crypto", "BTC/USD"),
        ("AAPLUSD", "us_equity", "AAPLUSD"),
        ("usd", "crypto", "USD"),
    ],
)
def test_canonical_symbol(symbol: str, asset_class: str, expected: str) -> None:
    assert canonical_symbol(symbol, asset_class) == expected


def test_account_converts() -> None:
    assert convert_account(c.ACCOUNT) == AccountFigures(
        Decimal("98197.5"), Decimal("100047.6"), buying_power=Decimal("199000.5"), last_equity=Decimal("100000")
    )
    assert TradeAccount(**c.ACCOUNT).status == "ACTIVE"


@pytest.mark.parametrize("code", sorted(c.NTA_CODES))
def test_every_activity_code_converts_to_its_category_and_amount(code: str) -> None:
    category, amount = c.NTA_CODES[code]
    payload = c.ACTIVITIES[code]

    record = convert_activity(payload)
    flow = to_cash_flow(payload)

    assert isinstance(record, ConvertedActivity)
    assert record.fill is None
    assert isinstance(flow, CashFlow)
    assert (flow.category, flow.amount) == (Category(category), Decimal(amount))


def test_split_pair_and_coin_fee() -> None:
    out, into = (convert_activity(a) for a in c.SPLIT_PAIR)
    fee = to_cash_flow(c.CFEE_IN_COIN)

    assert isinstance(out, ConvertedActivity)
    assert isinstance(into, ConvertedActivity)
    assert (out.record.qty, out.record.price, into.record.qty, into.record.price) == (
        Decimal(-10), Decimal(100), Decimal(20), Decimal(50)
    )
    assert isinstance(fee, CashFlow)
    assert fee.amount == Decimal("-1.500000")


def test_fill_activity_converts_to_its_execution() -> None:
    result = convert_activity(c.FILL)

    assert isinstance(result, ConvertedActivity)
    assert result.fill is not None
    assert (result.fill.order_id, result.fill.qty, result.fill.price) == (c.P, Decimal(10), Decimal("180.25"))


FILL_EVENTS = {"fill", "partial_fill"}


@pytest.mark.parametrize("event", sorted(c.TRADE_UPDATES))
def test_every_trade_update_event_converts(event: str) -> None:
    frame = c.TRADE_UPDATES[event]

    result = convert_trade_update(frame, "demo")

    assert isinstance(result, OrderUpdated)
    assert result.event == event
    assert result.order.status == frame["data"]["order"]["status"]
    assert (result.fill is not None) == (event in FILL_EVENTS)


def test_stream_fill_without_execution_id_and_rest_fill_are_one_execution() -> None:
    stream = convert_trade_update(c.FILL_WITHOUT_EXECUTION_ID, "demo")
    with_id = convert_trade_update(c.TRADE_UPDATES["fill"], "demo")
    rest = convert_activity(c.FILL)

    assert isinstance(stream, OrderUpdated)
    assert stream.fill is not None
    assert isinstance(with_id, OrderUpdated)
    assert with_id.fill is not None
    assert isinstance(rest, ConvertedActivity)
    assert rest.fill is not None
    assert stream.fill.execution_id is None
    assert stream.fill.key == with_id.fill.key == rest.fill.key == f"{c.P}:10"


BAD: list[tuple[str, Any, str]] = [
    ("order", {**c.ORDERS["oco"], "created_at": "2024-03-01T15:00:00", "submitted_at": None}, "offset"),
    ("order", {**c.ORDERS["oco"], "side": "hold"}, "side"),
    ("position", {**c.POSITIONS["crypto"], "qty": "NaN"}, "qty"),
    ("activity", {**c.FILL, "order_id": None}, "order_id"),
    ("activity", {**c.FILL, "transaction_time": None, "date": None}, "missing"),
    ("update", {"stream": "trade_updates", "data": {"event": "fill", "order": {"id": c.P}}}, "symbol"),
]


@pytest.mark.parametrize(("kind", "payload", "reason"), BAD)
def test_bad_payloads_are_rejected_with_a_named_reason(kind: str, payload: Any, reason: str) -> None:
    if kind == "order":
        _, rejects = convert_orders([payload])
        result: object = rejects[0]
    elif kind == "position":
        result = convert_position(payload)
    elif kind == "activity":
        result = convert_activity(payload)
    else:
        result = convert_trade_update(payload, "demo")

    assert isinstance(result, Rejected)
    assert reason in result.detail

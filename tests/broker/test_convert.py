"""Converters on recorded Alpaca payloads (docs/broker.md §3–4 samples) and a bad-input corpus."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from coldharbour.broker import validate
from coldharbour.broker.convert import (
    AccountFigures,
    BadValue,
    ConvertedActivity,
    Rejected,
    _number,
    _uuid,
    convert_account,
    convert_activity,
    convert_orders,
    convert_position,
    convert_trade_update,
    execution_id_of,
    parse_time_ns,
    position_symbol,
)
from coldharbour.domain.types import BrokerPosition
from coldharbour.messages import OrderUpdated, decode, encode

PARENT_ID = "6aa91d53-7fe6-4d24-9b5f-e5b78b643dd2"
TP_ID = "0b8e2f38-8a44-4c55-9a8a-6c1f4a7b1e01"
SL_ID = "0b8e2f38-8a44-4c55-9a8a-6c1f4a7b1e02"


def leg(order_id: str, order_type: str, status: str, **prices: str | None) -> dict[str, Any]:
    return {
        "id": order_id, "client_order_id": f"c-{order_id[-2:]}", "order_class": "bracket", "type": order_type,
        "order_type": order_type, "side": "sell", "qty": "10", "filled_qty": "0", "status": status,
        "time_in_force": "gtc", "extended_hours": False, "created_at": "2024-03-01T15:00:00.100000Z",
        "updated_at": "2024-03-01T15:00:00.300000Z", "submitted_at": "2024-03-01T15:00:00.150000Z",
        "expires_at": "2024-05-30T20:00:00Z", "symbol": "AAPL", "asset_class": "us_equity", "legs": None,
        "limit_price": prices.get("limit_price"), "stop_price": prices.get("stop_price"),
    }  # fmt: skip


BRACKET: dict[str, Any] = {
    "id": PARENT_ID, "client_order_id": "c-1", "order_class": "bracket",
    "created_at": "2024-03-01T15:00:00.100000Z", "updated_at": "2024-03-01T15:00:00.300000Z",
    "submitted_at": "2024-03-01T15:00:00.150000Z", "filled_at": "2024-03-01T15:00:00.300000Z",
    "expired_at": None, "expires_at": "2024-05-30T20:00:00Z", "canceled_at": None, "replaced_by": None,
    "replaces": None, "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": "AAPL",
    "asset_class": "us_equity", "notional": None, "qty": "10", "filled_qty": "10", "filled_avg_price": "180.25",
    "type": "market", "order_type": "market", "side": "buy", "position_intent": "buy_to_open",
    "time_in_force": "gtc", "limit_price": None, "stop_price": None, "status": "filled", "extended_hours": False,
    "legs": [leg(TP_ID, "limit", "new", limit_price="195"), leg(SL_ID, "stop", "held", stop_price="170")],
}  # fmt: skip

FILL_FRAME: dict[str, Any] = {
    "stream": "trade_updates",
    "data": {
        "event": "fill", "execution_id": "2f63ea93-423d-4169-b3f6-3fdafc10c418",
        "timestamp": "2024-03-01T15:00:00.300123456Z", "price": "180.25", "qty": "10", "position_qty": "10",
        "order": BRACKET,
    },
}  # fmt: skip

POSITION = {
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": "AAPL", "exchange": "NASDAQ",
    "asset_class": "us_equity", "qty": "10", "side": "long", "avg_entry_price": "180.25", "cost_basis": "1802.5",
    "market_value": "1850.1", "current_price": "185.01",
}  # fmt: skip

FILL_ACTIVITY = {
    "id": "20240301100000000::7f0c4a8e-1d6e-4b7a-9b65-5c7d2f6a1e01", "activity_type": "FILL", "type": "fill",
    "transaction_time": "2024-03-01T15:00:00.300Z", "symbol": "AAPL", "side": "buy", "qty": "10", "price": "180.25",
    "cum_qty": "10", "leaves_qty": "0", "order_id": PARENT_ID, "order_status": "filled",
}  # fmt: skip


def test_convert_orders_nested_bracket_flattens_legs_with_parent_links() -> None:
    converted, rejects = convert_orders([BRACKET])

    parent, take_profit, stop = (item.order for item in converted)
    assert rejects == []
    assert parent.legs == (TP_ID, SL_ID)
    assert parent.filled_avg_price == Decimal("180.25")
    assert parent.parent_id is None
    assert (take_profit.parent_id, take_profit.order_type, take_profit.limit_price) == (
        PARENT_ID,
        "limit",
        Decimal(195),
    )
    assert (stop.parent_id, stop.status, stop.stop_price) == (PARENT_ID, "held", Decimal(170))
    assert parent.created_at == parse_time_ns("2024-03-01T15:00:00.100000Z", field="t")
    assert '"legs"' in converted[0].json


def test_convert_orders_unknown_enums_kept_as_text() -> None:
    order = {**leg(TP_ID, "limit", "brand_new_status"), "order_class": "future_class", "type": "pegged"}

    converted, rejects = convert_orders([order])

    assert rejects == []
    assert (converted[0].order.status, converted[0].order.order_class, converted[0].order.order_type) == (
        "brand_new_status", "future_class", "pegged",
    )  # fmt: skip


def test_convert_trade_update_fill_round_trips_the_bus() -> None:
    update = convert_trade_update(FILL_FRAME, "demo")

    assert isinstance(update, OrderUpdated)
    assert update.fill is not None
    assert (update.fill.qty, update.fill.price, update.fill.cum_qty) == (Decimal(10), Decimal("180.25"), Decimal(10))
    assert update.fill.execution_id == "2f63ea93-423d-4169-b3f6-3fdafc10c418"
    assert [leg.id for leg in update.legs] == [TP_ID, SL_ID]
    assert decode(encode(update)) == update


def test_convert_trade_update_unknown_event_with_execution_keeps_the_fill() -> None:
    frame = copy.deepcopy(FILL_FRAME)
    frame["data"]["event"] = "fill_v2"

    update = convert_trade_update(frame, "demo")

    assert isinstance(update, OrderUpdated)
    assert update.event == "fill_v2"
    assert update.fill is not None


def test_convert_trade_update_accepted_without_execution_has_no_fill() -> None:
    frame = {
        "stream": "trade_updates",
        "data": {"event": "accepted", "timestamp": "2024-03-01T15:00:00Z", "order": leg(TP_ID, "limit", "accepted")},
    }

    update = convert_trade_update(frame, "demo")

    assert isinstance(update, OrderUpdated)
    assert update.fill is None


@pytest.mark.parametrize(
    "frame", [{"stream": "listening", "data": {"streams": ["trade_updates"]}}, {"stream": "authorization", "data": {}}]
)
def test_convert_trade_update_other_streams_ignored(frame: dict[str, Any]) -> None:
    assert convert_trade_update(frame, "demo") is None


def _with(data: dict[str, Any], **changes: object) -> dict[str, Any]:
    frame = copy.deepcopy(FILL_FRAME)
    frame["data"].update(data)
    frame["data"]["order"].update(changes)
    return frame


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ([1, 2], "frame_shape"),
        ({"stream": "trade_updates", "data": "nope"}, "update_value"),
        ({"stream": "trade_updates", "data": {"event": "fill"}}, "update_value"),
        (_with({}, id=None), "update_order"),
        (_with({}, symbol=""), "update_order"),
        (_with({}, side="hold"), "update_order"),
        (_with({}, qty="NaN"), "update_order"),
        (_with({}, created_at="2024-03-01T15:00:00", submitted_at=None), "update_order"),
        (_with({"price": "-1"}), "update_value"),
        (_with({"price": "Infinity"}), "update_value"),
        (_with({"qty": "abc"}), "update_value"),
        (_with({"timestamp": "yesterday"}), "update_value"),
    ],
)
def test_convert_trade_update_bad_input_rejected_with_reason(frame: object, reason: str) -> None:
    result = convert_trade_update(frame, "demo")

    assert isinstance(result, Rejected)
    assert result.reason == reason


def test_convert_orders_bad_leg_rejected_parent_kept() -> None:
    bracket = copy.deepcopy(BRACKET)
    bracket["legs"][1]["stop_price"] = "not-a-number"

    converted, rejects = convert_orders([bracket, "garbage"])

    assert [item.order.id for item in converted] == [PARENT_ID, TP_ID]
    assert [r.reason for r in rejects] == ["order_value", "order_shape"]


def test_convert_position_long_and_short() -> None:
    short = {**POSITION, "side": "short", "qty": "-5"}
    short_positive = {**POSITION, "side": "short", "qty": "5"}

    assert convert_position(POSITION) == BrokerPosition(
        symbol="AAPL", qty=Decimal(10), avg_entry_price=Decimal("180.25"), current_price=Decimal("185.01")
    )
    assert convert_position(short).qty == Decimal(-5)  # type: ignore[union-attr]
    assert convert_position(short_positive).qty == Decimal(-5)  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [{**POSITION, "qty": None}, {**POSITION, "avg_entry_price": "x"}, {"qty": "1"}, 7])
def test_convert_position_bad_input_rejected(bad: object) -> None:
    assert isinstance(convert_position(bad), Rejected)


def test_a_positions_display_price_is_rounded_and_its_booked_fields_are_refused_with_the_symbol() -> None:
    """After a 3-for-1 split Alpaca can send a ``current_price`` of 26 decimals: only shown, so rounded."""
    split = {**POSITION, "current_price": "61.66666666666666666666666667"}
    unusable_mark = {**POSITION, "current_price": "NaN"}
    booked = {**POSITION, "avg_entry_price": "60.08333333333333333333333333"}  # a cost: never rounded

    assert convert_position(split) == BrokerPosition(
        symbol="AAPL", qty=Decimal(10), avg_entry_price=Decimal("180.25"),
        current_price=Decimal("61.66666666666666666667"),
    )  # fmt: skip
    assert convert_position(unusable_mark).current_price is None  # type: ignore[union-attr]
    assert isinstance(convert_position(booked), Rejected)
    assert position_symbol(booked) == "AAPL"
    assert position_symbol({**POSITION, "symbol": "BTCUSD", "asset_class": "crypto"}) == "BTC/USD"
    assert position_symbol({"qty": "1"}) is None
    assert position_symbol(7) is None


def test_convert_account_cash_and_equity() -> None:
    assert convert_account({"cash": "98197.5", "equity": "100047.6", "status": "ACTIVE"}) == AccountFigures(
        Decimal("98197.5"), Decimal("100047.6")
    )
    assert isinstance(convert_account({"cash": "NaN"}), Rejected)


def test_convert_account_buying_power_and_last_equity_are_only_shown() -> None:
    # Field names and string numbers as Alpaca's GET /v2/account (alpaca-py TradeAccount).
    full = {"cash": "98197.5", "equity": "100047.6", "buying_power": "196395", "last_equity": "99990.12"}

    assert convert_account(full) == AccountFigures(
        Decimal("98197.5"), Decimal("100047.6"), Decimal("196395"), Decimal("99990.12")
    )
    # A figure only shown that cannot be read is None; it never rejects cash and equity.
    assert convert_account({**full, "buying_power": "NaN", "last_equity": None}) == AccountFigures(
        Decimal("98197.5"), Decimal("100047.6"), None, None
    )


def test_convert_activity_fill_yields_execution_keyed_by_order_and_cum_qty() -> None:
    result = convert_activity(FILL_ACTIVITY)

    assert isinstance(result, ConvertedActivity)
    assert result.fill is not None
    assert result.fill.execution_id == result.record.execution_id == "7f0c4a8e-1d6e-4b7a-9b65-5c7d2f6a1e01"
    # docs/spec.md §8 fill identity: (order id, cumulative qty) is shared by the stream and REST forms.
    assert result.fill.key == f"{PARENT_ID}:10"
    assert (result.fill.order_id, result.fill.cum_qty) == (PARENT_ID, Decimal(10))
    assert result.record.activity_type == "FILL"


def test_convert_activity_non_trade_dated_at_new_york_midnight() -> None:
    div = {"id": "20240215000000000::2b1f2c4d-6e7f-4a8b-9c0d-1e2f3a4b5c6d", "activity_type": "DIV",
           "date": "2024-02-15", "net_amount": "2.4", "symbol": "AAPL", "description": "Cash DIV"}  # fmt: skip

    result = convert_activity(div)

    assert isinstance(result, ConvertedActivity)
    assert result.fill is None
    assert result.record.net_amount == Decimal("2.4")
    assert result.record.execution_id is None
    assert result.record.transaction_time == parse_time_ns("2024-02-15T05:00:00Z", field="t")


@pytest.mark.parametrize(
    "bad",
    [
        {**FILL_ACTIVITY, "price": "0"},
        {**FILL_ACTIVITY, "side": "?"},
        {**FILL_ACTIVITY, "order_id": None},
        {**FILL_ACTIVITY, "transaction_time": None},
        {"activity_type": "FILL"},
        None,
    ],
)
def test_convert_activity_bad_input_rejected(bad: object) -> None:
    assert isinstance(convert_activity(bad), Rejected)


def test_execution_id_of_foreign_ids_is_none() -> None:
    assert execution_id_of("20240301::not-a-uuid") is None
    assert execution_id_of("plain") is None


# --- the text/depth check: one C-speed look at the JSON text, the walk only when it flags ---------

POISONS = ("\x00", "\ud800", "\\u0000", "{[{[")


def _poisoned(value: Any) -> list[Any]:
    """Copies of ``value`` with one string (a key or a value) spiked with each of ``POISONS``."""
    out: list[Any] = []
    if isinstance(value, str):
        return [value + poison for poison in POISONS]
    if isinstance(value, dict):
        for key, item in value.items():
            out += [{**value, key: variant} for variant in _poisoned(item)]
            out += [{(k + p if k == key else k): v for k, v in value.items()} for p in POISONS]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += [[*value[:i], variant, *value[i + 1 :]] for variant in _poisoned(item)]
    return out


def _deep(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


def _deep_frames() -> list[dict[str, Any]]:
    """Extra fields nested around the depth limit, in the envelope, the order and a leg."""
    frames = []
    for depth in (28, 29, 30, 31, 32, 33):
        frame = copy.deepcopy(FILL_FRAME)
        frame["data"]["note"] = _deep(depth)
        frames.append(frame)
        frame = copy.deepcopy(FILL_FRAME)
        frame["data"]["order"]["note"] = _deep(depth)
        frames.append(frame)
        frame = copy.deepcopy(FILL_FRAME)
        frame["data"]["order"]["legs"][0]["note"] = _deep(depth)
        frames.append(frame)
    return frames


POISONED_FRAMES = [*_poisoned(FILL_FRAME), *_deep_frames()]


def test_the_poisoned_frames_cover_every_rejection_of_the_walk() -> None:
    reasons = {getattr(convert_trade_update(frame, "demo"), "reason", "ok") for frame in POISONED_FRAMES}

    assert len(POISONED_FRAMES) > 500
    assert {"update_order", "update_value_text", "ok"} <= reasons


def test_the_encoded_check_gives_what_the_walk_alone_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same result, reason and message for every poisoned frame, order and activity, whether
    the JSON text proved it clean or the walk (``validate.tree``) decided."""
    activities = [*_poisoned(FILL_ACTIVITY), {**FILL_ACTIVITY, "note": _deep(33)}]
    orders = _poisoned(BRACKET)

    def convert_all() -> list[object]:
        return [
            *(convert_trade_update(frame, "demo") for frame in POISONED_FRAMES),
            *(convert_activity(activity) for activity in activities),
            *(convert_orders([order]) for order in orders),
        ]

    fast = convert_all()
    monkeypatch.setattr(validate, "encoded_passes_tree", lambda encoded: False)
    walked = convert_all()

    assert fast == walked


def test_a_nul_in_the_order_rejects_the_update_and_names_the_field() -> None:
    frame = copy.deepcopy(FILL_FRAME)
    frame["data"]["order"]["legs"][1]["client_order_id"] = "c\x00"

    result = convert_trade_update(frame, "demo")

    assert result == Rejected("update_order", f"event='fill' {PARENT_ID}: client_order_id: contains a NUL character")


def test_a_lone_surrogate_outside_the_order_rejects_the_frame() -> None:
    frame = copy.deepcopy(FILL_FRAME)
    frame["data"]["venue"] = "x\ud800"

    assert convert_trade_update(frame, "demo") == Rejected(
        "update_value_text", "venue: not valid UTF-8 (lone surrogate at 1)"
    )


def test_a_lone_surrogate_in_a_key_is_a_rejection_not_an_error() -> None:
    """Bug: msgspec matches keys to fields as UTF-8, so ``{"event\ud800": ...}`` raised
    ``UnicodeEncodeError`` out of the converter (a handler error, not a counted rejection)."""
    frame = copy.deepcopy(FILL_FRAME)
    frame["data"]["venue\ud800"] = "x"
    order = {**BRACKET, "venue\ud800": "x"}

    assert convert_trade_update(frame, "demo") == Rejected(
        "update_value_text", "shape: a key is not valid UTF-8 (lone surrogate at 5)"
    )
    assert convert_orders([order])[1][0].reason == "order_shape"
    assert getattr(convert_activity({**FILL_ACTIVITY, "venue\ud800": "x"}), "reason", None) == "activity_text"


def _outcome_of(convert: Any, text: str, field: str, **kwargs: Any) -> object:
    try:
        return convert(text, field=field, **kwargs)
    except BadValue as e:
        return (e.reason, str(e))


TEXTS = [
    "2024-03-01T15:00:00.300123456Z", "2024-03-01T10:00:00-05:00", "2024-03-01T15:00:00", "yesterday", "",
    "9999-12-31T23:59:59Z", "180.25", "NaN", "1e999", "-0", "  ", "6AA91D53-7FE6-4D24-9B5F-E5B78B643DD2",
    "{6aa91d53-7fe6-4d24-9b5f-e5b78b643dd2}", "not-a-uuid", "x" * 100,
]  # fmt: skip


@pytest.mark.parametrize("convert", [parse_time_ns, _number, _uuid], ids=["time", "number", "uuid"])
def test_remembered_texts_give_the_same_answer_and_name_the_field_asking(convert: Any) -> None:
    """Parsed texts are remembered (LRU); a refusal is worked out again so its message names the
    field that asked, and a remembered time is still checked against each caller's clock."""
    first = [_outcome_of(convert, text, "first") for text in TEXTS]
    again = [_outcome_of(convert, text, "second") for text in TEXTS]

    assert [str(o).replace("first", "second") for o in first] == [str(o) for o in again]
    assert any(isinstance(o, tuple) for o in again)  # some texts are refused, by name


def test_a_remembered_time_is_checked_against_the_clock_of_each_call() -> None:
    text = "2024-03-01T15:00:00Z"
    ns = parse_time_ns(text, field="t")
    later = parse_time_ns(text, field="t", now_ns=ns)

    with pytest.raises(BadValue, match=r"^t: 86401 s in the future$") as refused:
        parse_time_ns(text, field="t", now_ns=ns - validate.BROKER_FUTURE_NS - validate.NS_PER_SECOND)
    assert later == ns
    assert refused.value.reason == "future"

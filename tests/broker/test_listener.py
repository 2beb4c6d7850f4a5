"""The stream listener's unknown-order check, against the fake broker's real REST routes."""

from __future__ import annotations

import copy
import json
import uuid
from collections import Counter

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldharbour.broker.listener import UpdateListener, decode_frame
from coldharbour.broker.rest import BrokerRest
from coldharbour.messages import OrderUpdated
from tests.broker.support import RecordingSink, account_for
from tests.fixtures.broker import FakeBroker
from tests.support import async_wait_for


def _fill_envelope(order: dict[str, object]) -> dict[str, object]:
    return {
        "stream": "trade_updates",
        "data": {
            "event": "fill", "execution_id": str(uuid.uuid4()), "price": order["filled_avg_price"],
            "qty": order["filled_qty"], "position_qty": order["filled_qty"], "timestamp": order["filled_at"],
            "order": order,
        },
    }  # fmt: skip


@pytest.mark.asyncio
async def test_issue_9_fill_for_an_order_the_broker_does_not_know_is_rejected(fake_broker: FakeBroker) -> None:
    """Bug: a stream fill for an order unknown to the broker was booked as a real trade.

    A fill for an order the listener never heard of is now checked against REST first.
    """
    fake_broker.set_prices({"AAPL": 100})
    known = fake_broker.request(
        "POST",
        "/v2/orders",
        json={"symbol": "AAPL", "qty": "3", "side": "buy", "type": "market", "time_in_force": "day"},
    ).json()
    known = fake_broker.request("GET", f"/v2/orders/{known['id']}").json()
    stranger = copy.deepcopy(known)
    stranger["id"] = str(uuid.uuid4())
    sink, counters = RecordingSink(), Counter[str]()
    async with aiohttp.ClientSession() as session:
        rest = BrokerRest(account_for(fake_broker), session, counters)
        listener = UpdateListener("demo", sink, counters, check_order=rest.order_exists)

        listener.handle(_fill_envelope(stranger))
        listener.handle(_fill_envelope(known))
        await async_wait_for(lambda: counters["trade_updates"] + counters["rejects"] >= 2, 10, what="both checked")
        listener.handle(_fill_envelope(known))  # now known: published at once, no REST call
        published_at_once = len(sink.of(OrderUpdated)) == 2

    assert [u.order.id for u in sink.of(OrderUpdated)] == [known["id"], known["id"]]
    assert counters["rejects_stream_unknown_order"] == 1
    assert published_at_once


# --- decode_frame: msgspec first, json.loads for what msgspec refuses ----------------------------

JSON_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_TEXT, inner, max_size=4),
    max_leaves=30,
)


def _loads_or_error(raw: str | bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return ValueError


def _decode_or_error(raw: str | bytes) -> object:
    try:
        return decode_frame(raw)
    except ValueError:
        return ValueError


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, ensure_ascii=st.booleans(), as_bytes=st.booleans(), indent=st.none() | st.just(1))
def test_decode_frame_reads_what_json_loads_reads(
    value: object, ensure_ascii: bool, as_bytes: bool, indent: int | None
) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    raw = text.encode() if as_bytes else text

    assert decode_frame(raw) == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        '{"price": NaN, "qty": Infinity}',  # Python's json extension: msgspec refuses, json.loads reads
        "[1E400]",
        '["\\ud800", {"\\udfff": 1}]',  # lone surrogate escapes: the converter rejects them
        '{"a": 1, "a": 2}',
        "[1]x",
        "<html>",
        "",
        b"\xff\xfe[\x001\x00]\x00",  # UTF-16 with a BOM: json.loads detects it
        '"\t"',
    ],
)
def test_decode_frame_agrees_with_json_loads_on_odd_frames(raw: str | bytes) -> None:
    expected = _loads_or_error(raw)
    got = _decode_or_error(raw)

    assert repr(got) == repr(expected)  # repr: NaN is not equal to itself


def test_decode_frame_nested_beyond_the_interpreter_is_not_json() -> None:
    """json.loads raises RecursionError there, which no stream client caught."""
    with pytest.raises(ValueError, match="nested too deeply"):
        decode_frame("[" * 100_000 + "]" * 100_000)

"""The stream listener's unknown-order check, against the fake broker's real REST routes."""

from __future__ import annotations

import copy
import uuid
from collections import Counter

import aiohttp
import pytest

from coldharbour.broker.listener import UpdateListener
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

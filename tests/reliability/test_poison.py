"""Poison corpus: values our decoders used to accept but the store or the bus refuse.

Every case is put in a page *between two good neighbours* and run through the real decoders
(``broker.convert``, ``broker.feed``, ``analytics.cashflows.screen``): the bad one is rejected
with a reason (the heartbeat counter suffix), the neighbours are kept. Then what the decoders
*kept* goes through the real bus encoder and a running ``state`` into the suite's PostgreSQL:
everything is stored, no commit fails. And each raw poison value is shown to be refused by
PostgreSQL or the bus encoder itself, so the decoders reject exactly what would have poisoned
a commit.

Payload shapes follow Alpaca's documentation: the order object
(https://docs.alpaca.markets/reference/getallorders), the ``trade_updates`` frame
(https://docs.alpaca.markets/docs/websocket-streaming), account activities
(https://docs.alpaca.markets/reference/getaccountactivities) and positions
(https://docs.alpaca.markets/reference/getallopenpositions); the good bases are the ones of
``test_corpus_broker.py``. Feed frames follow docs/spec.md §4.
"""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from typing import Any

import msgspec
import psycopg
import pytest

from coldharbour.analytics.cashflows import screen
from coldharbour.broker.convert import (
    Rejected,
    convert_activity,
    convert_orders,
    convert_position,
    convert_trade_update,
)
from coldharbour.broker.feed import Skip, TradeFilter, decode_frames
from coldharbour.config import Dsn
from coldharbour.messages import TOPIC_TICKS, FillsPage, OrdersPage, TickBatch, encode, topic_fills, topic_orders
from tests.fixtures.bus import InprocBus
from tests.reliability.test_corpus_broker import ACTIVITY, ORDER, POSITION, TS, UPDATE
from tests.workers.state_harness import StateHarness

NOW_NS = TS + 3600 * 10**9  # the callers' clock: an hour after the good records
EXCLUDE = frozenset({"D", "M", "E"})
UPPER_BRACED = "{" + "7F0C4A8E-1D6E-4B7A-9B65-5C7D2F6A1E02" + "}"
LONG_SYMBOL = "A" * 5000

# (field, poison value, expected reason)
ORDER_POISON: list[tuple[str, object, str]] = [
    ("client_order_id", "c-\x00-1", "order_value_text"),
    ("client_order_id", "c-\ud800", "order_value_text"),
    ("client_order_id", "c" * 200, "order_value_text"),
    ("symbol", "AA\x00PL", "order_value_text"),
    ("symbol", LONG_SYMBOL, "order_value_text"),
    ("status", "fil\x00led", "order_value_text"),
    ("time_in_force", "g\x00tc", "order_value_text"),  # a field we ignore still goes to raw_json
    ("qty", "1E-20000", "order_value"),
    ("qty", "1e999", "order_value"),
    ("qty", 1e308, "order_value"),
    ("filled_avg_price", "185.0123456789012345678901234", "order_value"),
    ("limit_price", "-1E+400", "order_value"),
    ("created_at", "9999-12-31T00:00:00Z", "order_value_time"),
    ("created_at", "1600-01-01T00:00:00Z", "order_value_time"),
    ("created_at", "2200-01-01T00:00:00Z", "order_value_future"),
    ("filled_at", "2554-07-21T23:34:33Z", "order_value_time"),
    ("updated_at", "2024-03-03T15:00:00Z", "order_value_future"),
    ("expires_at", "9999-12-31T00:00:00Z", "order_value_time"),
    ("id", "not-a-uuid", "order_value_id"),
    ("replaces", "also-not-a-uuid", "order_value_id"),
]
ACTIVITY_POISON: list[tuple[str, object, str]] = [
    ("symbol", "AA\x00PL", "activity_text"),
    ("description", "Cash\x00DIV", "activity_text"),
    ("id", "20240301100000123::\x00", "activity_text"),
    ("transaction_time", "2554-07-21T23:34:33Z", "activity_time"),
    ("transaction_time", "2024-03-05T15:00:00Z", "activity_future"),
    ("order_id", "ORDER-1", "activity_id"),
    ("qty", "1E-20000", "activity"),
    ("price", "1e999", "activity"),
]
POSITION_POISON: list[tuple[str, object, str]] = [
    ("symbol", "AA\x00PL", "position_text"),
    ("symbol", LONG_SYMBOL, "position_text"),
    ("qty", "1E-20000", "position"),
]
UPDATE_POISON: list[tuple[str, object, str]] = [
    ("timestamp", "2200-01-01T00:00:00Z", "update_value_future"),
    ("timestamp", "9999-12-31T00:00:00Z", "update_value_time"),
    ("execution_id", "exec-1", "update_value_id"),
    ("price", "1E-20000", "update_value"),
    ("venue", "\x00", "update_value_text"),
]
TICK_POISON: list[tuple[str, object, str]] = [
    ("S", "AA\x00PL", "symbol"),
    ("t", 2**64 - 1, "time"),
    ("t", 1_709_305_200_123, "time"),  # milliseconds
    ("t", NOW_NS + 3600 * 10**9, "time_future"),
    ("p", 1e308, "price_value"),
    ("p", 1e-300, "price_value"),
]


def _order(number: int, **fields: object) -> dict[str, Any]:
    return {**copy.deepcopy(ORDER), "id": str(uuid.UUID(int=number)), "client_order_id": f"c-{number}", **fields}


def _activity(number: int, **fields: object) -> dict[str, Any]:
    stamp = f"2024030110000{number:04d}"
    return {**ACTIVITY, "id": f"{stamp}::{uuid.UUID(int=1000 + number)}", **fields}


# --- decoders: the bad one rejected and counted, the neighbours kept ---------------------------


@pytest.mark.parametrize(("field", "value", "reason"), ORDER_POISON, ids=lambda v: repr(v)[:30])
def test_order_poison_rejected_neighbours_kept(field: str, value: object, reason: str) -> None:
    page = [_order(1), _order(2, **{field: value}), _order(3)]

    converted, rejects = convert_orders(page, now_ns=NOW_NS)

    assert [item.order.id for item in converted] == [page[0]["id"], page[2]["id"]]
    assert [r.reason for r in rejects] == [reason]
    assert "\x00" not in rejects[0].detail


def test_order_ids_become_canonical_uuids_as_postgres_prints_them() -> None:
    converted, rejects = convert_orders([_order(1, id=UPPER_BRACED, replaces=f"urn:uuid:{uuid.UUID(int=9)}")])

    assert rejects == []
    assert converted[0].order.id == "7f0c4a8e-1d6e-4b7a-9b65-5c7d2f6a1e02"
    assert converted[0].order.replaces == str(uuid.UUID(int=9))


@pytest.mark.parametrize(("field", "value", "reason"), ACTIVITY_POISON, ids=lambda v: repr(v)[:30])
def test_activity_poison_rejected_neighbours_kept(field: str, value: object, reason: str) -> None:
    page = [_activity(1), _activity(2, **{field: value}), _activity(3)]

    results = [convert_activity(item, now_ns=NOW_NS) for item in page]

    assert [r.reason for r in results if isinstance(r, Rejected)] == [reason]
    assert not isinstance(results[0], Rejected)
    assert not isinstance(results[2], Rejected)


@pytest.mark.parametrize(("field", "value", "reason"), POSITION_POISON, ids=lambda v: repr(v)[:30])
def test_position_poison_rejected(field: str, value: object, reason: str) -> None:
    result = convert_position({**POSITION, field: value})

    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert not isinstance(convert_position(POSITION), Rejected)


@pytest.mark.parametrize(("field", "value", "reason"), UPDATE_POISON, ids=lambda v: repr(v)[:30])
def test_trade_update_poison_rejected(field: str, value: object, reason: str) -> None:
    frame = copy.deepcopy(UPDATE)
    frame["data"][field] = value  # type: ignore[index]

    result = convert_trade_update(frame, "demo", now_ns=NOW_NS)

    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert not isinstance(convert_trade_update(UPDATE, "demo", now_ns=NOW_NS), Rejected)


def _tick(number: int, **fields: object) -> bytes:
    body = {"S": f"GOOD{number}", "p": 185.01, "s": 100, "c": ["@"], "t": TS, **fields}
    return msgspec.msgpack.encode({"trade": body})


@pytest.mark.parametrize(("field", "value", "reason"), TICK_POISON, ids=lambda v: repr(v)[:30])
def test_tick_poison_counted_on_the_slow_path_never_accepted_on_the_fast_one(
    field: str, value: object, reason: str
) -> None:
    fast = TradeFilter(EXCLUDE)
    fast.horizon_ns = NOW_NS + 300 * 10**9
    frames = [_tick(1), _tick(2, **{field: value}), _tick(3)]

    outcomes = [fast.accept(frame) or decode_frames([frame], EXCLUDE, NOW_NS) for frame in frames]

    assert isinstance(outcomes[1], Skip)
    assert outcomes[1].reason == reason
    assert outcomes[1].is_reject
    assert [o[0] for o in (outcomes[0], outcomes[2]) if isinstance(o, tuple)] == ["GOOD1", "GOOD3"]


def test_cash_activity_poison_rejected_alone() -> None:
    base = {"activity_type": "DIV", "net_amount": "2.40", "symbol": "MSFT", "date": "2024-02-29", "status": "executed"}
    page = [
        {**base, "id": "20240229000000000::a1"},
        {**base, "id": "20240229000000000::a2", "description": "Cash\x00DIV"},
        {**base, "id": "99991231000000000::a3", "date": "9999-12-31"},
        {**base, "id": "20240229000000000::a4", "transaction_time": "9999-12-31T23:00:00-05:00"},
        {**base, "id": "20240229000000000::a5", "net_amount": "1E-20000"},
        {**base, "id": "20240229000000000::a6"},
    ]

    flows, rejected, _ = screen(page, NOW_NS)

    assert [flow.id for flow in flows] == ["20240229000000000::a1", "20240229000000000::a6"]
    assert Counter(code for code, _ in rejected) == Counter({"text": 1, "time": 2, "value": 1})


# --- what the store and the bus refuse: the raw poison values ----------------------------------


def test_bus_encoder_refuses_the_times_the_decoders_reject() -> None:
    converted, _ = convert_orders([_order(1)], now_ns=NOW_NS)
    good = OrdersPage(account="demo", orders=(converted[0].order,))
    too_late = msgspec.structs.replace(converted[0].order, created_at=253_402_214_400 * 10**9)  # 9999-12-31

    assert encode(good)
    with pytest.raises(OverflowError, match=r"can't serialize ints < -2\*\*63 or > 2\*\*64 - 1"):
        encode(OrdersPage(account="demo", orders=(too_late,)))


@pytest.mark.parametrize(
    ("value", "cast", "refusal"),
    [
        ("c-\x00-1", "text", r"PostgreSQL text fields cannot contain NUL \(0x00\) bytes"),
        ("1E-20000", "numeric", "value overflows numeric format"),
        ("not-a-uuid", "uuid", 'invalid input syntax for type uuid: "not-a-uuid"'),
        ("ORDER-1", "uuid", 'invalid input syntax for type uuid: "ORDER-1"'),
    ],
)
def test_postgres_refuses_the_raw_poison_values(pg_dsn: Dsn, value: str, cast: str, refusal: str) -> None:
    with psycopg.connect(pg_dsn.reveal()) as conn, pytest.raises(psycopg.DataError, match=refusal):
        conn.execute(f"SELECT %s::{cast}", [value])  # cast is one of the literals above


# --- what the decoders kept goes through the bus into a running `state` ------------------------


@pytest.mark.asyncio
async def test_what_the_decoders_keep_is_stored_by_state(migrated_dsn: Dsn, bus: InprocBus) -> None:
    orders_in = [_order(1)]
    orders_in += [_order(10 + i, **{field: value}) for i, (field, value, _) in enumerate(ORDER_POISON)]
    orders_in += [_order(2, id=UPPER_BRACED), _order(3)]
    converted, order_rejects = convert_orders(orders_in, now_ns=NOW_NS)
    activities = [convert_activity(_activity(1), now_ns=NOW_NS)]
    activities += [
        convert_activity(_activity(10 + i, **{field: value}), now_ns=NOW_NS)
        for i, (field, value, _) in enumerate(ACTIVITY_POISON)
    ]
    kept = [a for a in activities if not isinstance(a, Rejected)]
    frames = [_tick(1), *(_tick(10 + i, **{f: v}) for i, (f, v, _) in enumerate(TICK_POISON)), _tick(2)]
    ticks = [t for t in (decode_frames([f], EXCLUDE, NOW_NS) for f in frames) if not isinstance(t, Skip)]
    assert len(order_rejects) == len(ORDER_POISON)
    assert len(kept) == 1
    assert len(ticks) == 2

    harness = StateHarness(migrated_dsn, bus)
    await harness.start()
    try:
        harness.inject(topic_orders("demo"), OrdersPage(
            account="demo", orders=tuple(c.order for c in converted), orders_json=tuple(c.json for c in converted),
        ))  # fmt: skip
        harness.inject(topic_fills("demo"), FillsPage(
            account="demo", fills=tuple(a.fill for a in kept if a.fill), activities=tuple(a.record for a in kept),
        ))  # fmt: skip
        harness.inject(TOPIC_TICKS, TickBatch(
            symbols=tuple(t.symbol for t in ticks), prices=tuple(t.price for t in ticks),
            sizes=tuple(t.size for t in ticks), ts_events=tuple(t.ts_event for t in ticks),
        ))  # fmt: skip
        await harness.settle()
        stored_orders = {r[0] for r in await harness.query("SELECT id::text FROM account_activities.raw_orders_demo")}
        stored_activities = await harness.query("SELECT id FROM account_activities.raw_activities_demo")
        failures = harness.ctx.counters["commit_failures"]
        alive = not harness.task.done()
        await harness.shutdown()  # the final flush writes latest_prices
        prices = {r[0] for r in await harness.query("SELECT symbol FROM accounts.latest_prices")}
    finally:
        await harness.close()

    assert alive
    assert failures == 0
    assert stored_orders == {c.order.id for c in converted}
    assert "7f0c4a8e-1d6e-4b7a-9b65-5c7d2f6a1e02" in stored_orders
    assert [r[0] for r in stored_activities] == [kept[0].record.id]
    assert {"GOOD1", "GOOD2"} <= prices


def test_a_huge_tp_ratio_is_exact_not_an_invalid_operation() -> None:
    """Issue 14: a TP of 1.000000000001 on an entry at 1 with a mark of 9e14 raised
    ``decimal.InvalidOperation`` in the percentage rounding and killed `state`'s consumer."""
    from decimal import Decimal

    from coldharbour.domain.positions import tp_sl_reach_pct

    pct = tp_sl_reach_pct("long", Decimal(1), Decimal("9e14"), Decimal("1.000000000001"), None)

    assert pct == Decimal("89999999999999900000000000000.00")

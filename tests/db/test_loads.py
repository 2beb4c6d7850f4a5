"""Start-up loads read back exactly what the live path wrote (same keys, same values)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest

from coldharbour.db import loads, queries
from coldharbour.db.names import account_names, shared_names
from coldharbour.db.writer import Writer
from coldharbour.domain import changes as ch
from coldharbour.domain import stored as canon
from coldharbour.domain.corporate import SpinoffBasis
from coldharbour.domain.ledger import differences, rebuild
from coldharbour.domain.orders import OrderBook
from coldharbour.domain.positions import build_open_row
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.types import NS_PER_SECOND, Fill, LotLegs, Order, to_datetime
from tests.support import make_settings

pytestmark = pytest.mark.asyncio
T0 = 1_709_305_200 * NS_PER_SECOND


async def test_loads_round_trip_orders_fills_and_open_rows(migrated_dsn: Any) -> None:
    names = account_names(make_settings(migrated_dsn), "demo")
    entry_id, exit_id = str(uuid.uuid4()), str(uuid.uuid4())
    orders = [Order(id=entry_id, symbol="MSFT", side="buy", order_type="market", status="filled", created_at=T0,
                    updated_at=T0 + 5, qty=Decimal(4), order_class="bracket"),
              Order(id=exit_id, symbol="MSFT", side="sell", order_type="limit", status="filled", created_at=T0,
                    updated_at=T0 + 9, qty=Decimal(1), limit_price=Decimal(420), parent_id=entry_id)]
    fills = [Fill(order_id=entry_id, symbol="MSFT", side="buy", qty=Decimal(4), price=Decimal("410.25"), ts=T0 + 7,
                  execution_id=str(uuid.uuid4())),
             Fill(order_id=exit_id, symbol="MSFT", side="sell", qty=Decimal(1), price=Decimal(420), ts=T0 + 999_999,
                  cum_qty=Decimal(1))]
    canonical = [canon.canonical_fill(f) for f in fills]
    live_orders = [canon.canonical_order(o) for o in orders]
    live = rebuild(live_orders, [f for _, f in canonical])
    lot = next(iter(live.lots.values()))
    row = build_open_row(lot, legs=LotLegs(), mark=Decimal("415.5"), wac=None, now=T0 + NS_PER_SECOND)
    writer = Writer(make_settings(migrated_dsn))
    await writer.connect()
    slug = names.slug
    await writer.commit([
        ch.RawOrders(slug, tuple((o, "{}") for o in live_orders)),
        ch.RawActivities(slug, (canonical[0][0],), by_execution=True),
        ch.RawActivities(slug, (canonical[1][0],)),
        ch.OpenRows(slug, (row,)),
    ], T0)
    await writer.close()

    async with await psycopg.AsyncConnection.connect(migrated_dsn.reveal()) as conn:
        stored_orders, stored_fills = await loads.load_history(conn, names)
        stored_rows = await loads.load_open_rows(conn, names)

    assert {o.id: o for o in stored_orders} == {o.id: o for o in live_orders}
    assert sorted(f.key for f in stored_fills) == sorted(f.key for _, f in canonical)
    assert differences(live, rebuild(OrderBook(stored_orders), stored_fills)) == []
    assert stored_rows == {row.parent_id: row}


async def test_loads_leave_busted_fills_out_and_re_derive_corporate_actions(migrated_dsn: Any) -> None:
    """A FILL row stored again ``canceled`` (a bust) and a stored SPLIT pair (Alpaca's
    account-activities shapes: https://docs.alpaca.markets/us/docs/account-activities.md)."""
    names = account_names(make_settings(migrated_dsn), "demo")
    order_id, busted_order, execution = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    kept = canon.canonical_fill(Fill(order_id=order_id, symbol="AAPL", side="buy", qty=Decimal(10),
                                    price=Decimal(100), ts=T0, cum_qty=Decimal(10)))
    gone = canon.canonical_fill(Fill(order_id=busted_order, symbol="AAPL", side="buy", qty=Decimal(5),
                                    price=Decimal(101), ts=T0 + 1000, execution_id=execution, cum_qty=Decimal(5)))
    canceled = msgspec.structs.replace(gone[0], raw_json=gone[0].raw_json[:-1] + ',"status":"canceled"}')
    legs = [ActivityRecord(id=f"20240301103000{n:03d}::5f596936-6f23-4cef-bdf1-3806aae5000{n}", activity_type="SPLIT",
                           transaction_time=T0 + 1800 * NS_PER_SECOND, symbol="AAPL", qty=Decimal(qty),
                           price=Decimal(price), net_amount=Decimal(0),
                           raw_json=f'{{"activity_type":"SPLIT","qty":"{qty}","status":"executed"}}')
            for n, qty, price in ((0, "-10", "100"), (1, "20", "50"))]
    writer = Writer(make_settings(migrated_dsn))
    await writer.connect()
    await writer.commit([
        ch.RawActivities(names.slug, (kept[0],)),
        ch.RawActivities(names.slug, (gone[0],), by_execution=True),
        ch.RawActivities(names.slug, tuple(legs)),
    ], T0)
    await writer.commit([ch.RawActivities(names.slug, (canceled,), by_execution=True)], T0)
    await writer.close()

    async with await psycopg.AsyncConnection.connect(migrated_dsn.reveal()) as conn:
        _, fills = await loads.load_history(conn, names)
        busted = await loads.load_busted_keys(conn, names)
        [action] = await loads.load_actions(conn, names)

    assert [f.key for f in fills] == [kept[1].key]
    assert busted == {gone[1].key}
    assert (action.type, action.symbol, action.ratio) == ("split", "AAPL", Decimal(2))


async def test_loads_apply_the_stored_spinoff_basis_to_the_spin_leg_and_keep_the_last_choice(migrated_dsn: Any) -> None:
    """A SPIN leg as real accounts list it (priced 0: https://docs.alpaca.markets/us/docs/account-activities.md
    NonTradeActivity) and its allocation written twice (default, then an override): the reload
    books the override."""
    names = account_names(make_settings(migrated_dsn), "demo")
    leg = ActivityRecord(id="20240301103000000::5f596936-6f23-4cef-bdf1-3806aae50009", activity_type="SPIN",
                         transaction_time=T0 + 1800 * NS_PER_SECOND, symbol="KID", qty=Decimal(2), price=Decimal(0),
                         net_amount=Decimal(0), raw_json='{"activity_type":"SPIN","qty":"2","status":"executed"}')
    default = SpinoffBasis(action_id=leg.id, parent="AAPL", parent_share=Decimal("0.8"), source="default", set_at=T0)
    override = SpinoffBasis(action_id=leg.id, parent="AAPL", parent_share=Decimal("0.55"), source="override",
                            set_at=T0 + NS_PER_SECOND)
    writer = Writer(make_settings(migrated_dsn))
    await writer.connect()
    await writer.commit([ch.RawActivities(names.slug, (leg,)), ch.SpinoffBases(names.slug, (default,))], T0)
    await writer.commit([ch.SpinoffBases(names.slug, (override,))], T0)
    await writer.close()

    async with await psycopg.AsyncConnection.connect(migrated_dsn.reveal()) as conn:
        [action] = await loads.load_actions(conn, names)
        assert await loads.load_spinoff_bases(conn, names) == [override]

    assert (action.type, action.symbol, action.new_symbol, action.qty, action.basis_share, action.price) == (
        "spinoff", "AAPL", "KID", Decimal(2), Decimal("0.55"), None)


async def test_start_load_reads_every_stored_form_as_the_record_converters_do(migrated_dsn: Any) -> None:
    """The start-up load resolves ``raw_json`` fallbacks in SQL: each stored form must give the
    fill (or the skip, or the bust) ``fill_from_activity``/``is_canceled`` give for the same row.
    Rows follow Alpaca's FILL activity (https://docs.alpaca.markets/us/docs/account-activities.md:
    ``id`` ``<stamp>::<uuid>``, ``order_id``, ``cum_qty`` and ``qty`` as strings, ``side``)."""
    names = account_names(make_settings(migrated_dsn), "demo")
    ids = [str(uuid.uuid4()) for _ in range(8)]

    def record(n: int, raw: dict[str, object], **fields: Any) -> ActivityRecord:
        base: dict[str, Any] = {"id": f"20240301103000{n:03d}::{ids[n]}", "activity_type": "FILL",
                                "transaction_time": T0 + n * 1000, "symbol": "AAPL", "side": "buy",
                                "qty": Decimal(2), "price": Decimal("10.5"), "order_id": ids[0]}
        base.update(fields)
        return ActivityRecord(**base, raw_json=msgspec.json.encode(raw).decode())

    records = [
        record(0, {"cum_qty": "2.00"}, execution_id=ids[1]),  # cum_qty normalized
        record(1, {"cum_qty": 4.5, "side": "sell"}, side=None, qty=Decimal("-2.5")),  # JSON number, side from raw_json
        record(2, {"execution_id": "exec-from-json", "order_id": "order-from-json"}, order_id=None),
        record(3, {}),  # no cum_qty, no execution id: the part of the id after "::"
        record(4, {"cum_qty": "1"}, price=None),  # incomplete: skipped
        record(5, {"cum_qty": "3", "status": "CANCELED"}),  # no lower-case "canceled" text: not a bust
        record(6, {"cum_qty": "7", "status": "canceled"}),  # a bust
        record(7, {"cum_qty": ""}, side="SELL"),  # empty cum_qty, upper-case side
    ]
    writer = Writer(make_settings(migrated_dsn))
    await writer.connect()
    await writer.commit([ch.RawActivities(names.slug, tuple(records))], T0)
    await writer.close()

    async with await psycopg.AsyncConnection.connect(migrated_dsn.reveal(), autocommit=True) as conn:
        expected = loads.split_busted(await loads.load_fill_activities(conn, names))
        found = await loads.load_fills_and_busted(conn, names)

    assert found == expected
    assert len(expected[0]) == 6
    assert len(expected[1]) == 1
    # The execution key: order id and cum_qty; else the raw execution id; else the id after "::".
    assert sorted(f.key for f in found[0]) == sorted(
        [f"{ids[0]}:2", f"{ids[0]}:4.5", "exec-from-json", ids[3], f"{ids[0]}:3", ids[7]]
    )


async def test_start_load_reads_orders_as_the_row_converter_does(migrated_dsn: Any) -> None:
    """Orders with legs, an ``order_class``, open times and a replacement read back equal to the
    stored versions (the live path's ``canonical_order``)."""
    names = account_names(make_settings(migrated_dsn), "demo")
    parent, tp, sl, new_tp = (str(uuid.uuid4()) for _ in range(4))
    orders = [
        Order(id=parent, symbol="MSFT", side="buy", order_type="limit", status="filled", created_at=T0 + 123_456,
              updated_at=T0 + 999, order_class="bracket", qty=Decimal("1.50"), filled_qty=Decimal("1.5"),
              limit_price=Decimal("400.10"), legs=(tp, sl), filled_at=T0 + 2000, client_order_id="c-1"),
        Order(id=tp, symbol="MSFT", side="sell", order_type="limit", status="replaced", created_at=T0 + 1,
              updated_at=T0 + 2, order_class="bracket", qty=Decimal("1.5"), limit_price=Decimal(420),
              parent_id=parent, replaced_by=new_tp, expires_at=T0 + 86_400 * NS_PER_SECOND),
        Order(id=sl, symbol="MSFT", side="sell", order_type="stop", status="new", created_at=T0 + 1,
              updated_at=T0 + 1, qty=Decimal("1.5"), stop_price=Decimal("390.5"), parent_id=parent),
        Order(id=new_tp, symbol="MSFT", side="sell", order_type="limit", status="new", created_at=T0 + 3,
              updated_at=T0 + 3, qty=Decimal("1.5"), limit_price=Decimal(425), replaces=tp),
    ]
    live = [canon.canonical_order(o) for o in orders]
    writer = Writer(make_settings(migrated_dsn))
    await writer.connect()
    await writer.commit([ch.RawOrders(names.slug, tuple((o, "{}") for o in live))], T0)
    await writer.close()

    async with await psycopg.AsyncConnection.connect(migrated_dsn.reveal(), autocommit=True) as conn:
        stored = await loads.load_orders(conn, names)

    assert {o.id: o for o in stored} == {o.id: o for o in live}
    assert {o.id: o.legs for o in stored}[parent] == (tp, sl)


async def test_start_load_reads_every_batch_of_the_cursor_in_order(migrated_dsn: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 2 rows (the next FETCH in flight while one converts): all 5 orders, oldest first."""
    monkeypatch.setattr(loads, "FETCH_ROWS", 2)
    names = account_names(make_settings(migrated_dsn), "demo")
    orders = [canon.canonical_order(Order(id=str(uuid.uuid4()), symbol=f"S{n}", side="buy", order_type="market",
                                         status="filled", created_at=T0 + n * 1000, updated_at=T0 + n * 1000))
              for n in range(5)]
    writer = Writer(make_settings(migrated_dsn))
    await writer.connect()
    await writer.commit([ch.RawOrders(names.slug, tuple((o, "{}") for o in reversed(orders)))], T0)
    await writer.close()

    async with await psycopg.AsyncConnection.connect(migrated_dsn.reveal(), autocommit=True) as conn:
        stored = await loads.load_orders(conn, names)

    assert stored == orders


async def test_load_marks_leaves_out_a_mark_stamped_in_the_future(migrated_dsn: Any) -> None:
    """A 2099 mark stored before the market-data path refused future prints is not taken back."""
    shared = shared_names(make_settings(migrated_dsn))
    async with await psycopg.AsyncConnection.connect(migrated_dsn.reveal(), autocommit=True) as conn:
        await conn.execute(
            psycopg.sql.SQL("INSERT INTO {t} (symbol, price, ts) VALUES ('AAPL', 180.5, %s), ('MSFT', 999, %s)")
            .format(t=shared.latest_prices.ident),
            (to_datetime(T0), to_datetime(4_070_908_800 * NS_PER_SECOND)),  # MSFT: 2099-01-01
        )
        marks = await loads.load_marks(conn, shared, now_ns=T0 + NS_PER_SECOND)

    assert marks == {"AAPL": (Decimal("180.5"), T0)}


async def test_reconciliation_fills_are_loaded_with_the_history_but_never_stored_as_raw_activities(
        migrated_dsn: Any) -> None:
    """A ``recon:`` lot survives a restart, and the equity replay (FILL rows of raw_activities) never sees it."""
    settings = make_settings(migrated_dsn)
    names = account_names(settings, "demo")
    broker = Fill(order_id=str(uuid.uuid4()), symbol="MSFT", side="buy", qty=Decimal(2), price=Decimal(400), ts=T0,
                  execution_id=str(uuid.uuid4()), cum_qty=Decimal(2))
    recon = Fill(order_id=f"recon:MSFT:{T0 + 5}", execution_id=f"recon:MSFT:{T0 + 5}", symbol="MSFT", side="buy",
                 qty=Decimal(3), price=Decimal(401), ts=T0 + 5)
    writer = Writer(settings)
    await writer.connect()
    await writer.commit([
        ch.RawActivities("demo", (canon.canonical_fill(broker)[0],), by_execution=True),
        ch.Reconciliations("demo", (canon.activity_from_fill(recon),)),
    ], T0)
    await writer.close()

    async with await psycopg.AsyncConnection.connect(migrated_dsn.reveal()) as conn:
        _, fills, _ = await loads.load_start(conn, names)
        executions, _ = await queries.executions_between(conn, names, None)
        cursor = await conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {t} WHERE id LIKE '%%recon:%%'")
                                    .format(t=names.raw_activities.ident))
        raw_recon = await cursor.fetchone()

    assert [(f.order_id, f.qty) for f in fills] == [(broker.order_id, Decimal(2)), (recon.order_id, Decimal(3))]
    assert [e.qty for e in executions] == [Decimal(2)]
    assert raw_recon == (0,)

"""End to end: a bracket fill becomes a stored and pushed row, feed ticks move the mark past the
push threshold, the take-profit fill pushes the deletion and the closed slice. (Latency is the
bench's: ``scripts/bench`` ``fill_to_notify``.)

Real processes over ipc:// (bus, state, trades, snapshot, prices), real PostgreSQL, the fake
broker driven through unmodified alpaca-py, and the external price feed played by a ZMQ PUB in
the test (docs/spec.md §4 frames). ``FLUSH_INTERVAL_S`` is an hour, so every change seen in the table
before the final stop was written because it was structural or crossed the threshold.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest

from coldharbour.config import Dsn
from tests.fixtures.broker import FakeBroker
from tests.fixtures.stack import (
    CLOSED,
    POSITIONS,
    Db,
    Feed,
    Notes,
    Programs,
    all_clean,
    broker_environ,
    pushed_deletes,
    pushed_rows,
)
from tests.support import wait_for

# The default run keeps this one: a fill's pushes on the NOTIFY channels (docs/testing.md).
pytestmark = [pytest.mark.integration, pytest.mark.smoke]

PROGRAMS = ("bus", "state", "trades", "snapshot", "prices")


def _bracket(broker: FakeBroker) -> str:
    order = broker.trading_client().submit_order(
        MarketOrderRequest(
            symbol="AAPL",
            qty=10,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.GTC,
            order_class="bracket",
            take_profit=TakeProfitRequest(limit_price=110),
            stop_loss=StopLossRequest(stop_price=90),
        )
    )
    return str(order.id)  # type: ignore[union-attr]


def test_e2e_bracket_row_pushed_marks_past_threshold_then_tp_deletion(
    migrated_dsn: Dsn, fake_broker: FakeBroker, stack_dir: Path
) -> None:
    env = broker_environ(
        migrated_dsn, stack_dir, fake_broker.base_url,
        FLUSH_INTERVAL_S="3600", SNAPSHOT_SEC="3600", UI_HEARTBEAT_S="3600", BACKFILL_DAYS="1",
    )  # fmt: skip
    feed = Feed(env["ZMQ_SIP_STREAM_ENDPOINT"])
    notes, db = Notes(migrated_dsn), Db(migrated_dsn)
    programs = Programs(env, stack_dir)
    row_query = f"SELECT row_to_json(p) FROM {POSITIONS} p"
    try:
        programs.start(*PROGRAMS)
        wait_for(lambda: fake_broker.listener_count() == 1, 20, what="trades stream listening")
        fake_broker.set_prices({"AAPL": 100})
        start = notes.mark()

        parent_id = _bracket(fake_broker)
        # The row with its legs: a fill that reaches state before its legs (REST page first) is
        # written without them and completed when they arrive.
        stored = wait_for(lambda: [(r,) for r in _row_with(db, row_query, tp_px=110, sl_px=90)], 30, what="open row")
        first_push = wait_for(
            lambda: [n for n in notes.since(start, "pos_channel_demo") if pushed_rows([n])], 30, what="row push"
        )[0]
        opened = wait_for(lambda: _row_with(db, row_query, avg_px_symbol=100), 30, what="broker WAC on the row")

        # The first mark (100) is pushed: by the feed tick, re-sent until ``prices`` is subscribed
        # (slow joiner), or already by the post-fill snapshot's ``current_price``, in
        # which case the tick at the same price changes nothing and is rightly not pushed again.
        def first_mark() -> list[dict[str, object]]:
            found = [r for r in pushed_rows(notes.since(start, "pos_channel_demo")) if r["mkt_px"] == 100.0]
            if not found:
                feed.send("AAPL", 100.0)
            return found

        wait_for(first_mark, 30, interval_s=0.1, what="first mark pushed")
        below = notes.mark()
        feed.send("AAPL", 100.2)  # +0.2 %: under UI_PUSH_PCT_THRESHOLD (0.25 %)
        # +1 % from the last pushed mark: pushed at once. ``state`` handles ticks in order and
        # NOTIFYs arrive in commit order, so a push of 100.2 would come before this one.
        feed.send("AAPL", 101.0)
        moved = wait_for(lambda: pushed_rows(notes.since(below, "pos_channel_demo")), 30, what="threshold push")
        moved_row = db.dicts(
            f"SELECT mkt_px, mkt_value, profit_loss, profit_loss_lot, tp_sl_reach_pct FROM {POSITIONS}"
        )

        closing = notes.mark()
        fake_broker.set_prices({"AAPL": 111})
        wait_for(lambda: pushed_deletes(notes.since(closing, "pos_channel_demo")), 30, what="deletion pushed")
        closed_push = wait_for(lambda: notes.since(closing, "closed_channel_demo"), 30, what="closed slice pushed")
        open_after = db.rows(f"SELECT count(*) FROM {POSITIONS}")
        closed = db.dicts(
            f"SELECT entry_lot_id, exit_order_id, exit_parent_id, symbol, side, qty, entry_price, exit_price,"
            f" exit_type, pnl_cash, pnl_cash_fifo, diff_pnl, return_pct FROM {CLOSED}"
        )
    finally:
        notes.close()
        db.close()
        codes = programs.close()
        feed.close()

    row = stored[0][0]
    legs = fake_broker.request("GET", f"/v2/orders/{parent_id}", params={"nested": "true"}).json()["legs"]
    tp_id = next(leg["id"] for leg in legs if leg["type"] == "limit")
    assert all_clean(codes), programs.logs()
    assert first_push.payload["row"]["parent_id"] == parent_id
    assert (row["parent_id"], row["symbol"], row["side"], row["qty"], row["avg_fill"]) == (
        parent_id, "AAPL", "long", 10, 100,
    )  # fmt: skip
    assert (row["tp_px"], row["sl_px"], row["buy_value"], row["moved_flag"], row["holding_days"]) == (
        110, 90, 1000, "—", 0,
    )  # fmt: skip
    assert row["filled_at"] is not None
    assert row["days_to_expire"] is not None
    assert opened[0]["avg_px_symbol"] == 100
    assert [r["mkt_px"] for r in moved] == [101.0]  # the 100.2 move was not pushed first
    assert (moved[0]["profit_loss"], moved[0]["tp_sl_reach_pct"]) == (10.0, 10.0)
    assert moved_row == [{"mkt_px": Decimal(101), "mkt_value": Decimal(1010), "profit_loss": Decimal(10),
                          "profit_loss_lot": Decimal(10), "tp_sl_reach_pct": Decimal("10.00")}]  # fmt: skip
    assert open_after == [(0,)]
    assert closed == [{
        "entry_lot_id": parent_id, "exit_order_id": tp_id, "exit_parent_id": parent_id, "symbol": "AAPL",
        "side": "long", "qty": Decimal(10), "entry_price": Decimal(100), "exit_price": Decimal(110),
        "exit_type": "TP", "pnl_cash": Decimal(100), "pnl_cash_fifo": Decimal(100), "diff_pnl": Decimal(0),
        "return_pct": Decimal(10),
    }]  # fmt: skip
    [insert] = closed_push
    assert insert.payload["op"] == "insert"
    assert [(r["entry_lot_id"], r["exit_type"], r["pnl_cash"]) for r in insert.payload["rows"]] == [
        (parent_id, "TP", 100.0)
    ]


def _row_with(db: Db, query: str, **expected: object) -> list[dict[str, object]]:
    rows = [r[0] for r in db.rows(query)]
    return rows if rows and all(rows[0].get(k) == v for k, v in expected.items()) else []

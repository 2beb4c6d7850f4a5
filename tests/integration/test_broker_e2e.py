"""End to end over ipc://: fake broker, real bus/state/trades/snapshot/prices, real PostgreSQL.

A bracket order placed through unmodified alpaca-py fills at the fake broker → the open-positions
row exists (and was pushed on ``pos_channel_demo``); a feed tick moves its mark; the take-profit
fills → the row is deleted and one closed slice with ``exit_type = 'TP'`` exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest

from coldharbour.config import Dsn
from tests.fixtures.stack import (
    CLOSED,
    POSITIONS,
    BrokerProcess,
    Db,
    Feed,
    Notes,
    Programs,
    all_clean,
    broker_environ,
    pushed_rows,
)
from tests.support import wait_for

# The default run keeps this one: a fill's whole path (docs/testing.md).
pytestmark = [pytest.mark.integration, pytest.mark.smoke]

PROGRAMS = ("bus", "state", "trades", "snapshot", "prices")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """``python -m coldharbour.sim.broker --port 0`` as a subprocess (account ``demo``)."""
    process = BrokerProcess(tmp_path / "broker.log")
    yield process
    process.stop()


def test_bracket_fill_tp_round_trip(migrated_dsn: Dsn, broker: BrokerProcess, stack_dir: Path) -> None:
    env = broker_environ(migrated_dsn, stack_dir, broker.base_url, FLUSH_INTERVAL_S="0.5", SNAPSHOT_SEC="5",
                         BACKFILL_DAYS="1")  # fmt: skip
    feed, notes, db = Feed(env["ZMQ_SIP_STREAM_ENDPOINT"]), Notes(migrated_dsn), Db(migrated_dsn)
    programs = Programs(env, stack_dir)
    try:
        programs.start(*PROGRAMS)
        wait_for(lambda: broker.listeners() == 1, 20, what="trades stream listening")
        broker.set_prices({"AAPL": 100})
        client: Any = broker.trading_client()  # alpaca-py returns `Model | RawData` unions
        order = client.submit_order(
            MarketOrderRequest(
                symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class="bracket",
                take_profit=TakeProfitRequest(limit_price=110), stop_loss=StopLossRequest(stop_price=90),
            )
        )  # fmt: skip
        parent_id = str(order["id"])  # raw_data client: the order's JSON

        query = f"SELECT parent_id, symbol, side, qty, avg_fill, tp_px, sl_px FROM {POSITIONS}"
        rows = wait_for(lambda: db.rows(query), 30, what=f"open row in {POSITIONS}")
        pushed = wait_for(lambda: pushed_rows(notes.since(0, "pos_channel_demo")), 30, what="pos_channel_demo push")

        def marked() -> list[tuple[object, ...]]:
            feed.send("AAPL", 105.0)  # re-sent until `prices` has joined the feed (a PUB drops before)
            return db.rows(f"SELECT mkt_px FROM {POSITIONS} WHERE mkt_px = 105")

        wait_for(marked, 30, interval_s=0.2, what="mkt_px from the feed")
        broker.set_prices({"AAPL": 111})
        wait_for(lambda: not db.rows(query), 30, what="open row deleted after TP")
        closed = wait_for(lambda: db.rows(f"SELECT entry_lot_id, qty, exit_type, exit_price FROM {CLOSED}"), 30,
                          what=f"closed slice in {CLOSED}")  # fmt: skip
    finally:
        notes.close()
        db.close()
        codes = programs.close()
        feed.close()

    assert rows == [(parent_id, "AAPL", "long", Decimal(10), Decimal(100), Decimal(110), Decimal(90))]
    assert [row["parent_id"] for row in pushed][:1] == [parent_id]
    assert closed == [(parent_id, Decimal(10), "TP", Decimal(110))]
    assert all_clean(codes), programs.logs()
    assert [name for name in PROGRAMS if "demo-secret" in (stack_dir / f"{name}.log").read_text()] == []

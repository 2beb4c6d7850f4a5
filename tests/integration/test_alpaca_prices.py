"""End to end without a ZMQ feed: ``prices`` follows the positions on Alpaca's market-data stream.

The first test runs the programs that matter over ipc:// (bus, state, trades, snapshot, prices)
against the fake broker in-process (the trading API and the market-data stream at ``/v2/iex``),
driven through unmodified alpaca-py, with no ``ZMQ_SIP_STREAM_ENDPOINT`` and
``PRICE_SOURCE=alpaca-stream``. The second runs the whole stack under supervisord
(``start_stack``) with ``PRICE_SOURCE=alpaca-stream`` and reads `chmgr status`. Market hours do not matter
(``DISABLE_SESSION_SLEEP=1``).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from coldharbour.config import Dsn
from coldharbour.messages import Heartbeat
from coldharbour.sim.postgres import PgCluster
from tests.fixtures.broker import FakeBroker
from tests.fixtures.stack import POSITIONS, Db, Programs, all_clean, start_stack
from tests.support import make_environ, wait_for

pytestmark = pytest.mark.integration

PROGRAMS = ("bus", "state", "trades", "snapshot", "prices")
TIMEOUT_S = 20.0


def _order(broker: FakeBroker, side: OrderSide) -> None:
    broker.trading_client().submit_order(
        MarketOrderRequest(symbol="AAPL", qty=10, side=side, time_in_force=TimeInForce.DAY)
    )


def _data_stream(broker: FakeBroker) -> dict[str, Any]:
    return broker.request("GET", "/sim/data-stream", account=None).json()


def _server_trades(broker: FakeBroker) -> list[list[str]]:
    return [c["trades"] for c in _data_stream(broker)["connections"] if c["authenticated"]]


def _lot(db: Db) -> dict[str, Any] | None:
    rows = db.dicts(f"SELECT qty, mkt_px, profit_loss FROM {POSITIONS} WHERE symbol = 'AAPL'")
    return rows[0] if rows else None


def _mark(db: Db) -> Decimal | None:
    lot = _lot(db)
    return None if lot is None else lot["mkt_px"]


def test_alpaca_source_follows_lot_marks_from_posted_prices_reconnects_and_unsubscribes(
    migrated_dsn: Dsn, fake_broker: FakeBroker, stack_dir: Path
) -> None:
    env = make_environ(
        migrated_dsn, stack_dir / "run", ("demo",),
        ALPACA_API_KEY_DEMO="demo-key", ALPACA_SECRET_KEY_DEMO="demo-secret",
        ALPACA_BASE_URL_DEMO=fake_broker.base_url,
        ALPACA_DATA_STREAM_URL=f"ws://127.0.0.1:{fake_broker.port}/v2/iex", PRICE_SOURCE="alpaca-stream",
        DISABLE_SESSION_SLEEP="1", FLUSH_INTERVAL_S="0.5", SNAPSHOT_SEC="3600", BACKFILL_DAYS="1",
    )  # fmt: skip
    db = Db(migrated_dsn)
    programs = Programs(env, stack_dir)
    try:
        programs.start(*PROGRAMS)
        wait_for(lambda: fake_broker.listener_count() == 1, TIMEOUT_S, what="trades stream listening")
        before_any = _data_stream(fake_broker)["connections_total"]
        fake_broker.set_prices({"AAPL": 100})
        _order(fake_broker, OrderSide.BUY)
        wait_for(lambda: _lot(db), TIMEOUT_S, what="the lot opened")

        wait_for(lambda: _server_trades(fake_broker) == [["AAPL"]], TIMEOUT_S, what="subscribed to AAPL")
        fake_broker.set_prices({"AAPL": 106})
        wait_for(lambda: _mark(db) == 106, TIMEOUT_S, what="mark from the data stream")
        marked = _lot(db)

        # The heartbeat that says so: the mark is in the database before ``prices``' next heartbeat
        # (1 s) counts the tick, so the newest one may still say subscribed with no tick yet.
        def counted() -> Heartbeat | None:
            b = programs.heartbeat("prices")
            return b if b and b.counters.get("data_stream_subscribed", 0) >= 1 and b.counters.get("ticks", 0) else None

        beat = wait_for(counted, TIMEOUT_S, interval_s=0.05, what="prices heartbeat: subscribed, a tick")

        dropped = fake_broker.request("POST", "/sim/drop-data-stream", account=None).json()
        wait_for(
            lambda: _data_stream(fake_broker)["connections_total"] == 2 and _server_trades(fake_broker) == [["AAPL"]],
            TIMEOUT_S, what="reconnected and resubscribed",
        )  # fmt: skip
        fake_broker.set_prices({"AAPL": 107.5})
        wait_for(lambda: _mark(db) == Decimal("107.5"), TIMEOUT_S, what="mark after the reconnect")

        _order(fake_broker, OrderSide.SELL)
        wait_for(lambda: _lot(db) is None, TIMEOUT_S, what="the lot closed")
        wait_for(lambda: _server_trades(fake_broker) == [[]], TIMEOUT_S, what="unsubscribed from AAPL")
        reconnects = programs.wait_counter("prices", "data_stream_reconnects", 1)  # its heartbeat can trail
    finally:
        db.close()
        codes = programs.close()

    assert all_clean(codes), programs.logs()
    assert before_any == 0  # nothing in play, no data connection
    assert beat.details == {"price_source": "alpaca-stream", "subscribed": "AAPL"}
    assert beat.counters["ticks"] >= 1
    assert beat.counters["newest_tick_unix_ms"] > 0
    assert marked is not None
    assert marked["profit_loss"] == 60  # (106 - 100) x 10, from the data stream's mark
    assert dropped == {"dropped": 1}
    assert reconnects == 1


def test_whole_stack_with_alpaca_source_marks_lot_and_status_shows_the_subscription(
    pg_cluster: PgCluster, migrated_template: str, tmp_path: Path
) -> None:
    settings = {
        "PRICE_SOURCE": "alpaca-stream", "FLUSH_INTERVAL_S": "0.5", "SNAPSHOT_SEC": "3600", "BACKFILL_DAYS": "1",
    }  # fmt: skip
    with start_stack(pg_cluster, migrated_template, tmp_path, settings=settings) as stack:
        broker = stack.broker
        positions = f"SELECT mkt_px FROM {stack.names.positions.schema}.{stack.names.positions.name}"
        stack.wait_healthy()
        wait_for(lambda: stack.stream_listeners() == 1, TIMEOUT_S, what="trades connected to the broker")
        broker.set_prices({"AAPL": 100})
        stack.broker.trading_client().submit_order(
            MarketOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
        )
        wait_for(lambda: stack.query(positions), TIMEOUT_S, what="the lot opened")
        wait_for(
            lambda: [c["trades"] for c in broker.control("GET", "/sim/data-stream")["connections"]] == [["AAPL"]],
            TIMEOUT_S, what="subscribed to AAPL",
        )  # fmt: skip
        broker.set_prices({"AAPL": 104.25})
        wait_for(lambda: stack.query(positions) == [(Decimal("104.25"),)], TIMEOUT_S, what="mark from the stream")

        def status_with_subscription() -> str:
            out = stack.chmgr("status").stdout
            return out if "subscribed 1 (AAPL)" in out else ""

        status = wait_for(status_with_subscription, TIMEOUT_S, interval_s=0.5, what="chmgr status with AAPL")

    prices_line = next(line for line in status.splitlines() if line.startswith("prices: "))
    assert prices_line.startswith("prices: source alpaca-stream · subscribed 1 (AAPL) · unpriced 0 · newest tick ")
    assert prices_line.endswith(" ago")

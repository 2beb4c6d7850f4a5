"""The whole-stack poison run: poison at the broker and on the feed, then
a normal fill, tick and dividend. The normal ones are stored, every poison is rejected and
counted, no program dies, `state` never fails a commit, and the broker requests per snapshot
period stay within one of what they were before the poison (no retry storm).

Real processes over ipc:// (bus, state, snapshot, trades, cashflows, prices), real PostgreSQL,
the fake broker at the wire: an open limit order whose ``client_order_id`` holds a NUL (the
fake broker, like the issue's attack, accepts it; order shape: https://docs.alpaca.markets/
reference/postorder), cash activities with a NUL description and a 9999-12-31 date
(``POST /sim/activities``, https://docs.alpaca.markets/reference/getaccountactivities), and feed
trades (docs/spec.md §4 msgpack ``{"trade": {...}}``) with a NUL symbol, ``t`` = 2^64−1 and a price of
1e308. ``SNAPSHOT_SEC`` is 2 s, so the poisoned order is read again at every snapshot.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import zmq

from coldharbour.config import Dsn
from tests.fixtures.broker import FakeBroker
from tests.fixtures.stack import POSITIONS, RAW_ACTIVITIES, Db, Programs, all_clean, broker_environ
from tests.support import wait_for

pytestmark = pytest.mark.integration

CASH_FLOWS = "accounts.cash_flows_demo"
SNAPSHOTS_MEASURED = 3  # requests are counted over three snapshot periods


SNAPSHOT_PATHS = ("/v2/orders", "/v2/positions")  # what snapshot alone reads (cashflows reads activities)


def _requests_per_snapshot(broker: FakeBroker, programs: Programs) -> float:
    """``snapshot``'s order and position requests per snapshot period over the next
    ``SNAPSHOTS_MEASURED`` snapshots (a window ended by the snapshot counter: no wall-clock rate).
    Only the paths a poisoned order could make ``snapshot`` read again are counted: the
    activity reads of ``cashflows`` run on their own timer, so under CPU load (longer snapshot
    periods) they would add to a total per snapshot without any retry storm."""
    start = time.time()
    snapshots = programs.counter("snapshot", "snapshots")
    done = programs.wait_counter("snapshot", "snapshots", snapshots + SNAPSHOTS_MEASURED, timeout_s=30)
    end = time.time()
    log = broker.request("GET", "/sim/log", account=None).json()
    counted = [r for r in log if start <= r["at"] <= end and str(r["path"]).startswith(SNAPSHOT_PATHS)]
    return len(counted) / (done - snapshots)


def test_poison_at_the_broker_and_feed_never_stops_the_normal_fill_tick_and_dividend(
    migrated_dsn: Dsn, fake_broker: FakeBroker, stack_dir: Path
) -> None:
    feed_endpoint = f"ipc://{stack_dir}/feed.sock"
    env = broker_environ(
        migrated_dsn, stack_dir, fake_broker.base_url, SNAPSHOT_SEC="2", CASH_FLOWS_INTERVAL_S="2",
        FLUSH_INTERVAL_S="1", UI_HEARTBEAT_S="3600", BACKFILL_DAYS="1",
    )  # fmt: skip
    db, programs = Db(migrated_dsn), Programs(env, stack_dir)
    zctx = zmq.Context()
    feed = zctx.socket(zmq.PUB)
    feed.bind(feed_endpoint)

    def trade(**body: object) -> None:
        feed.send(msgspec.msgpack.encode({"trade": {"s": 100, "c": ["@"], "t": time.time_ns(), **body}}))

    names = ("bus", "state", "snapshot", "trades", "cashflows", "prices")
    try:
        programs.start(*names)
        wait_for(lambda: fake_broker.listener_count() == 1, 20, what="trades stream listening")
        fake_broker.set_prices({"AAPL": 100, "MSFT": 200})
        before = _requests_per_snapshot(fake_broker, programs)

        poisoned = fake_broker.request("POST", "/v2/orders", json={
            "symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "50",
            "time_in_force": "gtc", "client_order_id": "poison\x00order",
        })  # fmt: skip
        assert poisoned.status_code == 200, poisoned.text
        fake_broker.post_activities([
            {"activity_type": "DIV", "net_amount": "9.99", "symbol": "AAPL", "description": "Cash\x00DIV"},
            {"activity_type": "DIV", "net_amount": "8.88", "symbol": "AAPL", "date": "9999-12-31"},
        ])  # fmt: skip
        trade(S="AA\x00PL", p=100.0)
        trade(S="AAPL", p=100.0, t=2**64 - 1)
        trade(S="AAPL", p=1e308)
        programs.wait_counter("cashflows", "rejects_activity", 2)
        programs.wait_counter("prices", "rejects", 3)
        programs.wait_counter("snapshot", "rejects_orders_order_value_text", 2)  # re-read, never passed on
        after = _requests_per_snapshot(fake_broker, programs)

        filled = fake_broker.request("POST", "/v2/orders", json={
            "symbol": "MSFT", "qty": "5", "side": "buy", "type": "market", "time_in_force": "day",
        }).json()  # fmt: skip
        dividend = fake_broker.post_activities([{"activity_type": "DIV", "net_amount": "1.25", "symbol": "MSFT"}])

        def marked() -> bool:
            trade(S="MSFT", p=201.5)
            rows = db.rows(f"SELECT mkt_px FROM {POSITIONS} WHERE symbol = 'MSFT'")
            return rows == [(Decimal("201.5"),)]

        wait_for(marked, 30, interval_s=0.2, what="the normal fill stored and marked by the normal tick")
        wait_for(lambda: db.rows(f"SELECT 1 FROM {CASH_FLOWS} WHERE id = %s", dividend[0]["id"]), 20,
                 what="the normal dividend stored")  # fmt: skip
        wait_for(lambda: db.rows("SELECT 1 FROM accounts.latest_prices WHERE symbol = 'MSFT'"), 20,
                 what="the normal tick flushed to latest_prices (a periodic flush, FLUSH_INTERVAL_S)")  # fmt: skip
        fills = db.rows(f"SELECT count(*) FROM {RAW_ACTIVITIES} WHERE order_id = %s", filled["id"])
        stored_poison = db.rows(f"SELECT count(*) FROM {CASH_FLOWS} WHERE amount IN (9.99, 8.88)")
        prices = {r[0] for r in db.rows("SELECT symbol FROM accounts.latest_prices")}
        commit_failures = programs.counter("state", "commit_failures")
        alive = {name: programs.running[name].process.poll() is None for name in names}
    finally:
        db.close()
        feed.close(linger=0)
        zctx.term()
        codes = programs.close()

    assert alive == dict.fromkeys(names, True)
    assert all_clean(codes), programs.logs()
    assert commit_failures == 0
    assert fills == [(1,)]
    assert stored_poison == [(0,)]
    assert "MSFT" in prices
    assert not any("\x00" in symbol for symbol in prices)
    assert after <= before + 1.0, f"broker requests per snapshot before {before:.2f}, with the poison {after:.2f}"

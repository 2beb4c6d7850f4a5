"""End to end over ipc://: fake broker, real bus/state/trades/snapshot/prices, real PostgreSQL.

A bracket order placed through unmodified alpaca-py fills at the fake broker → the open-positions
row exists (and was pushed on ``pos_channel_demo``); a feed tick moves its mark; the take-profit
fills → the row is deleted and one closed slice with ``exit_type = 'TP'`` exists.
"""

from __future__ import annotations

import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import requests
import zmq
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest

from coldharbour.config import Dsn
from coldharbour.sim.feed import Tick as SimTick
from coldharbour.sim.feed import encode_trade
from tests.integration.programs import HeartbeatWatch, Program
from tests.support import make_environ, wait_for

pytestmark = pytest.mark.integration

PROGRAMS = ("bus", "state", "trades", "snapshot", "prices")
POSITIONS = "accounts.account_open_positions_demo"
CLOSED = "accounts.account_closed_demo"


class BrokerProcess:
    """``python -m coldharbour.sim.broker --port 0`` as a subprocess; the port is read from stdout."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coldharbour.sim.broker", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else ""
        if "listening port=" not in line:
            self.stop()
            raise AssertionError(f"fake broker did not start: {line!r}")
        self.base_url = f"http://127.0.0.1:{int(line.split('port=')[1].split()[0])}"

    def set_prices(self, prices: dict[str, float]) -> None:
        requests.post(f"{self.base_url}/sim/prices", json=prices, timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for ipc:// sockets (paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="chm-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def broker() -> Iterator[BrokerProcess]:
    process = BrokerProcess()
    yield process
    process.stop()


def _rows(dsn: Dsn, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn.reveal(), autocommit=True) as conn:
        return conn.execute(query).fetchall()


def test_bracket_fill_tp_round_trip(migrated_dsn: Dsn, broker: BrokerProcess, short_dir: Path) -> None:
    feed_endpoint = f"ipc://{short_dir}/feed.sock"
    env = make_environ(
        migrated_dsn,
        short_dir / "run",
        ("demo",),
        ALPACA_API_KEY_DEMO="demo-key",
        ALPACA_SECRET_KEY_DEMO="demo-secret",
        ALPACA_BASE_URL_DEMO=broker.base_url,
        ZMQ_SIP_STREAM_ENDPOINT=feed_endpoint,
        FLUSH_INTERVAL_S="0.5",
        SNAPSHOT_SEC="5",
        BACKFILL_DAYS="1",
    )
    feed_ctx = zmq.Context()
    feed = feed_ctx.socket(zmq.PUB)
    feed.bind(feed_endpoint)
    bus_out = f"ipc://{short_dir}/run/bus-out.sock"
    programs = [Program(name, env, short_dir) for name in PROGRAMS]
    watch = HeartbeatWatch(bus_out)
    listener = psycopg.connect(migrated_dsn.reveal(), autocommit=True)
    try:
        listener.execute("LISTEN pos_channel_demo")
        watch.wait(lambda beats: set(PROGRAMS) <= set(beats), 30, what="every program's heartbeat")
        wait_for(lambda: broker_listening(broker), 20, what="trades stream listening")
        broker.set_prices({"AAPL": 100})
        client = TradingClient("demo-key", "demo-secret", paper=True, url_override=broker.base_url)
        order = client.submit_order(
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
        parent_id = str(order.id)  # type: ignore[union-attr]

        query = f"SELECT parent_id, symbol, side, qty, avg_fill, tp_px, sl_px FROM {POSITIONS}"
        rows = wait_for(lambda: _rows(migrated_dsn, query), 5, what=f"open row in {POSITIONS}")
        pushed = wait_for(lambda: _drain_notifies(listener), 5, what="pos_channel_demo NOTIFY")

        def marked() -> list[tuple[object, ...]]:
            feed.send(encode_trade(SimTick("AAPL", 105.0, 100, (), 0)))
            return _rows(migrated_dsn, f"SELECT mkt_px FROM {POSITIONS} WHERE mkt_px = 105")

        wait_for(marked, 10, interval_s=0.2, what="mkt_px from the feed")
        broker.set_prices({"AAPL": 111})
        wait_for(lambda: not _rows(migrated_dsn, query), 5, what="open row deleted after TP")
        closed = wait_for(
            lambda: _rows(migrated_dsn, f"SELECT entry_lot_id, qty, exit_type, exit_price FROM {CLOSED}"),
            5,
            what=f"closed slice in {CLOSED}",
        )
    finally:
        listener.close()
        watch.close()
        codes = {p.name: p.terminate() for p in reversed(programs)}
        feed.close(linger=0)
        feed_ctx.term()

    assert rows == [(parent_id, "AAPL", "long", Decimal(10), Decimal(100), Decimal(110), Decimal(90))]
    assert any(parent_id in payload for payload in pushed)
    assert closed == [(parent_id, Decimal(10), "TP", Decimal(110))]
    assert codes == dict.fromkeys(PROGRAMS, 0), {p.name: p.log()[-2000:] for p in programs}
    for program in programs:
        assert "demo-secret" not in program.log()


def broker_listening(broker: BrokerProcess) -> bool:
    """Return True once the trades program's stream is listening at the broker."""
    state = requests.get(f"{broker.base_url}/sim/state", timeout=10).json()
    return bool(state["stream"]["listeners"] == 1)


def _drain_notifies(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=0.2, stop_after=50)]

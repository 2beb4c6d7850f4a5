"""Missed-update recovery: fills the stream never delivered reach the database anyway.

Real processes over ipc:// (bus, state, trades, snapshot), real PostgreSQL, the fake broker
through unmodified alpaca-py. ``SNAPSHOT_SEC`` is an hour, so what heals the gap is the
resync ``trades`` asks for after every (re)connect, not a periodic snapshot:

- ``trades`` stopped (not running) while exits and new entries fill at the broker; once it is
  started again the database equals the broker;
- ``/sim/drop-stream`` in the middle of a burst of fills: ``trades`` reconnects by itself and
  the database equals the broker.

"Equals the broker": every order (legs included) with the broker's status and filled quantity,
every FILL activity, the open rows per symbol summing to the broker's position, the open rows
being exactly the entries still held, one closed slice per (entry, exit order) and no
reconciliation lot or exit; and ``state``'s own ledger check finds no difference.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest

from coldharbour.config import Dsn
from tests.fixtures.broker import FakeBroker
from tests.fixtures.stack import (
    CLOSED,
    POSITIONS,
    RAW_ACTIVITIES,
    RAW_ORDERS,
    Db,
    Programs,
    all_clean,
    broker_environ,
)
from tests.support import WaitTimeout, wait_for

pytestmark = pytest.mark.integration

CONVERGE_S = 15.0


class Account:
    """The ``demo`` account at the fake broker, and what the test expects from it."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.client = broker.trading_client()
        # The test's own reads of the expected slices (polled) share the key with the programs:
        # no per-key limit at this broker (tests/broker/test_rest.py covers the limit).
        broker.configure(rest_limit_per_min=0)

    def bracket(self, symbol: str, qty: int, take_profit: float, stop_loss: float) -> str:
        order = self.client.submit_order(
            MarketOrderRequest(
                symbol=symbol,
                qty=qty,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.GTC,
                order_class="bracket",
                take_profit=TakeProfitRequest(limit_price=take_profit),
                stop_loss=StopLossRequest(stop_price=stop_loss),
            )
        )
        return str(order.id)  # type: ignore[union-attr]

    def book(self) -> dict[str, Any]:
        book: dict[str, Any] = self.broker.state()["accounts"]["demo"]
        return book

    def expected_slices(self) -> set[tuple[str, str]]:
        """Return (entry, exit order) of every filled bracket exit leg."""
        slices = set()
        for order in self.book()["orders"]:
            if order["order_class"] != "bracket" or order["side"] != "buy" or order["status"] != "filled":
                continue
            legs = self.broker.request("GET", f"/v2/orders/{order['id']}", params={"nested": "true"}).json()["legs"]
            slices |= {(order["id"], leg["id"]) for leg in legs if leg["status"] == "filled"}
        return slices


def mismatches(db: Db, account: Account) -> list[str]:
    """Return how the database differs from the broker (empty: equal)."""
    book = account.book()
    found: list[str] = []
    broker_orders = {o["id"]: (o["status"], Decimal(o["filled_qty"])) for o in book["orders"]}
    stored_orders = {str(i): (s, q) for i, s, q in db.rows(f"SELECT id, status, filled_qty FROM {RAW_ORDERS}")}
    if stored_orders != broker_orders:
        found.append(f"orders: stored {sorted(stored_orders.items())} != broker {sorted(broker_orders.items())}")
    # A fill first seen on the stream keeps its stream id: executions are compared by execution id.
    broker_fills = {a["id"].partition("::")[2] for a in book["activities"] if a["activity_type"] == "FILL"}
    executions = db.rows(f"SELECT execution_id FROM {RAW_ACTIVITIES} WHERE activity_type = 'FILL'")
    stored_fills = {str(r[0]) for r in executions}
    if stored_fills != broker_fills:
        found.append(f"fill executions: stored {sorted(stored_fills)} != broker {sorted(broker_fills)}")
    broker_qty = {p["symbol"]: Decimal(p["qty"]) for p in book["positions"]}
    stored_qty = {
        s: q
        for s, q in db.rows(
            f"SELECT symbol, sum(CASE side WHEN 'long' THEN qty ELSE -qty END) FROM {POSITIONS} GROUP BY symbol"
        )
    }
    if stored_qty != broker_qty:
        found.append(f"positions: stored {stored_qty} != broker {broker_qty}")
    slices = db.rows(f"SELECT entry_lot_id, exit_order_id FROM {CLOSED}")
    if sorted(slices) != sorted(account.expected_slices()):
        found.append(f"closed slices: stored {sorted(slices)} != expected {sorted(account.expected_slices())}")
    return found


def wait_equal(db: Db, account: Account, what: str) -> None:
    """Wait until the database equals the broker; fail with the last difference."""
    last: list[list[str]] = [[]]

    def equal() -> bool:
        last[0] = mismatches(db, account)
        return not last[0]

    try:
        wait_for(equal, CONVERGE_S, interval_s=0.1, what=what)
    except WaitTimeout:
        raise AssertionError(f"{what}: {last[0]}") from None


def _environ(dsn: Dsn, directory: Path, broker: FakeBroker) -> dict[str, str]:
    return broker_environ(
        dsn, directory, broker.base_url,
        FLUSH_INTERVAL_S="3600", SNAPSHOT_SEC="3600", UI_HEARTBEAT_S="3600", BACKFILL_DAYS="1", CLOSED_SYNC_SEC="1",
    )  # fmt: skip


def _ledger_checked_clean(programs: Programs) -> tuple[int, int]:
    """Wait for two more ``state`` ledger checks; return (checks, mismatches) from its heartbeat."""
    checks = programs.counter("state", "ledger_checks")
    programs.wait_counter("state", "ledger_checks", checks + 2)
    return programs.counter("state", "ledger_checks"), programs.counter("state", "ledger_mismatches")


def test_e2e_fills_while_trades_is_stopped_are_recovered_when_it_starts(
    migrated_dsn: Dsn, fake_broker: FakeBroker, stack_dir: Path
) -> None:
    account, db = Account(fake_broker), Db(migrated_dsn)
    programs = Programs(_environ(migrated_dsn, stack_dir, fake_broker), stack_dir)
    try:
        programs.start("bus", "state", "snapshot", "trades")
        wait_for(lambda: fake_broker.listener_count() == 1, 20, what="trades stream listening")
        fake_broker.set_prices({"AAPL": 100, "MSFT": 200, "NVDA": 50})
        first = account.bracket("AAPL", 10, 110, 90)
        second = account.bracket("MSFT", 5, 220, 180)
        wait_equal(db, account, "the two entries mirrored live")

        assert programs.stop("trades") == 0
        wait_for(lambda: fake_broker.listener_count() == 0, 10, what="stream closed")
        fake_broker.set_prices({"AAPL": 111})  # first's take-profit fills
        third = account.bracket("NVDA", 20, 60, 45)  # a new entry
        fake_broker.set_prices({"MSFT": 179})  # second's stop fills
        fourth = account.bracket("AAPL", 3, 120, 100)
        missed = mismatches(db, account)

        programs.start("trades")
        wait_equal(db, account, "database equals the broker after trades started again")
        checks, differences = _ledger_checked_clean(programs)
        open_rows = {r[0] for r in db.rows(f"SELECT parent_id FROM {POSITIONS}")}
        recon = db.rows(
            f"SELECT count(*) FROM {CLOSED} WHERE entry_lot_id LIKE 'recon:%%' OR exit_order_id LIKE 'recon:%%'"
        )
        corrections = programs.counter("state", "recon_corrections")
    finally:
        db.close()
        codes = programs.close()

    assert all_clean(codes), programs.logs()
    assert missed, "the stopped stream should have left the database behind"
    assert open_rows == {third, fourth}
    assert sorted(e for e, _ in account.expected_slices()) == sorted((first, second))
    assert recon == [(0,)]
    assert corrections == 0
    assert (checks >= 2, differences) == (True, 0)


def test_e2e_drop_stream_during_a_burst_of_fills_converges(
    migrated_dsn: Dsn, fake_broker: FakeBroker, stack_dir: Path
) -> None:
    account, db = Account(fake_broker), Db(migrated_dsn)
    programs = Programs(_environ(migrated_dsn, stack_dir, fake_broker), stack_dir)
    symbols = ("AAPL", "MSFT", "NVDA", "AMZN")
    try:
        programs.start("bus", "state", "snapshot", "trades")
        wait_for(lambda: fake_broker.listener_count() == 1, 20, what="trades stream listening")
        connects = fake_broker.state()["stream"]["connections_total"]
        fake_broker.set_prices(dict.fromkeys(symbols, 100))
        entries = [account.bracket(symbols[i % 4], 1 + i, 104, 96) for i in range(8)]
        dropped = fake_broker.drop_stream()  # in the middle of the burst
        entries += [account.bracket(symbols[i % 4], 1 + i, 104, 96) for i in range(8, 16)]
        fake_broker.set_prices({"AAPL": 105, "MSFT": 95})  # take-profits and stops of half the entries
        entries += [account.bracket(symbols[i % 4], 1 + i, 110, 90) for i in range(16, 20)]

        wait_for(lambda: fake_broker.state()["stream"]["connections_total"] > connects, 20, what="trades reconnected")
        wait_equal(db, account, "database equals the broker after the stream was dropped")
        checks, differences = _ledger_checked_clean(programs)
        open_rows = {r[0] for r in db.rows(f"SELECT parent_id FROM {POSITIONS}")}
        reconnects = programs.wait_counter("trades", "stream_connects", 2)  # trades' heartbeat can trail the reconnect
        corrections = programs.counter("state", "recon_corrections")
    finally:
        db.close()
        codes = programs.close()

    closed_entries = {e for e, _ in account.expected_slices()}
    assert all_clean(codes), programs.logs()
    assert dropped == 1
    assert reconnects >= 2
    assert len(closed_entries) == 8  # the AAPL and MSFT entries placed before the price move
    assert open_rows == set(entries) - closed_entries
    assert corrections == 0
    assert (checks >= 2, differences) == (True, 0)

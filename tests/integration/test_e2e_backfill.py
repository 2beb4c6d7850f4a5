"""Start-up backfill: a fake account with thousands of historical orders is mirrored exactly.

The history (``tests.integration.history``: brackets exiting at TP, stops replaced twice whose
grandchild fills, partial fills of market orders and of a bracket entry and exit, short
brackets, and three brackets still open) is written into the fake broker's engine before it
serves, in the past, so ``snapshot``'s backfill has to page through it (500 orders and 100
activities per page). Real processes over ipc:// (bus, state, snapshot) and real PostgreSQL.

Then: ``snapshot`` reports every order and fill read; the closed slices are exactly the
history's (exit order and type per lot), the open rows are the three open brackets, Σ P&L is
the broker's realised cash; ``state``'s ledger check (``hb.state``: ``ledger_checks`` ≥ 1,
``ledger_mismatches`` = 0) and a rebuild in the test from the stored raw orders and FILL
activities (``db.loads`` + ``domain.ledger.rebuild``) both equal what ``state`` wrote, and no
reconciliation lot or exit was needed.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from coldharbour.config import Dsn
from coldharbour.db import loads
from coldharbour.db.names import account_names
from coldharbour.domain.ledger import Ledger, rebuild
from coldharbour.sim.broker import BrokerServer
from coldharbour.sim.engine import DEFAULT_ACCOUNTS
from tests.fixtures.broker import FakeBroker
from tests.fixtures.stack import CLOSED, POSITIONS, Db, Programs, all_clean, broker_environ
from tests.integration.history import History
from tests.support import make_settings, wait_for

pytestmark = pytest.mark.integration

ORDER_COUNT = 5000  # about 10 s on a 2-core machine, generation included
INITIAL_CASH = Decimal(100_000)
BACKFILL_DONE = re.compile(r"backfill done account=demo orders=(\d+) fills=(\d+)")


def _broker_with_history(orders: int) -> tuple[FakeBroker, History]:
    server = BrokerServer(DEFAULT_ACCOUNTS)
    history = History(server.context.engine, datetime.now(UTC) - timedelta(days=3))
    history.build(orders)
    return FakeBroker(server, DEFAULT_ACCOUNTS).start(), history


def _rebuilt(dsn: Dsn) -> Ledger:
    async def load() -> Ledger:
        names = account_names(make_settings(dsn, accounts=("demo",)), "demo")
        async with await psycopg.AsyncConnection.connect(dsn.reveal()) as conn:
            orders, fills = await loads.load_history(conn, names)
        return rebuild(orders, fills)

    return asyncio.run(load())


def test_e2e_backfill_of_5000_orders_equals_the_rebuild(migrated_dsn: Dsn, stack_dir: Path) -> None:
    broker, history = _broker_with_history(ORDER_COUNT)
    engine = broker.server.context.engine
    env = broker_environ(
        migrated_dsn, stack_dir, broker.base_url,
        BACKFILL_DAYS="5", SNAPSHOT_SEC="3600", FLUSH_INTERVAL_S="3600", UI_HEARTBEAT_S="3600", CLOSED_SYNC_SEC="2",
    )  # fmt: skip
    programs, db = Programs(env, stack_dir), Db(migrated_dsn)
    closed_query = f"SELECT entry_lot_id, exit_order_id, exit_type FROM {CLOSED}"
    try:
        programs.start("bus", "state", "snapshot")
        done = wait_for(
            lambda: BACKFILL_DONE.search(programs.running["snapshot"].log()), 60, interval_s=0.2, what="backfill done"
        )
        wait_for(lambda: len(db.rows(closed_query)) >= len(history.expected), 60, interval_s=0.2, what="every slice")
        wait_for(lambda: len(db.rows(f"SELECT 1 FROM {POSITIONS}")) == 3, 30, interval_s=0.2, what="open rows")
        checks = programs.counter("state", "ledger_checks")
        programs.wait_counter("state", "ledger_checks", checks + 2, timeout_s=30)
        mismatches = programs.counter("state", "ledger_mismatches")
        corrections = programs.counter("state", "recon_corrections")
        closed = db.rows(closed_query)
        slices = db.dicts(f"SELECT entry_lot_id, exit_order_id, qty, pnl_cash, pnl_cash_fifo, exit_type FROM {CLOSED}")
        open_rows = db.dicts(f"SELECT parent_id, symbol, qty, avg_fill FROM {POSITIONS}")
        ledger = _rebuilt(migrated_dsn)
    finally:
        db.close()
        codes = programs.close()
        broker.stop()

    book = engine.accounts["demo"]
    # What ``GET /v2/orders?nested=true`` lists: top-level orders and their current legs (a
    # replaced leg's earlier versions are not listed; the current one names it in ``replaces``).
    listed = [o for o in engine.orders.values() if o.parent_id is None]
    listed += [engine.orders[leg] for o in list(listed) for leg in o.leg_ids]
    fills = [a for a in book.activities if a["activity_type"] == "FILL"]
    open_cost = sum(Decimal(5) * Decimal(100) for _ in history.open_entries)
    assert all_clean(codes), programs.logs()
    assert done is not None
    assert len(engine.orders) >= ORDER_COUNT
    assert (int(done.group(1)), int(done.group(2))) == (len(listed), len(fills))  # every page was read
    assert {(e, x): t for e, x, t in closed} == history.expected
    assert {r["parent_id"] for r in open_rows} == set(history.open_entries)
    assert sum(s["pnl_cash"] for s in slices) == sum(s["pnl_cash_fifo"] for s in slices)
    assert sum(s["pnl_cash"] for s in slices) == book.cash - INITIAL_CASH + open_cost
    assert mismatches == 0
    assert corrections == 0
    assert {
        key: (s.qty, s.pnl_cash, s.pnl_cash_fifo, s.exit_type) for key, s in ledger.slices.items()
    } == {(s["entry_lot_id"], s["exit_order_id"]): (s["qty"], s["pnl_cash"], s["pnl_cash_fifo"], s["exit_type"])
          for s in slices}  # fmt: skip
    assert {lot.parent_id: (lot.symbol, lot.qty, lot.avg_fill) for lot in ledger.lots.values()} == {
        r["parent_id"]: (r["symbol"], r["qty"], r["avg_fill"]) for r in open_rows
    }

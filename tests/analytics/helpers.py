"""Arrange helpers for the analytics tests: the test plays ``state`` (a superuser connection
writing fixture rows), builds worker contexts on the in-proc bus, and runs workers as tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import zmq
from psycopg import sql

from coldharbour.config import Dsn, Settings
from coldharbour.db.names import account_names, shared_names
from coldharbour.domain.schedule import Session, ny_wall_to_utc
from coldharbour.runtime import WorkerContext
from tests.fixtures.bus import InprocBus
from tests.support import make_settings

STOP_TIMEOUT_S = 10.0


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """Return an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def settings_for(dsn: Dsn, tmp_path: Path, bus: InprocBus, broker_url: str | None = None, **env: str) -> Settings:
    """Return settings for one account ``demo`` on the test bus (and the fake broker, if given)."""
    extra = {"CHMGR_BUS_IN": bus.bus_in, "CHMGR_BUS_OUT": bus.bus_out}
    if broker_url is not None:
        extra |= {"ALPACA_BASE_URL_DEMO": broker_url, "ALPACA_SECRET_KEY_DEMO": "demo-secret"}
    extra |= env
    settings: Settings = make_settings(dsn, tmp_path, ("demo",), **extra)
    return settings


def context(program: str, settings: Settings, bus: InprocBus) -> WorkerContext:
    """Return a worker context publishing on the in-proc bus (shares the bus's zmq context).

    Its publisher is proven connected first, so a message the program publishes once at start
    is not lost to the slow joiner (``InprocBus.connect``).
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = bus.ctx
    worker = WorkerContext(program, settings, ctx)
    bus.connect(worker.publisher)
    return worker


@contextlib.asynccontextmanager
async def running(
    start: Callable[[asyncio.Event], Awaitable[None]], ctx: WorkerContext
) -> AsyncIterator[asyncio.Future[None]]:
    """Run ``start(stop)`` as a task for the block, then stop it and re-raise its failure."""
    stop = asyncio.Event()
    task: asyncio.Future[None] = asyncio.ensure_future(start(stop))
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, STOP_TIMEOUT_S)
        finally:
            ctx.close()


def admin(dsn: Dsn) -> psycopg.Connection[tuple[object, ...]]:
    """Return an autocommit superuser connection (the test writing as ``state`` would)."""
    return psycopg.connect(dsn.reveal(), autocommit=True)


def insert(conn: psycopg.Connection[tuple[object, ...]], table: sql.Identifier, row: Mapping[str, object]) -> None:
    """Insert one row given as a column → value mapping."""
    statement = sql.SQL("INSERT INTO {t} ({c}) VALUES ({v})").format(
        t=table,
        c=sql.SQL(", ").join(map(sql.Identifier, row)),
        v=sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    conn.execute(statement, list(row.values()))


class Rows:
    """Builders for the rows ``state`` would have written, with sensible defaults."""

    def __init__(self, settings: Settings, slug: str = "demo") -> None:
        self.conn = admin(settings.dsn)
        self.names = account_names(settings, slug)
        self.shared = shared_names(settings)

    def close(self) -> None:
        """Close the superuser connection."""
        self.conn.close()

    def cash_flow(
        self, flow_id: str, ts: datetime, amount: str, flow_type: str, category: str, **extra: object
    ) -> None:
        """Insert a ``cash_flows`` row."""
        row = {"id": flow_id, "ts": ts, "amount": Decimal(amount), "type": flow_type, "category": category, **extra}
        insert(self.conn, self.names.cash_flows.ident, row)

    def fill(self, fill_id: str, ts: datetime, symbol: str, side: str, qty: str, price: str) -> None:
        """Insert a FILL into ``raw_activities``."""
        row = {
            "id": fill_id, "activity_type": "FILL", "transaction_time": ts, "symbol": symbol, "side": side,
            "qty": Decimal(qty), "price": Decimal(price),
        }  # fmt: skip
        insert(self.conn, self.names.raw_activities.ident, row)

    def closed(self, lot: str, exit_order: str, pnl: str, exit_type: str = "TP", **extra: object) -> None:
        """Insert a closed slice: long 10 @ 100 from 2024-03-01 to 2024-03-04 unless overridden."""
        qty = Decimal(str(extra.pop("qty", "10")))
        entry = Decimal(str(extra.pop("entry_price", "100")))
        row = {
            "entry_lot_id": lot, "exit_order_id": exit_order, "symbol": "AAPL", "side": "long", "qty": qty,
            "entry_time": utc(2024, 3, 1, 15), "entry_price": entry, "exit_time": utc(2024, 3, 4, 15),
            "exit_price": entry + Decimal(pnl) / qty, "exit_type": exit_type, "pnl_cash": Decimal(pnl),
            "pnl_cash_fifo": Decimal(pnl), **extra,
        }  # fmt: skip
        insert(self.conn, self.names.closed.ident, row)

    def position(
        self, parent_id: str, symbol: str, qty: str, avg_fill: str, filled_at: datetime, **extra: object
    ) -> None:
        """Insert an open long position."""
        row = {
            "parent_id": parent_id, "symbol": symbol, "side": "long", "qty": Decimal(qty),
            "avg_fill": Decimal(avg_fill), "filled_at": filled_at, **extra,
        }  # fmt: skip
        insert(self.conn, self.names.positions.ident, row)

    def bar(self, symbol: str, ts: datetime, close: str) -> None:
        """Insert a 1-minute bar (open = high = low = close)."""
        price = Decimal(close)
        row = {"symbol": symbol, "ts": ts, "open": price, "high": price, "low": price, "close": price}
        insert(self.conn, self.shared.price_bars_1min.ident, row)

    def session(self, day: date) -> Session:
        """Insert a regular 04:00/09:30/16:00/20:00 New York session and return it."""
        from datetime import time

        session = Session(
            session_date=day,
            pre_open_utc=ny_wall_to_utc(day, time(4)),
            open_utc=ny_wall_to_utc(day, time(9, 30)),
            close_utc=ny_wall_to_utc(day, time(16)),
            post_close_utc=ny_wall_to_utc(day, time(20)),
        )
        row = {
            "session_date": day, "pre_open_utc": session.pre_open_utc, "open_utc": session.open_utc,
            "close_utc": session.close_utc, "post_close_utc": session.post_close_utc,
        }  # fmt: skip
        insert(self.conn, self.shared.market_schedule.ident, row)
        return session

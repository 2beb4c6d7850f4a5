"""Rows written the way `state` writes them, each with its NOTIFY in the same transaction.

The payloads are built by ``coldharbour.db.notify`` (the push contract of docs/spec.md §6, the code
`state` uses), so the page is tested against exactly what the service sends. The rows follow
docs/spec.md §2.2/§2.3; a test may also write a row without its NOTIFY (what a missed push looks
like) or send only a ``refetch``.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from coldharbour.config import Dsn
from coldharbour.db import notify
from coldharbour.db.names import AccountNames
from coldharbour.db.rows import DAILY_COLUMNS, POSITION_COLUMNS, daily_values
from coldharbour.domain.equity import DailyRow
from coldharbour.domain.types import CLOSED_COLUMNS


def lot(parent_id: str, symbol: str = "AAPL", **values: Any) -> dict[str, Any]:
    """Return an open-position row (every column; a 10-share long at 100 with SL 95 / TP 110)."""
    now = datetime.now(UTC)
    row: dict[str, Any] = dict.fromkeys(POSITION_COLUMNS)
    row.update(
        parent_id=parent_id, symbol=symbol, side="long", filled_at=now, qty=Decimal(10),
        avg_fill=Decimal(100), avg_px_symbol=Decimal(100), sl_child=f"{parent_id}-sl", sl_px=Decimal(95),
        tp_child=f"{parent_id}-tp", tp_px=Decimal(110), moved_flag="—", buy_value=Decimal(1000),
        holding_days=0, days_to_expire=90, updated_at=now,
    )  # fmt: skip
    row.update(values)
    return row


def closed_slice(entry_lot_id: str, symbol: str = "AAPL", **values: Any) -> dict[str, Any]:
    """Return a closed slice (a 10-share long 100 → 110 taken by its TP)."""
    now = datetime.now(UTC)
    row: dict[str, Any] = dict.fromkeys(CLOSED_COLUMNS)
    row.update(
        entry_lot_id=entry_lot_id, exit_order_id=f"{entry_lot_id}-tp", exit_parent_id=entry_lot_id, symbol=symbol,
        side="long", qty=Decimal(10), entry_time=now, entry_price=Decimal(100), exit_time=now,
        exit_price=Decimal(110), exit_type="TP", pnl_cash=Decimal(100), pnl_cash_fifo=Decimal(100),
        diff_pnl=Decimal(0), pnl_pct=Decimal(10), return_pct=Decimal(10), duration_sec=60,
    )  # fmt: skip
    row.update(values)
    return row


class Tables:
    """A writer connection on one account's tables (the test plays `state`)."""

    def __init__(self, dsn: Dsn, names: AccountNames) -> None:
        self.names = names
        self.conn = psycopg.connect(dsn.reveal(), autocommit=False)

    def close(self) -> None:
        """Close the connection (a second close does nothing)."""
        if not self.conn.closed:
            self.conn.close()

    def _send(self, notes: list[notify.Notification]) -> None:
        for note in notes:
            self.conn.execute("SELECT pg_notify(%s, %s)", (note.channel, note.payload))

    def _upsert(self, table: sql.Identifier, row: dict[str, Any], key: tuple[str, ...]) -> None:
        columns = list(row)
        statement = sql.SQL("INSERT INTO {t} ({c}) VALUES ({v}) ON CONFLICT ({k}) DO UPDATE SET {u}").format(
            t=table,
            c=sql.SQL(", ").join(map(sql.Identifier, columns)),
            v=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            k=sql.SQL(", ").join(map(sql.Identifier, key)),
            u=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns),
        )
        self.conn.execute(statement, list(row.values()))

    def put_lots(self, *rows: dict[str, Any], push: bool = True) -> None:
        """Upsert open lots; announce them (one ``row`` or a ``batch``) unless ``push`` is False."""
        for row in rows:
            self._upsert(self.names.positions.ident, row, ("parent_id",))
        if push:
            payload = {"row": rows[0]} if len(rows) == 1 else {"op": "batch", "rows": list(rows), "deletes": []}
            self._send([notify.Notification(self.names.pos_channel, notify.to_json(payload))])
        self.conn.commit()

    def drop_lot(self, parent_id: str) -> None:
        """Delete an open lot and announce it (``{"op": "delete"}``)."""
        statement = sql.SQL("DELETE FROM {t} WHERE parent_id = %s").format(t=self.names.positions.ident)
        self.conn.execute(statement, [parent_id])
        payload = notify.to_json({"op": "delete", "parent_id": parent_id})
        self._send([notify.Notification(self.names.pos_channel, payload)])
        self.conn.commit()

    def refetch(self, parent_id: str) -> None:
        """Send only ``{"op": "refetch", "parent_id": ...}`` (what `state` sends for an oversized row)."""
        payload = notify.to_json({"op": "refetch", "parent_id": parent_id})
        self._send([notify.Notification(self.names.pos_channel, payload)])
        self.conn.commit()

    def heartbeat(self) -> None:
        """Send the UI heartbeat on the positions channel."""
        self._send([notify.heartbeat(self.names.pos_channel, datetime.now(UTC))])
        self.conn.commit()

    def insert_closed(self, *rows: dict[str, Any]) -> None:
        """Insert final closed slices and announce them (``{"op": "insert"}``)."""
        for row in rows:
            self._upsert(self.names.closed.ident, row, ("entry_lot_id", "exit_order_id"))
        payload = notify.to_json({"op": "insert", "rows": list(rows)})  # docs/spec.md §6 (small: one payload)
        self._send([notify.Notification(self.names.closed_channel, payload)])
        self.conn.commit()

    def set_metrics(self, document: dict[str, Any]) -> None:
        """Store the KPI document and announce it (``{"op": "metrics"}``)."""
        now = datetime.now(UTC)
        row = {"id": "latest", "metrics_payload": json.dumps(document), "updated_at": now}
        self._upsert(self.names.metrics.ident, row, ("id",))
        self._send([notify.metrics_changed(self.names.metrics_channel, now)])
        self.conn.commit()

    def add_equity_day(self, day: date, cash: Decimal, market_value: Decimal, cumulative_return: Decimal) -> None:
        """Write one daily equity row (no channel: the dashboard notices the table changed)."""
        row = {
            "date": day, "deposit": Decimal(100_000), "cash_balance": cash, "market_value": market_value,
            "daily_return": Decimal(0), "cumulative_return": cumulative_return, "drawdown": Decimal(0),
            "updated_at": datetime.now(UTC),
        }  # fmt: skip
        self._upsert(self.names.equity_full.ident, row, ("date",))
        self.conn.commit()

    def put_days(self, *days: DailyRow) -> None:
        """Upsert daily equity rows as `state` writes them (``db.rows.daily_values``; no channel)."""
        for day in days:
            row = {**dict(zip(DAILY_COLUMNS, daily_values(day), strict=True)), "updated_at": datetime.now(UTC)}
            self._upsert(self.names.equity_full.ident, row, ("date",))
        self.conn.commit()

    def put_intraday(self, ts: datetime, cumulative_return: Decimal) -> None:
        """Write one intraday equity point (no channel: the dashboard notices the table changed)."""
        row = {
            "ts": ts, "deposit": Decimal(100_000), "cumulative_return": cumulative_return, "drawdown": Decimal(0),
            "realised_return": Decimal(0), "updated_at": datetime.now(UTC),
        }  # fmt: skip
        self._upsert(self.names.equity_intraday.ident, row, ("ts",))
        self.conn.commit()

"""Run ``workers.state.amain`` in-process on the in-proc bus and a real database, with a LISTEN client."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from coldharbour.domain.types import NS_PER_SECOND, BrokerPosition, Fill, Order
from coldharbour.messages import MetricsComputed, Msg, Tick, topic_metrics, topic_tick
from coldharbour.runtime import WorkerContext
from tests.support import async_wait_for, make_settings
from workers.state import amain

T0 = 1_709_305_200 * NS_PER_SECOND  # 2024-03-01 15:00:00 UTC
# Every channel state can notify on for the two test accounts, so that the notifications the
# writer counted and those received can be compared (see ``_sentinel_stored``).
CHANNELS = (
    "pos_channel_demo", "closed_channel_demo", "metrics_channel_demo",
    "pos_channel_paper_1", "closed_channel_paper_1", "metrics_channel_paper_1",
)  # fmt: skip


def new_id() -> str:
    return str(uuid.uuid4())


def order(**fields: Any) -> Order:
    base: dict[str, Any] = {"symbol": "AAPL", "side": "buy", "order_type": "market", "status": "new",
                            "created_at": T0, "updated_at": T0, "qty": Decimal(10)}
    base.update(fields)
    return Order(**base)


def fill(order_id: str, **fields: Any) -> Fill:
    base: dict[str, Any] = {"order_id": order_id, "symbol": "AAPL", "side": "buy", "qty": Decimal(10),
                            "price": Decimal(100), "ts": T0, "execution_id": new_id()}
    base.update(fields)
    return Fill(**base)


def position(qty: str, avg: str, symbol: str = "AAPL") -> BrokerPosition:
    return BrokerPosition(symbol=symbol, qty=Decimal(qty), avg_entry_price=Decimal(avg))


class StateHarness:
    """One running ``state`` plus a LISTEN connection on the demo channels."""

    def __init__(self, dsn: Any, bus: Any, **env: str) -> None:
        env.setdefault("FLUSH_INTERVAL_S", "3600")
        env.setdefault("UI_HEARTBEAT_S", "3600")
        self.dsn, self.bus = dsn, bus
        env.update(CHMGR_BUS_IN=bus.bus_in, CHMGR_BUS_OUT=bus.bus_out)
        self.settings = make_settings(dsn, **env)  # type: ignore[arg-type]
        self.notes: list[tuple[str, dict[str, Any]]] = []
        self._sentinels = 0

    async def start(self) -> None:
        self.listener = await psycopg.AsyncConnection.connect(self.dsn.reveal(), autocommit=True)
        for channel in CHANNELS:
            await self.listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self._listen = asyncio.create_task(self._collect())
        await self.launch()

    async def launch(self) -> None:
        self._notes_at_launch = len(self.notes)
        self.ctx = WorkerContext("state", self.settings, self.bus.ctx)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(amain(self.settings, self.ctx, self.stop))
        # Slow joiner: re-send a probe tick until the consumer has seen one.
        await async_wait_for(self._probe, 15, interval_s=0.02, what="state subscribed")

    def _probe(self) -> bool:
        if self.task.done():
            self.task.result()
        self.bus.inject(topic_tick("ZZPROBE"), Tick(symbol="ZZPROBE", price=1.0, ts_event=T0))
        return self.ctx.counters["ticks"] >= 1

    async def _collect(self) -> None:
        async for note in self.listener.notifies():
            self.notes.append((note.channel, json.loads(note.payload)))

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)
        sent = self.ctx.counters["notifications"]
        await async_wait_for(lambda: len(self.notes) - self._notes_at_launch >= sent, 15, what="last notifications")
        self.ctx.close()

    async def close(self) -> None:
        if not self.task.done():
            await self.shutdown()
        self._listen.cancel()
        await asyncio.gather(self._listen, return_exceptions=True)
        await self.listener.close()

    def inject(self, topic: str, message: Msg) -> None:
        self.bus.inject(topic, message)

    async def settle(self) -> None:
        """Wait until every message injected so far was handled (a KPI sentinel on paper-1)."""
        self._sentinels += 1
        payload = json.dumps({"sentinel": self._sentinels})
        expected = {"sentinel": self._sentinels}
        self.inject(topic_metrics("paper_1"), MetricsComputed(account="paper_1", payload=payload, computed_at=T0))
        await async_wait_for(lambda: self._sentinel_stored(expected), 15, what="sentinel")

    async def _sentinel_stored(self, expected: dict[str, int]) -> bool:
        rows = await self.query("SELECT metrics_payload FROM accounts.account_metrics_paper_1")
        if not rows or json.loads(rows[0][0]) != expected:
            return False
        # The NOTIFY of that commit may still be in flight to the listener: wait for it too.
        if sum(c == "metrics_channel_paper_1" for c, _ in self.notes) < self._sentinels:
            return False
        # And the consumer must have resumed after that commit: its counters (commits,
        # notifications) are bumped when the commit returns, which can trail the NOTIFY.
        return self.ctx.counters["notifications"] >= len(self.notes) - self._notes_at_launch

    def mark(self) -> int:
        """Return the current notification count (for ``notes_since``)."""
        return len(self.notes)

    def notes_since(self, start: int, channel: str) -> list[dict[str, Any]]:
        return [payload for c, payload in self.notes[start:] if c == channel]

    async def query(self, text: str, *params: object) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.dsn.reveal()) as conn:
            cursor = await conn.execute(text, params or None)
            return await cursor.fetchall()

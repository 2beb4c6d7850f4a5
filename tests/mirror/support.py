"""A mirror without PostgreSQL: events in, typed changes out, and a dict "store" that applies them.

``Driver`` runs the real ``StateOwner.apply`` (stage, commit, swap, barriers) with a store that
commits into dicts, and keeps every plan it swapped in; ``Store`` applies open-row and slice
changes by natural key, the way the upserts do, so a test can compare what was *written* with a
rebuild.

Broker payload shapes: the orders and fills are domain values (``broker/convert.py`` already
turned Alpaca's ``Order``/``TradeUpdate`` into them); ids are UUIDs as Alpaca's are
(https://docs.alpaca.markets/reference/getorderbyorderid).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from coldharbour.db import rows as r
from coldharbour.domain import changes as ch
from coldharbour.domain.types import CLOSED_COLUMNS, NS_PER_SECOND, Fill, Order
from coldharbour.messages import CorporateActionsPage, FillsPage, Msg
from coldharbour.mirror import Event, LedgerCheck, Mirror, Plan, StateOwner
from coldharbour.mirror.owner import History, Stored
from tests.support import make_settings

T0 = 1_709_305_200 * NS_PER_SECOND  # 2024-03-01 15:00:00 UTC (a Friday, in market hours)
NOW = T0 + 3600 * NS_PER_SECOND
_NS = uuid.UUID("6f1c3a52-8f0e-4d3b-9d8e-2a1b7c4d5e6f")


def oid(name: str) -> str:
    """Return a stable UUID for a readable order name (``"A"``, ``"A-tp"``…)."""
    return str(uuid.uuid5(_NS, name))


def order(name: str, **fields: Any) -> Order:
    base: dict[str, Any] = {"id": oid(name), "symbol": "AAPL", "side": "buy", "order_type": "market",
                            "status": "filled", "created_at": T0, "updated_at": T0, "qty": Decimal(10)}
    base.update(fields)
    return Order(**base)


def bracket(name: str, *, qty: int = 10, symbol: str = "AAPL", at: int = T0) -> list[Order]:
    """Return a bracket entry ``name`` with legs ``name-tp`` (limit 110) and ``name-sl`` (stop 95)."""
    entry = order(name, symbol=symbol, qty=Decimal(qty), order_class="bracket", created_at=at, updated_at=at,
                  legs=(oid(f"{name}-tp"), oid(f"{name}-sl")))
    take = order(f"{name}-tp", symbol=symbol, side="sell", qty=Decimal(qty), order_type="limit", status="new",
                 limit_price=Decimal(110), parent_id=entry.id, order_class="bracket", created_at=at, updated_at=at)
    stop = order(f"{name}-sl", symbol=symbol, side="sell", qty=Decimal(qty), order_type="stop", status="new",
                 stop_price=Decimal(95), parent_id=entry.id, order_class="bracket", created_at=at, updated_at=at)
    return [entry, take, stop]


def fill(name: str, *, qty: int | str = 10, price: int | str = 100, side: str = "buy", at: int = T0,
         symbol: str = "AAPL", execution: str | None = None) -> Fill:
    return Fill(order_id=oid(name), symbol=symbol, side=side, qty=Decimal(qty), price=Decimal(price),  # type: ignore[arg-type]
                ts=at, execution_id=execution or str(uuid.uuid4()), cum_qty=Decimal(qty))


def mirror(**env: str) -> Mirror:
    """Return a mirror of the test accounts (``demo``, ``paper_1``); no database is opened."""
    return Mirror(make_settings("postgresql://unused@127.0.0.1:9/none", **env), Counter())  # type: ignore[arg-type]


class Store:
    """Open rows and closed slices as the tables would hold them after the changes."""

    def __init__(self) -> None:
        self.open: dict[str, dict[str, object]] = {}
        self.closed: dict[tuple[str, str], dict[str, object]] = {}

    def apply(self, change: ch.Change) -> None:
        match change:
            case ch.OpenRows(upserts=ups, deletes=dels):
                for row in ups:
                    self.open[row.parent_id] = dict(zip(r.POSITION_COLUMNS, r.open_row_values(row), strict=True))
                for pid in dels:
                    self.open.pop(pid, None)
            case ch.ClosedSlices(upserts=found, deletes=dels):
                for key in dels:
                    self.closed.pop(key, None)
                for one in found:
                    self.closed[one.key] = dict(zip(CLOSED_COLUMNS, r.closed_values(one), strict=True))


class DictStore:
    """``mirror.owner.Store`` over a ``Store``: every commit succeeds; history reads are recorded."""

    def __init__(self, tables: Store) -> None:
        self.tables = tables
        self.commits: list[list[ch.Change]] = []
        self.checks: list[LedgerCheck] = []

    async def commit(self, changes: Sequence[ch.Change]) -> ch.CommitOutcome:
        self.commits.append(list(changes))
        for change in changes:
            self.tables.apply(change)
        return ch.CommitOutcome.COMMITTED

    async def load_history(self, slug: str) -> History | None:
        self.checks.append(LedgerCheck(slug))
        return None  # the check itself is tested with a database (tests/workers)

    async def load_marks(self) -> dict[str, tuple[Decimal, int]]:
        return {}

    async def load_account(self, slug: str) -> Stored:
        return [], [], set(), {}, set(), []


class Outbox:
    """``mirror.owner.Publisher`` that keeps what was published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Msg]] = []

    def publish(self, topic: str, message: Msg) -> Msg:
        self.sent.append((topic, message))
        return message


class _RecordingOwner(StateOwner):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.taken: list[Plan] = []

    def take(self, plan: Plan) -> None:
        super().take(plan)
        self.taken.append(plan)


class Driver:
    """Feed events to a mirror through ``StateOwner.apply``; remember plans, changes and messages."""

    def __init__(self, target: Mirror | None = None) -> None:
        self.mirror = target or mirror()
        self.store = Store()
        self.database = DictStore(self.store)
        self.outbox = Outbox()
        self.owner = _RecordingOwner(self.mirror, self.database, self.outbox, self.mirror.counters)
        self.plans: list[Plan] = []

    @property
    def checks(self) -> list[LedgerCheck]:
        return self.database.checks

    def feed(self, *events: Event, now: int = NOW) -> list[Plan]:
        """Run one batch; return its plans (each committed and swapped in)."""
        before = len(self.owner.taken)
        asyncio.run(self.owner.apply(list(events), now))
        plans = self.owner.taken[before:]
        self.plans += plans
        return plans

    @staticmethod
    def changes(plans: Iterable[Plan]) -> list[ch.Change]:
        return [change for plan in plans for change in plan.changes]

    @staticmethod
    def messages(plans: Iterable[Plan]) -> list[Msg]:
        return [message for plan in plans for _, message in plan.messages]


def of_kind(changes: Iterable[ch.Change], kind: type[Any]) -> list[Any]:
    """Return the changes of one kind."""
    return [c for c in changes if isinstance(c, kind)]


def event(topic: str, message: Msg) -> tuple[str, Msg]:
    return (topic, message)


def history_complete(upto: int, slug: str = "demo") -> list[Event]:
    """What ``snapshot`` sends before a full snapshot: the empty last pages of a fill read and of a
    corporate read from the backfill floor, saying both are complete up to ``upto``."""
    return [(f"fills.{slug}", FillsPage(account=slug, fills=(), complete_after_ns=0, complete_to_ns=upto,
                                        is_from_floor=True)),
            (f"fills.{slug}", CorporateActionsPage(account=slug, actions=(), complete_after_ns=0, complete_to_ns=upto,
                                                   is_from_floor=True))]

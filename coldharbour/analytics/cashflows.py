"""Account activities since the last seen id → ``ActivitiesPage`` (raw activities + cash flows).

Incremental (D43): the cursor is the newest stored activity id, read from the DB once at start;
each run asks the broker only for activities after ``query_after(cursor)`` (a week of overlap,
because a late-booked dividend carries an id older than ones already seen) and publishes only
ids not seen before. Nothing is re-sent on an unchanged account; ``state`` writes what it gets
with idempotent upserts, so an occasional repeat is harmless anyway.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final, Protocol

from psycopg_pool import AsyncConnectionPool

from coldharbour.bus import Publisher
from coldharbour.db import queries
from coldharbour.db.names import AccountNames
from coldharbour.domain.cashflows import (
    CashFlow,
    Category,
    convert_activities,
    newest_id,
    query_after,
    select_new,
)
from coldharbour.domain.money import InvalidMoney, to_decimal_or_none
from coldharbour.domain.types import from_datetime
from coldharbour.messages import ActivitiesPage, ActivityRecord, topic_cash

log = logging.getLogger(__name__)

PAGE_ROWS: Final = 500  # activities per bus message: a backfill goes out in several pages


class ActivitySource(Protocol):
    """Where activities come from (``BrokerReads`` in production)."""

    async def activities(self, after: datetime | None) -> list[dict[str, object]]:
        """Return every activity after ``after`` (all when None), oldest first."""
        ...


def id_floor(instant: datetime) -> str:
    """Return the smallest activity id stamped at or after ``instant`` (ids sort by their stamp)."""
    return f"{instant:%Y%m%d%H%M%S}{instant.microsecond // 1000:03d}"


def _uuid_or_none(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value else None
    except ValueError:
        return None


def _decimal(activity: Mapping[str, object], key: str) -> Decimal | None:
    try:
        return to_decimal_or_none(activity.get(key), field=key)
    except InvalidMoney:
        return None


def to_record(activity: Mapping[str, object], flow: CashFlow) -> ActivityRecord:
    """Return the ``raw_activities`` row of an activity already converted into ``flow``."""
    is_fill = flow.category is Category.TRADE
    # Alpaca's FILL id is "<stamp>::<execution id>"; the table keys fills on that execution id.
    execution = _uuid_or_none(flow.id.split("::", 1)[1]) if is_fill and "::" in flow.id else None
    side = activity.get("side")
    symbol = activity.get("symbol")
    return ActivityRecord(
        id=flow.id,
        activity_type=flow.type,
        transaction_time=from_datetime(flow.ts),
        symbol=str(symbol) if symbol else None,
        side=str(side) if side else None,
        qty=_decimal(activity, "qty"),
        price=_decimal(activity, "price"),
        net_amount=flow.amount,
        execution_id=execution,
        order_id=_uuid_or_none(activity.get("order_id")),
        raw_json=json.dumps(dict(activity), default=str, sort_keys=True),
    )


class CashflowsJob:
    """One account's incremental activities pull; ``run_once`` is the periodic job."""

    def __init__(
        self,
        names: AccountNames,
        pool: AsyncConnectionPool,
        source: ActivitySource,
        publisher: Publisher,
        counters: Counter[str],
    ) -> None:
        self.names = names
        self._pool = pool
        self._source = source
        self._publisher = publisher
        self._counters = counters
        self._loaded = False
        self.cursor: str | None = None
        self._seen: set[str] = set()

    async def _load(self) -> None:
        async with self._pool.connection() as conn:
            self.cursor = await queries.cash_flow_cursor(conn, self.names)
            after = query_after(self.cursor)
            if after is not None:
                self._seen = await queries.cash_flow_ids_from(conn, self.names, id_floor(after))
        self._loaded = True
        log.info("cash-flow cursor loaded account=%s cursor=%s known=%d", self.names.slug, self.cursor, len(self._seen))

    async def run_once(self) -> int:
        """Pull activities since the cursor, publish the new ones; return how many were new."""
        if not self._loaded:
            await self._load()
        raw = await self._source.activities(query_after(self.cursor))
        flows, rejected = convert_activities(raw)
        for rejection in rejected:
            if rejection.id is None or rejection.id not in self._seen:
                self._counters["rejects_activity"] += 1
                log.warning(
                    "rejected activity account=%s id=%s reason=%s", self.names.slug, rejection.id, rejection.reason
                )
                if rejection.id is not None:
                    self._seen.add(rejection.id)
        fresh = select_new(flows, self._seen)
        if fresh:
            by_id = {str(activity.get("id", "")).strip(): activity for activity in raw}
            for start in range(0, len(fresh), PAGE_ROWS):
                chunk = fresh[start : start + PAGE_ROWS]
                records = tuple(to_record(by_id[flow.id], flow) for flow in chunk)
                page = ActivitiesPage(account=self.names.slug, activities=records, cash_flows=tuple(chunk))
                self._publisher.publish(topic_cash(self.names.slug), page)
            self._counters["activities_published"] += len(fresh)
            log.info("published activities account=%s new=%d", self.names.slug, len(fresh))
        self._seen.update(flow.id for flow in fresh)
        self.cursor = newest_id(fresh, self.cursor)
        self._forget_old()
        return len(fresh)

    def _forget_old(self) -> None:
        """Drop remembered ids older than the overlap window: the broker is not asked for them."""
        after = query_after(self.cursor)
        if after is not None:
            floor = id_floor(after)
            self._seen = {seen for seen in self._seen if seen >= floor}

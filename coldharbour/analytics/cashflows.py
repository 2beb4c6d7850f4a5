"""Account activities since the last stored id → ``ActivitiesPage`` (raw activities + cash flows).

Incremental (D43), and nothing lost (issue 14): the cursor is the newest activity id ``state``
has *stored*, read back from the DB (read-only) at every run — never advanced at publish time,
so activities published while ``state`` was down are asked for and sent again. Each run asks the
broker only for activities after ``query_after(cursor)`` (a week of overlap, because a
late-booked dividend carries an id older than ones already seen) and publishes the ids not
stored yet. An id already published is not sent again at once (``state`` may simply not have
committed it yet) but after ``RESEND_AFTER_RUNS`` runs still unstored, or at once on a full
resync request (``cmd.resync.<slug>``: ``state`` publishes one when it starts). ``state``
writes with idempotent upserts, so a repeat is harmless.

Every activity is checked against what the store and the bus accept before it is published
(``broker.validate``: no NUL or invalid UTF-8 anywhere in it, a time within 1970..2262 and not
more than ``validate.BROKER_FUTURE_NS`` ahead): a bad one is rejected alone, logged once and
counted (``rejects_activity``), its page neighbours go on.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final, Protocol

from psycopg_pool import AsyncConnectionPool

from coldharbour.broker import validate
from coldharbour.bus import Publisher
from coldharbour.db import queries
from coldharbour.db.names import AccountNames
from coldharbour.domain.cashflows import (
    CashFlow,
    Category,
    Rejection,
    query_after,
    select_new,
    to_cash_flow,
)
from coldharbour.domain.money import InvalidMoney, to_decimal_or_none
from coldharbour.domain.types import from_datetime
from coldharbour.messages import ActivitiesPage, ActivityRecord, topic_cash

log = logging.getLogger(__name__)

PAGE_ROWS: Final = 500  # activities per bus message: a backfill goes out in several pages
RESEND_AFTER_RUNS: Final = 3  # a published id still unstored after this many runs is sent again


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


def screen(
    raw: Sequence[Mapping[str, object]], now_ns: int
) -> tuple[list[CashFlow], list[tuple[str, Rejection]], dict[str, Mapping[str, object]]]:
    """Return the flows the store and the bus accept (sorted by id, each once), the rejections
    with a counter suffix (``value``, ``text``, ``time``, ``future``), and each flow's activity."""
    flows: dict[str, CashFlow] = {}
    rejected: list[tuple[str, Rejection]] = []
    by_id: dict[str, Mapping[str, object]] = {}
    for activity in raw:
        result = _screen_one(activity, now_ns)
        if isinstance(result, tuple):
            rejected.append(result)
        else:
            flows[result.id] = result
            by_id[result.id] = activity
    return [flows[key] for key in sorted(flows)], rejected, by_id


def _screen_one(activity: Mapping[str, object], now_ns: int) -> CashFlow | tuple[str, Rejection]:
    raw_id = activity.get("id")
    shown = repr(raw_id)[1:-1][:60] if isinstance(raw_id, str) else None
    try:
        validate.tree(activity, field="activity")
        if isinstance(raw_id, str):
            validate.text(raw_id, field="id", max_chars=validate.MAX_ID_CHARS)
        result = to_cash_flow(activity)
        if isinstance(result, Rejection):
            return "value", result
        validate.time_ns(from_datetime(result.ts), field="time", now_ns=now_ns)
    except validate.Invalid as e:
        return e.reason, Rejection(id=shown, reason=str(e))
    except OverflowError:  # a date near 9999 moved to UTC
        return "time", Rejection(id=shown, reason="time: outside the datetime range")
    return result


class CashflowsJob:
    """One account's incremental activities pull; ``run_once`` is the periodic job."""

    def __init__(
        self,
        names: AccountNames,
        pool: AsyncConnectionPool,
        source: ActivitySource,
        publisher: Publisher,
        counters: Counter[str],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.names = names
        self._pool = pool
        self._source = source
        self._publisher = publisher
        self._counters = counters
        self._clock_ns = clock_ns
        self.cursor: str | None = None
        self._runs = 0
        self._published: dict[str, int] = {}  # id -> the run that last sent it (not stored yet)
        self._rejected = validate.OnceLog()
        self._resend_all = False

    def resync(self) -> None:
        """Re-send every published activity not stored yet at the next run (``state`` asked)."""
        self._resend_all = True

    async def _stored(self) -> set[str]:
        """Read back the stored cursor and the stored ids inside the overlap window."""
        async with self._pool.connection() as conn:
            self.cursor = await queries.cash_flow_cursor(conn, self.names)
            after = query_after(self.cursor)
            if self.cursor is None:
                return set()
            return await queries.cash_flow_ids_from(conn, self.names, "" if after is None else id_floor(after))

    async def run_once(self) -> int:
        """Pull activities since the stored cursor, publish those not stored; return how many."""
        self._runs += 1
        stored = await self._stored()
        resend_all, self._resend_all = self._resend_all, False
        raw = await self._source.activities(query_after(self.cursor))
        flows, rejected, by_id = screen(raw, self._clock_ns())
        for code, rejection in rejected:
            self._counters["rejects"] += 1
            self._counters["rejects_activity"] += 1
            self._counters[f"rejects_activity_{code}"] += 1
            if self._rejected.first(f"{rejection.id}:{rejection.reason}"):
                log.warning(
                    "rejected activity account=%s id=%s reason=%s", self.names.slug, rejection.id, rejection.reason
                )
        self._published = {key: run for key, run in self._published.items() if key not in stored}
        held = {key for key, run in self._published.items() if not resend_all and self._runs - run < RESEND_AFTER_RUNS}
        fresh = select_new(flows, stored | held)
        if fresh:
            for start in range(0, len(fresh), PAGE_ROWS):
                chunk = fresh[start : start + PAGE_ROWS]
                records = tuple(to_record(by_id[flow.id], flow) for flow in chunk)
                page = ActivitiesPage(account=self.names.slug, activities=records, cash_flows=tuple(chunk))
                self._publisher.publish(topic_cash(self.names.slug), page)
            resent = sum(1 for flow in fresh if flow.id in self._published)
            self._counters["activities_published"] += len(fresh)
            self._counters["activities_resent"] += resent
            log.info("published activities account=%s new=%d resent=%d", self.names.slug, len(fresh), resent)
        self._published.update((flow.id, self._runs) for flow in fresh)
        return len(fresh)

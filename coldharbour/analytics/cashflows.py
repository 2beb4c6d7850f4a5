"""Account activities since the last stored id → ``ActivitiesPage`` (raw activities + cash flows).

Incremental (docs/defects.md D43), and nothing lost: the cursor is the newest activity id ``state``
has *stored*, read back from the DB (read-only) at every run — never advanced at publish time,
so activities published while ``state`` was down are asked for and sent again. Each run asks the
broker only for activities after ``query_after(cursor)`` (a week of overlap, because a
late-booked dividend carries an id older than ones already seen) and compares them with the
rows stored in that window (``flow_changes``, docs/spec.md §8 corrections): a new id or a corrected one
(another amount, time or type) is published in ``cash_flows``, a stored id the broker now says
is ``canceled`` in ``deleted_cash_flow_ids``; an unchanged one is not sent. A change already
published is not sent again at once (``state`` may simply not have committed it yet) but after
``RESEND_AFTER_RUNS`` runs still not stored, or at once on a full resync request
(``cmd.resync.<slug>``: ``state`` publishes one when it starts). ``state`` writes with
idempotent upserts and deletes, so a repeat is harmless. A correction older than the window
(a week before the newest stored id) is not seen.

Unknown activity codes (``unclassified``) are published like any other flow (they stay part of
returns), counted when published (``activities_unclassified``) and each code is logged once per
process; ``chmgr doctor`` lists the stored ones.

Completeness (docs/startup.md "Completeness watermarks"): a run whose broker read found nothing to
send (every listed activity already stored as the broker has it) proves the store complete up to
the moment that read started: ``complete_to_ns``. ``equity`` builds no daily row past it. A run
that sent something proves nothing yet; the next run that finds it stored does.

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
    flow_changes,
    is_canceled,
    query_after,
    to_cash_flow,
    unclassified_codes,
)
from coldharbour.domain.money import InvalidMoney, to_decimal_or_none
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.types import from_datetime
from coldharbour.messages import ActivitiesPage, topic_cash

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
        # id -> (the run that last sent it, what was sent: a row, None for a delete), until stored
        self._published: dict[str, tuple[int, CashFlow | None]] = {}
        self._unclassified: set[str] = set()  # unknown codes already logged
        self._rejected = validate.OnceLog()
        self._resend_all = False
        self.complete_to_ns: int | None = None  # the stored activities are complete up to (UTC ns)

    @property
    def awaiting_store(self) -> bool:
        """True while an activity this job published is not stored as sent yet."""
        return bool(self._published)

    def resync(self) -> None:
        """Re-send every published activity not stored yet at the next run (``state`` asked)."""
        self._resend_all = True

    async def _stored(self) -> dict[str, CashFlow]:
        """Read back the stored cursor and the stored rows inside the overlap window."""
        async with self._pool.connection() as conn:
            self.cursor = await queries.cash_flow_cursor(conn, self.names)
            after = query_after(self.cursor)
            if self.cursor is None:
                return {}
            return await queries.cash_flows_from(conn, self.names, "" if after is None else id_floor(after))

    async def run_once(self) -> int:
        """Pull activities since the stored cursor; publish what differs from the store; return how many."""
        self._runs += 1
        stored = await self._stored()
        resend_all, self._resend_all = self._resend_all, False
        read_at = self._clock_ns()  # after the store was read: what the broker lists by now must be stored
        raw = await self._source.activities(query_after(self.cursor))
        flows, rejected, by_id = screen([a for a in raw if not is_canceled(a)], self._clock_ns())
        self._count_rejected(rejected)
        wanted = flow_changes([*(by_id[flow.id] for flow in flows), *(a for a in raw if is_canceled(a))], stored)
        self._published = {key: sent for key, sent in self._published.items() if not _settled(key, sent[1], stored)}

        def due(key: str, value: CashFlow | None) -> bool:
            sent = self._published.get(key)
            return resend_all or sent is None or sent[1] != value or self._runs - sent[0] >= RESEND_AFTER_RUNS

        if not wanted.upserts and not wanted.deletes:  # the store holds what the broker lists: complete
            self.complete_to_ns = max(read_at, self.complete_to_ns or 0)
        upserts = [flow for flow in wanted.upserts if due(flow.id, flow)]
        deletes = tuple(key for key in wanted.deletes if due(key, None))
        if upserts or deletes:
            self._publish(upserts, deletes, by_id, stored)
            self._count_unclassified(upserts)
        self._published.update((flow.id, (self._runs, flow)) for flow in upserts)
        self._published.update((key, (self._runs, None)) for key in deletes)
        return len(upserts) + len(deletes)

    def _publish(
        self,
        upserts: list[CashFlow],
        deletes: tuple[str, ...],
        by_id: Mapping[str, Mapping[str, object]],
        stored: Mapping[str, CashFlow],
    ) -> None:
        for start in range(0, max(len(upserts), 1), PAGE_ROWS):
            chunk = upserts[start : start + PAGE_ROWS]
            records = tuple(to_record(by_id[flow.id], flow) for flow in chunk)
            page = ActivitiesPage(
                account=self.names.slug,
                activities=records,
                cash_flows=tuple(chunk),
                deleted_cash_flow_ids=deletes if start == 0 else (),
            )
            self._publisher.publish(topic_cash(self.names.slug), page)
        resent = sum(1 for flow in upserts if flow.id in self._published) + sum(k in self._published for k in deletes)
        corrected = sum(1 for flow in upserts if flow.id in stored)
        self._counters["activities_published"] += len(upserts)
        self._counters["activities_resent"] += resent
        self._counters["activities_corrected"] += corrected
        self._counters["activities_canceled"] += len(deletes)
        log.info(
            "published activities account=%s new=%d corrected=%d canceled=%d resent=%d",
            self.names.slug,
            len(upserts) - corrected,
            corrected,
            len(deletes),
            resent,
        )

    def _count_rejected(self, rejected: list[tuple[str, Rejection]]) -> None:
        for code, rejection in rejected:
            self._counters["rejects"] += 1
            self._counters["rejects_activity"] += 1
            self._counters[f"rejects_activity_{code}"] += 1
            if self._rejected.first(f"{rejection.id}:{rejection.reason}"):
                log.warning(
                    "rejected activity account=%s id=%s reason=%s", self.names.slug, rejection.id, rejection.reason
                )

    def _count_unclassified(self, flows: list[CashFlow]) -> None:
        """Count the ``unclassified`` flows published; log each unknown code once (docs/spec.md §8)."""
        self._counters["activities_unclassified"] += sum(1 for flow in flows if flow.category is Category.UNCLASSIFIED)
        for code in unclassified_codes(flows, self._unclassified):
            self._unclassified.add(code)
            log.warning(
                "unclassified activity code account=%s type=%s (kept in returns; see chmgr doctor)",
                self.names.slug,
                code[:40],
            )


def _settled(key: str, sent: CashFlow | None, stored: Mapping[str, CashFlow]) -> bool:
    """Return True when what was published for ``key`` (a row, or None: a delete) is what is stored."""
    return key not in stored if sent is None else stored.get(key) == sent

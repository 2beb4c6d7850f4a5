"""The KPI document of one account, fed incrementally, published only when it changed.

Each run reads only what changed since the last one (docs/defects.md D48): closed slices, cash flows and daily
equity rows by ``updated_at`` cursor into a ``KpiAccumulator`` (a deleted cash flow — an activity
the broker canceled — shows as fewer stored rows than fed, and is dropped); the open positions only when
their fingerprint (count, newest ``updated_at``) moved; the newest intraday return and the
session of "now" with one indexed row each. When none of the inputs moved, nothing is
computed (outside sessions the KPIs stay still: D67). A document whose figures equal the stored
one is not published (``document_changed``). The stored document is read on every run (one row
by its key): a document lost on the bus (``state`` not subscribed yet at start-up, or
restarting) differs from it and is sent again, never left unwritten until the figures move.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from psycopg_pool import AsyncConnectionPool

from coldharbour.bus import Publisher
from coldharbour.db import queries
from coldharbour.db.names import AccountNames, SharedNames
from coldharbour.domain.metrics import KpiAccumulator, KpiDocument, OpenLot, document_changed, encode_document
from coldharbour.domain.schedule import session_for
from coldharbour.domain.types import from_datetime
from coldharbour.messages import MetricsComputed, topic_metrics

log = logging.getLogger(__name__)

# A session row is looked up around "now"; two days either side covers any DST or late close.
_SESSION_LOOKUP: Final = timedelta(days=2)


class MetricsJob:
    """One account's KPI document; ``run_once`` is the periodic job."""

    def __init__(
        self,
        names: AccountNames,
        shared: SharedNames,
        pool: AsyncConnectionPool,
        publisher: Publisher,
        counters: Counter[str],
    ) -> None:
        self.names = names
        self._shared = shared
        self._pool = pool
        self._publisher = publisher
        self._counters = counters
        self._kpis = KpiAccumulator()
        self._cursors: dict[str, datetime | None] = {"closed": None, "flows": None, "daily": None}
        self._open_fingerprint: tuple[int, datetime | None] | None = None
        self._open: list[OpenLot] = []
        self._last_inputs: tuple[object, ...] | None = None
        self.last_document: KpiDocument | None = None  # what ``state`` stored, as of this run
        self._sent: KpiDocument | None = None

    async def run_once(self, now: datetime) -> bool:
        """Fold in what changed and publish the document if it changed; return True if published."""
        async with self._pool.connection() as conn:
            self.last_document = _parse(await queries.stored_metrics_payload(conn, self.names))
            moved = await self._fold_changes(conn)
            fingerprint = await queries.open_fingerprint(conn, self.names)
            if fingerprint != self._open_fingerprint:
                self._open, _ = await queries.open_rows(conn, self.names)
                self._open_fingerprint = fingerprint
                moved = True
            today = now.date()
            sessions = await queries.sessions_between(
                conn, self._shared, today - _SESSION_LOOKUP, today + _SESSION_LOOKUP
            )
            session = session_for(sessions, now)
            intraday = None
            if session is not None:
                intraday = await queries.newest_intraday_return(conn, self.names, session.pre_open_utc)
        inputs = (session is not None, intraday)
        unconfirmed = self._sent is not None and document_changed(self.last_document, self._sent)
        if not moved and inputs == self._last_inputs and not unconfirmed:
            return False
        self._last_inputs = inputs
        return self._publish_if_changed(now, intraday, in_session=session is not None)

    async def _fold_changes(self, conn: queries.Conn) -> bool:
        closed = await queries.closed_slices_changed(conn, self.names, self._cursors["closed"])
        flows = await queries.cash_flows_changed(conn, self.names, self._cursors["flows"])
        daily = await queries.daily_summaries_changed(conn, self.names, self._cursors["daily"])
        self._kpis.add_slices(closed.rows)
        self._kpis.add_flows(flows.rows)
        self._kpis.add_daily(daily.rows)
        skipped = closed.skipped + flows.skipped + daily.skipped
        if skipped:
            self._counters["rejects_row"] += skipped
            log.warning("skipped incomplete rows account=%s count=%d", self.names.slug, skipped)
        moved = (closed.cursor, flows.cursor, daily.cursor) != tuple(self._cursors.values())
        # A row was deleted (docs/spec.md §8).
        if await queries.cash_flow_count(conn, self.names) < self._kpis.flow_count:
            moved = self._kpis.keep_flows(await queries.cash_flow_ids(conn, self.names)) or moved
        self._cursors = {"closed": closed.cursor, "flows": flows.cursor, "daily": daily.cursor}
        return moved

    def _publish_if_changed(self, now: datetime, intraday: Decimal | None, *, in_session: bool) -> bool:
        document = self._kpis.document(
            open_lots=self._open, intraday_cumulative_return=intraday, in_session=in_session, as_of=now
        )
        if not document_changed(self.last_document, document):
            return False
        payload = encode_document(document).decode()
        message = MetricsComputed(account=self.names.slug, payload=payload, computed_at=from_datetime(now))
        self._publisher.publish(topic_metrics(self.names.slug), message)
        self.last_document = self._sent = document
        self._counters["metrics_published"] += 1
        log.debug("published KPI document account=%s", self.names.slug)
        return True


def _parse(payload: str | None) -> KpiDocument | None:
    """Return the stored document, or None when absent or unreadable (then the next one is sent)."""
    if not payload:
        return None
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

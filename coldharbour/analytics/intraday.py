"""The intraday curve of one account: mark-to-market from the previous close, every minute.

Inputs per run: the anchor (previous session's close from the daily curve: ``E0``, ``R0``,
closes ``P0`` — computed once per session, never fetched per symbol per minute: docs/defects.md D47), the open
lots and the slices closed today, today's fills, today's cash flows, and 1-minute bars from
``price_bars_1min``. Bars are cached per session and only the recent minutes are re-read each
run (``state`` may still rewrite the last bars until its next flush). Points are published
for the recent minutes only once the stored curve starts at the session's first point; until
then (the first run of a session, or its points were lost on the bus because ``state`` was not
subscribed yet or restarting) a run sends all of them. A run after a pause (an account holding
nothing is not computed every minute: docs/scaling.md) sends every minute since the last one.
``bar_px``/``bar_ts`` are the closes of the bars the curve ended on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from coldharbour.db import queries
from coldharbour.db.names import AccountNames, SharedNames
from coldharbour.domain.equity import (
    Anchor,
    Bar,
    DailyCurve,
    IntradayLot,
    IntradayPoint,
    anchor_from_curve,
    compute_intraday,
    last_bars,
)
from coldharbour.domain.schedule import NEW_YORK, Session
from coldharbour.domain.types import from_datetime

log = logging.getLogger(__name__)

# Beyond the flush interval of ``state`` (bars reach the DB at each flush), a margin of two
# minutes for the flush itself and for a late tick.
BAR_SETTLE_MARGIN = timedelta(minutes=2)


def ny_midnight(day: date) -> datetime:
    """Return 00:00 New York on ``day``."""
    return datetime.combine(day, time(0), tzinfo=NEW_YORK)


def anchor_for(curve: DailyCurve | None, session_date: date) -> Anchor | None:
    """Return the previous session's close for ``session_date`` from the daily curve.

    When the curve already holds ``session_date`` as its last row (rebuilt after the close), the
    book before that row is the anchor. Otherwise the row before gives ``E0``/``R0`` and the
    closes are unknown (lots carried in are then measured from their first bar today).
    """
    if curve is None:
        return None
    last = curve.book.last_date
    if last is not None and last < session_date:
        return anchor_from_curve(curve)  # the last row, or the broker's opening balance
    if last == session_date and curve.prior is not None:
        return anchor_from_curve(curve, before_last_row=True)
    earlier = [row for row in curve.rows if row.date < session_date]
    if not earlier:
        return None
    row = earlier[-1]
    return Anchor(session_date=row.date, deposit=row.deposit, cumulative_return=row.cumulative_return)


class IntradayState:
    """Per-session caches: the anchor, the bars read so far, the newest point published."""

    def __init__(self, names: AccountNames, shared: SharedNames, settle: timedelta) -> None:
        self.names = names
        self._shared = shared
        self._settle = settle
        self.session_date: date | None = None
        self.anchor: Anchor | None = None
        self._bars: dict[str, dict[datetime, Bar]] = {}
        self._read_until: datetime | None = None
        self._computed_until: datetime | None = None
        self.published = False
        self.holds = True  # the last computation found open lots (marks move the curve)

    def _reset(self, session: Session, curve: DailyCurve | None) -> None:
        self.session_date = session.session_date
        self.anchor = anchor_for(curve, session.session_date)
        self._bars = {}
        self._read_until = None
        self._computed_until = None
        self.published = False

    async def _read_bars(self, conn: queries.Conn, session: Session, symbols: set[str], now: datetime) -> None:
        fresh = sorted(symbols - self._bars.keys())
        if fresh:
            read = await queries.bars_between(conn, self._shared, fresh, session.pre_open_utc, now)
            for symbol, series in read.items():
                self._bars[symbol] = {bar.ts: bar for bar in series}
            for symbol in fresh:
                self._bars.setdefault(symbol, {})
        known = sorted(symbols - set(fresh))
        if known and self._read_until is not None:
            start = max(session.pre_open_utc, self._read_until - self._settle)
            for symbol, series in (await queries.bars_between(conn, self._shared, known, start, now)).items():
                self._bars[symbol].update({bar.ts: bar for bar in series})
        self._read_until = now

    async def _stored_from(self, conn: queries.Conn, session: Session) -> datetime | None:
        """Return the first stored point of ``session`` (one indexed row)."""
        return await queries.first_intraday_ts(conn, self.names, session.pre_open_utc)

    async def compute(
        self, conn: queries.Conn, session: Session, curve: DailyCurve | None, now: datetime
    ) -> tuple[list[IntradayPoint], dict[str, tuple[Decimal, int]]]:
        """Return the points to publish and the ``bar_px``/``bar_ts`` marks of open symbols."""
        if self.session_date != session.session_date:
            self._reset(session, curve)
        else:
            anchor = anchor_for(curve, session.session_date)
            if anchor != self.anchor:  # the curve was rebuilt (a new account's first opening, a late flow)
                self.anchor, self.published, self._computed_until = anchor, False, None
        _, open_lots = await queries.open_rows(conn, self.names)
        since = min(session.pre_open_utc, ny_midnight(session.session_date))
        closed_today = await queries.slices_exited_since(conn, self.names, since)
        lots: Sequence[IntradayLot] = [*open_lots, *closed_today]
        flows_from = ny_midnight(
            session.session_date if self.anchor is None else self.anchor.session_date + timedelta(days=1)
        )
        flows = await queries.cash_flows_between(conn, self.names, flows_from)
        # Today's fills: with the anchor's holdings they measure each share from its own fill
        # price (a lot filled across two sessions included), as the daily replay does.
        executions, _ = await queries.executions_between(conn, self.names, flows_from)
        symbols = {lot.symbol for lot in lots} | {e.symbol for e in executions}
        if self.anchor is not None and self.anchor.positions:
            symbols |= set(self.anchor.positions)
        await self._read_bars(conn, session, symbols, now)
        bars = {symbol: sorted(series.values(), key=lambda b: b.ts) for symbol, series in self._bars.items()}
        points = compute_intraday(
            session=session,
            until=now,
            anchor=self.anchor,
            lots=lots,
            flows=flows,
            bars=bars,
            executions=executions,
        )
        if self.published and points and await self._stored_from(conn, session) == points[0].ts:
            recent = (self._computed_until or now) - self._settle  # every minute since the last computation
            points = [point for point in points if point.ts >= recent]
        self._computed_until = now
        self.holds = bool(open_lots)
        open_symbols = {lot.symbol for lot in open_lots}
        marks = {
            symbol: (bar.close, from_datetime(bar.ts))
            for symbol, bar in last_bars(bars, now).items()
            if symbol in open_symbols
        }
        return points, marks

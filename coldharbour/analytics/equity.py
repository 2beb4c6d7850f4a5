"""The daily and intraday equity curves of one account → ``EquityComputed``.

Daily curve (docs/defects.md D46: not the whole history every minute): rebuilt from the stored activities at
start, at session start and after the close (``rebuild_requested``); between those, a run only
extends it with sessions completed since its last row, reading the activities after that row.
Session dates come from the broker calendar (D58), fetched at a rebuild or when the cached
range no longer covers today. Daily closes: the last regular-hours bar of each session in our
``price_bars_1min``; for the newest session ``latest_prices`` when it was marked during it;
else one request to the broker's daily-bars API for every missing (symbol, date) at once.
The opening balance (D11, docs/spec.md §8 "Equity anchor") is the broker's own end-of-day equity
(``GET /v2/account/portfolio/history``, 1D) on the session before the first mirrored activity;
``EQUITY_INIT_CASH_<NAME>`` (else ``EQUITY_INIT_CASH``) overrides it. When the history has no
positive point for that day and it is the close before today (a new account), the account's
``last_equity`` (``GET /v2/account``) is used; failing both the curve starts at 0 and the first
deposit is its base (logged). An account with no activity yet is anchored the same way on the
close before today, so its intraday return is live from the first minute.

Daily proof (docs/spec.md §8): every row built or extended is compared with the broker's end-of-day
equity before it is published (``broker_equity``, ``equity_diff``); a difference beyond one cent
plus the day's unexplained flows is logged and counted (``equity_mismatches``, once per day).
A rebuild proves the whole history (the backfill) and logs how many days match.

Cash flows complete (docs/startup.md "Completeness watermarks"): a daily row counts every cash flow
of its day, and a flow not stored yet is not evidence of none. ``cashflows_complete_to`` is how far
``cashflows`` knows the stored cash activities complete (its heartbeat); the curve is built and
extended only with sessions that closed by then, and nothing daily or intraday is computed before
the first complete read. A flow or fill stored later for a day the curve has re-extends the curve
from that day (``rewind_curve``): the rows before it are neither rebuilt nor published again.

Intraday curve: ``intraday.IntradayState`` while a session (pre-open to post-close) runs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Final, Protocol

import msgspec
from psycopg_pool import AsyncConnectionPool

from coldharbour.analytics.intraday import IntradayState, ny_midnight
from coldharbour.bus import Publisher
from coldharbour.config import Settings
from coldharbour.db import loads, queries
from coldharbour.db.names import AccountNames, SharedNames
from coldharbour.domain.cashflows import CashFlow, Execution
from coldharbour.domain.equity import (
    DailyCurve,
    DailyRow,
    DayInputs,
    Opening,
    bucket_by_session,
    build_daily_curve,
    extend_daily_curve,
    prove_rows,
    rewind_curve,
    splits_by_session_date,
    start_curve,
    unexplained_flows,
)
from coldharbour.domain.schedule import CalendarDay, Session, build_sessions, ny_date, session_for, to_calendar_day
from coldharbour.errors import BrokerError
from coldharbour.jobs.scheduler import CalendarSource
from coldharbour.messages import EquityComputed, topic_equity

log = logging.getLogger(__name__)

CALENDAR_AHEAD: Final = timedelta(days=7)
# An account whose curve cannot move by itself (outside a session, or holding nothing) runs only
# when ``changed`` (``state`` committed its rows), a rebuild is due, or this long after its last run
# (a change announced before this program subscribed is taken by then; docs/scaling.md).
STILL_REFRESH: Final = timedelta(minutes=15)


class DailyBarsSource(CalendarSource, Protocol):
    """The broker reads the equity job needs: the calendar and daily closes."""

    async def daily_closes(self, symbols: Sequence[str], start: date, end: date) -> dict[date, dict[str, Decimal]]:
        """Return ``{NY date: {symbol: close}}`` between two dates."""
        ...

    async def daily_equity(self, start: date, end: date) -> dict[date, Decimal]:
        """Return the broker's end-of-day equity ``{session date: equity}`` between two dates."""
        ...

    async def last_equity(self) -> Decimal | None:
        """Return the account's equity at the previous session's close (``GET /v2/account``)."""
        ...


def _wall(text: str) -> time:
    return time.fromisoformat(text)


class EquityJob:
    """One account's equity curves; ``run_once(now)`` is the periodic job."""

    def __init__(
        self,
        settings: Settings,
        names: AccountNames,
        shared: SharedNames,
        pool: AsyncConnectionPool,
        broker: DailyBarsSource,
        publisher: Publisher,
        counters: Counter[str],
    ) -> None:
        self._settings = settings
        self.names = names
        self._shared = shared
        self._pool = pool
        self._broker = broker
        self._publisher = publisher
        self._counters = counters
        self.rebuild_requested = True
        self.changed = True  # its fills, lots or cash flows changed since the last run (``AccountChanged``)
        self.still = False  # the last run found a curve no mark can move: outside a session, or nothing held
        self._ran_at: datetime | None = None
        self._session: Session | None = None  # the session of the last run (a new one is a change)
        self.curve: DailyCurve | None = None
        self.sessions: list[Session] = []
        settle = timedelta(seconds=settings.flush_interval_s) + timedelta(minutes=2)
        self.intraday = IntradayState(names, shared, settle)
        self.mismatched: set[date] = set()
        self._opening_equity: dict[date, Decimal] = {}  # the broker's equity at an opening date, read once
        self._opening_missing: set[date] = set()  # opening dates the broker had no equity for (this session)
        self.inputs: queries.CurveInputs | None = None  # the stored inputs as of the curve's last read
        self.cashflows_complete_to: datetime | None = None  # cash activities stored completely up to (cashflows)

    def cash_complete(self, instant: datetime) -> None:
        """Record that ``cashflows`` knows the stored cash activities complete up to ``instant``.

        A still account runs again only when the mark is the first or passes a session's close
        (a day it may now build), not at every ``cashflows`` run (docs/scaling.md).
        """
        old = self.cashflows_complete_to
        if old is not None and instant <= old:
            return
        self.cashflows_complete_to = instant
        if old is None:
            log.info("cash flows complete account=%s to=%s", self.names.slug, instant)
        if old is None or any(old < s.close_utc <= instant for s in self.sessions):
            self.changed = True

    def _horizon(self, now: datetime) -> datetime | None:
        """Return how far daily rows may be built: ``now``, but no later than the cash flows are complete."""
        return None if self.cashflows_complete_to is None else min(now, self.cashflows_complete_to)

    async def run_once(self, now: datetime) -> None:
        """Rebuild or extend the daily curve, then compute the intraday curve when in session.

        Nothing is read for a still account (``still``) with no change, no rebuild due and a run
        less than ``STILL_REFRESH`` ago: its curve is what the last run made of it.
        """
        if (
            self.still
            and not self.changed
            and not self.rebuild_requested
            and self._ran_at is not None
            and now - self._ran_at < STILL_REFRESH
            and session_for(self.sessions, now) == self._session
        ):
            self._counters["equity_runs_still"] += 1
            return
        self.changed, self._ran_at, self.still = False, now, False  # a run that fails is not still
        async with self._pool.connection() as conn:
            await self._check_late_inputs(conn)
            if self.rebuild_requested or self.curve is None or self.curve.book.last_date is None:
                await self._rebuild(conn, now, refetch=self.rebuild_requested)
            else:
                await self._extend(conn, now)
            session = session_for(self.sessions, now)
            self._session = session
            if self.cashflows_complete_to is None:
                self._counters["equity_waits_cash_complete"] += 1  # absence of flows is not evidence yet
                return
            if session is None:
                self.still = True
                return
            points, marks = await self.intraday.compute(conn, session, self.curve, now)
            self.still = not self.intraday.holds
        if points or marks:
            message = EquityComputed(account=self.names.slug, intraday=tuple(points), bars=marks)
            self._publisher.publish(topic_equity(self.names.slug), message)
            self.intraday.published = True
            self._counters["intraday_points"] += len(points)

    async def _check_late_inputs(self, conn: queries.Conn) -> None:
        """Re-extend from the day a cash flow or fill was stored or changed late for; rebuild on a removal.

        The curve of a day is only as complete as the flows and fills stored when it was built
        (a late-booked dividend, a fill read after the day was built): a late one rewinds the
        curve to the day before it and the extend step writes that day and every later one (cash
        and holdings carry forward) again; earlier rows are left alone (docs/startup.md). A removed
        row (a canceled activity: the day is not known), a late input on or before the curve's
        opening, or a curve that cannot rewind rebuilds the whole curve.
        """
        seen, now_inputs = self.inputs, await queries.curve_inputs(conn, self.names)
        if seen is None or now_inputs == seen or self.rebuild_requested or self.curve is None:
            return
        last = self.curve.book.last_date
        removed = now_inputs.flows < seen.flows or now_inputs.fills < seen.fills
        earliest = await queries.earliest_input_after(conn, self.names, seen)
        if last is None or not (removed or (earliest is not None and ny_date(earliest) <= last)):
            self.inputs = now_inputs  # only newer days: the extend step reads them
            return
        self._counters["daily_rebuilds_late_input"] += 1
        day = None if removed or earliest is None else ny_date(earliest)
        rewound = None if day is None else rewind_curve(self.curve, day)
        if rewound is None:
            self.rebuild_requested = True
            log.info(
                "late cash flow or fill for a built day account=%s earliest=%s: rebuild", self.names.slug, earliest
            )
            return
        self.inputs = now_inputs  # before the extend's reads: a later write shows
        self.curve = rewound
        self._counters["daily_reextends_late_input"] += 1
        log.info("late cash flow or fill account=%s earliest=%s: re-extending from %s", self.names.slug, earliest, day)

    async def _ensure_sessions(self, first: date, now: datetime, *, refetch: bool) -> None:
        today = ny_date(now)
        covered = bool(self.sessions) and self.sessions[0].session_date <= first
        covered = covered and self.sessions[-1].session_date >= today
        if covered and not refetch:
            return
        rows = await self._broker.calendar(first - CALENDAR_AHEAD, today + CALENDAR_AHEAD)
        days = [day for day in map(to_calendar_day, rows) if isinstance(day, CalendarDay)]
        self.sessions, rejected = build_sessions(
            days,
            pre_open=_wall(self._settings.market_pre_open_time),
            post_close=_wall(self._settings.market_post_close_time),
        )
        self._counters["rejects_calendar"] += len(rows) - len(days) + len(rejected)

    def _override(self) -> Decimal | None:
        """Return ``EQUITY_INIT_CASH_<NAME>``, else ``EQUITY_INIT_CASH``, else None."""
        accounts = [a for a in self._settings.accounts if a.slug == self.names.slug]
        own = accounts[0].equity_init_cash if accounts else None
        if own is not None:
            return Decimal(own)
        cash = self._settings.equity_init_cash
        return None if cash is None else Decimal(repr(cash))

    async def _opening(self, first: date, now: datetime) -> Opening | None:
        """Return the opening at the close of the session before ``first`` (docs/spec.md §8).

        When the portfolio history has no positive point for that close and it is the close
        before today (a new account: its history starts today), the account's own
        ``last_equity`` is that close's equity.
        """
        before = [s.session_date for s in self.sessions if s.session_date < first]
        as_of = before[-1] if before else first - timedelta(days=1)
        override = self._override()
        if override is not None:
            return Opening(as_of=as_of, cash=override)
        if as_of in self._opening_equity:  # a closed day's equity does not change: read it once
            return Opening(as_of=as_of, cash=self._opening_equity[as_of])
        if as_of in self._opening_missing:
            return None  # asked already: the broker had none (asked again at the next session)
        equity = (await self._broker.daily_equity(as_of - CALENDAR_AHEAD, as_of)).get(as_of)
        self._counters["broker_history_requests"] += 1
        previous = [s.session_date for s in self.sessions if s.session_date < ny_date(now)]
        if (equity is None or equity <= 0) and previous and previous[-1] == as_of:
            last = await self._broker.last_equity()
            self._counters["broker_account_requests"] += 1
            if last is not None and last > 0:
                log.info("no history point: opening on last_equity account=%s date=%s", self.names.slug, as_of)
                equity = last
        if equity is None:
            log.warning("no broker equity before the first activity account=%s date=%s", self.names.slug, as_of)
            self._opening_missing.add(as_of)
            return None
        log.info("equity anchored on the broker account=%s date=%s equity=%s", self.names.slug, as_of, equity)
        self._opening_equity[as_of] = equity
        return Opening(as_of=as_of, cash=equity)

    async def _rebuild(self, conn: queries.Conn, now: datetime, *, refetch: bool) -> None:
        if refetch:
            self._opening_missing.clear()  # a requested rebuild (a session start) asks the broker again
        self.rebuild_requested = False
        self.inputs = await queries.curve_inputs(conn, self.names)  # before the reads: a later write shows
        first_time = await queries.first_activity_time(conn, self.names)
        if first_time is None:
            # A new account: nothing to replay yet (and nothing to loop on, D68), but its equity
            # at the close before today anchors today's curve, so its return is live from the
            # first minute (0 while flat) rather than null until a first daily row.
            await self._ensure_sessions(ny_date(now), now, refetch=refetch)
            self.curve = start_curve(await self._opening(ny_date(now), now))
            return
        first = ny_date(first_time)
        await self._ensure_sessions(first, now, refetch=refetch)
        opening = await self._opening(first, now)
        horizon = self._horizon(now)
        if horizon is None:  # no complete read of the cash flows yet: no row, rebuilt at the next run
            self.curve = None
            return
        flows = await queries.cash_flows_between(conn, self.names, None)
        executions, rejected = await queries.executions_between(conn, self.names, None)
        self._count_rejects(len(rejected))
        days = await self._days(conn, horizon, flows, executions, after=None if opening is None else opening.as_of)
        curve = build_daily_curve(days, opening)
        self.curve = msgspec.structs.replace(curve, rows=await self._prove(curve.rows, days, backfill=True))
        self._counters["daily_rebuilds"] += 1
        if self.curve.rows:
            message = EquityComputed(account=self.names.slug, daily=self.curve.rows, is_rebuild=True)
            self._publisher.publish(topic_equity(self.names.slug), message)
        log.info("daily curve rebuilt account=%s rows=%d", self.names.slug, len(self.curve.rows))

    async def _extend(self, conn: queries.Conn, now: datetime) -> None:
        assert self.curve is not None  # run_once checked both
        last = self.curve.book.last_date
        assert last is not None
        await self._ensure_sessions(last, now, refetch=False)
        horizon = self._horizon(now)
        if horizon is None or not any(s.session_date > last and s.close_utc <= horizon for s in self.sessions):
            return
        start = ny_midnight(last + timedelta(days=1))
        flows = await queries.cash_flows_between(conn, self.names, start)
        executions, rejected = await queries.executions_between(conn, self.names, start)
        self._count_rejects(len(rejected))
        days = await self._days(conn, horizon, flows, executions, after=last)
        if not days:
            return
        before = len(self.curve.rows)
        curve = extend_daily_curve(self.curve, days)
        new_rows = await self._prove(curve.rows[before:], days, backfill=False)
        self.curve = msgspec.structs.replace(curve, rows=(*curve.rows[:before], *new_rows))
        self._publisher.publish(topic_equity(self.names.slug), EquityComputed(account=self.names.slug, daily=new_rows))
        log.info("daily curve extended account=%s rows=%d", self.names.slug, len(new_rows))

    async def _prove(
        self, rows: Sequence[DailyRow], days: Sequence[DayInputs], *, backfill: bool
    ) -> tuple[DailyRow, ...]:
        """Return ``rows`` compared with the broker's portfolio history; log and count differences."""
        if not rows:
            return tuple(rows)
        slug = self.names.slug
        try:
            broker = await self._broker.daily_equity(rows[0].date, rows[-1].date)
        except BrokerError as e:
            self._counters["equity_proof_errors"] += 1
            log.warning("equity proof skipped account=%s: %s", slug, e)
            return tuple(rows)
        self._counters["broker_history_requests"] += 1
        proven, proofs = prove_rows(rows, broker, unexplained_flows(days))
        for proof in proofs:
            if not proof.mismatched:
                self.mismatched.discard(proof.date)
                continue
            log.warning(
                "daily equity differs from the broker account=%s date=%s ours=%s broker=%s diff=%s tolerance=%s",
                slug, proof.date, proof.deposit, proof.broker_equity, proof.equity_diff, proof.tolerance,
            )  # fmt: skip
            if proof.date not in self.mismatched:
                self.mismatched.add(proof.date)
                self._counters["equity_mismatches"] += 1
        if backfill:
            compared = [p for p in proofs if p.equity_diff is not None]
            log.info(
                "equity proof account=%s days=%d match=%d differ=%d no_broker_point=%d",
                slug, len(proofs), sum(not p.mismatched for p in compared),
                sum(p.mismatched for p in compared), len(proofs) - len(compared),
            )  # fmt: skip
        return proven

    def _count_rejects(self, count: int) -> None:
        if count:
            self._counters["rejects_fill"] += count
            log.warning("skipped unusable fills account=%s count=%d", self.names.slug, count)

    async def _days(
        self,
        conn: queries.Conn,
        now: datetime,
        flows: list[CashFlow],
        executions: list[Execution],
        *,
        after: date | None,
    ) -> list[DayInputs]:
        completed = [s for s in self.sessions if s.close_utc <= now]
        dates = [s.session_date for s in completed]
        probe = bucket_by_session(dates, flows, executions, {}, after=after)
        if not probe:
            return []
        symbols = sorted({e.symbol for e in executions} | set(self.curve.book.positions if self.curve else {}))
        closes = await self._closes(conn, symbols, [d.session_date for d in probe], completed)
        # a split scales the shares held and the closes before it: no artificial return (docs/spec.md §8)
        splits = splits_by_session_date(await loads.load_actions(conn, self.names))
        return bucket_by_session(dates, flows, executions, closes, after=after, splits_by_date=splits)

    async def _closes(
        self, conn: queries.Conn, symbols: list[str], wanted: list[date], completed: list[Session]
    ) -> dict[date, dict[str, Decimal]]:
        """Return closes for ``wanted`` dates: our bars, then latest prices, then the broker."""
        if not symbols or not wanted:
            return {}
        closes = await queries.session_closes_from_bars(conn, self._shared, symbols, wanted[0], wanted[-1])
        newest = completed[-1]
        if newest.session_date == wanted[-1]:
            marks = await queries.latest_prices(conn, self._shared, symbols)
            newest_closes = closes.setdefault(newest.session_date, {})
            for symbol, (price, ts) in marks.items():
                if symbol not in newest_closes and newest.open_utc <= ts <= newest.close_utc:
                    newest_closes[symbol] = price
        missing = [d for d in wanted if any(s not in closes.get(d, {}) for s in symbols)]
        if missing:
            fetched = await self._broker.daily_closes(symbols, missing[0], missing[-1])
            self._counters["daily_bar_requests"] += 1
            for day, by_symbol in fetched.items():
                for symbol, price in by_symbol.items():
                    closes.setdefault(day, {}).setdefault(symbol, price)
        return closes

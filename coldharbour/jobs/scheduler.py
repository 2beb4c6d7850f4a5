"""Market schedule, session phases at the exact instant, and the session-scoped programs.

The schedule comes from the broker calendar (today − 7 to today + ``SCHEDULE_FORWARD_DAYS``,
one fetch for all accounts: docs/defects.md D58) every ``MARKET_REFRESH_SEC`` and goes out as
``ScheduleComputed`` with the retention cut-off (``SCHEDULE_RETENTION_DAYS``: D45); when the
broker cannot be reached at start, the stored ``market_schedule`` is used until it can.

Between refreshes the loop sleeps until the next phase change (``next_transition``), not on
a poll, and publishes ``SessionPhaseChanged`` stamped with the transition instant itself. The
session-scoped programs (``runtime.SESSION_PROGRAMS``) are started when a session begins and
stopped when it ends, through supervisord, unless ``DISABLE_SESSION_SLEEP`` keeps them on. A
session start also asks every account for a resync and a ledger check (the phase message
itself makes ``cashflows`` pull and ``equity`` rebuild).

Calendar horizon: when the broker's calendar ends more than ``CALENDAR_GAP_DAYS``
before today + ``SCHEDULE_FORWARD_DAYS`` it is logged and counted (``schedule_short``, shown by
``chmgr status``; ``chmgr doctor`` reads the stored schedule). Past the last known session the
scheduler fails open: the session programs are kept running (``schedule_exhausted``) rather than
stopped until a schedule that never comes. A refresh sends the range it covers
(``replace_from``/``replace_to``) so ``state`` can drop a stored session the broker no longer
lists (a closure declared after the schedule was stored); a refresh with rejected rows sends no
range (it would drop the rejected days).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import date, datetime, time, timedelta
from typing import Final, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool

from coldharbour.bus import Publisher
from coldharbour.config import Settings
from coldharbour.db import queries
from coldharbour.db.names import shared_names
from coldharbour.domain.schedule import (
    CALENDAR_GAP_DAYS,
    NEW_YORK,
    CalendarRejection,
    Phase,
    Session,
    build_sessions,
    next_transition,
    ny_date,
    phase_at,
    prune_cutoff,
    session_for,
    to_calendar_day,
)
from coldharbour.domain.types import from_datetime
from coldharbour.errors import ChmgrError, SupervisorError
from coldharbour.jobs.clock import Clock
from coldharbour.jobs.phases import is_session_start
from coldharbour.messages import (
    TOPIC_SCHEDULE,
    TOPIC_SESSION,
    LedgerCheckRequested,
    ResyncRequested,
    ScheduleComputed,
    SessionPhaseChanged,
    topic_ledger_check,
    topic_resync,
)
from coldharbour.retry import Backoff
from coldharbour.runtime import SESSION_PROGRAMS

log = logging.getLogger(__name__)

LOOKBACK: Final = timedelta(days=7)
BACKOFF_BASE_S: Final = 5.0  # a failed calendar refresh (retry.Backoff); a failed supervisord call waits the base
BACKOFF_CAP_S: Final = 300.0
ACTIVE_STATES: Final = frozenset({"RUNNING", "STARTING", "BACKOFF"})


class ProgramControl(Protocol):
    """What the scheduler needs from supervisord (``supervisor.SupervisorClient``)."""

    def start(self, name: str) -> None:
        """Start program ``name``."""
        ...

    def stop(self, name: str) -> None:
        """Stop program ``name``."""
        ...

    def states(self) -> dict[str, str]:
        """Return ``{program: supervisord state name}``."""
        ...


class CalendarSource(Protocol):
    """Where calendar rows come from (``BrokerReads`` in production)."""

    async def calendar(self, start: date, end: date) -> list[dict[str, object]]:
        """Return the calendar rows from ``start`` to ``end``."""
        ...


def _wall(text: str) -> time:
    return time.fromisoformat(text)


class Scheduler:
    """The scheduler's state: the sessions, the current phase, and what is due when."""

    def __init__(
        self,
        settings: Settings,
        *,
        publisher: Publisher,
        counters: Counter[str],
        clock: Clock,
        calendar: CalendarSource | None,
        control: ProgramControl | None,
        pool: AsyncConnectionPool,
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._counters = counters
        self._clock = clock
        self._calendar = calendar
        self._control = control
        self._pool = pool
        self.sessions: list[Session] = []
        self.phase: Phase | None = None
        self._refresh_due = clock.now()
        self._refresh_backoff = Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S)
        self._control_due: datetime | None = None
        self._schedule: ScheduleComputed | None = None  # the last one published (re-sent when state is ready)

    def resend(self, _instance_ns: int = 0) -> None:
        """Publish the current schedule again (a ``state`` that was not reading the bus missed it)."""
        if self._schedule is not None:
            self._publisher.publish(TOPIC_SCHEDULE, self._schedule)
            self._counters["schedule_resent"] += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh, publish phases and drive the programs until ``stop``."""
        await self._refresh()
        if not self.sessions:
            await self._load_stored()
        while not stop.is_set():
            now = self._clock.now()
            if now >= self._refresh_due:
                await self._refresh()
            self._check_phase(now)
            if self._control_due is not None and now >= self._control_due:
                await self._apply_programs()
            await self._clock.wait_until(self._next_wake(now), stop)

    def _next_wake(self, now: datetime) -> datetime:
        wake = self._refresh_due
        transition = next_transition(self.sessions, now)
        if transition is not None:
            wake = min(wake, transition.at)
        if self._control_due is not None:
            wake = min(wake, self._control_due)
        return wake

    def _check_phase(self, now: datetime) -> None:
        phase = phase_at(self.sessions, now)
        if phase == self.phase:
            return
        previous, self.phase = self.phase, phase
        # Stamp the change with the boundary it crossed (the exact instant), not with the
        # moment this loop woke up, which is a little later.
        session = session_for(self.sessions, now)
        at = _boundary(self.sessions, phase, now)
        message = SessionPhaseChanged(
            phase=phase.value,
            session_date=None if session is None else session.session_date.isoformat(),
            at_ns=from_datetime(at),
        )
        self._publisher.publish(TOPIC_SESSION, message)
        self._counters["phase_changes"] += 1
        log.info("session phase changed previous=%s phase=%s at=%s", previous, phase, at.isoformat())
        self._control_due = now
        if is_session_start(previous, phase):
            self._bootstrap()

    def _bootstrap(self) -> None:
        """Ask every account for a resync and a ledger check at session start."""
        for account in self._settings.accounts:
            slug = account.slug
            self._publisher.publish(topic_resync(slug), ResyncRequested(account=slug, reason="session_start"))
            self._publisher.publish(topic_ledger_check(slug), LedgerCheckRequested(account=slug))
        self._counters["bootstraps"] += 1

    async def _apply_programs(self) -> None:
        """Start or stop the session programs to match the phase; retry later if supervisord fails."""
        self._control_due = None
        if self._control is None:
            return
        wanted = self._settings.disable_session_sleep or self.phase not in (None, Phase.CLOSED)
        if not wanted and self.beyond_schedule(self._clock.now()):
            wanted = True  # fail open: no known session ahead is not a reason to sleep
            self._counters["schedule_exhausted"] += 1
            log.warning("no session known after now: keeping the session programs running (fail open)")
        control = self._control
        try:
            states = await asyncio.to_thread(control.states)
            for name in SESSION_PROGRAMS:
                active = states.get(name) in ACTIVE_STATES
                if wanted and not active:
                    await asyncio.to_thread(control.start, name)
                    log.info("started session program name=%s phase=%s", name, self.phase)
                elif not wanted and active:
                    await asyncio.to_thread(control.stop, name)
                    log.info("stopped session program name=%s phase=%s", name, self.phase)
        except SupervisorError as e:
            self._counters["supervisor_failures"] += 1
            log.warning("supervisord request failed, retrying in %.0fs: %s", BACKOFF_BASE_S, e)
            self._control_due = self._clock.now() + timedelta(seconds=BACKOFF_BASE_S)

    def beyond_schedule(self, now: datetime) -> bool:
        """True when no known session is in progress or ahead of ``now`` (the schedule ran out)."""
        return not self.sessions or now >= self.sessions[-1].post_close_utc

    async def _refresh(self) -> None:
        """Fetch the calendar, publish the schedule; on failure keep the old one and retry."""
        now = self._clock.now()
        today = ny_date(now)
        if self._calendar is None:
            self._refresh_due = now + timedelta(seconds=self._settings.market_refresh_sec)
            return
        try:
            end = today + timedelta(days=self._settings.schedule_forward_days)
            rows = await self._calendar.calendar(today - LOOKBACK, end)
        except ChmgrError as e:
            self._counters["calendar_failures"] += 1
            delay_s = self._refresh_backoff.next_delay()
            log.warning("calendar refresh failed, retrying in %.0fs: %s", delay_s, e)
            self._refresh_due = now + timedelta(seconds=delay_s)
            return
        self._refresh_backoff.reset()
        self._refresh_due = now + timedelta(seconds=self._settings.market_refresh_sec)
        self._accept(rows, today, end)

    def _accept(self, rows: list[dict[str, object]], today: date, end: date) -> None:
        days = []
        clean = True
        for row in rows:
            day = to_calendar_day(row)
            if isinstance(day, CalendarRejection):
                self._reject(day)
                clean = False
            else:
                days.append(day)
        sessions, rejected = build_sessions(
            days,
            pre_open=_wall(self._settings.market_pre_open_time),
            post_close=_wall(self._settings.market_post_close_time),
        )
        for rejection in rejected:
            self._reject(rejection)
        clean = clean and not rejected and bool(sessions)
        self.sessions = sessions
        cutoff = prune_cutoff(today, self._settings.schedule_retention_days)
        prune_before = datetime.combine(cutoff, time(0), tzinfo=NEW_YORK)
        message = ScheduleComputed(
            sessions=tuple(sessions),
            prune_before_ns=from_datetime(prune_before),
            replace_from=today - LOOKBACK if clean else None,
            replace_to=end if clean else None,
        )
        self._schedule = message
        self._publisher.publish(TOPIC_SCHEDULE, message)
        log.info("schedule refreshed sessions=%d prune_before=%s", len(sessions), cutoff)
        self._check_horizon(today, end)
        self._control_due = self._clock.now()  # the programs follow a schedule that changed

    def _check_horizon(self, today: date, end: date) -> None:
        """Warn when the broker's calendar stops short of today + ``SCHEDULE_FORWARD_DAYS``."""
        last = self.sessions[-1].session_date if self.sessions else None
        if last is not None and (end - last).days <= CALENDAR_GAP_DAYS:
            return
        self._counters["schedule_short"] += 1
        ahead = "no session" if last is None else f"{(last - today).days} days ({last})"
        log.warning(
            "broker calendar covers %s ahead, fewer than SCHEDULE_FORWARD_DAYS=%d: "
            "session programs keep running past its end",
            ahead, self._settings.schedule_forward_days,
        )  # fmt: skip

    def _reject(self, rejection: CalendarRejection) -> None:
        self._counters["rejects_calendar"] += 1
        log.warning("rejected calendar row key=%s reason=%s", rejection.key, rejection.reason)

    async def _load_stored(self) -> None:
        """Use the stored ``market_schedule`` until the broker answers (read-only)."""
        today = ny_date(self._clock.now())
        end = today + timedelta(days=self._settings.schedule_forward_days)
        try:
            async with self._pool.connection() as conn:
                shared = shared_names(self._settings)
                self.sessions = await queries.sessions_between(conn, shared, today - LOOKBACK, end)
        except (ChmgrError, psycopg.Error) as e:  # the DB is only a fallback here: never fatal
            self._counters["schedule_load_failures"] += 1
            log.warning("cannot read the stored schedule: %s", e)
            return
        log.info("using stored schedule sessions=%d", len(self.sessions))


def _boundary(sessions: list[Session], phase: Phase, now: datetime) -> datetime:
    """Return the latest boundary at or before ``now`` that starts ``phase`` (else ``now``)."""
    starts = [
        at
        for session in sessions
        for at, starting in (
            (session.pre_open_utc, Phase.PRE),
            (session.open_utc, Phase.OPEN),
            (session.close_utc, Phase.POST),
            (session.post_close_utc, Phase.CLOSED),
        )
        if starting == phase and at <= now
    ]
    return max(starts, default=now)

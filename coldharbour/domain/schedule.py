"""Trading sessions from the broker calendar, the session phase at an instant, NY session dates.

A calendar row gives a NY session date with its regular open and close as New York wall-clock
times (early closes included). A ``Session`` adds the extended-hours window around it and holds
all four instants in UTC; the conversion goes through ``zoneinfo`` so every DST change is right.

Phases are half-open intervals: ``pre`` [pre_open, open), ``open`` [open, close), ``post``
[close, post_close), ``closed`` otherwise. ``next_transition`` returns the exact instant of the
next phase change so the scheduler can sleep until it instead of polling.

Pure: no I/O, no clock (every "now" is an argument), no logging.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

NEW_YORK: Final = ZoneInfo("America/New_York")
DEFAULT_PRE_OPEN: Final = time(4, 0)
DEFAULT_POST_CLOSE: Final = time(20, 0)
REGULAR_CLOSE: Final = time(16, 0)
DEFAULT_RETENTION_DAYS: Final = 120
# The longest run of calendar days without an NYSE session (a weekend plus a holiday or two):
# a broker calendar ending within this of the wanted horizon is complete.
CALENDAR_GAP_DAYS: Final = 5


class Phase(StrEnum):
    """Where an instant falls relative to the trading sessions."""

    PRE = "pre"
    OPEN = "open"
    POST = "post"
    CLOSED = "closed"


class CalendarDay(msgspec.Struct, frozen=True, kw_only=True):
    """One broker calendar row: a NY session date with its regular open and close (NY time)."""

    date: date
    open: time
    close: time


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """One trading session: the ``market_schedule`` row, every instant an aware UTC datetime."""

    session_date: date
    pre_open_utc: datetime
    open_utc: datetime
    close_utc: datetime
    post_close_utc: datetime


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """The next phase change: the instant it happens and the phase that starts then."""

    at: datetime
    phase: Phase


class CalendarRejection(msgspec.Struct, frozen=True, kw_only=True):
    """A calendar row that could not become a session, with the reason."""

    key: str
    reason: str


def _require_aware(instant: datetime, name: str) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name}: expected a timezone-aware datetime, found naive {instant}")


def ny_wall_to_utc(day: date, wall: time) -> datetime:
    """Return the UTC instant of NY wall-clock ``wall`` on ``day`` (DST-correct)."""
    return datetime.combine(day, wall, tzinfo=NEW_YORK).astimezone(UTC)


def ny_date(instant: datetime) -> date:
    """Return the New York calendar date of an aware instant (never the UTC date: docs/defects.md D13)."""
    _require_aware(instant, "instant")
    return instant.astimezone(NEW_YORK).date()


def _shifted(wall: time, delta: timedelta) -> time:
    anchor = datetime.combine(date(2000, 1, 3), wall) + delta
    return anchor.time()


def to_session(
    day: CalendarDay,
    *,
    pre_open: time = DEFAULT_PRE_OPEN,
    post_close: time = DEFAULT_POST_CLOSE,
) -> Session:
    """Return the session of a calendar row; raise ``ValueError`` when its times are inconsistent.

    On an early close the post-close window ends as long after the close as it normally does
    after 16:00 (20:00 becomes 17:00 after a 13:00 close, as the exchanges run it): the
    original kept 20:00 on half days (D59).
    """
    if not day.open < day.close:
        raise ValueError(f"{day.date}: open {day.open} is not before close {day.close}")
    post = post_close
    if day.close < REGULAR_CLOSE:
        regular = datetime.combine(day.date, REGULAR_CLOSE)
        early = datetime.combine(day.date, day.close)
        post = _shifted(post_close, early - regular)
    pre = min(pre_open, day.open)
    post = max(post, day.close)
    return Session(
        session_date=day.date,
        pre_open_utc=ny_wall_to_utc(day.date, pre),
        open_utc=ny_wall_to_utc(day.date, day.open),
        close_utc=ny_wall_to_utc(day.date, day.close),
        post_close_utc=ny_wall_to_utc(day.date, post),
    )


def _parse_wall(value: object) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 4 and text.isdigit():  # "0930", the calendar's session_open form
            text = f"{text[:2]}:{text[2:]}"
        return time.fromisoformat(text)
    raise ValueError(f"expected HH:MM, found {value!r}")


def to_calendar_day(row: Mapping[str, object]) -> CalendarDay | CalendarRejection:
    """Return a ``CalendarDay`` from a broker calendar mapping (``date``, ``open``, ``close``)."""
    raw_date = row.get("date")
    key = str(raw_date)
    try:
        if isinstance(raw_date, date):
            session_date = raw_date
        elif isinstance(raw_date, str):
            session_date = date.fromisoformat(raw_date.strip()[:10])
        else:
            return CalendarRejection(key=key, reason=f"date: expected YYYY-MM-DD, found {raw_date!r}")
        return CalendarDay(date=session_date, open=_parse_wall(row.get("open")), close=_parse_wall(row.get("close")))
    except ValueError as e:
        return CalendarRejection(key=key, reason=str(e))


def build_sessions(
    days: Iterable[CalendarDay],
    *,
    pre_open: time = DEFAULT_PRE_OPEN,
    post_close: time = DEFAULT_POST_CLOSE,
) -> tuple[list[Session], list[CalendarRejection]]:
    """Return the sessions of calendar rows sorted by date (one per date) and the rejected rows."""
    by_date: dict[date, Session] = {}
    rejected: list[CalendarRejection] = []
    for day in days:
        try:
            by_date[day.date] = to_session(day, pre_open=pre_open, post_close=post_close)
        except ValueError as e:
            rejected.append(CalendarRejection(key=day.date.isoformat(), reason=str(e)))
    return [by_date[d] for d in sorted(by_date)], rejected


def _boundaries(session: Session) -> tuple[tuple[datetime, Phase], ...]:
    return (
        (session.pre_open_utc, Phase.PRE),
        (session.open_utc, Phase.OPEN),
        (session.close_utc, Phase.POST),
        (session.post_close_utc, Phase.CLOSED),
    )


def _index_at_or_before(sessions: Sequence[Session], instant: datetime) -> int:
    """Index of the last session whose pre-open is at or before ``instant`` (-1 if none)."""
    starts = [s.pre_open_utc for s in sessions]
    return bisect.bisect_right(starts, instant) - 1


def phase_at(sessions: Sequence[Session], instant: datetime) -> Phase:
    """Return the phase at ``instant``; ``sessions`` sorted by date and not overlapping."""
    _require_aware(instant, "instant")
    index = _index_at_or_before(sessions, instant)
    if index < 0:
        return Phase.CLOSED
    phase = Phase.CLOSED
    for at, starting in _boundaries(sessions[index]):
        if at <= instant:
            phase = starting
    return phase


def next_transition(sessions: Sequence[Session], instant: datetime) -> Transition | None:
    """Return the first phase change strictly after ``instant``, or None past the last session.

    Boundaries that do not change the phase (a zero-length pre-market) are skipped.
    """
    current = phase_at(sessions, instant)
    start = max(_index_at_or_before(sessions, instant), 0)
    for session in sessions[start:]:
        for at, _ in _boundaries(session):
            if at <= instant:
                continue
            if phase_at(sessions, at) != current:
                return Transition(at=at, phase=phase_at(sessions, at))
    return None


def session_for(sessions: Sequence[Session], instant: datetime) -> Session | None:
    """Return the session whose [pre_open, post_close) holds ``instant``, else None."""
    _require_aware(instant, "instant")
    index = _index_at_or_before(sessions, instant)
    if index < 0:
        return None
    session = sessions[index]
    return session if instant < session.post_close_utc else None


def session_date_on_or_after(session_dates: Sequence[date], day: date) -> date | None:
    """Return the first session date on or after ``day`` (weekends and holidays roll forward).

    ``session_dates`` is sorted; None when ``day`` is after the last one.
    """
    index = bisect.bisect_left(session_dates, day)
    return session_dates[index] if index < len(session_dates) else None


def prune_cutoff(today: date, retention_days: int = DEFAULT_RETENTION_DAYS) -> date:
    """Return the oldest session date kept: rows dated before it are deleted."""
    if retention_days < 0:
        raise ValueError(f"retention_days: expected >= 0, found {retention_days}")
    return today - timedelta(days=retention_days)


def dates_to_prune(
    session_dates: Iterable[date], today: date, retention_days: int = DEFAULT_RETENTION_DAYS
) -> list[date]:
    """Return the stored session dates older than ``retention_days`` before ``today``, sorted."""
    cutoff = prune_cutoff(today, retention_days)
    return sorted(d for d in session_dates if d < cutoff)

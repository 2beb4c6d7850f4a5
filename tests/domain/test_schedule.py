"""Sessions from calendar rows, phases and exact transitions, DST, early closes, retention."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coldharbour.domain.schedule import (
    NEW_YORK,
    CalendarDay,
    CalendarRejection,
    Phase,
    Session,
    Transition,
    build_sessions,
    dates_to_prune,
    next_transition,
    ny_date,
    phase_at,
    prune_cutoff,
    session_date_on_or_after,
    session_for,
    to_calendar_day,
    to_session,
)

REGULAR = (time(9, 30), time(16, 0))
EARLY = (time(9, 30), time(13, 0))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def day(iso: str, hours: tuple[time, time] = REGULAR) -> CalendarDay:
    return CalendarDay(date=date.fromisoformat(iso), open=hours[0], close=hours[1])


# Late November / December 2025: Thanksgiving (27th) closed, the 28th and the 24th close at 13:00.
CALENDAR = [
    day("2025-11-25"),
    day("2025-11-26"),
    day("2025-11-28", EARLY),
    day("2025-12-01"),
    day("2025-12-23"),
    day("2025-12-24", EARLY),
    day("2025-12-26"),
]
SESSIONS, _ = build_sessions(CALENDAR)


@pytest.mark.parametrize(
    ("calendar_day", "expected"),
    [
        # Friday before the March 2025 DST change: EST, UTC-5; post-close 20:00 NY is 01:00Z.
        (day("2025-03-07"), (utc(2025, 3, 7, 9), utc(2025, 3, 7, 14, 30), utc(2025, 3, 7, 21), utc(2025, 3, 8, 1))),
        # Monday after it: EDT, UTC-4.
        (day("2025-03-10"), (utc(2025, 3, 10, 8), utc(2025, 3, 10, 13, 30), utc(2025, 3, 10, 20), utc(2025, 3, 11))),
        # Friday before the November 2025 change (still EDT) and Monday after (EST).
        (day("2025-10-31"), (utc(2025, 10, 31, 8), utc(2025, 10, 31, 13, 30), utc(2025, 10, 31, 20), utc(2025, 11, 1))),
        (day("2025-11-03"), (utc(2025, 11, 3, 9), utc(2025, 11, 3, 14, 30), utc(2025, 11, 3, 21), utc(2025, 11, 4, 1))),
        # Early closes: close 13:00 NY and post-close 17:00 NY (not 20:00: docs/defects.md D59).
        (
            day("2025-11-28", EARLY),
            (utc(2025, 11, 28, 9), utc(2025, 11, 28, 14, 30), utc(2025, 11, 28, 18), utc(2025, 11, 28, 22)),
        ),
        (
            day("2025-12-24", EARLY),
            (utc(2025, 12, 24, 9), utc(2025, 12, 24, 14, 30), utc(2025, 12, 24, 18), utc(2025, 12, 24, 22)),
        ),
        # Early close in summer time (2025-07-03, EDT).
        (
            day("2025-07-03", EARLY),
            (utc(2025, 7, 3, 8), utc(2025, 7, 3, 13, 30), utc(2025, 7, 3, 17), utc(2025, 7, 3, 21)),
        ),
    ],
)
def test_to_session_dst_and_early_close_utc_instants(
    calendar_day: CalendarDay, expected: tuple[datetime, datetime, datetime, datetime]
) -> None:
    session = to_session(calendar_day)

    assert (session.pre_open_utc, session.open_utc, session.close_utc, session.post_close_utc) == expected
    assert session.session_date == calendar_day.date


def test_to_session_custom_pre_and_post_times_are_used() -> None:
    session = to_session(day("2025-03-10"), pre_open=time(7, 0), post_close=time(18, 30))
    early = to_session(day("2025-11-28", EARLY), pre_open=time(7, 0), post_close=time(18, 30))

    assert session.pre_open_utc == utc(2025, 3, 10, 11)
    assert session.post_close_utc == utc(2025, 3, 10, 22, 30)
    assert early.post_close_utc == utc(2025, 11, 28, 20, 30)  # 15:30 NY: 2h30 after 13:00


def test_build_sessions_rejects_inverted_times_and_keeps_the_rest() -> None:
    rows = [day("2025-11-26"), CalendarDay(date=date(2025, 11, 28), open=time(13, 0), close=time(9, 30))]

    sessions, rejected = build_sessions(rows)

    assert [s.session_date for s in sessions] == [date(2025, 11, 26)]
    assert [r.key for r in rejected] == ["2025-11-28"]
    assert "not before close" in rejected[0].reason


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"date": "2025-11-28", "open": "09:30", "close": "13:00"}, day("2025-11-28", EARLY)),
        ({"date": "2025-03-10", "open": "0930", "close": "1600"}, day("2025-03-10")),
        ({"date": date(2025, 3, 10), "open": time(9, 30), "close": time(16)}, day("2025-03-10")),
    ],
)
def test_to_calendar_day_accepted_forms(row: dict[str, object], expected: CalendarDay) -> None:
    assert to_calendar_day(row) == expected


@pytest.mark.parametrize(
    "row",
    [
        {"date": "2025-13-01", "open": "09:30", "close": "16:00"},
        {"date": None, "open": "09:30", "close": "16:00"},
        {"date": "2025-03-10", "open": "9h30", "close": "16:00"},
        {"date": "2025-03-10", "open": "09:30"},
    ],
)
def test_to_calendar_day_bad_rows_are_rejected_with_reason(row: dict[str, object]) -> None:
    result = to_calendar_day(row)

    assert isinstance(result, CalendarRejection)
    assert result.reason


@pytest.mark.parametrize(
    ("instant", "phase"),
    [
        (utc(2025, 11, 26, 8, 59, 59), Phase.CLOSED),
        (utc(2025, 11, 26, 9), Phase.PRE),  # 04:00 NY exactly
        (utc(2025, 11, 26, 14, 29, 59, 999999), Phase.PRE),
        (utc(2025, 11, 26, 14, 30), Phase.OPEN),
        (utc(2025, 11, 26, 21), Phase.POST),
        (utc(2025, 11, 27, 0, 59), Phase.POST),
        (utc(2025, 11, 27, 1), Phase.CLOSED),
        (utc(2025, 11, 27, 15), Phase.CLOSED),  # Thanksgiving
        (utc(2025, 11, 28, 17, 59), Phase.OPEN),
        (utc(2025, 11, 28, 18), Phase.POST),  # early close 13:00 NY
        (utc(2025, 11, 28, 22), Phase.CLOSED),  # post-close 17:00 NY
        (utc(2025, 11, 29, 15), Phase.CLOSED),  # Saturday
        (utc(2025, 12, 25, 15), Phase.CLOSED),  # Christmas
        (utc(2026, 1, 5, 15), Phase.CLOSED),  # past the calendar
    ],
)
def test_phase_at_boundaries_are_half_open(instant: datetime, phase: Phase) -> None:
    assert phase_at(SESSIONS, instant) is phase


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (utc(2025, 11, 26, 8), Transition(at=utc(2025, 11, 26, 9), phase=Phase.PRE)),
        (utc(2025, 11, 26, 9), Transition(at=utc(2025, 11, 26, 14, 30), phase=Phase.OPEN)),
        (utc(2025, 11, 26, 14, 30), Transition(at=utc(2025, 11, 26, 21), phase=Phase.POST)),
        (utc(2025, 11, 26, 21), Transition(at=utc(2025, 11, 27, 1), phase=Phase.CLOSED)),
        # Over Thanksgiving straight to the half day's pre-market.
        (utc(2025, 11, 27, 1), Transition(at=utc(2025, 11, 28, 9), phase=Phase.PRE)),
        (utc(2025, 11, 28, 15), Transition(at=utc(2025, 11, 28, 18), phase=Phase.POST)),
        (utc(2025, 11, 28, 18), Transition(at=utc(2025, 11, 28, 22), phase=Phase.CLOSED)),
        # Over the weekend.
        (utc(2025, 11, 28, 22), Transition(at=utc(2025, 12, 1, 9), phase=Phase.PRE)),
        # Christmas Eve half day, then over Christmas.
        (utc(2025, 12, 24, 17, 59, 59), Transition(at=utc(2025, 12, 24, 18), phase=Phase.POST)),
        (utc(2025, 12, 24, 22), Transition(at=utc(2025, 12, 26, 9), phase=Phase.PRE)),
    ],
)
def test_next_transition_exact_instants(instant: datetime, expected: Transition) -> None:
    assert next_transition(SESSIONS, instant) == expected


def test_next_transition_past_the_last_session_is_none() -> None:
    assert next_transition(SESSIONS, utc(2025, 12, 27, 2)) is None
    assert next_transition([], utc(2025, 12, 27, 2)) is None


def test_next_transition_zero_length_premarket_goes_straight_to_open() -> None:
    sessions, _ = build_sessions([day("2025-03-10")], pre_open=time(9, 30))

    result = next_transition(sessions, utc(2025, 3, 10, 5))

    assert result == Transition(at=utc(2025, 3, 10, 13, 30), phase=Phase.OPEN)


def test_phase_at_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        phase_at(SESSIONS, datetime(2025, 11, 26, 15))  # noqa: DTZ001


def test_session_for_inside_and_outside_windows() -> None:
    assert session_for(SESSIONS, utc(2025, 11, 28, 21)) == SESSIONS[2]
    assert session_for(SESSIONS, utc(2025, 11, 28, 22)) is None
    assert session_for(SESSIONS, utc(2025, 11, 20)) is None


def test_ny_date_late_evening_is_the_ny_day_not_the_utc_day() -> None:
    """D13: 21:30 NY on 2025-03-06 is 02:30Z on the 7th; the session date is the 6th."""
    assert ny_date(utc(2025, 3, 7, 2, 30)) == date(2025, 3, 6)
    assert ny_date(utc(2025, 7, 3, 3, 59)) == date(2025, 7, 2)
    assert ny_date(utc(2025, 7, 3, 4)) == date(2025, 7, 3)


def test_session_date_on_or_after_rolls_weekends_and_holidays_forward() -> None:
    dates = [s.session_date for s in SESSIONS]

    assert session_date_on_or_after(dates, date(2025, 11, 27)) == date(2025, 11, 28)
    assert session_date_on_or_after(dates, date(2025, 11, 29)) == date(2025, 12, 1)
    assert session_date_on_or_after(dates, date(2025, 11, 26)) == date(2025, 11, 26)
    assert session_date_on_or_after(dates, date(2025, 12, 27)) is None


def test_dates_to_prune_only_rows_older_than_retention() -> None:
    stored = [date(2025, 7, 1), date(2025, 8, 1), date(2025, 8, 2), date(2025, 11, 28)]

    result = dates_to_prune(stored, today=date(2025, 11, 30), retention_days=120)

    assert prune_cutoff(date(2025, 11, 30), 120) == date(2025, 8, 2)
    assert result == [date(2025, 7, 1), date(2025, 8, 1)]


def test_prune_cutoff_negative_retention_is_refused() -> None:
    with pytest.raises(ValueError, match="retention_days"):
        prune_cutoff(date(2025, 11, 30), -1)


# A year of weekdays around both 2025 DST changes, some with early closes.
_WEEKDAYS = [date(2025, 1, 2) + timedelta(days=i) for i in range(364)]
_YEAR, _ = build_sessions(
    CalendarDay(date=d, open=time(9, 30), close=time(13) if d.day == 24 else time(16))
    for d in _WEEKDAYS
    if d.weekday() < 5
)


@given(st.integers(min_value=0, max_value=365 * 24 * 3600 - 1))
def test_next_transition_is_the_first_phase_change(offset_s: int) -> None:
    instant = utc(2025, 1, 1) + timedelta(seconds=offset_s)
    here = phase_at(_YEAR, instant)

    transition = next_transition(_YEAR, instant)

    assert transition is not None
    assert transition.at > instant
    assert transition.phase is phase_at(_YEAR, transition.at) is not here
    assert phase_at(_YEAR, transition.at - timedelta(microseconds=1)) is here
    middle = instant + (transition.at - instant) / 2
    assert phase_at(_YEAR, middle) is here


def test_sessions_of_a_year_keep_ny_wall_clock_times_across_dst() -> None:
    def wall(instant: datetime) -> time:
        return instant.astimezone(NEW_YORK).time()

    assert all(wall(s.pre_open_utc) == time(4) for s in _YEAR)
    assert all(wall(s.open_utc) == time(9, 30) for s in _YEAR)
    assert all(wall(s.post_close_utc) == (time(17) if s.session_date.day == 24 else time(20)) for s in _YEAR)
    assert isinstance(_YEAR[0], Session)

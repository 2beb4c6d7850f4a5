"""The NYSE calendar and market clock for ``/v2/calendar`` and ``/v2/clock``.

Sessions (holidays, early closes) come from ``exchange_calendars``' XNYS calendar, a kept
library rather than hand-written rules. Its default ends one year after today; Alpaca's own
calendar runs several years ahead, so the fake asks for ``HORIZON_YEARS`` ahead (a
scheduler asking today + 90 days must never see the calendar end because of the fake).
``truncated(last)`` gives a calendar that ends early, for tests of a short broker calendar.
Alpaca shapes: calendar ``open``/``close`` are New York wall-clock ``HH:MM`` (alpaca-py rejects
seconds), clock times carry the New York offset.

Pure apart from loading the calendar data once per process (``load_calendar`` caches it).
"""

from __future__ import annotations

import bisect
import functools
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from coldharbour.sim.accounts import NEW_YORK

HORIZON_YEARS: Final = 3


@dataclass(frozen=True)
class Session:
    """One trading day with its regular open and close (aware UTC)."""

    day: date
    open: datetime
    close: datetime


class MarketCalendar:
    """Trading sessions in date order, with lookups by date and by instant."""

    def __init__(self, sessions: list[Session]) -> None:
        if not sessions:
            raise ValueError("a market calendar needs at least one session")
        self.sessions = sessions
        self._days = [session.day for session in sessions]
        self._closes = [session.close for session in sessions]

    def truncated(self, last: date) -> MarketCalendar:
        """Return this calendar ending at ``last`` (a broker whose calendar stops early)."""
        return MarketCalendar([session for session in self.sessions if session.day <= last])

    def between(self, first: date, last: date) -> list[Session]:
        """Return the sessions from ``first`` to ``last`` inclusive."""
        low = bisect.bisect_left(self._days, first)
        high = bisect.bisect_right(self._days, last)
        return self.sessions[low:high]

    def _next_index(self, now: datetime) -> int:
        """Return the index of the first session whose close is after ``now``."""
        index = bisect.bisect_right(self._closes, now)
        return min(index, len(self.sessions) - 1)

    def session_close(self, now: datetime) -> datetime:
        """Return the close of the session in progress at ``now``, else of the next one."""
        return self.sessions[self._next_index(now)].close

    def calendar_json(self, first: date, last: date) -> list[dict[str, object]]:
        """Return the ``GET /v2/calendar`` list for ``first``..``last``."""
        result: list[dict[str, object]] = []
        low = bisect.bisect_left(self._days, first)
        high = bisect.bisect_right(self._days, last)
        for index in range(low, high):
            session = self.sessions[index]
            # Settlement is T+1 (US equities since 2024-05-28).
            following = self.sessions[min(index + 1, len(self.sessions) - 1)]
            result.append(
                {
                    "date": session.day.isoformat(),
                    "open": session.open.astimezone(NEW_YORK).strftime("%H:%M"),
                    "close": session.close.astimezone(NEW_YORK).strftime("%H:%M"),
                    "session_open": "0400",
                    "session_close": "2000",
                    "settlement_date": following.day.isoformat(),
                }
            )
        return result

    def clock_json(self, now: datetime) -> dict[str, object]:
        """Return the ``GET /v2/clock`` object at ``now``."""
        current = self.sessions[self._next_index(now)]
        is_open = current.open <= now < current.close
        if is_open:
            following = self.sessions[min(self._next_index(now) + 1, len(self.sessions) - 1)]
            next_open, next_close = following.open, current.close
        else:
            next_open, next_close = current.open, current.close
        return {
            "timestamp": now.astimezone(NEW_YORK).isoformat(),
            "is_open": is_open,
            "next_open": next_open.astimezone(NEW_YORK).isoformat(),
            "next_close": next_close.astimezone(NEW_YORK).isoformat(),
        }


@functools.cache
def load_calendar() -> MarketCalendar:
    """Return the XNYS calendar (loaded once per process; the import takes ~0.5 s)."""
    import exchange_calendars  # heavy (pandas): deferred until a broker starts
    import pandas

    with warnings.catch_warnings():
        # exchange_calendars 4.x trips pandas 3 deprecations inside its own code; not ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        default = exchange_calendars.get_calendar("XNYS")
        end = pandas.Timestamp.today().normalize() + pandas.DateOffset(years=HORIZON_YEARS)
        schedule = exchange_calendars.get_calendar("XNYS", start=default.first_session, end=end).schedule
    sessions = [
        Session(
            day=label.date(),
            open=row_open.to_pydatetime().astimezone(UTC),
            close=row_close.to_pydatetime().astimezone(UTC),
        )
        for label, row_open, row_close in zip(schedule.index, schedule["open"], schedule["close"], strict=True)
    ]
    return MarketCalendar(sessions)

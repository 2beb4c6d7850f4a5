"""``GET /v2/account/portfolio/history`` built from an account's per-minute equity trail.

Samples are one per minute, stamped with the minute's start and holding the value at its end.
A point's value is the equity at the end of its period: the last sample of a minute before the
period's end (the starting equity before any sample), or the latest sample for a period still
running at ``end``. Daily points (``1D``) are trading sessions, stamped at New York midnight and
valued at the session close; intraday points cover the regular session in buckets of the
timeframe, stamped with the bucket's start like the bar that starts there (so the point at
10:00 is the equity at 10:01:00, not at 10:02:00).
``profit_loss`` is measured from the first point (``base_value``). Lists never hold nulls for
``equity`` (alpaca-py rejects them).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Final

from coldharbour.sim.accounts import NEW_YORK, SimAccount
from coldharbour.sim.calendar import MarketCalendar
from coldharbour.sim.wire import CODE_INVALID_FIELD, parse_timestamp, unprocessable

MAX_POINTS: Final = 10_000
PERIOD_UNITS: Final = {"D": 1, "W": 7, "M": 30, "A": 365}
TIMEFRAMES: Final = {
    "1Min": timedelta(minutes=1),
    "5Min": timedelta(minutes=5),
    "15Min": timedelta(minutes=15),
    "1H": timedelta(hours=1),
    "1D": timedelta(days=1),
}


def _period(text: str) -> timedelta:
    count, unit = text[:-1], text[-1:].upper()
    if not count.isdigit() or unit not in PERIOD_UNITS:
        raise unprocessable(f"invalid period: {text!r}", CODE_INVALID_FIELD)
    return timedelta(days=int(count) * PERIOD_UNITS[unit])


class _Trail:
    def __init__(self, account: SimAccount) -> None:
        self.minutes = [minute for minute, _ in account.equity_samples]
        self.values = [value for _, value in account.equity_samples]
        self.initial = account.initial_equity

    def at(self, moment: datetime) -> Decimal:
        """The equity now, ``moment`` inside the latest sampled minute included."""
        index = bisect.bisect_right(self.minutes, moment)
        return self.values[index - 1] if index else self.initial

    def until(self, boundary: datetime, end: datetime) -> Decimal:
        """The equity at ``boundary``: samples of minutes before it (the latest one if past ``end``)."""
        if boundary > end:
            return self.at(end)
        index = bisect.bisect_left(self.minutes, boundary)
        return self.values[index - 1] if index else self.initial


def _points(
    calendar: MarketCalendar, trail: _Trail, start: datetime, end: datetime, size: timedelta
) -> list[tuple[datetime, Decimal]]:
    sessions = calendar.between(start.astimezone(NEW_YORK).date(), end.astimezone(NEW_YORK).date())
    points: list[tuple[datetime, Decimal]] = []
    for session in sessions:
        if size >= timedelta(days=1):
            stamp = datetime.combine(session.day, time(0), tzinfo=NEW_YORK)
            points.append((stamp, trail.until(session.close, end)))
            continue
        bucket = max(session.open, start)
        while bucket < min(session.close, end) and len(points) < MAX_POINTS:
            points.append((bucket, trail.until(bucket + size, end)))
            bucket += size
    return points[-MAX_POINTS:]


def portfolio_history(
    account: SimAccount, params: Mapping[str, str], calendar: MarketCalendar, now: datetime
) -> dict[str, object]:
    """Return the portfolio history object for the query ``params``."""
    timeframe = params.get("timeframe") or ("1D" if params.get("period", "1M") != "1D" else "15Min")
    if timeframe not in TIMEFRAMES:
        raise unprocessable(f"invalid timeframe: {timeframe!r}", CODE_INVALID_FIELD)
    end_text = params.get("end") or params.get("date_end")
    end = parse_timestamp(end_text, "end") if end_text else now
    if params.get("start"):
        start = parse_timestamp(params["start"], "start")
    else:
        start = end - _period(params.get("period") or "1M")
    points = _points(calendar, _Trail(account), start, end, TIMEFRAMES[timeframe])
    base = points[0][1] if points else account.initial_equity
    equity = [float(value) for _, value in points]
    profit_loss = [float(value - base) for _, value in points]
    return {
        "timestamp": [int(stamp.astimezone(UTC).timestamp()) for stamp, _ in points],
        "equity": equity,
        "profit_loss": profit_loss,
        "profit_loss_pct": [float((value - base) / base) if base else 0.0 for _, value in points],
        "base_value": float(base),
        "base_value_asof": start.astimezone(NEW_YORK).date().isoformat(),
        "timeframe": timeframe,
        "cashflow": {},
    }

"""Pure pieces behind the read-only routes: bars, calendar, portfolio history, activity paging."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from coldharbour.sim.activities import ActivityQuery, parse_activity_query, select_activities
from coldharbour.sim.bars import PriceTape, parse_timeframe
from coldharbour.sim.calendar import HORIZON_YEARS, load_calendar
from coldharbour.sim.history import portfolio_history
from coldharbour.sim.wire import SimError, money_text
from tests.sim.builders import T0, at, make_engine, order_body


def _sessions(first: date, last: date) -> list[date]:
    return [session.day for session in load_calendar().between(first, last)]


def test_seeded_history_is_deterministic_and_ends_at_first_seen_price() -> None:
    seen = PriceTape(seed=7)
    seen.record("AAPL", Decimal("150.00"), datetime(2024, 3, 1, 15, tzinfo=UTC))
    other_seed = PriceTape(seed=8)
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)
    sessions = _sessions(start.date(), end.date())

    first = seen.bars("AAPL", timedelta(days=1), start, end, sessions)
    second = seen.bars("AAPL", timedelta(days=1), start, end, sessions)
    unseen = other_seed.bars("AAPL", timedelta(days=1), start, end, sessions)

    assert [b.close for b in first] == [b.close for b in second]
    assert [b.close for b in first] != [b.close for b in unseen]
    assert len(first) == len(sessions)
    assert first[-1].close == Decimal("150.00")  # the seen day aggregates the seen prices
    assert all(b.low <= b.open <= b.high and b.low <= b.close <= b.high for b in first)


def test_intraday_bars_aggregate_seen_prices() -> None:
    tape = PriceTape(seed=0)
    for offset, price in enumerate(["10", "12", "9", "11"]):
        tape.record("AAPL", Decimal(price), T0 + timedelta(seconds=20 * offset))

    bars = tape.bars("AAPL", parse_timeframe("5Min"), T0 - timedelta(hours=1), T0 + timedelta(hours=1), [])

    assert [(b.open, b.high, b.low, b.close, b.trades) for b in bars] == [
        (Decimal(10), Decimal(12), Decimal(9), Decimal(11), 4)
    ]


@pytest.mark.parametrize("text", ["1Week", "0Min", "2Day", "Min", "15"])
def test_unsupported_timeframes_are_refused(text: str) -> None:
    with pytest.raises(SimError, match=f"invalid timeframe: {re.escape(repr(text))}"):
        parse_timeframe(text)


def test_calendar_knows_holidays_and_early_closes() -> None:
    calendar = load_calendar()

    july = calendar.calendar_json(date(2024, 7, 3), date(2024, 7, 5))
    closes = {entry["date"]: entry["close"] for entry in july}

    assert closes == {"2024-07-03": "13:00", "2024-07-05": "16:00"}  # July 4th is a holiday
    assert calendar.session_close(datetime(2024, 7, 3, 18, 30, tzinfo=UTC)) == datetime(2024, 7, 5, 20, tzinfo=UTC)


def test_clock_during_and_after_a_session() -> None:
    calendar = load_calendar()

    during = calendar.clock_json(datetime(2024, 3, 1, 15, tzinfo=UTC))
    weekend = calendar.clock_json(datetime(2024, 3, 2, 15, tzinfo=UTC))

    assert during["is_open"] is True
    assert during["next_close"] == "2024-03-01T16:00:00-05:00"
    assert during["next_open"] == "2024-03-04T09:30:00-05:00"
    assert weekend["is_open"] is False
    assert weekend["next_open"] == "2024-03-04T09:30:00-05:00"


def test_portfolio_history_tracks_equity_per_session() -> None:
    engine = make_engine()
    engine.set_prices({"AAPL": Decimal(100)}, T0)
    engine.submit_order("demo", order_body(qty=100), T0)
    engine.set_prices({"AAPL": Decimal(110)}, at(86_400 * 3))  # Monday

    history = portfolio_history(
        engine.accounts["demo"], {"period": "1W", "timeframe": "1D"}, load_calendar(), at(86_400 * 3 + 60)
    )

    equity, profit_loss = history["equity"], history["profit_loss"]
    assert isinstance(equity, list)
    assert isinstance(profit_loss, list)
    assert equity[-2:] == [100_000.0, 101_000.0]
    assert profit_loss[-1] == equity[-1] - history["base_value"]


def _activities(count: int) -> list[dict[str, object]]:
    return [
        {"id": f"2024030110000{index:04d}::x", "activity_type": "FILL" if index % 2 else "DIV", "net_amount": "1"}
        for index in range(count)
    ]


def test_activity_pages_chain_by_last_id_without_gaps_or_repeats() -> None:
    activities = _activities(7)
    seen: list[object] = []
    token = None
    while True:
        page = select_activities(activities, ActivityQuery(page_size=3, page_token=token))
        if not page:
            break
        seen += [item["id"] for item in page]
        token = str(page[-1]["id"])

    assert seen == [item["id"] for item in reversed(activities)]


def test_activity_query_filters_types_and_rejects_unknown() -> None:
    query = parse_activity_query({"activity_types": "DIV", "direction": "asc"}, None)

    page = select_activities(_activities(5), query)

    assert [item["activity_type"] for item in page] == ["DIV", "DIV", "DIV"]
    with pytest.raises(SimError) as refused:
        parse_activity_query({}, "BOGUS")
    assert refused.value.to_body() == {"code": 40010001, "message": "invalid activity type: BOGUS"}


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("100.50"), "100.5"), (Decimal("1E+2"), "100"), (Decimal("-0.0200"), "-0.02"), (Decimal(0), "0")],
)
def test_money_is_sent_as_plain_strings(value: Decimal, text: str) -> None:
    assert money_text(value) == text


def test_portfolio_history_1min_point_is_the_equity_at_the_end_of_its_minute() -> None:
    """Issue 13 bug: the 1-minute history was one minute early (the 10:00 point held the equity
    of 10:01's minute). A point holds the equity at the end of the minute it is stamped with."""
    engine = make_engine()
    account = engine.accounts["demo"]
    ten = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)  # 10:00 New York
    account.equity_samples[:] = [(ten, Decimal(100_100)), (ten + timedelta(minutes=1), Decimal(100_200))]
    params = {"start": "2024-03-05T14:58:00Z", "end": "2024-03-05T15:03:00Z", "timeframe": "1Min"}

    history = portfolio_history(account, params, load_calendar(), ten + timedelta(hours=1))

    timestamps, equity = history["timestamp"], history["equity"]
    assert isinstance(timestamps, list)
    assert isinstance(equity, list)
    stamps = [datetime.fromtimestamp(t, UTC) for t in timestamps]
    by_minute = dict(zip(stamps, equity, strict=True))
    assert by_minute[ten - timedelta(minutes=1)] == 100_000.0
    assert by_minute[ten] == 100_100.0
    assert by_minute[ten + timedelta(minutes=1)] == 100_200.0


def test_the_fake_calendar_runs_years_ahead_like_alpacas() -> None:
    """Issue 13: the fake's calendar ended one year after today (exchange_calendars' default);
    it now runs ``HORIZON_YEARS`` ahead, so today + SCHEDULE_FORWARD_DAYS is always covered."""
    calendar = load_calendar()
    today = datetime.now(UTC).date()

    assert calendar.sessions[-1].day >= today.replace(year=today.year + HORIZON_YEARS) - timedelta(days=7)
    assert calendar.sessions[0].day <= date(2007, 1, 2)
    short = calendar.truncated(date(2024, 3, 22))
    assert short.calendar_json(date(2024, 3, 18), date(2024, 6, 30))[-1]["date"] == "2024-03-22"

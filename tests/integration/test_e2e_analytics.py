"""The whole stack on the fake broker: the KPI document follows a close, and the intraday
equity curve covers the session so far.

Real processes over ipc:// — bus, state, trades, snapshot, prices, metrics, equity, cashflows —
with ``DISABLE_SESSION_SLEEP=1`` (no scheduler: the session programs stay on), short
intervals, real PostgreSQL and the fake broker through unmodified alpaca-py.

The session comes from the fake broker's calendar and the wall clock, as in production; the
test owns the calendar: every day is a session and the stack runs with pre-open 00:00 and
post-close 23:59 New York, so the suite checks the intraday curve at any hour of any day. The
stored points are exactly the minutes from pre-open to the last whole minute
(``domain.equity.minute_grid``, allowing the newest minute to be one run behind). In the two
minutes around New York midnight there is no point yet: the test then waits (deadline
``INTRADAY_TIMEOUT_S``) until the new session's first minute is stored, so the assertions do not
depend on the hour. The exact curve at chosen instants is in tests/workers/test_equity.py
(``ManualClock``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest

from coldharbour.config import Dsn
from coldharbour.domain.equity import minute_grid
from coldharbour.domain.schedule import NEW_YORK, CalendarDay, Session, build_sessions, session_for, to_calendar_day
from coldharbour.sim.calendar import MarketCalendar
from coldharbour.sim.calendar import Session as CalendarSession
from tests.fixtures.broker import BrokerFactory, FakeBroker
from tests.fixtures.stack import Db, Feed, Notes, Programs, all_clean, broker_environ
from tests.support import wait_for

pytestmark = pytest.mark.integration

PROGRAMS = ("bus", "state", "trades", "snapshot", "prices", "metrics", "equity", "cashflows")
METRICS_INTERVAL_S = 1.0
INTRADAY_TIMEOUT_S = 240.0  # covers the two minutes without a session point around New York midnight
PRE_OPEN, POST_CLOSE = clock_time(0, 0), clock_time(23, 59)  # New York: every minute but one is in a session
KPI = "accounts.account_metrics_demo"
INTRADAY = "accounts.account_equity_intraday_demo"


def _kpis(db: Db) -> dict[str, Any]:
    rows = db.rows(f"SELECT metrics_payload FROM {KPI} WHERE id = 'latest'")
    found: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
    return found


def _kpis_with(db: Db, key: str, value: object) -> dict[str, Any]:
    """Return the stored KPI document once ``key`` has ``value`` (else an empty, falsy dict)."""
    found = _kpis(db)
    return found if found.get(key) == value else {}


def _every_day_calendar(now: datetime) -> MarketCalendar:
    """Return a calendar where every day around ``now`` is a session (09:30–16:00 New York)."""
    first = now.astimezone(NEW_YORK).date() - timedelta(days=400)
    days = [first + timedelta(days=n) for n in range(800)]
    return MarketCalendar([CalendarSession(day, datetime.combine(day, clock_time(9, 30), NEW_YORK).astimezone(UTC),
                                           datetime.combine(day, clock_time(16, 0), NEW_YORK).astimezone(UTC))
                           for day in days])


def _current_session(broker: FakeBroker, now: datetime) -> Session | None:
    """Return the session holding ``now`` by the fake broker's calendar and the stack's pre/post times."""
    today = now.date()
    params = {"start": (today - timedelta(days=7)).isoformat(), "end": (today + timedelta(days=7)).isoformat()}
    rows = broker.request("GET", "/v2/calendar", params=params).json()
    days = [day for day in map(to_calendar_day, rows) if isinstance(day, CalendarDay)]
    sessions, _ = build_sessions(days, pre_open=PRE_OPEN, post_close=POST_CLOSE)
    return session_for(sessions, now)


def _intraday(db: Db) -> list[datetime]:
    return [row[0] for row in db.rows(f"SELECT ts FROM {INTRADAY} ORDER BY ts")]


def _covering_the_session(db: Db, broker: FakeBroker) -> tuple[Session, list[datetime]] | None:
    """Return (the session now, the stored minutes) once they are the session's grid so far."""
    now = datetime.now(UTC)
    session = _current_session(broker, now)
    if session is None:
        return None
    stored, expected = _intraday(db), minute_grid(session, now)
    return (session, stored) if stored and stored in (expected, expected[:-1]) else None


def test_e2e_whole_stack_kpi_follows_a_close_and_intraday_equity_covers_the_session(
    migrated_dsn: Dsn, fake_broker_factory: BrokerFactory, stack_dir: Path
) -> None:
    fake_broker = fake_broker_factory(calendar=_every_day_calendar(datetime.now(UTC)))
    env = broker_environ(
        migrated_dsn, stack_dir, fake_broker.base_url,
        DISABLE_SESSION_SLEEP="1", METRICS_INTERVAL_S=str(METRICS_INTERVAL_S), EQUITY_UPDATE_INTERVAL_S="1",
        CASH_FLOWS_INTERVAL_S="1", FLUSH_INTERVAL_S="1", SNAPSHOT_SEC="3600", BACKFILL_DAYS="1",
        MARKET_PRE_OPEN_TIME=PRE_OPEN.strftime("%H:%M"), MARKET_POST_CLOSE_TIME=POST_CLOSE.strftime("%H:%M"),
    )  # fmt: skip
    feed, notes, db = Feed(env["ZMQ_SIP_STREAM_ENDPOINT"]), Notes(migrated_dsn), Db(migrated_dsn)
    programs = Programs(env, stack_dir)
    try:
        programs.start(*PROGRAMS)
        first = wait_for(lambda: _kpis(db), 30, what="the KPI row")
        wait_for(lambda: fake_broker.listener_count() == 1, 20, what="trades stream listening")
        fake_broker.set_prices({"AAPL": 100})
        (dividend,) = fake_broker.post_activities([{"activity_type": "DIV", "symbol": "AAPL", "net_amount": "2.40"}])
        order = fake_broker.trading_client().submit_order(
            MarketOrderRequest(
                symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class="bracket",
                take_profit=TakeProfitRequest(limit_price=110), stop_loss=StopLossRequest(stop_price=90),
            )
        )  # fmt: skip
        # No feed tick yet: the lot is marked from the snapshot's current_price (100).
        opened = wait_for(lambda: _kpis_with(db, "Current Open Value", 1000), 30, what="KPI with the marked lot")
        feed.send("AAPL", 105.0)

        closing = notes.mark()
        fake_broker.set_prices({"AAPL": 111})
        wait_for(lambda: notes.since(closing, "closed_channel_demo"), 30, what="closed slice")
        after_close = wait_for(
            lambda: _kpis_with(db, "Closed Trades (n)", 1), 30, interval_s=0.02, what="KPI with the closed lot"
        )
        metrics_note = wait_for(lambda: notes.since(closing, "metrics_channel_demo"), 30, what="KPI NOTIFY")[0]
        dividends = wait_for(lambda: _kpis(db).get("Net Dividends") == 2.4, 30, what="dividend in the KPIs")
        # docs/spec.md §8 corrections: the broker cancels the dividend → its cash flow and the KPI follow.
        fake_broker.post_activities([{"id": dividend["id"], "status": "canceled"}])
        canceled = wait_for(lambda: _kpis(db).get("Net Dividends") == 0, 15, what="canceled dividend out of the KPIs")
        dividend_rows = db.rows("SELECT count(*) FROM accounts.cash_flows_demo WHERE id = %s", dividend["id"])

        session, covered = wait_for(lambda: _covering_the_session(db, fake_broker), INTRADAY_TIMEOUT_S,
                                    interval_s=0.2, what="the intraday curve covering the session so far")
        equity_runs = programs.wait_counter("equity", "equity_runs", 2)  # its heartbeat can trail the rows
    finally:
        notes.close()
        db.close()
        codes = programs.close()
        feed.close()

    assert all_clean(codes), programs.logs()
    assert order is not None
    assert (first["Closed Trades (n)"], first["Open Trades (n)"]) == (0, 0)
    assert (opened["Open Trades (n)"], opened["Unrealized P/L (Open)"]) == (1, 0)
    assert metrics_note.payload["op"] == "metrics"
    assert after_close["Open Trades (n)"] == 0
    assert after_close["Realized P/L (Strategy Only)"] == 100
    assert after_close["Realized P/L (Broker/FIFO)"] == 100
    assert (after_close["Win Rate %"], after_close["Mean Take ($)"]) == (100, 100)
    assert dividends
    assert canceled
    assert dividend_rows == [(0,)]
    assert equity_runs >= 2
    assert covered[0] == session.pre_open_utc
    assert all(b - a == timedelta(minutes=1) for a, b in pairwise(covered))

"""Total Return %, MTD % and YTD %: one time-weighted series, net of flows, equal to the report's.

docs/spec.md §5: the three are ``Π(1 + r) − 1`` of the daily series over all rows, the NY month
and the NY year of ``as_of``, times today's live return while a session runs and today has no
daily row yet. So a curve that starts this month has Total == MTD, one that starts this year
Total == YTD, and a deposit is never a gain. The daily series is the report's
(``domain.report.compute_report``), so the cards and the tear sheet cannot disagree.

The curves are built by the real replay (``domain.equity.build_daily_curve``) and the live point
by the real intraday curve (``domain.equity.compute_intraday``), from fills and activities.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from coldharbour.domain.cashflows import CashFlow, Execution, classify
from coldharbour.domain.equity import (
    Bar,
    DailyCurve,
    DayInputs,
    Opening,
    anchor_from_curve,
    build_daily_curve,
    compute_intraday,
    daily_summary,
    start_curve,
)
from coldharbour.domain.metrics import KpiDocument, compute_kpi_document, live_return, period_returns
from coldharbour.domain.report import compound, compute_report
from coldharbour.domain.schedule import Session

D = Decimal
NY = ZoneInfo("America/New_York")
HUNDRED = D(100)
KEYS = ("Total Return %", "MTD %", "YTD %")


def _pct(value: Decimal) -> float:
    """The card's rounding of a return (a fraction) in %: 2 places, half-even."""
    return float((HUNDRED * value).quantize(D("0.01"), rounding=ROUND_HALF_EVEN)) + 0.0


def _ny(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second), tzinfo=NY).astimezone(UTC)


def _session(day: date) -> Session:
    """A regular session: pre-open 04:00, open 09:30, close 16:00, post-close 20:00 New York."""
    return Session(
        session_date=day, pre_open_utc=_ny(day, 4), open_utc=_ny(day, 9, 30), close_utc=_ny(day, 16),
        post_close_utc=_ny(day, 20),
    )  # fmt: skip


def _flow(flow_id: str, ts: datetime, code: str, amount: str | Decimal) -> CashFlow:
    return CashFlow(id=flow_id, ts=ts, amount=D(amount), type=code, category=classify(code))


def _kpis(curve: DailyCurve, as_of: datetime, intraday: Decimal | None = None, in_session: bool = False) -> KpiDocument:
    return compute_kpi_document(
        slices=[], flows=[], daily=[daily_summary(row) for row in curve.rows], open_lots=[],
        intraday_cumulative_return=intraday, in_session=in_session, as_of=as_of,
    )  # fmt: skip


def _returns(doc: KpiDocument) -> tuple[object, ...]:
    return tuple(doc[key] for key in KEYS)


# The dashboard's first session (tests/integration/test_dashboard.py, docs/dashboard.png).

# The fake broker opens an account with 100,000 of cash (coldharbour/sim/accounts.py DEFAULT_CASH).
FIRST_DAY = date(2026, 12, 7)  # a Monday; the screenshot was taken at 18:58 New York (post-market)
OPENING = Opening(as_of=date(2026, 12, 4), cash=D(100_000))
FILLED = _ny(FIRST_DAY, 18, 58, 8)
FILLS = (  # the two brackets' entries and WEBA's take-profit, as the fake broker fills them
    Execution(id="e1", ts=FILLED, symbol="WEBA", qty=D(10), price=D(100)),
    Execution(id="e2", ts=FILLED, symbol="WEBB", qty=D(4), price=D(50)),
    Execution(id="e3", ts=FILLED + timedelta(seconds=2), symbol="WEBA", qty=D(-10), price=D(110)),
)
BARS = {
    "WEBA": [Bar(ts=FILLED.replace(second=0), close=D("101.37"))],
    "WEBB": [Bar(ts=FILLED.replace(second=0), close=D(50))],
}


def test_dashboard_first_session_total_return_equals_mtd_and_ytd() -> None:
    """The bug of the screenshot: up $100 on 100,000 on the account's first session, in the post
    phase. The session's daily row exists (its close has passed: r = 100/100,000 = 0.10 %), MTD
    and YTD compounded it (0.10), but Total Return took the newest intraday point while "in
    session", and that point was computed a minute behind the fills (0.00). Today's daily row now
    is today's return for all three; the intraday point is added only before it exists."""
    curve = build_daily_curve([DayInputs(session_date=FIRST_DAY, executions=FILLS, closes={"WEBB": D(50)})], OPENING)
    session = _session(FIRST_DAY)
    lagging = compute_intraday(
        session=session, until=FILLED, anchor=anchor_from_curve(curve, before_last_row=True), lots=[], flows=[],
        bars=BARS, executions=FILLS,
    )  # fmt: skip
    as_of = FILLED + timedelta(seconds=3)

    doc = _kpis(curve, as_of, intraday=lagging[-1].cumulative_return, in_session=True)
    report = compute_report([daily_summary(row) for row in curve.rows], [], benchmark_symbol="SPY",
                            benchmark_closes=None)  # fmt: skip

    assert curve.rows[-1].deposit == D(100_100)
    assert lagging[-1].cumulative_return == 0  # the minute before the fills
    assert _returns(doc) == (0.1, 0.1, 0.1)  # was (0.0, 0.1, 0.1)
    assert report.twr_pct == report.monthly_returns["2026-12"] == report.yearly_returns["2026"] == 0.1


def test_first_session_before_its_close_is_live_in_all_three() -> None:
    """Before the first close there is no daily row: the live intraday return (net of flows,
    anchored on the opening balance) is Total Return, MTD and YTD alike (MTD/YTD were null)."""
    session = _session(FIRST_DAY)
    anchor = anchor_from_curve(start_curve(OPENING))
    points = compute_intraday(
        session=session, until=FILLED + timedelta(minutes=2), anchor=anchor, lots=[], flows=[], bars=BARS,
        executions=FILLS,
    )  # fmt: skip

    doc = _kpis(start_curve(OPENING), FILLED + timedelta(minutes=2), points[-1].cumulative_return, in_session=True)

    assert points[-1].cumulative_return == D("0.001")
    assert _returns(doc) == (0.1, 0.1, 0.1)


def test_a_deposit_on_day_one_is_not_a_gain_live_or_closed() -> None:
    """An account funded today (opening 0): 10,000 deposited at 10:00, a 100 dividend at 11:00.
    Live and after the close the return is the dividend's 1 %, never the deposit's."""
    day = FIRST_DAY
    flows = (_flow("dep", _ny(day, 10), "CSD", "10000"), _flow("div", _ny(day, 11), "DIV", "100"))
    opening = Opening(as_of=date(2026, 12, 4), cash=D(0))
    points = compute_intraday(
        session=_session(day), until=_ny(day, 12), anchor=anchor_from_curve(start_curve(opening)), lots=[],
        flows=flows, bars={}, executions=[],
    )  # fmt: skip
    by_minute = {point.ts: point.cumulative_return for point in points}
    closed = build_daily_curve([DayInputs(session_date=day, flows=flows)], opening)

    live = _kpis(start_curve(opening), _ny(day, 12), by_minute[_ny(day, 11, 59)], in_session=True)
    after_deposit = _kpis(start_curve(opening), _ny(day, 10, 30), by_minute[_ny(day, 10, 29)], in_session=True)
    after_close = _kpis(closed, _ny(day, 17), by_minute[_ny(day, 11, 59)], in_session=True)

    assert _returns(after_deposit) == (0.0, 0.0, 0.0)
    assert _returns(live) == _returns(after_close) == (1.0, 1.0, 1.0)


def test_live_return_only_before_todays_row_and_never_after_a_wipe_out() -> None:
    curve = build_daily_curve([DayInputs(session_date=FIRST_DAY, executions=FILLS, closes={"WEBB": D(50)})], OPENING)
    (today,) = [daily_summary(row) for row in curve.rows]
    next_day = _ny(FIRST_DAY + timedelta(days=1), 10)
    # The intraday point of the next day carries (1 + R0)(1 + r) − 1 with R0 = 0.001, r = 2 %.
    point = (1 + D("0.001")) * (1 + D("0.02")) - 1

    assert live_return(today, point, in_session=True, as_of=_ny(FIRST_DAY, 19)) is None  # today's row is there
    assert live_return(today, point, in_session=False, as_of=next_day) is None  # no session: the rows alone
    assert live_return(today, point, in_session=True, as_of=next_day) == D("0.02")
    assert live_return(None, D("0.005"), in_session=True, as_of=next_day) == D("0.005")  # anchored on the opening
    ruined = today.__class__(**{**{f: getattr(today, f) for f in today.__struct_fields__}, "daily_return": None,
                                "cumulative_return": None})  # fmt: skip
    assert live_return(ruined, D("0.01"), in_session=True, as_of=next_day) is None


# Any curve: the three agree where they cover the same period, and equal the report.

amounts = st.decimals(min_value=D(1), max_value=D(20_000), places=2)


@st.composite
def histories(draw: st.DrawFn) -> tuple[Opening, list[DayInputs], datetime]:
    """An opening, 1–45 session dates with deposits, withdrawals, dividends, fees, fills and closes
    of one symbol (a withdrawal can wipe the account out), and an ``as_of`` on or after the last."""
    start = draw(st.dates(min_value=date(2023, 11, 1), max_value=date(2026, 12, 31)))
    opening = Opening(as_of=start - timedelta(days=1), cash=draw(st.sampled_from([D(0), D(5_000), D(100_000)])))
    days: list[DayInputs] = []
    day = start
    for i in range(draw(st.integers(min_value=1, max_value=45))):
        noon = _ny(day, 12)
        price = draw(st.decimals(min_value=D(5), max_value=D(200), places=2))
        flows = []
        for j, code in enumerate(draw(st.lists(st.sampled_from(["CSD", "CSW", "JNLC", "DIV", "FEE"]), max_size=2))):
            amount = draw(amounts)
            signed = -amount if code in ("CSW", "FEE") or (code == "JNLC" and draw(st.booleans())) else amount
            flows.append(_flow(f"f{i}-{j}", noon, code, signed if code != "DIV" else amount / 100))
        fills = []
        qty = draw(st.integers(min_value=-20, max_value=20))
        if qty:
            fills.append(Execution(id=f"e{i}", ts=noon, symbol="X", qty=D(qty), price=price))
        close = price * draw(st.sampled_from([D("0.9"), D("0.99"), D(1), D("1.01"), D("1.1")]))
        days.append(DayInputs(session_date=day, flows=tuple(flows), executions=tuple(fills), closes={"X": close}))
        day += timedelta(days=draw(st.integers(min_value=1, max_value=9)))
    last = days[-1].session_date
    as_of = _ny(last + timedelta(days=draw(st.integers(min_value=0, max_value=70))), 17)
    return opening, days, as_of


@settings(max_examples=200, deadline=None)
@given(history=histories(), live=st.none() | st.decimals(min_value=D("-0.5"), max_value=D("0.5"), places=6))
def test_total_mtd_ytd_agree_on_the_same_period_and_equal_the_report(
    history: tuple[Opening, list[DayInputs], datetime], live: Decimal | None
) -> None:
    opening, days, as_of = history
    curve = build_daily_curve(days, opening)
    rows = [daily_summary(row) for row in curve.rows]
    first, newest = rows[0], rows[-1]
    local = as_of.astimezone(NY)
    # A live intraday point as the equity job stores it: (1 + R0)(1 + r) − 1 on the newest row.
    intraday = None
    if live is not None and newest.cumulative_return is not None:
        intraday = (1 + newest.cumulative_return) * (1 + live) - 1

    closed = _kpis(curve, as_of)
    in_session = _kpis(curve, as_of, intraday, in_session=True)
    report = compute_report(rows, [], benchmark_symbol="SPY", benchmark_closes=None)

    for doc in (closed, in_session):
        if (first.date.year, first.date.month) == (local.year, local.month):
            assert doc["Total Return %"] == doc["MTD %"]
        if first.date.year == local.year:
            assert doc["Total Return %"] == doc["YTD %"]
    # Without a live point the cards are the report's figures, from the same Decimal products.
    returns = list(report.returns.values())
    month = [r for d, r in report.returns.items() if d[:7] == f"{local.year}-{local.month:02d}"]
    year = [r for d, r in report.returns.items() if d[:4] == str(local.year)]
    assert _returns(closed) == (_pct(compound(returns)), _pct(compound(month)), _pct(compound(year)))
    shown = [float(str(value)) for value in _returns(closed)]
    reported = [
        report.twr_pct,
        report.monthly_returns.get(f"{local.year}-{local.month:02d}", 0.0),  # no return this month: 0
        report.yearly_returns.get(str(local.year), 0.0),
    ]
    assert all(
        abs(card - value) <= 0.005 + 1e-9 for card, value in zip(shown, reported, strict=True) if value is not None
    )
    assert report.twr_pct is not None
    # In a session before today's row, each of the three is the same product times (1 + live).
    today_has_row = newest.date >= local.date()
    if intraday is None or today_has_row or report.wipe_out is not None:
        assert _returns(in_session) == _returns(closed)
    else:
        assert live is not None
        periods = period_returns(rows, as_of)
        parts = (periods.total, periods.month, periods.year)
        step = live_return(newest, intraday, in_session=True, as_of=as_of)
        assert step is not None
        assert abs(step - live) < D("1e-20")
        assert _returns(in_session) == tuple(_pct((1 + (p or 0)) * (1 + step) - 1) for p in parts)


@settings(max_examples=100, deadline=None)
@given(
    start=st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31)),
    opening_cash=st.sampled_from([D(0), D(1_000), D(100_000)]),
    moves=st.lists(st.tuples(st.sampled_from(["CSD", "CSW", "JNLC", "JNLS"]), amounts), min_size=1, max_size=20),
)
def test_deposits_and_withdrawals_alone_are_no_return(
    start: date, opening_cash: Decimal, moves: list[tuple[str, Decimal]]
) -> None:
    """Money in and out, nothing traded: every return is 0 however large the flow (equity kept
    positive: a withdrawal never takes more than the balance)."""
    balance = opening_cash
    days = []
    for i, (code, amount) in enumerate(moves):
        signed = amount if code in ("CSD", "JNLC") or amount >= balance else -amount
        balance += signed
        day = start + timedelta(days=i)
        days.append(DayInputs(session_date=day, flows=(_flow(f"m{i}", _ny(day, 12), code, signed),)))
    curve = build_daily_curve(days, Opening(as_of=start - timedelta(days=1), cash=opening_cash))
    as_of = _ny(days[-1].session_date, 17)

    doc = _kpis(curve, as_of)

    assert _returns(doc) == (0.0, 0.0, 0.0)
    assert (doc["Best Day %"], doc["Worst Day %"], doc["Max Drawdown %"]) == (0.0, 0.0, 0.0)

"""Daily ledger replay and intraday mark-to-market, with hand-computed figures and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldharbour.domain.cashflows import CashFlow, Category, Execution, classify
from coldharbour.domain.equity import (
    Anchor,
    Bar,
    DailyRow,
    DayInputs,
    IntradayLot,
    Opening,
    anchor_from_curve,
    bucket_by_session,
    build_daily_curve,
    compute_intraday,
    daily_summary,
    extend_daily_curve,
    last_bars,
    minute_grid,
    prove_rows,
    resume_curve,
    rewind_curve,
    start_curve,
    unexplained_flows,
)
from coldharbour.domain.metrics import rolling_sharpe
from coldharbour.domain.schedule import CalendarDay, build_sessions, to_session

D = Decimal
TOLERANCE = Fraction(1, 10**20)


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """An EST (UTC-5) wall-clock time in January as an aware UTC instant."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC) + timedelta(hours=5)


def flow(n: int, code: str, amount: str, ts: datetime) -> CashFlow:
    return CashFlow(id=f"{n:03d}", ts=ts, amount=D(amount), type=code, category=classify(code))


def execution(n: int, symbol: str, qty: str, price: str, ts: datetime) -> Execution:
    return Execution(id=f"x{n}", ts=ts, symbol=symbol, qty=D(qty), price=D(price))


def close_to(actual: Decimal | None, expected: Fraction) -> bool:
    return actual is not None and abs(Fraction(actual) - expected) < TOLERANCE


# January 2025: Wed 15, Thu 16, Fri 17, weekend, Mon 20 (MLK day, closed), Tue 21, Wed 22.
SESSION_DATES = [date(2025, 1, d) for d in (15, 16, 17, 21, 22)]
FLOWS = [
    flow(1, "CSD", "10000", ny(2025, 1, 15, 10)),
    flow(2, "FILL", "-1000", ny(2025, 1, 15, 10, 30)),  # the trade's own cash row: skipped
    flow(3, "FEE", "-1", ny(2025, 1, 15, 16)),
    flow(4, "CSW", "-2000", ny(2025, 1, 17, 11)),
    flow(5, "DIV", "5", ny(2025, 1, 18)),  # Saturday: rolls to Tuesday
    flow(6, "JNLC", "500", ny(2025, 1, 20, 9)),  # holiday: rolls to Tuesday
    flow(7, "FILL", "1050", ny(2025, 1, 21, 10)),
    flow(8, "CFEE", "-0.5", ny(2025, 1, 21, 12)),
    flow(9, "FILL", "-1000", ny(2025, 1, 22, 15)),
    flow(10, "INT", "1.25", ny(2025, 1, 22, 20, 30)),  # 01:30Z on the 23rd: still the 22nd in NY (docs/defects.md D13)
]
EXECUTIONS = [
    execution(1, "AAPL", "10", "100", ny(2025, 1, 15, 10, 30)),
    execution(2, "AAPL", "-10", "105", ny(2025, 1, 21, 10)),
    execution(3, "MSFT", "5", "200", ny(2025, 1, 22, 15)),
]
CLOSES = {
    date(2025, 1, 15): {"AAPL": D(102)},
    date(2025, 1, 16): {"AAPL": D(101)},
    date(2025, 1, 17): {"AAPL": D(103)},
    date(2025, 1, 21): {"AAPL": D(104)},
    date(2025, 1, 22): {"AAPL": D(104)},  # no MSFT close yet: marked at its fill price
}


def ledger_days() -> list[DayInputs]:
    return bucket_by_session(SESSION_DATES, FLOWS, EXECUTIONS, CLOSES)


def test_bucket_by_session_rolls_weekend_and_holiday_flows_forward() -> None:
    days = ledger_days()

    assert [d.session_date for d in days] == SESSION_DATES
    assert [f.id for f in days[3].flows] == ["005", "006", "007", "008"]
    assert [f.id for f in days[4].flows] == ["009", "010"]
    assert [e.id for e in days[3].executions] == ["x2"]


def test_daily_ledger_hand_computed_rows() -> None:
    rows = build_daily_curve(ledger_days()).rows

    # Day 1: cash 10000 - 1000 - 1 = 8999, 10 AAPL at 102 = 1020; base = 0 + 10000.
    # Day 2: 10 AAPL at 101; base 10019.  Day 3: withdrawal 2000, close 103; base 10009 - 2000.
    # Day 4 (Tue): sell 10 at 105, DIV 5, JNLC 500 (external), CFEE -0.5; base 8029 + 500.
    # Day 5: buy 5 MSFT at 200 (no close: marked at 200), INT 1.25; base 8554.75 - 1.25... = 8553.5.
    expected_money = [
        (date(2025, 1, 15), "10019", "8999", "1020", "10000"),
        (date(2025, 1, 16), "10009", "8999", "1010", "0"),
        (date(2025, 1, 17), "8029", "6999", "1030", "-2000"),
        (date(2025, 1, 21), "8553.5", "8553.5", "0", "500"),
        (date(2025, 1, 22), "8554.75", "7554.75", "1000", "0"),
    ]
    returns = [
        Fraction(19, 10000),
        Fraction(-10, 10019),
        Fraction(20, 8009),  # the withdrawal is not a loss: (8029 - 10009 + 2000) / 8009
        Fraction(245, 85290),  # (8553.5 - 8029 - 500) / 8529
        Fraction(125, 855350),  # 1.25 / 8553.5
    ]
    index = Fraction(1)
    peak = Fraction(1)
    cumulative = []
    drawdown = []
    for r in returns:
        index *= 1 + r
        peak = max(peak, index)
        cumulative.append(index - 1)
        drawdown.append(index / peak - 1)

    assert [(r.date, r.deposit, r.cash_balance, r.market_value, r.net_flows) for r in rows] == [
        (d, D(a), D(b), D(c), D(f)) for d, a, b, c, f in expected_money
    ]
    assert all(close_to(row.daily_return, r) for row, r in zip(rows, returns, strict=True))
    assert all(close_to(row.cumulative_return, c) for row, c in zip(rows, cumulative, strict=True))
    assert all(close_to(row.drawdown, d) for row, d in zip(rows, drawdown, strict=True))
    assert close_to(rows[1].drawdown, Fraction(-10, 10019))
    assert rows[2].drawdown == 0  # a new high of the flow-adjusted index right after a withdrawal
    assert all(row.sharpe_10 is None and row.smart_sharpe_252 is None for row in rows)


def test_daily_curve_opening_balance_starts_from_known_equity() -> None:
    """D11: history cut at 2025-01-14 starts from the broker's balance, not from 0."""
    opening = Opening(as_of=date(2025, 1, 14), cash=D(5000), positions={"AAPL": D(10)}, closes={"AAPL": D(100)})
    day = DayInputs(session_date=date(2025, 1, 15), closes={"AAPL": D(110)})

    row = build_daily_curve([day], opening).rows[0]

    assert (row.deposit, row.market_value, row.net_flows) == (D(6100), D(1100), D(0))
    assert close_to(row.daily_return, Fraction(100, 6000))


def test_opening_without_close_for_a_position_is_refused() -> None:
    with pytest.raises(ValueError, match="AAPL"):
        start_curve(Opening(as_of=date(2025, 1, 14), cash=D(1), positions={"AAPL": D(1)}))


def test_bucket_by_session_after_opening_drops_older_activity() -> None:
    days = bucket_by_session(SESSION_DATES, FLOWS, EXECUTIONS, CLOSES, after=date(2025, 1, 16))

    assert [d.session_date for d in days] == SESSION_DATES[2:]
    assert [f.id for f in days[0].flows] == ["004"]


def test_daily_return_zero_when_base_not_positive() -> None:
    days = [
        DayInputs(session_date=date(2025, 1, 15), flows=(flow(1, "FEE", "-1", ny(2025, 1, 15, 10)),)),
        DayInputs(session_date=date(2025, 1, 16), flows=(flow(2, "CSD", "100", ny(2025, 1, 16, 10)),)),
    ]

    rows = build_daily_curve(days).rows

    assert [r.daily_return for r in rows] == [D(0), D(0)]  # base 0, then -1 + 100 with no gain
    assert rows[1].deposit == D(99)


def test_extend_refuses_days_not_after_the_curve() -> None:
    curve = build_daily_curve(ledger_days())

    with pytest.raises(ValueError, match="not after"):
        extend_daily_curve(curve, [DayInputs(session_date=date(2025, 1, 22))])


def test_sharpe_columns_use_the_last_w_daily_returns() -> None:
    base = date(2025, 1, 1)
    days = [
        DayInputs(
            session_date=base + timedelta(days=i),
            flows=(flow(i, "CSD", "1000", ny(2025, 1, 1)),) if i == 0 else (),
            executions=(execution(i, "X", "10", "100", ny(2025, 1, 1)),) if i == 0 else (),
            closes={"X": D(100) + D(i % 4) - D(i % 3)},
        )
        for i in range(25)
    ]

    rows = build_daily_curve(days).rows
    returns = [r.daily_return for r in rows if r.daily_return is not None]
    assert len(returns) == len(rows)

    assert rows[8].sharpe_10 is None
    assert (rows[9].sharpe_10, rows[9].smart_sharpe_10) == rolling_sharpe(returns[:10], 10)
    assert (rows[24].sharpe_21, rows[24].smart_sharpe_21) == rolling_sharpe(returns, 21)
    assert rows[24].sharpe_10 is not None
    assert rows[24].sharpe_63 is None
    assert daily_summary(rows[24]).sharpe[21] == rows[24].sharpe_21


# Hypothesis: rebuild == extend == resume-then-extend; flows alone never make a return.

symbols = st.sampled_from(["AAA", "BBB", "CCC"])
prices = st.decimals(min_value=D(1), max_value=D(500), places=2)


@st.composite
def day_inputs(draw: st.DrawFn) -> list[DayInputs]:
    count = draw(st.integers(min_value=1, max_value=30))
    days: list[DayInputs] = []
    n = 0
    for i in range(count):
        session_date = date(2025, 1, 1) + timedelta(days=i)
        at = datetime(2025, 1, 1, 15, tzinfo=UTC) + timedelta(days=i)
        flows = []
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            n += 1
            code = draw(st.sampled_from(["CSD", "CSW", "DIV", "FEE", "INT", "JNLC"]))
            amount = draw(st.decimals(min_value=D(-500), max_value=D(5000), places=2))
            flows.append(flow(n, code, str(amount), at))
        executions = []
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            n += 1
            qty = draw(st.integers(min_value=-20, max_value=20).filter(bool))
            executions.append(execution(n, draw(symbols), str(qty), str(draw(prices)), at))
        closes = draw(st.dictionaries(symbols, prices, max_size=3))
        days.append(
            DayInputs(session_date=session_date, flows=tuple(flows), executions=tuple(executions), closes=closes)
        )
    return days


@settings(max_examples=60)
@given(days=day_inputs(), data=st.data())
def test_extend_equals_full_rebuild(days: list[DayInputs], data: st.DataObject) -> None:
    split = data.draw(st.integers(min_value=0, max_value=len(days)))
    full = build_daily_curve(days)
    head = build_daily_curve(days[:split])

    extended = extend_daily_curve(head, days[split:])

    assert extended == full
    if split:
        resumed = resume_curve(head.rows, head.book.positions, head.book.last_price)
        assert extend_daily_curve(resumed, days[split:]).rows == full.rows


OPENING = Opening(as_of=date(2024, 12, 31), cash=D(1000))


@settings(max_examples=60)
@given(days=day_inputs(), data=st.data())
def test_a_late_flow_rewinds_to_its_day_and_re_extends_to_a_full_rebuild(
    days: list[DayInputs], data: st.DataObject
) -> None:
    """A flow stored late for day k: the rows before k are kept, k and the later ones are written
    again, and the result is the rebuild over the corrected inputs."""
    k = data.draw(st.integers(min_value=0, max_value=len(days) - 1))
    amount = data.draw(st.decimals(min_value=D(-500), max_value=D(5000), places=2))
    code = data.draw(st.sampled_from(["CSD", "DIV", "FEE"]))
    late = flow(999, code, str(amount), datetime(2025, 1, 1, 18, tzinfo=UTC))
    corrected = [*days[:k], msgspec.structs.replace(days[k], flows=(*days[k].flows, late)), *days[k + 1 :]]
    built = build_daily_curve(days, OPENING)

    rewound = rewind_curve(built, days[k].session_date)

    assert rewound is not None
    assert rewound.rows == built.rows[:k]
    assert extend_daily_curve(rewound, corrected[k:]) == build_daily_curve(corrected, OPENING)


def test_a_curve_rewinds_only_where_the_book_before_the_day_is_known() -> None:
    days = ledger_days()
    built = build_daily_curve(days, Opening(as_of=days[0].session_date - timedelta(days=1), cash=D(0)))
    resumed = resume_curve(built.rows, built.book.positions, built.book.last_price)
    assert rewind_curve(resumed, days[1].session_date) is None  # no book per stored row
    assert rewind_curve(built, days[0].session_date - timedelta(days=1)) is None  # on the opening: it may move
    assert rewind_curve(build_daily_curve(days), days[1].session_date) is None  # no opening: the first flow is it
    assert rewind_curve(built, days[-1].session_date + timedelta(days=1)) == built  # after the last row: nothing


@given(amounts=st.lists(st.decimals(min_value=D(-1000), max_value=D(5000), places=2), min_size=1, max_size=15))
def test_external_flows_alone_give_zero_returns_and_drawdown(amounts: list[Decimal]) -> None:
    days = [
        DayInputs(session_date=date(2025, 2, 1) + timedelta(days=i), flows=(flow(i, "CSD", str(a), ny(2025, 2, 1)),))
        for i, a in enumerate(amounts)
    ]

    rows = build_daily_curve(days).rows

    assert all(r.daily_return == 0 and r.cumulative_return == 0 and r.drawdown == 0 for r in rows)
    assert rows[-1].deposit == sum(amounts, D(0))


# Intraday: 2025-01-22 (EST). Previous close E0 = 10000, R0 = 5 %, AAPL closed at 100.

SESSION = to_session(CalendarDay(date=date(2025, 1, 22), open=time(9, 30), close=time(16)))
ANCHOR = Anchor(session_date=date(2025, 1, 21), deposit=D(10000), cumulative_return=D("0.05"), closes={"AAPL": D(100)})
HELD_SINCE = ny(2025, 1, 10, 10)
LOTS = [
    # 10 AAPL bought at 90 on the 10th; 4 sold at 103 at 09:32:30 NY today, 6 still open.
    IntradayLot(symbol="AAPL", side="long", qty=D(6), entry_price=D(90), entry_time=HELD_SINCE),
    IntradayLot(
        symbol="AAPL",
        side="long",
        qty=D(4),
        entry_price=D(90),
        entry_time=HELD_SINCE,
        exit_price=D(103),
        exit_time=ny(2025, 1, 22, 9, 32, 30),
    ),
    # 5 MSFT sold short at 200 at 09:31:10 NY today.
    IntradayLot(symbol="MSFT", side="short", qty=D(5), entry_price=D(200), entry_time=ny(2025, 1, 22, 9, 31, 10)),
    # Closed yesterday: already in E0, ignored.
    IntradayLot(
        symbol="AAPL",
        side="long",
        qty=D(1),
        entry_price=D(50),
        entry_time=HELD_SINCE,
        exit_price=D(60),
        exit_time=ny(2025, 1, 21, 11),
    ),
]
INTRADAY_FLOWS = [
    flow(1, "DIV", "2", datetime(2025, 1, 22, 5, tzinfo=UTC)),  # dated today: before pre-open
    flow(2, "CSD", "1000", ny(2025, 1, 22, 9, 33, 40)),  # mid-session deposit
    flow(3, "FILL", "1000", ny(2025, 1, 22, 9, 31, 10)),  # carried by the lots: ignored
    flow(4, "CSD", "777", ny(2025, 1, 21, 12)),  # yesterday: inside E0
]


def bars(symbol_closes: dict[int, str]) -> list[Bar]:
    return [Bar(ts=ny(2025, 1, 22, 9, minute), close=D(c)) for minute, c in symbol_closes.items()]


BARS = {
    "AAPL": bars({30: "101", 31: "102", 32: "103", 33: "104", 34: "99"}),
    "MSFT": bars({31: "201", 32: "199", 33: "198", 34: "202"}),
}


def intraday(anchor: Anchor | None = ANCHOR) -> dict[datetime, tuple[Decimal | None, ...]]:
    points = compute_intraday(
        session=SESSION,
        until=ny(2025, 1, 22, 9, 35, 30),
        anchor=anchor,
        lots=LOTS,
        flows=INTRADAY_FLOWS,
        bars=BARS,
    )
    return {p.ts: (p.deposit, p.cumulative_return, p.drawdown, p.realised_return) for p in points}


def test_intraday_curve_partial_close_and_mid_session_deposit() -> None:
    points = intraday()
    at = {m: points[ny(2025, 1, 22, 9, m)] for m in (30, 31, 32, 33, 34)}
    first = points[ny(2025, 1, 22, 4)]

    assert min(points) == ny(2025, 1, 22, 4)
    assert max(points) == ny(2025, 1, 22, 9, 34)
    assert len(points) == 5 * 60 + 35
    # 04:00: no bar yet (lots at P0), the dividend counts: 10002; return 1.05·1.0002 - 1.
    assert first == (D(10002), D("0.05021"), D(0), D("0.0002"))
    # 09:30: AAPL 101: 6·1 + 4·1.
    assert at[30] == (D(10012), D("0.05126"), D(0), D("0.0002"))
    # 09:31: AAPL 102 (+20), MSFT short from 200 at 201 (-5).
    assert at[31] == (D(10017), D("0.051785"), D(0), D("0.0002"))
    # 09:32: 6·3 open + 4·3 realised + MSFT 199 (+5) + 2.
    assert at[32] == (D(10037), D("0.053885"), D(0), D("0.0014"))
    # 09:33: AAPL 104 (+24), MSFT 198 (+10), deposit 1000 arrives but is no gain: from its
    # minute the day's capital is E0 + 1000 (flows count at the start of the day, as daily).
    deposit, cumulative, drawdown, realised = at[33]
    assert (deposit, drawdown) == (D(11048), D(0))
    assert close_to(cumulative, Fraction(105, 100) * (1 + Fraction(48, 11000)) - 1)
    assert close_to(realised, Fraction(14, 11000))
    # 09:34: AAPL 99 (-6), MSFT 202 (-10): the drawdown is on the return index, not on deposit.
    deposit, cumulative, drawdown, realised = at[34]
    assert deposit == D(10998)
    assert close_to(cumulative, Fraction(105, 100) * (1 - Fraction(2, 11000)) - 1)
    assert close_to(realised, Fraction(14, 11000))
    assert close_to(drawdown, (1 - Fraction(2, 11000)) / (1 + Fraction(48, 11000)) - 1)


def test_intraday_without_anchor_has_no_returns() -> None:
    """D9: no previous close means no base; returns are null, never a made-up 1.0 base."""
    points = intraday(anchor=None)

    assert all(p[1] is None and p[2] is None and p[3] is None for p in points.values())


def test_intraday_non_positive_anchor_has_no_returns_until_a_deposit_gives_it_capital() -> None:
    anchor = Anchor(session_date=date(2025, 1, 21), deposit=D(0), cumulative_return=D(0))

    points = intraday(anchor=anchor)

    before = [p for ts, p in points.items() if ts < ny(2025, 1, 22, 9, 33)]
    assert before
    assert all(p[1] is None for p in before)
    # From the $1,000 deposit's minute the day's capital is 0 + 1,000: the return is the
    # curve's move net of that deposit.
    for ts in (ny(2025, 1, 22, 9, 33), ny(2025, 1, 22, 9, 34)):
        deposit, cumulative, _, _ = points[ts]
        assert deposit is not None
        assert cumulative == (deposit - 1000) / D(1000)


# A new account: the opening is the broker's equity at the close before its first session.
DAY_ONE = to_session(CalendarDay(date=date(2025, 1, 22), open=time(9, 30), close=time(16)))
DAY_ONE_BARS = {"AAPL": [Bar(ts=ny(2025, 1, 22, 9, m), close=D(c)) for m, c in ((33, "110"), (59, "104"))]}


def _day_one(opening_cash: str, flows: list[CashFlow]) -> tuple[list, DailyRow]:
    """Intraday points and the daily row of a first session: buy 10 AAPL at 100 at 09:32."""
    opening = Opening(as_of=date(2025, 1, 21), cash=D(opening_cash))
    buy = execution(1, "AAPL", "10", "100", ny(2025, 1, 22, 9, 32))
    lot = IntradayLot(symbol="AAPL", side="long", qty=D(10), entry_price=D(100), entry_time=buy.ts)
    anchor = anchor_from_curve(start_curve(opening))
    points = compute_intraday(
        session=DAY_ONE, until=ny(2025, 1, 22, 10, 0, 30), anchor=anchor, lots=[lot], flows=flows, bars=DAY_ONE_BARS
    )
    day = DayInputs(session_date=date(2025, 1, 22), flows=tuple(flows), executions=(buy,), closes={"AAPL": D(104)})
    (row,) = build_daily_curve([day], opening).rows
    return points, row


def test_a_new_account_has_a_total_return_from_its_first_minute() -> None:
    """The broker's $100,000 before the first session anchors the curve: flat is 0 (not None),
    and +$100 on the position reads +0.1 % at once, before any daily row exists."""
    points, row = _day_one("100000", [])

    by_ts = {p.ts: p for p in points}
    assert all(p.cumulative_return == 0 for p in points if p.ts < ny(2025, 1, 22, 9, 33))
    assert by_ts[ny(2025, 1, 22, 9, 33)].deposit == D(100100)
    assert by_ts[ny(2025, 1, 22, 9, 33)].cumulative_return == D("0.001")
    # At the close the intraday curve and the daily row agree.
    assert points[-1].deposit == row.deposit == D(100040)
    assert points[-1].cumulative_return == row.cumulative_return == D("0.0004")


def test_a_deposit_on_day_one_is_no_return_intraday_or_daily() -> None:
    """An account funded today (the broker's equity before it: 0) with a $10,000 deposit at
    09:31: no return before the money arrives (no capital: None, never a made-up base), 0 at
    the deposit, then the position's move against the deposit; the daily row says the same."""
    deposit = flow(1, "CSD", "10000", ny(2025, 1, 22, 9, 31))
    points, row = _day_one("0", [deposit])

    by_ts = {p.ts: p for p in points}
    assert all(p.cumulative_return is None for p in points if p.ts < ny(2025, 1, 22, 9, 31))
    assert by_ts[ny(2025, 1, 22, 9, 31)].cumulative_return == 0
    assert by_ts[ny(2025, 1, 22, 9, 32)].cumulative_return == 0
    assert by_ts[ny(2025, 1, 22, 9, 33)].cumulative_return == D("0.01")  # +100 on 10,000
    assert (row.deposit, row.net_flows) == (D(10040), D(10000))
    assert points[-1].cumulative_return == row.daily_return == row.cumulative_return == D("0.004")


def test_a_deposit_on_day_one_on_top_of_the_brokers_opening_is_no_return() -> None:
    points, row = _day_one("100000", [flow(1, "CSD", "5000", ny(2025, 1, 22, 9, 31))])

    by_ts = {p.ts: p for p in points}
    assert by_ts[ny(2025, 1, 22, 9, 31)].cumulative_return == 0
    assert close_to(by_ts[ny(2025, 1, 22, 9, 33)].cumulative_return, Fraction(100, 105000))
    assert close_to(points[-1].cumulative_return, Fraction(40, 105000))
    assert close_to(row.cumulative_return, Fraction(40, 105000))


def test_intraday_drawdown_continues_the_daily_peak() -> None:
    anchor = Anchor(
        session_date=date(2025, 1, 21),
        deposit=D(10000),
        cumulative_return=D("0.05"),
        closes={"AAPL": D(100)},
        peak_index=D("1.10"),
    )

    first = intraday(anchor)[ny(2025, 1, 22, 4)]

    assert first[2] == D("1.05021") / D("1.10") - 1


def test_anchor_from_curve_uses_last_row_and_book() -> None:
    curve = build_daily_curve(ledger_days())

    anchor = anchor_from_curve(curve)

    assert anchor is not None
    assert (anchor.session_date, anchor.deposit) == (date(2025, 1, 22), D("8554.75"))
    assert anchor.closes == {"AAPL": D(104), "MSFT": D(200)}
    assert anchor_from_curve(start_curve()) is None


def test_minute_grid_stops_at_last_whole_minute_and_post_close() -> None:
    early = minute_grid(SESSION, ny(2025, 1, 22, 4, 0, 59))
    late = minute_grid(SESSION, ny(2025, 1, 23, 9))

    assert early == []
    assert minute_grid(SESSION, ny(2025, 1, 22, 4, 1)) == [ny(2025, 1, 22, 4)]
    assert late[-1] == ny(2025, 1, 22, 19, 59)
    assert len(late) == 16 * 60
    assert minute_grid(SESSION, ny(2025, 1, 22, 4, 10), timedelta(minutes=5)) == [
        ny(2025, 1, 22, 4),
        ny(2025, 1, 22, 4, 5),
    ]


def test_last_bars_are_the_bars_the_curve_ended_on() -> None:
    result = last_bars(BARS, ny(2025, 1, 22, 9, 34, 30))

    assert result == {"AAPL": BARS["AAPL"][3], "MSFT": BARS["MSFT"][2]}


def test_daily_row_field_names_are_the_table_columns() -> None:
    fields = set(DailyRow.__struct_fields__)

    assert {
        "date",
        "deposit",
        "cash_balance",
        "market_value",
        "daily_return",
        "cumulative_return",
        "drawdown",
        "net_flows",
    } <= fields
    assert {f"sharpe_{w}" for w in (10, 21, 63, 126, 252)} <= fields
    assert {f"smart_sharpe_{w}" for w in (10, 21, 63, 126, 252)} <= fields
    assert Category.TRADE.value == "trade"
    assert build_sessions([])[0] == []


# Issue 13: equity ≤ 0, fills across sessions, splits, the opening as the intraday anchor.


def _short_days(closes: list[str]) -> list[DayInputs]:
    """An opening of $1,000 cash; 10 XYZ sold short at 100 on the first day, then ``closes``."""
    first = DayInputs(
        session_date=date(2025, 1, 15),
        executions=(execution(1, "XYZ", "-10", "100", ny(2025, 1, 15, 10)),),
        closes={"XYZ": D(100)},
    )
    later = [
        DayInputs(session_date=date(2025, 1, 16) + timedelta(days=i), closes={"XYZ": D(c)})
        for i, c in enumerate(closes)
    ]
    return [first, *later]


def test_equity_at_or_below_zero_makes_that_and_later_returns_null() -> None:
    """Issue 13 bug: a loss past 100 % compounded into an inverted curve (−162.5 %, then further
    down on gains). Equity ≤ 0 has no return: that row and every later one are null."""
    opening = Opening(as_of=date(2025, 1, 14), cash=D(1000))

    rows = build_daily_curve(_short_days(["150", "250", "200", "50"]), opening).rows

    assert [r.deposit for r in rows] == [D(1000), D(500), D(-500), D(0), D(1500)]
    assert [r.daily_return for r in rows[:2]] == [D(0), D("-0.5")]
    assert [(r.daily_return, r.cumulative_return, r.drawdown) for r in rows[2:]] == [(None, None, None)] * 3
    assert all(r.sharpe_10 is None and r.smart_sharpe_10 is None for r in rows[2:])
    summary = daily_summary(rows[-1])
    assert (summary.cumulative_return, summary.deposit) == (None, D(1500))


def test_intraday_equity_at_or_below_zero_has_no_return_from_then_on() -> None:
    anchor = Anchor(
        session_date=date(2025, 1, 21), deposit=D(1000), cumulative_return=D("0.1"),
        closes={"XYZ": D(100)}, positions={"XYZ": D(-10)},
    )  # fmt: skip
    xyz = {"XYZ": bars({30: "150", 31: "220", 32: "90"})}

    points = compute_intraday(
        session=SESSION, until=ny(2025, 1, 22, 9, 33, 30), anchor=anchor, lots=[], flows=[], bars=xyz, executions=[]
    )
    at = {p.ts: p for p in points}

    assert at[ny(2025, 1, 22, 9, 30)].cumulative_return == D("1.1") * D("0.5") - 1
    assert [at[ny(2025, 1, 22, 9, m)].deposit for m in (31, 32)] == [D(-200), D(1100)]
    assert all(at[ny(2025, 1, 22, 9, m)].cumulative_return is None for m in (31, 32))
    assert all(at[ny(2025, 1, 22, 9, m)].drawdown is None for m in (31, 32))


def test_intraday_shares_filled_across_sessions_are_measured_from_their_fill_price() -> None:
    """Issue 13 bug: one entry filled 6 shares yesterday (P0 100) and 4 today at 103; the lot's
    entry time is yesterday, so all 10 shares were measured from P0. Today's 4 moved from 103."""
    anchor = Anchor(
        session_date=date(2025, 1, 21), deposit=D(10000), cumulative_return=D(0),
        closes={"AAPL": D(100)}, positions={"AAPL": D(6)},
    )  # fmt: skip
    lot = IntradayLot(symbol="AAPL", side="long", qty=D(10), entry_price=D("101.2"), entry_time=ny(2025, 1, 21, 15))
    today = [execution(7, "AAPL", "4", "103", ny(2025, 1, 22, 9, 32, 30))]

    points = compute_intraday(
        session=SESSION,
        until=ny(2025, 1, 22, 9, 35, 30),
        anchor=anchor,
        lots=[lot],
        flows=[],
        bars={"AAPL": bars({30: "101", 33: "104"})},
        executions=today,
    )
    at = {p.ts: p.deposit for p in points}

    assert at[ny(2025, 1, 22, 9, 31)] == D(10006)  # 6·(101 − 100); the 4 are not held yet
    assert at[ny(2025, 1, 22, 9, 33)] == D(10000) + 6 * (D(104) - 100) + 4 * (D(104) - 103)


def test_a_split_creates_no_return_daily_or_intraday() -> None:
    """docs/spec.md §8: 2-for-1 on the 16th: 10 shares at 100 become 20 at 50; a close of 50.5 is +1 %."""
    opening = Opening(as_of=date(2025, 1, 15), cash=D(0), positions={"ABC": D(10)}, closes={"ABC": D(100)})
    days = bucket_by_session(
        [date(2025, 1, 16)], [], [], {date(2025, 1, 16): {"ABC": D("50.5")}},
        after=date(2025, 1, 15), splits_by_date={date(2025, 1, 16): {"ABC": D(2)}},
    )  # fmt: skip

    curve = build_daily_curve(days, opening)

    (row,) = curve.rows
    assert (row.deposit, row.daily_return) == (D(1010), D("0.01"))
    assert curve.book.positions == {"ABC": D(20)}
    anchor = Anchor(
        session_date=date(2025, 1, 21), deposit=D(1000), cumulative_return=D(0),
        closes={"ABC": D(100)}, positions={"ABC": D(10)},
    )  # fmt: skip
    points = compute_intraday(
        session=SESSION, until=ny(2025, 1, 22, 9, 31, 30), anchor=anchor, lots=[], flows=[],
        bars={"ABC": bars({30: "50"})}, executions=[], splits={"ABC": D(2)},
    )  # fmt: skip
    assert points[-1].deposit == D(1000)
    assert points[-1].cumulative_return == 0


def test_anchor_from_an_opening_without_rows_is_the_brokers_previous_close() -> None:
    opening = Opening(as_of=date(2025, 1, 21), cash=D(5000), positions={"AAPL": D(10)}, closes={"AAPL": D(100)})

    anchor = anchor_from_curve(start_curve(opening))

    assert anchor is not None
    assert (anchor.session_date, anchor.deposit, anchor.cumulative_return) == (date(2025, 1, 21), D(6000), D(0))
    assert anchor.positions == {"AAPL": D(10)}


def test_prove_rows_compares_with_the_broker_within_a_cent_plus_unexplained_flows() -> None:
    days = [
        DayInputs(session_date=date(2025, 1, 15), flows=(flow(1, "CSD", "1000", ny(2025, 1, 15, 10)),)),
        DayInputs(session_date=date(2025, 1, 16)),
        DayInputs(
            session_date=date(2025, 1, 17),
            flows=(CashFlow(id="u", ts=ny(2025, 1, 17, 10), amount=D(-5), type="NEWCODE", category="unclassified"),),  # type: ignore[arg-type]
        ),
        DayInputs(session_date=date(2025, 1, 21)),
    ]
    rows = build_daily_curve(days).rows
    broker = {date(2025, 1, 15): D("1000.01"), date(2025, 1, 16): D("999.98"), date(2025, 1, 17): D("999.00")}

    proven, proofs = prove_rows(rows, broker, unexplained_flows(days))

    assert [(r.broker_equity, r.equity_diff) for r in proven] == [
        (D("1000.01"), D("-0.01")), (D("999.98"), D("0.02")), (D("999.00"), D(-4)), (None, None),
    ]  # fmt: skip
    assert [p.mismatched for p in proofs] == [False, True, False, False]
    assert proofs[2].tolerance == D("5.01")


def test_anchor_before_the_last_row_equals_the_anchor_of_the_curve_without_it() -> None:
    """A curve rebuilt after today's close still anchors today's intraday curve on yesterday's
    close, with yesterday's holdings (not on unknown closes measured from the first bar)."""
    days = ledger_days()
    whole = build_daily_curve(days)
    without_last = build_daily_curve(days[:-1])

    assert anchor_from_curve(whole, before_last_row=True) == anchor_from_curve(without_last)
    assert anchor_from_curve(start_curve(), before_last_row=True) is None


def test_splits_by_session_date_keys_split_ratios_by_their_new_york_date() -> None:
    """docs/spec.md §8: the equity job scales holdings by the splits the ledger booked. Alpaca
    stamps a split's legs before the open of the ex-date (04:00 New York, 08:00 UTC in summer)."""
    from coldharbour.domain.corporate import CorporateAction, effective_instant
    from coldharbour.domain.equity import splits_by_session_date

    ex_date = int(datetime(2024, 6, 10, 8, 0, tzinfo=UTC).timestamp()) * 1_000_000_000
    late_utc = int(datetime(2024, 6, 12, 2, 0, tzinfo=UTC).timestamp()) * 1_000_000_000  # 22:00 NY on the 11th
    actions = [
        CorporateAction(id="a", type="split", symbol="NVDA", ts=ex_date, ratio=Decimal(10)),
        CorporateAction(id="b", type="split", symbol="XYZ", ts=late_utc, ratio=Decimal("0.1")),
        CorporateAction(id="c", type="split", symbol="XYZ", ts=late_utc, ratio=Decimal(2)),
        CorporateAction(id="d", type="symbol_change", symbol="FB", new_symbol="META", ts=ex_date),
        # re-timed by its announcement to the start of its ex-date (docs/corporate-actions.md)
        CorporateAction(id="e", type="split", symbol="AMD", ts=effective_instant(date(2024, 6, 10)), ratio=Decimal(2)),
    ]

    found = splits_by_session_date(actions)

    assert found == {
        date(2024, 6, 10): {"NVDA": Decimal(10), "AMD": Decimal(2)},
        date(2024, 6, 11): {"XYZ": Decimal("0.2")},
    }

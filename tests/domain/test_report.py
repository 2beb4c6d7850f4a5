"""The tear-sheet report against quantstats and empyrical-reloaded, and by hand.

The account series are daily curves built by our own ledger replay (``build_daily_curve``)
over a year-like history with deposits and withdrawals (flows are not returns), days holding
nothing (zero returns), a forced seven-day loss streak and, in a second account, a leveraged
position that ends below zero (the wipe-out). Each value the libraries also define is checked
to 1e-9 relative on the report's own ``returns`` (the series every value comes from); where the
two libraries differ the docstring of ``coldharbour.domain.report`` (and docs/report.md) names
the one we follow.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
import quantstats as qs
from dateutil.relativedelta import relativedelta

from coldharbour.domain.cashflows import CashFlow, Execution, classify
from coldharbour.domain.equity import DayInputs, build_daily_curve, daily_summary
from coldharbour.domain.metrics import MIN_ANNUALISED_SESSIONS, ClosedTrade, DailySummary, return_series
from coldharbour.domain.report import Report, compute_report, daily_curve, drawdown_periods, money_weighted_return

RELATIVE = 1e-9
D = Decimal
NO_SHARPE: dict[int, float | None] = {10: None, 21: None, 63: None, 126: None, 252: None}


def _sessions(count: int, first: date = date(2024, 1, 2)) -> list[date]:
    return [d.date() for d in pd.bdate_range(first, periods=count)]


def account_days(
    count: int = 90, *, wipe_out_on: int | None = None, seed: int = 29, sessions: list[date] | None = None
) -> list[DayInputs]:
    """A ledger's days: deposits, a withdrawal, flat days, a loss streak, maybe a wipe-out."""
    rng = random.Random(seed)
    price = D(100)
    held = D(0)
    days = []
    for i, session in enumerate(sessions or _sessions(count)):
        ts = datetime.combine(session, datetime.min.time(), UTC) + timedelta(hours=15)
        flows: list[CashFlow] = []
        executions: list[Execution] = []
        if i == 0:
            flows.append(CashFlow(id="d0", ts=ts, amount=D(20000), type="CSD", category=classify("CSD")))
        if i == 37:
            flows.append(CashFlow(id="d37", ts=ts, amount=D(15000), type="CSD", category=classify("CSD")))
        if i == 61:
            flows.append(CashFlow(id="w61", ts=ts, amount=D(-8000), type="CSW", category=classify("CSW")))
        target = D(0) if 10 <= i < 16 else D(150)  # six days holding nothing: zero returns
        if wipe_out_on is not None and i >= wipe_out_on - 3:
            target = D(2000)  # on margin: about 10x the equity
        if target != held:
            executions.append(Execution(id=f"x{i}", ts=ts, symbol="XYZ", qty=target - held, price=price))
            held = target
        if 40 <= i < 47:
            move = D("-0.012")  # a seven-day loss streak
        elif wipe_out_on is not None and i == wipe_out_on:
            move = D("-0.25")
        else:
            move = D(f"{rng.gauss(0.003, 0.011):.5f}")
        price = (price * (1 + move)).quantize(D("0.01"))
        days.append(DayInputs(session_date=session, flows=tuple(flows), executions=tuple(executions),
                              closes={"XYZ": price}))  # fmt: skip
    return days


def account_rows(count: int = 90, *, wipe_out_on: int | None = None, seed: int = 29) -> list[DailySummary]:
    """The daily curve of ``account_days`` as the report reads it."""
    days = account_days(count, wipe_out_on=wipe_out_on, seed=seed)
    return [daily_summary(row) for row in build_daily_curve(days).rows]


def benchmark_closes(count: int, seed: int = 5) -> dict[date, Decimal]:
    """Daily closes from the session before the first account day (a random walk, 2 decimals)."""
    rng = random.Random(seed)
    close = D(470)
    closes = {date(2023, 12, 29): close}
    for session in _sessions(count):
        close = (close * (1 + D(f"{rng.gauss(0.0004, 0.009):.5f}"))).quantize(D("0.01"))
        closes[session] = close
    return closes


def as_series(report: Report) -> pd.Series:
    return pd.Series([float(r) for r in report.returns.values()], index=pd.DatetimeIndex(list(report.returns)))


@pytest.fixture(scope="module")
def healthy() -> tuple[Report, pd.Series]:
    report = compute_report(account_rows(), [], benchmark_symbol="SPY", benchmark_closes=benchmark_closes(90))
    return report, as_series(report)


def test_the_series_is_the_curves_daily_return_and_has_the_edges(healthy: tuple[Report, pd.Series]) -> None:
    report, returns = healthy
    rows = account_rows()

    assert list(report.returns.values()) == [row.daily_return for row in rows]
    assert report.sessions == len(rows) == 90
    assert (returns.iloc[10:16] == 0).sum() >= 5  # flat days (the first of them sells the position)
    assert (returns.iloc[41:47] < 0).all()  # the loss streak
    flows = {row.date: row.net_flows for row in rows if row.net_flows}
    assert sorted(flows.values()) == [D(-8000), D(15000), D(20000)]
    assert all(abs(returns[pd.Timestamp(day)]) < 0.05 for day in flows)  # a deposit is never a gain


def test_ratios_match_both_libraries(healthy: tuple[Report, pd.Series]) -> None:
    report, r = healthy
    pairs = {
        "sharpe": (report.sharpe, qs.stats.sharpe(r), ep.sharpe_ratio(r)),
        "sortino": (report.sortino, qs.stats.sortino(r), ep.sortino_ratio(r)),
        "cagr": (report.cagr_pct, 100 * qs.stats.cagr(r), 100 * ep.cagr(r)),
        "calmar": (report.calmar, qs.stats.calmar(r), ep.calmar_ratio(r)),
        "volatility": (report.volatility_pct, 100 * qs.stats.volatility(r), 100 * ep.annual_volatility(r)),
        "max drawdown": (report.max_drawdown_pct, 100 * qs.stats.max_drawdown(r), 100 * ep.max_drawdown(r)),
        "var": (report.var_95_pct, 100 * ep.value_at_risk(r), 100 * np.percentile(r, 5)),
        "cvar": (report.cvar_95_pct, 100 * ep.conditional_value_at_risk(r), 100 * ep.conditional_value_at_risk(r)),
        "tail ratio": (report.tail_ratio, qs.stats.tail_ratio(r), ep.tail_ratio(r)),
        "skew": (report.skew, qs.stats.skew(r), r.skew()),
        "kurtosis": (report.kurtosis, qs.stats.kurtosis(r), r.kurtosis()),
        "twr": (report.twr_pct, 100 * qs.stats.comp(r), 100 * ep.cum_returns_final(r)),
    }
    for name, (ours, quantstats_value, empyrical_value) in pairs.items():
        assert ours == pytest.approx(float(quantstats_value), rel=RELATIVE), f"{name} vs quantstats"
        assert ours == pytest.approx(float(empyrical_value), rel=RELATIVE), f"{name} vs empyrical"
    assert report.smart_sharpe == pytest.approx(float(qs.stats.smart_sharpe(r)), rel=RELATIVE)
    assert report.best_day_pct == pytest.approx(100 * float(qs.stats.best(r)), rel=RELATIVE)
    assert report.worst_day_pct == pytest.approx(100 * float(qs.stats.worst(r)), rel=RELATIVE)
    assert report.win_days_pct == pytest.approx(100 * float(qs.stats.win_rate(r)), rel=RELATIVE)
    assert report.payoff_ratio_returns == pytest.approx(float(qs.stats.payoff_ratio(r)), rel=RELATIVE)


def test_calendar_tables_match_quantstats(healthy: tuple[Report, pd.Series]) -> None:
    report, r = healthy
    table = qs.stats.monthly_returns(r, eoy=True, compounded=True)
    months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    expected = {
        f"{year}-{i + 1:02d}": 100 * float(table.loc[year, month])
        for year in table.index
        for i, month in enumerate(months)
        if f"{year}-{i + 1:02d}" in {d.strftime("%Y-%m") for d in r.index}
    }
    monthly = r.groupby(r.index.strftime("%Y-%m")).apply(lambda x: (1 + x).prod() - 1)

    assert report.monthly_returns == pytest.approx(expected, rel=RELATIVE)
    yearly = {y: 100 * float(table.loc[y, "EOY"]) for y in table.index}
    assert report.yearly_returns == pytest.approx(yearly, rel=RELATIVE)
    assert report.best_month_pct == pytest.approx(100 * monthly.max(), rel=RELATIVE)
    assert report.worst_month_pct == pytest.approx(100 * monthly.min(), rel=RELATIVE)
    assert report.win_months_pct == pytest.approx(100 * float(qs.stats.win_rate(r, aggregate="ME")), rel=RELATIVE)


def test_trailing_returns_follow_quantstats_windows(healthy: tuple[Report, pd.Series]) -> None:
    report, r = healthy
    today = r.index[-1]  # quantstats reports.metrics: comp(df[df.index >= today - relativedelta(months=N)])

    three = 100 * float(qs.stats.comp(r[r.index >= today - relativedelta(months=3)]))

    assert report.trailing["3M"] == pytest.approx(three, rel=RELATIVE)
    assert report.trailing["all"] == pytest.approx(100 * float(qs.stats.comp(r)), rel=RELATIVE)
    assert report.trailing["6M"] is None  # 90 sessions do not cover six months
    assert report.trailing["1Y"] is None
    assert set(report.withheld) >= {"trailing.6M", "trailing.1Y"}
    assert "history starts 2024-01-02" in report.withheld["trailing.6M"]


def test_drawdowns_match_quantstats_details(healthy: tuple[Report, pd.Series]) -> None:
    report, r = healthy
    details = qs.stats.drawdown_details(qs.stats.to_drawdown_series(r))
    top = details.sort_values(["max drawdown", "start"]).head(5)
    dates = list(r.index.strftime("%Y-%m-%d"))

    assert len(report.drawdowns) == 5
    for ours, (_, theirs) in zip(report.drawdowns, top.iterrows(), strict=True):
        assert ours.start.isoformat() == theirs["start"]
        assert ours.valley.isoformat() == theirs["valley"]
        assert ours.end.isoformat() == theirs["end"]
        assert ours.days == theirs["days"]
        assert ours.depth_pct == pytest.approx(theirs["max drawdown"], rel=RELATIVE)
        before = dates.index(theirs["start"]) - 1
        assert ours.peak == (None if before < 0 else date.fromisoformat(dates[before]))
        after = dates.index(theirs["end"]) + 1
        assert ours.recovery == (None if after >= len(dates) else date.fromisoformat(dates[after]))


def test_drawdown_dates_by_hand() -> None:
    days = _sessions(9)  # 2024-01-02 .. 2024-01-12 (Tue..Fri, Mon..Fri)
    returns = ["-0.1", "0.05", "0.06", "0.01", "-0.02", "-0.03", "0.02", "0.04", "-0.01"]
    rows = [
        DailySummary(date=d, cumulative_return=None, drawdown=None, sharpe=NO_SHARPE, daily_return=D(x),
                     deposit=D(1000), net_flows=D(0))
        for d, x in zip(days, returns, strict=True)
    ]  # fmt: skip
    # Index: 0.9, 0.945, 1.0017 (new high on 01-04), 1.0117 (high 01-05), 0.9915, 0.9617 (valley 01-09),
    # 0.9810, 1.0202 (recovered 01-11), 1.0100 (under water again on the last day 01-12).
    periods = drawdown_periods(return_series(rows))

    assert [(p.peak, p.start, p.valley, p.end, p.recovery, p.days) for p in periods] == [
        (None, date(2024, 1, 2), date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4), 2),
        (date(2024, 1, 5), date(2024, 1, 8), date(2024, 1, 9), date(2024, 1, 10), date(2024, 1, 11), 3),
        (date(2024, 1, 11), date(2024, 1, 12), date(2024, 1, 12), date(2024, 1, 12), None, 1),
    ]
    assert periods[1].depth_pct == pytest.approx(100 * (0.98 * 0.97 - 1), rel=RELATIVE)


def test_benchmark_matches_both_libraries(healthy: tuple[Report, pd.Series]) -> None:
    report, r = healthy
    closes = benchmark_closes(90)
    prices = pd.Series([float(c) for c in closes.values()], index=pd.DatetimeIndex(list(closes)))
    b = prices.pct_change().dropna()
    assert list(b.index) == list(r.index)
    bench = report.benchmark
    assert bench is not None

    alpha, beta = ep.alpha_beta(r, b)
    assert bench.symbol == "SPY"
    assert bench.return_pct == pytest.approx(100 * float(qs.stats.comp(b)), rel=RELATIVE)
    assert bench.beta == pytest.approx(float(beta), rel=RELATIVE)
    assert bench.beta == pytest.approx(float(qs.stats.greeks(r, b)["beta"]), rel=RELATIVE)
    assert bench.alpha == pytest.approx(float(alpha), rel=RELATIVE)
    assert bench.correlation == pytest.approx(float(r.corr(b)), rel=RELATIVE)
    assert bench.r2 == pytest.approx(float(qs.stats.r_squared(r, b)), rel=RELATIVE)
    assert bench.information_ratio == pytest.approx(float(qs.stats.information_ratio(r, b)), rel=RELATIVE)


def test_a_missing_benchmark_close_withholds_the_benchmark() -> None:
    closes = benchmark_closes(90)
    del closes[date(2024, 2, 14)]

    report = compute_report(account_rows(), [], benchmark_symbol="SPY", benchmark_closes=closes)
    unread = compute_report(account_rows(), [], benchmark_symbol="SPY", benchmark_closes=None)

    assert report.benchmark is None
    assert report.withheld["benchmark"] == "SPY: no close for 2024-02-14"
    assert unread.benchmark is None
    assert unread.withheld["benchmark"] == "no SPY bars were read"


def test_rolling_sharpe_and_volatility_match_quantstats() -> None:
    report = compute_report(account_rows(200), [], benchmark_symbol="SPY", benchmark_closes=None)
    r = as_series(report)
    window = report.rolling.window

    sharpe = qs.stats.rolling_sharpe(r, rolling_period=window).dropna()
    volatility = qs.stats.rolling_volatility(r, rolling_period=window).dropna()

    assert list(report.rolling.sharpe) == list(sharpe.index.strftime("%Y-%m-%d"))
    assert list(report.rolling.sharpe.values()) == pytest.approx(list(sharpe), rel=1e-7)
    assert list(report.rolling.volatility_pct.values()) == pytest.approx(list(100 * volatility), rel=1e-7)


# Honest edges.


def test_a_three_session_account_withholds_every_annualised_figure() -> None:
    rows = account_rows(3)

    report = compute_report(rows, [], benchmark_symbol="SPY", benchmark_closes=benchmark_closes(3))

    for key in ("sharpe", "smart_sharpe", "sortino", "cagr_pct", "calmar", "volatility_pct"):
        assert getattr(report, key) is None
        assert report.withheld[key] == f"annualised: needs {MIN_ANNUALISED_SESSIONS} sessions of returns, has 3"
    assert report.twr_pct is not None  # the period's own return is still shown


def test_a_wipe_out_is_minus_100_percent_and_ends_the_series() -> None:
    rows = account_rows(60, wipe_out_on=50)
    ruined = [row for row in rows if row.daily_return is None]
    assert ruined
    assert ruined[0].date == _sessions(60)[50]
    assert ruined[0].deposit is not None
    assert ruined[0].deposit < 0

    report = compute_report(rows, [], benchmark_symbol="SPY", benchmark_closes=benchmark_closes(60))
    r = as_series(report)

    assert report.sessions == 51
    assert list(report.returns.values())[-1] == D(-1)
    assert report.wipe_out is not None
    assert (report.wipe_out.date, report.wipe_out.days_after) == (_sessions(60)[50], 9)
    assert report.worst_day_pct == report.twr_pct == report.max_drawdown_pct == -100.0
    assert report.cagr_pct == -100.0
    assert report.mwr_pct == -100.0
    assert report.trailing["all"] == -100.0
    assert "no return on the 9 later days" in report.withheld["after_wipe_out"]
    assert report.sharpe == pytest.approx(float(qs.stats.sharpe(r)), rel=RELATIVE)
    assert report.sharpe == pytest.approx(float(ep.sharpe_ratio(r)), rel=RELATIVE)
    assert report.sortino == pytest.approx(float(ep.sortino_ratio(r)), rel=RELATIVE)
    assert report.cagr_pct == pytest.approx(100 * float(qs.stats.cagr(r)), rel=RELATIVE)
    assert report.calmar == pytest.approx(float(ep.calmar_ratio(r)), rel=RELATIVE)


def test_the_daily_chart_is_the_reports_cumulative_return_beside_the_dollars() -> None:
    """The dashboard's daily chart (``daily_curve``) shows exactly the report's ``cumulative_pct``
    on each date (deposits and withdrawals included in the account, none of them a gain), the
    stored equity beside it, and no return on the days after a wipe-out."""
    rows = account_rows(60, wipe_out_on=50)
    report = compute_report(rows, [], benchmark_symbol="SPY", benchmark_closes=None)

    points = daily_curve(reversed(rows))  # any order

    assert [p.date for p in points] == sorted(row.date for row in rows)
    shown = {p.date.isoformat(): p.cumulative_pct for p in points if p.cumulative_pct is not None}
    assert shown == report.cumulative_pct
    assert {p.date.isoformat(): p.equity for p in points} == report.equity
    assert [p.cumulative_pct for p in points[51:]] == [None] * 9
    assert any(p.net_flows for p in points)  # the series has flows, and they are not returns


# Money-weighted return.


def test_money_weighted_return_by_hand() -> None:
    # E0 = 100; day 1 +10 % (110); 100 deposited before day 2, day 2 flat (210).
    # −100·g² − 100·g + 210 = 0 → g = (−100 + √94000)/200; period MWR = g² − 1. TWR = 10 %.
    rows = [
        DailySummary(date=date(2024, 1, 2), cumulative_return=None, drawdown=None, sharpe=NO_SHARPE,
                     daily_return=D("0.1"), deposit=D(110), net_flows=D(0)),
        DailySummary(date=date(2024, 1, 3), cumulative_return=None, drawdown=None, sharpe=NO_SHARPE,
                     daily_return=D(0), deposit=D(210), net_flows=D(100)),
    ]  # fmt: skip
    g = (-100 + math.sqrt(94000)) / 200

    mwr, reason = money_weighted_return(rows, return_series(rows))

    assert reason == ""
    assert mwr == pytest.approx(100 * (g * g - 1), rel=1e-9)


def test_money_weighted_equals_time_weighted_without_flows_and_solves_the_flows() -> None:
    rows = account_rows()
    quiet = [DailySummary(**{**{f: getattr(r, f) for f in r.__struct_fields__}, "net_flows": D(0)}) for r in rows]
    series = return_series(rows)
    report = compute_report(rows, [], benchmark_symbol="SPY", benchmark_closes=None)

    # Without flows: E0 in, final out; deposits as returns would make them differ, so rebuild
    # the equity from the returns alone.
    equity = D(20000)
    rebuilt = []
    for row in quiet:
        assert row.daily_return is not None
        equity *= 1 + row.daily_return
        rebuilt.append(DailySummary(date=row.date, cumulative_return=None, drawdown=None, sharpe=NO_SHARPE,
                                    daily_return=row.daily_return, deposit=equity, net_flows=D(0)))  # fmt: skip
    no_flows, _ = money_weighted_return(rebuilt, return_series(rebuilt))
    assert no_flows == pytest.approx(report.twr_pct, rel=1e-9)

    # With flows: the rate makes the flows' future value zero.
    assert report.mwr_pct is not None
    g = (1 + report.mwr_pct / 100) ** (1 / len(series.returns))
    first = rows[0]
    assert first.deposit is not None
    assert first.daily_return is not None
    cash = [-float(first.deposit / (1 + first.daily_return))] + [-float(r.net_flows or 0) for r in rows[1:]]
    cash.append(float(rows[-1].deposit or 0))
    assert np.polyval(cash, g) == pytest.approx(0.0, abs=1e-6 * 20000)


# Trades.


def _slice(lot: str, exit_order: str, symbol: str, pnl: str, entry_day: int, exit_day: int) -> ClosedTrade:
    start = datetime(2024, 1, 2, 15, tzinfo=UTC)
    return ClosedTrade(
        entry_lot_id=lot, exit_order_id=exit_order, side="long", qty=D(1), entry_time=start + timedelta(days=entry_day),
        entry_price=D(100), exit_time=start + timedelta(days=exit_day), exit_price=D(100) + D(pnl), exit_type="MANUAL",
        pnl_cash=D(pnl), pnl_cash_fifo=D(pnl), symbol=symbol,
    )  # fmt: skip


def test_trade_statistics_by_hand() -> None:
    slices = [
        _slice("L1", "x1", "AAPL", "50", 0, 2),
        _slice("L1", "x2", "AAPL", "-10", 0, 3),  # L1 = +40, exits last on day 3
        _slice("L2", "x3", "MSFT", "25.5", 1, 4),
        _slice("L3", "x4", "MSFT", "-30", 2, 5),
        _slice("L4", "x5", "AAPL", "-12.25", 5, 6),
        _slice("L5", "x6", "AAPL", "0", 6, 7),
        _slice("L6", "x7", "TSLA", "-1", 7, 8),
        _slice("L6", "x7", "TSLA", "-1", 7, 8),  # the same slice twice counts once
    ]

    trades = compute_report([], slices, benchmark_symbol="SPY", benchmark_closes=None).trades

    # In exit order: +40, +25.5, −30, −12.25, 0, −1 → wins 2 in a row, losses 2 in a row.
    assert (trades.count, trades.wins, trades.losses, trades.breakeven) == (6, 2, 3, 1)
    assert (trades.largest_win, trades.largest_loss) == (D(40), D(-30))
    assert (trades.gross_profit, trades.gross_loss) == (D("65.5"), D("-43.25"))
    assert (trades.max_consecutive_wins, trades.max_consecutive_losses) == (2, 2)
    assert trades.median_holding_days == D(2)  # holdings 3, 3, 3, 1, 1, 1 days: (1 + 3) / 2
    assert trades.by_symbol["AAPL"].trades == 3
    assert trades.by_symbol["AAPL"].pnl == D("27.75")
    assert trades.by_symbol["MSFT"].pnl == D("-4.5")
    assert list(trades.by_symbol) == ["AAPL", "MSFT", "TSLA"]

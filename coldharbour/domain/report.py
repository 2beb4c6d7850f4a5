"""The tear-sheet report: the values a trader reads beside the KPIs (docs/report.md).

Every return figure comes from one series: ``metrics.return_series`` of the daily curve (the
time-weighted daily return, net of cash flows, ending at a wipe-out). Trade figures come from
the closed slices grouped into lots (``metrics.collapse_lot``); the benchmark from the daily
closes of one symbol. Each value follows a named reference library (quantstats or
empyrical-reloaded; docs/report.md gives the formula and the library of each):

- ratios: Sharpe, smart Sharpe, Sortino, volatility, CAGR, Calmar (``metrics``);
- tails: VaR and CVaR at 95 % (historical, empyrical), skew and excess kurtosis (bias-corrected,
  as pandas), tail ratio (95th / 5th percentile): ``domain.distribution``;
- calendar: compounded monthly and yearly returns, best/worst/winning months, trailing 3M, 6M,
  1Y returns (from the last date back, as quantstats), all-time;
- drawdowns: the five deepest periods on the index ``Π(1+r)`` from a baseline of 1;
- benchmark: its compounded return, beta, alpha (empyrical), correlation, R², information ratio;
- money: the money-weighted return (one daily rate equating the opening equity and the
  external flows with the final equity) beside the time-weighted one.

A value that cannot honestly be given is None and ``withheld`` says why: annualised figures
below ``MIN_ANNUALISED_SESSIONS`` returns, a trailing window longer than the history, a
benchmark with a missing close. Pure: no I/O, no clock. Returns and money stay Decimal; ratio
statistics are floats, finite or None.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Final

import msgspec

from coldharbour.domain.distribution import (
    conditional_value_at_risk,
    covariance,
    excess_kurtosis,
    finite,
    sample_std,
    skewness,
    tail_ratio,
    value_at_risk,
)
from coldharbour.domain.metrics import (
    MIN_ANNUALISED_SESSIONS,
    PERIODS_PER_YEAR,
    SECONDS_PER_DAY,
    ClosedTrade,
    DailySummary,
    Lot,
    ReturnSeries,
    cagr,
    calmar,
    collapse_lot,
    return_series,
    sharpe,
    smart_sharpe,
    sortino,
    volatility,
)
from coldharbour.domain.money import ONE, ZERO

TOP_DRAWDOWNS: Final = 5
ROLLING_WINDOW: Final = 126  # sessions (six months), quantstats' rolling period
TRAILING_MONTHS: Final = {"3M": 3, "6M": 6, "1Y": 12}
HUNDRED: Final = Decimal(100)
ANNUALISED: Final = ("sharpe", "smart_sharpe", "sortino", "cagr_pct", "calmar", "volatility_pct")


class Drawdown(msgspec.Struct, frozen=True, kw_only=True):
    """One drawdown period: ``peak`` None means the opening balance, ``recovery`` None not yet."""

    peak: date | None
    start: date
    valley: date
    end: date
    recovery: date | None
    depth_pct: float
    days: int


class Benchmark(msgspec.Struct, frozen=True, kw_only=True):
    """The account beside the benchmark over the same sessions."""

    symbol: str
    return_pct: float
    alpha: float | None
    beta: float | None
    correlation: float | None
    information_ratio: float | None
    r2: float | None


class SymbolTrades(msgspec.Struct, frozen=True, kw_only=True):
    """Closed trades of one symbol."""

    trades: int
    wins: int
    losses: int
    pnl: Decimal


class TradeStats(msgspec.Struct, frozen=True, kw_only=True):
    """Closed trades (lots): dollars from the lot-matched P&L, streaks in exit order."""

    count: int
    wins: int
    losses: int
    breakeven: int
    largest_win: Decimal | None
    largest_loss: Decimal | None
    gross_profit: Decimal
    gross_loss: Decimal
    max_consecutive_wins: int
    max_consecutive_losses: int
    median_holding_days: Decimal | None
    by_symbol: dict[str, SymbolTrades]


class WipeOut(msgspec.Struct, frozen=True, kw_only=True):
    """The day equity reached ≤ 0 (its return is −100 %) and how many rows followed it."""

    date: date
    days_after: int


class Rolling(msgspec.Struct, frozen=True, kw_only=True):
    """Sharpe and annualised volatility over the last ``window`` returns, by date."""

    window: int
    sharpe: dict[str, float | None]
    volatility_pct: dict[str, float | None]


class CurvePoint(msgspec.Struct, frozen=True, kw_only=True):
    """One session of the daily equity chart: the cumulative time-weighted return and the dollars.

    ``cumulative_pct`` is the report's ``cumulative_pct`` of that date (``Π(1+r) − 1`` in %, net
    of cash flows, so a deposit moves ``equity`` but not it); None on the days after a wipe-out,
    which have no return.
    """

    date: date
    cumulative_pct: float | None
    equity: Decimal | None
    net_flows: Decimal | None


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """The whole report; ``withheld`` names each value left out and why."""

    first_date: date | None
    last_date: date | None
    sessions: int
    returns: dict[str, Decimal]
    equity: dict[str, Decimal]
    cumulative_pct: dict[str, float]
    underwater_pct: dict[str, float]
    twr_pct: float | None
    mwr_pct: float | None
    sharpe: float | None
    smart_sharpe: float | None
    sortino: float | None
    cagr_pct: float | None
    calmar: float | None
    volatility_pct: float | None
    max_drawdown_pct: float | None
    best_day_pct: float | None
    worst_day_pct: float | None
    win_days_pct: float | None
    payoff_ratio_returns: float | None
    monthly_returns: dict[str, float]
    yearly_returns: dict[str, float]
    best_month_pct: float | None
    worst_month_pct: float | None
    win_months_pct: float | None
    trailing: dict[str, float | None]
    drawdowns: list[Drawdown]
    var_95_pct: float | None
    cvar_95_pct: float | None
    skew: float | None
    kurtosis: float | None
    tail_ratio: float | None
    rolling: Rolling
    benchmark: Benchmark | None
    trades: TradeStats
    wipe_out: WipeOut | None
    withheld: dict[str, str]


def _pct(value: float | None) -> float | None:
    return None if value is None else finite(100.0 * value)


# Calendar figures.


def compound(returns: Iterable[Decimal]) -> Decimal:
    """Return ``Π(1 + r) − 1``."""
    growth = ONE
    for r in returns:
        growth *= ONE + r
    return growth - ONE


def cumulative_pct(series: ReturnSeries) -> list[float]:
    """Return ``100 · (Π(1 + r) − 1)`` after each return of ``series``, oldest first."""
    result: list[float] = []
    growth = ONE
    for r in series.returns:
        growth *= ONE + r
        result.append(float(HUNDRED * (growth - ONE)))
    return result


def by_date(rows: Iterable[DailySummary]) -> list[DailySummary]:
    """Return ``rows`` oldest first, one per date (the last given wins)."""
    return sorted({row.date: row for row in rows}.values(), key=lambda row: row.date)


def daily_curve(rows: Iterable[DailySummary]) -> list[CurvePoint]:
    """Return the daily chart of ``rows`` (any order): per date the same cumulative return as the
    report (``return_series``, ``cumulative_pct``) and the stored equity with the day's flows."""
    ordered = by_date(rows)
    pcts = cumulative_pct(return_series(ordered))
    return [
        CurvePoint(date=row.date, cumulative_pct=pcts[i] if i < len(pcts) else None, equity=row.deposit,
                   net_flows=row.net_flows)
        for i, row in enumerate(ordered)
    ]  # fmt: skip


def _grouped(series: ReturnSeries, key_length: int) -> dict[str, float]:
    groups: dict[str, list[Decimal]] = {}
    for day, r in zip(series.dates, series.returns, strict=True):
        groups.setdefault(day.isoformat()[:key_length], []).append(r)
    return {key: float(HUNDRED * compound(rs)) for key, rs in groups.items()}


def _months_back(day: date, months: int) -> date:
    """Return ``day`` minus ``months`` calendar months (the month's last day when shorter)."""
    total = day.year * 12 + day.month - 1 - months
    year, month = divmod(total, 12)
    month += 1
    for last in (31, 30, 29, 28):
        try:
            return day.replace(year=year, month=month, day=min(day.day, last))
        except ValueError:
            continue
    raise ValueError(f"no day {day.day} in {year}-{month}")  # unreachable: every month has a 28th


def trailing_returns(series: ReturnSeries, first_row: date | None) -> tuple[dict[str, float | None], dict[str, str]]:
    """Return compounded returns from ``last − N months`` (inclusive, as quantstats) and all-time.

    A window that starts before the account's first row is withheld: the history does not
    cover it, and a shorter return under a longer label would mislead.
    """
    values: dict[str, float | None] = {}
    withheld: dict[str, str] = {}
    if not series.dates or first_row is None:
        return dict.fromkeys([*TRAILING_MONTHS, "all"]), {"trailing": "no returns yet"}
    last = series.dates[-1]
    for label, months in TRAILING_MONTHS.items():
        start = _months_back(last, months)
        if start < first_row:
            values[label] = None
            withheld[f"trailing.{label}"] = f"history starts {first_row.isoformat()}, after {start.isoformat()}"
        else:
            picked = (r for d, r in zip(series.dates, series.returns, strict=True) if d >= start)
            values[label] = float(HUNDRED * compound(picked))
    values["all"] = float(HUNDRED * compound(series.returns))
    return values, withheld


# Drawdowns.


def drawdown_periods(series: ReturnSeries) -> list[Drawdown]:
    """Return every drawdown period of the index ``Π(1+r)`` (baseline 1 before the first day), oldest first.

    ``start``/``end``: the first and last day under water; ``valley``: the first deepest day;
    ``days``: calendar days from start to end, both counted (quantstats' ``drawdown_details``);
    ``peak``: the last day at the high-water mark before it (None: the opening balance);
    ``recovery``: the first day back at the mark (None while still under water).
    """
    periods: list[Drawdown] = []
    index = peak_value = ONE
    peak_day: date | None = None
    start: date | None = None  # the open period's first day under water
    valley = end = series.dates[0] if series.dates else date.min
    deepest = ZERO
    for day, r in zip(series.dates, series.returns, strict=True):
        index *= ONE + r
        depth = index / peak_value - ONE
        if depth < 0:
            if start is None:
                start, valley, deepest = day, day, depth
            elif depth < deepest:
                valley, deepest = day, depth
            end = day
            continue
        if start is not None:
            periods.append(_period(peak_day, start, valley, end, day, deepest))
            start = None
        peak_value, peak_day = index, day
    if start is not None:
        periods.append(_period(peak_day, start, valley, end, None, deepest))
    return periods


def _period(peak: date | None, start: date, valley: date, end: date, recovery: date | None, depth: Decimal) -> Drawdown:
    return Drawdown(
        peak=peak, start=start, valley=valley, end=end, recovery=recovery,
        depth_pct=float(HUNDRED * depth), days=(end - start).days + 1,
    )  # fmt: skip


def top_drawdowns(series: ReturnSeries, count: int = TOP_DRAWDOWNS) -> list[Drawdown]:
    """Return the ``count`` deepest drawdown periods, deepest first (earlier first on a tie)."""
    return sorted(drawdown_periods(series), key=lambda p: (p.depth_pct, p.start))[:count]


def underwater(series: ReturnSeries) -> list[Decimal]:
    """Return the drawdown after each return (the underwater curve), as a fraction."""
    index = peak = ONE
    result: list[Decimal] = []
    for r in series.returns:
        index *= ONE + r
        peak = max(peak, index)
        result.append(index / peak - ONE)
    return result


# Benchmark.


def benchmark_returns(dates: Sequence[date], closes: Mapping[date, Decimal]) -> tuple[list[Decimal] | None, str]:
    """Return the benchmark's return on each of ``dates`` (close over the previous bar's close).

    None with the reason when a date has no close, or no close precedes the first date: a
    missing bar is not a flat day.
    """
    bar_days = sorted(closes)
    position_of = {day: i for i, day in enumerate(bar_days)}
    result: list[Decimal] = []
    for day in dates:
        if day not in closes:
            return None, f"no close for {day.isoformat()}"
        position = position_of[day]
        if position == 0:
            return None, f"no close before {day.isoformat()}"
        before = closes[bar_days[position - 1]]
        if before <= 0:
            return None, f"close {before} before {day.isoformat()} is not positive"
        result.append(closes[day] / before - ONE)
    return result, ""


def compare_benchmark(symbol: str, ours: Sequence[float], theirs: Sequence[Decimal]) -> Benchmark:
    """Return the benchmark figures over paired daily returns (at least 2).

    beta = cov(r, b)/var(b); alpha = (1 + mean(r − beta·b))^252 − 1 (empyrical);
    correlation (Pearson), R² = correlation²; information ratio = mean(r − b)/std(r − b), daily,
    not annualised (quantstats).
    """
    bs = [float(b) for b in theirs]
    var_b = covariance(bs, bs)
    beta = covariance(ours, bs) / var_b if var_b > 0 else None
    alpha = None
    if beta is not None:
        mean_excess = math.fsum(r - beta * b for r, b in zip(ours, bs, strict=True)) / len(bs)
        alpha = finite((1.0 + mean_excess) ** PERIODS_PER_YEAR - 1.0) if mean_excess > -1.0 else None
    std_r = sample_std(ours)
    std_b = math.sqrt(var_b)
    correlation = covariance(ours, bs) / (std_r * std_b) if std_r > 0 and std_b > 0 else None
    active = [r - b for r, b in zip(ours, bs, strict=True)]
    tracking = sample_std(active)
    return Benchmark(
        symbol=symbol,
        return_pct=float(HUNDRED * compound(theirs)),
        alpha=alpha,
        beta=finite(beta),
        correlation=finite(correlation),
        information_ratio=finite(math.fsum(active) / len(active) / tracking) if tracking > 0 else None,
        r2=None if correlation is None else finite(correlation * correlation),
    )


# Trades.


def _longest(outcomes: Sequence[int], sign: int) -> int:
    best = run = 0
    for outcome in outcomes:
        run = run + 1 if outcome == sign else 0
        best = max(best, run)
    return best


def trade_stats(slices: Iterable[ClosedTrade]) -> TradeStats:
    """Return the closed-trade figures; a trade is a lot (its slices summed, as the KPIs count)."""
    by_lot: dict[str, dict[str, ClosedTrade]] = {}
    for piece in slices:
        by_lot.setdefault(piece.entry_lot_id, {})[piece.exit_order_id] = piece
    lots: list[Lot] = sorted(
        (collapse_lot(list(pieces.values())) for pieces in by_lot.values()),
        key=lambda lot: (lot.exit_time is None, lot.exit_time),
    )
    pnl = [lot.pnl_cash for lot in lots]
    outcomes = [(p > 0) - (p < 0) for p in pnl]
    by_symbol: dict[str, list[Lot]] = {}
    for lot in lots:
        by_symbol.setdefault(lot.symbol, []).append(lot)
    holding = [lot.holding_seconds / SECONDS_PER_DAY for lot in lots]
    return TradeStats(
        count=len(lots),
        wins=outcomes.count(1),
        losses=outcomes.count(-1),
        breakeven=outcomes.count(0),
        largest_win=max((p for p in pnl if p > 0), default=None),
        largest_loss=min((p for p in pnl if p < 0), default=None),
        gross_profit=sum((p for p in pnl if p > 0), ZERO),
        gross_loss=sum((p for p in pnl if p < 0), ZERO),
        max_consecutive_wins=_longest(outcomes, 1),
        max_consecutive_losses=_longest(outcomes, -1),
        median_holding_days=statistics.median(holding) if holding else None,
        by_symbol={
            symbol: SymbolTrades(
                trades=len(group),
                wins=sum(1 for lot in group if lot.pnl_cash > 0),
                losses=sum(1 for lot in group if lot.pnl_cash < 0),
                pnl=sum((lot.pnl_cash for lot in group), ZERO),
            )
            for symbol, group in sorted(by_symbol.items())
        },
    )


# Money-weighted return.


def money_weighted_return(rows: Sequence[DailySummary], series: ReturnSeries) -> tuple[float | None, str]:
    """Return the money-weighted return of the period in % (or None and why).

    The opening equity ``E0`` (before the first day: ``deposit₁/(1+r₁) − F₁``) and each day's
    external flows ``F_t`` (counted at the start of day t, as the curve does) are invested; the
    equity at the last return's day is received. The daily rate ``x`` solving
    ``Σ c_k·(1+x)^(N−k) = 0`` is found by bisection; the period figure is ``(1+x)^N − 1``.
    With no flows it equals the time-weighted return.
    """
    n = len(series.returns)
    if n == 0:
        return None, "no returns yet"
    deposits = [row.deposit for row in rows[:n]]
    flows = [row.net_flows for row in rows[:n]]
    if series.wiped_out is not None:
        return -100.0, ""  # the investor got back nothing (or less)
    if any(d is None for d in deposits) or any(f is None for f in flows):
        return None, "a daily row has no equity or flows"
    outlays = [float(Decimal(deposits[0] or 0) / (ONE + series.returns[0]))]  # E0 + F1, at time 0
    outlays += [float(f or 0) for f in flows[1:]]  # F_t at time t−1
    final = Decimal(deposits[-1] or 0)
    cash = [-x for x in outlays] + [0.0]
    cash[n] += float(final)
    return _solve_rate(cash)


def _future_value(cash: Sequence[float], growth: float) -> float:
    total = 0.0
    for amount in cash:  # Horner: Σ c_k·g^(N−k)
        total = total * growth + amount
    return total


def _solve_rate(cash: Sequence[float]) -> tuple[float | None, str]:
    n = len(cash) - 1
    low, high = 1e-9, 2.0
    f_low, f_high = _future_value(cash, low), _future_value(cash, high)
    if not (math.isfinite(f_low) and math.isfinite(f_high)) or f_low * f_high > 0:
        return None, "no single money-weighted rate (the flows change sign too often)"
    for _ in range(200):
        middle = (low + high) / 2
        f_middle = _future_value(cash, middle)
        if f_middle == 0.0:
            low = high = middle
            break
        if (f_middle > 0) == (f_high > 0):
            high, f_high = middle, f_middle
        else:
            low = middle
    growth = (low + high) / 2
    return finite(100.0 * (growth**n - 1.0)), ""


# The report.


def _rolling(series: ReturnSeries, xs: Sequence[float], window: int) -> Rolling:
    sharpe_by_day: dict[str, float | None] = {}
    volatility_by_day: dict[str, float | None] = {}
    root = math.sqrt(PERIODS_PER_YEAR)
    for end in range(window, len(xs) + 1):
        key = series.dates[end - 1].isoformat()
        tail = xs[end - window : end]
        mean = math.fsum(tail) / window
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in tail) / (window - 1))
        # As metrics.sharpe and metrics.volatility over the window, with one pass for both.
        sharpe_by_day[key] = finite(mean / std * root) if std > 0 and min(tail) != max(tail) else None
        volatility_by_day[key] = _pct(std * root)
    return Rolling(window=window, sharpe=sharpe_by_day, volatility_pct=volatility_by_day)


def _ratios(xs: Sequence[float], withheld: dict[str, str]) -> dict[str, float | None]:
    values: dict[str, float | None] = {
        "sharpe": sharpe(xs),
        "smart_sharpe": smart_sharpe(xs),
        "sortino": sortino(xs),
        "cagr_pct": _pct(cagr(xs)),
        "calmar": calmar(xs),
        "volatility_pct": _pct(volatility(xs)),
    }
    if len(xs) < MIN_ANNUALISED_SESSIONS:
        for key in ANNUALISED:
            values[key] = None
            withheld[key] = f"annualised: needs {MIN_ANNUALISED_SESSIONS} sessions of returns, has {len(xs)}"
        return values
    reasons = {
        "sharpe": "returns are all equal (no volatility)",
        "smart_sharpe": "returns are all equal (no volatility)",
        "sortino": "no losing day (downside deviation 0)",
        "calmar": "no drawdown",
        "cagr_pct": "not finite",
        "volatility_pct": "not finite",
    }
    for key, value in values.items():
        if value is None:
            withheld[key] = reasons[key]
    return values


def _tails(xs: Sequence[float], withheld: dict[str, str]) -> dict[str, float | None]:
    if len(xs) < 2:
        for key in ("var_95_pct", "cvar_95_pct", "skew", "kurtosis", "tail_ratio"):
            withheld[key] = f"needs 2 returns, has {len(xs)}"
        return dict.fromkeys(("var_95_pct", "cvar_95_pct", "skew", "kurtosis", "tail_ratio"))
    values = {
        "var_95_pct": _pct(value_at_risk(xs)),
        "cvar_95_pct": _pct(conditional_value_at_risk(xs)),
        "skew": skewness(xs),
        "kurtosis": excess_kurtosis(xs),
        "tail_ratio": tail_ratio(xs),
    }
    reasons = {
        "skew": "needs 3 unequal returns",
        "kurtosis": "needs 4 unequal returns",
        "tail_ratio": "5th percentile is 0",
    }
    for key, value in values.items():
        if value is None:
            withheld[key] = reasons.get(key, "not finite")
    return values


def _months(series: ReturnSeries) -> tuple[dict[str, float], dict[str, float | None]]:
    monthly = _grouped(series, 7)
    decided = [v for v in monthly.values() if v != 0.0]
    return monthly, {
        "best_month_pct": max(monthly.values(), default=None),
        "worst_month_pct": min(monthly.values(), default=None),
        "win_months_pct": 100.0 * sum(1 for v in decided if v > 0) / len(decided) if decided else None,
    }


def _benchmark(
    symbol: str, series: ReturnSeries, xs: Sequence[float], closes: Mapping[date, Decimal] | None,
    withheld: dict[str, str],
) -> Benchmark | None:  # fmt: skip
    if closes is None:
        withheld["benchmark"] = f"no {symbol} bars were read"
        return None
    if len(xs) < 2:
        withheld["benchmark"] = f"needs 2 returns, has {len(xs)}"
        return None
    theirs, reason = benchmark_returns(series.dates, closes)
    if theirs is None:
        withheld["benchmark"] = f"{symbol}: {reason}"
        return None
    return compare_benchmark(symbol, xs, theirs)


def compute_report(
    rows: Sequence[DailySummary],
    slices: Iterable[ClosedTrade],
    *,
    benchmark_symbol: str,
    benchmark_closes: Mapping[date, Decimal] | None,
) -> Report:
    """Return the report of the daily rows (any order) and the closed slices.

    ``benchmark_closes`` are the benchmark's daily closes from before the first row to the
    last (None when they could not be read: the benchmark is withheld, never guessed).
    """
    ordered = by_date(rows)
    series = return_series(ordered)
    xs = [float(r) for r in series.returns]
    withheld: dict[str, str] = {}
    ratios = _ratios(xs, withheld)
    tails = _tails(xs, withheld)
    monthly, months = _months(series)
    trailing, trailing_withheld = trailing_returns(series, ordered[0].date if ordered else None)
    withheld.update(trailing_withheld)
    mwr, mwr_reason = money_weighted_return(ordered, series)
    if mwr is None:
        withheld["mwr_pct"] = mwr_reason
    wins = [x for x in xs if x > 0]
    losses = [x for x in xs if x < 0]
    dates = [d.isoformat() for d in series.dates]
    cumulative = cumulative_pct(series)
    under = underwater(series)
    if series.wiped_out is not None:
        withheld["after_wipe_out"] = (
            f"equity reached ≤ 0 on {series.wiped_out.isoformat()}: no return on the {series.days_after} later days"
        )
    mean_win = math.fsum(wins) / len(wins) if wins else None
    mean_loss = math.fsum(losses) / len(losses) if losses else None
    return Report(
        first_date=ordered[0].date if ordered else None,
        last_date=ordered[-1].date if ordered else None,
        sessions=len(xs),
        returns=dict(zip(dates, series.returns, strict=True)),
        equity={row.date.isoformat(): row.deposit for row in ordered if row.deposit is not None},
        cumulative_pct=dict(zip(dates, cumulative, strict=True)),
        underwater_pct=dict(zip(dates, (float(HUNDRED * d) for d in under), strict=True)),
        twr_pct=float(HUNDRED * compound(series.returns)) if xs else None,
        mwr_pct=mwr,
        sharpe=ratios["sharpe"],
        smart_sharpe=ratios["smart_sharpe"],
        sortino=ratios["sortino"],
        cagr_pct=ratios["cagr_pct"],
        calmar=ratios["calmar"],
        volatility_pct=ratios["volatility_pct"],
        max_drawdown_pct=float(HUNDRED * min(under)) if under else None,
        best_day_pct=_pct(max(xs)) if xs else None,
        worst_day_pct=_pct(min(xs)) if xs else None,
        win_days_pct=100.0 * len(wins) / (len(wins) + len(losses)) if wins or losses else None,
        payoff_ratio_returns=None if mean_win is None or not mean_loss else mean_win / abs(mean_loss),
        monthly_returns=monthly,
        yearly_returns=_grouped(series, 4),
        best_month_pct=months["best_month_pct"],
        worst_month_pct=months["worst_month_pct"],
        win_months_pct=months["win_months_pct"],
        trailing=trailing,
        drawdowns=top_drawdowns(series),
        rolling=_rolling(series, xs, ROLLING_WINDOW),
        benchmark=_benchmark(benchmark_symbol, series, xs, benchmark_closes, withheld),
        trades=trade_stats(slices),
        wipe_out=None if series.wiped_out is None else WipeOut(date=series.wiped_out, days_after=series.days_after),
        withheld=withheld,
        **tails,
    )

"""KPIs: the Sharpe family and drawdown, and the KPI document (docs/spec.md §5, the UI contract).

Risk statistics (used by the daily equity curve and the reference check):

- ``sharpe(returns) = mean/std(ddof=1)·√252``; None with fewer than 2 returns, when the returns
  are all equal (std = 0) or when the result is not finite.
- ``smart_sharpe = sharpe / penalty`` with the autocorrelation penalty
  ``√(1 + 2·Σ_{k=1}^{n−1} (n−k)/n · ρ_k)``. ``ρ_k`` is estimated as ``|ρ₁|^k``, ``ρ₁`` the
  Pearson correlation of consecutive returns: the AR(1) form quantstats uses. It keeps the
  penalty ≥ 1 (a sample ``ρ_k`` per lag can make the bracket negative). The penalty is 1 with
  fewer than 3 returns or a constant half-series, where ``ρ₁`` is undefined.
- Rolling windows (``rolling_sharpe``): a window needs ``W`` returns; fewer gives None rather
  than a Sharpe over a shorter history labelled as ``W`` days.
- Drawdown is taken on the compounded return index ``Π(1 + r)`` (starting from 1), so
  deposits and withdrawals never look like gains or losses (docs/defects.md D10).

Daily-return KPIs (``daily_kpis``, docs/spec.md §5): over ``return_series`` of the daily rows
(the stored ``daily_return``; the day equity reached ≤ 0 counts as −100 % and ends the series,
the days after it have no return: docs/report.md "Wipe-out"): CAGR ``(Π(1+r))^(252/n) − 1``,
volatility ``std(ddof=1)·√252``, Sortino ``mean/√(Σ min(r,0)²/n)·√252``, smart Sharpe, Calmar
``CAGR/|max drawdown|``, drawdown durations in calendar days, best/worst day, win days, streaks,
average $ win/loss (``deposit·r/(1+r)``: the day's P&L), payoff ratio, exposure (days holding
positions), MTD/YTD (compounded over the rows of ``as_of``'s New York month/year).

Total Return, MTD and YTD (``period_returns``, docs/spec.md §5) are one definition over three
windows: ``Π(1 + r) − 1`` of the same series (the report's ``twr_pct``, ``monthly_returns`` and
``yearly_returns``), times today's live return (``live_return``) while a session runs and today
has no daily row yet. So on an account's first month they are equal, and a deposit, net of
flows, is never a gain in any of them.
The annualised figures (CAGR, volatility, Sortino, smart Sharpe, Calmar) are withheld (None)
until the series holds ``MIN_ANNUALISED_SESSIONS`` returns: a CAGR of a few days is noise
raised to the power 252/n (docs/report.md "Withheld values").

The KPI document is built from closed slices grouped into lots, cash flows, daily equity rows
and the open lots. ``KpiAccumulator`` is fed new slices, flows and rows as they appear and keeps
running totals (D48); ``compute_kpi_document`` is the from-scratch definition it must equal.

Pure: no I/O, no clock (``as_of`` is an argument), no logging. Floats appear only in the
Sharpe family and in the rendered document; every figure is finite or None, never NaN (D50).
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from coldharbour.domain.cashflows import CashFlow, Category, is_dividend, is_interest
from coldharbour.domain.money import HUNDRED, ONE, ZERO

PERIODS_PER_YEAR: Final = 252
# Annualised figures need this many daily returns (about a trading month) before they are shown.
MIN_ANNUALISED_SESSIONS: Final = 20
SHARPE_WINDOWS: Final = (10, 21, 63, 126, 252)
SECONDS_PER_DAY: Final = Decimal(86400)
_NEW_YORK: Final = ZoneInfo("America/New_York")

Side = Literal["long", "short"]
ExitType = Literal["TP", "SL", "MANUAL", "CORPORATE"]
# Tie-break for a lot's class when two exit types closed the same quantity: first wins.
EXIT_TYPE_ORDER: Final[tuple[ExitType, ...]] = ("TP", "SL", "MANUAL", "CORPORATE")

KPI_KEYS: Final = (
    "TOTAL ACCOUNT RESULT (Equity)",
    "NET REALIZED CASH (FIFO)",
    "Unrealized P/L (Open)",
    "Current Open Value",
    "Breakeven %",
    "Win Rate %",
    "Risk-Reward Ratio",
    "Mean Take ($)",
    "Mean Stop ($)",
    "Mean Holding Take (Days)",
    "Mean Holding Stop (Days)",
    "Realized P/L (Broker/FIFO)",
    "Realized P/L (Strategy Only)",
    "Total Fees",
    "Net Dividends",
    "Net Interest",
    "Total Buy Volume",
    "Total Sell Volume",
    "Closed Trades (n)",
    "Open Trades (n)",
    "Total Return %",
    "Sharpe 10d",
    "Sharpe 21d",
    "Sharpe 63d",
    "Sharpe 126d",
    "Sharpe 252d",
    "Max Drawdown %",
    "Profit Factor",
    "Expectancy ($)",
    "CAGR %",
    "Volatility (ann.) %",
    "Sortino",
    "Smart Sharpe",
    "Calmar",
    "Max Drawdown Duration (Days)",
    "Longest Drawdown (Days)",
    "Best Day %",
    "Worst Day %",
    "Win Days %",
    "Max Consecutive Wins",
    "Max Consecutive Losses",
    "Avg Win ($)",
    "Avg Loss ($)",
    "Payoff Ratio",
    "Exposure %",
    "MTD %",
    "YTD %",
    "as_of",
)

KpiValue = float | int | str | None
KpiDocument = dict[str, KpiValue]


# Risk statistics.


def _floats(returns: Sequence[Decimal] | Sequence[float]) -> list[float]:
    return [float(r) for r in returns]


def sharpe(returns: Sequence[Decimal] | Sequence[float]) -> float | None:
    """Return the annualised Sharpe ratio (risk-free 0, ddof 1, √252), or None."""
    n = len(returns)
    if n < 2 or all(r == returns[0] for r in returns):
        return None
    xs = _floats(returns)
    mean = math.fsum(xs) / n
    variance = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    std = math.sqrt(variance)
    if std == 0.0 or not math.isfinite(std):
        return None
    value = mean / std * math.sqrt(PERIODS_PER_YEAR)
    return value if math.isfinite(value) else None


def _pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    n = len(a)
    mean_a = math.fsum(a) / n
    mean_b = math.fsum(b) / n
    da = [x - mean_a for x in a]
    db = [y - mean_b for y in b]
    denominator = math.sqrt(math.fsum(x * x for x in da) * math.fsum(y * y for y in db))
    if denominator == 0.0 or not math.isfinite(denominator):
        return None
    rho = math.fsum(x * y for x, y in zip(da, db, strict=True)) / denominator
    return max(-1.0, min(1.0, rho))


def autocorrelation_penalty(returns: Sequence[Decimal] | Sequence[float]) -> float:
    """Return ``√(1 + 2·Σ_{k=1}^{n−1} (n−k)/n·|ρ₁|^k)`` (≥ 1; 1 when ρ₁ is undefined)."""
    xs = _floats(returns)
    n = len(xs)
    if n < 3:
        return 1.0
    rho = _pearson(xs[:-1], xs[1:])
    if rho is None:
        return 1.0
    rho = abs(rho)
    total = math.fsum((n - k) / n * rho**k for k in range(1, n))
    return math.sqrt(1.0 + 2.0 * total)


def smart_sharpe(returns: Sequence[Decimal] | Sequence[float]) -> float | None:
    """Return the Sharpe ratio divided by the autocorrelation penalty, or None."""
    base = sharpe(returns)
    if base is None:
        return None
    value = base / autocorrelation_penalty(returns)
    return value if math.isfinite(value) else None


def rolling_sharpe(returns: Sequence[Decimal], window: int) -> tuple[float | None, float | None]:
    """Return (Sharpe, smart Sharpe) of the last ``window`` returns; None with fewer."""
    if window < 2:
        raise ValueError(f"window: expected >= 2, found {window}")
    if len(returns) < window:
        return None, None
    tail = returns[-window:]
    return sharpe(tail), smart_sharpe(tail)


def volatility(returns: Sequence[float]) -> float | None:
    """Return the annualised volatility ``std(ddof=1)·√252``; None with fewer than 2 returns."""
    n = len(returns)
    if n < 2:
        return None
    mean = math.fsum(returns) / n
    value = math.sqrt(math.fsum((x - mean) ** 2 for x in returns) / (n - 1)) * math.sqrt(PERIODS_PER_YEAR)
    return value if math.isfinite(value) else None


def sortino(returns: Sequence[float]) -> float | None:
    """Return ``mean/√(Σ min(r,0)²/n)·√252`` (target 0); None without a losing return."""
    n = len(returns)
    if n < 2:
        return None
    downside = math.sqrt(math.fsum(min(x, 0.0) ** 2 for x in returns) / n)
    if downside == 0.0:
        return None
    value = math.fsum(returns) / n / downside * math.sqrt(PERIODS_PER_YEAR)
    return value if math.isfinite(value) else None


def cagr(returns: Sequence[float]) -> float | None:
    """Return ``(Π(1+r))^(252/n) − 1`` (n trading days); −1 after a wipe-out (growth 0); None without returns."""
    if not returns:
        return None
    growth = math.prod(1.0 + x for x in returns)
    if growth <= 0.0:
        return -1.0  # a return of −100 % (the series ends there: ``return_series``)
    if not math.isfinite(growth):
        return None
    value = growth ** (PERIODS_PER_YEAR / len(returns)) - 1.0
    return value if math.isfinite(value) else None


def max_drawdown_float(returns: Sequence[float]) -> float:
    """Return the most negative drawdown of ``Π(1+r)`` with a baseline of 1 (0 when it never fell)."""
    index = peak = 1.0
    worst = 0.0
    for x in returns:
        index *= 1.0 + x
        peak = max(peak, index)
        worst = min(worst, index / peak - 1.0)
    return worst


def calmar(returns: Sequence[float]) -> float | None:
    """Return ``CAGR / |max drawdown|``; None when either is undefined or the drawdown is 0."""
    growth = cagr(returns)
    worst = max_drawdown_float(returns)
    if growth is None or worst == 0.0:
        return None
    return growth / abs(worst)


def drawdowns(returns: Iterable[Decimal]) -> list[Decimal]:
    """Return the drawdown after each return on the index ``Π(1 + r)`` with a baseline of 1."""
    index = ONE
    peak = ONE
    result: list[Decimal] = []
    for r in returns:
        index *= ONE + r
        peak = max(peak, index)
        result.append(index / peak - ONE)
    return result


def max_drawdown(returns: Iterable[Decimal]) -> Decimal:
    """Return the most negative drawdown of the return index (0 when it never fell)."""
    return min(drawdowns(returns), default=ZERO)


# KPI inputs.


class ClosedTrade(msgspec.Struct, frozen=True, kw_only=True):
    """One stored closed-trades row (entry lot × exit order), as the KPIs read it back.

    Not ``domain.types.ClosedSlice``, the ledger's row with its exact accumulators: the KPIs need
    only the stored columns, with times as datetimes.
    """

    entry_lot_id: str
    exit_order_id: str
    side: Side
    qty: Decimal
    entry_time: datetime
    entry_price: Decimal
    exit_time: datetime
    exit_price: Decimal
    exit_type: ExitType
    pnl_cash: Decimal
    pnl_cash_fifo: Decimal
    symbol: str = ""


class OpenLot(msgspec.Struct, frozen=True, kw_only=True):
    """One open-position row: ``profit_loss``/``mkt_value`` are None while it has no mark.

    With ``symbol`` known, the KPIs value the lot at its symbol's one mark (``mkt_px`` and
    ``avg_px_symbol`` of the symbol's newest row by ``updated_at``), as the dashboard's symbol
    row does, so "Unrealized P/L (Open)" is the sum of the rows it shows (docs/dashboard.md).
    """

    parent_id: str
    side: Side
    qty: Decimal
    avg_fill: Decimal
    profit_loss: Decimal | None
    mkt_value: Decimal | None
    symbol: str | None = None
    mkt_px: Decimal | None = None
    avg_px_symbol: Decimal | None = None
    updated_at: datetime | None = None
    filled_at: datetime | None = None


class DailySummary(msgspec.Struct, frozen=True, kw_only=True):
    """What the KPIs read from one daily equity row."""

    date: date
    cumulative_return: Decimal | None
    drawdown: Decimal | None
    sharpe: Mapping[int, float | None]
    daily_return: Decimal | None = None
    deposit: Decimal | None = None
    market_value: Decimal | None = None
    net_flows: Decimal | None = None


# The return series.


class ReturnSeries(msgspec.Struct, frozen=True, kw_only=True):
    """The daily time-weighted returns every daily figure is computed from, oldest first.

    ``wiped_out`` is the date equity reached ≤ 0 after a day that started with capital: its
    return is −1 (the loss is floored at 100 %: an account cannot lose more than everything in
    return terms) and it is the last return; ``days_after`` counts the later rows, which have
    no return.
    """

    dates: tuple[date, ...]
    returns: tuple[Decimal, ...]
    wiped_out: date | None = None
    days_after: int = 0


def return_series(rows: Sequence[DailySummary]) -> ReturnSeries:
    """Return the series of ``rows`` (oldest first): each row's ``daily_return`` until the wipe-out.

    The daily curve (``domain.equity``) leaves ``daily_return`` null from the day equity reached
    ≤ 0 on, and only then: so the first row without a return is the wipe-out day.
    """
    dates: list[date] = []
    returns: list[Decimal] = []
    for i, row in enumerate(rows):
        if row.daily_return is None:
            dates.append(row.date)
            returns.append(-ONE)
            after = len(rows) - i - 1
            return ReturnSeries(dates=tuple(dates), returns=tuple(returns), wiped_out=row.date, days_after=after)
        dates.append(row.date)
        returns.append(row.daily_return)
    return ReturnSeries(dates=tuple(dates), returns=tuple(returns))


class PeriodReturns(msgspec.Struct, frozen=True, kw_only=True):
    """``Π(1 + r) − 1`` over the whole series, ``as_of``'s New York month and year (None: no return)."""

    total: Decimal | None
    month: Decimal | None
    year: Decimal | None

    def extended(self, live: Decimal | None) -> PeriodReturns:
        """Return the three compounded with today's ``live`` return (it falls in this month and year)."""
        if live is None:
            return self
        growth = ONE + live
        return PeriodReturns(
            total=(ONE + (self.total or ZERO)) * growth - ONE,
            month=(ONE + (self.month or ZERO)) * growth - ONE,
            year=(ONE + (self.year or ZERO)) * growth - ONE,
        )


def period_returns(rows: Sequence[DailySummary], as_of: datetime) -> PeriodReturns:
    """Return the compounded returns of ``return_series(rows)`` (oldest first): all, this month, this year.

    The same products as ``domain.report`` (``twr_pct``, ``monthly_returns``, ``yearly_returns``),
    so the KPI cards and the report cannot disagree; a wipe-out's −1 makes each −100 %.
    """
    if not rows:
        return PeriodReturns(total=None, month=None, year=None)
    series = return_series(rows)
    year, month = _ny_month(as_of)
    dated = list(zip(series.dates, series.returns, strict=True))
    return PeriodReturns(
        total=_compound(series.returns),
        month=_compound(r for day, r in dated if (day.year, day.month) == (year, month)),
        year=_compound(r for day, r in dated if day.year == year),
    )


def live_return(
    newest: DailySummary | None, intraday_cumulative_return: Decimal | None, *, in_session: bool, as_of: datetime
) -> Decimal | None:
    """Return today's return so far, from the newest intraday point, or None.

    Only during a session (``in_session``) and while today has no daily row: once the session's
    row exists (after its close, a first session included) that row is today's return and the
    intraday point, measured a minute behind, is not added to it a second time. The intraday
    point carries ``(1 + R₀)·(1 + r_today) − 1`` with ``R₀`` the cumulative return of the row it
    is anchored on, the newest daily row (0 before the first one: the opening balance), so
    ``r_today = (1 + I)/(1 + R₀) − 1``; it is net of today's flows (``domain.equity.compute_intraday``).
    None after a wipe-out (no return from there on).
    """
    if not in_session or intraday_cumulative_return is None:
        return None
    if newest is not None and newest.date >= as_of.astimezone(_NEW_YORK).date():
        return None
    base = ZERO if newest is None else newest.cumulative_return
    if base is None or (newest is not None and newest.daily_return is None) or ONE + base <= 0:
        return None
    return max((ONE + intraday_cumulative_return) / (ONE + base), ZERO) - ONE


# Lots.


class Lot(msgspec.Struct, frozen=True):
    """One closed lot (a trade): its slices summed, first entry to last exit."""

    pnl_cash: Decimal
    pnl_cash_fifo: Decimal
    exit_class: ExitType
    holding_seconds: Decimal
    buy_volume: Decimal
    sell_volume: Decimal
    symbol: str = ""
    exit_time: datetime | None = None


def _seconds(start: datetime, end: datetime) -> Decimal:
    delta = end - start
    # Exact: days, seconds and microseconds are integers (total_seconds() is a float).
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 10**6


def _volumes(piece: ClosedTrade) -> tuple[Decimal, Decimal]:
    """(bought, sold) notional of a slice: a long buys at entry, a short buys at exit."""
    entry = piece.qty * piece.entry_price
    exit_ = piece.qty * piece.exit_price
    return (entry, exit_) if piece.side == "long" else (exit_, entry)


def collapse_lot(slices: Sequence[ClosedTrade]) -> Lot:
    """Return a lot from its slices (at least one): sums, first entry to last exit, class by most quantity."""
    qty_by_class: dict[ExitType, Decimal] = {}
    for piece in slices:
        qty_by_class[piece.exit_type] = qty_by_class.get(piece.exit_type, ZERO) + piece.qty
    most = max(qty_by_class.values())
    exit_class = next(t for t in EXIT_TYPE_ORDER if qty_by_class.get(t) == most)
    volumes = [_volumes(piece) for piece in slices]
    return Lot(
        pnl_cash=sum((p.pnl_cash for p in slices), ZERO),
        pnl_cash_fifo=sum((p.pnl_cash_fifo for p in slices), ZERO),
        exit_class=exit_class,
        holding_seconds=_seconds(min(p.entry_time for p in slices), max(p.exit_time for p in slices)),
        buy_volume=sum((v[0] for v in volumes), ZERO),
        sell_volume=sum((v[1] for v in volumes), ZERO),
        symbol=slices[0].symbol,
        exit_time=max(p.exit_time for p in slices),
    )


class _Totals:
    """Running sums over lots; every field is exact, so removing a lot undoes adding it."""

    def __init__(self) -> None:
        self.lots = 0
        self.wins = 0
        self.losses = 0
        self.take_count = 0
        self.stop_count = 0
        self.pnl = ZERO
        self.pnl_fifo = ZERO
        self.win_sum = ZERO
        self.loss_sum = ZERO
        self.take_sum = ZERO
        self.stop_sum = ZERO
        self.take_seconds = ZERO
        self.stop_seconds = ZERO
        self.buy_volume = ZERO
        self.sell_volume = ZERO

    def apply(self, lot: Lot, sign: int) -> None:
        self.lots += sign
        self.pnl += sign * lot.pnl_cash
        self.pnl_fifo += sign * lot.pnl_cash_fifo
        self.buy_volume += sign * lot.buy_volume
        self.sell_volume += sign * lot.sell_volume
        if lot.pnl_cash > 0:
            self.wins += sign
            self.win_sum += sign * lot.pnl_cash
            if lot.exit_class == "TP":
                self.take_count += sign
                self.take_sum += sign * lot.pnl_cash
                self.take_seconds += sign * lot.holding_seconds
        elif lot.pnl_cash < 0:
            self.losses += sign
            self.loss_sum += sign * lot.pnl_cash
            if lot.exit_class == "SL":
                self.stop_count += sign
                self.stop_sum += sign * lot.pnl_cash
                self.stop_seconds += sign * lot.holding_seconds


class _FlowTotals(msgspec.Struct):
    fees: Decimal = ZERO
    dividends: Decimal = ZERO
    interest: Decimal = ZERO

    def apply(self, flow: CashFlow, sign: int) -> None:
        if flow.category is Category.FEE:
            self.fees += sign * flow.amount
        elif is_dividend(flow.type):
            self.dividends += sign * flow.amount
        elif is_interest(flow.type):
            self.interest += sign * flow.amount


# Rendering.


def _number(value: Decimal | None, places: int) -> float | None:
    if value is None:
        return None
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return float(rounded) + 0.0  # + 0.0 turns -0.0 into 0.0


def _percent(value: Decimal | None) -> float | None:
    return None if value is None else _number(HUNDRED * value, 2)


def _money(value: Decimal | None) -> float | None:
    return _number(value, 2)


def _ratio(numerator: Decimal, denominator: Decimal, count: int) -> Decimal | None:
    return numerator / denominator if count > 0 and denominator != 0 else None


def _float4(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 4) + 0.0


def _symbol_marks(open_lots: Sequence[OpenLot]) -> dict[str, OpenLot]:
    """Per symbol, the row whose mark and broker average the whole symbol is valued at: the
    newest by ``updated_at`` (on a tie the first by fill time, then ``parent_id``), as the page picks it."""
    epoch = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(
        (lot for lot in open_lots if lot.symbol is not None),
        key=lambda lot: (lot.filled_at or epoch, lot.parent_id),
    )
    newest: dict[str, OpenLot] = {}
    for lot in ordered:
        assert lot.symbol is not None
        known = newest.get(lot.symbol)
        if known is None or (lot.updated_at or epoch) > (known.updated_at or epoch):
            newest[lot.symbol] = lot
    return newest


def _lot_marks(open_lots: Sequence[OpenLot]) -> tuple[list[Decimal | None], list[Decimal | None]]:
    """Each lot's unrealised P/L and value at its symbol's one mark (its own figures without a symbol)."""
    newest = _symbol_marks(open_lots)
    pnl: list[Decimal | None] = []
    value: list[Decimal | None] = []
    for lot in open_lots:
        chosen = newest.get(lot.symbol) if lot.symbol is not None else None
        if chosen is None:
            pnl.append(lot.profit_loss)
            value.append(lot.mkt_value)
            continue
        mark, basis = chosen.mkt_px, chosen.avg_px_symbol
        sign = -ONE if lot.side == "short" else ONE
        pnl.append(None if mark is None or basis is None else sign * lot.qty * (mark - basis))
        value.append(None if mark is None else lot.qty * mark)
    return pnl, value


def _open_sums(open_lots: Sequence[OpenLot]) -> tuple[Decimal | None, Decimal | None]:
    """(unrealised P/L, open value); None when any row has no mark yet (never 0: D16)."""
    pnl, value = _lot_marks(open_lots)
    pnl_total = None if any(p is None for p in pnl) else sum((p for p in pnl if p), ZERO)
    value_total = None if any(v is None for v in value) else sum((v for v in value if v), ZERO)
    return pnl_total, value_total


def _trade_figures(t: _Totals) -> KpiDocument:
    mean_win = _ratio(t.win_sum, Decimal(t.wins), t.wins)
    mean_loss = _ratio(t.loss_sum, Decimal(t.losses), t.losses)
    risk_reward = None if mean_win is None or mean_loss is None else mean_win / abs(mean_loss)
    decided = t.wins + t.losses
    mean_take = _ratio(t.take_sum, Decimal(t.take_count), t.take_count)
    mean_stop = _ratio(t.stop_sum, Decimal(t.stop_count), t.stop_count)
    day = SECONDS_PER_DAY
    return {
        "Breakeven %": _number(None if risk_reward is None else HUNDRED / (ONE + risk_reward), 2),
        "Win Rate %": _number(_ratio(HUNDRED * t.wins, Decimal(decided), decided), 2),
        "Risk-Reward Ratio": _number(risk_reward, 4),
        "Mean Take ($)": _money(mean_take),
        "Mean Stop ($)": _money(None if mean_stop is None else abs(mean_stop)),
        "Mean Holding Take (Days)": _number(_ratio(t.take_seconds, day * t.take_count, t.take_count), 2),
        "Mean Holding Stop (Days)": _number(_ratio(t.stop_seconds, day * t.stop_count, t.stop_count), 2),
        "Profit Factor": _number(_ratio(t.win_sum, abs(t.loss_sum), t.losses), 4),
        "Expectancy ($)": _money(_ratio(t.pnl, Decimal(t.lots), t.lots)),
    }


def _render(
    totals: _Totals,
    flows: _FlowTotals,
    newest_daily: DailySummary | None,
    daily: KpiDocument,
    periods: PeriodReturns,
    open_lots: Sequence[OpenLot],
    intraday_cumulative_return: Decimal | None,
    in_session: bool,
    as_of: datetime,
) -> KpiDocument:
    if as_of.tzinfo is None:
        raise ValueError(f"as_of: expected a timezone-aware datetime, found naive {as_of}")
    unrealised, open_value = _open_sums(open_lots)
    net_realised = totals.pnl_fifo + flows.fees + flows.dividends + flows.interest
    buy_volume = totals.buy_volume + sum((o.qty * o.avg_fill for o in open_lots if o.side == "long"), ZERO)
    sell_volume = totals.sell_volume + sum((o.qty * o.avg_fill for o in open_lots if o.side == "short"), ZERO)
    # D8: the return is a return of the equity curve, never a P&L divided by an equity level.
    # One series for Total Return, MTD and YTD, with today's live return until today's daily row.
    live = live_return(newest_daily, intraday_cumulative_return, in_session=in_session, as_of=as_of)
    shown = periods.extended(live)
    values: KpiDocument = {
        "TOTAL ACCOUNT RESULT (Equity)": _money(None if unrealised is None else net_realised + unrealised),
        "NET REALIZED CASH (FIFO)": _money(net_realised),
        "Unrealized P/L (Open)": _money(unrealised),
        "Current Open Value": _money(open_value),
        **_trade_figures(totals),
        "Realized P/L (Broker/FIFO)": _money(totals.pnl_fifo),
        "Realized P/L (Strategy Only)": _money(totals.pnl),
        "Total Fees": _money(flows.fees),
        "Net Dividends": _money(flows.dividends),
        "Net Interest": _money(flows.interest),
        "Total Buy Volume": _money(buy_volume),
        "Total Sell Volume": _money(sell_volume),
        "Closed Trades (n)": totals.lots,
        "Open Trades (n)": len(open_lots),
        "Total Return %": _percent(shown.total),
        **daily,
        "MTD %": _percent(shown.month),
        "YTD %": _percent(shown.year),
        "as_of": as_of.isoformat(),
    }
    for window in SHARPE_WINDOWS:
        value = None if newest_daily is None else newest_daily.sharpe.get(window)
        values[f"Sharpe {window}d"] = _float4(value)
    return {key: values[key] for key in KPI_KEYS}


# From scratch and incremental.


def compute_kpi_document(
    *,
    slices: Iterable[ClosedTrade],
    flows: Iterable[CashFlow],
    daily: Iterable[DailySummary],
    open_lots: Sequence[OpenLot],
    intraday_cumulative_return: Decimal | None,
    in_session: bool,
    as_of: datetime,
) -> KpiDocument:
    """Return the KPI document computed from the full inputs (the reference definition).

    Slices are keyed by (entry lot, exit order) and flows by id: a repeated key replaces the
    earlier value. ``intraday_cumulative_return`` is the newest intraday row's value: while
    ``in_session`` and before today's daily row it adds today's live return to ``Total Return %``,
    ``MTD %`` and ``YTD %`` alike (``live_return``); otherwise they are the daily series' alone.
    """
    by_key = {(s.entry_lot_id, s.exit_order_id): s for s in slices}
    by_lot: dict[str, list[ClosedTrade]] = {}
    for piece in by_key.values():
        by_lot.setdefault(piece.entry_lot_id, []).append(piece)
    totals = _Totals()
    for pieces in by_lot.values():
        totals.apply(collapse_lot(pieces), 1)
    flow_totals = _FlowTotals()
    for flow in {f.id: f for f in flows}.values():
        flow_totals.apply(flow, 1)
    rows = {row.date: row for row in daily}
    newest = rows[max(rows)] if rows else None
    ordered = [rows[d] for d in sorted(rows)]
    return _render(
        totals,
        flow_totals,
        newest,
        daily_kpis(ordered, as_of),
        period_returns(ordered, as_of),
        open_lots,
        intraday_cumulative_return,
        in_session,
        as_of,
    )


class KpiAccumulator:
    """Running KPI state fed with new slices, flows and daily rows; no table is re-read (D48).

    Feeding the same item twice changes nothing; a changed item (same key) replaces the old
    one. ``document`` equals ``compute_kpi_document`` over everything fed so far.
    """

    def __init__(self) -> None:
        self._slices: dict[str, dict[str, ClosedTrade]] = {}
        self._lots: dict[str, Lot] = {}
        self._totals = _Totals()
        self._flows: dict[str, CashFlow] = {}
        self._flow_totals = _FlowTotals()
        self._daily: dict[date, DailySummary] = {}
        self._daily_cache: tuple[tuple[int, int], KpiDocument, PeriodReturns] | None = None

    def add_slices(self, slices: Iterable[ClosedTrade]) -> None:
        """Fold closed slices in; each touched lot is re-collapsed and its totals swapped."""
        touched: set[str] = set()
        for piece in slices:
            self._slices.setdefault(piece.entry_lot_id, {})[piece.exit_order_id] = piece
            touched.add(piece.entry_lot_id)
        for lot_id in touched:
            old = self._lots.get(lot_id)
            if old is not None:
                self._totals.apply(old, -1)
            new = collapse_lot(list(self._slices[lot_id].values()))
            self._lots[lot_id] = new
            self._totals.apply(new, 1)

    def add_flows(self, flows: Iterable[CashFlow]) -> None:
        """Fold cash flows in (fees, dividends, interest); other categories are ignored."""
        for flow in flows:
            old = self._flows.get(flow.id)
            if old is not None:
                self._flow_totals.apply(old, -1)
            self._flows[flow.id] = flow
            self._flow_totals.apply(flow, 1)

    @property
    def flow_count(self) -> int:
        """Return how many cash flows were fed (to notice a deleted row: the table holds fewer)."""
        return len(self._flows)

    def keep_flows(self, ids: Container[str]) -> bool:
        """Drop the fed cash flows whose id is not in ``ids`` (deleted rows); return True if any was."""
        gone = [key for key in self._flows if key not in ids]
        for key in gone:
            self._flow_totals.apply(self._flows.pop(key), -1)
        return bool(gone)

    def add_daily(self, rows: Iterable[DailySummary]) -> None:
        """Fold daily equity rows in; the daily KPIs are recomputed once, when next rendered."""
        for row in rows:
            if self._daily.get(row.date) != row:
                self._daily[row.date] = row
                self._daily_cache = None

    def document(
        self,
        *,
        open_lots: Sequence[OpenLot],
        intraday_cumulative_return: Decimal | None,
        in_session: bool,
        as_of: datetime,
    ) -> KpiDocument:
        """Return the KPI document for the state fed so far plus the current open lots."""
        newest = self._daily[max(self._daily)] if self._daily else None
        if as_of.tzinfo is None:
            raise ValueError(f"as_of: expected a timezone-aware datetime, found naive {as_of}")
        month = _ny_month(as_of)
        if self._daily_cache is None or self._daily_cache[0] != month:
            ordered = [self._daily[d] for d in sorted(self._daily)]
            self._daily_cache = (month, daily_kpis(ordered, as_of), period_returns(ordered, as_of))
        return _render(
            self._totals,
            self._flow_totals,
            newest,
            self._daily_cache[1],
            self._daily_cache[2],
            open_lots,
            intraday_cumulative_return,
            in_session,
            as_of,
        )


# Daily-return KPIs.


def _ny_month(as_of: datetime) -> tuple[int, int]:
    local = as_of.astimezone(_NEW_YORK)
    return local.year, local.month


def _periods_under_water(rows: Sequence[DailySummary]) -> list[tuple[int, Decimal]]:
    """Return (calendar days, deepest drawdown) per drawdown period, first to last day under water."""
    periods: list[tuple[int, Decimal]] = []
    start: DailySummary | None = None
    last: DailySummary | None = None
    deepest = ZERO
    for row in rows:
        dd = -ONE if row.drawdown is None else row.drawdown  # equity ≤ 0: a total loss
        if dd < 0:
            if start is None:
                start, deepest = row, dd
            last, deepest = row, min(deepest, dd)
        elif start is not None and last is not None:
            periods.append(((last.date - start.date).days + 1, deepest))
            start = last = None
    if start is not None and last is not None:
        periods.append(((last.date - start.date).days + 1, deepest))
    return periods


def _longest_run(returns: Sequence[Decimal], wins: bool) -> int:
    best = run = 0
    for r in returns:
        run = run + 1 if (r > 0 if wins else r < 0) else 0
        best = max(best, run)
    return best


def _compound(returns: Iterable[Decimal]) -> Decimal:
    growth = ONE
    for r in returns:
        growth *= ONE + r
    return growth - ONE


def _pct(value: float | None) -> float | None:
    return None if value is None else _float4(100.0 * value)


def daily_kpis(rows: Sequence[DailySummary], as_of: datetime) -> KpiDocument:
    """Return ``Max Drawdown %`` and the daily-return KPIs of ``rows`` (oldest first)."""
    if not rows:
        return dict.fromkeys(_DAILY_KEYS)
    series = return_series(rows)
    by_date = {row.date: row for row in rows}
    dated = [(by_date[day], r) for day, r in zip(series.dates, series.returns, strict=True)]
    returns = list(series.returns)
    xs = _floats(returns)
    annualised = len(xs) >= MIN_ANNUALISED_SESSIONS
    wins = [r for r in returns if r > 0]
    losses = [r for r in returns if r < 0]
    pnl_wins = [row.deposit * r / (ONE + r) for row, r in dated if r > 0 and row.deposit is not None]
    pnl_losses = [row.deposit * r / (ONE + r) for row, r in dated if r < 0 and r != -ONE and row.deposit is not None]
    mean_win = math.fsum(_floats(wins)) / len(wins) if wins else None
    mean_loss = math.fsum(_floats(losses)) / len(losses) if losses else None
    periods = _periods_under_water(rows)
    worst = min((dd for _, dd in periods), default=ZERO)
    deepest_days = next((days for days, dd in periods if dd == worst), 0)
    compounded = period_returns(rows, as_of)
    held = [row for row in rows if row.market_value is not None]
    return {
        "Max Drawdown %": _number(HUNDRED * worst, 2),
        "CAGR %": _pct(cagr(xs)) if annualised else None,
        "Volatility (ann.) %": _pct(volatility(xs)) if annualised else None,
        "Sortino": _float4(sortino(xs)) if annualised else None,
        "Smart Sharpe": _float4(smart_sharpe(xs)) if annualised else None,
        "Calmar": _float4(calmar(xs)) if annualised else None,
        "Max Drawdown Duration (Days)": deepest_days,
        "Longest Drawdown (Days)": max((days for days, _ in periods), default=0),
        "Best Day %": _number(HUNDRED * max(returns), 2) if returns else None,
        "Worst Day %": _number(HUNDRED * min(returns), 2) if returns else None,
        "Win Days %": _number(
            _ratio(HUNDRED * len(wins), Decimal(len(wins) + len(losses)), len(wins) + len(losses)), 2
        ),
        "Max Consecutive Wins": _longest_run(returns, wins=True),
        "Max Consecutive Losses": _longest_run(returns, wins=False),
        "Avg Win ($)": _money(_ratio(sum(pnl_wins, ZERO), Decimal(len(pnl_wins)), len(pnl_wins))),
        "Avg Loss ($)": _money(_ratio(sum(pnl_losses, ZERO), Decimal(len(pnl_losses)), len(pnl_losses))),
        "Payoff Ratio": _float4(None if mean_win is None or not mean_loss else mean_win / abs(mean_loss)),
        "Exposure %": _number(
            _ratio(HUNDRED * sum(1 for row in held if row.market_value), Decimal(len(held)), len(held)), 2
        ),
        "MTD %": _percent(compounded.month),
        "YTD %": _percent(compounded.year),
    }


_DAILY_KEYS: Final = ("Max Drawdown %", *KPI_KEYS[KPI_KEYS.index("CAGR %") : KPI_KEYS.index("as_of")])


def document_changed(old: Mapping[str, KpiValue] | None, new: Mapping[str, KpiValue]) -> bool:
    """Return True when the documents differ in anything but ``as_of`` (None counts as changed)."""
    if old is None:
        return True
    compared = {key for key in (*old.keys(), *new.keys()) if key != "as_of"}
    return any(old.get(key) != new.get(key) for key in compared)


def encode_document(document: Mapping[str, KpiValue]) -> bytes:
    """Return the document as JSON; raise ``ValueError`` on a non-finite number (D50)."""
    for key, value in document.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key}: expected a finite number, found {value}")
    return msgspec.json.encode(dict(document))

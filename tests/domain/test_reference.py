"""Sharpe, smart Sharpe and max drawdown agree with quantstats on the same returns (1e-9 relative).

Conventions, checked here rather than assumed:
- Sharpe: both use mean / std(ddof=1) · √252 with a zero risk-free rate.
- Smart Sharpe: quantstats' ``autocorr_penalty`` is ``√(1 + 2·Σ_{k=1}^{n−1} (n−k)/n · |ρ₁|^k)``
  with ``ρ₁`` the Pearson correlation of consecutive returns (``np.corrcoef``); docs/spec.md's ``ρ_k`` is
  taken in that same AR(1) form, so the two agree exactly. (empyrical has no smart Sharpe.)
- Max drawdown: quantstats rebuilds prices from returns with a baseline of 1 before the first
  return, as our return index does, so a loss on day one is a drawdown in both.
The daily curve is checked end to end: its ``sharpe_W``/``smart_sharpe_W`` columns and its
minimum ``drawdown`` against quantstats over the curve's own ``daily_return`` column.

Issue 13: that check fed quantstats our own returns, so it could not catch a wrong anchor or a
wrong curve. ``test_kpis_from_our_ledger_match_both_libraries_on_the_brokers_history`` trades
a fake-broker account (the sim engine) over 40 sessions, takes the broker's own
``GET /v2/account/portfolio/history`` payload (1D), computes the returns from it independently
(pandas ``pct_change`` of ``equity``), and checks Sharpe, Sortino, volatility, CAGR, Calmar and
max drawdown of OUR curve (ledger replay anchored on the broker) against quantstats AND
empyrical(-reloaded) on those returns, to 1e-9. Conventions where the libraries differ:
- CAGR: both now annualise by trading periods, ``(Π(1+r))^(252/n) − 1`` (quantstats ≥ 0.0.86;
  older quantstats used calendar days / 365 from the index, which disagrees with empyrical's
  ``annual_return`` by the weekend ratio). We follow the trading-period form; Calmar follows.
- Max drawdown: empyrical's ``drawdown_series`` and quantstats ≥ 0.0.86 both start the index at
  a baseline before the first return (older quantstats missed a loss on day one). We follow it.
- Sortino: quantstats ``√(Σ_{r<0} r²/n)`` and empyrical ``√(mean(min(r,0)²))`` are the same
  downside deviation (target 0, all n days in the denominator); we follow it.
- Volatility and Sharpe: ``std(ddof=1)·√252`` in both. empyrical has no smart Sharpe.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import empyrical as ep
import pandas as pd
import pytest
import quantstats as qs

from coldharbour.domain.cashflows import CashFlow, Execution, Rejection, classify, to_cash_flow, to_execution
from coldharbour.domain.equity import DayInputs, Opening, bucket_by_session, build_daily_curve
from coldharbour.domain.metrics import (
    SHARPE_WINDOWS,
    cagr,
    calmar,
    max_drawdown,
    max_drawdown_float,
    sharpe,
    smart_sharpe,
    sortino,
    volatility,
)
from coldharbour.sim.calendar import load_calendar
from coldharbour.sim.history import portfolio_history
from tests.sim.builders import make_engine, order_body

RELATIVE = 1e-9


def series(returns: list[Decimal]) -> pd.Series:
    index = pd.bdate_range("2024-01-02", periods=len(returns))
    return pd.Series([float(r) for r in returns], index=index)


def synthetic_returns(seed: int, count: int, phi: float) -> list[Decimal]:
    """AR(1) daily returns (so the autocorrelation penalty is not trivially 1), 8 decimals."""
    rng = random.Random(seed)
    previous = 0.0
    returns = []
    for _ in range(count):
        previous = phi * previous + rng.gauss(0.0004, 0.012)
        returns.append(Decimal(f"{previous:.8f}"))
    return returns


CASES = [
    (seed, count, phi)
    for seed, (count, phi) in enumerate(
        [(10, 0.0), (21, 0.3), (63, -0.4), (126, 0.6), (252, 0.1), (400, 0.8), (30, -0.9)]
    )
]


@pytest.mark.parametrize(("seed", "count", "phi"), CASES)
def test_sharpe_matches_quantstats(seed: int, count: int, phi: float) -> None:
    returns = synthetic_returns(seed, count, phi)

    ours = sharpe(returns)

    assert ours == pytest.approx(float(qs.stats.sharpe(series(returns))), rel=RELATIVE)


@pytest.mark.parametrize(("seed", "count", "phi"), CASES)
def test_smart_sharpe_matches_quantstats(seed: int, count: int, phi: float) -> None:
    returns = synthetic_returns(seed, count, phi)

    ours = smart_sharpe(returns)

    assert ours == pytest.approx(float(qs.stats.smart_sharpe(series(returns))), rel=RELATIVE)


@pytest.mark.parametrize(("seed", "count", "phi"), CASES)
def test_max_drawdown_matches_quantstats(seed: int, count: int, phi: float) -> None:
    returns = synthetic_returns(seed, count, phi)

    ours = float(max_drawdown(returns))

    assert ours == pytest.approx(float(qs.stats.max_drawdown(series(returns))), rel=RELATIVE)


def test_first_day_loss_is_a_drawdown_in_both() -> None:
    returns = [Decimal("-0.05"), Decimal("0.01"), Decimal("0.02")]

    assert float(max_drawdown(returns)) == pytest.approx(float(qs.stats.max_drawdown(series(returns))), rel=RELATIVE)


def _ledger(days: int) -> list[DayInputs]:
    """A year of one symbol traded around a deposit, a withdrawal, dividends and fees."""
    rng = random.Random(7)
    price = Decimal(100)
    result = []
    for i in range(days):
        ts = datetime(2024, 1, 2, 15, tzinfo=UTC) + timedelta(days=i)
        flows: list[CashFlow] = []
        executions: list[Execution] = []
        if i == 0:
            flows.append(CashFlow(id="d0", ts=ts, amount=Decimal(50000), type="CSD", category=classify("CSD")))
        if i % 40 == 5:
            flows.append(CashFlow(id=f"w{i}", ts=ts, amount=Decimal(-3000), type="CSW", category=classify("CSW")))
        if i % 30 == 3:
            flows.append(CashFlow(id=f"v{i}", ts=ts, amount=Decimal("12.5"), type="DIV", category=classify("DIV")))
            flows.append(CashFlow(id=f"f{i}", ts=ts, amount=Decimal("-0.4"), type="FEE", category=classify("FEE")))
        if i % 7 == 0:
            qty = Decimal(rng.choice([-20, -10, 10, 20, 30]))
            executions.append(Execution(id=f"x{i}", ts=ts, symbol="SPY", qty=qty, price=price))
        price = (price * (1 + Decimal(f"{rng.gauss(0.0003, 0.01):.6f}"))).quantize(Decimal("0.01"))
        result.append(
            DayInputs(
                session_date=date(2024, 1, 2) + timedelta(days=i),
                flows=tuple(flows),
                executions=tuple(executions),
                closes={"SPY": price},
            )
        )
    return result


def test_daily_curve_columns_match_quantstats() -> None:
    rows = build_daily_curve(_ledger(300)).rows
    returns = [row.daily_return for row in rows if row.daily_return is not None]
    drawdowns = [row.drawdown for row in rows if row.drawdown is not None]
    assert len(returns) == len(drawdowns) == len(rows)  # every day has both
    last = rows[-1]
    ours = {
        10: (last.sharpe_10, last.smart_sharpe_10),
        21: (last.sharpe_21, last.smart_sharpe_21),
        63: (last.sharpe_63, last.smart_sharpe_63),
        126: (last.sharpe_126, last.smart_sharpe_126),
        252: (last.sharpe_252, last.smart_sharpe_252),
    }

    reference = {
        window: (
            float(qs.stats.sharpe(series(returns[-window:]))),
            float(qs.stats.smart_sharpe(series(returns[-window:]))),
        )
        for window in SHARPE_WINDOWS
    }

    for window in SHARPE_WINDOWS:
        assert ours[window][0] == pytest.approx(reference[window][0], rel=RELATIVE)
        assert ours[window][1] == pytest.approx(reference[window][1], rel=RELATIVE)
    assert float(min(drawdowns)) == pytest.approx(
        float(qs.stats.max_drawdown(series(returns))), rel=RELATIVE
    )



# Issue 13: our KPIs against both libraries on returns taken from the broker's own history.

SESSIONS = 40


def _trade_fake_account() -> tuple[dict[str, object], list[dict[str, object]], dict[date, dict[str, Decimal]]]:
    """Trade the fake's default $100,000 account over ``SESSIONS`` sessions; return the broker's
    1D portfolio-history payload, the account's activities and each session's closes."""
    engine = make_engine()
    rng = random.Random(13)
    prices = {"AAPL": Decimal(180), "MSFT": Decimal(400)}
    sessions = load_calendar().between(date(2024, 3, 4), date(2024, 6, 28))[:SESSIONS]
    closes: dict[date, dict[str, Decimal]] = {}
    for i, session in enumerate(sessions):
        for step in (timedelta(minutes=30), timedelta(hours=3), session.close - session.open - timedelta(seconds=30)):
            for symbol in prices:
                move = Decimal(f"{rng.gauss(0.0004, 0.015):.5f}")
                prices[symbol] = (prices[symbol] * (1 + move)).quantize(Decimal("0.01"))
            engine.set_prices(dict(prices), session.open + step)
            if step == timedelta(hours=3) and i % 3 == 0:
                symbol = rng.choice(list(prices))
                side = rng.choice(["buy", "buy", "sell"])
                engine.submit_order("demo", order_body(symbol=symbol, qty=rng.choice([5, 10, 20]), side=side),
                                    session.open + step)  # fmt: skip
            if step == timedelta(hours=3) and i % 9 == 4:
                engine.post_activity("demo", {"activity_type": "DIV", "net_amount": "7.35", "symbol": "AAPL"},
                                     session.open + step)  # fmt: skip
                engine.post_activity("demo", {"activity_type": "FEE", "net_amount": "-1.10"}, session.open + step)
        closes[session.day] = dict(prices)
    end = sessions[-1].close + timedelta(hours=1)
    params = {"timeframe": "1D", "start": "2024-03-01T00:00:00-05:00", "end": end.isoformat()}
    history = portfolio_history(engine.accounts["demo"], params, load_calendar(), end)
    return history, list(engine.accounts["demo"].activities), closes


def _our_returns(activities: list[dict[str, object]], closes: dict[date, dict[str, Decimal]], base: Decimal):
    flows = [f for f in map(to_cash_flow, activities) if not isinstance(f, Rejection)]
    executions = [e for e in map(to_execution, activities) if isinstance(e, Execution)]
    opening = Opening(as_of=date(2024, 3, 1), cash=base)  # the anchor: the broker's equity before day one
    days = bucket_by_session(sorted(closes), flows, executions, closes, after=opening.as_of)
    return build_daily_curve(days, opening).rows


def test_kpis_from_our_ledger_match_both_libraries_on_the_brokers_history() -> None:
    history, activities, closes = _trade_fake_account()
    stamps = pd.to_datetime(history["timestamp"], unit="s", utc=True)
    equity = pd.Series(history["equity"], index=stamps.tz_convert("America/New_York").date)
    broker = equity.pct_change().dropna()  # independent of our code: the broker's own figures
    broker.index = pd.DatetimeIndex(broker.index)
    assert len(broker) == SESSIONS
    rows = _our_returns(activities, closes, Decimal(str(equity.iloc[0])))
    ours = [float(r.daily_return) for r in rows if r.daily_return is not None]

    assert [r.date for r in rows] == [d.date() for d in broker.index]
    assert [float(r.deposit) for r in rows] == pytest.approx(list(equity.iloc[1:]), abs=0.005)  # to the cent
    assert any(abs(x) > 0.001 for x in ours)  # the account really traded
    expected = {
        "sharpe": (qs.stats.sharpe(broker), ep.sharpe_ratio(broker), sharpe(ours)),
        "sortino": (qs.stats.sortino(broker), ep.sortino_ratio(broker), sortino(ours)),
        "volatility": (qs.stats.volatility(broker), ep.annual_volatility(broker), volatility(ours)),
        "cagr": (qs.stats.cagr(broker), ep.cagr(broker), cagr(ours)),
        "calmar": (qs.stats.calmar(broker), ep.calmar_ratio(broker), calmar(ours)),
        "max drawdown": (qs.stats.max_drawdown(broker), ep.max_drawdown(broker), max_drawdown_float(ours)),
    }
    for name, (quantstats_value, empyrical_value, our_value) in expected.items():
        assert our_value == pytest.approx(float(quantstats_value), rel=RELATIVE), f"{name} vs quantstats"
        assert our_value == pytest.approx(float(empyrical_value), rel=RELATIVE), f"{name} vs empyrical"

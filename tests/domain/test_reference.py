"""Sharpe, smart Sharpe and max drawdown agree with quantstats on the same returns (1e-9 relative).

Conventions, checked here rather than assumed:
- Sharpe: both use mean / std(ddof=1) · √252 with a zero risk-free rate.
- Smart Sharpe: quantstats' ``autocorr_penalty`` is ``√(1 + 2·Σ_{k=1}^{n−1} (n−k)/n · |ρ₁|^k)``
  with ``ρ₁`` the Pearson correlation of consecutive returns (``np.corrcoef``); SPEC's ``ρ_k`` is
  taken in that same AR(1) form, so the two agree exactly. (empyrical has no smart Sharpe.)
- Max drawdown: quantstats rebuilds prices from returns with a baseline of 1 before the first
  return, as our return index does, so a loss on day one is a drawdown in both.
The daily curve is checked end to end: its ``sharpe_W``/``smart_sharpe_W`` columns and its
minimum ``drawdown`` against quantstats over the curve's own ``daily_return`` column.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
import quantstats as qs

from coldharbour.domain.cashflows import CashFlow, Execution, classify
from coldharbour.domain.equity import DayInputs, build_daily_curve
from coldharbour.domain.metrics import SHARPE_WINDOWS, max_drawdown, sharpe, smart_sharpe

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
    returns = [row.daily_return for row in rows]
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
    assert float(min(row.drawdown for row in rows)) == pytest.approx(
        float(qs.stats.max_drawdown(series(returns))), rel=RELATIVE
    )

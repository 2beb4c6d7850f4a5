"""The shape of a daily return series: quantiles, tails, moments, covariance (docs/report.md).

Each follows the library the report names for it: quantiles interpolate linearly (numpy's and
pandas' default); VaR is the historical ``cutoff`` quantile and CVaR the mean of the
⌊(n−1)·cutoff⌋+1 lowest returns (empyrical); skewness and kurtosis are the bias-corrected G1 and
excess G2 (pandas, as quantstats); the tail ratio is |95th| / |5th| percentile. Floats, as the
Sharpe family in ``metrics``: every result is finite or None.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

TAIL_CUTOFF: Final = 0.05


def finite(value: float | None) -> float | None:
    """Return ``value`` when it is a finite number, else None (never NaN or inf: docs/defects.md D50)."""
    return value if value is not None and math.isfinite(value) else None


def percentile(xs: Sequence[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) with linear interpolation (numpy's and pandas' default)."""
    ordered = sorted(xs)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def _moments(xs: Sequence[float]) -> tuple[float, float, float, float]:
    n = len(xs)
    mean = math.fsum(xs) / n
    d = [x - mean for x in xs]
    return mean, math.fsum(x * x for x in d), math.fsum(x**3 for x in d), math.fsum(x**4 for x in d)


def skewness(xs: Sequence[float]) -> float | None:
    """Return the bias-corrected sample skewness G1 (pandas ``Series.skew``); None below 3 or constant."""
    n = len(xs)
    if n < 3:
        return None
    _, m2, m3, _ = _moments(xs)
    if m2 == 0.0:
        return None
    g1 = (m3 / n) / (m2 / n) ** 1.5
    return finite(g1 * math.sqrt(n * (n - 1)) / (n - 2))


def excess_kurtosis(xs: Sequence[float]) -> float | None:
    """Return the bias-corrected excess kurtosis G2 (pandas ``Series.kurtosis``); None below 4 or constant."""
    n = len(xs)
    if n < 4:
        return None
    _, m2, _, m4 = _moments(xs)
    if m2 == 0.0:
        return None
    value = (n + 1) * n * (n - 1) / ((n - 2) * (n - 3)) * m4 / (m2 * m2) - 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))
    return finite(value)


def value_at_risk(xs: Sequence[float], cutoff: float = TAIL_CUTOFF) -> float:
    """Return the historical VaR: the ``cutoff`` percentile of the returns (empyrical)."""
    return percentile(xs, cutoff)


def conditional_value_at_risk(xs: Sequence[float], cutoff: float = TAIL_CUTOFF) -> float:
    """Return the expected shortfall: the mean of the ⌊(n−1)·cutoff⌋+1 lowest returns (empyrical)."""
    count = int((len(xs) - 1) * cutoff) + 1
    return math.fsum(sorted(xs)[:count]) / count


def tail_ratio(xs: Sequence[float]) -> float | None:
    """Return |95th percentile| / |5th percentile| (empyrical, quantstats); None when the 5th is 0."""
    low = percentile(xs, 0.05)
    return None if low == 0.0 else finite(abs(percentile(xs, 0.95)) / abs(low))


def covariance(a: Sequence[float], b: Sequence[float]) -> float:
    """Return the sample covariance (ddof 1) of two paired series of at least 2 values."""
    mean_a, mean_b = math.fsum(a) / len(a), math.fsum(b) / len(b)
    return math.fsum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True)) / (len(a) - 1)


def sample_std(xs: Sequence[float]) -> float:
    """Return the sample standard deviation (ddof 1) of at least 2 values."""
    return math.sqrt(covariance(xs, xs))

"""One account's report: its rows and trades from the database, the benchmark's bars from the broker.

``build_report`` reads the daily equity rows and the closed slices in one snapshot
(``db.queries.report_inputs``), the benchmark's daily closes from the broker's data API
(``BrokerReads.daily_closes``, the account's own keys), and computes the values with
``domain.report.compute_report``. Bars that cannot be read withhold the benchmark with the
reason; they never stop the report. Closes are cached per (origin, symbol, range) for
``BENCHMARK_TTL_S`` so a page refreshed by every push does not ask the broker each time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Final

from coldharbour.broker.reads import BrokerReads
from coldharbour.config import AccountSettings
from coldharbour.db import queries
from coldharbour.db.names import AccountNames
from coldharbour.domain.report import Report, compute_report
from coldharbour.errors import BrokerError

log = logging.getLogger(__name__)

BENCHMARK_LEAD: Final = timedelta(days=10)  # the close before the first session: a long weekend and more
BENCHMARK_TTL_S: Final = 60.0
BENCHMARK_DEADLINE_S: Final = 20.0

Closes = dict[date, Decimal]


class BenchmarkCloses:
    """The benchmark's daily closes, read from the broker and kept ``BENCHMARK_TTL_S``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: dict[tuple[str, str, date, date], tuple[float, Closes | None, str]] = {}

    async def read(self, account: AccountSettings, symbol: str, first: date, last: date) -> tuple[Closes | None, str]:
        """Return ``{date: close}`` from ``BENCHMARK_LEAD`` before ``first`` to ``last``, or None and why.

        A failure is kept as long as a success: a broker that is away is not asked again on every push.
        """
        key = (account.base_url, symbol, first, last)
        kept = self._kept.get(key)
        if kept is not None and self._clock() - kept[0] < BENCHMARK_TTL_S:
            return kept[1], kept[2]
        closes: Closes | None = None
        reason = ""
        try:
            async with BrokerReads(account, deadline_s=BENCHMARK_DEADLINE_S) as reads:
                bars = await reads.daily_closes([symbol], first - BENCHMARK_LEAD, last)
            closes = {day: by_symbol[symbol] for day, by_symbol in bars.items() if symbol in by_symbol}
        except BrokerError as e:
            log.warning("benchmark bars not read account=%s symbol=%s: %s", account.slug, symbol, e)
            reason = f"{symbol} bars could not be read: {e}"
        self._kept = {k: v for k, v in self._kept.items() if self._clock() - v[0] < BENCHMARK_TTL_S}
        self._kept[key] = (self._clock(), closes, reason)
        return closes, reason


async def build_report(
    conn: queries.Conn, names: AccountNames, account: AccountSettings, symbol: str, benchmark: BenchmarkCloses
) -> Report:
    """Return the report of one account (read-only connection ``conn``)."""
    rows, slices = await queries.report_inputs(conn, names)
    closes: Closes | None = None
    reason = "no returns yet"
    if rows:
        closes, reason = await benchmark.read(account, symbol, rows[0].date, rows[-1].date)
    # Off the event loop: years of sessions take a few hundred milliseconds (the rolling windows).
    report = await asyncio.to_thread(
        compute_report, rows, slices, benchmark_symbol=symbol, benchmark_closes=closes
    )
    if closes is None and "benchmark" in report.withheld:
        report.withheld["benchmark"] = reason
    return report

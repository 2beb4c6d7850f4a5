"""The broker reads the analytics workers need: activities, calendar, daily bars, daily equity.

A thin adapter over ``coldharbour.broker.rest.BrokerRest`` (its deadline per call, retries
with jittered backoff on 429/5xx, one ``BrokerError`` naming the call, credentials never in a
message), adding the routes it has no helper for: every activity type paged with
``page_token`` = the last id (alpaca-py has no activities call), the calendar (NY wall-clock
``HH:MM``), and raw daily bars from the data API (``data.alpaca.markets`` for Alpaca hosts,
the same origin for the fake broker, which serves ``/v2/stocks/bars`` too), and the broker's
own daily equity from ``GET /v2/account/portfolio/history`` (``timeframe=1D``): the equity
anchor and the daily proof (docs/spec.md §8).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import msgspec

from coldharbour.broker.budget import RestBudget
from coldharbour.broker.rest import ACTIVITIES_PAGE_SIZE, CALL_DEADLINE_S, BrokerRest
from coldharbour.config import AccountSettings
from coldharbour.domain.money import InvalidMoney, to_decimal
from coldharbour.domain.schedule import NEW_YORK
from coldharbour.errors import BrokerError

log = logging.getLogger(__name__)

BARS_PAGE_LIMIT: Final = 10_000
MAX_PAGES: Final = 10_000  # a guard against a server that never ends its paging
ALPACA_DATA_URL: Final = "https://data.alpaca.markets"


def data_url(base_url: str) -> str:
    """Return the data API origin for a trading ``base_url`` (same origin unless Alpaca's)."""
    host = urlsplit(base_url).hostname or ""
    return ALPACA_DATA_URL if host.endswith("alpaca.markets") else base_url.rstrip("/")


class BrokerReads:
    """Read-only REST calls for one account; ``close()`` it (or use ``async with``)."""

    def __init__(
        self,
        account: AccountSettings,
        counters: Counter[str] | None = None,
        *,
        deadline_s: float | None = None,
        budget: RestBudget | None = None,
    ) -> None:
        self.account = account.slug
        self._settings = account
        self._counters: Counter[str] = counters if counters is not None else Counter()
        self._deadline_s = CALL_DEADLINE_S if deadline_s is None else deadline_s
        self._budget = budget  # the key's trading budget (docs/broker-budget.md); the data host has its own
        self._session: aiohttp.ClientSession | None = None
        self._trading: BrokerRest | None = None
        self._data: BrokerRest | None = None

    async def __aenter__(self) -> BrokerReads:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _clients(self) -> tuple[BrokerRest, BrokerRest]:
        if self._session is None or self._trading is None or self._data is None:
            self._session = aiohttp.ClientSession()
            data_account = msgspec.structs.replace(self._settings, base_url=data_url(self._settings.base_url))
            self._trading = BrokerRest(
                self._settings, self._session, self._counters, deadline_s=self._deadline_s, budget=self._budget
            )
            self._data = BrokerRest(data_account, self._session, self._counters, deadline_s=self._deadline_s)
        return self._trading, self._data

    async def activities(self, after: datetime | None) -> list[dict[str, object]]:
        """Return every activity after ``after`` (all when None), oldest first, all pages."""
        trading, _ = self._clients()
        params = {"direction": "asc", "page_size": str(ACTIVITIES_PAGE_SIZE)}
        if after is not None:
            params["after"] = after.astimezone(UTC).isoformat().replace("+00:00", "Z")
        result: list[dict[str, object]] = []
        for _ in range(MAX_PAGES):
            page = await trading.get_list("/account/activities", params)
            if not all(isinstance(item, dict) for item in page):
                raise BrokerError(f"GET /v2/account/activities account={self.account}: expected a list of objects")
            result.extend(page)
            if len(page) < ACTIVITIES_PAGE_SIZE:
                return result
            params["page_token"] = str(page[-1].get("id"))
        raise BrokerError(f"GET /v2/account/activities account={self.account}: more than {MAX_PAGES} pages")

    async def calendar(self, start: date, end: date) -> list[dict[str, object]]:
        """Return the broker calendar rows from ``start`` to ``end`` inclusive."""
        trading, _ = self._clients()
        body = await trading.get_list("/calendar", {"start": start.isoformat(), "end": end.isoformat()})
        if not all(isinstance(item, dict) for item in body):
            raise BrokerError(f"GET /v2/calendar account={self.account}: expected a list of objects")
        return body

    async def daily_closes(self, symbols: Sequence[str], start: date, end: date) -> dict[date, dict[str, Decimal]]:
        """Return ``{NY date: {symbol: close}}`` from raw daily bars between two dates (all pages)."""
        if not symbols:
            return {}
        _, data = self._clients()
        return await read_daily_closes(data, symbols, start, end, self._counters, account=self.account)

    async def daily_equity(self, start: date, end: date) -> dict[date, Decimal]:
        """Return the broker's end-of-day equity ``{session date: equity}`` from ``start`` to ``end``."""
        trading, _ = self._clients()
        params = {
            "timeframe": "1D",
            "start": datetime.combine(start, time(0), tzinfo=NEW_YORK).isoformat(),
            "end": datetime.combine(end + timedelta(days=1), time(0), tzinfo=NEW_YORK).isoformat(),
        }
        body = await trading.get("/account/portfolio/history", params)
        if not isinstance(body, dict):
            raise BrokerError(f"GET /v2/account/portfolio/history account={self.account}: expected an object")
        points = parse_daily_equity(body, self._counters)
        return {day: value for day, value in points.items() if start <= day <= end}

    async def last_equity(self) -> Decimal | None:
        """Return ``GET /v2/account``'s ``last_equity`` (the equity at the previous session's
        close), None when the broker gives none or an unreadable one."""
        trading, _ = self._clients()
        body = await trading.account()
        if not isinstance(body, dict):
            raise BrokerError(f"GET /v2/account account={self.account}: expected an object")
        equity = parse_last_equity(body)
        if equity is None and body.get("last_equity") is not None:
            self._counters["rejects"] += 1
            self._counters["rejects_account_last_equity"] += 1
            log.warning("rejected broker account account=%s: last_equity %.40r unusable", self.account,
                        body.get("last_equity"))  # fmt: skip
        return equity


def _exact(value: object, field: str) -> Decimal | None:
    """Return a figure exactly as the broker sent it (``money.to_decimal``: finite, within
    ``MAX_ABS``, never rounded), None when it is absent or refused (NaN, 1e999999, 26 decimals)."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return to_decimal(value, field=field)
    except InvalidMoney:
        return None


def parse_last_equity(body: dict[str, object]) -> Decimal | None:
    """Return an account object's ``last_equity`` (a decimal string), None if absent or unreadable."""
    return _exact(body.get("last_equity"), "last_equity")


def parse_daily_equity(body: dict[str, object], counters: Counter[str] | None = None) -> dict[date, Decimal]:
    """Return ``{date: equity}`` from a 1D portfolio-history object; null or bad points are skipped.

    A daily stamp is New York midnight of the session (the fake, and Alpaca's documented 1D
    points) or UTC midnight of it (some Alpaca answers): its UTC date is the session date either
    way.
    """
    stamps = body.get("timestamp")
    values = body.get("equity")
    if not isinstance(stamps, list) or not isinstance(values, list) or len(stamps) != len(values):
        raise BrokerError("GET /v2/account/portfolio/history: expected equal 'timestamp' and 'equity' lists")
    result: dict[date, Decimal] = {}
    for stamp, value in zip(stamps, values, strict=True):
        if value is None:
            continue  # no point that day (documented)
        equity = _exact(value, "equity")
        try:
            day = datetime.fromtimestamp(stamp, UTC).date() if isinstance(stamp, int | float) else None
        except (OverflowError, OSError, ValueError):  # 1e30, NaN: no instant
            day = None
        if equity is None or day is None or isinstance(stamp, bool):
            if counters is not None:
                counters["rejects"] += 1
                counters["rejects_history_point"] += 1
            log.warning("rejected portfolio history point stamp=%.40r equity=%.40r", stamp, value)
            continue
        result[day] = equity
    return result


async def read_daily_closes(
    data: BrokerRest,
    symbols: Sequence[str],
    start: date,
    end: date,
    counters: Counter[str] | None = None,
    *,
    account: str,
) -> dict[date, dict[str, Decimal]]:
    """Return ``{NY date: {symbol: close}}`` from raw daily bars (``GET /v2/stocks/bars``,
    ``timeframe=1Day``, ``adjustment=raw``: alpaca-py's ``get_stock_bars``) read through ``data``,
    a client of the data host (``data_url``), between two dates inclusive, all pages.

    The report's benchmark and the equity program read through ``BrokerReads.daily_closes``;
    ``snapshot`` reads a spin-off's ex-date closes through its own data-host client.
    """
    if not symbols:
        return {}
    params = {
        "symbols": ",".join(sorted(set(symbols))),
        "timeframe": "1Day",
        "adjustment": "raw",
        "start": datetime.combine(start, time(0), tzinfo=NEW_YORK).isoformat(),
        "end": datetime.combine(end, time(23, 59), tzinfo=NEW_YORK).isoformat(),
        "limit": str(BARS_PAGE_LIMIT),
    }
    closes: dict[date, dict[str, Decimal]] = {}
    for _ in range(MAX_PAGES):
        body = await data.get("/stocks/bars", params)
        if not isinstance(body, dict):
            raise BrokerError(f"GET /v2/stocks/bars account={account}: expected an object")
        _merge_bars(body.get("bars") or {}, closes, counters)
        token = body.get("next_page_token")
        if not token:
            return closes
        params["page_token"] = str(token)
    raise BrokerError(f"GET /v2/stocks/bars account={account}: more than {MAX_PAGES} pages")


def _merge_bars(bars: object, closes: dict[date, dict[str, Decimal]], counters: Counter[str] | None = None) -> None:
    """Fold a data-API ``bars`` object into ``closes``; malformed bars are skipped and logged."""
    if not isinstance(bars, dict):
        raise BrokerError("GET /v2/stocks/bars: 'bars' is not an object")
    for symbol, series in bars.items():
        for bar in series if isinstance(series, list) else []:
            try:
                moment = datetime.fromisoformat(str(bar["t"]).replace("Z", "+00:00"))
                close = to_decimal(bar["c"], field="c")
            except (KeyError, TypeError, ValueError):  # InvalidMoney too: 1e999999 is no close
                moment, close = None, None
            if moment is not None and close is not None and close > 0 and moment.tzinfo is not None:
                closes.setdefault(moment.astimezone(NEW_YORK).date(), {})[str(symbol)] = close
                continue
            if counters is not None:
                counters["rejects"] += 1
                counters["rejects_bar"] += 1
            log.warning("rejected daily bar symbol=%.40s bar=%.120r", symbol, bar)

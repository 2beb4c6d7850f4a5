"""Market-data bars for ``GET /v2/stocks/bars``: prices the broker has seen plus a seeded history.

Every price posted to the broker lands on a per-minute OHLC tape; intraday bars aggregate it.
Daily bars before a symbol's first seen price come from a deterministic random walk keyed on
(seed, symbol, date) that ends exactly at the first seen price, so daily closes exist for any
past range and never change between runs with the same seed. A symbol never seen walks from a
seeded starting price. Data-API numbers are JSON numbers (unlike the trading API).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Final

from coldharbour.sim.accounts import NEW_YORK
from coldharbour.sim.wire import CODE_INVALID_FIELD, timestamp_text, unprocessable

# Unseen symbols are anchored here; the walk runs forwards and backwards from it.
HISTORY_ANCHOR: Final = date(2020, 1, 2)
DAILY_VOLATILITY: Final = 0.015
CENT: Final = Decimal("0.01")


@dataclass
class Bar:
    """One OHLC bar; ``start`` is the bucket start (New York midnight for daily bars)."""

    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    trades: int

    def add(self, price: Decimal, volume: int = 1) -> None:
        """Extend the bar with one more trade."""
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += volume
        self.trades += 1


def bar_to_json(bar: Bar) -> dict[str, object]:
    """Return a bar in the data API's shape (numbers, not strings)."""
    return {
        "t": timestamp_text(bar.start),
        "o": float(bar.open),
        "h": float(bar.high),
        "l": float(bar.low),
        "c": float(bar.close),
        "v": bar.volume,
        "n": bar.trades,
        "vw": float((bar.high + bar.low + bar.close) / 3),
    }


def parse_timeframe(text: str) -> timedelta:
    """Return the bucket length of an Alpaca timeframe (``1Min``, ``15Min``, ``1Hour``, ``1Day``)."""
    units = {
        "Min": timedelta(minutes=1),
        "T": timedelta(minutes=1),
        "Hour": timedelta(hours=1),
        "H": timedelta(hours=1),
        "Day": timedelta(days=1),
        "D": timedelta(days=1),
    }
    for suffix, unit in units.items():
        count = text[: -len(suffix)]
        if text.endswith(suffix) and count.isdigit() and int(count) > 0:
            if unit == timedelta(days=1) and int(count) != 1:
                break
            return unit * int(count)
    raise unprocessable(f"invalid timeframe: {text!r}", CODE_INVALID_FIELD)


def _unit(seed: int, symbol: str, label: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{symbol}:{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _daily_return(seed: int, symbol: str, day: date) -> float:
    # Sum of four uniforms: close enough to a normal draw, cheap and keyed on the date.
    total = sum(_unit(seed, symbol, f"{day}:{i}") for i in range(4)) - 2.0
    return total * DAILY_VOLATILITY * math.sqrt(3.0)


def _weekdays(first: date, last: date) -> list[date]:
    days = []
    day = first
    while day <= last:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


class PriceTape:
    """Every price seen, per symbol and minute, plus the seeded daily history."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.minutes: dict[str, dict[datetime, Bar]] = {}
        self.first_seen: dict[str, tuple[date, Decimal]] = {}

    def record(self, symbol: str, price: Decimal, now: datetime) -> None:
        """Add one observed price at ``now``."""
        minute = now.astimezone(UTC).replace(second=0, microsecond=0)
        self.first_seen.setdefault(symbol, (now.astimezone(NEW_YORK).date(), price))
        bars = self.minutes.setdefault(symbol, {})
        bar = bars.get(minute)
        if bar is None:
            bars[minute] = Bar(minute, price, price, price, price, 1, 1)
        else:
            bar.add(price)

    def _anchor(self, symbol: str) -> tuple[date, Decimal]:
        if symbol in self.first_seen:
            return self.first_seen[symbol]
        price = Decimal(20 + int(_unit(self.seed, symbol, "start") * 380))
        return HISTORY_ANCHOR, price

    def _synthetic_closes(self, symbol: str, first: date, last: date) -> dict[date, Decimal]:
        anchor_day, anchor_price = self._anchor(symbol)
        closes: dict[date, Decimal] = {anchor_day: anchor_price}
        # Walk backwards from the anchor for earlier days, forwards for later ones.
        log_price = 0.0
        for day in reversed(_weekdays(first, anchor_day - timedelta(days=1))):
            log_price -= _daily_return(self.seed, symbol, day + timedelta(days=1))
            closes[day] = anchor_price * Decimal(math.exp(log_price))
        log_price = 0.0
        for day in _weekdays(anchor_day + timedelta(days=1), last):
            log_price += _daily_return(self.seed, symbol, day)
            closes[day] = anchor_price * Decimal(math.exp(log_price))
        return {day: close.quantize(CENT) for day, close in closes.items() if day >= first}

    def _synthetic_bar(self, symbol: str, day: date, close: Decimal) -> Bar:
        previous = close * Decimal(math.exp(-_daily_return(self.seed, symbol, day)))
        opening = previous.quantize(CENT)
        spread = Decimal(_unit(self.seed, symbol, f"{day}:range") * 0.01 + 0.001)
        high = (max(opening, close) * (1 + spread)).quantize(CENT)
        low = (min(opening, close) * (1 - spread)).quantize(CENT)
        volume = 100_000 + int(_unit(self.seed, symbol, f"{day}:volume") * 5_000_000)
        start = datetime.combine(day, time(0), tzinfo=NEW_YORK).astimezone(UTC)
        return Bar(start, opening, high, low, close, volume, volume // 100)

    def _aggregate(self, symbol: str, start: datetime, end: datetime, size: timedelta) -> list[Bar]:
        buckets: dict[datetime, Bar] = {}
        for minute, bar in sorted(self.minutes.get(symbol, {}).items()):
            if not start <= minute <= end:
                continue
            if size >= timedelta(days=1):
                day = minute.astimezone(NEW_YORK).date()
                key = datetime.combine(day, time(0), tzinfo=NEW_YORK).astimezone(UTC)
            else:
                epoch = datetime(2000, 1, 1, tzinfo=UTC)
                key = epoch + ((minute - epoch) // size) * size
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = Bar(key, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades)
            else:
                bucket.high = max(bucket.high, bar.high)
                bucket.low = min(bucket.low, bar.low)
                bucket.close = bar.close
                bucket.volume += bar.volume
                bucket.trades += bar.trades
        return list(buckets.values())

    def bars(self, symbol: str, size: timedelta, start: datetime, end: datetime, sessions: Sequence[date]) -> list[Bar]:
        """Return ``symbol``'s bars of length ``size`` from ``start`` to ``end``, oldest first.

        ``sessions`` are the trading days in the range; daily history is only made for them.
        """
        seen = self._aggregate(symbol, start, end, size)
        if size < timedelta(days=1) or not sessions:
            return seen
        first_seen = self.first_seen.get(symbol, (date.max, Decimal(0)))[0]
        wanted = [day for day in sessions if day < first_seen]
        if not wanted:
            return seen
        closes = self._synthetic_closes(symbol, wanted[0], wanted[-1])
        history = [self._synthetic_bar(symbol, day, closes[day]) for day in wanted]
        return [bar for bar in history if start <= bar.start <= end] + seen

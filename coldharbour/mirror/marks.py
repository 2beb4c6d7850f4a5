"""Last prices and 1-minute bars from feed ticks (shared by every account).

Ticks change memory only (no database I/O per tick, docs/defects.md D34): the mark of a symbol and the bar of
its current minute. ``flush_plan`` writes every dirty price and bar in one statement each;
the dirty flags are cleared by the plan's swap, so a failed flush is retried by the next one.
An older print arriving late never replaces a newer mark, but still counts in its minute's bar.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from coldharbour.domain.changes import LatestPrices, PriceBars
from coldharbour.domain.money import InvalidMoney, to_decimal
from coldharbour.messages import Tick, TickBatch
from coldharbour.mirror.plan import MarksFlushed, Plan

NS_PER_MINUTE: Final = 60_000_000_000
LAG_BOUNDS_MS: Final = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000)
LAG_OVER: Final = "tick_lag_over"
IDLE_TTL_NS: Final = 15 * NS_PER_MINUTE  # a feed symbol no account holds is forgotten after this idle time


@dataclass
class Bar:
    """One symbol's 1-minute bar being built."""

    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_ts: int


class Marks:
    """Last price per symbol and the open 1-minute bars."""

    def __init__(self, prices: dict[str, tuple[Decimal, int]] | None = None) -> None:
        self.prices: dict[str, tuple[Decimal, int]] = dict(prices or {})
        self.dirty: set[str] = set()
        self.bars: dict[tuple[str, int], Bar] = {}
        self.dirty_bars: set[tuple[str, int]] = set()
        self.rejected = 0

    def price(self, symbol: str) -> Decimal | None:
        """Return the last price of ``symbol``, or None before any tick."""
        found = self.prices.get(symbol)
        return None if found is None else found[0]

    def apply(self, tick: Tick) -> bool:
        """Apply one tick; return True when the symbol's mark changed."""
        return self.apply_print(tick.symbol, tick.price, tick.size, tick.ts_event or tick.ts)

    def apply_batch(self, batch: TickBatch) -> set[str]:
        """Apply every print of ``batch`` in order; return the symbols whose mark changed."""
        changed: set[str] = set()
        apply, fallback = self.apply_print, batch.ts
        for symbol, price, size, ts in zip(batch.symbols, batch.prices, batch.sizes, batch.ts_events, strict=True):
            if apply(symbol, price, size, ts or fallback):
                changed.add(symbol)
        return changed

    def apply_print(self, symbol: str, price_f: float, size_f: float, ts: int) -> bool:
        """Apply one trade print; return True when the symbol's mark changed."""
        try:
            price = to_decimal(price_f, field="price")
            volume = to_decimal(size_f, field="size")
        except InvalidMoney:
            self.rejected += 1
            return False
        self._add_to_bar(symbol, ts, price, volume)
        current = self.prices.get(symbol)
        if current is not None and current[1] > ts:
            return False
        self.prices[symbol] = (price, ts)
        self.dirty.add(symbol)
        return current is None or current[0] != price

    def apply_snapshot(self, symbol: str, price: Decimal, ts: int) -> bool:
        """Take the broker's ``current_price`` as the mark when it is newer than the last tick.

        Returns True when the mark changed. A snapshot price is no trade print: no bar.
        """
        current = self.prices.get(symbol)
        if price <= 0 or (current is not None and current[1] >= ts):
            return False
        self.prices[symbol] = (price, ts)
        self.dirty.add(symbol)
        return current is None or current[0] != price

    def restore(self, symbol: str, price: Decimal, ts: int) -> None:
        """Take a mark committed in a stored row at start-up, unless a newer price is known."""
        current = self.prices.get(symbol)
        if price > 0 and (current is None or current[1] < ts):
            self.prices[symbol] = (price, ts)

    def prune(self, held: set[str], now: int) -> int:
        """Forget the prices and bars of symbols not in ``held`` idle for ``IDLE_TTL_NS``; return how many."""
        stale = [s for s, (_, ts) in self.prices.items()
                 if s not in held and s not in self.dirty and now - ts >= IDLE_TTL_NS]
        for symbol in stale:
            del self.prices[symbol]
        gone = set(stale)
        for key in [k for k in self.bars if k[0] in gone and k not in self.dirty_bars]:
            del self.bars[key]
        return len(stale)

    def _add_to_bar(self, symbol: str, ts: int, price: Decimal, volume: Decimal) -> None:
        key = (symbol, ts - ts % NS_PER_MINUTE)
        bar = self.bars.get(key)
        if bar is None:
            self.bars[key] = Bar(price, price, price, price, volume, ts)
        else:
            bar.high, bar.low, bar.volume = max(bar.high, price), min(bar.low, price), bar.volume + volume
            if ts >= bar.close_ts:
                bar.close, bar.close_ts = price, ts
        self.dirty_bars.add(key)

    def flush_plan(self) -> Plan:
        """Return the plan writing dirty prices and bars (empty when nothing is dirty)."""
        plan = Plan()
        symbols, bar_keys = sorted(self.dirty), sorted(self.dirty_bars)
        if symbols:
            plan.changes.append(LatestPrices(tuple((s, *self.prices[s]) for s in symbols)))
        if bar_keys:
            plan.changes.append(PriceBars(tuple((s, m, b.open, b.high, b.low, b.close, b.volume)
                                                for (s, m) in bar_keys for b in (self.bars[(s, m)],))))
        if symbols or bar_keys:
            plan.marks_flushed = MarksFlushed(frozenset(symbols), frozenset(bar_keys))
        return plan

    def flushed(self, done: MarksFlushed) -> None:
        """Mark the prices and bars a committed flush wrote clean; forget complete bars."""
        self.dirty -= done.symbols
        self.dirty_bars -= done.bars
        # Keep only each symbol's newest minute in memory: older bars are complete and stored.
        newest: dict[str, int] = {}
        for symbol, minute in self.bars:
            newest[symbol] = max(minute, newest.get(symbol, minute))
        for key in [k for k in self.bars if k[1] < newest[k[0]] and k not in self.dirty_bars]:
            del self.bars[key]


class TickLag:
    """Feed → mark latency of ticks, as a histogram in ``counters`` (the heartbeat carries it).

    Buckets ``tick_lag_le_<ms>ms`` (``LAG_BOUNDS_MS``) and ``tick_lag_over``. A tick message
    counts all its ticks at the age of its oldest feed time (an upper bound), taken when every
    plan of the batch that carried it has been swapped in (``observe``). Ticks without a feed
    time are not counted. ``scripts/bench`` (``tick_to_mark``) reads p50/p99 from it.
    """

    def __init__(self, counters: Counter[str]) -> None:
        self._counters = counters
        self._keys = [(bound, f"tick_lag_le_{bound}ms") for bound in LAG_BOUNDS_MS]
        self._pending: list[tuple[int, int]] = []

    def pending(self, oldest_ns: int, count: int) -> None:
        """Remember ``count`` ticks whose oldest feed time is ``oldest_ns`` (0 = unknown)."""
        if oldest_ns > 0:
            self._pending.append((oldest_ns, count))

    def observe(self, now_ns: int) -> None:
        """Count every pending tick at its age at ``now_ns`` (their marks are applied)."""
        for oldest_ns, count in self._pending:
            lag_ms = (now_ns - oldest_ns) / 1e6
            key = next((key for bound, key in self._keys if lag_ms <= bound), LAG_OVER)
            self._counters[key] += count
        self._pending.clear()

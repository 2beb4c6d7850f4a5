"""Prices from Alpaca's market-data REST: the latest trade of every symbol in play, polled.

The default price source (``PRICE_SOURCE=alpaca``, docs/broker-budget.md): it never takes the
key's one market-data WebSocket connection, which the trader's bot may need. Every
``PRICE_POLL_S`` one multi-symbol snapshot request per asset class reads the latest trades, as
alpaca-py's ``StockHistoricalDataClient.get_stock_snapshot`` asks for them
(``GET <data host>/v2/stocks/snapshots?symbols=A,B&feed=iex``; crypto:
``GET /v1beta3/crypto/us/snapshots?symbols=BTC/USD``), within the key's market-data budget
(``broker.budget``, kind ``data``). A ``latestTrade`` not seen before goes through the same
validation as a streamed trade (``broker.feed.decode_trade``) and becomes a ``Tick``; one seen
already is skipped. A failed poll is counted (``price_poll_failures``) and logged once per
change of error; the next poll tries again.

With ``PRICE_SOURCE=alpaca-stream``, the same class is the stream's fallback: it polls only the
symbols of a stream refused with 406 (``MarketDataStream.limited``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Final

from coldharbour.broker.feed import Skip, decode_trade
from coldharbour.broker.market_stream import TickSink, is_crypto
from coldharbour.broker.rest import BrokerRest
from coldharbour.errors import BrokerError
from coldharbour.messages import Tick
from coldharbour.retry import sleep_or_stop

log = logging.getLogger(__name__)

SYMBOLS_PER_REQUEST: Final = 200  # keeps the URL short; more symbols take more requests
SHOWN_SYMBOLS: Final = 5


class SnapshotPrices:
    """Polls the latest trades of ``wanted()`` symbols (see the module docstring)."""

    def __init__(
        self,
        stock: BrokerRest,
        crypto: BrokerRest,
        *,
        feed: str,
        poll_s: float,
        on_ticks: TickSink,
        counters: Counter[str],
        details: dict[str, str] | None = None,
        exclude: Collection[str] = (),
        wanted: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self._stock = stock
        self._crypto = crypto
        self._feed = feed
        self._poll_s = poll_s
        self._on_ticks = on_ticks
        self.counters = counters
        self._details = details
        self._exclude = frozenset(exclude)
        self._followed: frozenset[str] = frozenset()
        self._wanted = wanted if wanted is not None else (lambda: self._followed)
        self._seen: dict[str, tuple[object, object]] = {}  # symbol -> (t, i) of the last trade relayed
        self._failing = ""
        if details is not None:
            details["price_source"] = "alpaca"
            details["subscribed"] = ""

    def follow(self, symbols: Iterable[str]) -> None:
        """Poll ``symbols`` from now on."""
        self._followed = frozenset(symbols)
        self.show()

    def show(self) -> None:
        """Refresh the heartbeat's gauges: the symbols polled (a fallback counts them apart)."""
        polled = sorted(self._wanted())
        if self._details is None:
            self.counters["data_rest_fallback_symbols"] = len(polled)
            return
        self.counters["data_stream_subscribed"] = len(polled)
        self.counters["data_stream_unpriced"] = 0
        self._details["subscribed"] = ",".join(polled[:SHOWN_SYMBOLS])

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``."""
        while not stop.is_set():
            symbols = self._wanted()
            if self._details is None:
                self.show()
            if symbols:
                await self.poll(symbols)
            if await sleep_or_stop(stop, self._poll_s):
                return

    async def poll(self, symbols: Collection[str]) -> list[Tick]:
        """Read the latest trades of ``symbols`` once; relay the new ones; return them."""
        stock = sorted(s for s in symbols if not is_crypto(s))
        crypto = sorted(s for s in symbols if is_crypto(s))
        ticks: list[Tick] = []
        try:
            for chunk in _chunks(stock):
                body = await self._stock.get("/stocks/snapshots", {"symbols": ",".join(chunk), "feed": self._feed})
                ticks += self._ticks(body)
            for chunk in _chunks(crypto):
                body = await self._crypto.get("/crypto/us/snapshots", {"symbols": ",".join(chunk)})
                ticks += self._ticks(body.get("snapshots") if isinstance(body, Mapping) else None)
        except BrokerError as e:
            self.counters["price_poll_failures"] += 1
            if str(e) != self._failing:
                log.warning("price poll failed error=%s", e)
            self._failing = str(e)
        else:
            if self._failing:
                log.info("price poll works again")
            self._failing = ""
        self.counters["price_polls"] += 1
        if ticks:
            self._on_ticks(ticks)
        return ticks

    def _ticks(self, body: object) -> list[Tick]:
        if not isinstance(body, Mapping):
            self._reject("shape")
            return []
        ticks: list[Tick] = []
        now_ns = time.time_ns()
        for symbol, snapshot in body.items():
            trade = snapshot.get("latestTrade") if isinstance(snapshot, Mapping) else None
            if not isinstance(trade, Mapping):
                continue  # no print of this symbol yet: nothing to relay
            identity = (trade.get("t"), trade.get("i"))
            if self._seen.get(str(symbol)) == identity:
                continue
            result = decode_trade({**trade, "S": symbol}, self._exclude, now_ns)
            if isinstance(result, Skip):
                if result.is_reject:
                    self._reject(result.reason)
                else:
                    self.counters[f"skipped_data_rest_{result.reason}"] += 1
                continue
            self._seen[str(symbol)] = identity
            ticks.append(result)
        return ticks

    def _reject(self, reason: str) -> None:
        self.counters["rejects"] += 1
        self.counters[f"rejects_data_rest_{reason}"] += 1


def _chunks(symbols: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(symbols), SYMBOLS_PER_REQUEST):
        yield symbols[start : start + SYMBOLS_PER_REQUEST]

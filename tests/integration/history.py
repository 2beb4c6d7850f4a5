"""A fake account's trading history, written straight into the fake broker's matching engine.

``History(engine).build(orders=N)`` replays round trips in the past (one command per second of
simulated time, from ``start``), cycling through five kinds, until the engine holds at least
``N`` orders (legs and replacements count, as at Alpaca), then opens three brackets that stay
open. The engine is the same one the broker serves, so REST paging, nested legs and FILL
activities are exactly what ``snapshot`` would see at Alpaca:

- ``tp``: a long bracket whose take-profit fills (3 orders);
- ``sl2``: a long bracket whose stop is replaced twice, then the grandchild stop fills (5);
- ``partial``: a market buy and a market sell, each filled in three executions (2);
- ``partial_bracket``: a long bracket whose entry and take-profit fill in three executions (3);
- ``short``: a short bracket whose take-profit fills (3).

``expected`` records, per closed lot, the exit order and its type, for the test's assertions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from coldharbour.sim.engine import Engine

SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")
ACCOUNT = "demo"
KINDS = ("tp", "sl2", "partial", "partial_bracket", "short")


@dataclass
class History:
    """Writes round trips into ``engine`` at simulated times from ``start``."""

    engine: Engine
    start: datetime
    now: datetime = field(init=False)
    # (entry lot id, exit order id) -> exit type, for every slice the history closes
    expected: dict[tuple[str, str], str] = field(default_factory=dict)
    open_entries: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.now = self.start

    def _step(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def _price(self, symbol: str, price: int | str) -> None:
        self.engine.set_prices({symbol: Decimal(price)}, self._step())

    def _submit(self, body: dict[str, object]) -> str:
        order, _ = self.engine.submit_order(ACCOUNT, {"time_in_force": "gtc", "type": "market", **body}, self._step())
        return order.id

    def _bracket(self, symbol: str, side: str, qty: int, take_profit: int, stop_loss: int) -> tuple[str, str, str]:
        parent = self._submit({
            "symbol": symbol, "qty": str(qty), "side": side, "order_class": "bracket",
            "take_profit": {"limit_price": str(take_profit)}, "stop_loss": {"stop_price": str(stop_loss)},
        })  # fmt: skip
        tp_id, sl_id = self.engine.orders[parent].leg_ids
        return parent, tp_id, sl_id

    def _partial(self, on: bool) -> None:
        self.engine.config.partial_fills = on
        self.engine.config.partial_fill_slices = 3

    def round_trip(self, kind: str, symbol: str) -> None:
        """Write one round trip of ``kind`` on ``symbol`` (flat before and after)."""
        self._price(symbol, 100)
        if kind == "tp":
            parent, tp_id, _ = self._bracket(symbol, "buy", 10, 110, 90)
            self._price(symbol, 111)
            self.expected[(parent, tp_id)] = "TP"
        elif kind == "sl2":
            parent, _, sl_id = self._bracket(symbol, "buy", 10, 110, 90)
            child, _ = self.engine.replace_order(ACCOUNT, sl_id, {"stop_price": "95"}, self._step())
            grandchild, _ = self.engine.replace_order(ACCOUNT, child.id, {"stop_price": "100.5"}, self._step())
            self._price(symbol, "100.25")
            self.expected[(parent, grandchild.id)] = "SL"
        elif kind == "partial":
            self._partial(True)
            buy = self._submit({"symbol": symbol, "qty": "9", "side": "buy"})
            self._price(symbol, 101)
            self._price(symbol, 102)
            sell = self._submit({"symbol": symbol, "qty": "9", "side": "sell"})
            self._price(symbol, 103)
            self._price(symbol, 104)
            self._partial(False)
            self.expected[(buy, sell)] = "MANUAL"
        elif kind == "partial_bracket":
            self._partial(True)
            parent, tp_id, _ = self._bracket(symbol, "buy", 9, 110, 90)
            self._price(symbol, 101)
            self._price(symbol, 102)
            for price in (110, 111, 112):
                self._price(symbol, price)
            self._partial(False)
            self.expected[(parent, tp_id)] = "TP"
        else:
            parent, tp_id, _ = self._bracket(symbol, "sell", 10, 90, 110)
            self._price(symbol, 89)
            self.expected[(parent, tp_id)] = "TP"

    def build(self, orders: int) -> None:
        """Write round trips until the engine holds ``orders`` orders, then three open brackets."""
        count = 0
        while len(self.engine.orders) < orders:
            self.round_trip(KINDS[count % len(KINDS)], SYMBOLS[count % len(SYMBOLS) - 1])
            count += 1
        for symbol in SYMBOLS[:3]:
            self._price(symbol, 100)
            parent, _, _ = self._bracket(symbol, "buy", 5, 120, 80)
            self.open_entries.append(parent)

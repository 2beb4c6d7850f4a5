"""Demo trading bot: places orders through the real alpaca-py client so the demo has life.

``python -m coldharbour.sim.bot --broker-url URL --key K --secret S [--pace-s 2]
[--symbols AAPL,MSFT,...] [--seed N] [--max-steps N]`` runs against the fake broker
(``TradingClient(url_override=URL)``, docs/broker.md §1). Every ``--pace-s`` seconds it looks at its
positions, open orders and the broker's prices (``GET /sim/state``) and does one thing: a bracket
buy (take-profit and stop-loss around the current price), a simple market buy or sell, a short
bracket sell, a stop leg moved closer to the price (``PATCH``, a replacement), or a position
closed (its open orders canceled first). A broker error is one WARNING line; the bot continues.

Two halves: ``BotPolicy.decide`` is pure (seeded RNG + ``MarketView`` in, an action out: no I/O,
no clock); ``TradingBot`` observes through alpaca-py and executes the action. ``main`` is the
command line; it exits 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from types import FrameType
from typing import Final, Literal

from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import (
    OrderClass,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    QueryOrderStatus,
    TimeInForce,
)
from alpaca.trading.models import Order, Position
from alpaca.trading.requests import (
    GetOrdersRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    TakeProfitRequest,
)

from coldharbour.domain.money import CENT, SUB_DOLLAR_TICK

log = logging.getLogger(__name__)

DEFAULT_SYMBOLS: Final = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")
Side = Literal["buy", "sell"]
Kind = Literal["bracket_buy", "market_buy", "market_sell", "short_bracket", "replace_stop", "close_position"]
# Relative odds of each action when it is possible (an impossible one is never drawn).
DEFAULT_WEIGHTS: Final[Mapping[Kind, float]] = {
    "bracket_buy": 3.0,
    "market_buy": 1.0,
    "market_sell": 1.0,
    "short_bracket": 2.0,
    "replace_stop": 1.5,
    "close_position": 1.0,
}
# Alpaca refuses bracket exits closer than this to the base price, whatever the tick.
MIN_BRACKET_DISTANCE: Final = Decimal("0.01")
MIN_BRACKET_PRICE: Final = Decimal("0.05")
_LIVE_STOP_STATUSES: Final = frozenset({OrderStatus.NEW, OrderStatus.ACCEPTED})
_OPEN_STATUSES: Final = frozenset(
    {OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_NEW}
)


def round_price(price: Decimal, *, up: bool) -> Decimal:
    """Return ``price`` on its tick ($0.01 at or above $1, $0.0001 below), rounded up or down."""
    tick = CENT if price >= 1 else SUB_DOLLAR_TICK
    return price.quantize(tick, ROUND_CEILING if up else ROUND_FLOOR)


@dataclass(frozen=True)
class PositionView:
    """One position: ``qty`` signed (negative when short), ``qty_available`` not held by orders."""

    symbol: str
    qty: Decimal
    qty_available: Decimal


@dataclass(frozen=True)
class StopLeg:
    """A live stop order; ``side`` sell protects a long, buy protects a short."""

    order_id: str
    symbol: str
    side: Side
    stop_price: Decimal


@dataclass(frozen=True)
class MarketView:
    """What the bot knows before it acts: prices, positions, live stop legs, open order ids."""

    prices: Mapping[str, Decimal]
    positions: Mapping[str, PositionView] = field(default_factory=dict)
    stop_legs: Sequence[StopLeg] = ()
    open_order_ids: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class BracketEntry:
    """A market entry with a take-profit limit and a stop-loss; ``side`` sell is a short."""

    symbol: str
    side: Side
    qty: int
    take_profit: Decimal
    stop_loss: Decimal

    @property
    def kind(self) -> Kind:
        return "bracket_buy" if self.side == "buy" else "short_bracket"


@dataclass(frozen=True)
class MarketOrder:
    """A simple market order."""

    symbol: str
    side: Side
    qty: int

    @property
    def kind(self) -> Kind:
        return "market_buy" if self.side == "buy" else "market_sell"


@dataclass(frozen=True)
class ReplaceStop:
    """Move a stop leg to ``stop_price`` (a replacement order)."""

    order_id: str
    symbol: str
    stop_price: Decimal
    kind: Kind = "replace_stop"


@dataclass(frozen=True)
class ClosePosition:
    """Cancel ``cancel_order_ids`` (they hold the shares), then close the whole position."""

    symbol: str
    cancel_order_ids: tuple[str, ...] = ()
    kind: Kind = "close_position"


@dataclass(frozen=True)
class Idle:
    """Nothing to do this step (no prices yet)."""

    reason: str


Action = BracketEntry | MarketOrder | ReplaceStop | ClosePosition | Idle


class BotPolicy:
    """Decide the bot's next action from a seeded RNG and a ``MarketView``.

    Pure: the same seed and views give the same actions. Prices and brackets are Decimals on
    tick; quantities are whole shares worth ``min_notional``..``max_notional`` dollars.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        seed: int,
        weights: Mapping[Kind, float] = DEFAULT_WEIGHTS,
        min_notional: Decimal = Decimal(500),
        max_notional: Decimal = Decimal(3000),
        max_qty: int = 1000,
    ) -> None:
        self._symbols = tuple(symbols)
        self._random = random.Random(seed)  # noqa: S311 (a simulation, not cryptography)
        self._weights = dict(weights)
        self._min_notional = min_notional
        self._max_notional = max_notional
        self._max_qty = max_qty

    def decide(self, view: MarketView) -> Action:
        """Return the next action; ``Idle`` when no symbol has a price."""
        priced = [s for s in self._symbols if view.prices.get(s, Decimal(0)) > 0]
        if not priced:
            return Idle("no prices yet")
        choices = self._choices(view, priced)
        kinds = [kind for kind in choices if choices[kind] and self._weights.get(kind, 0) > 0]
        if not kinds:
            return Idle("no possible action")
        kind = self._random.choices(kinds, [self._weights[k] for k in kinds])[0]
        return self._random.choice(choices[kind])

    def _choices(self, view: MarketView, priced: list[str]) -> dict[Kind, list[Action]]:
        # Every action that is possible now, per kind; a kind is drawn first, then one of these.
        held = view.positions
        not_short = [s for s in priced if s not in held or held[s].qty > 0]
        flat = [s for s in priced if s not in held]
        # Below a few cents a bracket cannot keep both exits $0.01 away and above zero.
        bracketable = {s for s in priced if view.prices[s] >= MIN_BRACKET_PRICE}
        longs = [p for p in held.values() if p.qty > 0 and p.qty_available >= 1 and p.symbol in priced]
        return {
            "bracket_buy": [self._bracket(s, "buy", view.prices[s]) for s in not_short if s in bracketable],
            "market_buy": [MarketOrder(s, "buy", self._qty(view.prices[s])) for s in not_short],
            "market_sell": [self._sell_part(p) for p in longs],
            "short_bracket": [self._bracket(s, "sell", view.prices[s]) for s in flat if s in bracketable],
            "replace_stop": list(self._tighter_stops(view)),
            "close_position": [ClosePosition(s, tuple(view.open_order_ids.get(s, ()))) for s in sorted(held)],
        }

    def _qty(self, price: Decimal) -> int:
        notional = Decimal(self._random.uniform(float(self._min_notional), float(self._max_notional)))
        return max(1, min(self._max_qty, int(notional / price)))

    def _bracket(self, symbol: str, side: Side, price: Decimal) -> BracketEntry:
        # 0.5-2 % away, but at least $0.01 (Alpaca's bracket rule, below $1 too), rounded away
        # from the price so the distance survives rounding to tick.
        take = max(price * Decimal(str(round(self._random.uniform(0.005, 0.02), 4))), MIN_BRACKET_DISTANCE)
        loss = max(price * Decimal(str(round(self._random.uniform(0.005, 0.02), 4))), MIN_BRACKET_DISTANCE)
        if side == "buy":
            take_profit, stop_loss = round_price(price + take, up=True), round_price(price - loss, up=False)
        else:
            take_profit, stop_loss = round_price(price - take, up=False), round_price(price + loss, up=True)
        return BracketEntry(symbol, side, self._qty(price), take_profit, stop_loss)

    def _sell_part(self, position: PositionView) -> MarketOrder:
        available = int(position.qty_available)
        return MarketOrder(position.symbol, "sell", self._random.randint(1, available))

    def _tighter_stops(self, view: MarketView) -> Iterator[ReplaceStop]:
        for leg in view.stop_legs:
            price = view.prices.get(leg.symbol)
            if price is None or price <= 0:
                continue
            trail = Decimal(str(round(self._random.uniform(0.003, 0.01), 4)))
            if leg.side == "sell":  # protects a long: trail it up, stay below the price
                stop = round_price(price * (1 - trail), up=False)
                if leg.stop_price < stop < price:
                    yield ReplaceStop(leg.order_id, leg.symbol, stop)
            else:  # protects a short: trail it down, stay above the price
                stop = round_price(price * (1 + trail), up=True)
                if price < stop < leg.stop_price:
                    yield ReplaceStop(leg.order_id, leg.symbol, stop)


def parse_prices(state: object) -> dict[str, Decimal]:
    """Return ``{symbol: price}`` from a ``GET /sim/state`` body; bad entries are dropped."""
    raw = state.get("prices") if isinstance(state, dict) else None
    prices: dict[str, Decimal] = {}
    if isinstance(raw, dict):
        for symbol, value in raw.items():
            try:
                price = Decimal(str(value))
            except InvalidOperation:
                continue
            if price.is_finite() and price > 0:
                prices[str(symbol)] = price
    return prices


def fetch_broker_prices(broker_url: str, timeout_s: float = 5.0) -> dict[str, Decimal]:
    """Return the fake broker's current prices (``GET /sim/state``)."""
    url = f"{broker_url.rstrip('/')}/sim/state"
    # The scheme is checked in main (http/https only), so urlopen cannot open a file: URL.
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
        return parse_prices(json.load(response))


def view_from_broker(
    positions: Sequence[Position], orders: Sequence[Order], prices: Mapping[str, Decimal]
) -> MarketView:
    """Return the bot's view from alpaca-py positions and (nested) open orders."""
    held: dict[str, PositionView] = {}
    for position in positions:
        size = abs(Decimal(position.qty))
        signed = -size if position.side == PositionSide.SHORT else size
        available = abs(Decimal(position.qty_available)) if position.qty_available else size
        held[position.symbol] = PositionView(position.symbol, signed, available)
    stop_legs: list[StopLeg] = []
    open_ids: dict[str, list[str]] = {}
    for order in _flatten(orders):
        symbol = order.symbol or ""
        if order.status in _OPEN_STATUSES:
            open_ids.setdefault(symbol, []).append(str(order.id))
        is_stop = order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
        if is_stop and order.status in _LIVE_STOP_STATUSES and order.stop_price is not None:
            side: Side = "buy" if order.side == OrderSide.BUY else "sell"
            stop_price = Decimal(str(order.stop_price))
            stop_legs.append(StopLeg(str(order.id), symbol, side, stop_price))
    return MarketView(dict(prices), held, stop_legs, {s: tuple(ids) for s, ids in open_ids.items()})


def _flatten(orders: Sequence[Order]) -> Iterator[Order]:
    for order in orders:
        yield order
        yield from _flatten(order.legs or [])


@dataclass
class BotStats:
    """Counters of one run."""

    steps: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    failures: int = 0


class TradingBot:
    """Observe the broker, ask the policy, execute; one ``step`` at a time."""

    def __init__(
        self, client: TradingClient, policy: BotPolicy, price_source: Callable[[], Mapping[str, Decimal]]
    ) -> None:
        self._client = client
        self._policy = policy
        self._price_source = price_source
        self._run_id = uuid.uuid4().hex[:8]
        self._idle_reason: str | None = None
        self.stats = BotStats()

    def step(self) -> Action | None:
        """Do one thing; return it, or None when the broker failed (logged as one WARNING)."""
        self.stats.steps += 1
        try:
            action = self._policy.decide(self._observe())
            self._execute(action)
        except (APIError, OSError, ValueError) as e:  # OSError covers requests' errors
            self.stats.failures += 1
            log.warning("broker error step=%d error=%s", self.stats.steps, _one_line(e))
            return None
        if not isinstance(action, Idle):
            self.stats.actions[action.kind] = self.stats.actions.get(action.kind, 0) + 1
        return action

    def _observe(self) -> MarketView:
        prices = self._price_source()
        positions = self._client.get_all_positions()
        orders = self._client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, nested=True, limit=500))
        if not isinstance(positions, list) or not isinstance(orders, list):
            raise ValueError("broker answered raw data; the client must parse models")
        return view_from_broker(positions, orders, prices)

    def _execute(self, action: Action) -> None:
        if isinstance(action, Idle):
            if action.reason != self._idle_reason:  # once per reason, not every step
                log.info("idle reason=%s", action.reason)
            self._idle_reason = action.reason
            return
        self._idle_reason = None
        if isinstance(action, BracketEntry | MarketOrder):
            self._client.submit_order(self._order_request(action))
        elif isinstance(action, ReplaceStop):
            request = ReplaceOrderRequest(stop_price=float(action.stop_price))
            self._client.replace_order_by_id(action.order_id, request)
        else:
            for order_id in action.cancel_order_ids:
                try:
                    self._client.cancel_order_by_id(order_id)
                except APIError as e:  # e.g. a sibling leg canceled with the first one
                    log.warning("cancel failed order_id=%s error=%s", order_id, _one_line(e))
            self._client.close_position(action.symbol)
        details = " ".join(f"{name}={value}" for name, value in vars(action).items() if name != "kind")
        log.info("done %s %s", action.kind, details)

    def _order_request(self, action: BracketEntry | MarketOrder) -> MarketOrderRequest:
        client_order_id = f"bot-{self._run_id}-{self.stats.steps}"
        side = OrderSide.BUY if action.side == "buy" else OrderSide.SELL
        if isinstance(action, MarketOrder):
            return MarketOrderRequest(
                symbol=action.symbol,
                qty=action.qty,
                side=side,
                time_in_force=TimeInForce.DAY,
                client_order_id=client_order_id,
            )
        return MarketOrderRequest(
            symbol=action.symbol,
            qty=action.qty,
            side=side,
            time_in_force=TimeInForce.GTC,
            order_class=OrderClass.BRACKET,
            client_order_id=client_order_id,
            take_profit=TakeProfitRequest(limit_price=float(action.take_profit)),
            stop_loss=StopLossRequest(stop_price=float(action.stop_loss)),
        )


def run_bot(bot: TradingBot, stop: threading.Event, *, pace_s: float, max_steps: int | None) -> None:
    """Step ``bot`` every ``pace_s`` s on a monotonic schedule until ``stop`` or ``max_steps``."""
    start = time.monotonic()
    while not stop.is_set() and (max_steps is None or bot.stats.steps < max_steps):
        try:
            bot.step()
        except Exception:  # loop boundary: a bug in one step must not end the demo
            bot.stats.failures += 1
            log.exception("unexpected error step=%d", bot.stats.steps)
        stop.wait(max(0.0, start + bot.stats.steps * pace_s - time.monotonic()))


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:300]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m coldharbour.sim.bot",
        description="Place a lively mix of orders on the fake broker through alpaca-py.",
    )
    parser.add_argument("--broker-url", required=True, help="fake broker origin, no /v2")
    parser.add_argument("--key", required=True, help="API key id of the account")
    parser.add_argument("--secret", required=True, help="API secret of the account")
    parser.add_argument("--pace-s", type=float, default=2.0, help="seconds between actions")
    parser.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS), help="comma-separated")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps")
    args = parser.parse_args(argv)
    if urllib.parse.urlsplit(args.broker_url).scheme not in ("http", "https"):
        parser.error(f"--broker-url: expected an http(s) origin, found {args.broker_url!r}")
    if not (math.isfinite(args.pace_s) and args.pace_s >= 0):
        parser.error(f"--pace-s: expected seconds >= 0, found {args.pace_s!r}")
    args.symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    if not args.symbols:
        parser.error("--symbols: expected at least one symbol")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the demo bot until SIGTERM/SIGINT or ``--max-steps``; return the exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    broker_url = args.broker_url.rstrip("/")  # a trailing slash would make //v2 (docs/broker.md §1)
    client = TradingClient(args.key, args.secret, paper=True, url_override=broker_url)
    bot = TradingBot(client, BotPolicy(args.symbols, seed=args.seed), lambda: fetch_broker_prices(broker_url))
    stop = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info(
        "bot started broker=%s symbols=%s pace_s=%s seed=%s", broker_url, ",".join(args.symbols), args.pace_s, args.seed
    )
    run_bot(bot, stop, pace_s=args.pace_s, max_steps=args.max_steps)
    log.info("bot stopped steps=%d actions=%s failures=%d", bot.stats.steps, bot.stats.actions, bot.stats.failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Price feed simulator: a seeded random walk published in the production feed's wire format.

``python -m coldharbour.sim.feed --endpoint E --symbols A,B --rate N [--seed S]
[--broker-url URL [--follow-broker]] [--start-price P] [--duration-s D]`` binds a ZMQ PUB socket and publishes one
msgpack frame per trade, shaped like the external feed that ``prices`` reads (docs/spec.md §4): a map
whose first key is the kind, ``{"trade": {"S": sym, "p": price, "c": conditions, "t": ns,
"s": size}}``, with the real feed's occasional variations (``symbol``/``price``/``conditions``
long keys, conditions as a ``-``-joined string, ISO time) and a small fraction of ticks carrying
an excluded condition (``D``, ``M``, ``E``) at an off-market price.

With ``--broker-url`` (the fake broker's origin) the walk starts from the broker's prices when it
has them (``GET /sim/state``) and tells the broker every new price (``POST /sim/prices``, at most
ten batches a second, the latest price per symbol), so fills and marks agree. With
``--follow-broker`` as well it does not walk: it republishes whatever prices the broker has
(set by tests or another tool), polled twice a second, and skips symbols the broker lacks.

Two halves: ``PriceWalk`` and ``encode_trade`` are pure (seeded, no I/O, no clock: time is an
argument); ``run_feed`` owns the socket, the pacing clock and the broker session. ``main`` is the
command line (also ``chmgr sim feed``); it exits 0 on SIGTERM/SIGINT after a clean stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

import aiohttp
import msgspec
import zmq

from coldharbour.domain.money import CENT, SUB_DOLLAR_TICK

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT: Final = "tcp://127.0.0.1:5558"
DEFAULT_SYMBOLS: Final = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")
DEFAULT_RATE_PER_S: Final = 20.0
# Relative standard deviation of one trade-to-trade move (0.05 %): lively but not absurd.
DEFAULT_VOLATILITY: Final = 0.0005
EXCLUDED_CONDITIONS: Final = ("D", "M", "E")
# Far beyond any listed stock; keeps Decimal quantize within its default precision.
MAX_PRICE: Final = 10_000_000.0
_LOT_SIZES: Final = (1, 5, 10, 25, 50, 100, 100, 100, 200, 300, 500)
# A broker batch at most every 0.1 s (fills and marks agree within that).
BROKER_POST_INTERVAL_S: Final = 0.1
BROKER_FOLLOW_INTERVAL_S: Final = 0.5
_BROKER_TIMEOUT_S: Final = 2.0


def tick_size(price: float) -> Decimal:
    """Return the minimum price increment: $0.01 at or above $1, $0.0001 below."""
    return CENT if price >= 1 else SUB_DOLLAR_TICK


def round_to_tick(price: float) -> float:
    """Return ``price`` rounded to its tick, never below the smallest tick ($0.0001)."""
    if not math.isfinite(price):
        raise ValueError(f"price: expected a finite number, found {price!r}")
    rounded = Decimal(repr(price)).quantize(tick_size(price), ROUND_HALF_EVEN)
    return float(max(rounded, SUB_DOLLAR_TICK))


def is_on_tick(price: float) -> bool:
    """Return True when ``price`` is positive and a whole number of its ticks."""
    return price > 0 and Decimal(repr(price)) % tick_size(price) == 0


@dataclass(frozen=True)
class WireShape:
    """How one trade is spelled on the wire; the default is the feed's usual compact shape."""

    long_keys: bool = False
    joined_conditions: bool = False
    iso_time: bool = False


@dataclass(frozen=True)
class Tick:
    """One simulated trade: price in dollars (on tick), size in shares, time in UTC ns."""

    symbol: str
    price: float
    size: int
    conditions: tuple[str, ...]
    timestamp_ns: int
    shape: WireShape = WireShape()

    @property
    def excluded(self) -> bool:
        """Return True when a condition is one the production filter drops by default."""
        return any(condition in EXCLUDED_CONDITIONS for condition in self.conditions)


class PriceWalk:
    """A seeded multiplicative random walk per symbol that yields trades, round-robin.

    Pure: the same seed, symbols and calls give the same ticks; time is an argument.
    ``excluded_fraction`` of ticks carry an excluded condition at an off-market price and do not
    move the walk; ``shape_variation`` of ticks use a non-default wire shape.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        seed: int,
        start_prices: Mapping[str, float] | None = None,
        default_start_price: float | None = None,
        volatility: float = DEFAULT_VOLATILITY,
        excluded_fraction: float = 0.0,
        shape_variation: float = 0.0,
    ) -> None:
        if not symbols:
            raise ValueError("symbols: expected at least one symbol, found none")
        if not 0 <= excluded_fraction <= 1 or not 0 <= shape_variation <= 1:
            raise ValueError("excluded_fraction and shape_variation must be within [0, 1]")
        if not 0 <= volatility < 1:
            raise ValueError(f"volatility: expected a fraction in [0, 1), found {volatility!r}")
        self._symbols = tuple(symbols)
        # Separate streams so changing one knob does not change the prices another one drew.
        # A simulation wants reproducible pseudo-randomness, not cryptography (S311).
        self._price_random = random.Random(f"price:{seed}")  # noqa: S311
        self._shape_random = random.Random(f"shape:{seed}")  # noqa: S311
        self._volatility = volatility
        self._excluded_fraction = excluded_fraction
        self._shape_variation = shape_variation
        self._next_index = 0
        self._prices: dict[str, float] = {}
        known = start_prices or {}
        for symbol in self._symbols:
            if symbol in known:
                self.set_price(symbol, known[symbol])
            elif default_start_price is not None:
                self.set_price(symbol, default_start_price)
            else:
                self.set_price(symbol, self._price_random.uniform(20.0, 400.0))

    @property
    def symbols(self) -> tuple[str, ...]:
        """Return the symbols in publishing order."""
        return self._symbols

    @property
    def prices(self) -> dict[str, float]:
        """Return a copy of the current (last regular) price per symbol."""
        return dict(self._prices)

    def set_price(self, symbol: str, price: float) -> None:
        """Move ``symbol``'s walk to ``price`` (rounded to tick), e.g. to follow the broker."""
        if not math.isfinite(price) or not 0 < price <= MAX_PRICE:
            raise ValueError(f"price for {symbol}: expected (0, {MAX_PRICE:g}], found {price!r}")
        self._prices[symbol] = round_to_tick(price)

    def next_ticks(self, count: int, timestamp_ns: int) -> list[Tick]:
        """Return the next ``count`` ticks, all stamped ``timestamp_ns``."""
        return [self.next_tick(timestamp_ns) for _ in range(count)]

    def next_tick(self, timestamp_ns: int) -> Tick:
        """Return the next trade of the next symbol in turn, stamped ``timestamp_ns``."""
        symbol = self._symbols[self._next_index]
        self._next_index = (self._next_index + 1) % len(self._symbols)
        rng = self._price_random
        size = rng.choice(_LOT_SIZES)
        if rng.random() < self._excluded_fraction:
            # Late reports and derivatively priced prints sit away from the market: the filter
            # in `prices` exists for exactly these, so they never move the walk.
            price = self._moved(self._prices[symbol], spread=20.0)
            conditions: tuple[str, ...] = ("@", rng.choice(EXCLUDED_CONDITIONS))
        else:
            price = self._moved(self._prices[symbol], spread=1.0)
            self._prices[symbol] = price
            conditions = self._regular_conditions(size)
        return Tick(symbol, price, size, conditions, timestamp_ns, self._next_shape())

    def _moved(self, price: float, *, spread: float) -> float:
        sigma = self._volatility * spread
        # Clamped at five sigma: one wild draw must not send a price to zero or to the moon.
        step = max(-5 * sigma, min(5 * sigma, self._price_random.gauss(0.0, sigma)))
        return round_to_tick(min(MAX_PRICE, price * math.exp(step)))

    def _regular_conditions(self, size: int) -> tuple[str, ...]:
        roll = self._price_random.random()
        if roll < 0.05:
            return ()  # unflagged prints exist and are kept (docs/defects.md D65)
        conditions = ["@"]
        if roll > 0.9:
            conditions.append("F")  # intermarket sweep
        if size < 100:
            conditions.append("I")  # odd lot
        return tuple(conditions)

    def _next_shape(self) -> WireShape:
        rng = self._shape_random
        if rng.random() >= self._shape_variation:
            return WireShape()
        return WireShape(rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5)


def iso_time(timestamp_ns: int) -> str:
    """Return UTC ns as ISO-8601 with nine fraction digits and ``Z``, as the feed spells it."""
    seconds, fraction_ns = divmod(timestamp_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction_ns:09d}Z"


def trade_message(tick: Tick) -> dict[str, dict[str, object]]:
    """Return the wire map for ``tick``: ``{"trade": {...}}`` spelled per ``tick.shape``."""
    shape = tick.shape
    conditions: object = "-".join(tick.conditions) if shape.joined_conditions else list(tick.conditions)
    body: dict[str, object] = {
        "symbol" if shape.long_keys else "S": tick.symbol,
        "price" if shape.long_keys else "p": tick.price,
        "conditions" if shape.long_keys else "c": conditions,
        "t": iso_time(tick.timestamp_ns) if shape.iso_time else tick.timestamp_ns,
        "s": tick.size,
    }
    return {"trade": body}


def encode_trade(tick: Tick) -> bytes:
    """Return the single msgpack frame the production feed would send for ``tick``."""
    return msgspec.msgpack.encode(trade_message(tick))


@dataclass(frozen=True)
class FeedOptions:
    """What ``run_feed`` publishes, where, and how fast (``rate_per_s`` over all symbols).

    With ``broker_url`` the walk starts from the broker's prices and posts its own; with
    ``follow_broker`` too, it does not walk at all: it republishes the broker's prices (polled
    every ``follow_interval_s``) and skips symbols the broker has no price for.
    """

    endpoint: str = DEFAULT_ENDPOINT
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    rate_per_s: float = DEFAULT_RATE_PER_S
    seed: int = 0
    broker_url: str | None = None
    follow_broker: bool = False
    follow_interval_s: float = BROKER_FOLLOW_INTERVAL_S
    start_price: float | None = None
    duration_s: float | None = None
    excluded_fraction: float = 0.01
    shape_variation: float = 0.2
    volatility: float = DEFAULT_VOLATILITY


@dataclass
class FeedStats:
    """Counters of one run: what was published, what the broker was told, what went wrong."""

    published: int = 0
    excluded: int = 0
    schedule_resets: int = 0
    broker_posts: int = 0
    broker_failures: int = 0
    prices_followed: int = 0


async def run_feed(
    options: FeedOptions, stop: asyncio.Event, *, context: zmq.Context[zmq.Socket[bytes]] | None = None
) -> FeedStats:
    """Publish ticks until ``stop`` is set (or ``options.duration_s`` passes); return counters.

    Raises ``zmq.ZMQError`` when the endpoint cannot be bound.
    """
    stats = FeedStats()
    loop = asyncio.get_running_loop()
    timer = None if options.duration_s is None else loop.call_later(options.duration_s, stop.set)
    own_context = context is None
    ctx = zmq.Context() if context is None else context
    socket = ctx.socket(zmq.PUB)
    socket.setsockopt(zmq.LINGER, 200)
    try:
        socket.bind(options.endpoint)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_BROKER_TIMEOUT_S)) as session:
            broker = None if options.broker_url is None else _Broker(session, options.broker_url, stats)
            await _run(socket, broker, options, stop, stats)
    finally:
        if timer is not None:
            timer.cancel()
        socket.close()
        if own_context:
            ctx.term()
    return stats


async def _run(
    socket: zmq.Socket[bytes], broker: _Broker | None, options: FeedOptions, stop: asyncio.Event, stats: FeedStats
) -> None:
    start_prices = (await broker.prices() or {}) if broker is not None else {}
    following = broker is not None and options.follow_broker
    walk = PriceWalk(
        options.symbols,
        seed=options.seed,
        start_prices=start_prices,
        default_start_price=options.start_price,
        volatility=0.0 if following else options.volatility,
        excluded_fraction=options.excluded_fraction,
        shape_variation=options.shape_variation,
    )
    log.info(
        "feed started endpoint=%s symbols=%s rate_per_s=%s seed=%s broker=%s mode=%s",
        options.endpoint,
        ",".join(walk.symbols),
        options.rate_per_s,
        options.seed,
        options.broker_url or "-",
        "follow" if following else "walk",
    )
    if broker is None:
        await _publish(socket, walk, options.rate_per_s, stop, stats)
        return
    if following:
        known = set(start_prices) & set(walk.symbols)
        sync = _follow_broker(broker, walk, known, options.follow_interval_s, stop, stats)
        pending = None
    else:
        # The broker learns every start price at once, then each new one as it comes.
        known, pending = None, walk.prices
        sync = _post_to_broker(broker, pending, stop, stats)
    task = asyncio.create_task(sync, name="feed-broker-sync")
    try:
        await _publish(socket, walk, options.rate_per_s, stop, stats, pending=pending, only=known)
    finally:
        stop.set()
        await task


async def _publish(
    socket: zmq.Socket[bytes],
    walk: PriceWalk,
    rate_per_s: float,
    stop: asyncio.Event,
    stats: FeedStats,
    *,
    pending: dict[str, float] | None = None,
    only: set[str] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    # Message n is due at start + n/rate on the monotonic clock: waking late publishes the
    # backlog, so sleep jitter never accumulates into a slower rate.
    start = loop.time()
    sent = 0
    while not stop.is_set():
        due = math.floor((loop.time() - start) * rate_per_s) + 1 - sent
        if due > max(rate_per_s, 1.0):
            # More than a second behind (a stalled loop): skip the backlog rather than burst.
            stats.schedule_resets += 1
            log.warning("feed fell behind backlog=%d; skipping it", due)
            start = loop.time() - sent / rate_per_s
            due = 1
        for tick in _next_ticks(walk, max(due, 0), only):
            socket.send(encode_trade(tick), zmq.NOBLOCK)
            stats.published += 1
            if tick.excluded:
                stats.excluded += 1
            elif pending is not None:
                pending[tick.symbol] = tick.price
        sent += max(due, 0)
        await _wait(stop, start + sent / rate_per_s - loop.time())


def _next_ticks(walk: PriceWalk, count: int, only: set[str] | None) -> list[Tick]:
    """Return ``count`` ticks, skipping symbols outside ``only`` (fewer if none is left)."""
    if only is None:
        return walk.next_ticks(count, time.time_ns())
    ticks: list[Tick] = []
    for _ in range(count * len(walk.symbols) if only else 0):
        if len(ticks) == count:
            break
        tick = walk.next_tick(time.time_ns())
        if tick.symbol in only:
            ticks.append(tick)
    return ticks


async def _wait(stop: asyncio.Event, delay_s: float) -> None:
    """Wait ``delay_s`` or until ``stop`` is set, whichever comes first."""
    if delay_s <= 0:
        await asyncio.sleep(0)  # yield so the broker task and signal handlers run
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay_s):
            await stop.wait()


class _Broker:
    """The fake broker's control routes, as seen by the feed; failures are counted and logged
    once per streak (a broker restart must not flood the log ten times a second)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, stats: FeedStats) -> None:
        self._session = session
        self._url = url.rstrip("/")
        self._stats = stats
        self._failure_streak = 0

    async def prices(self) -> dict[str, float] | None:
        """Return the broker's current prices, or None when it cannot say."""
        try:
            async with self._session.get(f"{self._url}/sim/state") as response:
                response.raise_for_status()
                state = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            self._failed("state", e)
            return None
        self._succeeded()
        return _parse_prices(state.get("prices") if isinstance(state, dict) else None)

    async def post_prices(self, prices: Mapping[str, float]) -> bool:
        """Tell the broker ``prices`` (as decimal strings); return False when that failed."""
        body = {symbol: str(Decimal(repr(price))) for symbol, price in prices.items()}
        try:
            async with self._session.post(f"{self._url}/sim/prices", json=body) as response:
                response.raise_for_status()
        except (aiohttp.ClientError, TimeoutError) as e:
            self._failed("price post", e)
            return False
        self._stats.broker_posts += 1
        self._succeeded()
        return True

    def _failed(self, what: str, error: BaseException) -> None:
        self._stats.broker_failures += 1
        if self._failure_streak == 0:
            log.warning("broker %s failed url=%s error=%s", what, self._url, _one_line(error))
        self._failure_streak += 1

    def _succeeded(self) -> None:
        if self._failure_streak:
            log.info("broker reachable again after failures=%d", self._failure_streak)
        self._failure_streak = 0


def _parse_prices(raw: object) -> dict[str, float]:
    """Return ``{symbol: price}`` from a ``/sim/state`` ``prices`` value, dropping bad entries."""
    if not isinstance(raw, dict):
        return {}
    prices: dict[str, float] = {}
    for symbol, value in raw.items():
        with contextlib.suppress(TypeError, ValueError, ArithmeticError):
            price = float(Decimal(str(value)))
            if math.isfinite(price) and 0 < price <= MAX_PRICE:
                prices[str(symbol)] = round_to_tick(price)
    return prices


async def _post_to_broker(broker: _Broker, pending: dict[str, float], stop: asyncio.Event, stats: FeedStats) -> None:
    """Post the latest price per symbol every ``BROKER_POST_INTERVAL_S``, and once more at stop."""
    while True:
        stopping = stop.is_set()
        if pending:
            batch = dict(pending)
            pending.clear()
            if not await broker.post_prices(batch):
                for symbol, price in batch.items():
                    pending.setdefault(symbol, price)  # newer ticks win
        if stopping:
            return
        await _wait(stop, BROKER_POST_INTERVAL_S)


async def _follow_broker(
    broker: _Broker, walk: PriceWalk, known: set[str], interval_s: float, stop: asyncio.Event, stats: FeedStats
) -> None:
    """Move the (motionless) walk to the broker's prices every ``interval_s``."""
    while not stop.is_set():
        await _wait(stop, interval_s)
        for symbol, price in (await broker.prices() or {}).items():
            if symbol in walk.prices and (symbol not in known or walk.prices[symbol] != price):
                walk.set_price(symbol, price)
                known.add(symbol)
                stats.prices_followed += 1
                log.debug("following broker price symbol=%s price=%s", symbol, price)


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:200]


def _parse_args(argv: list[str] | None) -> FeedOptions:
    parser = argparse.ArgumentParser(
        prog="python -m coldharbour.sim.feed",
        description="Publish simulated trades in the production price feed's wire format.",
    )
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="ZMQ PUB endpoint to bind")
    parser.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS), help="comma-separated")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_PER_S, help="messages/s, total")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--broker-url", default=None, help="fake broker origin to keep in step")
    parser.add_argument(
        "--follow-broker",
        action="store_true",
        help="republish the broker's prices instead of walking (needs --broker-url)",
    )
    parser.add_argument("--start-price", type=float, default=None, help="start price, all symbols")
    parser.add_argument("--duration-s", type=float, default=None, help="stop after this long")
    parser.add_argument(
        "--excluded-fraction", type=float, default=0.01, help="fraction of ticks with an excluded condition (D, M, E)"
    )
    parser.add_argument(
        "--shape-variation", type=float, default=0.2, help="fraction of ticks in a non-default wire shape"
    )
    parser.add_argument(
        "--volatility", type=float, default=DEFAULT_VOLATILITY, help="relative standard deviation of one move"
    )
    args = parser.parse_args(argv)
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    if not symbols:
        parser.error(f"--symbols: expected at least one symbol, found {args.symbols!r}")
    if not (math.isfinite(args.rate) and args.rate > 0):
        parser.error(f"--rate: expected a positive number of messages/s, found {args.rate!r}")
    if args.start_price is not None and not 0 < args.start_price <= MAX_PRICE:
        parser.error(f"--start-price: expected a positive price, found {args.start_price!r}")
    if args.duration_s is not None and not args.duration_s >= 0:
        parser.error(f"--duration-s: expected seconds >= 0, found {args.duration_s!r}")
    if args.follow_broker and args.broker_url is None:
        parser.error("--follow-broker: needs --broker-url")
    for name in ("excluded_fraction", "shape_variation", "volatility"):
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a fraction in [0, 1)")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    return FeedOptions(
        endpoint=args.endpoint,
        symbols=symbols,
        rate_per_s=args.rate,
        seed=seed,
        broker_url=args.broker_url,
        follow_broker=args.follow_broker,
        start_price=args.start_price,
        duration_s=args.duration_s,
        excluded_fraction=args.excluded_fraction,
        shape_variation=args.shape_variation,
        volatility=args.volatility,
    )


async def _amain(options: FeedOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        stats = await run_feed(options, stop)
    except zmq.ZMQError as e:
        log.error("cannot bind feed endpoint=%s error=%s", options.endpoint, e)
        return 1
    log.info(
        "feed stopped published=%d excluded=%d broker_posts=%d broker_failures=%d followed=%d",
        stats.published,
        stats.excluded,
        stats.broker_posts,
        stats.broker_failures,
        stats.prices_followed,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the feed simulator until SIGTERM/SIGINT or ``--duration-s``; return the exit code."""
    options = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(_amain(options))


if __name__ == "__main__":
    sys.exit(main())

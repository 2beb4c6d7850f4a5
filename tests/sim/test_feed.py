"""Price feed simulator: the pure walk and wire shapes, then the real socket and command line."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from coldharbour.sim.feed import (
    EXCLUDED_CONDITIONS,
    FeedOptions,
    PriceWalk,
    Tick,
    WireShape,
    encode_trade,
    is_on_tick,
    iso_time,
    main,
    round_to_tick,
    run_feed,
    trade_message,
)
from tests.fixtures.broker import FakeBroker
from tests.support import async_wait_for, wait_for

T0_NS = 1_709_305_200_123_456_789  # 2024-03-01T15:00:00.123456789Z


def _walk(**overrides: object) -> PriceWalk:
    options: dict[str, object] = {"seed": 7, "default_start_price": 100.0}
    options.update(overrides)
    return PriceWalk(("AAPL", "MSFT"), **options)  # type: ignore[arg-type]


def test_price_walk_same_seed_same_ticks() -> None:
    first = _walk(excluded_fraction=0.1, shape_variation=0.5).next_ticks(200, T0_NS)
    second = _walk(excluded_fraction=0.1, shape_variation=0.5).next_ticks(200, T0_NS)

    assert first == second


def test_price_walk_other_seed_other_prices() -> None:
    first = [t.price for t in _walk(seed=1).next_ticks(50, T0_NS)]
    second = [t.price for t in _walk(seed=2).next_ticks(50, T0_NS)]

    assert first != second


def test_price_walk_shape_variation_does_not_change_prices() -> None:
    plain = [t.price for t in _walk(shape_variation=0.0).next_ticks(100, T0_NS)]
    varied = [t.price for t in _walk(shape_variation=1.0).next_ticks(100, T0_NS)]

    assert plain == varied


def test_price_walk_symbols_take_turns_and_prices_move() -> None:
    ticks = _walk().next_ticks(400, T0_NS)

    assert [t.symbol for t in ticks[:4]] == ["AAPL", "MSFT", "AAPL", "MSFT"]
    assert len({t.price for t in ticks if t.symbol == "AAPL"}) > 10
    assert all(t.timestamp_ns == T0_NS for t in ticks)


def test_price_walk_without_start_prices_is_seeded_per_symbol() -> None:
    first = PriceWalk(("AAPL", "MSFT"), seed=3).prices
    second = PriceWalk(("AAPL", "MSFT"), seed=3).prices

    assert first == second
    assert first["AAPL"] != first["MSFT"]
    assert all(20 <= price <= 400 and is_on_tick(price) for price in first.values())


def test_price_walk_start_prices_win_over_default() -> None:
    walk = PriceWalk(("AAPL", "MSFT"), seed=1, start_prices={"AAPL": 190.123}, default_start_price=5)

    assert walk.prices == {"AAPL": 190.12, "MSFT": 5.0}


def test_price_walk_excluded_ticks_carry_condition_and_do_not_move_walk() -> None:
    walk = _walk(excluded_fraction=1.0)

    ticks = walk.next_ticks(50, T0_NS)

    assert all(t.excluded for t in ticks)
    assert all(set(t.conditions) & set(EXCLUDED_CONDITIONS) for t in ticks)
    assert walk.prices == {"AAPL": 100.0, "MSFT": 100.0}


def test_price_walk_regular_ticks_are_never_excluded() -> None:
    ticks = _walk(excluded_fraction=0.0).next_ticks(500, T0_NS)

    assert not any(t.excluded for t in ticks)
    assert any(t.conditions == () for t in ticks)  # unflagged prints exist
    assert all("I" in t.conditions for t in ticks if t.conditions and t.size < 100)


def test_price_walk_set_price_rounds_to_tick() -> None:
    walk = _walk()

    walk.set_price("AAPL", 0.123456)

    assert walk.prices["AAPL"] == 0.1235


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, 1e12])
def test_price_walk_set_price_bad_value_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="price for AAPL"):
        _walk().set_price("AAPL", bad)


@pytest.mark.parametrize(
    ("price", "rounded"),
    [
        (123.456, 123.46),
        (123.454, 123.45),
        (1.0, 1.0),
        (0.123456, 0.1235),
        (0.99996, 1.0),
        (0.00001, 0.0001),
        (0.0, 0.0001),
    ],
)
def test_round_to_tick_cent_above_dollar_and_hundredth_cent_below(price: float, rounded: float) -> None:
    assert round_to_tick(price) == rounded
    assert is_on_tick(rounded)


@pytest.mark.parametrize("price", [1.005, 0.00015, 0.0])
def test_is_on_tick_off_tick_prices_false(price: float) -> None:
    assert not is_on_tick(price)


@given(
    seed=st.integers(min_value=0, max_value=2**32),
    start=st.floats(min_value=0.0001, max_value=100_000.0),
    volatility=st.floats(min_value=0.0, max_value=0.2),
    excluded=st.floats(min_value=0.0, max_value=1.0),
    steps=st.integers(min_value=1, max_value=300),
)
def test_price_walk_property_prices_positive_and_on_tick(
    seed: int, start: float, volatility: float, excluded: float, steps: int
) -> None:
    walk = PriceWalk(
        ("A", "B", "C"),
        seed=seed,
        default_start_price=start,
        volatility=volatility,
        excluded_fraction=excluded,
    )

    ticks = walk.next_ticks(steps, T0_NS)

    for tick in ticks:
        assert tick.price > 0
        assert math.isfinite(tick.price)
        assert is_on_tick(tick.price), tick
        assert tick.size > 0
    assert all(price > 0 and is_on_tick(price) for price in walk.prices.values())


def _tick(shape: WireShape, conditions: tuple[str, ...] = ("@", "I")) -> Tick:
    return Tick("AAPL", 190.25, 50, conditions, T0_NS, shape)


def test_trade_message_default_shape_is_compact() -> None:
    message = trade_message(_tick(WireShape()))

    assert message == {"trade": {"S": "AAPL", "p": 190.25, "c": ["@", "I"], "t": T0_NS, "s": 50}}


def test_trade_message_varied_shape_uses_long_keys_joined_conditions_iso_time() -> None:
    message = trade_message(_tick(WireShape(long_keys=True, joined_conditions=True, iso_time=True)))

    assert message == {
        "trade": {
            "symbol": "AAPL",
            "price": 190.25,
            "conditions": "@-I",
            "t": "2024-03-01T15:00:00.123456789Z",
            "s": 50,
        }
    }


def test_iso_time_keeps_nanoseconds() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000000000Z"
    assert iso_time(T0_NS) == "2024-03-01T15:00:00.123456789Z"


def test_encode_trade_is_one_msgpack_map_with_kind_first() -> None:
    frame = encode_trade(_tick(WireShape()))

    decoded = msgspec.msgpack.decode(frame)

    assert list(decoded) == ["trade"]
    assert decoded["trade"]["p"] == 190.25
    assert isinstance(decoded["trade"]["p"], float)


def test_price_walk_shape_variation_mixes_shapes_deterministically() -> None:
    shapes = [t.shape for t in _walk(shape_variation=0.5).next_ticks(200, T0_NS)]

    assert WireShape() in shapes
    assert any(shape.long_keys for shape in shapes)
    assert any(shape.joined_conditions for shape in shapes)
    assert any(shape.iso_time for shape in shapes)


def _subscriber(context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.connect(endpoint)  # ipc connects may precede the bind; zmq retries
    return socket


def _drain(socket: zmq.Socket[bytes], into: list[dict[str, dict[str, object]]]) -> int:
    while True:
        try:
            into.append(msgspec.msgpack.decode(socket.recv(zmq.NOBLOCK)))
        except zmq.Again:
            return len(into)


def _assert_trade_shape(message: dict[str, dict[str, object]], symbols: set[str]) -> None:
    assert list(message) == ["trade"]
    body = message["trade"]
    symbol = body.get("S", body.get("symbol"))
    price = body.get("p", body.get("price"))
    conditions = body.get("c", body.get("conditions"))
    assert symbol in symbols
    assert isinstance(price, float)
    assert price > 0
    assert isinstance(conditions, list | str)
    assert isinstance(body["t"], int | str)
    assert isinstance(body["s"], int)


@pytest.mark.asyncio
async def test_run_feed_publishes_documented_frames_on_ipc(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/feed.ipc"
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    subscriber = _subscriber(context, endpoint)
    stop = asyncio.Event()
    options = FeedOptions(endpoint=endpoint, symbols=("AAPL", "MSFT"), rate_per_s=500, seed=1, shape_variation=0.5)
    received: list[dict[str, dict[str, object]]] = []
    try:
        feed = asyncio.create_task(run_feed(options, stop, context=context))
        await async_wait_for(lambda: _drain(subscriber, received) >= 100, 10, what="100 frames")
        stop.set()
        stats = await asyncio.wait_for(feed, 5)
    finally:
        subscriber.close()
        context.term()

    for message in received:
        _assert_trade_shape(message, {"AAPL", "MSFT"})
    assert any("symbol" in m["trade"] for m in received)
    assert any("S" in m["trade"] for m in received)
    assert stats.published >= len(received)


@pytest.mark.asyncio
async def test_run_feed_paces_by_schedule(tmp_path: Path) -> None:
    options = FeedOptions(endpoint=f"ipc://{tmp_path}/pace.ipc", rate_per_s=100, duration_s=0.5)

    stats = await asyncio.wait_for(run_feed(options, asyncio.Event()), 5)

    # 0.5 s at 100/s is 51 messages by the schedule (one at t=0); a loaded machine may lag a bit.
    assert 35 <= stats.published <= 60


def test_main_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--rate", "0"])

    assert raised.value.code == 2


def test_feed_process_publishes_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/proc.ipc"
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    subscriber = _subscriber(context, endpoint)
    command = [sys.executable, "-m", "coldharbour.sim.feed", "--endpoint", endpoint]
    command += ["--symbols", "AAPL,PENNY", "--rate", "200", "--seed", "5", "--start-price", "0.5"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    received: list[dict[str, dict[str, object]]] = []
    try:
        wait_for(lambda: _drain(subscriber, received) >= 20, 15, what="20 frames from the process")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        subscriber.close()
        context.term()

    prices = [m["trade"].get("p", m["trade"].get("price")) for m in received]
    assert process.returncode == 0, stderr
    assert "feed stopped" in stderr
    assert all(isinstance(p, float) and p < 1 and is_on_tick(p) for p in prices)


def _broker_price(fake_broker: FakeBroker, symbol: str) -> float | None:
    price = fake_broker.state()["prices"].get(symbol)
    return None if price is None else float(price)


@pytest.mark.asyncio
async def test_run_feed_with_broker_url_starts_from_and_moves_broker_prices(
    fake_broker: FakeBroker, tmp_path: Path
) -> None:
    fake_broker.set_prices({"AAPL": "190.00"})
    options = FeedOptions(
        endpoint=f"ipc://{tmp_path}/broker.ipc",
        symbols=("AAPL", "MSFT"),
        rate_per_s=400,
        seed=3,
        broker_url=fake_broker.base_url,
        start_price=50.0,
    )
    stop = asyncio.Event()
    feed = asyncio.create_task(run_feed(options, stop))
    try:
        # Seeded from the broker's AAPL, the walk moves it; MSFT (unknown there) starts at 50.
        await async_wait_for(lambda: _broker_price(fake_broker, "AAPL") not in (None, 190.0), 10, what="AAPL moved")
        await async_wait_for(lambda: _broker_price(fake_broker, "MSFT") is not None, 10, what="MSFT posted")
        aapl, msft = _broker_price(fake_broker, "AAPL"), _broker_price(fake_broker, "MSFT")
    finally:
        stop.set()
        stats = await asyncio.wait_for(feed, 5)

    assert aapl is not None
    assert 180 < aapl < 200
    assert msft is not None
    assert 45 < msft < 55
    assert stats.broker_posts > 0
    assert stats.broker_failures == 0


@pytest.mark.asyncio
async def test_run_feed_follow_broker_republishes_broker_prices_only(fake_broker: FakeBroker, tmp_path: Path) -> None:
    fake_broker.set_prices({"AAPL": "190.00"})
    endpoint = f"ipc://{tmp_path}/follow.ipc"
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    subscriber = _subscriber(context, endpoint)
    options = FeedOptions(
        endpoint=endpoint,
        symbols=("AAPL", "MSFT"),
        rate_per_s=200,
        broker_url=fake_broker.base_url,
        follow_broker=True,
        follow_interval_s=0.05,
        excluded_fraction=0.0,
    )
    received: list[dict[str, dict[str, object]]] = []

    def prices_seen() -> list[object]:
        _drain(subscriber, received)
        return [m["trade"].get("p", m["trade"].get("price")) for m in received]

    stop = asyncio.Event()
    feed = asyncio.create_task(run_feed(options, stop, context=context))
    try:
        await async_wait_for(lambda: 190.0 in prices_seen(), 10, what="ticks at 190")
        fake_broker.set_prices({"AAPL": "191.37"})
        await async_wait_for(lambda: 191.37 in prices_seen(), 10, what="ticks at the new broker price")
        stop.set()
        stats = await asyncio.wait_for(feed, 5)
    finally:
        stop.set()
        subscriber.close()
        context.term()

    symbols = {m["trade"].get("S", m["trade"].get("symbol")) for m in received}
    prices = {m["trade"].get("p", m["trade"].get("price")) for m in received}
    assert symbols == {"AAPL"}  # MSFT has no broker price: never invented
    assert prices == {190.0, 191.37}
    assert _broker_price(fake_broker, "AAPL") == 191.37  # following never posts
    assert stats.broker_posts == 0
    assert stats.prices_followed >= 1


@pytest.mark.asyncio
async def test_run_feed_unreachable_broker_keeps_publishing(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback is closed here: every broker call fails fast.
    options = FeedOptions(
        endpoint=f"ipc://{tmp_path}/nobroker.ipc", rate_per_s=200, broker_url="http://127.0.0.1:9", duration_s=0.4
    )

    stats = await asyncio.wait_for(run_feed(options, asyncio.Event()), 10)

    assert stats.published > 20
    assert stats.broker_posts == 0
    assert stats.broker_failures >= 1

"""`prices` in-process: feed frames → ``px.batch`` tick batches; bad frames counted and dropped."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import zmq

from coldharbour.messages import TOPIC_TICKS, TickBatch
from coldharbour.sim.feed import Tick as SimTick
from coldharbour.sim.feed import encode_trade
from tests.fixtures.bus import InprocBus
from tests.support import async_wait_for
from tests.workers.broker_support import InProcessWorker, worker_settings
from workers import prices

TS = 1_709_305_200_000_000_000


def trade(symbol: str, price: float, conditions: tuple[str, ...] = ()) -> bytes:
    return encode_trade(SimTick(symbol, price, 100, conditions, TS))


def prints(messages: Sequence[object]) -> list[tuple[str, float]]:
    """Return (symbol, price) of every tick in the observed batches, in order."""
    return [(s, p) for m in messages if isinstance(m, TickBatch) for s, p in zip(m.symbols, m.prices, strict=True)]


@pytest.mark.asyncio
async def test_prices_ticks_published_bad_frames_counted(bus: InprocBus, tmp_path: Path) -> None:
    endpoint = f"inproc://feed-{uuid.uuid4().hex[:8]}"
    feed = bus.ctx.socket(zmq.PUB)
    feed.bind(endpoint)
    ticks = bus.observe(TOPIC_TICKS)
    settings = worker_settings(bus, tmp_path, ZMQ_SIP_STREAM_ENDPOINT=endpoint)
    worker = InProcessWorker("prices", prices.amain, settings, bus).start()
    try:

        def warmed_up() -> bool:  # the slow joiner: republish until the worker's SUB sees one
            feed.send(trade("WARM", 1.0))
            return any(symbol == "WARM" for symbol, _ in prints(ticks.messages()))

        await async_wait_for(warmed_up, 10, what="feed subscription")
        corpus = [
            [trade("AAPL", 185.01)],
            [b"topic", trade("MSFT", 400.5)],
            [trade("AAPL", 150.0, ("D",))],
            [msgspec.msgpack.encode({"trade": {"S": "AAPL", "p": math.nan}})],
            [msgspec.msgpack.encode({"trade": {"S": "AAPL", "p": -1.0}})],
            [msgspec.msgpack.encode({"trade": {"p": 1.0}})],
            [b"\xc1 not msgpack"],
            [msgspec.msgpack.encode({"quote": {"S": "AAPL"}})],
        ]
        for frames in corpus:
            feed.send_multipart(frames)
        feed.send(trade("DONE", 2.0))
        await async_wait_for(lambda: ("DONE", 2.0) in prints(ticks.messages()), 10, what="end")
    finally:
        await worker.close()
        feed.close(linger=0)

    published = [(s, p) for s, p in prints(ticks.messages()) if s in {"AAPL", "MSFT"}]
    counters = worker.ctx.counters
    assert published == [("AAPL", 185.01), ("MSFT", 400.5)]
    assert counters["skipped_feed_condition_excluded"] == 1
    assert counters["skipped_feed_kind_quote"] == 1
    assert counters["rejects_feed_price_value"] == 2
    assert counters["rejects_feed_symbol"] == 1
    assert counters["rejects_feed_msgpack"] == 1
    assert counters["rejects"] == 4

"""Bus: publish → proxy → subscribe over inproc and ipc; gaps, restarts, bad frames."""

from __future__ import annotations

import asyncio
import copy

import msgspec
import pytest

from coldharbour import runtime
from coldharbour.bus import Publisher, SeqTracker, Subscriber, prepare_endpoint
from coldharbour.config import Dsn
from coldharbour.errors import BusError
from coldharbour.messages import Heartbeat, Message, Probe, Tick, encode, topic_tick
from coldharbour.runtime import WorkerContext
from tests.support import async_wait_for, make_settings

TRANSPORTS = pytest.mark.parametrize("bus_transport", ["inproc", "ipc"], indirect=True)


async def _subscribed(bus, subscriber: Subscriber, publisher: Publisher, prefix: str) -> None:
    """Publish probes on ``prefix`` until the subscriber receives one (slow-joiner handshake)."""
    async def probe() -> bool:
        publisher.publish(prefix + "probe", Probe(token="x"))
        try:
            _, message = await asyncio.wait_for(subscriber.recv(), 0.05)
        except TimeoutError:
            return False
        return isinstance(message, Probe)

    await async_wait_for(probe, 5, what="subscription live")
    while True:  # discard extra probes still in flight
        try:
            await asyncio.wait_for(subscriber.recv(), 0.05)
        except TimeoutError:
            break


@pytest.mark.asyncio
@TRANSPORTS
async def test_bus_publish_proxy_subscribe_delivers_in_order(bus) -> None:
    subscriber = Subscriber(bus.ctx, bus.bus_out, ["px."])
    publisher = Publisher(bus.ctx, bus.bus_in, "prices")
    await _subscribed(bus, subscriber, publisher, "px.")
    subscriber.counters.clear()

    for i in range(1, 201):
        publisher.publish(topic_tick("AAPL"), Tick(symbol="AAPL", price=100.0 + i))
    received: list[tuple[str, Message]] = []
    while len(received) < 200:
        received.extend(await asyncio.wait_for(subscriber.recv_batch(50), 5))
    publisher.close()
    subscriber.close()
    ticks = [m for _, m in received if isinstance(m, Tick)]

    assert len(ticks) == len(received)
    assert [m.price for m in ticks] == [100.0 + i for i in range(1, 201)]
    assert {m.src for _, m in received} == {"prices"}
    assert [m.seq for _, m in received] == list(range(1, 201))  # seq counts per (publisher, topic)
    assert subscriber.counters["rejects"] == 0


@pytest.mark.asyncio
@TRANSPORTS
async def test_bus_restarted_publisher_is_reported_as_restart_and_gap_as_gap(bus) -> None:
    events: list[tuple[str, str, int]] = []
    subscriber = Subscriber(
        bus.ctx, bus.bus_out, ["hb."], on_sequence=lambda kind, src, topic, value: events.append((kind, topic, value))
    )
    first = Publisher(bus.ctx, bus.bus_in, "trades")
    await _subscribed(bus, subscriber, first, "hb.")
    beat = Heartbeat(program="trades", pid=1, uptime_s=0.0)

    for _ in range(3):
        first.publish("hb.trades", beat)
    got = [await asyncio.wait_for(subscriber.recv(), 5) for _ in range(3)]
    first.close()
    second = Publisher(bus.ctx, bus.bus_in, "trades")  # a restarted program: seq starts again at 1
    await _subscribed(bus, subscriber, second, "hb.")
    second.publish("hb.trades", beat)
    second._seq["hb.trades"] += 5  # simulate five messages lost on the way
    second.publish("hb.trades", beat)
    got += [await asyncio.wait_for(subscriber.recv(), 5) for _ in range(2)]
    second.close()
    subscriber.close()

    assert [m.seq for _, m in got] == [1, 2, 3, 1, 7]
    trades_events = [e for e in events if e[1] == "hb.trades"]
    assert trades_events == [("restart", "hb.trades", 1), ("gap", "hb.trades", 5)]
    assert subscriber.counters["seq_restarts"] >= 1  # the handshake topic may restart too
    assert subscriber.counters["seq_gaps"] == 1


@pytest.mark.asyncio
@TRANSPORTS
async def test_bus_malformed_frames_are_counted_and_dropped(bus) -> None:
    subscriber = Subscriber(bus.ctx, bus.bus_out, ["px."])
    publisher = Publisher(bus.ctx, bus.bus_in, "prices")
    await _subscribed(bus, subscriber, publisher, "px.")
    subscriber.counters.clear()
    bad_frames = [
        [b"px.AAPL", b"\xc1\xff\x00garbage"],  # not msgpack
        [b"px.AAPL", msgspec.msgpack.encode({"type": "no-such-tag", "src": "x"})],  # unknown tag
        [b"px.AAPL", msgspec.msgpack.encode({"type": "px", "symbol": "AAPL", "price": float("nan")})],  # NaN
        [b"px.AAPL", msgspec.msgpack.encode({"type": "px", "symbol": "AAPL", "price": "12"})],  # wrong type
        [b"px.AAPL", msgspec.msgpack.encode({"type": "px", "symbol": "AAPL", "price": -3.0})],  # negative
        [b"px.AAPL"],  # one frame
        [b"px.\xff\xfe", encode(Tick(symbol="AAPL", price=1.0))],  # non-ASCII topic
    ]

    for frames in bad_frames:
        publisher.send_raw(frames)
    publisher.publish(topic_tick("AAPL"), Tick(symbol="AAPL", price=101.5))
    topic, message = await asyncio.wait_for(subscriber.recv(), 5)
    publisher.close()
    subscriber.close()

    assert isinstance(message, Tick)
    assert (topic, message.price) == ("px.AAPL", 101.5)
    assert subscriber.counters["rejects"] == len(bad_frames)
    assert subscriber.counters["rejects_decode"] == 5


@pytest.mark.asyncio
async def test_bus_publish_returns_the_stamped_copy_without_checking_it_again(bus) -> None:
    """The stamp is three envelope fields: ``publish`` copies the message and sets them; it does
    not build the message again (``structs.replace`` runs the whole ``__post_init__`` check per
    publish). A message is checked where it is built and where it is decoded, not in between:
    one smuggled past its constructor still leaves, and the subscriber rejects it."""
    subscriber = Subscriber(bus.ctx, bus.bus_out, ["hb."])
    publisher = Publisher(bus.ctx, bus.bus_in, "trades", clock_ns=lambda: 42)
    await _subscribed(bus, subscriber, publisher, "hb.")
    subscriber.counters.clear()
    beat = Heartbeat(program="trades", pid=1, uptime_s=0.5, counters={"fills": 3})
    smuggled = copy.copy(beat)
    msgspec.structs.force_setattr(smuggled, "lag_ms", float("nan"))

    publisher.publish("hb.trades", smuggled)  # structs.replace would raise ValueError here
    stamped = publisher.publish("hb.trades", beat)
    _, received = await asyncio.wait_for(subscriber.recv(), 5)
    publisher.close()
    subscriber.close()

    assert (stamped.src, stamped.seq, stamped.ts) == ("trades", 2, 42)
    assert (beat.src, beat.seq, beat.ts) == ("", 0, 0)  # the caller's message is left as it was
    assert received == stamped
    assert msgspec.structs.replace(stamped, src="", seq=0, ts=0) == beat
    assert subscriber.counters["rejects_decode"] == 1


def test_seq_tracker_reports_duplicate_gap_restart() -> None:
    tracker = SeqTracker()

    results = [tracker.observe("a", "t", s) for s in (1, 2, 2, 5, 1, 2)]

    assert results == [None, None, ("duplicate", 2), ("gap", 2), ("restart", 1), None]


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("http://x", "expected inproc://, ipc:// or tcp://"),
        ("tcp://0.0.0.0:5555", "binding is allowed on loopback only"),
        ("tcp://10.1.2.3:9", "binding is allowed on loopback only"),
        ("ipc://", "expected inproc://, ipc:// or tcp://"),
    ],
)
def test_bus_bind_rejects_bad_or_non_loopback_endpoints(endpoint: str, reason: str) -> None:
    with pytest.raises(BusError, match=f"^bus endpoint: {reason}, found '{endpoint}'$"):
        prepare_endpoint(endpoint, bind=True)


@pytest.mark.asyncio
@TRANSPORTS
async def test_a_live_subscriber_receives_what_is_published_the_moment_it_is_returned(bus, tmp_path) -> None:
    """``state`` says it is ready once ``runtime.live_subscriber`` returned, and a producer re-sends
    its one-shot document at once: that document must arrive. A bare subscriber just connected
    drops it until its subscription reached the proxy (the slow joiner); the live one does not."""
    settings = make_settings(Dsn("postgresql://u@127.0.0.1:1/x"), tmp_path,
                             CHMGR_BUS_IN=bus.bus_in, CHMGR_BUS_OUT=bus.bus_out)
    ctx = WorkerContext("state", settings, bus.ctx)
    bus.connect(ctx.publisher)
    subscriber, early = await runtime.live_subscriber(ctx, ["px."])
    try:
        bus.inject(topic_tick("AAPL"), Tick(symbol="AAPL", price=1.0, ts_event=1))  # the moment it is live
        topic, message = await asyncio.wait_for(subscriber.recv(), 10)
    finally:
        subscriber.close()
        ctx.close()

    assert all(not isinstance(m, Probe) for _, m in early)
    assert topic == topic_tick("AAPL")
    assert isinstance(message, Tick)
    assert message.symbol == "AAPL"

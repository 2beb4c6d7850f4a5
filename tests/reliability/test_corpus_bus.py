"""Bad-input corpus for the bus: every hostile frame is counted and dropped, nothing crashes.

The corpus is generated deterministically (seeded) from every message type: each field is
replaced by values of the wrong type, NaN/inf, negative and huge numbers; payloads are truncated
and bit-flipped; tags are unknown; frame counts and topics are wrong. Hand-written cases are
listed in ``HAND_WRITTEN``. A frame may still decode when the mutation kept it valid (e.g. one
string replaced by another): then every number in it must be finite.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from decimal import Decimal

import msgspec
import pytest

from coldharbour import messages as m
from coldharbour.bus import Publisher, Subscriber
from tests.test_messages import _every_message

HOSTILE_VALUES: list[object] = [
    None, "", "x" * 10_000, -1, 0, 2**64 - 1, -(2**63), 1e308, float("nan"), float("inf"), float("-inf"),
    "NaN", "Infinity", "-1e999", "1e999", [], {}, [1, 2], {"a": 1}, True, b"\x00\xff", "'; DROP TABLE x; --",
]  # fmt: skip
HAND_WRITTEN: list[list[bytes]] = [
    [b"px.AAPL", b""],
    [b"px.AAPL", b"\x80"],  # empty map: no tag
    [b"px.AAPL", b"\x81\xa4type\xa2px"],  # tag only
    [b"", b"\x81\xa4type\xa2px"],
    [b"px.AAPL", b"\x91\x01"],  # array
    [b"px.AAPL", b"\xde\xff\xff"],  # map header claiming 65535 entries, no body
    [b"px.AAPL", b"\xdb\xff\xff\xff\xff"],  # str32 of 4 GB, no body
    [b"trade.demo", msgspec.msgpack.encode({"type": "trade.update", "account": "demo"})],
    [b"snap.demo", msgspec.msgpack.encode({
        "type": "snap", "account": "demo", "taken_at": 1,
        "positions": [{"symbol": "A", "qty": "1e400", "avg_entry_price": "1"}],
    })],
    [b"px.AAPL"],
    [b"px.AAPL", b"\x80", b"extra"],
    [b"\xff\xfe", msgspec.msgpack.encode({"type": "probe", "token": "x"})],
]  # fmt: skip


def _mutations(message: m.Msg, rng: random.Random) -> list[bytes]:
    base = msgspec.to_builtins(message, builtin_types=(Decimal,), enc_hook=str)
    encoded = m.encode(message)
    out: list[bytes] = []
    for field in base:
        for value in HOSTILE_VALUES:
            out.append(msgspec.msgpack.encode({**base, field: value}, enc_hook=str))
    for _ in range(10):
        cut = rng.randrange(0, max(1, len(encoded)))
        out.append(encoded[:cut])
        flipped = bytearray(encoded)
        index = rng.randrange(len(flipped))
        flipped[index] ^= 1 << rng.randrange(8)
        out.append(bytes(flipped))
    out.append(msgspec.msgpack.encode({**base, "type": f"{base['type']}.v9"}, enc_hook=str))
    return out


def corpus() -> list[list[bytes]]:
    """Return every hostile frame list (deterministic)."""
    rng = random.Random(20261124)
    frames = [list(f) for f in HAND_WRITTEN]
    for message in _every_message():
        frames += [[b"topic.x", payload] for payload in _mutations(message, rng)]
    frames += [[b"topic.x", rng.randbytes(rng.randrange(1, 64))] for _ in range(200)]
    return frames


def _numbers_finite(value: object) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite()
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_numbers_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_numbers_finite(v) for v in value)
    if isinstance(value, msgspec.Struct):
        return all(_numbers_finite(getattr(value, f)) for f in value.__struct_fields__)
    return True


def _expected_rejects(frames: list[list[bytes]]) -> dict[str, int]:
    """Return the reject counters a subscriber must show for ``frames``: the frame count, then the
    topic's ASCII, then the decoder (``m.decode``) decide, in that order."""
    reasons: Counter[str] = Counter()
    for frame in frames:
        if len(frame) != 2:
            reasons["frame_count"] += 1
        elif not frame[0].isascii():
            reasons["topic"] += 1
        else:
            try:
                m.decode(frame[1])
            except msgspec.DecodeError:
                reasons["decode"] += 1
    return {"rejects": sum(reasons.values()), **{f"rejects_{k}": v for k, v in reasons.items()}}


def test_corpus_is_large() -> None:
    assert len(corpus()) >= 1000


@pytest.mark.parametrize("payload", [f[1] for f in corpus() if len(f) == 2], ids=lambda _: "")
def test_decoder_rejects_or_yields_only_finite_numbers(payload: bytes) -> None:
    try:
        message = m.decode(payload)
    except msgspec.DecodeError:
        return
    assert _numbers_finite(message)


@pytest.mark.asyncio
async def test_subscriber_counts_every_rejection_and_survives(bus) -> None:
    frames = corpus()
    subscriber = Subscriber(bus.ctx, bus.bus_out, [""])
    publisher = Publisher(bus.ctx, bus.bus_in, "fuzz")
    while True:  # handshake: wait until a probe makes it through
        publisher.publish(m.TOPIC_PROBE, m.Probe(token="ready"))
        try:
            await asyncio.wait_for(subscriber.recv(), 0.05)
            break
        except TimeoutError:
            continue
    while True:
        try:
            await asyncio.wait_for(subscriber.recv(), 0.05)
        except TimeoutError:
            break
    subscriber.counters.clear()

    for f in frames:
        publisher.send_raw(f)
    publisher.publish(m.TOPIC_PROBE, m.Probe(token="end"))
    accepted = []
    while True:
        _topic, message = await asyncio.wait_for(subscriber.recv(), 10)
        if isinstance(message, m.Probe) and message.token == "end":
            break
        accepted.append(message)
    publisher.close()
    subscriber.close()

    rejects = {k: v for k, v in subscriber.counters.items() if k.startswith("rejects")}
    assert subscriber.counters["messages_in"] == len(frames) + 1
    assert rejects == _expected_rejects(frames)
    assert len(accepted) == len(frames) - rejects["rejects"]
    assert all(_numbers_finite(a) for a in accepted)

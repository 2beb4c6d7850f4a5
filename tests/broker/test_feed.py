"""Feed decoding: every wire variation the simulator sends, and a bad-input corpus."""

from __future__ import annotations

import math

import msgspec
import pytest

from coldharbour.broker.feed import Skip, decode_frames
from coldharbour.messages import Tick
from coldharbour.sim.feed import Tick as SimTick
from coldharbour.sim.feed import WireShape, encode_trade

EXCLUDE = frozenset({"D", "M", "E"})
TS = 1_709_305_200_123_456_789


def pack(body: object) -> list[bytes]:
    return [msgspec.msgpack.encode(body)]


@pytest.mark.parametrize(
    "shape",
    [WireShape(), WireShape(long_keys=True), WireShape(joined_conditions=True), WireShape(True, True, True)],
)
def test_decode_simulator_shapes_yield_ticks(shape: WireShape) -> None:
    frame = encode_trade(SimTick("AAPL", 185.01, 100, ("@", "I"), TS, shape))

    tick = decode_frames([frame], EXCLUDE)

    assert isinstance(tick, Tick)
    assert (tick.symbol, tick.price, tick.size) == ("AAPL", 185.01, 100.0)
    assert abs(tick.ts_event - TS) < 1000  # ISO time keeps microseconds


def test_decode_leading_topic_frame_tolerated() -> None:
    frame = encode_trade(SimTick("MSFT", 400.0, 5, (), TS))

    assert isinstance(decode_frames([b"trade.MSFT", frame], EXCLUDE), Tick)


@pytest.mark.parametrize(("conditions"), [["D"], "@-M", ["I", "E"]])
def test_decode_excluded_condition_skipped_not_rejected(conditions: object) -> None:
    result = decode_frames(pack({"trade": {"S": "AAPL", "p": 1.0, "c": conditions, "t": TS}}), EXCLUDE)

    assert result == Skip("condition_excluded", is_reject=False)


def test_decode_unflagged_trade_kept() -> None:
    assert isinstance(decode_frames(pack({"trade": {"S": "AAPL", "p": 1.5, "t": TS}}), EXCLUDE), Tick)


def test_decode_other_kind_skipped() -> None:
    assert decode_frames(pack({"quote": {"S": "AAPL"}}), EXCLUDE) == Skip("kind_quote", is_reject=False)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "frame_count"),
        ([b"a", b"b", b"c"], "frame_count"),
        ([b"\xc1\xff"], "msgpack"),
        (pack([1, 2]), "shape"),
        (pack({}), "shape"),
        (pack({"trade": [1]}), "shape"),
        (pack({"trade": {"p": 1.0}}), "symbol"),
        (pack({"trade": {"S": "", "p": 1.0}}), "symbol"),
        (pack({"trade": {"S": "X" * 40, "p": 1.0}}), "symbol"),
        (pack({"trade": {"S": "AAPL", "p": "1.0"}}), "price_type"),
        (pack({"trade": {"S": "AAPL", "p": True}}), "price_type"),
        (pack({"trade": {"S": "AAPL", "p": math.nan}}), "price_value"),
        (pack({"trade": {"S": "AAPL", "p": math.inf}}), "price_value"),
        (pack({"trade": {"S": "AAPL", "p": -3.0}}), "price_value"),
        (pack({"trade": {"S": "AAPL", "p": 0}}), "price_value"),
        (pack({"trade": {"S": "AAPL", "p": 1.0, "c": 5}}), "conditions"),
        (pack({"trade": {"S": "AAPL", "p": 1.0, "s": -1}}), "size"),
        (pack({"trade": {"S": "AAPL", "p": 1.0, "t": "noon"}}), "time"),
        (pack({"trade": {"S": "AAPL", "p": 1.0, "t": "2024-03-01T15:00:00"}}), "time"),
        (pack({"trade": {"S": "AAPL", "p": 1.0, "t": -5}}), "time"),
    ],
)
def test_decode_bad_input_rejected_with_reason(frames: list[bytes], reason: str) -> None:
    assert decode_frames(frames, EXCLUDE) == Skip(reason)

"""Feed decoding: every wire variation the simulator sends, and a bad-input corpus."""

from __future__ import annotations

import math

import msgspec
import pytest

from coldharbour.broker.feed import Skip, TradeFilter, decode_frames
from coldharbour.messages import Tick
from coldharbour.sim.feed import Tick as SimTick
from coldharbour.sim.feed import WireShape, encode_trade

EXCLUDE = frozenset({"D", "M", "E"})
accept_trade = TradeFilter(EXCLUDE).accept
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


BAD_FRAMES = [
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
    # what the store or the bus would refuse
    (pack({"trade": {"S": "AA\x00PL", "p": 1.0, "t": TS}}), "symbol"),
    (pack({"trade": {"S": "AAPL", "p": 1e308, "t": TS}}), "price_value"),
    (pack({"trade": {"S": "AAPL", "p": 1e-300, "t": TS}}), "price_value"),
    (pack({"trade": {"S": "AAPL", "p": 1.0, "t": 2**64 - 1}}), "time"),
    (pack({"trade": {"S": "AAPL", "p": 1.0, "t": 1_709_305_200_123}}), "time"),  # ms, not ns
    (pack({"trade": {"S": "AAPL", "p": 1.0, "t": "9999-12-31T00:00:00Z"}}), "time"),
]


@pytest.mark.parametrize(("frames", "reason"), BAD_FRAMES)
def test_decode_bad_input_rejected_with_reason(frames: list[bytes], reason: str) -> None:
    assert decode_frames(frames, EXCLUDE) == Skip(reason)


FAST_CORPUS = [
    {"trade": {"S": "aapl ", "p": 185, "c": ["@", "I"], "t": TS, "s": 100}},
    {"trade": {"symbol": "MSFT", "price": 400.5, "conditions": "@-F", "t": TS}},
    {"trade": {"S": "AAPL", "p": 1.5}},
    {"trade": {"S": "AAPL", "symbol": "MSFT", "p": 2.0, "price": 3.0}},
    {"trade": {"S": "AAPL", "p": 1.0, "c": ["I", " D "], "t": TS}},
    {"trade": {"S": "AAPL", "p": 1.0, "c": "@--M", "t": TS}},
    {"trade": {"S": "AAPL", "p": 1.0, "c": "@--M", "t": TS}},  # again: from the memo
    {"trade": {"S": "AAPL", "p": 1.0, "c": [], "t": TS}},
    {"trade": {"S": "AAPL", "p": 1.0, "c": "", "t": TS}},
    {"trade": {"S": "AAPL", "p": 1.0, "c": None}},
    {"trade": {"S": "AAPL", "p": 1.0, "t": "2024-03-01T15:00:00Z"}},
    {"trade": {"S": "AAPL", "p": 1.0, "t": True}},
    {"trade": {"S": "AAPL", "p": 1.0, "s": None}},
    {"trade": {"S": "AAPL", "p": 1.0, "s": math.inf}},
    {"trade": {"S": "AAPL", "p": 1.0, "x": "V", "i": 7, "z": "C"}},
    {"trade": {"S": None, "symbol": "AAPL", "p": 1.0}},
    {"trade": {"S": "AAPL", "p": None, "price": 1.0}},
    {"quote": {"S": "AAPL", "p": 1.0}},
    {"trade": {"S": "AAPL", "p": 1.0}, "quote": {}},
    {"quote": {}, "trade": {"S": "AAPL", "p": 1.0}},
    {"trade": {"S": "   ", "p": 1.0}},
    {"trade": {"S": "PENNY", "p": 0.000123456789, "t": TS}},  # below the fast path's price floor
    {"trade": {"S": "PENNY", "p": 0.0005, "t": TS}},
    {"trade": {"S": "AAPL", "p": 999_999_999_999_999.0, "t": TS}},
    {"trade": {"S": "AAPL", "p": 1.0, "t": 0}},
]


@pytest.mark.parametrize("body", FAST_CORPUS)
def test_fast_path_accepts_only_what_decode_frames_turns_into_the_same_tick(body: object) -> None:
    frame = msgspec.msgpack.encode(body)

    fast, slow = accept_trade(frame), decode_frames([frame], EXCLUDE)

    if fast is not None:
        assert isinstance(slow, Tick)
        assert fast == (slow.symbol, slow.price, slow.size, slow.ts_event)
        assert [type(v) for v in fast] == [str, float, float, int]


@pytest.mark.parametrize(("frames", "reason"), BAD_FRAMES)
def test_fast_path_leaves_bad_frames_to_decode_frames(frames: list[bytes], reason: str) -> None:
    assert all(accept_trade(frame) is None for frame in frames[-1:])


def test_fast_path_takes_the_usual_shapes() -> None:
    for shape in (WireShape(), WireShape(long_keys=True), WireShape(joined_conditions=True)):
        frame = encode_trade(SimTick("AAPL", 185.01, 100, ("@", "I"), TS, shape))
        assert accept_trade(frame) == ("AAPL", 185.01, 100.0, TS)


def test_issue_9_invalid_utf8_in_a_feed_string_is_rejected_not_raised() -> None:
    """Bug: a feed frame whose symbol string was not valid UTF-8 escaped ``decode_frames`` as
    ``UnicodeDecodeError`` (msgspec raises it, not ``DecodeError``), so the fast path's fallback
    crashed the ``prices`` program instead of counting a rejection."""
    frame = msgspec.msgpack.encode({"trade": {"S": "AAPL", "p": 185.01}}).replace(b"AAPL", b"\xa4\xff\xfe\xa4\xa4")

    assert accept_trade(frame) is None
    assert decode_frames([frame], EXCLUDE) == Skip("msgpack")


def test_a_tick_stamped_too_far_ahead_is_rejected_on_both_paths() -> None:
    """Issue 14: one tick stamped in the future hid every later real one (the mark froze)."""
    fast = TradeFilter(EXCLUDE)
    fast.horizon_ns = TS + 300 * 10**9
    ahead = msgspec.msgpack.encode({"trade": {"S": "AAPL", "p": 1.0, "t": TS + 301 * 10**9}})
    near = msgspec.msgpack.encode({"trade": {"S": "AAPL", "p": 1.0, "t": TS + 299 * 10**9}})

    assert fast.accept(ahead) is None
    assert decode_frames([ahead], EXCLUDE, TS) == Skip("time_future")
    assert fast.accept(near) == ("AAPL", 1.0, 0.0, TS + 299 * 10**9)
    assert isinstance(decode_frames([near], EXCLUDE, TS), Tick)

"""Bad-input corpus for the outside world: feed ticks and broker JSON, through the real decoders.

Generated deterministically (seeded) from one good value of each shape: every field replaced by
values of the wrong type, NaN/inf, negative and huge numbers, or removed; whole bodies replaced
by HTML error pages, lists, scalars; msgpack frames truncated and bit-flipped. Every case is
rejected with a reason (``Skip``/``Rejected``) — counted, never raised — or, when the mutation
kept it valid, yields only finite numbers. Then a running ``state`` gets hostile frames on every
topic it reads and writes no row. (Bus frames and config values: ``test_corpus_bus.py``,
``test_corpus_config.py``.)
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from coldharbour.broker.convert import (
    Rejected,
    convert_account,
    convert_activity,
    convert_orders,
    convert_position,
    convert_trade_update,
)
from coldharbour.broker.feed import Skip, decode_frames
from coldharbour.config import Dsn
from tests.fixtures.bus import InprocBus
from tests.reliability.test_corpus_bus import HOSTILE_VALUES, _numbers_finite
from tests.workers.state_harness import StateHarness

EXCLUDE = frozenset({"D", "M", "E"})
TS = 1_709_305_200_123_456_789
HTML_PAGES: list[object] = [
    "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
    "<!DOCTYPE html><html><body>Service Unavailable</body></html>",
    "<html>", "", "null", "{", "[1,", "\x00\xff",
]  # fmt: skip
NUMBERS: list[object] = [float("nan"), float("inf"), float("-inf"), -1, -0.0, 0, 1e308, 10**30, "1e999", "-5", "NaN"]

TICK: dict[str, object] = {"S": "AAPL", "p": 185.01, "s": 100, "c": ["@", "I"], "t": TS}
ORDER_ID = "61e69015-8549-4bfd-b9c3-01e75843f47d"
ORDER: dict[str, object] = {
    "id": ORDER_ID, "client_order_id": "c-1", "created_at": "2024-03-01T15:00:00.123456Z",
    "updated_at": "2024-03-01T15:00:00.2Z", "submitted_at": "2024-03-01T15:00:00.1Z",
    "filled_at": "2024-03-01T15:00:00.2Z", "symbol": "AAPL", "asset_class": "us_equity", "qty": "10",
    "filled_qty": "10", "filled_avg_price": "185.01", "order_class": "simple", "order_type": "market",
    "type": "market", "side": "buy", "time_in_force": "gtc", "limit_price": None, "stop_price": None,
    "status": "filled", "extended_hours": False, "legs": None,
}  # fmt: skip
UPDATE: dict[str, object] = {
    "stream": "trade_updates",
    "data": {"event": "fill", "execution_id": "0d9b3c0e-4f33-4a1e-9a59-2c1e43b1a0c4",
             "timestamp": "2024-03-01T15:00:00.2Z", "price": "185.01", "qty": "10", "position_qty": "10",
             "order": ORDER},
}  # fmt: skip
POSITION: dict[str, object] = {
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": "AAPL", "qty": "10", "side": "long",
    "avg_entry_price": "185.01", "market_value": "1850.1", "current_price": "185.01",
}  # fmt: skip
ACCOUNT: dict[str, object] = {"id": "a-1", "cash": "100000", "equity": "100000", "status": "ACTIVE"}
ACTIVITY: dict[str, object] = {
    "id": "20240301100000123::0d9b3c0e-4f33-4a1e-9a59-2c1e43b1a0c4", "activity_type": "FILL",
    "transaction_time": "2024-03-01T15:00:00.2Z", "type": "fill", "price": "185.01", "qty": "10",
    "side": "buy", "symbol": "AAPL", "leaves_qty": "0", "order_id": ORDER_ID, "cum_qty": "10",
}  # fmt: skip


def _variants(base: dict[str, object], values: list[object]) -> list[object]:
    """Every field set to every value, every field removed, and the hostile whole bodies."""
    out: list[object] = []
    for field in base:
        out += [{**base, field: value} for value in values]
        out.append({k: v for k, v in base.items() if k != field})
    return [*out, *HTML_PAGES, *HOSTILE_VALUES]


def _frame_mutations(rng: random.Random) -> list[list[bytes]]:
    encoded = msgspec.msgpack.encode({"trade": TICK})
    frames: list[list[bytes]] = []
    for _ in range(60):
        frames.append([encoded[: rng.randrange(len(encoded))]])
        flipped = bytearray(encoded)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        frames.append([bytes(flipped)])
    frames += [[], [b"a", b"b", encoded], [rng.randbytes(rng.randrange(1, 40))]]
    return frames


def feed_corpus() -> list[list[bytes]]:
    """Return every hostile feed message (deterministic)."""
    rng = random.Random(9)
    numbers = [n for n in NUMBERS if not isinstance(n, int) or abs(n) < 2**63]  # msgpack's integer range
    bodies = _variants(TICK, [*HOSTILE_VALUES, *numbers])
    frames = [[msgspec.msgpack.encode({"trade": body}, enc_hook=repr)] for body in bodies]
    frames += [[msgspec.msgpack.encode(body, enc_hook=repr)] for body in HOSTILE_VALUES]
    return frames + _frame_mutations(rng)


def _nested(base: dict[str, object], key: str, values: list[object]) -> list[object]:
    inner = base[key]
    assert isinstance(inner, dict)
    return [{**base, key: variant} for variant in _variants(inner, values)]


BROKER_CASES: dict[str, tuple[Callable[[object], object], list[object]]] = {
    "order": (lambda data: convert_orders([data]), _variants(ORDER, [*HOSTILE_VALUES, *NUMBERS])),
    "trade_update": (
        lambda data: convert_trade_update(data, "demo"),
        [*_nested(UPDATE, "data", [*HOSTILE_VALUES, *NUMBERS]), *_variants(UPDATE, HOSTILE_VALUES)],
    ),
    "position": (convert_position, _variants(POSITION, [*HOSTILE_VALUES, *NUMBERS])),
    "account": (convert_account, _variants(ACCOUNT, [*HOSTILE_VALUES, *NUMBERS])),
    "activity": (convert_activity, _variants(ACTIVITY, [*HOSTILE_VALUES, *NUMBERS])),
}


def _outcome(result: object) -> tuple[bool, bool]:
    """Return (rejected, numbers finite) of one converter result."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list):  # convert_orders
        converted, rejects = result
        return bool(rejects) or not converted, all(_numbers_finite(c.order) for c in converted)
    if result is None or isinstance(result, Rejected):
        return True, True
    return False, _numbers_finite(result)


def test_corpus_broker_and_feed_are_large() -> None:
    total = len(feed_corpus()) + sum(len(cases) for _, cases in BROKER_CASES.values())

    assert total >= 1000


def test_corpus_feed_every_bad_tick_rejected_with_reason() -> None:
    reasons: Counter[str] = Counter()
    ticks = []

    for frames in feed_corpus():
        result = decode_frames(frames, EXCLUDE)
        if isinstance(result, Skip):
            reasons[result.reason] += 1
        else:
            ticks.append(result)

    print(f"feed corpus: cases={len(feed_corpus())} rejected={sum(reasons.values())} reasons={dict(reasons)}")
    assert sum(reasons.values()) + len(ticks) == len(feed_corpus())
    assert sum(reasons.values()) >= 0.7 * len(feed_corpus())  # removing an optional field stays valid
    assert all(math.isfinite(t.price) and t.price > 0 and t.symbol and math.isfinite(t.size) for t in ticks)
    assert {"price_type", "price_value", "symbol", "time", "msgpack", "shape", "frame_count"} <= set(reasons)


@pytest.mark.parametrize("kind", sorted(BROKER_CASES))
def test_corpus_broker_json_rejected_or_finite_never_raises(kind: str) -> None:
    convert, cases = BROKER_CASES[kind]
    rejected = 0
    infinite = []

    for data in cases:
        was_rejected, finite = _outcome(convert(data))
        rejected += was_rejected
        if not finite:
            infinite.append(data)

    print(f"broker {kind} corpus: cases={len(cases)} rejected={rejected}")
    assert infinite == []
    assert rejected >= len(cases) / 3  # a mutated id or status may stay valid; numbers never


def _hostile_state_frames() -> list[list[bytes]]:
    good: dict[str, Any] = {"account": "demo", "src": "fuzz", "seq": 1, "ts": TS}
    snap = {"type": "snap", **good, "taken_at": TS}
    bodies: list[dict[str, Any]] = [
        {"type": "trade.update", **good, "order": {"id": "x"}},
        *({**snap, "positions": [{"symbol": "AAPL", "qty": q, "avg_entry_price": "1"}]} for q in ("NaN", "1e999")),
        {"type": "fills.page", **good, "fills": [{"order_id": ORDER_ID, "qty": "-5", "price": "inf"}]},
        {"type": "px", **good, "symbol": "AAPL", "price": float("nan"), "ts_event": TS},
        {"type": "px", **good, "symbol": "AAPL", "price": -3.0, "ts_event": TS},
        {"type": "metrics", **good, "payload": "[1,2]", "computed_at": TS},
    ]  # fmt: skip
    topics = [b"trade.demo", b"snap.demo", b"fills.demo", b"orders.demo", b"px.AAPL", b"metrics.demo"]
    frames = [[t, msgspec.msgpack.encode(b, enc_hook=repr)] for t in topics for b in bodies]
    rng = random.Random(4)
    frames += [[t, rng.randbytes(rng.randrange(1, 80))] for t in topics for _ in range(20)]
    frames += [[t, h.encode() if isinstance(h, str) else b""] for t in topics for h in HTML_PAGES]
    return frames


TABLES = ("accounts.account_open_positions_demo", "accounts.account_closed_demo", "accounts.latest_prices",
          "account_activities.raw_orders_demo", "account_activities.raw_activities_demo",
          "accounts.account_metrics_demo")  # fmt: skip


@pytest.mark.asyncio
async def test_corpus_hostile_frames_through_running_state_write_no_row(migrated_dsn: Dsn, bus: InprocBus) -> None:
    harness = StateHarness(migrated_dsn, bus)
    await harness.start()
    publisher = bus.publisher
    frames = _hostile_state_frames()
    try:
        before = harness.ctx.counters["rejects"]
        for frame in frames:
            publisher.send_raw(frame)
        await harness.settle()
        rows = {table: (await harness.query(f"SELECT count(*) FROM {table}"))[0][0] for table in TABLES}
        rejects = harness.ctx.counters["rejects"] - before
        alive = not harness.task.done()
    finally:
        await harness.close()

    print(f"state corpus: frames={len(frames)} rejects={rejects} rows={rows}")
    assert alive
    assert rows == dict.fromkeys(TABLES, 0)
    assert rejects >= len(frames) - 5  # a frame that decodes is valid by construction (none here)

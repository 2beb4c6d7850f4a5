"""Every bus payload type (one tagged union), the encoder/decoder, and the topic builders.

A bus message is two frames: a dot-separated ASCII topic (prefix-subscribable) and a msgpack
payload. Payloads are frozen msgspec Structs sharing the envelope ``src`` (program name),
``seq`` (per-publisher counter from 1) and ``ts`` (UTC ns), stamped by ``bus.Publisher``.

Evolution rules (STYLE.md §2.4): each class has an explicit, stable ``tag``; a new field gets a
default and goes last; a field's type never changes; a tag is never reused. Messages do not set
``forbid_unknown_fields`` so an older worker skips fields a newer one added.

Money fields are ``Decimal`` (msgpack-encoded as strings, losslessly) and are checked for
finiteness in ``__post_init__``, so a NaN/inf frame is a ``ValidationError`` at the edge.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Final

import msgspec


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every payload; ``bus.Publisher`` stamps the three fields."""

    src: str = ""
    seq: int = 0
    ts: int = 0  # UTC ns


def check_finite(*values: Decimal | float | None) -> None:
    """Raise ``ValueError`` if any value is NaN or infinite (msgspec turns it into a rejection)."""
    for value in values:
        if value is None:
            continue
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"non-finite number {value}")
        elif not math.isfinite(value):
            raise ValueError(f"non-finite number {value}")


# --- lifecycle -------------------------------------------------------------------------------


class Heartbeat(Msg, frozen=True, tag="hb"):
    """A program is alive: pid, uptime and its counters (messages in/out, rejects, lag)."""

    program: str
    pid: int
    uptime_s: float
    counters: dict[str, int] = {}
    lag_ms: float | None = None
    state: str = "running"  # "running" | "stopping" | "sleeping"


class Probe(Msg, frozen=True, tag="probe"):
    """A no-op message used to prove a subscription is live (slow-joiner handshake)."""

    token: str


# --- commands --------------------------------------------------------------------------------


class ResyncRequested(Msg, frozen=True, tag="cmd.resync"):
    """Ask ``snapshot`` for a full snapshot of one account (after a gap, reconnect or start)."""

    account: str  # slug
    reason: str
    symbols: tuple[str, ...] = ()  # empty = everything


# --- market data -----------------------------------------------------------------------------


class Tick(Msg, frozen=True, tag="px"):
    """A validated trade print from the price feed.

    ``price`` travels as a float on this hot path (STYLE.md §2.4 rule 5's measured exception);
    ``state`` turns it into a Decimal once, when it applies it to a row.
    """

    symbol: str
    price: float
    size: float = 0.0
    ts_event: int = 0  # UTC ns of the trade, from the feed

    def __post_init__(self) -> None:
        if not math.isfinite(self.price) or self.price <= 0:
            raise ValueError(f"price must be finite and positive, found {self.price}")
        if not math.isfinite(self.size) or self.size < 0:
            raise ValueError(f"size must be finite and non-negative, found {self.size}")


Message = Heartbeat | Probe | ResyncRequested | Tick

ENCODER: Final = msgspec.msgpack.Encoder(decimal_format="string")
DECODER: Final = msgspec.msgpack.Decoder(Message)


def encode(message: Msg) -> bytes:
    """Return the msgpack payload frame of ``message``."""
    return ENCODER.encode(message)


def decode(payload: bytes) -> Message:
    """Return the typed message in ``payload``; raise ``msgspec.DecodeError`` if it is not one."""
    message: Message = DECODER.decode(payload)
    return message


# --- topics: built here only, never as literals elsewhere ------------------------------------


def topic_heartbeat(program: str) -> str:
    """Return ``hb.<program>``."""
    return f"hb.{program}"


def topic_tick(symbol: str) -> str:
    """Return ``px.<SYMBOL>``."""
    return f"px.{symbol}"


def topic_resync(slug: str) -> str:
    """Return ``cmd.resync.<slug>``."""
    return f"cmd.resync.{slug}"


def topic_trade(slug: str) -> str:
    """Return ``trade.<slug>`` (order/fill updates from the stream)."""
    return f"trade.{slug}"


def topic_snapshot(slug: str) -> str:
    """Return ``snap.<slug>`` (full broker snapshots)."""
    return f"snap.{slug}"


def topic_orders(slug: str) -> str:
    """Return ``orders.<slug>`` (order-history pages)."""
    return f"orders.{slug}"


def topic_cash(slug: str) -> str:
    """Return ``cash.<slug>`` (account activities)."""
    return f"cash.{slug}"


def topic_equity(slug: str) -> str:
    """Return ``equity.<slug>`` (equity rows for ``state`` to write)."""
    return f"equity.{slug}"


def topic_metrics(slug: str) -> str:
    """Return ``metrics.<slug>`` (KPI documents for ``state`` to write)."""
    return f"metrics.{slug}"


def topic_state(slug: str) -> str:
    """Return ``state.<slug>`` (change events published by ``state`` after a commit)."""
    return f"state.{slug}"


TOPIC_SESSION: Final = "session"
TOPIC_PROBE: Final = "probe"
PREFIX_HEARTBEAT: Final = "hb."
PREFIX_TICK: Final = "px."
PREFIX_RESYNC: Final = "cmd.resync."

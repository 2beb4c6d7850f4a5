"""The internal ZeroMQ bus: proxy, publisher, subscriber, sequence tracking.

``bus`` runs ``Proxy`` (XSUB bound at ``bus_in``, XPUB bound at ``bus_out``). Programs publish
through ``Publisher`` (connects PUB to ``bus_in``; stamps ``src``/``seq``/``ts``) and receive
through ``Subscriber`` (connects SUB to ``bus_out``; decodes with the one typed decoder; counts
and drops anything that does not decode; never raises on bad input).

Sequence numbers count per (publisher, topic), from 1 at publisher start, so a subscriber that
listens to some prefixes only still sees a dense sequence on each topic it receives;
``SeqTracker`` reports gaps (PUB/SUB dropped something) and restarts (seq went backwards).

High-water marks are unbounded (0) on every hop by default: at libzmq's default of 1,000 a
burst loses most of its messages (docs/architecture.md §2). Correctness never depends on delivery: the
broker is the source of truth and a gap triggers a resync.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import msgspec
import zmq
import zmq.asyncio

from coldharbour.config import make_private_dir
from coldharbour.errors import BusError
from coldharbour.messages import ENCODER, Message, Msg, decode

log = logging.getLogger(__name__)

UNBOUNDED_HWM: Final = 0
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
REJECT_LOG_INTERVAL_S: Final = 10.0


def prepare_endpoint(endpoint: str, *, bind: bool) -> str:
    """Validate ``endpoint``; for ``ipc://`` create its directory (if missing) with mode 0700.

    Binding ``tcp://`` is allowed on loopback only: the bus is internal.
    """
    scheme, _, rest = endpoint.partition("://")
    if scheme not in {"inproc", "ipc", "tcp"} or not rest:
        raise BusError(f"bus endpoint: expected inproc://, ipc:// or tcp://, found {endpoint!r}")
    if scheme == "ipc":
        try:  # only a directory created here is made 0700: an existing one is not ours to chmod
            make_private_dir(Path(rest).parent)
        except OSError as e:
            raise BusError(f"bus endpoint: cannot create the directory of {endpoint!r}: {e.strerror or e}") from e
    elif scheme == "tcp" and bind:
        host = urlsplit(f"tcp://{rest}").hostname or ""
        if host not in LOOPBACK_HOSTS and f"[{host}]" not in LOOPBACK_HOSTS:
            raise BusError(f"bus endpoint: binding is allowed on loopback only, found {endpoint!r}")
    return endpoint


class Proxy:
    """XSUB/XPUB forwarder running in a background thread; ``stop()`` ends it cleanly."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], bus_in: str, bus_out: str) -> None:
        self._ctx = ctx
        self._bus_in = prepare_endpoint(bus_in, bind=True)
        self._bus_out = prepare_endpoint(bus_out, bind=True)
        self._control = f"inproc://bus-control-{id(self)}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bus-proxy", daemon=True)
        self.stats: dict[str, int] = {}

    def start(self, timeout_s: float = 5.0) -> None:
        """Bind both sockets and start forwarding; raise ``BusError`` if binding fails."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise BusError("bus proxy did not start within the deadline")
        if self._error is not None:
            raise BusError(f"bus proxy cannot bind: {self._error}") from self._error

    def _run(self) -> None:
        xsub = self._ctx.socket(zmq.XSUB)
        xpub = self._ctx.socket(zmq.XPUB)
        control = self._ctx.socket(zmq.PAIR)
        try:
            for sock in (xsub, xpub):
                sock.setsockopt(zmq.SNDHWM, UNBOUNDED_HWM)
                sock.setsockopt(zmq.RCVHWM, UNBOUNDED_HWM)
                sock.setsockopt(zmq.LINGER, 0)
            xsub.bind(self._bus_in)
            xpub.bind(self._bus_out)
            control.bind(self._control)
        except zmq.ZMQError as e:
            self._error = e
            self._ready.set()
            for sock in (xsub, xpub, control):
                sock.close(linger=0)
            return
        self._ready.set()
        log.info("bus proxy forwarding in=%s out=%s", self._bus_in, self._bus_out)
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in (xsub, xpub, control):
                sock.close(linger=0)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the proxy thread to terminate and wait for it.

        A TERMINATE sent while the proxy is still entering ``proxy_steerable`` can be missed
        (seen with libzmq 4.3), so the command is repeated until the thread has ended.
        """
        if not self._thread.is_alive():
            return
        command = self._ctx.socket(zmq.PAIR)
        command.setsockopt(zmq.SNDTIMEO, 100)
        try:
            command.connect(self._control)
            deadline = time.monotonic() + timeout_s
            while self._thread.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(zmq.Again):
                    command.send(b"TERMINATE")
                self._thread.join(0.05)
        finally:
            command.close(linger=0)
        if self._thread.is_alive():
            raise BusError("bus proxy did not stop within the deadline")


class Publisher:
    """PUB socket connected to ``bus_in`` that stamps ``src``/``seq``/``ts`` on every message."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        src: str,
        *,
        counters: Counter[str] | None = None,
        hwm: int = UNBOUNDED_HWM,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.src = src
        self._clock_ns = clock_ns
        self._seq: dict[str, int] = {}
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._socket = ctx.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 2000)
        self._socket.connect(prepare_endpoint(endpoint, bind=False))

    def publish(self, topic: str, message: Msg) -> Msg:
        """Stamp ``message`` and send it on ``topic``; return the stamped message."""
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        # A copy stamped in place: ``structs.replace`` would run ``__post_init__`` (the whole
        # message check) again for three envelope fields that cannot make it invalid.
        stamped = copy.copy(message)
        msgspec.structs.force_setattr(stamped, "src", self.src)
        msgspec.structs.force_setattr(stamped, "seq", seq)
        msgspec.structs.force_setattr(stamped, "ts", self._clock_ns())
        # Copied (the default): cheaper than zero-copy for frames this small.
        self._socket.send_multipart((topic.encode("ascii"), ENCODER.encode(stamped)))
        self.counters["messages_out"] += 1
        return stamped

    def send_raw(self, frames: Iterable[bytes]) -> None:
        """Send raw frames (tests and the bad-input corpus only)."""
        self._socket.send_multipart(list(frames))

    def close(self) -> None:
        """Close the socket, giving queued messages up to 2 s to leave."""
        self._socket.close()


class SeqTracker:
    """Tracks ``seq`` per (src, topic); reports gaps and publisher restarts."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}

    def observe(self, src: str, topic: str, seq: int) -> tuple[str, int] | None:
        """Record ``seq``; return ``("gap", missing)``, ``("restart", seq)``, ``("duplicate", seq)`` or None."""
        if not src or seq <= 0:
            return None
        key = (src, topic)
        last = self._last.get(key)
        if last is not None and seq == last:
            return ("duplicate", seq)
        self._last[key] = seq
        if last is None or seq == last + 1:
            return None
        if seq < last:
            return ("restart", seq)
        return ("gap", seq - last - 1)


class Subscriber:
    """SUB socket connected to ``bus_out``: decodes, tracks sequences, counts and drops rejects."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        prefixes: Iterable[str],
        *,
        counters: Counter[str] | None = None,
        hwm: int = UNBOUNDED_HWM,
        on_sequence: Callable[[str, str, str, int], None] | None = None,
    ) -> None:
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._on_sequence = on_sequence
        self._tracker = SeqTracker()
        self._last_reject_log: dict[str, float] = {}
        # The socket belongs to ``ctx`` (so ``ctx.destroy()`` closes it); the asyncio view
        # shadows it for awaiting, the sync one drains a batch without a Future per frame.
        self._sync: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
        self._sync.setsockopt(zmq.RCVHWM, hwm)
        self._sync.setsockopt(zmq.LINGER, 0)
        self._socket = zmq.asyncio.Socket.shadow(self._sync.underlying)
        for prefix in prefixes:
            self.subscribe(prefix)
        self._sync.connect(prepare_endpoint(endpoint, bind=False))

    def subscribe(self, prefix: str) -> None:
        """Receive topics starting with ``prefix`` (empty = everything)."""
        self._sync.setsockopt(zmq.SUBSCRIBE, prefix.encode("ascii"))

    async def recv(self) -> tuple[str, Message]:
        """Return the next valid (topic, message); bad frames are counted and skipped."""
        while True:
            frames = await self._socket.recv_multipart(copy=True)
            item = self._accept(frames)
            if item is not None:
                return item

    async def recv_batch(self, max_messages: int = 1000) -> list[tuple[str, Message]]:
        """Wait for at least one frame, then drain up to ``max_messages`` without blocking."""
        batch: list[tuple[str, Message]] = []
        while not batch:
            frames = await self._socket.recv_multipart(copy=True)
            item = self._accept(frames)
            if item is not None:
                batch.append(item)
        while len(batch) < max_messages:
            try:
                frames = self._sync.recv_multipart(flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            item = self._accept(frames)
            if item is not None:
                batch.append(item)
        return batch

    def _accept(self, frames: list[bytes]) -> tuple[str, Message] | None:
        self.counters["messages_in"] += 1
        if len(frames) != 2:
            self._reject("frame_count", f"expected 2 frames, found {len(frames)}")
            return None
        try:
            topic = frames[0].decode("ascii")
        except UnicodeDecodeError:
            self._reject("topic", "topic is not ASCII")
            return None
        try:
            message = decode(frames[1])
        except msgspec.DecodeError as e:  # covers bad bytes and bad shape (ValidationError)
            self._reject("decode", f"topic={topic} {e}")
            return None
        event = self._tracker.observe(message.src, topic, message.seq)
        if event is not None:
            kind, value = event
            self.counters[f"seq_{kind}s"] += 1
            log.warning("bus sequence %s src=%s topic=%s value=%s", kind, message.src, topic, value)
            if self._on_sequence is not None:
                self._on_sequence(kind, message.src, topic, value)
        return topic, message

    def _reject(self, reason: str, detail: str) -> None:
        self.counters["rejects"] += 1
        self.counters[f"rejects_{reason}"] += 1
        now = time.monotonic()
        last = self._last_reject_log.get(reason)
        if last is None or now - last >= REJECT_LOG_INTERVAL_S:
            self._last_reject_log[reason] = now
            log.warning(
                "rejected bus frame reason=%s detail=%s total=%d",
                reason,
                detail[:200],
                self.counters[f"rejects_{reason}"],
            )

    def close(self) -> None:
        """Close the socket (and its asyncio view, so the loop forgets its reader)."""
        self._socket.close(linger=0)
        self._sync.close(linger=0)

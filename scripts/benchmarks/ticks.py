"""`tick_to_mark`: ticks/s the real `state` applies to marks with 1,000 held symbols, lossless,
and the p99 feed → mark latency at a steady rate.

Throughput: tick batches as ``prices`` publishes them are put on the bus as fast as possible
(``state`` alone is measured; ``feed_ingest`` measures ``prices``); the value is the slope of
``state``'s ``ticks`` counter between heartbeats taken strictly inside the burst (``state``
busy the whole window), and lossless means every tick sent was counted. Latency: a feed sender
at a steady rate → ``prices`` → ``bus`` → ``state``, read from ``state``'s
``tick_lag_le_<ms>ms`` histogram (``mirror.marks.TickLag``: the age of a tick's feed time when
its mark is in memory) as bucket upper bounds.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import zmq

from coldharbour.bus import Publisher
from coldharbour.messages import TOPIC_TICKS, Heartbeat, TickBatch
from coldharbour.mirror.marks import LAG_BOUNDS_MS, LAG_OVER
from scripts.benchmarks import baselines, history, stack
from scripts.benchmarks.report import emit, note

HELD_SYMBOLS = 1000
AHEAD = 1_000_000  # ticks queued ahead of state in a burst (it never waits; memory stays bounded)

# A feed sender: binds PUB at argv[1]; on stdin ``burst N`` sends N trades as fast as it can,
# ``paced RATE SECONDS`` sends at RATE/s; every trade is stamped (``t``) when it is sent, and the
# price moves one cent per pass over the symbols (every tick changes a mark, none crosses the UI
# push threshold). Answers ``done <total sent>`` on stdout after each command.
SENDER = r"""
import sys, time, zmq, msgspec
endpoint, symbols = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context(); sock = ctx.socket(zmq.PUB); sock.setsockopt(zmq.SNDHWM, 0); sock.bind(endpoint)
encode, now = msgspec.msgpack.Encoder().encode, time.time_ns
names = [f"S{i:04d}" for i in range(symbols)]
n = 0
def send(count):
    global n
    for _ in range(count):
        sock.send(encode({"trade": {"S": names[n % symbols], "p": 100.0 + (n // symbols) % 10 / 100,
                                    "c": ["@"], "t": now(), "s": 100}}))
        n += 1
print("ready", flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "burst":
        send(int(command[1]))
    elif command[0] == "paced":
        rate, total = float(command[1]), int(float(command[1]) * float(command[2]))
        step, sent, start = max(1, round(rate / 1000)), 0, time.perf_counter()
        while sent < total:
            delay = start + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            k = min(step, total - sent)
            send(k)
            sent += k
    print("done", n, flush=True)
"""


class Sender:
    """The feed sender process."""

    def __init__(self, endpoint: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", SENDER, endpoint, str(HELD_SYMBOLS)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        self._read()

    def _read(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def command(self, text: str) -> int:
        """Run one command; return the total number of trades sent so far."""
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return int(self._read().split()[1])

    def stop(self) -> None:
        """Close stdin (the sender exits) and wait."""
        baselines.stop_sender(self.process)


def _ticks(beats: stack.Heartbeats) -> int:
    return beats.counter("state", "ticks")


def _settle(beats: stack.Heartbeats, timeout_s: float = 60.0) -> int:
    """Wait until two consecutive ``state`` heartbeats show the same tick count; return it."""
    previous = -1
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = beats.next("state").counters.get("ticks", 0)
        if current == previous:
            return current
        previous = current
    raise TimeoutError("bench: state did not settle")


def _slope(beats: list[Heartbeat], start: int, end: int) -> float | None:
    """Return ticks/s between the heartbeats strictly inside (start, end) of the tick counter."""
    inside = [hb for hb in beats if start < hb.counters.get("ticks", 0) < end]
    if len(inside) < 2:
        return None
    first, last = inside[0], inside[-1]
    return (last.counters["ticks"] - first.counters["ticks"]) / ((last.ts - first.ts) / 1e9)


def lag_percentiles(before: dict[str, int], after: dict[str, int]) -> tuple[int, float | None, float | None]:
    """Return (ticks counted, p50 ms, p99 ms) from two snapshots of the lag histogram."""
    keys = [(bound, f"tick_lag_le_{bound}ms") for bound in LAG_BOUNDS_MS] + [(float("inf"), LAG_OVER)]
    counts = [(bound, after.get(key, 0) - before.get(key, 0)) for bound, key in keys]
    total = sum(count for _, count in counts)

    def percentile(pct: float) -> float | None:
        running = 0
        for bound, count in counts:
            running += count
            if total and running >= pct / 100 * total:
                return None if bound == float("inf") else float(bound)
        return None

    return total, percentile(50), percentile(99)


class BusTicks:
    """Publishes ``TickBatch``es of every held symbol on the bus, as ``prices`` would."""

    def __init__(self, bus_in: str) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.publisher = Publisher(self._ctx, bus_in, "bench")
        self._symbols = tuple(history.symbol(i) for i in range(HELD_SYMBOLS))
        self._sizes = (100.0,) * HELD_SYMBOLS
        self._passes = 0

    def send(self, count: int) -> float:
        """Publish ``count`` ticks (whole passes over the symbols); return the seconds it took."""
        started = time.perf_counter()
        for _ in range(max(1, count // HELD_SYMBOLS)):
            self._passes += 1
            price = 100.0 + self._passes % 10 / 100  # one cent per pass, as the feed sender: no UI push
            now = time.time_ns()
            batch = TickBatch(symbols=self._symbols, prices=(price,) * HELD_SYMBOLS, sizes=self._sizes,
                              ts_events=tuple(range(now, now + HELD_SYMBOLS)))  # fmt: skip
            self.publisher.publish(TOPIC_TICKS, batch)
        return time.perf_counter() - started

    def close(self) -> None:
        """Close the publisher."""
        self.publisher.close()
        self._ctx.term()


def _burst(bus: BusTicks, beats: stack.Heartbeats, seconds: float) -> tuple[float | None, int, int]:
    """Keep ``state`` busy for ``seconds`` (at most ``AHEAD`` ticks queued); return (rate, sent, applied)."""
    base = _settle(beats)
    seen_before = len(beats.poll())
    sent, chunk = 0, 50 * HELD_SYMBOLS
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if sent - (_ticks(beats) - base) < AHEAD:
            bus.send(chunk)
            sent += chunk
        else:
            time.sleep(0.01)  # bench only: wait for state to catch up
    stack.wait_until(lambda: _ticks(beats) >= base + sent, 60, "state applying the burst")
    applied = _settle(beats) - base
    return _slope(beats.poll()[seen_before:], base, base + sent), sent, applied


def _paced(sender: Sender, beats: stack.Heartbeats, rate: int, seconds: float) -> tuple[int, float | None, float | None]:  # noqa: E501
    _settle(beats)
    before = dict(beats.latest("state").counters)  # type: ignore[union-attr]
    sender.command(f"paced {rate} {seconds}")
    _settle(beats)
    after = dict(beats.latest("state").counters)  # type: ignore[union-attr]
    return lag_percentiles(before, after)


def run(dsn: str, quick: bool) -> None:
    """Measure the figure and its raw baseline."""
    burst_s = 4.0 if quick else 10.0
    baseline_count = 300_000 if quick else 1_000_000
    latency_rate, latency_s = (20_000, 3.0) if quick else (20_000, 10.0)
    with stack.run_dir() as directory:
        feed = f"ipc://{directory}/feed.sock"
        note(f"tick_to_mark baseline: raw PUB->SUB multipart of {baseline_count} messages")
        baseline = baselines.raw_pubsub_multipart_rate(feed, baseline_count)
        env = stack.environ(dsn, directory, ZMQ_SIP_STREAM_ENDPOINT=feed, TRADE_CONDITIONS_EXCLUDE="D,M,E")
        stack.migrate(dsn, env)
        history.store(dsn, history.names(env), history.open_lots(HELD_SYMBOLS, HELD_SYMBOLS))
        sender = Sender(feed)
        beats = stack.Heartbeats(f"ipc://{directory}/bus-out.sock")
        bus = BusTicks(f"ipc://{directory}/bus-in.sock")
        programs = [stack.Program(name, env, Path(directory)) for name in ("bus", "state", "prices")]
        try:
            stack.wait_until(lambda: beats.counter("state", "commits") >= 1, 60, "state started")
            while _ticks(beats) == 0:  # slow joiners on both hops: send until state sees ticks
                sender.command(f"burst {HELD_SYMBOLS}")
                time.sleep(0.2)  # bench only
            sender.command(f"burst {4 * HELD_SYMBOLS}")  # first marks of every symbol (UI pushes)
            note(f"tick_to_mark: latency at {latency_rate}/s for {latency_s}s")
            counted, p50, p99 = _paced(sender, beats, latency_rate, latency_s)
            base = _settle(beats)
            while _ticks(beats) == base:  # the bench publisher's slow joiner
                bus.send(HELD_SYMBOLS)
                beats.next("state")
            note(f"tick_to_mark: ticks on the bus for {burst_s}s")
            rate, count, applied = _burst(bus, beats, burst_s)
            rss = stack.rss_mb(programs[1].pid)
        finally:
            for program in reversed(programs):
                program.stop()
            sender.stop()
            beats.close()
            bus.close()
    emit("tick_to_mark", rate, "ticks/s", baseline, sent=count, applied=applied, lost=count - applied,
         held_symbols=HELD_SYMBOLS, latency_rate=latency_rate, latency_ticks=counted, p50_ms=p50, p99_ms=p99,
         state_rss_mb=rss)  # fmt: skip

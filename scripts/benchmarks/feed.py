"""`feed_ingest`: ticks/s the real `prices` program consumes, validates and publishes."""

from __future__ import annotations

import time
from pathlib import Path

import zmq

from coldharbour.messages import Tick, TickBatch, decode
from scripts.benchmarks import baselines, stack
from scripts.benchmarks.report import emit, note


def ticks_in(payload: bytes) -> int:
    """Return how many ticks one ``px.*`` payload carries."""
    message = decode(payload)
    if isinstance(message, TickBatch):
        return len(message.symbols)
    return 1 if isinstance(message, Tick) else 0


def _count_published(bus_out: str, sender, total: int) -> tuple[int, float]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"px.")
    sock.connect(bus_out)
    time.sleep(0.5)  # bench only: slow-joiner margin before the sender starts
    sender.stdin.write("go\n")
    sender.stdin.flush()
    received, first, last = 0, 0.0, 0.0
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while received < total:
        if not poller.poll(2000):
            break  # the stream went quiet: prices dropped the rest (counted by what arrived)
        _topic, payload = sock.recv_multipart()
        last = time.perf_counter()
        if received == 0:
            first = last
        received += ticks_in(payload)
    sock.close(linger=0)
    ctx.term()
    return received, max(last - first, 1e-9)


def run(dsn: str, quick: bool) -> None:
    """Measure the figure and its raw baseline (same frames, same machine, same run)."""
    count = 200_000 if quick else 1_000_000
    with stack.run_dir() as directory:
        feed = f"ipc://{directory}/feed.sock"
        note(f"feed_ingest baseline: raw SUB+decode of {count} frames")
        baseline = baselines.raw_sub_decode_rate(feed, count)
        env = stack.environ(dsn, directory, ZMQ_SIP_STREAM_ENDPOINT=feed, TRADE_CONDITIONS_EXCLUDE="D,M,E")
        programs = [stack.Program(name, env, Path(directory)) for name in ("bus", "prices")]
        try:
            sender = baselines.start_sender(feed, count, multipart=False)
            received, elapsed = _count_published(f"ipc://{directory}/bus-out.sock", sender, count)
            baselines.stop_sender(sender)
        finally:
            for program in reversed(programs):
                program.stop()
    emit("feed_ingest", received / elapsed, "ticks/s", baseline, sent=count, published=received)

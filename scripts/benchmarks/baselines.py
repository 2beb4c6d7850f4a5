"""Raw baselines: what the machine does with no Cold Harbour code in the path."""

from __future__ import annotations

import gc
import io
import subprocess
import sys
import time

import msgspec
import psycopg
import zmq

from scripts.benchmarks.report import percentile

# A sender process: binds PUB at argv[1], waits for a line on stdin (the caller's slow-joiner
# margin), then sends argv[2] frames (msgpack trade maps) as fast as it can, then a b"END"
# frame, and stays up until stdin closes (so nothing still queued is lost at exit).
SENDER = r"""
import sys, time, zmq, msgspec
endpoint, count, multipart = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
ctx = zmq.Context(); sock = ctx.socket(zmq.PUB); sock.setsockopt(zmq.SNDHWM, 0); sock.bind(endpoint)
frames = [msgspec.msgpack.encode({"trade": {"S": f"S{i % 1000:04d}", "p": 100.0 + (i % 97) / 100, "c": ["@"],
                                            "t": time.time_ns(), "s": 100}}) for i in range(1000)]
sys.stdin.readline()
for i in range(count):
    if multipart:
        sock.send_multipart([b"px.S%04d" % (i % 1000), frames[i % 1000]])
    else:
        sock.send(frames[i % 1000])
sock.send(b"END") if not multipart else sock.send_multipart([b"px.END", b"END"])
sys.stdin.read()
"""


def start_sender(endpoint: str, count: int, *, multipart: bool) -> subprocess.Popen[str]:
    """Start the sender process; it waits for a line on stdin before sending."""
    return subprocess.Popen(
        [sys.executable, "-c", SENDER, endpoint, str(count), "1" if multipart else "0"],
        stdin=subprocess.PIPE, text=True,
    )


def stop_sender(sender: subprocess.Popen[str], timeout_s: float = 30) -> None:
    """Close the sender's stdin (it exits once its queue is empty) and wait for it."""
    if sender.stdin is not None:
        sender.stdin.close()
    try:
        sender.wait(timeout_s)
    except subprocess.TimeoutExpired:
        sender.kill()
        sender.wait(5)


def _subscribe_and_go(sock: zmq.Socket[bytes], sender: subprocess.Popen[str]) -> None:
    time.sleep(0.5)  # bench only: let the SUB connect before the sender starts (slow joiner)
    assert sender.stdin is not None
    sender.stdin.write("go\n")
    sender.stdin.flush()


def raw_sub_decode_rate(endpoint: str, count: int) -> float:
    """Return frames/s a raw SUB receives and msgpack-decodes (single frame)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    sender = start_sender(endpoint, count, multipart=False)
    _subscribe_and_go(sock, sender)
    decoder = msgspec.msgpack.Decoder()
    received = 0
    first = time.perf_counter()
    while True:
        frame = sock.recv()
        if received == 0:
            first = time.perf_counter()
        if frame == b"END":
            break
        decoder.decode(frame)
        received += 1
    elapsed = time.perf_counter() - first
    stop_sender(sender)
    sock.close(linger=0)
    ctx.term()
    return received / elapsed


def raw_pubsub_multipart_rate(endpoint: str, count: int) -> float:
    """Return multipart messages/s from a PUB process to a raw SUB (end to end)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    sender = start_sender(endpoint, count, multipart=True)
    _subscribe_and_go(sock, sender)
    received = 0
    first = time.perf_counter()
    while True:
        topic, _payload = sock.recv_multipart()
        if received == 0:
            first = time.perf_counter()
        if topic == b"px.END":
            break
        received += 1
    elapsed = time.perf_counter() - first
    stop_sender(sender)
    sock.close(linger=0)
    ctx.term()
    return received / elapsed


def raw_notify_latency_ms(dsn: str, count: int) -> tuple[float, float]:
    """Return (p50, p99) ms from ``pg_notify`` commit to receipt by a LISTEN connection."""
    listener = psycopg.connect(dsn, autocommit=True)
    sender = psycopg.connect(dsn, autocommit=True)
    listener.execute("LISTEN bench_raw")
    latencies = []
    gen = listener.notifies()
    for i in range(count):
        sent = time.perf_counter()
        sender.execute("SELECT pg_notify('bench_raw', %s)", (str(i),))
        next(gen)
        latencies.append((time.perf_counter() - sent) * 1000)
    gen.close()
    listener.close()
    sender.close()
    return percentile(latencies, 50), percentile(latencies, 99)


def raw_copy_merge_s(dsn: str, table: str, columns: tuple[str, ...], rows: list[tuple[object, ...]]) -> float:
    """Return seconds to COPY ``rows`` (``columns``, the first is the key) into a temp table and merge them."""
    key, *rest = columns
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        conn.execute(f"CREATE TEMP TABLE bench_rows (LIKE {table}) ON COMMIT DROP")
        with conn.cursor().copy(f"COPY bench_rows ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        sets = ", ".join(f"{c} = b.{c}" for c in rest)
        conn.execute(f"UPDATE {table} AS t SET {sets} FROM bench_rows b WHERE t.{key} = b.{key}")
        conn.commit()
        return time.perf_counter() - start


def raw_fetch_s(dsn: str, queries: list[str]) -> float:
    """Return seconds to fetch every row of ``queries`` with the GC off (the rebuild's floor)."""
    gc.disable()
    try:
        with psycopg.connect(dsn) as conn:
            start = time.perf_counter()
            for query in queries:
                with conn.cursor(name="bench_fetch") as cur:
                    cur.itersize = 10_000
                    cur.execute(query)
                    for _ in cur:
                        pass
            return time.perf_counter() - start
    finally:
        gc.enable()


def write_copy(rows: list[tuple[object, ...]]) -> io.StringIO:
    """Return rows as a tab-separated COPY text buffer."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join("\\N" if v is None else str(v) for v in row) + "\n")
    buffer.seek(0)
    return buffer

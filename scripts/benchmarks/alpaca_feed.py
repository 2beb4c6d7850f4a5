"""`alpaca_feed_ingest`: ticks/s the real `prices` program takes from Alpaca's market-data stream.

A server process speaks the stream's handshake (connected, auth, subscription ack; msgpack, as
the fake broker and Alpaca do for ``Content-Type: application/msgpack``) and, once a client
subscribes, sends ``count`` trades in frames of ``PER_FRAME`` (Alpaca batches trades per frame).
The baseline is a raw client of the same server in the same run: WebSocket receive plus msgpack
decode, no validation and no bus. The figure is ``bus`` + ``prices`` (``PRICE_SOURCE=alpaca``,
the symbols put in play by open orders in the database), counted as ticks published on
``px.batch`` from the first to the last.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
import zmq
from psycopg import sql
from websockets.asyncio.client import connect

from coldharbour.config import load_settings
from coldharbour.db.names import account_names
from scripts.benchmarks import stack
from scripts.benchmarks.feed import ticks_in
from scripts.benchmarks.report import emit, note

PER_FRAME = 100
SYMBOLS = tuple(f"S{i:03d}" for i in range(20))

# The server: prints "listening port=<P>", then for every connection: connected, auth →
# authenticated, subscribe → ack, then argv[1] trades in frames of argv[2]; stays up until stdin closes.
SERVER = r"""
import asyncio, struct, sys, time, msgspec
from websockets.asyncio.server import serve
count, per_frame, symbols = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
encode, decode = msgspec.msgpack.encode, msgspec.msgpack.decode
def stamp(ns):
    return msgspec.msgpack.Ext(-1, struct.pack(">Iq", ns % 10**9, ns // 10**9))
def frame(start):
    now = time.time_ns()
    return encode([{"T": "t", "S": symbols[(start + i) % len(symbols)], "i": start + i, "x": "V",
                    "p": 100.0 + (start + i) % 97 / 100, "s": 100, "c": ["@"], "t": stamp(now), "z": "C"}
                   for i in range(per_frame)])
frames = [frame(k * per_frame) for k in range(50)]
async def handle(ws):
    await ws.send(encode([{"T": "success", "msg": "connected"}]))
    await ws.recv()
    await ws.send(encode([{"T": "success", "msg": "authenticated"}]))
    message = decode(await ws.recv())
    await ws.send(encode([{"T": "subscription", "trades": message.get("trades", [])}]))
    for k in range(count // per_frame):
        await ws.send(frames[k % len(frames)])
    await ws.wait_closed()
async def main():
    async with serve(handle, "127.0.0.1", 0, max_size=None, compression=None) as server:
        print(f"listening port={server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


def _start_server(count: int) -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(count), str(PER_FRAME), ",".join(SYMBOLS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline()
    return server, int(line.split("port=")[1])


def _stop_server(server: subprocess.Popen[str]) -> None:
    if server.stdin is not None:
        server.stdin.close()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(5)


async def _raw_receive(url: str, count: int) -> float:
    decoder = msgspec.msgpack.Decoder()
    encoder = msgspec.msgpack.Encoder()
    received, first = 0, 0.0
    headers = {"Content-Type": "application/msgpack"}
    async with connect(url, additional_headers=headers, max_size=None, compression=None) as ws:
        await ws.recv()
        await ws.send(encoder.encode({"action": "auth", "key": "k", "secret": "s"}))
        await ws.recv()
        await ws.send(encoder.encode({"action": "subscribe", "trades": list(SYMBOLS)}))
        await ws.recv()
        while received < count:
            raw = await ws.recv()
            assert isinstance(raw, bytes)
            messages = decoder.decode(raw)
            if received == 0:
                first = time.perf_counter()
            received += sum(1 for m in messages if m.get("T") == "t")
    return received / max(time.perf_counter() - first, 1e-9)


def _seed_open_orders(dsn: str, env: dict[str, str]) -> None:
    """Put ``SYMBOLS`` in play: one open order each in the bench account's raw orders."""
    names = account_names(load_settings(env), stack.ACCOUNT)
    insert = sql.SQL(
        "INSERT INTO {t} (id, symbol, side, order_type, status, created_at) VALUES (%s, %s, 'buy', 'limit', 'new', %s)"
    ).format(t=names.raw_orders.ident)
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as conn:
        for symbol in SYMBOLS:
            conn.execute(insert, (uuid.uuid4(), symbol, now))


def _count_published(bus_out: str, count: int, start_prices) -> tuple[int, float]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"px.")
    sock.connect(bus_out)
    time.sleep(0.5)  # bench only: slow-joiner margin before prices starts publishing
    program = start_prices()
    received, first, last = 0, 0.0, 0.0
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    try:
        timeout_ms = 30_000  # prices' start, its first symbols poll and the handshake
        while received < count:
            if not poller.poll(timeout_ms):
                break
            timeout_ms = 2_000
            _topic, payload = sock.recv_multipart()
            last = time.perf_counter()
            if received == 0:
                first = last
            received += ticks_in(payload)
    finally:
        program.stop()
        sock.close(linger=0)
        ctx.term()
    return received, max(last - first, 1e-9)


def run(dsn: str, quick: bool) -> None:
    """Measure the figure and its raw baseline (same server, same frames, same run)."""
    count = 100_000 if quick else 500_000
    server, port = _start_server(count)
    url = f"ws://127.0.0.1:{port}/v2/iex"
    try:
        note(f"alpaca_feed_ingest baseline: raw WebSocket receive + msgpack decode of {count} trades")
        baseline = asyncio.run(_raw_receive(url, count))
        with stack.run_dir() as directory:
            env = stack.environ(dsn, directory, PRICE_SOURCE="alpaca", ALPACA_DATA_STREAM_URL=url,
                                TRADE_CONDITIONS_EXCLUDE="D,M,E")  # fmt: skip
            stack.migrate(dsn, env)
            _seed_open_orders(dsn, env)
            bus = stack.Program("bus", env, Path(directory))
            try:
                received, elapsed = _count_published(
                    f"ipc://{directory}/bus-out.sock", count, lambda: stack.Program("prices", env, Path(directory))
                )
            finally:
                bus.stop()
    finally:
        _stop_server(server)
    emit("alpaca_feed_ingest", received / elapsed, "ticks/s", baseline, sent=count, published=received,
         per_frame=PER_FRAME)  # fmt: skip

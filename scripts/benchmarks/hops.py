"""The hop floor of ``fill_to_notify``: the same process hops with no Cold Harbour code in them.

A frame goes the way a fill goes, through five processes, each doing the least its hop needs:

    source (WebSocket server) → relay (WebSocket client → zmq PUB) → proxy (XSUB/XPUB, libzmq's
    own) → writer (zmq SUB → one-row INSERT … RETURNING + pg_notify, one statement, autocommit)
    → listener (LISTEN)

The frame carries its send time; the listener takes the receipt time (one machine, one clock).
What this measures is what waking five processes and PostgreSQL costs on this machine: where a
cross-process wake-up is expensive (a nested VM), this floor, not our code, bounds
``fill_to_notify``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from scripts.benchmarks import stack
from scripts.benchmarks.report import percentile

_SOURCE = r"""
import asyncio, json, sys, time
import websockets
rate, count = float(sys.argv[1]), int(sys.argv[2])
clients = []
async def serve(ws):
    clients.append(ws)
    await ws.wait_closed()
async def main():
    async with websockets.serve(serve, "127.0.0.1", 0) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # go
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = json.dumps({"stream": "trade_updates", "data": {"i": i, "t": time.time_ns()}})
            for ws in clients:
                await ws.send(frame)
        await asyncio.to_thread(sys.stdin.read)
asyncio.run(main())
"""

_RELAY = r"""
import asyncio, json, sys
import websockets, zmq
async def main():
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.connect(sys.argv[2])
    async with websockets.connect(f"ws://127.0.0.1:{sys.argv[1]}") as ws:
        print("ready", flush=True)
        async for frame in ws:
            data = json.loads(frame)["data"]
            sock.send_multipart([b"trade.floor", json.dumps(data).encode()])
asyncio.run(main())
"""

_PROXY = r"""
import sys, zmq
ctx = zmq.Context.instance()
xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
xsub.bind(sys.argv[1]); xpub.bind(sys.argv[2])
print("ready", flush=True)
zmq.proxy(xsub, xpub)
"""

_WRITER = r"""
import asyncio, json, sys
import psycopg, zmq, zmq.asyncio
async def main():
    conn = await psycopg.AsyncConnection.connect(sys.argv[2], autocommit=True)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id int PRIMARY KEY, body text NOT NULL)")
    sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sock.connect(sys.argv[1]); sock.subscribe(b"trade.")
    print("ready", flush=True)
    while True:
        _, body = await sock.recv_multipart()
        text = body.decode()
        await conn.execute(
            "WITH up AS (INSERT INTO bench_floor (id, body) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE "
            "SET body = EXCLUDED.body RETURNING id) SELECT pg_notify('bench_floor', %s) FROM up",
            (json.loads(text)["i"], text, text), prepare=True)
asyncio.run(main())
"""

_LISTENER = r"""
import json, sys, time
import psycopg
last, give_up = int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
conn = psycopg.connect(sys.argv[1], autocommit=True)
conn.execute("LISTEN bench_floor")
print("ready", flush=True)
seen = []
while time.monotonic() < give_up and not (seen and seen[-1][0] == last):
    for notice in conn.notifies(timeout=0.2):
        received = time.time_ns()
        body = json.loads(notice.payload)
        seen.append((body["i"], (received - body["t"]) / 1e6))
print(json.dumps(seen), flush=True)
"""


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # killed at the end: no tracebacks


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line:
        raise RuntimeError(f"a hop-floor process exited early (code {process.poll()})")
    return line


class Floor(NamedTuple):
    """Latency percentiles (ms) and CPU per frame (ms) of the hop floor at one rate."""

    p50_ms: float
    p99_ms: float
    cpu_ms_per_frame: dict[str, float]


def hop_floor(dsn: str, rate: float, count: int, warmup: int = 20) -> Floor:
    """Measure ``count`` frames at ``rate`` per second through the five processes.

    CPU per frame: ``relay`` (in the place of ``trades``), ``proxy`` (``bus``), ``writer``
    (``state``) and ``postgres`` (the whole cluster), from the first frame to the last.
    """
    with tempfile.TemporaryDirectory(prefix="chf-", dir="/tmp") as directory:
        bus_in, bus_out = f"ipc://{Path(directory) / 'in'}", f"ipc://{Path(directory) / 'out'}"
        processes: list[subprocess.Popen[str]] = []
        try:
            total = count + warmup
            listener = _start(_LISTENER, dsn, str(total - 1), str(60 + total / rate))
            processes.append(listener)
            proxy = _start(_PROXY, bus_in, bus_out)
            processes.append(proxy)
            writer = _start(_WRITER, bus_out, dsn)
            processes.append(writer)
            source = _start(_SOURCE, str(rate), str(total))
            processes.append(source)
            port = _line(source)
            for process in (listener, proxy, writer):
                _line(process)
            relay = _start(_RELAY, port, bus_in)
            processes.append(relay)
            _line(relay)
            time.sleep(1.0)  # bench only: the SUB subscription reaches the relay's PUB (slow joiner)
            assert source.stdin is not None
            meter = stack.CpuMeter({"relay": relay.pid, "proxy": proxy.pid, "writer": writer.pid},
                                   stack.postmaster(dsn))
            meter.start()
            source.stdin.write("go\n")
            source.stdin.flush()
            seen = json.loads(_line(listener))  # once the last frame is in (or its deadline passed)
            cpu = meter.per_fill(total)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.wait(5)
    latencies = [ms for i, ms in seen if i >= warmup]
    if len(latencies) < count * 0.9:
        raise RuntimeError(f"hop floor: {len(latencies)} of {count} frames arrived")
    return Floor(percentile(latencies, 50), percentile(latencies, 99), cpu)

"""`fill_to_notify`: a fill sent by the fake broker → the open-position row's NOTIFY at a LISTEN client.

Path: fake broker → trade_updates stream → ``trades`` → ``bus`` → ``state`` (commit + NOTIFY) →
PostgreSQL → a LISTEN connection **in its own process** (it must not share the bench's GIL).
Resting limit buys are placed first, one per symbol; then one symbol at a time is moved onto its
limit, so every move fills exactly one order (one fill per move). A fill's latency runs from the
moment the fake broker writes the fill's frame to the stream socket (``GET /sim/stream-sent``:
the last frame of the order) to the receipt of the first NOTIFY carrying its row with a
``filled_at``. Both clocks are this machine's wall clock.

``value`` is the p99 in ms at 50 fills/s; ``p50_ms`` at 50 fills/s, ``p99_ms_at_1000`` at 1,000
fills/s; ``floor_p50_ms``/``floor_p99_ms``: the same process hops at 50/s with no Cold Harbour
code in them (``hops.py``: what the machine's wake-ups cost; our figure cannot go below it), and
``floor_cpu_ms_per_fill`` their CPU per frame at 1,000/s (``relay`` ≈ trades, ``proxy`` ≈ bus,
``writer`` ≈ state, ``postgres``); beside them ``ratio_p99_to_floor`` (our p99 over the floor's)
and ``cpu_over_floor_ms`` (``trades`` + ``state`` + ``postgres`` CPU per fill minus the floor's
``relay`` + ``writer`` + ``postgres``), the two figures to hold against a target on any machine.
``sent_per_s`` in each step is the rate the fake broker really sent fills at (on 2 cores its
own CPU caps the 1,000/s step well below 1,000: the step's figures are at that rate).
``cpu_ms_per_fill`` (at 1,000 fills/s) is the CPU each program used during the step
(``/proc``: user + system) divided by the fills: ``broker`` (the fake broker), ``trades``,
``bus``, ``state`` and ``postgres`` (the postmaster and all its children, this bench's LISTEN
backend included). Baseline: raw ``pg_notify`` → LISTEN p99.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import queue
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import aiohttp
import psycopg

from scripts.benchmarks import baselines, history, hops, stack
from scripts.benchmarks.memory import Broker
from scripts.benchmarks.report import emit, note, percentile

HEADERS = {"APCA-API-KEY-ID": "bench-key", "APCA-API-SECRET-KEY": "bench-secret"}
PROGRAMS = ("bus", "state", "trades")


def _listen(dsn: str, channel: str, out: mp.Queue, ready: MpEvent, stop: MpEvent) -> None:
    """Child process: LISTEN; put (parent_id, receipt time in ns) for the first filled NOTIFY of every row."""
    seen: set[str] = set()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"LISTEN {channel}")
        ready.set()
        while not stop.is_set():
            for notice in conn.notifies(timeout=0.2):
                received = time.time_ns()
                body = json.loads(notice.payload)
                rows = [body["row"]] if "row" in body else body.get("rows", ())
                for row in rows:
                    parent_id = str(row.get("parent_id"))
                    if parent_id in seen or not row.get("filled_at"):
                        continue
                    seen.add(parent_id)
                    out.put((parent_id, received))


class Listener:
    """The LISTEN client process and the latencies it reported."""

    def __init__(self, dsn: str, channel: str) -> None:
        ctx = mp.get_context("spawn")
        self._queue: mp.Queue = ctx.Queue()
        self._stop = ctx.Event()
        ready = ctx.Event()
        self._process = ctx.Process(target=_listen, args=(dsn, channel, self._queue, ready, self._stop), daemon=True)
        self._process.start()
        if not ready.wait(30):
            raise RuntimeError("the LISTEN process did not start")
        self.received: dict[str, int] = {}

    def drain(self) -> None:
        """Take what the process reported so far."""
        while True:
            try:
                parent_id, ns = self._queue.get_nowait()
            except queue.Empty:
                return
            self.received[parent_id] = ns

    def close(self) -> None:
        """Stop the process."""
        self._stop.set()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


async def _place(session: aiohttp.ClientSession, url: str, symbols: list[str]) -> dict[str, str]:
    """Place one resting limit buy per symbol; return symbol -> order id."""
    placed: dict[str, str] = {}
    gate = asyncio.Semaphore(16)

    async def one(symbol: str) -> None:
        body = {"symbol": symbol, "qty": "1", "side": "buy", "type": "limit", "time_in_force": "gtc",
                "limit_price": "1.00"}  # fmt: skip
        async with gate, session.post(f"{url}/v2/orders", json=body, headers=HEADERS) as response:
            response.raise_for_status()
            placed[symbol] = (await response.json())["id"]

    await asyncio.gather(*(one(s) for s in symbols))
    return placed


async def _moves(session: aiohttp.ClientSession, url: str, symbols: list[str], rate: int) -> None:
    """Move each symbol onto its limit at ``rate`` moves per second (requests overlap)."""
    start = time.perf_counter()
    sent: list[asyncio.Task[None]] = []

    async def move(symbol: str) -> None:
        async with session.post(f"{url}/sim/prices", json={symbol: 1.0}) as response:
            response.raise_for_status()

    for i, symbol in enumerate(symbols):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(asyncio.create_task(move(symbol)))
    await asyncio.gather(*sent)


async def _measure(url: str, listener: Listener, meter: stack.CpuMeter,
                   steps: list[tuple[int, int]]) -> list[dict[str, object]]:
    plan = [(rate, [f"F{k}X{j:04d}" for j in range(count)]) for k, (rate, count) in enumerate(steps)]
    results: list[dict[str, object]] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        every = [s for _, symbols in plan for s in symbols]
        async with session.post(f"{url}/sim/prices", json=dict.fromkeys(every, 2.0)) as response:
            response.raise_for_status()
        orders: dict[int, dict[str, str]] = {}
        started = time.perf_counter()
        for rate, symbols in plan:
            orders[rate] = await _place(session, url, symbols)
        note(f"fill_to_notify: placed {len(every)} orders in {time.perf_counter() - started:.1f}s")
        await asyncio.sleep(2.0)  # bench only: let state write the "new" events before timing fills
        for rate, symbols in plan:
            placed = orders[rate]
            meter.start()
            await _moves(session, url, symbols, rate)
            deadline = time.perf_counter() + 15
            while time.perf_counter() < deadline:
                listener.drain()
                if all(o in listener.received for o in placed.values()):
                    break
                await asyncio.sleep(0.05)
            cpu = meter.per_fill(len(placed))
            async with session.get(f"{url}/sim/stream-sent") as response:
                sent = {order_id: ns for order_id, _, ns in await response.json()}  # the last frame: the fill
            latencies = [(listener.received[o] - sent[o]) / 1e6 for o in placed.values()
                         if o in listener.received and o in sent]
            sent_ns = sorted(sent[o] for o in placed.values() if o in sent)
            span_s = (sent_ns[-1] - sent_ns[0]) / 1e9 if len(sent_ns) > 1 else 0.0
            results.append({"rate": rate, "sent_per_s": round((len(sent_ns) - 1) / span_s, 1) if span_s else None,
                            "fills": len(placed), "notified": len(latencies),
                            "p50_ms": percentile(latencies, 50) if latencies else None,
                            "p99_ms": percentile(latencies, 99) if latencies else None,
                            "cpu_ms_per_fill": cpu})  # fmt: skip
            note(f"fill_to_notify: {results[-1]}")
    return results


def run(dsn: str, quick: bool) -> None:
    """Measure the figure and its raw baseline."""
    steps = [(50, 100), (1000, 500)] if quick else [(50, 250), (1000, 2000)]
    note("fill_to_notify baseline: raw NOTIFY -> LISTEN")
    raw_p50, raw_p99 = baselines.raw_notify_latency_ms(dsn, 500 if quick else 2000)
    note("fill_to_notify floor: the same hops with no Cold Harbour code")
    slow_floor, fast_floor = (hops.hop_floor(dsn, rate, count) for rate, count in steps)
    broker = Broker()
    try:
        with stack.run_dir() as directory:
            env = stack.environ(dsn, directory, ALPACA_BASE_URL_BENCH=broker.url)
            stack.migrate(dsn, env)
            listener = Listener(dsn, history.names(env).pos_channel)
            programs = [stack.Program(name, env, Path(directory)) for name in PROGRAMS]
            pids = {"broker": broker.process.pid, **{p.name: p.pid for p in programs}}
            try:
                stack.wait_until(lambda: _listeners(broker.url) > 0, 60, "trades connected to the stream")
                time.sleep(1.0)  # bench only: the stream subscription and state's bus subscription settle
                meter = stack.CpuMeter(pids, stack.postmaster(dsn))
                results = asyncio.run(_measure(broker.url, listener, meter, steps))
            finally:
                for program in reversed(programs):
                    program.stop()
                listener.close()
    finally:
        broker.stop()
    slow, fast = results
    ratio_p99, over_ms = against_floor(slow["p99_ms"], fast["cpu_ms_per_fill"], slow_floor, fast_floor)
    emit("fill_to_notify", slow["p99_ms"], "ms", raw_p99, p50_ms=slow["p50_ms"],  # type: ignore[arg-type]
         ratio_p99_to_floor=ratio_p99, cpu_over_floor_ms=over_ms,
         p99_ms_at_1000=fast["p99_ms"], sent_per_s_at_1000=fast["sent_per_s"],
         cpu_ms_per_fill=fast["cpu_ms_per_fill"], raw_p50_ms=raw_p50,
         floor_p50_ms=slow_floor.p50_ms, floor_p99_ms=slow_floor.p99_ms,
         floor_cpu_ms_per_fill=fast_floor.cpu_ms_per_frame, fills_per_move=1, steps=results)


# Our programs on the fill's path and the hop of the floor each stands for (``hops.py``).
OURS_AGAINST_FLOOR = (("trades", "relay"), ("state", "writer"), ("postgres", "postgres"))


def against_floor(p99_ms: object, cpu_ms_per_fill: object, slow_floor: hops.Floor,
                  fast_floor: hops.Floor) -> tuple[float | None, float | None]:
    """Return our p99 over the floor's, and our CPU per fill on the path minus the floor's (``OURS_AGAINST_FLOOR``)."""
    ratio = (round(p99_ms / slow_floor.p99_ms, 3)
             if isinstance(p99_ms, (int, float)) and slow_floor.p99_ms else None)
    over = None
    if isinstance(cpu_ms_per_fill, dict) and all(ours in cpu_ms_per_fill for ours, _ in OURS_AGAINST_FLOOR):
        floor = fast_floor.cpu_ms_per_frame
        over = round(sum(float(cpu_ms_per_fill[ours]) - floor.get(hop, 0.0) for ours, hop in OURS_AGAINST_FLOOR), 3)
    return ratio, over


def _listeners(url: str) -> int:
    import requests

    return int(requests.get(f"{url}/sim/state", timeout=5).json()["stream"]["listeners"])

"""`fill_to_notify`: a fill at the fake broker → the open-position row's NOTIFY at a LISTEN client.

Path: fake broker → trade_updates stream → ``trades`` → ``bus`` → ``state`` (commit + NOTIFY) →
PostgreSQL → a LISTEN connection here. Resting limit buys are placed first; then the price of
one symbol at a time is moved onto their limit every ``INTERVAL_S``, which fills all of that
symbol's orders at once (``rate × INTERVAL_S`` fills per move). A fill's latency runs from the
moment the move was sent (so it includes the broker's own work) to the first NOTIFY carrying
its row. p50/p99 at 1,000 fills/s; then higher rates, the highest whose p99 < 25 ms and whose
fills all arrived is the sustained maximum. Baseline: raw ``pg_notify`` → LISTEN p99.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psycopg

from scripts.benchmarks import baselines, history, stack
from scripts.benchmarks.memory import Broker
from scripts.benchmarks.report import emit, note, percentile

INTERVAL_S = 0.02
P99_LIMIT_MS = 25.0
HEADERS = {"APCA-API-KEY-ID": "bench-key", "APCA-API-SECRET-KEY": "bench-secret"}


class Listener:
    """A LISTEN connection on the positions channel, in a thread: first NOTIFY time per row."""

    def __init__(self, dsn: str, channel: str) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._conn.execute(f"LISTEN {channel}")
        self.first: dict[str, float] = {}  # parent_id -> perf_counter at receipt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for notice in self._conn.notifies(timeout=0.2):
                received = time.perf_counter()
                for row in _rows(notice.payload):
                    self.first.setdefault(str(row.get("parent_id")), received)

    def close(self) -> None:
        """Stop and close."""
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


def _rows(payload: str) -> Iterator[dict[str, object]]:
    body = json.loads(payload)
    if "row" in body:
        yield body["row"]
    yield from body.get("rows", ())


async def _place(session: aiohttp.ClientSession, url: str, symbols: list[str], per_symbol: int) -> dict[str, str]:
    """Place ``per_symbol`` resting limit buys on each symbol; return order id -> symbol."""
    placed: dict[str, str] = {}
    gate = asyncio.Semaphore(16)

    async def one(symbol: str) -> None:
        body = {"symbol": symbol, "qty": "1", "side": "buy", "type": "limit", "time_in_force": "gtc",
                "limit_price": "1.00"}  # fmt: skip
        async with gate, session.post(f"{url}/v2/orders", json=body, headers=HEADERS) as response:
            response.raise_for_status()
            placed[(await response.json())["id"]] = symbol

    await asyncio.gather(*(one(s) for s in symbols for _ in range(per_symbol)))
    return placed


async def _phase(session: aiohttp.ClientSession, url: str, symbols: list[str]) -> dict[str, float]:
    """Move each symbol onto the limit, one every ``INTERVAL_S``; return symbol -> moment sent."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i, symbol in enumerate(symbols):
        delay = start + i * INTERVAL_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[symbol] = time.perf_counter()
        async with session.post(f"{url}/sim/prices", json={symbol: 1.0}) as response:
            response.raise_for_status()
    return sent


async def _measure(url: str, listener: Listener, rates: list[int], seconds: float) -> list[dict[str, object]]:
    triggers = max(1, round(seconds / INTERVAL_S))
    plan = [(rate, [f"F{k}X{j:03d}" for j in range(triggers)], max(1, round(rate * INTERVAL_S)))
            for k, rate in enumerate(rates)]  # fmt: skip
    async with aiohttp.ClientSession() as session:
        every = [s for _, symbols, _ in plan for s in symbols]
        async with session.post(f"{url}/sim/prices", json=dict.fromkeys(every, 2.0)) as response:
            response.raise_for_status()
        orders: dict[str, dict[str, str]] = {}
        started = time.perf_counter()
        for rate, symbols, per in plan:
            orders[str(rate)] = await _place(session, url, symbols, per)
        note(f"fill_to_notify: placed {sum(map(len, orders.values()))} orders in {time.perf_counter() - started:.1f}s")
        await asyncio.sleep(2.0)  # bench only: let state write the "new" events before timing fills
        results: list[dict[str, object]] = []
        for rate, symbols, _ in plan:
            sent = await _phase(session, url, symbols)
            placed = orders[str(rate)]
            deadline = time.perf_counter() + 10
            while time.perf_counter() < deadline and not all(o in listener.first for o in placed):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polls a dict the listener thread fills
            latencies = [(listener.first[o] - sent[s]) * 1000 for o, s in placed.items() if o in listener.first]
            results.append({"rate": rate, "fills": len(placed), "notified": len(latencies),
                            "p50_ms": percentile(latencies, 50) if latencies else None,
                            "p99_ms": percentile(latencies, 99) if latencies else None})  # fmt: skip
            note(f"fill_to_notify: {results[-1]}")
            if not latencies or len(latencies) < len(placed) or percentile(latencies, 99) >= P99_LIMIT_MS:
                break
        return results


def run(dsn: str, quick: bool) -> None:
    """Measure the figure and its raw baseline."""
    # The fake broker checks buying power against every open order (quadratic in resting orders):
    # placing 36k orders took > 15 minutes, so every step lasts 0.5 s (9k orders in the full run).
    rates, seconds = ([1000, 2000], 0.5) if quick else ([1000, 2000, 5000, 10_000], 0.5)
    note("fill_to_notify baseline: raw NOTIFY -> LISTEN")
    raw_p50, raw_p99 = baselines.raw_notify_latency_ms(dsn, 500 if quick else 2000)
    broker = Broker()
    try:
        with stack.run_dir() as directory:
            env = stack.environ(dsn, directory, ALPACA_BASE_URL_BENCH=broker.url)
            stack.migrate(dsn, env)
            listener = Listener(dsn, history.names(env).pos_channel)
            programs = [stack.Program(name, env, Path(directory)) for name in ("bus", "state", "trades")]
            try:
                stack.wait_until(lambda: _listeners(broker.url) > 0, 60, "trades connected to the stream")
                time.sleep(1.0)  # bench only: the stream subscription and state's bus subscription settle
                results = asyncio.run(_measure(broker.url, listener, rates, seconds))
            finally:
                for program in reversed(programs):
                    program.stop()
                listener.close()
    finally:
        broker.stop()
    at_1k = results[0]
    sustained = [int(r["rate"]) for r in results  # type: ignore[call-overload]
                 if r["p99_ms"] is not None and r["notified"] == r["fills"] and r["p99_ms"] < P99_LIMIT_MS]  # type: ignore[operator]
    emit("fill_to_notify", at_1k["p99_ms"], "ms", raw_p99, p50_ms=at_1k["p50_ms"], raw_p50_ms=raw_p50,  # type: ignore[arg-type]
         rate=1000, max_sustained_fills_per_s=max(sustained, default=None), steps=results)


def _listeners(url: str) -> int:
    import requests

    return int(requests.get(f"{url}/sim/state", timeout=5).json()["stream"]["listeners"])

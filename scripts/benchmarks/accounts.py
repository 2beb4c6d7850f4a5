"""`accounts_scale`: one stack with 1, 10, 100 and 1,000 accounts — what an account costs, idle and busy.

For each account count N: the fake broker serves N accounts (``--account aNNN:KEY:SECRET``, one
process, each its own key), every program runs (``runtime.PROGRAMS``), ``trades`` holds one
trade_updates stream per account. Per N, one step of the JSON line:

- ``start_s``: programs launched → ``state`` beating, every account's stream connected and the
  start-up backfill settled (``state``'s input back to its steady rate);
- ``idle_cpu_pct``: the whole stack's CPU (every program and PostgreSQL: the postmaster, its
  live backends and those that ended) over ``IDLE_S`` (60) with no fills and no price moves, in %
  of one core — what idle accounts cost — measured ``QUIET_S`` (75) + ``QUIET_PER_ACCOUNT_S``
  (0.15) per account after the start-up settled (the one-time work after it grows with the accounts);
- ``rss_total_mb``: the proportional set size (shared pages split, so the sum is real) of every
  program and every PostgreSQL process, after the idle window;
- the latency step: resting limit buys are placed (one per symbol, each symbol unique to one
  account), then the symbols are moved onto their limits round-robin over the accounts at
  ``RATE`` (50) fills per second in total (``sent_per_s``: the rate achieved), so every move fills
  exactly one order of one account. ``p50_ms``/``p99_ms`` run from the fill's broker timestamp to
  the first NOTIFY of its open-position row at a LISTEN client in its own process, listening on
  every account's positions channel; ``state_cpu_ms_per_event`` is ``state``'s CPU over the step
  divided by the bus messages it took in; ``cpu_ms_per_fill`` per program and the fake broker.

One JSON line ``{"name": "accounts_scale", "steps": [...], ...}``; ``value`` is the largest N whose
p99 stays under ``LIMIT_MS``. ``load_avg_1m`` says how busy the machine was (figures from a
loaded machine are not the stack's). ``--quick`` measures 1 and 10 accounts with fewer fills and
a shorter idle window; ``CHMGR_BENCH_ACCOUNTS=1,10,100`` picks the counts.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import time
from datetime import datetime
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import aiohttp
import psycopg
import requests
from psycopg import sql

from coldharbour.config import load_settings
from coldharbour.db.names import account_names
from coldharbour.runtime import PROGRAMS
from scripts.benchmarks import baselines, stack
from scripts.benchmarks.report import emit, note, percentile

COUNTS = (1, 10, 100, 1000)
QUICK_COUNTS = (1, 10)
RATE = 50  # fills per second, in total over the accounts
FILLS = 300
QUICK_FILLS = 100
LIMIT_MS = 25.0
SETTLE_MAX_S = 300.0
IDLE_S = 60.0
QUICK_IDLE_S = 15.0
# After the start-up settled, the first minutes still hold one-time work (each account's first
# ledger check, the read-back of the first KPI documents, the first activity pulls, the first
# still snapshots): the idle window starts after it. It grows with the accounts (at 1,000 it
# took about three minutes on the development machine): QUIET_S plus QUIET_PER_ACCOUNT_S each.
QUIET_S = 75.0
QUIET_PER_ACCOUNT_S = 0.15
QUICK_QUIET_S = 5.0
STEADY_PER_ACCOUNT_S = 0.2  # bus messages per second and account once started (snapshots, heartbeats)
STEADY_BASE_S = 10.0


def _slug(i: int) -> str:
    return f"a{i:03d}"


def _credentials(i: int) -> tuple[str, str]:
    return f"bench-key-{i:03d}", f"bench-secret-{i:03d}"


def _listen(dsn: str, channels: list[str], out: mp.Queue, ready: MpEvent, stop: MpEvent) -> None:
    """Child process: LISTEN on every channel; put (parent_id, latency ms) for each row's first NOTIFY."""
    seen: set[str] = set()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for channel in channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        ready.set()
        while not stop.is_set():
            for notice in conn.notifies(timeout=0.2):
                received = time.time()
                body = json.loads(notice.payload)
                rows = [body["row"]] if "row" in body else body.get("rows", ())
                for row in rows:
                    parent_id = str(row.get("parent_id"))
                    if parent_id in seen or not row.get("filled_at"):
                        continue
                    seen.add(parent_id)
                    filled = datetime.fromisoformat(str(row["filled_at"])).timestamp()
                    out.put((parent_id, (received - filled) * 1000))


class Listener:
    """The LISTEN process and the latencies it reported."""

    def __init__(self, dsn: str, channels: list[str]) -> None:
        ctx = mp.get_context("spawn")
        self._queue: mp.Queue = ctx.Queue()
        self._stop = ctx.Event()
        ready = ctx.Event()
        self._process = ctx.Process(target=_listen, args=(dsn, channels, self._queue, ready, self._stop), daemon=True)
        self._process.start()
        if not ready.wait(60):
            raise RuntimeError("the LISTEN process did not start")
        self.latency: dict[str, float] = {}

    def drain(self) -> None:
        """Take what the process reported so far."""
        while True:
            try:
                parent_id, ms = self._queue.get_nowait()
            except queue.Empty:
                return
            self.latency[parent_id] = ms

    def close(self) -> None:
        """Stop the process."""
        self._stop.set()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


class Broker:
    """The fake broker with ``count`` accounts."""

    def __init__(self, count: int, log: Path) -> None:
        accounts = [a for i in range(count) for a in ("--account", f"{_slug(i)}:{':'.join(_credentials(i))}")]
        self._log = log.open("wb")
        # --rest-limit-per-min 0: the benchmark's own order bursts are the load, not a key's guest.
        self.process = subprocess.Popen([sys.executable, "-m", "coldharbour.sim.broker", "--port", "0", *accounts,
                                         "--rest-limit-per-min", "0"],
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        line = stack.wait_until(
            lambda: next((x for x in log.read_text().splitlines() if "listening port=" in x), ""), 60,
            "the fake broker to listen")  # fmt: skip
        self.url = f"http://127.0.0.1:{int(line.split('port=')[1].split()[0])}"

    def listeners(self) -> int:
        """Return how many trade_updates connections are open."""
        return int(requests.get(f"{self.url}/sim/state", timeout=5).json()["stream"]["listeners"])

    def stop(self) -> None:
        """Terminate it."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self._log.close()


def _environ(dsn: str, directory: Path, count: int, url: str) -> dict[str, str]:
    env = stack.environ(dsn, directory, CHMGR_ACCOUNTS=",".join(_slug(i) for i in range(count)),
                        ZMQ_SIP_STREAM_ENDPOINT=f"ipc://{directory}/feed.sock", DISABLE_SESSION_SLEEP="1")  # fmt: skip
    for name in ("ALPACA_API_KEY_BENCH", "ALPACA_SECRET_KEY_BENCH", "ALPACA_BASE_URL_BENCH"):
        env.pop(name)
    for i in range(count):
        key, secret = _credentials(i)
        suffix = _slug(i).upper()
        env |= {f"ALPACA_API_KEY_{suffix}": key, f"ALPACA_SECRET_KEY_{suffix}": secret,
                f"ALPACA_BASE_URL_{suffix}": url}
    return env


def _plan(count: int, fills: int) -> list[tuple[int, str]]:
    """Return (account index, symbol) per fill, round-robin over the accounts; symbols unique."""
    return [(k % count, f"A{k % count:03d}X{k // count:04d}") for k in range(fills)]


async def _place(session: aiohttp.ClientSession, url: str, plan: list[tuple[int, str]]) -> dict[str, str]:
    """Place one resting limit buy per (account, symbol); return symbol -> order id."""
    placed: dict[str, str] = {}
    gate = asyncio.Semaphore(16)

    async def one(account: int, symbol: str) -> None:
        key, secret = _credentials(account)
        headers = {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}
        body = {"symbol": symbol, "qty": "1", "side": "buy", "type": "limit", "time_in_force": "gtc",
                "limit_price": "1.00"}  # fmt: skip
        async with gate, session.post(f"{url}/v2/orders", json=body, headers=headers) as response:
            response.raise_for_status()
            placed[symbol] = (await response.json())["id"]

    await asyncio.gather(*(one(a, s) for a, s in plan))
    return placed


async def _fills(url: str, plan: list[tuple[int, str]], listener: Listener, pids: dict[str, int],
                 beats: stack.Heartbeats) -> dict[str, object]:  # fmt: skip
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"{url}/sim/prices", json={s: 2.0 for _, s in plan}) as response:
            response.raise_for_status()
        placed = await _place(session, url, plan)
        await asyncio.sleep(2.0)  # bench only: let state write the "new" events before timing fills
        before_in = beats.next("state", 15).counters.get("messages_in", 0)
        cpu_before = {name: stack.cpu_ms(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        sent: list[asyncio.Task[None]] = []

        async def move(symbol: str) -> None:
            async with session.post(f"{url}/sim/prices", json={symbol: 1.0}) as response:
                response.raise_for_status()

        for i, (_, symbol) in enumerate(plan):
            delay = start + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(asyncio.create_task(move(symbol)))
        await asyncio.gather(*sent)
        sent_per_s = len(plan) / max(time.perf_counter() - start, 1e-9)
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            listener.drain()
            if all(o in listener.latency for o in placed.values()):
                break
            await asyncio.sleep(0.05)
        cpu = {name: stack.cpu_ms(pid) - cpu_before[name] for name, pid in pids.items()}
        events = beats.next("state", 15).counters.get("messages_in", 0) - before_in
    latencies = [listener.latency[o] for o in placed.values() if o in listener.latency]
    return {"sent_per_s": round(sent_per_s, 1), "fills": len(placed), "notified": len(latencies),
            "p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
            "p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
            "events": events, "state_cpu_ms_per_event": round(cpu["state"] / max(events, 1), 3),
            "cpu_ms_per_fill": {name: round(ms / max(len(placed), 1), 2) for name, ms in cpu.items()}}  # fmt: skip


def _settle(beats: stack.Heartbeats, count: int, timeout_s: float = SETTLE_MAX_S) -> bool:
    """Wait until ``state`` takes in at most its steady rate (two heartbeats in a row); False on timeout.

    The start-up backfill (every account's orders, fills, activities, a first snapshot) is not
    the steady load the fill step measures; metrics, snapshots and equity per account are.
    """
    deadline = time.monotonic() + timeout_s
    calm = 0
    last = beats.next("state", 15)
    while time.monotonic() < deadline:
        beat = beats.next("state", 15)
        elapsed = max(beat.uptime_s - last.uptime_s, 0.001)
        rate = (beat.counters.get("messages_in", 0) - last.counters.get("messages_in", 0)) / elapsed
        calm = calm + 1 if rate <= STEADY_PER_ACCOUNT_S * count + STEADY_BASE_S else 0
        if calm >= 2:
            return True
        last = beat
    return False


def _idle(pids: dict[str, int], postmaster: int, window_s: float) -> tuple[float, dict[str, float]]:
    """Return the whole stack's CPU over ``window_s`` of nothing happening (% of one core), and per part (ms)."""
    meter = stack.CpuMeter(pids, postmaster)
    meter.start()
    time.sleep(window_s)  # bench only: the window measured
    spent = meter.spent_ms()
    return round(sum(spent.values()) / (window_s * 1000) * 100, 2), {k: round(v, 1) for k, v in spent.items()}


def _rss_total_mb(pids: dict[str, int], postmaster: int) -> float:
    everything = [*pids.values(), postmaster, *stack.children(postmaster)]
    return round(sum(stack.pss_mb(pid) for pid in everything), 1)


def _one(dsn: str, count: int, fills: int, idle_s: float, quiet_s: float) -> dict[str, object]:
    with stack.run_dir() as directory:
        broker = Broker(count, directory / "broker.log")
        try:
            env = _environ(dsn, directory, count, broker.url)
            started = time.monotonic()
            stack.migrate(dsn, env)
            migrate_s = time.monotonic() - started
            settings = load_settings(env)
            channels = [account_names(settings, a.slug).pos_channel for a in settings.accounts]
            listener = Listener(dsn, channels)
            beats = stack.Heartbeats(f"ipc://{directory}/bus-out.sock")
            postmaster = stack.postmaster(dsn)
            started = time.monotonic()
            programs = [stack.Program(name, env, directory) for name in PROGRAMS]
            try:
                stack.wait_until(lambda: beats.latest("state") is not None and broker.listeners() >= count,
                                 SETTLE_MAX_S, f"state beating and {count} streams connected")  # fmt: skip
                streaming_s = time.monotonic() - started
                settled = _settle(beats, count)
                start_s = time.monotonic() - started
                note(f"accounts_scale: {count} accounts streaming in {streaming_s:.1f}s, settled={settled} in "
                     f"{start_s:.1f}s (schema {migrate_s:.1f}s); idle for {idle_s:.0f}s")
                stack_pids = {p.name: p.pid for p in programs}
                time.sleep(quiet_s)  # bench only: the one-time work after the start-up ends
                idle_cpu_pct, idle_cpu_ms = _idle(stack_pids, postmaster, idle_s)
                rss_total_mb = _rss_total_mb(stack_pids, postmaster)
                pids = {"broker": broker.process.pid, **stack_pids}
                result = asyncio.run(_fills(broker.url, _plan(count, fills), listener, pids, beats))
                rss = {p.name: round(stack.rss_mb(p.pid), 1) if p.process.poll() is None else None for p in programs}
            finally:
                for program in reversed(programs):
                    program.stop()
                listener.close()
                beats.close()
        finally:
            broker.stop()
    named = ("sent_per_s", "p50_ms", "p99_ms", "state_cpu_ms_per_event")
    return {"accounts": count, **{k: result[k] for k in named[:3]},
            "idle_cpu_pct": idle_cpu_pct, "start_s": round(start_s, 2), "rss_total_mb": rss_total_mb,
            "state_cpu_ms_per_event": result["state_cpu_ms_per_event"],
            "streaming_s": round(streaming_s, 2), "settled": settled, "schema_s": round(migrate_s, 2),
            "idle_window_s": idle_s, "idle_after_s": quiet_s, "idle_cpu_ms": idle_cpu_ms,
            **{k: v for k, v in result.items() if k not in named},
            "rss_mb": rss}  # fmt: skip


def _counts(quick: bool) -> tuple[int, ...]:
    chosen = os.environ.get("CHMGR_BENCH_ACCOUNTS", "")
    if chosen:
        return tuple(int(n) for n in chosen.split(",") if n.strip())
    return QUICK_COUNTS if quick else COUNTS


def _reset(dsn: str) -> None:
    """Drop every table the previous count created (each count starts from an empty database)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname IN "
                                    "('accounts', 'account_activities')").fetchall():  # fmt: skip
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def run(dsn: str, quick: bool) -> None:
    """Measure every account count and the raw baseline; report the largest count under the limit."""
    counts, fills = _counts(quick), QUICK_FILLS if quick else FILLS
    idle_s, quiet_s = (QUICK_IDLE_S, QUICK_QUIET_S) if quick else (IDLE_S, QUIET_S)
    note("accounts_scale baseline: raw NOTIFY -> LISTEN")
    _, raw_p99 = baselines.raw_notify_latency_ms(dsn, 500)
    steps: list[dict[str, object]] = []
    for count in counts:
        _reset(dsn)
        note(f"accounts_scale: {count} accounts, {fills} fills at {RATE}/s")
        steps.append(_one(dsn, count, fills, idle_s, quiet_s + (0.0 if quick else QUIET_PER_ACCOUNT_S * count)))
        note(f"accounts_scale: {steps[-1]}")
    under = [int(str(s["accounts"])) for s in steps
             if isinstance(s["p99_ms"], float) and s["p99_ms"] < LIMIT_MS and s["notified"] == s["fills"]]
    # The same question without this machine's load: the largest N whose p99 is within twice one account's.
    first = steps[0]["p99_ms"] if steps else None
    scaled = [int(str(s["accounts"])) for s in steps if isinstance(first, float) and isinstance(s["p99_ms"], float)
              and s["p99_ms"] <= 2 * first and s["notified"] == s["fills"]]
    emit("accounts_scale", max(under) if under else None, "accounts", None, limit_p99_ms=LIMIT_MS,
         fill_rate_per_s=RATE, raw_notify_p99_ms=raw_p99, within_2x_of_one_account=max(scaled) if scaled else None,
         load_avg_1m=os.getloadavg()[0], counts=list(counts), steps=steps)  # fmt: skip

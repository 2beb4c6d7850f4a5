"""`notify_to_browser`: a row's NOTIFY → the DOM change in 50 connected browser pages, and how
many SSE clients one `web` process holds at 100 changes/s with p99 under 50 ms.

The real `web` program (``python -m workers.web``) serves a migrated database. Latency: 50
pages of one chromium (Playwright, ``/usr/bin/chromium``; one browser context each, since a
browser opens at most 6 connections to one origin per context) show the dashboard; a
MutationObserver in each page stamps (wall clock, sub-millisecond) the moment a lot's ``mkt_px``
cell shows a new value. Here, ``pg_notify`` of a ``{"row": ...}`` on the positions channel is
sent at 10/s, each with a unique ``mkt_px``, stamped just before it is sent; the figure is p50/p99
over every (page, change). Baseline: raw ``pg_notify`` → LISTEN in the same run.

Capacity: lightweight SSE clients (raw asyncio HTTP, in this process) are added in steps; at
each step 100 changes/s are notified for a few seconds and every client times every frame; the
value is the largest step whose p99 stayed under 50 ms with nothing lost. The clients share the
machine (2 cores) with `web` and PostgreSQL, so the figure is a floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import requests

from coldharbour.config import load_settings
from coldharbour.db import notify
from coldharbour.db.names import account_names
from coldharbour.sim.postgres import free_port
from scripts.benchmarks import baselines, stack
from scripts.benchmarks.report import emit, note, percentile

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--renderer-process-limit=8",
]  # fmt: skip
LOTS = 20
BROWSER_RATE = 10.0  # a busy account's row pushes (UI_PUSH_PCT_THRESHOLD throttles marks)
CAPACITY_RATE = 100.0
P99_LIMIT_MS = 50.0
MARKER = 1_000_000
OBSERVER = """() => {
  window.__seen = {};
  const stamp = (td) => {
    const v = td.textContent;
    if (!(v in window.__seen)) window.__seen[v] = performance.timeOrigin + performance.now();
  };
  new MutationObserver((records) => {
    for (const r of records) {
      const n = r.target.nodeType === 3 ? r.target.parentNode : r.target;
      if (n.matches && n.matches('td[data-col=mkt_px]')) stamp(n);
      for (const a of r.addedNodes) {
        const td = a.querySelector ? a.querySelector('td[data-col=mkt_px]') : null;
        if (td) stamp(td);
      }
    }
  }).observe(document.getElementById('positions'), {subtree: true, childList: true, characterData: true});
  return true;
}"""


def _row(seq: int) -> dict[str, Any]:
    return {
        "parent_id": f"bench-{seq % LOTS}", "symbol": f"B{seq % LOTS:02d}", "side": "long", "qty": 10,
        "avg_fill": 100, "mkt_px": MARKER + seq, "updated_at": datetime.now(UTC),
    }  # fmt: skip


def _payload(channel: str, seq: int) -> str:
    return notify.to_json({"row": _row(seq)})  # docs/spec.md §6: one upserted row


def _browser_latencies(url: str, dsn: str, channel: str, pages: int, changes: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    sent: dict[int, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            opened = []
            for _ in range(pages):
                page = browser.new_context().new_page()
                page.goto(f"{url}/?account={stack.ACCOUNT}")
                page.wait_for_selector("#positions-count:has-text('(')", timeout=60_000)
                page.evaluate(OBSERVER)
                opened.append(page)
            note(f"notify_to_browser: {pages} pages connected")
            with psycopg.connect(dsn, autocommit=True) as conn:
                start = time.perf_counter()
                for seq in range(changes):
                    delay = start + seq / BROWSER_RATE - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)  # pacing the sender
                    payload = _payload(channel, seq)
                    sent[seq] = time.time() * 1000
                    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
            last = str(MARKER + changes - 1)
            for page in opened:
                page.wait_for_function(f"() => '{last}' in window.__seen", timeout=60_000)
            latencies = []
            for page in opened:
                seen = page.evaluate("() => window.__seen")
                for seq, at in sent.items():
                    shown = seen.get(str(MARKER + seq))
                    if shown is not None:
                        latencies.append(shown - at)
            return latencies
        finally:
            browser.close()


class SseClient:
    """One raw SSE connection: the arrival time of every marked ``mkt_px`` it reads."""

    PATTERN = re.compile(rb'"mkt_px":(\d+)')

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.last = -1
        self.task: asyncio.Task[None] | None = None

    def expect(self, last: int) -> None:
        """Set ``done`` once change ``last`` has arrived."""
        self.last = last
        self.done.clear()

    async def run(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /api/stream?account={stack.ACCOUNT} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        try:
            while True:
                chunk = await reader.read(65_536)
                if not chunk:
                    return
                now = time.perf_counter()
                if b"event: snapshot" in chunk:
                    self.ready.set()
                for match in self.PATTERN.finditer(chunk):
                    self.arrived.setdefault(int(match.group(1)) - MARKER, now)
                if self.last in self.arrived:
                    self.done.set()
        finally:
            writer.close()


async def _capacity_step(
    dsn: str, channel: str, clients: list[SseClient], first: int, seconds: float
) -> tuple[float, int]:
    count = int(CAPACITY_RATE * seconds)
    sent: dict[int, float] = {}
    for client in clients:
        client.expect(first + count - 1)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        for i in range(count):
            seq = first + i
            delay = start + i / CAPACITY_RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the sender
            payload = _payload(channel, seq)
            sent[seq] = time.perf_counter()
            await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
    with contextlib.suppress(TimeoutError):  # a client that never gets the last change counts it lost
        await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in clients)), 10)
    latencies, lost = [], 0
    for client in clients:
        for seq, at in sent.items():
            got = client.arrived.get(seq)
            if got is None:
                lost += 1
            else:
                latencies.append((got - at) * 1000)
    return (percentile(latencies, 99) if latencies else float("inf")), lost


async def _capacity(
    port: int, dsn: str, channel: str, steps: list[int], seconds: float
) -> tuple[int, list[dict[str, Any]]]:
    clients: list[SseClient] = []
    best, table, seq = 0, [], MARKER // 2
    try:
        for size in steps:
            while len(clients) < size:
                client = SseClient()
                client.task = asyncio.create_task(client.run(port))
                clients.append(client)
            await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 120)
            p99, lost = await _capacity_step(dsn, channel, clients, seq, seconds)
            seq += int(CAPACITY_RATE * seconds)
            table.append({"clients": size, "p99_ms": round(p99, 2), "lost": lost})
            note(f"notify_to_browser: {size} SSE clients at {CAPACITY_RATE:.0f}/s: p99 {p99:.1f} ms, lost {lost}")
            if p99 >= P99_LIMIT_MS or lost:
                break
            best = size
    finally:
        for client in clients:
            if client.task is not None:
                client.task.cancel()
        await asyncio.gather(*(c.task for c in clients if c.task is not None), return_exceptions=True)
    return best, table


def run(dsn: str, quick: bool) -> None:
    """Measure and print both figures."""
    pages, changes = (5, 30) if quick else (50, 150)
    steps = [50, 100] if quick else [50, 100, 150, 200, 300, 400, 600, 800, 1200, 1600]
    seconds = 1.5 if quick else 5.0
    with stack.run_dir() as run_dir:
        port = free_port()
        env = stack.environ(dsn, run_dir, CHMGR_WEB_BIND=f"127.0.0.1:{port}")
        stack.migrate(dsn, env)
        channel = account_names(load_settings(env), stack.ACCOUNT).pos_channel
        raw_p50, raw_p99 = baselines.raw_notify_latency_ms(dsn, 500 if quick else 2000)
        (run_dir / "logs").mkdir()
        web = stack.Program("web", env, Path(run_dir / "logs"))
        url = f"http://127.0.0.1:{port}"
        try:
            stack.wait_until(lambda: _answers(url), 30, "web to answer")
            latencies = _browser_latencies(url, dsn, channel, pages, changes)
            expected = pages * changes
            emit("notify_to_browser", percentile(latencies, 99), "ms", raw_p99, p50_ms=percentile(latencies, 50),
                 baseline_p50_ms=raw_p50, pages=pages, changes=changes, rate_per_s=BROWSER_RATE,
                 lost=expected - len(latencies), load_avg_1m=os.getloadavg()[0])  # fmt: skip
            best, table = asyncio.run(_capacity(port, dsn, channel, steps, seconds))
            emit("notify_to_browser_sse_clients", best, "clients", None, rate_per_s=CAPACITY_RATE,
                 p99_limit_ms=P99_LIMIT_MS, steps=table, load_avg_1m=os.getloadavg()[0])  # fmt: skip
        finally:
            web.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/accounts", timeout=2).status_code == 200
    except requests.RequestException:
        return False

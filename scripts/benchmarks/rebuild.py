"""`rebuild_1m`: the ledger rebuilt from 1,000,000 stored orders+fills, DB load included, and its
peak RSS, beside the raw fetch of the same rows with the GC off.

The rebuild runs in a fresh process doing what ``state`` does at start-up (``Mirror.load``:
``db.loads.load_history``, then ``domain.ledger.rebuild`` of the fills keyed as the mirror holds
them), so its peak RSS (VmHWM) is its own.

The baseline is the raw fetch (psycopg's defaults, server-side cursor) of the stored columns the
rebuild reads, in their stored types (``history.fetch_queries``). ``loader_fetch_s`` is the raw
fetch of the loader's own SELECTs (the server converts times, ids and numbers there), for reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from coldharbour.db import loads
from scripts.benchmarks import baselines, history, stack
from scripts.benchmarks.report import emit, note

REBUILD = r"""
import asyncio, json, sys, time
from pathlib import Path
import psycopg
from coldharbour.db import loads
from coldharbour.domain.ledger import rebuild
from coldharbour.domain.orders import OrderBook
from scripts.benchmarks import history
async def main():
    names = history.names(dict(__import__("os").environ))
    async with await psycopg.AsyncConnection.connect(sys.argv[1]) as conn:
        started = time.perf_counter()
        orders, fills = await loads.load_history(conn, names)
        loaded = time.perf_counter()
    ledger = rebuild(OrderBook(orders), {fill.key: fill for fill in fills})
    done = time.perf_counter()
    hwm = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")][0]
    print(json.dumps({"total_s": done - started, "load_s": loaded - started, "rebuild_s": done - loaded,
                      "orders": len(orders), "fills": len(fills), "slices": len(ledger.slices),
                      "peak_rss_mb": int(hwm.split()[1]) / 1024}))
asyncio.run(main())
"""


def run(dsn: str, quick: bool) -> None:
    """Measure the figure and its raw baseline."""
    trips = 25_000 if quick else 250_000  # 4 rows each: 100k / 1M orders+fills
    with stack.run_dir() as directory:
        env = stack.environ(dsn, directory)
        stack.migrate(dsn, env)
        account = history.names(env)
        rows = history.store(dsn, account, history.round_trips(trips, 1000))
        note(f"rebuild_1m: raw fetch, then rebuild from {rows} rows")
        baseline = baselines.raw_fetch_s(dsn, history.fetch_queries(account))
        loader_fetch = baselines.raw_fetch_s(dsn, [q.as_string() for q in loads.history_queries(account)])
        done = subprocess.run([sys.executable, "-c", REBUILD, dsn], env={**os.environ, **env}, capture_output=True,
                              text=True, check=True, timeout=600)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    emit("rebuild_1m", result["total_s"], "s", baseline, rows=rows, load_s=result["load_s"],
         rebuild_s=result["rebuild_s"], peak_rss_mb=result["peak_rss_mb"], slices=result["slices"],
         loader_fetch_s=loader_fetch)  # fmt: skip

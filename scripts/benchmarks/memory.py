"""`rss_idle`: RSS of every program idle; `rss_100k_lots`: RSS of `state` holding 100,000 open lots."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

from coldharbour.runtime import PROGRAMS
from scripts.benchmarks import history, stack
from scripts.benchmarks.report import emit, note


class Broker:
    """The fake broker (``python -m coldharbour.sim.broker --port 0``) with the bench account."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coldharbour.sim.broker", "--port", "0", "--account",
             f"{stack.ACCOUNT}:bench-key:bench-secret", "--rest-limit-per-min", "0"],  # the bench's orders are the load
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else ""
        if "listening port=" not in line:
            self.stop()
            raise RuntimeError(f"fake broker did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split('port=')[1].split()[0])}"

    def stop(self) -> None:
        """Terminate it."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def run_idle(dsn: str, quick: bool) -> None:
    """Start every program against the fake broker, let it idle, read each RSS."""
    idle_s = 3.0 if quick else 10.0
    broker = Broker()
    try:
        with stack.run_dir() as directory:
            env = stack.environ(dsn, directory, ALPACA_BASE_URL_BENCH=broker.url,
                                ZMQ_SIP_STREAM_ENDPOINT=f"ipc://{directory}/feed.sock")  # fmt: skip
            stack.migrate(dsn, env)
            beats = stack.Heartbeats(f"ipc://{directory}/bus-out.sock")
            programs = [stack.Program(name, env, Path(directory)) for name in PROGRAMS]
            try:
                running = [name for name in PROGRAMS if name != "bus"]
                stack.wait_until(lambda: {hb.program for hb in beats.poll()} >= set(running), 60, "every heartbeat")
                note(f"rss_idle: all programs up, idling {idle_s}s")
                time.sleep(idle_s)  # bench only: idle means idle
                rss = {p.name: round(stack.rss_mb(p.pid), 1) if p.process.poll() is None else None for p in programs}
            finally:
                for program in reversed(programs):
                    program.stop()
                beats.close()
    finally:
        broker.stop()
    values = [v for v in rss.values() if v is not None]
    emit("rss_idle", max(values) if values else None, "MB", None, per_program=rss,
         exited=[n for n, v in rss.items() if v is None])  # fmt: skip


def run_lots(dsn: str, quick: bool) -> None:
    """Load ``state`` with open lots (every one a row) and read its RSS once its start is over.

    The first commit is only the first chunk of the start plan: RSS read then is the start's
    peak, not what ``state`` holds. ``start_s`` runs to the last chunk.
    """
    lots = 20_000 if quick else 100_000
    with stack.run_dir() as directory:
        env = stack.environ(dsn, directory)
        stack.migrate(dsn, env)
        history.store(dsn, history.names(env), history.open_lots(lots, 1000))
        beats = stack.Heartbeats(f"ipc://{directory}/bus-out.sock")
        programs = [stack.Program(name, env, Path(directory)) for name in ("bus", "state")]
        try:
            started = time.monotonic()
            stack.wait_until(lambda: beats.counter("state", "commits") >= 1, 600, "state loaded")
            # The start plan commits in chunks: the start is over when a heartbeat shows no new commit.
            commits = beats.counter("state", "commits")
            while (now := beats.next("state", 60).counters.get("commits", 0)) != commits:
                commits = now
            loaded_s = time.monotonic() - started
            beats.next("state")  # one more period: the start's memory is returned before the next beat
            rss, peak = stack.rss_mb(programs[1].pid), stack.peak_rss_mb(programs[1].pid)
        finally:
            for program in reversed(programs):
                program.stop()
            beats.close()
    emit("rss_100k_lots", rss, "MB", None, lots=lots, peak_rss_mb=peak, start_s=loaded_s)

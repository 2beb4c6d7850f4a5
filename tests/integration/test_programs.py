"""Real programs over ipc://: bad config exits 1, state writes + NOTIFYs, survives a PG restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import zmq

from coldharbour.bus import Publisher
from coldharbour.messages import Tick, topic_tick
from coldharbour.runtime import EXIT_CONFIG
from tests.fixtures.stack import HeartbeatWatch, Program
from tests.support import TEST_SECRETS, make_environ, wait_for

pytestmark = pytest.mark.integration
PASSWORD = "pg-pass-Zx9Qw7"


def _run_program(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHMGR_", "ALPACA_"))}
    return subprocess.run(
        [sys.executable, "-m", f"workers.{name}"], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "CHMGR_DSN: required, not set"),
        (
            {"CHMGR_DSN": "postgresql://u:pw-LEAK-1@h/db", "FLUSH_INTERVAL_S": "fast"},
            "FLUSH_INTERVAL_S: expected a number, found 'fast'",
        ),
        (
            {
                "CHMGR_DSN": "postgresql://u:pw-LEAK-1@h/db", "CHMGR_ACCOUNTS": "x" * 45,
                "ALPACA_API_KEY_" + "X" * 45: "k", "ALPACA_SECRET_KEY_" + "X" * 45: "s",
            },
            "PostgreSQL allows 63",
        ),
        (
            {"CHMGR_DSN": "postgresql://u:pw-LEAK-1@h/db", "CHMGR_CONFIG": "/nonexistent/chmgr.toml"},
            "CHMGR_CONFIG: file not found",
        ),
    ],
)
@pytest.mark.parametrize("program", ["state", "bus"])
def test_bad_configuration_exits_78_with_one_line(program: str, env: dict[str, str], expected: str) -> None:
    result = _run_program(program, env)

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == EXIT_CONFIG  # supervisord.conf: not restarted
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "pw-LEAK-1" not in result.stderr + result.stdout


def test_unknown_toml_key_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('CHMGR_DSN = "postgresql://u@h/db"\nFLUSH_INTERVAL_SECONDS = 3\n')

    result = _run_program("state", {"CHMGR_CONFIG": str(config)})

    assert result.returncode == EXIT_CONFIG
    assert "unknown key 'FLUSH_INTERVAL_SECONDS'" in result.stderr


def _listen(dsn: str, channel: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(f"LISTEN {channel}")
    return conn


def _next_notify(conn: psycopg.Connection, timeout_s: float = 10.0) -> str | None:
    for note in conn.notifies(timeout=timeout_s, stop_after=1):
        return note.payload
    return None


def _price(dsn: str, symbol: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT price FROM accounts.latest_prices WHERE symbol = %s", (symbol,)).fetchone()
    return row[0] if row else None


def test_state_writes_notifies_and_survives_postgres_restart(pg_cluster, migrated_dsn, tmp_path: Path) -> None:
    dsn = migrated_dsn.reveal().replace("postgres@", f"postgres:{PASSWORD}@")
    run_dir = tmp_path / "run"
    env = make_environ(dsn, run_dir, UI_HEARTBEAT_S="0.2", FLUSH_INTERVAL_S="0.2", LOG_LEVEL="DEBUG")
    bus = Program("bus", env, tmp_path)
    state = Program("state", env, tmp_path)
    watch = HeartbeatWatch(f"ipc://{run_dir}/bus-out.sock")
    ctx = zmq.Context()
    publisher = Publisher(ctx, f"ipc://{run_dir}/bus-in.sock", "prices")
    listener = None
    try:
        watch.wait(lambda hb: {"bus", "state"} <= hb.keys(), what="bus and state heartbeats")
        listener = _listen(migrated_dsn.reveal(), "pos_channel_demo")
        first_notify = _next_notify(listener)
        wait_for(
            lambda: publisher.publish(topic_tick("AAPL"), Tick(symbol="AAPL", price=187.25, ts_event=time.time_ns()))
            and _price(dsn, "AAPL") is not None,
            15, what="tick flushed to latest_prices",
        )
        listener.close()

        pg_cluster.stop("immediate")
        try:
            watch.wait(lambda hb: hb["state"].counters.get("commit_failures", 0) >= 1, what="state notices the outage")
            alive_during_outage = state.process.poll() is None
        finally:
            pg_cluster.start()
        listener = _listen(migrated_dsn.reveal(), "pos_channel_demo")
        after_restart = _next_notify(listener, 30)
        wait_for(
            lambda: publisher.publish(topic_tick("AAPL"), Tick(symbol="AAPL", price=190.5, ts_event=time.time_ns()))
            and str(_price(dsn, "AAPL")) == "190.5",
            30, what="tick after restart flushed",
        )
        reconnects = watch.wait(lambda hb: hb["state"].counters.get("db_reconnects", 0), what="reconnect counted")
    finally:
        if listener is not None:
            listener.close()
        publisher.close()
        ctx.term()
        watch.close()
        codes = {p.name: p.terminate() for p in (state, bus)}
    logs = state.log() + bus.log()

    assert first_notify is not None
    assert '"op":"heartbeat"' in first_notify
    assert alive_during_outage
    assert after_restart is not None
    assert '"op":"heartbeat"' in after_restart
    assert reconnects >= 1
    assert codes == {"state": 0, "bus": 0}
    assert "stopped cleanly program=state" in logs
    leaked = [s for s in (PASSWORD, *(v for pair in TEST_SECRETS.values() for v in pair)) if s in logs]
    assert leaked == []
    assert oct((run_dir).stat().st_mode & 0o777) == "0o700"

"""`chmgr status`: supervisord's view of every program joined with its bus heartbeat, and
whether the stack works (``coldharbour.health``: the same words as `chmgr up` and the page).

Below the table, the start-up's progress (``trades: n of N accounts streaming``), then one line
per cause (``snapshot: account demo: credentials rejected by …``, ``database unreachable …``)
and per thing not yet shown to work (``waiting: …``); the command exits 1 when there is any.
A running program whose heartbeat says ``db_degraded`` (``state``'s
writer hit its statement or lock timeout on the last commit) is shown ``RUNNING (degraded)``.
The database is checked by connecting to it (read-only, ``CONNECT_TIMEOUT_S``).

Heartbeats (``hb.<program>``, one per second) are collected from the bus for up to
``HEARTBEAT_LISTEN_S``, or until every running program has been heard from. A session program
that is stopped while the ``scheduler`` runs (and ``DISABLE_SESSION_SLEEP`` is off) is shown as
sleeping by schedule, not as a failure, when the stored market schedule says the market is
closed now (or cannot be read: then the scheduler is given the benefit of the doubt). A program
that supervisord gave up on (FATAL) or is retrying is followed by the last line of its log,
which for a missing or bad setting names the variable.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

import psycopg
import typer
import zmq
from rich.console import Console
from rich.table import Table

from coldharbour import runtime
from coldharbour.bus import Subscriber
from coldharbour.cli.terminal import cell, printable
from coldharbour.config import Settings
from coldharbour.db import queries
from coldharbour.db.connect import connect_read_only
from coldharbour.db.names import shared_names
from coldharbour.domain.schedule import Phase, ny_date, phase_at
from coldharbour.errors import DatabaseError
from coldharbour.health import (
    DEGRADED,
    HEALTHY_STATES,
    SLEEPING,
    Health,
    assess,
    client_for,
    is_degraded,
    is_parked,
    shown_state,
)
from coldharbour.messages import PREFIX_HEARTBEAT, Heartbeat
from coldharbour.supervisor import ProcessInfo

__all__ = ["DEGRADED", "HEALTHY_STATES", "SLEEPING", "is_degraded", "shown_state", "status"]

HEARTBEAT_LISTEN_S: Final = 1.5
# A program in one of these states is explained by the last line of its log (a settings error).
EXPLAINED_STATES: Final = frozenset({"FATAL", "BACKOFF", "EXITED"})
LOG_TAIL_BYTES: Final = 4096
LOG_LINE_MAX: Final = 300
# Counters worth a glance, in display order (others stay in the heartbeat).
KEY_COUNTERS: Final = (
    ("messages_in", "in"),
    ("messages_out", "out"),
    ("rejects", "rejects"),
    ("seq_gaps", "gaps"),
    ("reconnects", "reconnects"),
    ("commit_failures", "commit failures"),
    ("schedule_short", "schedule short"),
    ("schedule_exhausted", "schedule exhausted"),
    ("equity_mismatches", "equity mismatches"),
    ("db_timeouts", "db timeouts"),
)


async def collect_heartbeats(settings: Settings, expected: Iterable[str], listen_s: float) -> dict[str, Heartbeat]:
    """Return the latest heartbeat per program heard on the bus within ``listen_s``."""
    waiting = set(expected)
    heard: dict[str, Heartbeat] = {}
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    subscriber = Subscriber(context, settings.bus_out, [PREFIX_HEARTBEAT])
    deadline = time.monotonic() + listen_s
    try:
        while waiting and (remaining := deadline - time.monotonic()) > 0:
            try:
                _, message = await asyncio.wait_for(subscriber.recv(), remaining)
            except TimeoutError:
                break
            if isinstance(message, Heartbeat):
                heard[message.program] = message
                waiting.discard(message.program)
    finally:
        subscriber.close()
        context.destroy(linger=0)
    return heard


async def market_phase(settings: Settings, now: datetime) -> Phase | None:
    """Return the session phase at ``now`` from the stored schedule, or None if it cannot be read."""
    try:
        conn = await connect_read_only(settings.reader_dsn, "chmgr-status")
    except DatabaseError:
        return None
    try:
        today = ny_date(now)
        window = timedelta(days=7)
        sessions = await queries.sessions_between(conn, shared_names(settings), today - window, today + window)
    except psycopg.Error:
        return None
    finally:
        await conn.close()
    return phase_at(sessions, now) if sessions else None


def last_log_line(path: str) -> str | None:
    """Return the last non-empty line of the log at ``path`` (at most ``LOG_LINE_MAX`` characters)."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:LOG_LINE_MAX] if lines else None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = int(seconds)
    if whole < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    if whole < 7200:
        return f"{whole // 60} min"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _counters(heartbeat: Heartbeat) -> str:
    parts = [f"{label} {heartbeat.counters[key]}" for key, label in KEY_COUNTERS if key in heartbeat.counters]
    return " · ".join(parts) or "—"


def describe_prices(heartbeat: Heartbeat, now_ns: int) -> str:
    """Return the price source line of ``prices``' heartbeat: source, subscriptions, newest tick age."""
    counters, details = heartbeat.counters, heartbeat.details
    parts = [f"source {details.get('price_source', '?')}"]
    if details.get("price_source", "").startswith("alpaca"):
        shown = details.get("subscribed", "").replace(",", ", ")
        count = counters.get("data_stream_subscribed", 0)
        more = ", …" if count > len(shown.split(", ")) and shown else ""
        parts.append(f"subscribed {count}" + (f" ({shown}{more})" if shown else ""))
        parts.append(f"unpriced {counters.get('data_stream_unpriced', 0)}")
    newest_ms = counters.get("newest_tick_unix_ms")
    parts.append(
        "no tick yet" if not newest_ms else f"newest tick {_duration(max(0.0, now_ns / 1e9 - newest_ms / 1e3))} ago"
    )
    return " · ".join(parts)


def describe_budgets(heartbeats: Mapping[str, Heartbeat]) -> list[str]:
    """Return one line per API key: its requests of the last minute against its budget, and 429s.

    The figures are the key's across every program (the budget file, ``broker.budget``):
    ``snapshot`` reports the trading API, ``prices`` the market-data API.
    """
    figures: dict[str, dict[str, str]] = {}
    for program, prefix, what in (("snapshot", "rest", "trading"), ("prices", "data", "market data")):
        beat = heartbeats.get(program)
        if beat is None:
            continue
        for name, value in beat.counters.items():
            if not name.startswith(f"{prefix}_last_min."):
                continue
            label = name.split(".", 1)[1]
            budget = beat.counters.get(f"{prefix}_budget.{label}", 0)
            limited = beat.counters.get(f"{prefix}_limited.{label}", 0)
            figures.setdefault(label, {})[what] = f"{what} {value}/{budget} a minute, {limited} × 429"
    return [f"key of {label}: {' · '.join(parts.values())}" for label, parts in sorted(figures.items())]


def _row(
    name: str, state: str, info: ProcessInfo | None, heartbeat: Heartbeat | None, now_ns: int, *, failing: bool = False
) -> list[str]:
    style = "green" if state in HEALTHY_STATES else "red"
    if state == "RUNNING" and is_degraded(heartbeat):
        state, style = f"RUNNING ({DEGRADED})", "yellow"
    elif state == "RUNNING" and failing:
        state, style = "RUNNING (not working)", "red"
    if heartbeat is None:
        beat = "none" if state == "RUNNING" else "—"
        lag, counters = "—", "—"
    else:
        beat = f"{_duration(max(0.0, (now_ns - heartbeat.ts) / 1e9))} ago"
        if heartbeat.state != "running":
            beat += f" ({heartbeat.state})"
        lag = "—" if heartbeat.lag_ms is None else f"{heartbeat.lag_ms:.0f} ms"
        counters = _counters(heartbeat)
    pid = str(info.pid) if info is not None and info.pid else "—"
    uptime = _duration(info.uptime_s) if info is not None else "—"
    return [name, f"[{style}]{state}[/{style}]", pid, uptime, beat, lag, counters, key_requests(heartbeat)]


def key_requests(heartbeat: Heartbeat | None) -> str:
    """Return the requests of the last minute / budget of each key a program reports (``snapshot``:
    the trading API, ``prices``: market data), e.g. ``demo 12/40``; ``—`` for the others."""
    if heartbeat is None:
        return "—"
    parts = []
    for name, value in sorted(heartbeat.counters.items()):
        prefix, _, label = name.partition("_last_min.")
        if label and prefix in ("rest", "data"):
            budget = heartbeat.counters.get(f"{prefix}_budget.{label}", 0)
            parts.append(f"{label} {value}/{budget}" + (" data" if prefix == "data" else ""))
    return ", ".join(parts) or "—"


def _explain_stopped(infos: list[ProcessInfo]) -> None:
    """Print the last log line of each FATAL, EXITED or BACKOFF program (usually the one-line reason)."""
    for info in infos:
        line = last_log_line(info.log_path) if info.state in EXPLAINED_STATES and info.log_path else None
        if line is not None:
            typer.echo(printable(f"{info.name} {info.state}: {line} (last line of {info.log_path})"))


async def database_error(settings: Settings) -> str | None:
    """Return why the database cannot be reached (one line, DSN redacted), or None when it can."""
    try:
        conn = await connect_read_only(settings.reader_dsn, "chmgr-status")
    except DatabaseError as e:
        return f"database unreachable: {e}"
    await conn.close()
    return None


def stack_health(
    settings: Settings, infos: dict[str, ProcessInfo], listen_s: float
) -> tuple[Health, dict[str, Heartbeat], Phase | None]:
    """Return the stack's health, the heartbeats heard (listening up to ``listen_s``) and the
    market phase when a program is parked (None otherwise, or when it cannot be read)."""
    states = {name: info.state for name, info in infos.items()}
    running = [name for name, state in states.items() if state == "RUNNING"]
    heartbeats = asyncio.run(collect_heartbeats(settings, running, listen_s)) if running else {}
    phase = None
    if any(is_parked(info, states, settings, None) for info in infos.values()):
        phase = asyncio.run(market_phase(settings, datetime.now(UTC)))
    database = asyncio.run(database_error(settings))
    health = assess(settings, infos, heartbeats, time.time_ns(), phase=phase, database_error=database)
    return health, heartbeats, phase


def status(
    listen_s: float = typer.Option(HEARTBEAT_LISTEN_S, "--listen-s", help="how long to listen for heartbeats"),
) -> None:
    """Show every program (supervisord state, pid, uptime, last heartbeat, bus lag, counters) and
    whether the stack works: one line per cause. Exits 1 unless every account works."""
    settings = runtime.load_from_environment()
    infos = {info.name: info for info in client_for(settings).info()}
    health, heartbeats, phase = stack_health(settings, infos, listen_s)
    states = {name: info.state for name, info in infos.items()}
    now_ns = time.time_ns()
    table = Table(title="chmgr status", title_justify="left")
    for column in ("program", "state", "pid", "uptime", "heartbeat", "lag", "counters", "requests/min"):
        table.add_column(column, overflow="fold")
    names = list(runtime.PROGRAMS) + sorted(set(infos) - set(runtime.PROGRAMS))
    for name in names:
        state = shown_state(infos.get(name), states, settings, phase)
        failing = any(f.program == name for f in health.findings)
        table.add_row(*_row(name, state, infos.get(name), heartbeats.get(name), now_ns, failing=failing))
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # piped: wide enough that rows do not wrap
    console.print(table)
    if "prices" in heartbeats:
        console.print(cell(f"prices: {describe_prices(heartbeats['prices'], now_ns)}"), highlight=False)
    for line in describe_budgets(heartbeats):
        console.print(cell(line), highlight=False)
    if health.streaming is not None:
        console.print(cell(health.streaming.line), highlight=False)
    _explain_stopped([infos[name] for name in names if name in infos])
    if health.working:
        typer.echo(printable(f"working: account {', account '.join(health.working)}"))
    for line in health.lines():
        typer.echo(printable(line))
    if not health.is_working:
        first = health.findings[0].line if health.findings else f"waiting: {health.waiting[0]}"
        typer.echo(printable(f"chmgr: not working: {first}"), err=True)
        raise typer.Exit(runtime.EXIT_FAILURE)

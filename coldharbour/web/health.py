"""The programs' health as ``chmgr status`` shows it: supervisord's view joined with heartbeats.

``Heartbeats`` keeps the newest ``hb.<program>`` heard on the bus (one subscriber for the life
of the process); ``programs`` asks supervisord (its XML-RPC socket, in a thread: the client
blocks) and returns one row per program in start order, with the same state names as
``chmgr status`` (``sleeping (schedule)`` for a session program parked at night), and the
verdict of ``coldharbour.health`` in the same words as `chmgr status` (``alerts``: one line per
cause or thing awaited; the page's banner). No counter and no setting is shown: a cause line
names variables, never their values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from coldharbour import runtime
from coldharbour.bus import Subscriber
from coldharbour.config import Settings
from coldharbour.domain.schedule import Phase
from coldharbour.errors import ChmgrError
from coldharbour.health import HEALTHY_STATES, assess, client_for, shown_state
from coldharbour.messages import Heartbeat

log = logging.getLogger(__name__)

PENDING_FIELDS: Final = ("symbol", "type", "effective", "waits_for")


class Heartbeats:
    """The newest heartbeat per program, fed by a bus subscriber."""

    def __init__(self, subscriber: Subscriber, counters: Counter[str]) -> None:
        self._subscriber = subscriber
        self._counters = counters
        self.latest: dict[str, Heartbeat] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Collect heartbeats until ``stop``."""
        while not stop.is_set():
            try:
                _, message = await asyncio.wait_for(self._subscriber.recv(), 1.0)
            except TimeoutError:
                continue
            if isinstance(message, Heartbeat):
                self.latest[message.program] = message

    def close(self) -> None:
        """Close the subscriber."""
        self._subscriber.close()


def _supervised(settings: Settings) -> tuple[dict[str, Any], str | None]:
    try:
        return {info.name: info for info in client_for(settings).info()}, None
    except (ChmgrError, OSError) as e:
        return {}, f"supervisord: {e}"


async def programs(
    settings: Settings, beats: dict[str, Heartbeat], phase: str | None, database_error: str | None = None
) -> dict[str, Any]:
    """Return ``{"programs": [...], "healthy", "error", "working", "alerts"}`` (error: supervisord
    unreachable; working: every account shown to work; alerts: the causes and what is awaited)."""
    infos, error = await asyncio.to_thread(_supervised, settings)
    states = {name: info.state for name, info in infos.items()}
    known_phase = Phase(phase) if phase else None
    now_ns = time.time_ns()
    rows = []
    for name in [*runtime.PROGRAMS, *sorted(set(infos) - set(runtime.PROGRAMS))]:
        info = infos.get(name)
        state = shown_state(info, states, settings, known_phase) if infos else "unknown"
        beat = beats.get(name)
        rows.append(
            {
                "name": name,
                "state": state,
                "healthy": state in HEALTHY_STATES,
                "pid": info.pid if info is not None and info.pid else None,
                "uptime_s": info.uptime_s if info is not None else None,
                "heartbeat_age_s": None if beat is None else round(max(0.0, (now_ns - beat.ts) / 1e9), 1),
                "lag_ms": None if beat is None else beat.lag_ms,
            }
        )
    verdict = assess(
        settings, infos if error is None else None, beats, now_ns, phase=known_phase,
        supervisor_error=error.removeprefix("supervisord: ") if error else None, database_error=database_error,
    )  # fmt: skip
    return {
        "programs": rows,
        "healthy": error is None and all(r["healthy"] for r in rows),
        "error": error,
        "working": verdict.is_working,
        "alerts": verdict.lines(),
    }


def pending_actions(beats: Mapping[str, Heartbeat], slugs: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    """Return the corporate actions each account waits on, as ``snapshot``'s heartbeat names them
    (``corporate_pending_<slug>``: ``symbol``, ``type``, ``effective``, ``waits_for``;
    docs/corporate-actions.md "Announcements"); an account with none, or not heard yet, has [].

    They live in ``snapshot``'s memory only (nothing stored), so the heartbeat is the source.
    An item that is not four strings is left out.
    """
    details = beats["snapshot"].details if "snapshot" in beats else {}
    found: dict[str, list[dict[str, str]]] = {}
    for slug in slugs:
        try:
            items = json.loads(details.get(f"corporate_pending_{slug}", "[]"))
        except ValueError:
            items = []
        found[slug] = [{k: item[k] for k in PENDING_FIELDS} for item in (items if isinstance(items, list) else [])
                       if isinstance(item, dict) and all(isinstance(item.get(k), str) for k in PENDING_FIELDS)]
    return found

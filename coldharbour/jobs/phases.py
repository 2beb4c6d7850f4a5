"""Listening to the scheduler's session phases: which change is a session start, which an end.

``scheduler`` publishes ``SessionPhaseChanged`` on ``session`` at each phase change (and its
current phase when it starts). Workers that act at session start (cash flows, equity rebuild)
or after the close (equity rebuild) watch that topic through ``watch_phases``. A first message
after a worker starts only tells the current phase: it is never a start or an end, because the
worker already did its start-up work (no bootstrap loop: docs/defects.md D68).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from coldharbour.domain.schedule import Phase
from coldharbour.messages import TOPIC_SESSION, SessionPhaseChanged
from coldharbour.runtime import WorkerContext, log_task_exception

log = logging.getLogger(__name__)

_IN_SESSION = frozenset({Phase.PRE, Phase.OPEN})


def is_session_start(previous: str | None, current: str) -> bool:
    """Return True when ``closed`` turns into ``pre`` (or straight into ``open``)."""
    return previous == Phase.CLOSED and current in _IN_SESSION


def is_after_close(previous: str | None, current: str) -> bool:
    """Return True when the regular session ends (``open`` → ``post``, or ``open`` → ``closed``)."""
    return previous == Phase.OPEN and current in {Phase.POST, Phase.CLOSED}


PhaseHandler = Callable[[str | None, SessionPhaseChanged], None]


async def watch_phases(ctx: WorkerContext, on_change: PhaseHandler) -> None:
    """Call ``on_change(previous_phase, message)`` for every phase message until cancelled."""
    subscriber = ctx.subscriber([TOPIC_SESSION])
    previous: str | None = None
    try:
        while True:
            _, message = await subscriber.recv()
            if not isinstance(message, SessionPhaseChanged):
                continue
            log.info("session phase previous=%s phase=%s date=%s", previous, message.phase, message.session_date)
            on_change(previous, message)
            previous = message.phase
    finally:
        subscriber.close()


def start_watch(ctx: WorkerContext, on_change: PhaseHandler) -> asyncio.Task[None]:
    """Return the named background task running ``watch_phases`` (its failure is logged)."""
    task = asyncio.create_task(watch_phases(ctx, on_change), name=f"{ctx.program}-phases")
    task.add_done_callback(log_task_exception)
    return task

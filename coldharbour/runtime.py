"""The common life of every program: settings, logging, signals, heartbeat, counters, exit codes.

``run(program, amain)`` is what each ``workers/<program>.py`` calls from ``main()``:

1. load settings from the environment (+ ``CHMGR_CONFIG``) and prepare the run directory
   (``config.prepare_run_dir``); on a bad value print one line to stderr naming the variable
   and exit 78 (``EXIT_CONFIG``) before opening any socket: supervisord does not restart it
   (FATAL after ``startretries`` quick exits, else EXITED); ``chmgr status`` shows that line;
2. configure logging to stderr (supervisord captures it) with a filter that scrubs every secret;
3. run ``amain(settings, ctx, stop)`` on an asyncio loop, with SIGTERM/SIGINT setting ``stop``
   and a heartbeat task publishing ``hb.<program>`` every second;
4. exit 0 after a clean stop, 1 on an unexpected error (supervisord restarts the program).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Literal

import zmq

from coldharbour import config
from coldharbour.bus import Publisher, Subscriber
from coldharbour.errors import ChmgrError, ConfigError
from coldharbour.messages import TOPIC_PROBE, Condition, Heartbeat, Message, Probe, topic_heartbeat
from coldharbour.retry import sleep_or_stop

log = logging.getLogger(__name__)

Program = Literal[
    "bus", "state", "prices", "trades", "snapshot", "cashflows", "equity", "metrics", "scheduler", "web"
]
# Start order: bus first, state second (supervisord priorities follow this order).
PROGRAMS: Final[tuple[Program, ...]] = (
    "bus", "state", "prices", "trades", "snapshot", "cashflows", "equity", "metrics", "scheduler", "web",
)  # fmt: skip
# Programs that run only while a session is not `closed` (docs/spec.md §4 scheduler).
SESSION_PROGRAMS: Final[tuple[Program, ...]] = ("prices", "trades", "snapshot", "equity", "cashflows")
HEARTBEAT_INTERVAL_S: Final = 1.0
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
# A program's missing or bad setting (sysexits EX_CONFIG): supervisord.conf lists it in
# exitcodes, so the program is not restarted in a loop that cannot fix it.
EXIT_CONFIG: Final = 78


class SecretScrubber(logging.Filter):
    """Replace every known secret in a log record's final text with ``***`` (defence in depth)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text or ""
        for secret in self._secrets:
            text = text.replace(secret, "***")
            exc_text = exc_text.replace(secret, "***")
        record.msg, record.args = text, None
        record.exc_text = exc_text or None
        return True


def configure_logging(level: str, secrets: list[str]) -> None:
    """Send logs to stderr at ``level``, scrubbing ``secrets`` (called once per process)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(SecretScrubber(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class Conditions:
    """What one program needs to work, as it last found it (sent in its heartbeat; ``coldharbour.health``)."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._by_key: dict[tuple[str, str], Condition] = {}

    def ok(self, need: str, account: str = "") -> None:
        """Record that ``need`` works (positive evidence: a call succeeded)."""
        self._set(need, account, True, "")

    def failed(self, need: str, cause: str, account: str = "") -> None:
        """Record that ``need`` does not work, and why (one line, no secret)."""
        self._set(need, account, False, " ".join(cause.split()))

    def _set(self, need: str, account: str, is_ok: bool, cause: str) -> None:
        known = self._by_key.get((need, account))
        if known is not None and known.ok == is_ok and known.cause == cause:
            return
        self._by_key[(need, account)] = Condition(
            need=need, account=account, ok=is_ok, cause=cause, since=self._clock_ns()
        )

    def reported(self) -> tuple[Condition, ...]:
        """Return every condition reported so far, in a stable order."""
        return tuple(self._by_key[key] for key in sorted(self._by_key))


class WorkerContext:
    """What ``runtime`` hands a program: the zmq context, its counters, bus helpers."""

    def __init__(
        self,
        program: str,
        settings: config.Settings,
        zmq_context: zmq.Context[zmq.Socket[bytes]],
    ) -> None:
        self.program = program
        self.settings = settings
        self.zmq = zmq_context
        self.counters: Counter[str] = Counter()
        self.details: dict[str, str] = {}  # short text facts for the heartbeat
        self.conditions = Conditions()  # what it needs, per account (coldharbour.health)
        self.started_monotonic = time.monotonic()
        self.lag_ms: float | None = None
        self.state = "running"
        self._publisher: Publisher | None = None

    @property
    def publisher(self) -> Publisher:
        """Return this program's one publisher (created on first use)."""
        if self._publisher is None:
            self._publisher = Publisher(
                self.zmq, self.settings.bus_in, self.program, counters=self.counters
            )
        return self._publisher

    def subscriber(self, prefixes: list[str], **kwargs: object) -> Subscriber:
        """Return a new subscriber on ``bus_out`` sharing this program's counters."""
        return Subscriber(self.zmq, self.settings.bus_out, prefixes, counters=self.counters, **kwargs)  # type: ignore[arg-type]

    def heartbeat(self) -> Heartbeat:
        """Return the current heartbeat payload."""
        return Heartbeat(
            program=self.program,
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - self.started_monotonic, 3),
            counters=dict(self.counters),
            lag_ms=self.lag_ms,
            state=self.state,
            details=dict(self.details),
            conditions=self.conditions.reported(),
        )

    def close(self) -> None:
        """Close the publisher (flushing what is queued)."""
        if self._publisher is not None:
            self._publisher.close()


AMain = Callable[[config.Settings, WorkerContext, asyncio.Event], Awaitable[None]]

# -- "state is ready": no one-shot message is lost to a late subscriber ---------------------------
#
# ``state`` subscribes to the bus only after its load; what a producer published before that
# (a schedule, an equity rebuild, unstored activities) reached no one. Once ``state`` reads the
# bus it puts its instance (start time, ns) in its heartbeat's ``details[READY_DETAIL]``; the
# heartbeat repeats every second, so a producer that starts or subscribes late still sees it.
# ``watch_state_ready`` calls a producer's ``on_ready`` once per new instance, and the producer
# re-sends its current document (``docs/startup.md``).
STATE_PROGRAM: Final = "state"
READY_DETAIL: Final = "ready"


def announce_ready(ctx: WorkerContext, instance_ns: int) -> None:
    """Say in every heartbeat from now on that this ``state`` instance reads the bus."""
    ctx.details[READY_DETAIL] = str(instance_ns)
    log.info("ready: reading the bus instance=%d", instance_ns)


LIVE_PROBE_INTERVAL_S: Final = 0.05  # a subscription probe is re-published this often until it comes back


async def live_subscriber(
    ctx: WorkerContext, prefixes: list[str], **kwargs: object
) -> tuple[Subscriber, list[tuple[str, Message]]]:
    """Return a subscriber on ``prefixes`` once its subscription is live, and what it read meanwhile.

    A SUB socket's subscription reaches the publishers some time after it connects (the slow
    joiner); a producer re-sends its document as soon as ``state`` says it is ready, so ``state``
    must not say so before it really receives. Our own probe coming back proves it: every prefix
    was subscribed in the same burst before the connect. Probes are not returned.
    """
    probe_topic = f"{TOPIC_PROBE}.{ctx.program}.{time.time_ns()}"
    subscriber = ctx.subscriber([*prefixes, probe_topic], **kwargs)
    early: list[tuple[str, Message]] = []
    try:
        while True:
            ctx.publisher.publish(probe_topic, Probe(token=probe_topic))
            try:
                batch = await asyncio.wait_for(subscriber.recv_batch(), LIVE_PROBE_INTERVAL_S)
            except TimeoutError:
                continue
            read = [item for item in batch if item[0] != probe_topic]
            early.extend(read)
            if len(read) < len(batch):
                return subscriber, early
    except BaseException:
        subscriber.close()
        raise


ReadyHandler = Callable[[int], None]  # called with the instance (``state``'s start, UTC ns)


async def _watch_ready(ctx: WorkerContext, on_ready: ReadyHandler) -> None:
    subscriber = ctx.subscriber([topic_heartbeat(STATE_PROGRAM)])
    seen: str | None = None
    try:
        while True:
            _, message = await subscriber.recv()
            if not isinstance(message, Heartbeat) or message.program != STATE_PROGRAM:
                continue
            instance = message.details.get(READY_DETAIL)
            if instance and instance != seen and instance.isdigit():
                seen = instance
                ctx.counters["state_ready_seen"] += 1
                log.info("state ready instance=%s: re-sending the current documents", instance)
                on_ready(int(instance))
    finally:
        subscriber.close()


def watch_state_ready(ctx: WorkerContext, on_ready: ReadyHandler) -> asyncio.Task[None]:
    """Run ``on_ready(instance_ns)`` once per ``state`` instance that announces it is ready; cancel to stop."""
    task = asyncio.create_task(_watch_ready(ctx, on_ready), name=f"{ctx.program}-state-ready")
    task.add_done_callback(log_task_exception)
    return task


async def heartbeat_loop(ctx: WorkerContext, stop: asyncio.Event, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
    """Publish ``hb.<program>`` every ``interval_s`` until ``stop`` is set (and once at stop)."""
    topic = topic_heartbeat(ctx.program)
    while not stop.is_set():
        ctx.publisher.publish(topic, ctx.heartbeat())
        await sleep_or_stop(stop, interval_s)
    ctx.state = "stopping"
    ctx.publisher.publish(topic, ctx.heartbeat())


def load_from_environment(environ: Mapping[str, str] | None = None) -> config.Settings:
    """Return settings from ``environ`` (default ``os.environ``) and ``CHMGR_CONFIG``."""
    env = os.environ if environ is None else environ
    return config.load_settings(env, env.get("CHMGR_CONFIG") or None)


def run(program: str, amain: AMain, *, with_heartbeat: bool = True) -> int:
    """Run ``amain`` as ``program``; return the process exit code (0 clean, 1 failure, 78 settings)."""
    try:
        settings = load_from_environment()
        config.prepare_run_dir(settings.run_dir)
    except ConfigError as e:
        print(f"{program}: configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, config.all_secrets(settings))
    log.info("starting program=%s pid=%d settings=%s", program, os.getpid(), config.describe(settings))
    for name, reason in settings.disabled_accounts:
        log.error("account disabled name=%s reason=%s", name, reason)
    try:
        asyncio.run(_main(program, settings, amain, with_heartbeat))
    except ChmgrError as e:
        log.error("stopped on error program=%s error=%s", program, e)
        return EXIT_FAILURE
    except Exception:
        log.exception("stopped on unexpected error program=%s", program)
        return EXIT_FAILURE
    log.info("stopped cleanly program=%s", program)
    return EXIT_OK


async def _main(program: str, settings: config.Settings, amain: AMain, with_heartbeat: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stop)
    zmq_context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx = WorkerContext(program, settings, zmq_context)
    heartbeat = (
        asyncio.create_task(heartbeat_loop(ctx, stop), name=f"{program}-heartbeat")
        if with_heartbeat
        else None
    )
    try:
        await amain(settings, ctx, stop)
    finally:
        stop.set()
        if heartbeat is not None:
            await heartbeat
        ctx.close()
        zmq_context.destroy(linger=2000)


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    log.info("received signal=%s, stopping", signal.Signals(signum).name)
    stop.set()


def log_task_exception(task: asyncio.Task[object]) -> None:
    """Done-callback for background tasks: log (with traceback) any exception they ended with."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("task failed name=%s", task.get_name(), exc_info=error)


def return_memory() -> None:
    """Give garbage back to the system after a peak (``state``'s start-up load and convergence)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)

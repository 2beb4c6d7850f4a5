"""A REST request budget per API key, shared by every program of the stack (docs/broker-budget.md).

Cold Harbour runs beside the trader's own bot, on the same key, and Alpaca answers a key at most
200 REST requests a minute (docs/broker.md). We keep to ``ALPACA_REST_BUDGET_PER_MIN`` (default
40, a fifth) across all our programs. The budget lives in one small JSON file per key and host
kind in the run directory (``<run_dir>/budget/<sha256(key id)[:16]>-<kind>.json``, mode 0600 in a
0700 directory), read and rewritten under an exclusive ``flock``; each program holds the lock for
the few microseconds of a read-modify-write, never across a request.

A request is let through when both hold:

- the **window**: fewer than ``per_min`` requests in the last 60 s across all programs (so "our
  requests in any minute ≤ budget" is a hard bound, counted the way the broker counts);
- a **token** is in the bucket (refilled at ``per_min``/60 a second, at most ``burst``), so the
  budget is spread over the minute rather than spent in one burst.

Background reads (full snapshots, history pages, analytics) leave room for urgent ones (the
position refresh after a fill, an unknown order's check): they need two tokens and leave
``reserve`` requests of the window unused. A 429, or an answer whose ``X-RateLimit-Remaining``
shows the key nearly spent by someone else, pauses every program until the broker's
``X-RateLimit-Reset`` (``pause_until``). Waiting is stoppable (``coldharbour.retry.sleep_or_stop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from coldharbour.config import AccountSettings, Settings
from coldharbour.retry import sleep_or_stop

log = logging.getLogger(__name__)

WINDOW_S: Final = 60.0
MIN_WAIT_S: Final = 0.05
MAX_PAUSE_S: Final = 120.0  # a Reset header further away than this is not believed
BUDGET_DIR: Final = "budget"
REPORT_INTERVAL_S: Final = 5.0
_DECODER: Final = json.JSONDecoder()  # raw_decode: the first document, any tail after it ignored


class BudgetStopped(Exception):
    """``stop`` was set while waiting for the budget."""


@dataclass(frozen=True)
class BudgetFigures:
    """What ``chmgr status`` shows of one key's budget."""

    label: str
    per_min: int
    last_min: int  # requests let through in the last 60 s, by every program
    paused_s: float  # seconds left of a pause after a 429 (0 when none)
    limited: int  # 429 answers seen with this key, by every program, since the file was made


@dataclass
class _State:
    """The file's content: request times of the last minute, the bucket, the pause, the 429 count."""

    times: list[float]
    tokens: float
    at: float
    paused_until: float
    limited: int


def key_file(run_dir: str | Path, key_id: str, kind: str) -> Path:
    """Return the budget file of ``key_id`` (hashed: the file name says nothing of the key)."""
    digest = hashlib.sha256(key_id.encode()).hexdigest()[:16]
    return Path(run_dir) / BUDGET_DIR / f"{digest}-{kind}.json"


class RestBudget:
    """One key's budget (see the module docstring); every program using the key opens the same file."""

    def __init__(
        self,
        path: str | Path,
        per_min: int,
        *,
        label: str = "",
        burst: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_min < 1:
            raise ValueError(f"budget: per_min must be at least 1, found {per_min}")
        self.path = Path(path)
        self.per_min = per_min
        self.label = label or self.path.stem
        self.burst = burst if burst is not None else max(2, per_min // 4)
        self.reserve = max(1, per_min // 8) if per_min > 2 else 0
        self.rate_per_s = per_min / WINDOW_S
        self._clock = clock
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    # --- the shared state --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self, fd: int, now: float) -> _State:
        raw = os.pread(fd, 1 << 20, 0)
        try:
            text = raw.decode("utf-8", "replace").lstrip()
            data = _DECODER.raw_decode(text)[0] if text else {}
        except ValueError:
            log.warning("budget file unreadable, starting it again path=%s", self.path)
            data = {}
        if not isinstance(data, dict):
            data = {}
        raw_times = data.get("times")
        times = [
            float(t) for t in (raw_times if isinstance(raw_times, list) else [])
            if isinstance(t, (int, float)) and now - WINDOW_S < t <= now + 1
        ]  # fmt: skip
        tokens, at = data.get("tokens"), data.get("at")
        if not isinstance(tokens, (int, float)) or not isinstance(at, (int, float)):
            tokens, at = float(self.burst), now
        tokens = min(float(self.burst), float(tokens) + max(0.0, now - float(at)) * self.rate_per_s)
        paused, limited = data.get("paused_until"), data.get("limited")
        return _State(
            times=times,
            tokens=tokens,
            at=now,
            paused_until=float(paused) if isinstance(paused, (int, float)) else 0.0,
            limited=limited if isinstance(limited, int) else 0,
        )

    @staticmethod
    def _write(fd: int, state: _State) -> None:
        """Rewrite the file in place: the new document over the old, then cut the old one's tail.

        Not ``ftruncate(0)`` then write: on ext4 a file truncated to empty is flushed to disk
        when closed (its "replace via truncate" heuristic), which cost each request about 0.3 ms
        of CPU and 3 ms of the event loop (docs/scaling.md). A writer killed between the two
        calls leaves a tail after the document, which ``_read`` ignores.
        """
        data = json.dumps(vars(state), separators=(",", ":")).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def _try(self, *, urgent: bool, take: bool) -> float:
        """Take (or, with ``take=False``, look for) one request; return 0 if granted, else seconds to wait."""
        now = self._clock()
        with self._locked() as fd:
            state = self._read(fd, now)
            if state.paused_until > now:
                return max(MIN_WAIT_S, state.paused_until - now)
            cap = self.per_min if urgent else self.per_min - self.reserve
            need = 1.0 if urgent else min(2.0, float(self.burst))
            waits = []
            if len(state.times) >= cap:
                waits.append(sorted(state.times)[len(state.times) - cap] + WINDOW_S - now)
            if state.tokens < need:
                waits.append((need - state.tokens) / self.rate_per_s)
            if waits:
                return max(MIN_WAIT_S, *waits)
            if take:
                state.times.append(now)
                state.tokens -= 1.0
                self._write(fd, state)
            return 0.0

    # --- the API -----------------------------------------------------------------------------

    async def acquire(self, stop: asyncio.Event | None = None, *, urgent: bool = False) -> None:
        """Wait for, and take, one request of the budget; raise ``BudgetStopped`` if ``stop`` comes first."""
        await self._wait(stop, urgent=urgent, take=True)

    async def wait_ready(self, stop: asyncio.Event | None = None, *, urgent: bool = True) -> None:
        """Wait until a request could be taken (without taking it): lets requests coalesce meanwhile."""
        await self._wait(stop, urgent=urgent, take=False)

    async def _wait(self, stop: asyncio.Event | None, *, urgent: bool, take: bool) -> None:
        stop = stop if stop is not None else asyncio.Event()
        while True:
            if stop.is_set():
                raise BudgetStopped(f"stopped while waiting for the request budget of {self.label}")
            wait = self._try(urgent=urgent, take=take)
            if wait <= 0:
                return
            if await sleep_or_stop(stop, wait):
                raise BudgetStopped(f"stopped while waiting for the request budget of {self.label}")

    def pause_until(self, unix_s: float, *, limited: bool) -> float:
        """Stop every program's requests with this key until ``unix_s``; return the pause in seconds.

        ``limited``: the broker answered 429 (counted in the file, shown by ``chmgr status``).
        """
        now = self._clock()
        until = min(max(unix_s, now + MIN_WAIT_S), now + MAX_PAUSE_S)
        with self._locked() as fd:
            state = self._read(fd, now)
            state.paused_until = max(state.paused_until, until)
            state.limited += 1 if limited else 0
            self._write(fd, state)
        return until - now

    def figures(self) -> BudgetFigures:
        """Return the key's figures now (requests of the last minute, pause, 429s)."""
        now = self._clock()
        with self._locked() as fd:
            state = self._read(fd, now)
        paused_s = max(0.0, state.paused_until - now)
        return BudgetFigures(self.label, self.per_min, len(state.times), paused_s, state.limited)


def budget_for(settings: Settings, account: AccountSettings, kind: str = "trading") -> RestBudget:
    """Return ``account``'s key budget of ``kind`` (``trading`` or ``data``) in the run directory."""
    per_min = settings.alpaca_rest_budget_per_min if kind == "trading" else settings.alpaca_data_budget_per_min
    return RestBudget(key_file(settings.run_dir, account.api_key.reveal(), kind), per_min, label=account.slug)


def report_figures(budgets: Iterable[RestBudget], counters: Counter[str], prefix: str = "rest") -> None:
    """Put each key's figures in ``counters`` for the heartbeat (``chmgr status`` shows them).

    ``<prefix>_last_min.<label>``: requests of the last minute by every program;
    ``<prefix>_budget.<label>``: the budget a minute; ``<prefix>_limited.<label>``: 429s seen.
    """
    for budget in budgets:
        figures = budget.figures()
        counters[f"{prefix}_last_min.{figures.label}"] = figures.last_min
        counters[f"{prefix}_budget.{figures.label}"] = figures.per_min
        counters[f"{prefix}_limited.{figures.label}"] = figures.limited


async def report_forever(
    budgets: Iterable[RestBudget], counters: Counter[str], stop: asyncio.Event, prefix: str = "rest"
) -> None:
    """Refresh ``report_figures`` every ``REPORT_INTERVAL_S`` until ``stop``."""
    kept = list(budgets)
    while True:
        try:
            report_figures(kept, counters, prefix)
        except OSError as e:  # the run directory went away: say so, keep serving
            counters["budget_report_failures"] += 1
            log.warning("cannot read the request budget error=%s", e)
        if await sleep_or_stop(stop, REPORT_INTERVAL_S):
            return

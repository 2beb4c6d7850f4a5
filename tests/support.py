"""Test helpers: wait on conditions with a deadline (never sleep), small builders."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline; carries the last observed value."""


def wait_for(
    predicate: Callable[[], T | None], timeout_s: float = 10.0, *, interval_s: float = 0.01, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns a truthy value; return it, or raise ``WaitTimeout``.

    The error names ``what`` and shows the last value observed, so a failing test says what it
    was waiting for and what it saw instead.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout_s}s waiting for {what or predicate!r}; last={last!r}")
        time.sleep(interval_s)  # poll


@overload
async def async_wait_for(
    predicate: Callable[[], Awaitable[T | None]], timeout_s: float = ..., *, interval_s: float = ..., what: str = ...
) -> T: ...


@overload
async def async_wait_for(
    predicate: Callable[[], T | None], timeout_s: float = ..., *, interval_s: float = ..., what: str = ...
) -> T: ...


async def async_wait_for(
    predicate: Callable[[], object],
    timeout_s: float = 10.0,
    *,
    interval_s: float = 0.01,
    what: str = "",
) -> object:
    """Async twin of ``wait_for``: the predicate may be sync or return an awaitable."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        last = result
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout_s}s waiting for {what or predicate!r}; last={last!r}")
        await asyncio.sleep(interval_s)  # poll


# --- settings builders ---------------------------------------------------------------------

TEST_ACCOUNTS = ("demo", "paper-1")
TEST_SECRETS = {
    "demo": ("demo-key", "demo-secret-AAAA1111"),
    "paper-1": ("paper-key-BBBB2222", "paper-secret-CCCC3333"),
}


def make_environ(
    dsn: object, run_dir: object = "./run", accounts: tuple[str, ...] = TEST_ACCOUNTS, **extra: str
) -> dict[str, str]:
    """Return an environment for ``load_settings``: DSN, run dir, accounts with credentials."""
    from coldharbour.config import Secret, env_suffix

    env = {
        "CHMGR_DSN": dsn.reveal() if isinstance(dsn, Secret) else str(dsn),
        "CHMGR_RUN_DIR": str(run_dir),
        "CHMGR_ACCOUNTS": ",".join(accounts),
    }
    for name in accounts:
        key, secret = TEST_SECRETS.get(name, (f"{name}-key-0000", f"{name}-secret-0000"))
        env[f"ALPACA_API_KEY_{env_suffix(name)}"] = key
        env[f"ALPACA_SECRET_KEY_{env_suffix(name)}"] = secret
        env[f"ALPACA_BASE_URL_{env_suffix(name)}"] = "http://127.0.0.1:9"
    env.update(extra)
    return env


def make_settings(dsn: object, run_dir: object = "./run", accounts: tuple[str, ...] = TEST_ACCOUNTS, **extra: str):
    """Return validated ``Settings`` for tests (see ``make_environ``)."""
    from coldharbour.config import load_settings

    return load_settings(make_environ(dsn, run_dir, accounts, **extra))

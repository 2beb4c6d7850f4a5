"""Fixtures of the dashboard's fast tests: the `web` code in-process on the suite's PostgreSQL,
the test writing rows and NOTIFYs as `state` would, and a real chromium (Playwright)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from coldharbour.config import Dsn, Settings
from coldharbour.db.names import account_names
from tests.support import make_settings
from tests.web.browser import TIMEOUT_MS, chromium
from tests.web.server import Dashboard
from tests.web.tables import Tables

HEARTBEAT_S = "0.5"  # stale after 1 s without a UI heartbeat


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium per test module.

    Not per session: Playwright's sync API keeps an event loop running in the main thread while
    it is open, and every pytest-asyncio test collected after tests/web (tests/workers, …) then
    fails with "Runner.run() cannot be called from a running event loop".
    """
    with chromium() as launched:
        yield launched


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short run directory (the bus ipc:// paths must stay under ~100 characters)."""
    path = Path(tempfile.mkdtemp(prefix="chw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(migrated_dsn: Dsn, run_dir: Path) -> Settings:
    """Settings of the two test accounts with a fast UI heartbeat."""
    return make_settings(migrated_dsn, run_dir, UI_HEARTBEAT_S=HEARTBEAT_S)


@pytest.fixture
def dashboard(settings: Settings) -> Iterator[Dashboard]:
    """The dashboard serving ``settings`` on a free loopback port."""
    running = Dashboard(settings)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def tables(settings: Settings) -> Iterator[Tables]:
    """A writer on the ``demo`` account's tables."""
    writer = Tables(settings.dsn, account_names(settings, "demo"))
    try:
        yield writer
    finally:
        writer.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser page (its own context: no shared cookies); console errors are collected."""
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: errors.append(str(e)))
    opened.console_errors = errors  # type: ignore[attr-defined]
    try:
        yield opened
    finally:
        context.close()

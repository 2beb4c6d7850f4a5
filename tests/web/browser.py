"""A real browser for the dashboard tests: Debian's chromium driven by Playwright for Python.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``.ci/run``
installs the Debian ``chromium`` package when it is missing) headless, with no network
services of its own (no QUIC, sync, component updates or background requests).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from playwright.sync_api import Browser, expect, sync_playwright

CHROMIUM = os.environ.get("CHMGR_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 15_000


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Launch the system chromium; close it (and Playwright's driver) afterwards."""
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError(f"{CHROMIUM} is missing: install the Debian chromium package (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()

# Playwright's expect() waits 5 s by default: too short on a shared 2-core machine.
expect.set_options(timeout=TIMEOUT_MS)

"""Health is function, not process, on the whole stack (supervisord, every program, the fake
broker): a wrong secret and a stopped PostgreSQL are named by `chmgr up`, `chmgr status` and
the page's banner, in the same words."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from coldharbour.db import schema
from coldharbour.sim.postgres import PgCluster
from tests.fixtures.stack import start_stack
from tests.support import make_settings, wait_for
from tests.web.browser import chromium

pytestmark = pytest.mark.integration

DOWN_NAMED_WITHIN_S = 30.0


def test_wrong_secret_is_named_by_up_status_and_the_page(
    pg_cluster: PgCluster, migrated_template: str, tmp_path: Path
) -> None:
    with start_stack(pg_cluster, migrated_template, tmp_path, secret="not-the-secret", check_up=False) as stack:
        up = stack.up_result
        status = stack.chmgr("status")
        alerts = wait_for(
            lambda: _alerts(stack.web_url), 60, interval_s=0.5, what="the dashboard's status with a cause"
        )
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"{stack.web_url}/?account=demo")
            banner = page.locator("[data-testid=alerts]")
            banner.locator("li", has_text="credentials").first.wait_for()
            shown = banner.inner_text()

    assert up is not None
    assert up.returncode == 1
    cause = up.stderr.strip()
    assert "\n" not in cause
    assert cause.startswith("chmgr: ")
    assert "account demo" in cause
    assert "credentials" in cause
    assert "not-the-secret" not in cause
    # `up` gave up on its own: a hung one would have ended in the harness's CLI timeout (TimeoutExpired).
    assert status.returncode == 1
    assert any("account demo" in line and "credentials" in line for line in status.stdout.splitlines())
    assert cause.removeprefix("chmgr: ") in status.stdout  # the same words
    assert any("account demo" in line and "credentials" in line for line in alerts)
    assert any(line in shown for line in alerts if "credentials" in line)


def _alerts(url: str) -> list[str]:
    try:
        lines = requests.get(f"{url}/api/status", timeout=5).json().get("alerts") or []
    except (requests.RequestException, ValueError):
        return []
    return lines if any("credentials" in line for line in lines) else []


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL of this test's own: it is stopped under a running stack."""
    cluster = PgCluster()
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(cluster.base, ignore_errors=True)


def test_stopped_database_is_named_by_status(own_cluster: PgCluster, tmp_path: Path) -> None:
    template = own_cluster.create_database()
    settings = make_settings(own_cluster.dsn(template))
    with psycopg.connect(settings.dsn.reveal()) as conn:
        schema.ensure_schema(conn, settings)
    with start_stack(own_cluster, template, tmp_path) as stack:
        before = stack.chmgr("status")
        own_cluster.stop("immediate")
        try:

            def names_the_database() -> subprocess.CompletedProcess[str] | None:
                result = stack.chmgr("status")
                return result if result.returncode == 1 and "database" in result.stdout else None

            failing = wait_for(
                names_the_database, DOWN_NAMED_WITHIN_S, interval_s=0.5, what="chmgr status naming the database"
            )
        finally:
            own_cluster.start()

    assert before.returncode == 0, before.stdout + before.stderr
    assert "working: account demo" in before.stdout
    assert any(line.startswith("database unreachable: ") for line in failing.stdout.splitlines())

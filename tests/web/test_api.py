"""The JSON API, the security headers, the token and the bind rule (no browser needed)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import requests

from coldharbour.config import Settings
from coldharbour.errors import ConfigError
from coldharbour.web import access
from coldharbour.web.hub import CLIENT_QUEUE, CLOSE, Client, frame
from tests.support import make_environ, make_settings
from tests.web.server import Dashboard
from tests.web.tables import Tables, closed_slice, lot

TOKEN = "web-token-Zx81Qp4L"


def _get(url: str, **kwargs: object) -> requests.Response:
    return requests.get(url, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_api_serves_the_tables_as_json(dashboard: Dashboard, tables: Tables) -> None:
    tables.put_lots(lot("lot-1", "AAPL", mkt_px=Decimal("101.10")), lot("lot-2", "MSFT"))
    tables.insert_closed(closed_slice("lot-0", "TSLA"))
    tables.set_metrics({"Closed Trades (n)": 1})

    positions = _get(f"{dashboard.url}/api/positions?account=demo").json()
    one = _get(f"{dashboard.url}/api/positions?account=demo&parent_id=lot-1").json()
    closed = _get(f"{dashboard.url}/api/closed?account=demo").json()
    metrics = _get(f"{dashboard.url}/api/metrics?account=demo").json()
    equity = _get(f"{dashboard.url}/api/equity?account=demo").json()
    status = _get(f"{dashboard.url}/api/status").json()
    accounts = _get(f"{dashboard.url}/api/accounts").json()

    assert sorted(r["parent_id"] for r in positions) == ["lot-1", "lot-2"]
    assert [r["mkt_px"] for r in one] == [101.1]
    assert [(r["entry_lot_id"], r["symbol"]) for r in closed] == [("lot-0", "TSLA")]
    assert metrics == {"Closed Trades (n)": 1}
    assert equity == {"daily": [], "intraday": []}
    assert [p["name"] for p in status["programs"]][:2] == ["bus", "state"]
    assert status["error"].startswith("supervisord")  # none runs in this test
    assert [a["slug"] for a in accounts] == ["demo", "paper_1"]


def test_api_unknown_account_is_404_and_every_answer_has_the_csp(dashboard: Dashboard) -> None:
    missing = _get(f"{dashboard.url}/api/positions?account=nosuch")
    page = _get(f"{dashboard.url}/")
    script = _get(f"{dashboard.url}/static/app.js")

    assert missing.status_code == 404
    assert missing.json() == {"error": "no such account"}
    for response in (missing, page, script):
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script src=\"/static/app.js\"" in page.text
    assert "<script>" not in page.text  # no inline script
    assert "http://" not in page.text
    assert "https://" not in page.text


def test_api_page_never_shows_a_secret(dashboard: Dashboard, settings: Settings) -> None:
    texts = [_get(f"{dashboard.url}{path}").text for path in ("/", "/api/status", "/api/accounts", "/static/app.js")]
    secrets = [a.secret_key.reveal() for a in settings.accounts] + [a.api_key.reveal() for a in settings.accounts]

    assert [s for s in secrets if any(s in text for text in texts)] == []


def test_api_token_is_required_when_set(migrated_dsn: object, run_dir: Path) -> None:
    settings = make_settings(migrated_dsn, run_dir, CHMGR_WEB_TOKEN=TOKEN)
    running = Dashboard(settings)
    try:
        url = f"{running.url}/api/accounts"
        refused = _get(url)
        wrong = _get(url, headers={"Authorization": "Bearer nope"})
        bearer = _get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        session = requests.Session()
        first = session.get(f"{running.url}/?token={TOKEN}&account=demo", timeout=10, allow_redirects=False)
        cookie = session.get(url, timeout=10)
        stream = _get(f"{running.url}/api/stream")
    finally:
        running.close()

    assert (refused.status_code, wrong.status_code, bearer.status_code) == (401, 401, 200)
    assert TOKEN not in refused.text
    assert first.status_code == 303
    assert first.headers["Location"] == "/?account=demo"
    assert "HttpOnly" in first.headers["Set-Cookie"]
    assert cookie.status_code == 200
    assert stream.status_code == 401


@pytest.mark.parametrize(
    ("bind", "loopback"),
    [("127.0.0.1:8765", True), ("localhost:1", True), ("[::1]:8765", True), ("0.0.0.0:8765", False),
     ("192.168.1.5:80", False), ("[::]:8765", False), ("example.com:80", False)],
)  # fmt: skip
def test_access_loopback_binds(bind: str, loopback: bool) -> None:
    host, _ = access.parse_bind(bind)

    assert access.is_loopback(host) is loopback


def test_access_non_loopback_bind_needs_a_token(migrated_dsn: object) -> None:
    bare = make_settings(migrated_dsn, CHMGR_WEB_BIND="0.0.0.0:8765")
    with_token = make_settings(migrated_dsn, CHMGR_WEB_BIND="0.0.0.0:8765", CHMGR_WEB_TOKEN=TOKEN)

    with pytest.raises(ConfigError, match="CHMGR_WEB_TOKEN"):
        access.check_bind(bare)
    assert access.check_bind(with_token) == ("0.0.0.0", 8765)
    assert access.token_matches(with_token.web_token, TOKEN)
    assert not access.token_matches(with_token.web_token, TOKEN[:-1])
    assert not access.token_matches(with_token.web_token, None)


def test_program_refuses_a_public_bind_without_token_in_one_line(migrated_dsn: object, run_dir: Path) -> None:
    env = make_environ(migrated_dsn, run_dir, CHMGR_WEB_BIND="0.0.0.0:18765")

    result = subprocess.run(
        [sys.executable, "-m", "workers.web"], env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert "CHMGR_WEB_TOKEN" in errors[0]


def test_hub_drops_a_client_that_stopped_reading() -> None:
    async def scenario() -> tuple[bool, bool, list[bytes]]:
        client = Client("demo")
        for _ in range(CLIENT_QUEUE):
            assert client.offer(b"x")
        overflowed = client.offer(b"one too many")
        return overflowed, client.closed, await client.take()

    overflowed, closed, frames = asyncio.run(scenario())

    assert (overflowed, closed) == (False, True)
    assert frames == [b"x"] * CLIENT_QUEUE + [CLOSE]


def test_hub_frame_splits_lines_as_sse_requires() -> None:
    assert frame("pos", '{"a":1}') == b'event: pos\ndata: {"a":1}\n\n'
    assert frame("x", "a\nb") == b"event: x\ndata: a\ndata: b\n\n"


def test_api_reads_through_a_connection_the_database_refuses_writes(dashboard: Dashboard) -> None:
    assert dashboard.hub is not None
    hub = dashboard.hub
    table = hub.accounts["demo"].positions.ident

    async def attempt() -> str:
        async with hub.pool.connection() as conn:
            try:
                await conn.execute(psycopg.sql.SQL("DELETE FROM {}").format(table))
            except psycopg.errors.ReadOnlySqlTransaction as e:
                return type(e).__name__
        return "written"

    done = asyncio.run_coroutine_threadsafe(attempt(), dashboard.loop).result(10)

    assert done == "ReadOnlySqlTransaction"


def test_api_stream_of_an_unknown_account_is_404(dashboard: Dashboard) -> None:
    assert _get(f"{dashboard.url}/api/stream?account=nosuch").status_code == 404

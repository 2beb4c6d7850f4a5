"""The `web` program against hostile or careless clients: every answer keeps the security
headers, bad parameters are a one-line 400, the token redirect stays on this origin, idle and
surplus connections cannot exhaust the process (raw sockets where a library would fix the bytes)."""

from __future__ import annotations

import http.client
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg
import pytest
import requests

from coldharbour.config import Settings
from coldharbour.sim.postgres import free_port
from coldharbour.web import access, app
from tests.support import make_environ, make_settings, wait_for
from tests.web.server import Dashboard

TOKEN = "web-token-Zx81Qp4L"


def _assert_secured(headers: object) -> None:
    assert "default-src 'self'" in headers["Content-Security-Policy"]  # type: ignore[index]
    assert headers["X-Content-Type-Options"] == "nosniff"  # type: ignore[index]


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; return the status, headers (lower-cased names) and body."""
    with closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _port(dashboard: Dashboard) -> int:
    return int(dashboard.url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    "query",
    ["limit=%C2%B2", "limit=" + "9" * 5000, "limit=0", "limit=-1", "limit=1.5", "parent_id=x%00y",
     "parent_id=" + "a" * 200, "parent_id=%1B%5B2J"],
)  # fmt: skip
def test_bad_parameters_are_a_one_line_400_with_the_csp(dashboard: Dashboard, query: str) -> None:
    path = "/api/closed" if query.startswith("limit") else "/api/positions"

    response = requests.get(f"{dashboard.url}{path}?account=demo&{query}", timeout=10)

    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert "\n" not in response.text.strip()
    assert set(response.json()) == {"error"}
    _assert_secured(response.headers)


def test_good_limit_still_served(dashboard: Dashboard) -> None:
    assert requests.get(f"{dashboard.url}/api/closed?account=demo&limit=5", timeout=10).json() == []


def test_router_and_parser_errors_carry_the_csp(dashboard: Dashboard) -> None:
    port = _port(dashboard)
    missing = requests.get(f"{dashboard.url}/nosuch", timeout=10)
    wrong_method = requests.post(f"{dashboard.url}/api/accounts", timeout=10)
    long_query = _raw(port, b"GET /api/accounts?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    huge_body = requests.post(f"{dashboard.url}/api/accounts", data=b"x" * (3 * 1024 * 1024), timeout=10)
    garbage = _raw(port, b"\x16\x03\x01 not http at all\r\n\r\n")

    assert (missing.status_code, wrong_method.status_code) == (404, 405)
    _assert_secured(missing.headers)
    _assert_secured(wrong_method.headers)
    assert huge_body.status_code in (405, 413)
    _assert_secured(huge_body.headers)
    for status, headers, _ in (long_query, garbage):
        assert status == 400
        assert headers["content-security-policy"] == access.CSP
        assert headers["x-content-type-options"] == "nosniff"


def test_an_unexpected_failure_is_a_500_with_the_csp(dashboard: Dashboard, settings: Settings) -> None:
    with psycopg.connect(settings.dsn.reveal(), autocommit=True) as conn:
        conn.execute("DROP TABLE accounts.account_closed_demo")

    response = requests.get(f"{dashboard.url}/api/closed?account=demo", timeout=10)

    assert response.status_code == 500
    assert response.json() == {"error": "internal error (logged)"}
    _assert_secured(response.headers)
    assert dashboard.counters["server_errors"] == 1


@pytest.mark.parametrize(
    ("path", "location"),
    [("/%5Cevil.example/", "/"), ("//evil.example/", "/"), ("/%2F%2Fevil.example", "/"),
     ("/api/accounts", "/api/accounts"), ("/", "/")],
)  # fmt: skip
def test_token_redirect_stays_on_this_origin(migrated_dsn: object, run_dir: Path, path: str, location: str) -> None:
    running = Dashboard(make_settings(migrated_dsn, run_dir, CHMGR_WEB_TOKEN=TOKEN))
    try:
        connection = http.client.HTTPConnection("127.0.0.1", _port(running), timeout=10)
        connection.request("GET", f"{path}?token={TOKEN}")
        response = connection.getresponse()
        response.read()
        connection.close()
    finally:
        running.close()

    assert response.status == 303
    assert response.getheader("Location") == location


@contextmanager
def _idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_connections_over_the_cap_get_a_clear_503(settings: Settings) -> None:
    running = Dashboard(settings, max_connections=3)
    try:
        port = _port(running)
        with _idle_sockets(port, 3):
            status, headers, body = _raw(port, b"GET /api/accounts HTTP/1.1\r\nHost: x\r\n\r\n")
        served = wait_for(
            lambda: requests.get(f"{running.url}/api/accounts", timeout=10).status_code == 200, timeout_s=10
        )
        refused = running.counters["connections_refused"]
    finally:
        running.close()

    assert status == 503
    assert headers["content-security-policy"] == access.CSP
    assert b"too many connections" in body
    assert served
    assert refused >= 1  # the wait above may meet the cap once more, before the closes are seen


def test_a_connection_that_never_sends_a_request_is_closed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "IDLE_TIMEOUT_S", 0.5)
    running = Dashboard(settings)
    try:
        with closing(socket.create_connection(("127.0.0.1", _port(running)), timeout=10)) as sock:
            sock.sendall(b"GET /api/accounts HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
            sock.settimeout(10)
            ended = sock.recv(1024)  # b"" once the server closes it
    finally:
        running.close()

    assert ended == b""


IDLE_FLOOD = 1_200


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.integration
def test_web_program_serves_while_1200_idle_connections_are_held(migrated_dsn: object, run_dir: Path) -> None:
    """The real program with the 1,024-descriptor soft limit a default supervisord gives it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE_FLOOD + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE_FLOOD + 1024), hard))
    url = f"127.0.0.1:{free_port()}"
    env = {**make_environ(migrated_dsn, run_dir, CHMGR_WEB_BIND=url), "PATH": os.environ["PATH"]}
    log = run_dir / "web.log"
    with log.open("wb") as sink:
        program = subprocess.Popen(
            [sys.executable, "-m", "workers.web"], env=env, stdout=sink, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)),
        )  # fmt: skip
    try:
        wait_for(lambda: _answers(f"http://{url}/api/accounts"), timeout_s=60, what="web to serve")
        port = int(url.rsplit(":", 1)[1])
        with _idle_sockets(port, IDLE_FLOOD):
            cpu_before, wall_before = _cpu_s(program.pid), time.monotonic()
            response = requests.get(f"http://{url}/api/accounts", timeout=10)  # answered while flooded
            time.sleep(2.0)  # a CPU measurement window, not synchronisation
            cpu_share = (_cpu_s(program.pid) - cpu_before) / (time.monotonic() - wall_before)
        alive = program.poll() is None
    finally:
        program.terminate()
        program.wait(30)

    assert alive
    assert response.status_code == 200
    assert cpu_share < 0.5
    assert log.stat().st_size < 100_000  # no error per refused accept


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False

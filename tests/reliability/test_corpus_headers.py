"""Bad-input corpus for the REST rate-limit headers: ``X-RateLimit-Reset``, ``-Remaining``, ``-Limit``.

Alpaca sends the three on every answer (Unix seconds for the reset,
https://docs.alpaca.markets/docs/api-rate-limit-usage; ``coldharbour/sim/limits.py`` serves them
the same way). Here a small in-process server answers the real ``BrokerRest`` (``rest.py``)
with garbage, negative, fractional and huge values (10^30, 1e308, year 9999 in seconds and in
ms, ``inf``/``nan``): first as a 429's reset, then as a 200 that says the key is nearly spent.
Each call goes through the real retry and the real shared budget file (``budget.py``), or no
budget (the CLI's data client): the contract is that every call still returns the account,
within the pause cap (``budget.MAX_PAUSE_S``, shortened here so that the corpus runs fast), the
pause is counted (``broker_rate_limited`` / ``broker_key_busy``), and the budget file stays
readable. A garbage value is taken as absent (a backoff step), never as a reason to sleep
forever, to overflow or to crash.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from coldharbour.broker import budget as budget_module
from coldharbour.broker import rest as rest_module
from coldharbour.broker.budget import RestBudget, key_file
from coldharbour.broker.rest import BrokerRest
from coldharbour.config import AccountSettings, Secret
from tests.reliability.test_corpus_broker import ACCOUNT
from tests.reliability.test_corpus_bus import HOSTILE_VALUES

PAUSE_CAP_S = 0.02
DEADLINE_S = 5.0  # a call that takes longer slept on a header it should not have believed


def _header_values() -> list[str]:
    """Every hostile value a header can carry (latin-1 text: what HTTP/1.1 sends)."""
    now = time.time()
    values = [
        "", " ", "abc", "-1", "-1e30", "-0", "0", "1.5", "0.000001", "1e-30", "1e30", str(10**30), "1e308", "1e309",
        "inf", "-inf", "nan", "NaN", "Infinity", "253402300799", "253402300799000", str(2**64), "+5", "1_000",
        "0x10", "1,5", " 12 ", "9" * 400, f"{now + 0.5:.6f}", f"{now - 3600:.0f}", str(int(now) + 10**9),
    ]  # fmt: skip
    values += [str(v) for v in HOSTILE_VALUES if isinstance(v, str | int | float) and str(v).isprintable()]
    return [v[:8000] for v in dict.fromkeys(values) if v.isascii()]


HEADER_VALUES = _header_values()
BUSY_PAIRS = [  # (X-RateLimit-Limit, X-RateLimit-Remaining): hostile pairs, most of them "nearly spent"
    ("200", "0"), ("1e-300", "0"), ("1e308", "0"), ("0", "0"), ("nan", "0"), ("200", "-1"), ("200", "nan"),
    ("-200", "0"), ("abc", "0"), ("200", "1e308"), ("inf", "0"), (str(10**30), "1"),
]  # fmt: skip


class HeaderServer:
    """Answers ``GET /v2/account`` from a queue of (status, headers); the Account object when empty."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, dict[str, str]]] = []

    async def account(self, _: web.Request) -> web.Response:
        status, headers = self.queue.pop(0) if self.queue else (200, {})
        body = ACCOUNT if status == 200 else {"code": 42910000, "message": "rate limit exceeded"}
        return web.json_response(body, status=status, headers=headers)


@pytest_asyncio.fixture
async def header_server() -> AsyncIterator[tuple[HeaderServer, AccountSettings]]:
    server = HeaderServer()
    app = web.Application()
    app.router.add_get("/v2/account", server.account)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    account = AccountSettings(name="x", slug="x", api_key=Secret("k"), secret_key=Secret("s"),
                              base_url=f"http://127.0.0.1:{port}")  # fmt: skip
    try:
        yield server, account
    finally:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget_module, "MAX_PAUSE_S", PAUSE_CAP_S)
    monkeypatch.setattr(budget_module, "MIN_WAIT_S", 0.001)
    monkeypatch.setattr(rest_module, "BACKOFF_BASE_S", 0.001)
    monkeypatch.setattr(rest_module, "BACKOFF_CAP_S", 0.002)


def _cases() -> list[tuple[str, dict[str, str]]]:
    cases = [("limited", {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": value})
             for value in HEADER_VALUES]  # fmt: skip
    cases += [("busy", {"X-RateLimit-Limit": limit, "X-RateLimit-Remaining": left, "X-RateLimit-Reset": value})
              for limit, left in BUSY_PAIRS for value in HEADER_VALUES[::4]]  # fmt: skip
    return cases


@pytest.mark.asyncio
@pytest.mark.parametrize("with_budget", [True, False], ids=["budget", "no_budget"])
async def test_corpus_rate_limit_headers_never_sleep_forever_overflow_or_crash(
    header_server: tuple[HeaderServer, AccountSettings], tmp_path: Path, with_budget: bool
) -> None:
    server, account = header_server
    cases = _cases()
    wrong: list[str] = []
    pauses: list[float] = []
    async with aiohttp.ClientSession() as session:
        for number, (kind, headers) in enumerate(cases):
            budget = RestBudget(key_file(tmp_path, f"key-{number}", "trading"), 10_000) if with_budget else None
            counters: Counter[str] = Counter()
            rest = BrokerRest(account, session, counters, budget=budget)
            server.queue = [(429, headers)] if kind == "limited" else [(200, headers)]
            label = f"{kind} {headers}"
            started = time.monotonic()
            try:
                got = await asyncio.wait_for(rest.account(), DEADLINE_S)
            except Exception as e:  # what this corpus is for: a hang (TimeoutError) or a crash
                wrong.append(f"{label}: {type(e).__name__}: {e!s:.100}")
                continue
            pauses.append(time.monotonic() - started)
            counted = counters["broker_rate_limited"] if kind == "limited" else 1
            figures = budget.figures() if budget is not None else None
            if got != ACCOUNT or counted != 1 or (figures is not None and figures.paused_s > PAUSE_CAP_S):
                wrong.append(f"{label}: account={got == ACCOUNT} counted={counted} figures={figures}")

    print(f"rate-limit header corpus: cases={len(cases)} longest call={max(pauses):.3f}s")
    assert wrong == [], "\n".join(wrong)
    assert len(cases) >= 100

"""The dashboard on the whole stack (supervisord, every program, the fake broker) in chromium.

A bracket order placed through unmodified alpaca-py appears as a row without a reload; a feed
tick changes its ``mkt_px``; the take-profit fill moves the lot to the closed trades and the KPI
document follows; ``state`` frozen then ``kill -9``-ed turns the backend indicator ``stale``,
and its restart by supervisord ``live`` again. Order requests follow Alpaca's "Create an order" (bracket:
``order_class``, ``take_profit.limit_price``, ``stop_loss.stop_price``) as alpaca-py sends them.

A hostile symbol cannot come from the fake broker: like Alpaca it refuses an order for an
unknown asset (``422 asset not found``), and ``trades`` checks stream fills of unknown orders
against REST. tests/web/test_page.py injects one through the database instead.

Set ``CHMGR_DASHBOARD_SCREENSHOT=docs/dashboard.png`` to save the README's screenshot.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest
from playwright.sync_api import Browser, Page, expect

from tests.fixtures.stack import Stack
from tests.support import wait_for
from tests.web.browser import TIMEOUT_MS, chromium

pytestmark = pytest.mark.integration

STATUS = "[data-testid=backend-status]"
RESTART_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium for the module."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page on a wide viewport (the screenshot)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    try:
        yield opened
    finally:
        context.close()


def _bracket(stack: Stack, symbol: str, qty: int, tp: float, sl: float) -> str:
    order: Any = stack.broker.trading_client().submit_order(
        MarketOrderRequest(
            symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class="bracket",
            take_profit=TakeProfitRequest(limit_price=tp), stop_loss=StopLossRequest(stop_price=sl),
        )
    )  # fmt: skip
    return str(order["id"])


def _lot(page: Page, parent_id: str):
    return page.locator(f'[data-testid=positions] tr[data-parent-id="{parent_id}"]')


def test_dashboard_follows_fills_ticks_take_profit_and_state_restart(chaos_stack: Stack, page: Page) -> None:
    stack = chaos_stack
    wait_for(lambda: stack.stream_listeners() == 1, 60, what="trades connected")
    page.goto(f"{stack.web_url}/?account=demo")
    expect(page.locator(STATUS)).to_have_text("live")  # UI heartbeat every UI_HEARTBEAT_S (1 s)

    # A fill appears as a row without a reload.
    stack.broker.set_prices({"WEBA": 100, "WEBB": 50})
    parent_id = _bracket(stack, "WEBA", 10, tp=110, sl=90)
    kept_id = _bracket(stack, "WEBB", 4, tp=60, sl=45)
    expect(_lot(page, parent_id).locator("[data-col=qty]")).to_have_text("10")
    expect(_lot(page, kept_id).locator("[data-col=qty]")).to_have_text("4")

    # A tick changes mkt_px (re-sent until `prices` has joined the feed: a PUB drops before that).
    def marked() -> bool:
        stack.tick("WEBA", 101.37)
        stack.tick("WEBB", 51.2)
        return _lot(page, parent_id).locator("[data-col=mkt_px]").inner_text() == "101.37"

    wait_for(marked, 20, interval_s=0.25, what="the tick on the page")
    expect(_lot(page, kept_id).locator("[data-col=mkt_px]")).to_have_text("51.2")

    # The take-profit closes the lot: its row goes, a closed trade comes, the KPIs follow.
    stack.broker.set_prices({"WEBA": 111})
    expect(_lot(page, parent_id)).to_have_count(0)
    closed = page.locator(f'[data-testid=closed] tr[data-entry-lot-id="{parent_id}"]')
    expect(closed).to_contain_text("TP")
    expect(page.locator('[data-kpi="Closed Trades (n)"]')).to_have_text("1")
    expect(page.locator('[data-kpi="Win Rate %"]')).to_have_text("100.00")
    expect(page.locator('[data-kpi="Open Trades (n)"]')).to_have_text("1")
    expect(page.locator("[data-testid=programs] li.bad")).to_have_count(0)
    # The market phase from the schedule `scheduler` stores (any phase: the test runs at any hour).
    phase = page.locator("[data-testid=market-phase]")
    expect(phase).to_have_text(re.compile(r"^market (pre|open|post|closed)$"), timeout=RESTART_TIMEOUT_MS)
    # The account header is the broker's GET /v2/account (equity to the cent); one row per symbol.
    header = page.locator("[data-testid=account-summary]")

    def header_is_the_broker() -> bool:
        account: Any = stack.broker.trading_client().get_account()  # raw JSON: the client is raw_data
        equity = Decimal(str(account["equity"]))
        return header.locator("[data-field=equity]").inner_text() == f"{equity:,.2f}"

    wait_for(header_is_the_broker, 30, interval_s=0.5, what="the header's equity equal to GET /v2/account")
    webb = page.locator('[data-testid=positions] tr[data-symbol="WEBB"]')
    expect(webb.locator("[data-col=qty]")).to_have_text("4")
    webb.click()
    expect(_lot(page, kept_id)).to_be_visible()
    target = os.environ.get("CHMGR_DASHBOARD_SCREENSHOT")
    if target:  # the README's picture (no equity curve yet: daily rows come after a session closes)
        Path(target).write_bytes(page.screenshot(full_page=True))

    # state stops beating: stale after 2 × UI_HEARTBEAT_S. It is frozen first (SIGSTOP), since a
    # bare kill -9 is restarted by supervisord so fast that the gap can stay under 2 s; then
    # kill -9, supervisord restarts it, its heartbeats return: live again.
    pid = stack.pid("state")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    expect(page.locator(STATUS)).to_have_text("stale")
    os.kill(pid, signal.SIGKILL)
    expect(page.locator(STATUS)).to_have_text("live", timeout=RESTART_TIMEOUT_MS)
    restarted = wait_for(lambda: stack.pid("state"), 30, interval_s=0.2, what="state RUNNING again")
    assert restarted != pid
    expect(_lot(page, kept_id)).to_have_count(1)  # still there, no reload

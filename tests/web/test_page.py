"""The dashboard page in a real chromium, fed by rows and NOTIFYs the test writes as `state` does.

Payload shapes: docs/spec.md §6 (built by ``coldharbour.db.notify``, the code `state` sends them
with); row columns: docs/spec.md §2.2/§2.3. The hostile symbol is injected through the database
here (the fake broker only trades symbols it has a price for); the whole-stack test
(tests/integration/test_dashboard.py) covers the broker path for everything else.
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
import requests
from playwright.sync_api import Dialog, Page, Route, expect

from coldharbour.config import Settings
from coldharbour.db import queries
from coldharbour.db.names import account_names
from coldharbour.domain.cashflows import CashFlow, classify
from coldharbour.domain.equity import DayInputs, build_daily_curve
from coldharbour.domain.metrics import compute_kpi_document
from coldharbour.messages import Heartbeat, SnapshotTaken
from coldharbour.sim.postgres import PgCluster
from coldharbour.web.figures import PREFIX_SNAPSHOT, AccountFigures
from tests.support import wait_for
from tests.web.server import Dashboard
from tests.web.tables import Tables, closed_slice, lot

pytestmark = pytest.mark.integration  # a real chromium: the full tier (docs/testing.md)

POSITIONS = "[data-testid=positions]"
HOSTILE = "<img src=x onerror=alert(1)>"


def _lot_row(page: Page, parent_id: str):
    return page.locator(f'{POSITIONS} tr[data-parent-id="{parent_id}"]')


def _open(page: Page, dashboard: Dashboard, account: str = "demo") -> None:
    page.goto(f"{dashboard.url}/?account={account}")
    expect(page.locator("#positions-count")).to_have_text(re.compile(r"\(\d+ symbols?, \d+ lots?\)"))


def test_page_snapshot_then_live_rows_without_reload(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    tables.put_lots(lot("lot-a", "AAPL", mkt_px=Decimal("101.25")), push=False)
    _open(page, dashboard)
    expect(_lot_row(page, "lot-a").locator("[data-col=mkt_px]")).to_have_text("101.25")

    tables.put_lots(lot("lot-b", "MSFT", qty=Decimal(7)))  # a fill: one {"row": ...}
    expect(_lot_row(page, "lot-b").locator("[data-col=qty]")).to_have_text("7")
    tables.put_lots(lot("lot-a", "AAPL", mkt_px=Decimal("102.5")), lot("lot-b", "MSFT", qty=Decimal(3)))  # a batch
    expect(_lot_row(page, "lot-a").locator("[data-col=mkt_px]")).to_have_text("102.5")
    expect(_lot_row(page, "lot-b").locator("[data-col=qty]")).to_have_text("3")
    tables.drop_lot("lot-a")
    expect(_lot_row(page, "lot-a")).to_have_count(0)
    expect(page.locator(f"{POSITIONS} tr[data-parent-id]")).to_have_count(1)
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_page_refetch_payload_fetches_that_row(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    _open(page, dashboard)
    tables.put_lots(lot("lot-big", "NVDA", mkt_px=Decimal("900.01")), push=False)
    expect(_lot_row(page, "lot-big")).to_have_count(0)

    tables.refetch("lot-big")

    expect(_lot_row(page, "lot-big").locator("[data-col=mkt_px]")).to_have_text("900.01")


def test_page_closed_trades_and_kpis_are_pushed(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    tables.set_metrics({"Closed Trades (n)": 0, "Win Rate %": None, "as_of": "2026-12-01T15:00:00Z"})
    _open(page, dashboard)
    expect(page.locator('[data-kpi="Closed Trades (n)"]')).to_have_text("0")
    expect(page.locator('[data-kpi="Win Rate %"]')).to_have_text("needs a closed trade")  # not "—"

    tables.insert_closed(closed_slice("lot-c", "TSLA"))
    tables.set_metrics({"Closed Trades (n)": 1, "Win Rate %": 100, "NET REALIZED CASH (FIFO)": 100.5})

    expect(page.locator('[data-testid=closed] tr[data-entry-lot-id="lot-c"]')).to_contain_text("TSLA")
    expect(page.locator('[data-kpi="Closed Trades (n)"]')).to_have_text("1")
    expect(page.locator('[data-kpi="NET REALIZED CASH (FIFO)"]')).to_have_text("100.50")


def test_page_backend_indicator_follows_the_ui_heartbeat(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    _open(page, dashboard)
    status = page.locator("[data-testid=backend-status]")
    expect(status).to_have_text("stale")  # no heartbeat heard yet

    tables.heartbeat()
    expect(status).to_have_text("live")
    # No heartbeat for 2 × UI_HEARTBEAT_S (0.5 s): stale again.
    expect(status).to_have_text("stale", timeout=5_000)
    tables.heartbeat()
    expect(status).to_have_text("live")


def test_page_renders_a_hostile_symbol_as_text(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    _open(page, dashboard)

    tables.put_lots(lot("lot-x", HOSTILE, moved_flag=HOSTILE))
    tables.insert_closed(closed_slice("lot-y", HOSTILE))
    tables.set_metrics({HOSTILE: 1})

    expect(_lot_row(page, "lot-x").locator("[data-col=symbol]")).to_have_text(HOSTILE)
    expect(page.locator('[data-testid=closed] tr[data-entry-lot-id="lot-y"]')).to_contain_text(HOSTILE)
    expect(page.locator(f'[data-kpi="{HOSTILE}"]')).to_have_text("1.00")
    assert page.locator("img").count() == 0
    assert dialogs == []


def test_page_reconnect_gets_a_fresh_snapshot(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    _open(page, dashboard)
    tables.put_lots(lot("lot-missed", "AMD"), push=False)  # a push this browser never saw
    expect(_lot_row(page, "lot-missed")).to_have_count(0)
    assert dashboard.hub is not None

    dashboard.call(dashboard.hub.close_all)  # what the hub does after its LISTEN connection came back

    expect(_lot_row(page, "lot-missed")).to_have_count(1)
    tables.put_lots(lot("lot-after", "INTC"))
    expect(_lot_row(page, "lot-after")).to_have_count(1)


def test_page_switches_accounts_and_keeps_them_apart(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    tables.put_lots(lot("lot-demo", "AAPL"), push=False)
    _open(page, dashboard, "paper_1")
    expect(page.locator(f"{POSITIONS} tr[data-parent-id]")).to_have_count(0)
    tables.put_lots(lot("lot-demo-2", "AAPL"))  # demo's push: not this page's account

    page.locator("#account").select_option("demo")

    expect(page).to_have_url(re.compile(r"account=demo"))
    expect(page.locator(f"{POSITIONS} tr[data-parent-id]")).to_have_count(2)


def test_page_equity_curve_redraws_when_the_table_changes(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    tables.add_equity_day(date(2026, 11, 30), Decimal(90_000), Decimal(10_000), Decimal(0))
    _open(page, dashboard)
    chart = page.locator("[data-testid=equity-daily]")
    expect(chart).to_have_attribute("data-points", "1")

    tables.add_equity_day(date(2026, 12, 1), Decimal(90_000), Decimal(10_500), Decimal("0.005"))

    expect(chart).to_have_attribute("data-points", "2", timeout=15_000)  # checked every 5 s
    assert chart.locator("polyline").count() == 1


def test_page_database_outage_then_fresh_snapshot_and_stream_again(
    page: Page, dashboard: Dashboard, tables: Tables, pg_cluster: PgCluster
) -> None:
    _open(page, dashboard)
    tables.put_lots(lot("lot-before", "AAPL"))
    expect(_lot_row(page, "lot-before")).to_have_count(1)
    tables.put_lots(lot("lot-missed", "MSFT"), push=False)  # only a fresh snapshot can show it
    tables.close()
    reconnects = dashboard.counters["reconnects"]

    pg_cluster.stop("fast")  # a clean stop: the suite's cluster runs without synchronous commits
    try:
        wait_for(lambda: dashboard.counters["reconnects"] > reconnects, 30, what="the LISTEN connection lost")
    finally:
        pg_cluster.start()

    expect(_lot_row(page, "lot-missed")).to_have_count(1, timeout=60_000)  # sent back to a fresh snapshot
    after = Tables(dashboard.settings.dsn, tables.names)
    try:
        after.put_lots(lot("lot-after", "NVDA"))
        expect(_lot_row(page, "lot-after")).to_have_count(1)  # and the stream again
    finally:
        after.close()


def test_page_failed_refetch_is_shown_and_retried(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    failures: list[str] = []

    def fail_twice(route: Route) -> None:  # the server's real answer from the third try on
        if len(failures) < 2:
            failures.append(route.request.url)
            return route.fulfill(status=503, body="busy")
        return route.continue_()

    page.route(re.compile(r".*/api/positions\?.*parent_id=lot-late.*"), fail_twice)
    _open(page, dashboard)
    tables.put_lots(lot("lot-late", "AMD", mkt_px=Decimal("150.5")), push=False)

    tables.refetch("lot-late")

    expect(page.locator('[data-testid=alerts] [data-alert="refetch:lot-late"]')).to_contain_text("HTTP 503")
    expect(_lot_row(page, "lot-late").locator("[data-col=mkt_px]")).to_have_text("150.5")
    expect(page.locator('[data-testid=alerts] [data-alert="refetch:lot-late"]')).to_have_count(0)
    assert len(failures) == 2


def test_page_banner_shows_the_health_causes_in_status_words(page: Page, dashboard: Dashboard) -> None:
    """No supervisord runs here: the health model's cause is that, and the banner says it."""
    _open(page, dashboard)
    status = requests.get(f"{dashboard.url}/api/status", timeout=10).json()

    assert status["working"] is False
    assert status["alerts"][0].startswith("supervisord: ")
    expect(page.locator('[data-testid=alerts] [data-alert="health:0"]')).to_have_text(status["alerts"][0])


def _snapshot(taken_at: datetime, equity: str, last_equity: str | None = "100000") -> SnapshotTaken:
    """What `snapshot` publishes after GET /v2/account (fields as Alpaca's Account model:
    alpaca-py alpaca/trading/models.py TradeAccount: cash, equity, buying_power, last_equity)."""
    return SnapshotTaken(
        src="snapshot", seq=1, ts=1, account="demo", taken_at=int(taken_at.timestamp() * 1e9), positions=(),
        cash=Decimal("50000.10"), equity=Decimal(equity), buying_power=Decimal("200000.40"),
        last_equity=None if last_equity is None else Decimal(last_equity),
    )  # fmt: skip


def test_page_account_header_shows_the_broker_figures_live(page: Page, dashboard: Dashboard) -> None:
    assert dashboard.hub is not None
    figures = AccountFigures(dashboard.ctx.subscriber([PREFIX_SNAPSHOT]), dashboard.hub)
    header = page.locator("[data-testid=account-summary]")
    try:
        _open(page, dashboard)
        expect(header.locator("[data-field=as_of]")).to_contain_text("waiting for the broker's account")
        dashboard.call(figures.take, _snapshot(datetime(2026, 12, 7, 15, 30, tzinfo=UTC), "100123.45"))
        expect(header.locator("[data-field=equity]")).to_have_text("100,123.45")
        expect(header.locator("[data-field=cash]")).to_have_text("50,000.10")
        expect(header.locator("[data-field=buying_power]")).to_have_text("200,000.40")
        expect(header.locator("[data-field=day_pl]")).to_have_text("+123.45 (+0.12 %)")
        expect(header.locator("[data-field=as_of]")).to_have_text("broker account as of 2026-12-07 10:30:00 New York")

        dashboard.call(figures.take, _snapshot(datetime(2026, 12, 7, 15, 31, tzinfo=UTC), "99900", None))
        expect(header.locator("[data-field=equity]")).to_have_text("99,900.00")
        expect(header.locator("[data-field=day_pl]")).to_have_text("needs the previous close")
        dashboard.call(figures.take, _snapshot(datetime(2026, 12, 7, 15, 0, tzinfo=UTC), "1"))  # older: ignored
        page.reload()
        expect(header.locator("[data-field=equity]")).to_have_text("99,900.00")  # from the page's snapshot
    finally:
        figures.close()
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_page_times_are_new_york_and_labelled(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    tables.insert_closed(closed_slice("lot-t", "TSLA", exit_time=datetime(2026, 7, 1, 19, 59, 58, tzinfo=UTC)))
    _open(page, dashboard)

    row = page.locator('[data-testid=closed] tr[data-entry-lot-id="lot-t"]')
    expect(row.locator("[data-col=exit_time]")).to_have_text("2026-07-01 15:59:58")  # EDT, UTC-4
    expect(page.locator("[data-testid=closed] th").first).to_have_text("exit time (New York)")


def test_page_one_row_per_symbol_lots_inside_against_their_own_entry(
    page: Page, dashboard: Dashboard, tables: Tables
) -> None:
    old = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    tables.put_lots(
        lot("spy-1", "SPY", qty=Decimal(10), avg_fill=Decimal("155.73"), avg_px_symbol=Decimal("150"),
            mkt_px=Decimal("155.39"), tp_sl_reach_pct=Decimal("-6.8"), updated_at=old, filled_at=old),
        lot("spy-2", "SPY", qty=Decimal(5), avg_fill=Decimal("149"), avg_px_symbol=Decimal("150"),
            mkt_px=Decimal("155.39"), tp_sl_reach_pct=Decimal("40"), updated_at=old),
        lot("aapl-1", "AAPL", mkt_px=Decimal("101"), avg_px_symbol=Decimal("100")),
        push=False,
    )  # fmt: skip
    _open(page, dashboard)
    spy = page.locator(f'{POSITIONS} tr[data-symbol="SPY"]')

    expect(page.locator(f"{POSITIONS} tr[data-symbol]")).to_have_count(2)
    expect(page.locator("#positions-count")).to_have_text("(2 symbols, 3 lots)")
    expect(spy.locator("[data-col=qty]")).to_have_text("15")
    expect(spy.locator("[data-col=avg_px]")).to_have_text("150")
    expect(spy.locator("[data-col=mkt_px]")).to_have_text("155.39")
    expect(spy.locator("[data-col=pnl]")).to_have_text("80.85")  # 15 x (155.39 - 150)
    expect(_lot_row(page, "spy-1")).to_be_hidden()

    spy.click()

    expect(_lot_row(page, "spy-1")).to_be_visible()
    expect(page.locator('[data-lots-of="SPY"]')).to_contain_text("P&L vs lot entry")
    expect(_lot_row(page, "spy-1").locator("[data-col=profit_loss]")).to_have_text("-3.40")  # 10 x (155.39 - 155.73)
    expect(_lot_row(page, "spy-1").locator("[data-col=profit_loss]")).to_have_class(re.compile(r"\bneg\b"))
    expect(_lot_row(page, "spy-1").locator(".reach .fill")).to_have_class(re.compile(r"\bneg\b"))  # agree
    expect(_lot_row(page, "spy-2").locator("[data-col=profit_loss]")).to_have_text("31.95")  # 5 x (155.39 - 149)
    expect(_lot_row(page, "aapl-1")).to_be_hidden()

    # A new mark on one lot is the symbol's one mark: every lot and the total use it.
    tables.put_lots(lot("spy-2", "SPY", qty=Decimal(5), avg_fill=Decimal("149"), avg_px_symbol=Decimal("150"),
                        mkt_px=Decimal("156"), tp_sl_reach_pct=Decimal("45")))  # fmt: skip
    expect(spy.locator("[data-col=mkt_px]")).to_have_text("156")
    expect(_lot_row(page, "spy-1").locator("[data-col=mkt_px]")).to_have_text("156")
    expect(_lot_row(page, "spy-1").locator("[data-col=profit_loss]")).to_have_text("2.70")
    expect(spy.locator("[data-col=pnl]")).to_have_text("90.00")
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_page_kpis_grouped_and_waiting_cards_say_what_for(page: Page, dashboard: Dashboard, tables: Tables) -> None:
    tables.set_metrics({"Closed Trades (n)": 2, "Sharpe 10d": None, "CAGR %": None, "Profit Factor": None,
                        "Max Drawdown %": -1.5, "Total Return %": 0.05, "MTD %": None,
                        "as_of": "2026-12-01T15:00:00Z"})  # fmt: skip
    _open(page, dashboard)

    groups = page.locator("[data-testid=kpis] [data-kpi-group]")
    expect(groups).to_have_count(3)
    expect(page.locator('[data-kpi-group="trades"] [data-kpi="Closed Trades (n)"]')).to_have_text("2")
    expect(page.locator('[data-kpi-group="trades"] .card').first).to_contain_text("Closed trades (lots)")
    expect(page.locator('[data-kpi-group="risk"] [data-kpi="Sharpe 10d"]')).to_have_text("needs 10 sessions")
    expect(page.locator('[data-kpi="CAGR %"]')).to_have_text("needs 20 sessions")
    expect(page.locator('[data-kpi="Profit Factor"]')).to_have_text("needs a losing trade")
    expect(page.locator('[data-kpi-group="account"] [data-kpi="Total Return %"]')).to_have_text("0.05")
    # MTD/YTD are the same live return as Total Return (docs/spec.md §5): they wait for the same point.
    expect(page.locator('[data-kpi="MTD %"]')).to_have_text("needs the first equity point")
    expect(page.locator("[data-testid=kpis] .value", has_text="—")).to_have_count(0)


def test_page_daily_chart_shows_the_intraday_curve_on_the_first_day(
    page: Page, dashboard: Dashboard, tables: Tables
) -> None:
    now = datetime.now(UTC)
    tables.put_intraday(now - timedelta(minutes=2), Decimal("0.001"))
    tables.put_intraday(now - timedelta(minutes=1), Decimal("0.002"))
    _open(page, dashboard)

    daily = page.locator("[data-testid=equity-daily]")
    expect(daily).to_have_attribute("data-curve", "intraday")
    expect(daily).to_have_attribute("data-points", "2")
    expect(page.locator("#chart-daily-caption")).to_contain_text("first session")


def _flow(n: int, day: date, amount: str, code: str) -> CashFlow:
    """A cash activity as the cash-flow reader stores it: ``CSD`` (cash deposit) and ``DIV``
    (dividend) are Alpaca activity types (docs.alpaca.markets, "Account activities")."""
    ts = datetime(day.year, day.month, day.day, 15, tzinfo=UTC)
    return CashFlow(id=f"flow-{n}", ts=ts, amount=Decimal(amount), type=code, category=classify(code))


def test_page_daily_chart_is_the_return_net_of_flows_and_a_deposit_is_flat(
    page: Page, dashboard: Dashboard, tables: Tables
) -> None:
    """Three sessions through the daily-curve code: $10,000 deposited on the first, $50,000 more on
    the second, a $600 dividend on the third. In dollars that is 10,000 → 60,000 → 60,600; the
    chart shows the time-weighted return: flat at 0 % through both deposits, +1 % on the dividend."""
    first, second, third = date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2)
    curve = build_daily_curve([
        DayInputs(session_date=first, flows=(_flow(1, first, "10000", "CSD"),)),
        DayInputs(session_date=second, flows=(_flow(2, second, "50000", "CSD"),)),
        DayInputs(session_date=third, flows=(_flow(3, third, "600", "DIV"),)),
    ])  # fmt: skip
    tables.put_days(*curve.rows[:2])
    _open(page, dashboard)

    chart = page.locator("[data-testid=equity-daily]")
    expect(chart).to_have_attribute("data-unit", "pct")
    expect(chart).to_have_attribute("data-values", "0.00 0.00")  # two deposits: no gain
    expect(page.locator("#chart-daily-caption")).to_contain_text("net of deposits and withdrawals")
    tip = chart.locator("rect.hover title")
    expect(tip).to_have_text(["2026-11-30 · 0.00 % · $10,000.00 · deposit $10,000.00",
                              "2026-12-01 · 0.00 % · $60,000.00 · deposit $50,000.00"])  # fmt: skip

    tables.put_days(curve.rows[2])  # pushed by the equity check (every 5 s)

    expect(chart).to_have_attribute("data-values", "0.00 0.00 1.00", timeout=15_000)
    page.locator("[data-testid=equity-daily-toggle]").click()
    expect(chart).to_have_attribute("data-unit", "usd")
    expect(chart).to_have_attribute("data-values", "10000.00 60000.00 60600.00")
    expect(page.locator("[data-testid=equity-daily-toggle]")).to_have_text("show %")
    page.locator("[data-testid=equity-daily-toggle]").click()
    expect(chart).to_have_attribute("data-values", "0.00 0.00 1.00")
    assert page.console_errors == []  # type: ignore[attr-defined]


def _kpis_from_the_tables(settings: Settings) -> dict[str, Any]:
    """The KPI document as `metrics` computes it: the stored open rows read by its own query."""

    async def read() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(settings.dsn.reveal()) as conn:
            open_lots, _ = await queries.open_rows(conn, account_names(settings, "demo"))
        return compute_kpi_document(
            slices=[], flows=[], daily=[], open_lots=open_lots, intraday_cumulative_return=None,
            in_session=True, as_of=datetime.now(UTC),
        )  # fmt: skip

    with ThreadPoolExecutor(1) as worker:  # playwright's loop runs in this thread
        return worker.submit(asyncio.run, read()).result()


def test_page_numbers_agree_unrealised_is_the_symbol_rows_and_open_count_is_the_rows_shown(
    page: Page, dashboard: Dashboard, tables: Tables, settings: Settings
) -> None:
    """Two SPY lots whose rows were marked a minute apart (155.39, then 156) and a TSLA short:
    the KPI 'Unrealized P/L (Open)', computed by the metrics code from the stored rows, equals
    the sum of the page's symbol rows (each at its one mark); 'Open trades (lots)' counts the
    rows the table shows at once, even while the stored KPI document still says fewer."""
    older, newer = datetime(2026, 12, 7, 15, 1, tzinfo=UTC), datetime(2026, 12, 7, 15, 2, tzinfo=UTC)
    tables.put_lots(
        lot("spy-1", "SPY", qty=Decimal(10), avg_fill=Decimal("155.73"), avg_px_symbol=Decimal("150"),
            mkt_px=Decimal("155.39"), profit_loss=Decimal("53.90"), updated_at=older, filled_at=older),
        lot("spy-2", "SPY", qty=Decimal(5), avg_fill=Decimal("149"), avg_px_symbol=Decimal("150"),
            mkt_px=Decimal("156"), profit_loss=Decimal("30"), updated_at=newer, filled_at=newer),
        lot("tsla-1", "TSLA", side="short", qty=Decimal(2), avg_fill=Decimal("210"), avg_px_symbol=Decimal("210"),
            mkt_px=Decimal("200"), profit_loss=Decimal("20"), updated_at=older, filled_at=older),
        push=False,
    )  # fmt: skip
    document = _kpis_from_the_tables(settings)
    tables.set_metrics({**document, "Open Trades (n)": 1})  # a document one metrics run behind the rows
    _open(page, dashboard)

    pnl = page.locator(f"{POSITIONS} tr[data-symbol] [data-col=pnl]")
    expect(pnl).to_have_text(["90.00", "20.00"])  # SPY 15 x (156 - 150), TSLA -2 x (200 - 210)
    assert document["Unrealized P/L (Open)"] == 110.0  # the rows' own marks would say 103.90
    expect(page.locator('[data-kpi="Unrealized P/L (Open)"]')).to_have_text("110.00")
    expect(page.locator('[data-kpi="Current Open Value"]')).to_have_text(f"{15 * 156 + 2 * 200:,.2f}")
    expect(page.locator("#positions-count")).to_have_text("(2 symbols, 3 lots)")
    expect(page.locator('[data-kpi="Open Trades (n)"]')).to_have_text("3")

    tables.drop_lot("tsla-1")  # the table and its count move together, before any metrics run

    expect(page.locator("#positions-count")).to_have_text("(1 symbol, 2 lots)")
    expect(page.locator('[data-kpi="Open Trades (n)"]')).to_have_text("2")
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_page_lists_the_corporate_actions_snapshot_holds_for_the_account(page: Page, dashboard: Dashboard) -> None:
    """``snapshot``'s heartbeat names the actions it holds per account (``corporate_pending_<slug>``,
    docs/corporate-actions.md "Announcements"); the page lists the shown account's, and hides the
    panel when there are none."""
    assert dashboard.hub is not None
    hub = dashboard.hub
    pending = [{"symbol": "AAPL", "type": "forward_split", "effective": "2026-12-08", "waits_for": "the broker's legs"},
               {"symbol": HOSTILE, "type": "split", "effective": "2026-12-07", "waits_for": "its announcement"}]
    beat = Heartbeat(src="snapshot", seq=1, ts=1, program="snapshot", pid=1, uptime_s=1.0, details={
        "corporate_pending_demo": json.dumps(pending), "corporate_pending_paper_1": "not json"})  # fmt: skip
    dashboard.call(hub.beats.__setitem__, "snapshot", beat)
    panel = page.locator("[data-testid=corporate-pending]")

    _open(page, dashboard)

    row = panel.locator('tr[data-symbol="AAPL"]')
    expect(row.locator("[data-col=type]")).to_have_text("forward_split")
    expect(row.locator("[data-col=effective]")).to_have_text("2026-12-08")
    expect(row.locator("[data-col=waits_for]")).to_have_text("the broker's legs")
    expect(panel.locator("tbody tr").nth(1).locator("[data-col=symbol]")).to_have_text(HOSTILE)  # text, never HTML
    status = requests.get(f"{dashboard.url}/api/status", timeout=10).json()
    assert status["corporate_pending"] == {"demo": pending, "paper_1": []}

    dashboard.call(hub.beats.__setitem__, "snapshot", msgspec.structs.replace(beat, details={}))
    expect(panel).to_be_hidden()

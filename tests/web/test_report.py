"""``/api/report`` and ``chmgr report`` on stored rows, with the benchmark's bars from the fake broker.

The ``demo`` account holds 90 NYSE sessions of a daily curve built by our ledger replay
(deposits, a withdrawal, flat days, a loss streak) and a few closed trades; ``paper-1`` holds
3 sessions. The dashboard runs in-process on the suite's PostgreSQL; the fake broker serves the
SPY bars (``GET /v2/stocks/bars``). Checked: every value quantstats/empyrical-reloaded also
define agrees with them to 1e-6 on the API's own ``returns``; the benchmark agrees with SPY
closes read independently through alpaca-py's ``StockHistoricalDataClient`` (the data API's
bars endpoint: alpaca-py ``alpaca/data/historical/stock.py``, ``get_stock_bars``); a 3-session
account withholds the annualised figures with their reason; the HTML file of ``chmgr report``
embeds the same numbers and loads nothing from the network.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import empyrical as ep
import msgspec
import pandas as pd
import psycopg
import pytest
import quantstats as qs
import requests
from alpaca.data.models import BarSet
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from playwright.sync_api import Browser, Page, expect

from coldharbour.cli import main
from coldharbour.cli import report as cli_report
from coldharbour.config import Dsn, Settings
from coldharbour.db.names import AccountNames, account_names
from coldharbour.domain.equity import build_daily_curve
from coldharbour.domain.metrics import MIN_ANNUALISED_SESSIONS
from coldharbour.sim.calendar import load_calendar
from tests.domain.test_report import account_days
from tests.fixtures.broker import BrokerFactory, FakeBroker
from tests.support import make_environ, make_settings
from tests.web.server import Dashboard
from tests.web.tables import closed_slice

RELATIVE = 1e-6
SESSIONS = load_calendar().between(date(2024, 1, 2), date(2024, 7, 31))


def write_curve(dsn: Dsn, names: AccountNames, count: int, wipe_out_on: int | None = None) -> None:
    """Store ``count`` sessions of the ledger-built curve as `state` would (the equity table's columns)."""
    days = account_days(count, wipe_out_on=wipe_out_on, sessions=[s.day for s in SESSIONS[:count]])
    rows = build_daily_curve(days).rows
    with psycopg.connect(dsn.reveal()) as conn:
        for row in rows:
            values = {**msgspec.structs.asdict(row), "updated_at": datetime.now(UTC)}
            columns = list(values)
            conn.execute(
                psycopg.sql.SQL("INSERT INTO {t} ({c}) VALUES ({v})").format(
                    t=names.equity_full.ident,
                    c=psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, columns)),
                    v=psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(columns)),
                ),
                list(values.values()),
            )


def write_trades(dsn: Dsn, names: AccountNames) -> None:
    start = datetime(2024, 2, 1, 15, tzinfo=UTC)
    slices = [
        closed_slice("L1", "AAPL", exit_order_id="x1", pnl_cash=Decimal("120.50"), entry_time=start,
                     exit_time=start + timedelta(days=2)),
        closed_slice("L2", "MSFT", exit_order_id="x2", pnl_cash=Decimal("-40.25"), entry_time=start,
                     exit_time=start + timedelta(days=3)),
        closed_slice("L3", "AAPL", exit_order_id="x3", pnl_cash=Decimal("-10"), entry_time=start,
                     exit_time=start + timedelta(days=5)),
    ]  # fmt: skip
    with psycopg.connect(dsn.reveal()) as conn:
        for row in slices:
            columns = list(row)
            conn.execute(
                psycopg.sql.SQL("INSERT INTO {t} ({c}) VALUES ({v})").format(
                    t=names.closed.ident,
                    c=psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, columns)),
                    v=psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(columns)),
                ),
                list(row.values()),
            )


@pytest.fixture
def broker(fake_broker_factory: BrokerFactory) -> FakeBroker:
    # The test settings' credentials (tests.support.TEST_SECRETS), so the account's own keys read the bars.
    return fake_broker_factory(accounts=["demo:demo-key:demo-secret-AAAA1111"])


@pytest.fixture
def report_settings(migrated_dsn: Dsn, run_dir: Path, broker: FakeBroker) -> Settings:
    settings = make_settings(migrated_dsn, run_dir, ALPACA_BASE_URL_DEMO=broker.base_url,
                             ALPACA_BASE_URL_PAPER_1=broker.base_url)  # fmt: skip
    write_curve(settings.dsn, account_names(settings, "demo"), 90)
    write_trades(settings.dsn, account_names(settings, "demo"))
    write_curve(settings.dsn, account_names(settings, "paper_1"), 3)
    return settings


@pytest.fixture
def served(report_settings: Settings) -> Iterator[Dashboard]:
    running = Dashboard(report_settings)
    try:
        yield running
    finally:
        running.close()


def get_report(dashboard: Dashboard, account: str) -> dict[str, Any]:
    response = requests.get(f"{dashboard.url}/api/report", params={"account": account}, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def returns_of(body: dict[str, Any]) -> pd.Series:
    return pd.Series(list(body["returns"].values()), index=pd.DatetimeIndex(list(body["returns"])))


def spy_closes(broker: FakeBroker) -> pd.Series:
    """SPY daily closes read independently with alpaca-py (from the session before the first)."""
    request = StockBarsRequest(
        symbol_or_symbols="SPY", timeframe=TimeFrame.Day,
        start=datetime(2023, 12, 20, tzinfo=UTC), end=datetime(2024, 8, 1, tzinfo=UTC),
    )  # fmt: skip
    answer = broker.data_client("demo").get_stock_bars(request)
    assert isinstance(answer, BarSet)
    bars = answer.data["SPY"]
    ny = [pd.Timestamp(b.timestamp).tz_convert("America/New_York").date() for b in bars]
    return pd.Series([b.close for b in bars], index=pd.DatetimeIndex(ny))


def test_api_report_agrees_with_both_libraries_on_its_own_returns(served: Dashboard, broker: FakeBroker) -> None:
    body = get_report(served, "demo")
    r = returns_of(body)

    assert body["sessions"] == len(r) == 90
    checks = {
        "sharpe": (body["sharpe"], qs.stats.sharpe(r), ep.sharpe_ratio(r)),
        "sortino": (body["sortino"], qs.stats.sortino(r), ep.sortino_ratio(r)),
        "cagr_pct": (body["cagr_pct"], 100 * qs.stats.cagr(r), 100 * ep.cagr(r)),
        "calmar": (body["calmar"], qs.stats.calmar(r), ep.calmar_ratio(r)),
        "volatility_pct": (body["volatility_pct"], 100 * qs.stats.volatility(r), 100 * ep.annual_volatility(r)),
        "twr_pct": (body["twr_pct"], 100 * qs.stats.comp(r), 100 * ep.cum_returns_final(r)),
        "var_95_pct": (body["var_95_pct"], 100 * ep.value_at_risk(r), 100 * r.quantile(0.05)),
        "cvar_95_pct": (body["cvar_95_pct"], 100 * ep.conditional_value_at_risk(r), None),
        "skew": (body["skew"], qs.stats.skew(r), r.skew()),
        "kurtosis": (body["kurtosis"], qs.stats.kurtosis(r), r.kurtosis()),
        "tail_ratio": (body["tail_ratio"], qs.stats.tail_ratio(r), ep.tail_ratio(r)),
        "max_drawdown_pct": (body["max_drawdown_pct"], 100 * qs.stats.max_drawdown(r), 100 * ep.max_drawdown(r)),
    }
    for key, (ours, first, second) in checks.items():
        assert ours == pytest.approx(float(first), rel=RELATIVE), key
        if second is not None:
            assert ours == pytest.approx(float(second), rel=RELATIVE), key
    quantstats_only = {
        "smart_sharpe": qs.stats.smart_sharpe(r),
        "best_day_pct": 100 * qs.stats.best(r),
        "worst_day_pct": 100 * qs.stats.worst(r),
        "win_days_pct": 100 * qs.stats.win_rate(r),
        "payoff_ratio_returns": qs.stats.payoff_ratio(r),
        "win_months_pct": 100 * qs.stats.win_rate(r, aggregate="ME"),
    }
    for key, value in quantstats_only.items():
        assert body[key] == pytest.approx(float(value), rel=RELATIVE), key
    three_months = r[r.index >= r.index[-1] - pd.DateOffset(months=3)]  # quantstats reports.metrics' window
    assert body["trailing"]["3M"] == pytest.approx(100 * float(qs.stats.comp(three_months)), rel=RELATIVE)
    table = qs.stats.monthly_returns(r)
    assert body["monthly_returns"]["2024-03"] == pytest.approx(100 * float(table.loc["2024", "MAR"]), rel=RELATIVE)
    assert body["yearly_returns"]["2024"] == pytest.approx(100 * float(table.loc["2024", "EOY"]), rel=RELATIVE)

    details = qs.stats.drawdown_details(qs.stats.to_drawdown_series(r)).sort_values(["max drawdown", "start"])
    dates = list(r.index.strftime("%Y-%m-%d"))
    for ours, (_, theirs) in zip(body["drawdowns"], details.head(5).iterrows(), strict=True):
        assert (ours["valley"], ours["days"]) == (theirs["valley"], theirs["days"])
        assert ours["depth_pct"] == pytest.approx(theirs["max drawdown"], rel=RELATIVE)
        start, end = dates.index(theirs["start"]), dates.index(theirs["end"])
        assert ours["peak"] == (dates[start - 1] if start else None)
        assert ours["recovery"] == (dates[end + 1] if end + 1 < len(dates) else None)

    spy = spy_closes(broker).pct_change().reindex(r.index)
    assert not spy.isna().any()
    alpha, beta = ep.alpha_beta(r, spy)
    bench = body["benchmark"]
    assert bench["symbol"] == "SPY"
    assert bench["beta"] == pytest.approx(float(beta), rel=RELATIVE)
    assert bench["alpha"] == pytest.approx(float(alpha), rel=RELATIVE)
    assert bench["correlation"] == pytest.approx(float(r.corr(spy)), rel=RELATIVE)
    assert bench["r2"] == pytest.approx(float(qs.stats.r_squared(r, spy)), rel=RELATIVE)
    assert bench["information_ratio"] == pytest.approx(float(qs.stats.information_ratio(r, spy)), rel=RELATIVE)
    assert bench["return_pct"] == pytest.approx(100 * float(qs.stats.comp(spy)), rel=RELATIVE)

    trades = body["trades"]
    assert (trades["count"], trades["largest_win"], trades["largest_loss"]) == (3, 120.5, -40.25)
    assert (trades["max_consecutive_wins"], trades["max_consecutive_losses"]) == (1, 2)
    assert trades["by_symbol"]["AAPL"] == {"trades": 2, "wins": 1, "losses": 1, "pnl": 110.5}


def test_a_three_session_account_withholds_annualised_figures_and_a_refused_benchmark(served: Dashboard) -> None:
    body = get_report(served, "paper_1")

    assert body["sessions"] == 3
    for key in ("cagr_pct", "calmar", "sharpe", "sortino", "volatility_pct", "smart_sharpe"):
        assert body[key] is None
        assert body["withheld"][key] == f"annualised: needs {MIN_ANNUALISED_SESSIONS} sessions of returns, has 3"
    assert body["twr_pct"] is not None
    # paper_1's keys are not the fake broker's: the bars are refused (403), the rest of the report stands.
    assert body["benchmark"] is None
    assert body["withheld"]["benchmark"].startswith("SPY bars could not be read: ")
    assert "403" in body["withheld"]["benchmark"]
    assert "paper-secret" not in json.dumps(body)


def test_a_wiped_out_account_reports_minus_100_percent_and_the_days_after(
    migrated_dsn: Dsn, run_dir: Path, broker: FakeBroker
) -> None:  # fmt: skip
    settings = make_settings(migrated_dsn, run_dir, ALPACA_BASE_URL_DEMO=broker.base_url)
    days = account_days(60, wipe_out_on=50, sessions=[s.day for s in SESSIONS[:60]])
    rows = build_daily_curve(days).rows
    assert rows[50].daily_return is None
    assert rows[50].deposit < 0
    write_curve(settings.dsn, account_names(settings, "demo"), 60, wipe_out_on=50)
    running = Dashboard(settings)
    try:
        body = get_report(running, "demo")
    finally:
        running.close()

    assert body["sessions"] == 51
    assert body["wipe_out"] == {"date": SESSIONS[50].day.isoformat(), "days_after": 9}
    assert body["worst_day_pct"] == body["twr_pct"] == body["max_drawdown_pct"] == body["cagr_pct"] == -100.0
    assert body["mwr_pct"] == body["trailing"]["all"] == -100.0
    assert list(body["returns"].values())[-1] == -1
    assert "no return on the 9 later days" in body["withheld"]["after_wipe_out"]
    assert body["benchmark"] is not None  # compared over the 51 sessions up to the wipe-out


@pytest.fixture
def out_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="chr-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_chmgr_report_writes_the_same_numbers_as_a_self_contained_file(
    served: Dashboard, report_settings: Settings, broker: FakeBroker, run_dir: Path, out_dir: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    environ = make_environ(report_settings.dsn, run_dir, ALPACA_BASE_URL_DEMO=broker.base_url)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(cli_report, "PROGRESS_AFTER_S", 0.0)  # any read "takes longer": the line shows
    html = out_dir / "report.html"

    code = main(["report", "demo", "--html", str(html), "--csv", str(out_dir / "csv")])

    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.err.startswith("chmgr report: reading demo: daily equity, closed trades, SPY bars")
    assert "demo-secret" not in printed.err + printed.out
    page = html.read_text()
    assert "/static/" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|/)""", page)  # nothing to fetch
    embedded = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert embedded is not None
    data = json.loads(embedded.group(1).replace("<\\/", "</"))
    assert data["account"] == "demo"
    assert data["report"] == get_report(served, "demo")
    with (out_dir / "csv" / "drawdowns.csv").open() as handle:
        drawdowns = list(csv.DictReader(handle))
    assert [row["valley"] for row in drawdowns] == [d["valley"] for d in data["report"]["drawdowns"]]
    with (out_dir / "csv" / "summary.csv").open() as handle:
        summary = {row["key"]: row for row in csv.DictReader(handle)}
    assert float(summary["sharpe"]["value"]) == data["report"]["sharpe"]
    assert summary["trailing.6M"]["withheld"] == data["report"]["withheld"]["trailing.6M"]


def test_chmgr_report_unknown_account_is_one_line(
    report_settings: Settings, run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    for key, value in make_environ(report_settings.dsn, run_dir).items():
        monkeypatch.setenv(key, value)

    code = main(["report", "nosuch"])

    assert code == 1
    assert capsys.readouterr().err == "chmgr: no such account 'nosuch' (known: demo, paper-1)\n"


# The page, in a real chromium (integration tier: a browser).


def _cards(page: Page) -> dict[str, tuple[str, str]]:
    """``{data-key: (data-value, shown text)}`` of every card on the report page."""
    found: dict[str, tuple[str, str]] = page.eval_on_selector_all(
        "[data-testid=report] .card[data-key]",
        "els => Object.fromEntries(els.map("
        "e => [e.dataset.key, [e.dataset.value, e.querySelector('.value').textContent]]))",
    )
    return found


@pytest.mark.integration
def test_report_page_and_its_offline_file_show_the_api_numbers_and_follow_pushes(
    page: Page, browser: Browser, served: Dashboard, report_settings: Settings, broker: FakeBroker, run_dir: Path,
    out_dir: Path,
) -> None:  # fmt: skip
    body = get_report(served, "demo")
    page.goto(f"{served.url}/report?account=demo")
    expect(page.locator("[data-testid=report]")).to_have_attribute("data-state", "ready")

    cards = _cards(page)
    for key in ("sharpe", "sortino", "cagr_pct", "calmar", "twr_pct", "mwr_pct", "max_drawdown_pct", "var_95_pct"):
        assert float(cards[key][0]) == body[key], key
    assert cards["trailing.6M"][0] == ""  # withheld: the card says why
    expect(page.locator("[data-key='trailing.6M'] .reason")).to_have_text(body["withheld"]["trailing.6M"])
    assert float(cards["benchmark.beta"][0]) == body["benchmark"]["beta"]
    assert float(cards["trades.largest_loss"][0]) == body["trades"]["largest_loss"]
    march = body["monthly_returns"]["2024-03"]
    expect(page.locator("[data-testid=report-monthly] td[data-month='2024-03']")).to_have_text(f"{march:,.2f}")
    valleys = page.eval_on_selector_all("#drawdowns tr", "rows => rows.map(r => r.dataset.valley)")
    assert valleys == [d["valley"] for d in body["drawdowns"]]
    expect(page.locator("#chart-underwater path")).to_have_count(1)
    expect(page.locator("#chart-rolling-sharpe path")).to_have_count(0)  # 90 sessions: no 126-session window yet
    page.click("[data-testid=equity-toggle]")
    expect(page.locator("[data-testid=equity-toggle]")).to_have_text("show %")

    # The file: written by the `chmgr` program (a process of its own: Playwright's sync API holds
    # this thread's event loop), opened from file:// in an offline context.
    environ = {**os.environ, **make_environ(report_settings.dsn, run_dir, ALPACA_BASE_URL_DEMO=broker.base_url)}
    html = out_dir / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "coldharbour.cli", "report", "demo", "--html", str(html)],
        env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    offline = browser.new_context(offline=True)
    requested: list[str] = []
    offline.on("request", lambda request: requested.append(request.url))
    try:
        file_page = offline.new_page()
        file_page.goto(html.as_uri())
        expect(file_page.locator("[data-testid=report]")).to_have_attribute("data-state", "ready")
        assert _cards(file_page) == cards
        expect(file_page.locator("[data-testid=dashboard-link]")).to_have_count(0)  # no dashboard behind a file
        assert [url for url in requested if not url.startswith("file:")] == []
    finally:
        offline.close()

    # Live: a new session in the curve reaches the open page through the dashboard's equity push.
    write_curve_day(report_settings, SESSIONS[90].day)
    expect(page.locator("[data-key=sessions]")).to_have_attribute("data-value", "91")
    assert page.console_errors == []  # type: ignore[attr-defined]


def write_curve_day(settings: Settings, day: date) -> None:
    names = account_names(settings, "demo")
    with psycopg.connect(settings.dsn.reveal()) as conn:
        conn.execute(
            psycopg.sql.SQL(
                "INSERT INTO {t} (date, deposit, cash_balance, market_value, net_flows, daily_return, "
                "cumulative_return, drawdown, updated_at) "
                "SELECT %s, deposit * 1.01, cash_balance, market_value, 0, 0.01, NULL, NULL, now() "
                "FROM {t} ORDER BY date DESC LIMIT 1"
            ).format(t=names.equity_full.ident),
            [day],
        )


@pytest.mark.integration
def test_dashboard_and_report_link_each_other_and_chart_the_same_cumulative_return(
    page: Page, served: Dashboard
) -> None:
    """The dashboard's `report` link opens the tear sheet of the account shown (not the first
    one), whose `dashboard` link comes back to it; the dashboard's daily chart draws the report's
    own `cumulative_pct` (the 90-session curve with deposits and a withdrawal)."""
    body = get_report(served, "demo")
    page.goto(f"{served.url}/?account=demo")
    values = " ".join(f"{v:.2f}" for v in body["cumulative_pct"].values())
    expect(page.locator("[data-testid=equity-daily]")).to_have_attribute("data-values", values)

    page.goto(f"{served.url}/?account=paper_1")
    link = page.locator("[data-testid=report-link]")
    expect(link).to_have_attribute("href", "/report?account=paper_1")
    link.click()

    expect(page).to_have_url(f"{served.url}/report?account=paper_1")
    expect(page.locator("[data-testid=report]")).to_have_attribute("data-state", "ready")
    expect(page.locator("[data-key=sessions]")).to_have_attribute("data-value", "3")  # paper_1's, not demo's 90
    page.locator("[data-testid=dashboard-link]").click()

    expect(page).to_have_url(f"{served.url}/?account=paper_1")
    expect(page.locator("#account")).to_have_value("paper_1")
    expect(page.locator("[data-testid=equity-daily]")).to_have_attribute("data-points", "3")
    assert page.console_errors == []  # type: ignore[attr-defined]

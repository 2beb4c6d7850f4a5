"""`chmgr report ACCOUNT [--html FILE] [--csv DIR]`: the account's report as files (docs/report.md).

The values are the ones `/api/report` serves (``analytics.report.build_report`` over a read-only
connection). ``--html`` writes one self-contained page: the report page's own script and
stylesheet inlined, the report embedded as JSON, nothing fetched when it is opened (it works
offline, from ``file://``). ``--csv`` writes one CSV per table. Without either, the JSON is
printed. A line on stderr says what is being read when that takes more than a second.
"""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
import typer

from coldharbour import runtime
from coldharbour.analytics.report import BenchmarkCloses, build_report
from coldharbour.config import AccountSettings, Settings
from coldharbour.db.connect import connect_read_only
from coldharbour.db.names import account_names
from coldharbour.db.notify import to_json
from coldharbour.domain.report import Report
from coldharbour.errors import ChmgrError

PROGRAM: Final = "chmgr-report"
PROGRESS_AFTER_S: Final = 1.0
STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "static"
# What the served page links, and what the file inlines in its place.
_LINKS: Final = (
    '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">\n',
    '<link rel="stylesheet" href="/static/app.css">\n',
    '<link rel="stylesheet" href="/static/report.css">\n',
    '<script src="/static/report.js" defer></script>\n',
)
# The served page's way back to the dashboard: a file has no dashboard behind it.
_DASHBOARD_LINK: Final = '<a class="badge" id="dashboard-link" data-testid="dashboard-link" href="/">dashboard</a>'


def _account(settings: Settings, wanted: str) -> AccountSettings:
    for account in settings.accounts:
        if wanted in (account.slug, account.name):
            return account
    known = ", ".join(a.name for a in settings.accounts) or "none"
    raise ChmgrError(f"no such account {wanted!r} (known: {known})")


async def _read(settings: Settings, account: AccountSettings) -> Report:
    conn = await connect_read_only(settings.reader_dsn, PROGRAM)
    try:
        names = account_names(settings, account.slug)
        return await build_report(conn, names, account, settings.report_benchmark, BenchmarkCloses())
    finally:
        await conn.close()


async def _with_progress(settings: Settings, account: AccountSettings) -> Report:
    task = asyncio.create_task(_read(settings, account))
    started = time.monotonic()
    done, _ = await asyncio.wait({task}, timeout=PROGRESS_AFTER_S)
    if not done:
        print(
            f"chmgr report: reading {account.name}: daily equity, closed trades, {settings.report_benchmark} bars…",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        report = await task
        print(f"chmgr report: read in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        return report
    return task.result()


def _inline_script(text: str) -> str:
    return text.replace("</", "<\\/")  # no "</script>" can end the element early


def render_html(report: Report, account: str) -> str:
    """Return the report page as one file: its script and styles inline, the report embedded."""
    page = (STATIC_DIR / "report.html").read_text(encoding="utf-8")
    for link in (*_LINKS, _DASHBOARD_LINK):
        if link not in page:
            raise ChmgrError(f"report.html no longer links {link.strip()!r}: the file cannot be made self-contained")
    styles = "".join((STATIC_DIR / name).read_text(encoding="utf-8") for name in ("app.css", "report.css"))
    data = to_json({"account": account, "report": report})
    page = page.replace(_LINKS[0], "").replace(_LINKS[2], "")
    page = page.replace(_LINKS[1], f"<style>\n{styles}</style>\n")
    script = (STATIC_DIR / "report.js").read_text(encoding="utf-8")
    page = page.replace(
        _LINKS[3],
        f'<script type="application/json" id="report-data">{_inline_script(data)}</script>\n'
        f"<script>\n{_inline_script(script)}</script>\n",
    )
    return page.replace(_DASHBOARD_LINK, "")


def _write(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)


def write_csv(report: Report, directory: Path) -> list[Path]:
    """Write the report's tables as CSV files in ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    plain = msgspec.to_builtins(report)
    scalars = {k: v for k, v in plain.items() if not isinstance(v, (dict, list)) or k == "withheld"}
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {
        "summary.csv": (
            ["key", "value", "withheld"],
            [[k, v, report.withheld.get(k, "")] for k, v in scalars.items() if k != "withheld"]
            + [[f"trailing.{k}", v, report.withheld.get(f"trailing.{k}", "")] for k, v in report.trailing.items()]
            + [[f"benchmark.{k}", v, ""] for k, v in (plain["benchmark"] or {}).items()]
            + [[f"trades.{k}", v, ""] for k, v in plain["trades"].items() if k != "by_symbol"],
        ),
        "daily.csv": (
            ["date", "return", "cumulative_pct", "underwater_pct", "equity"],
            [
                [d, r, report.cumulative_pct[d], report.underwater_pct[d], report.equity.get(d)]
                for d, r in report.returns.items()
            ],
        ),
        "monthly.csv": (["month", "return_pct"], [[k, v] for k, v in report.monthly_returns.items()]),
        "yearly.csv": (["year", "return_pct"], [[k, v] for k, v in report.yearly_returns.items()]),
        "drawdowns.csv": (
            ["peak", "start", "valley", "end", "recovery", "depth_pct", "days"],
            [
                [d["peak"], d["start"], d["valley"], d["end"], d["recovery"], d["depth_pct"], d["days"]]
                for d in plain["drawdowns"]
            ],
        ),
        "trades_by_symbol.csv": (
            ["symbol", "trades", "wins", "losses", "pnl"],
            [[s, t.trades, t.wins, t.losses, t.pnl] for s, t in report.trades.by_symbol.items()],
        ),
        "withheld.csv": (["key", "reason"], [[k, v] for k, v in report.withheld.items()]),
    }
    written = []
    for name, (header, rows) in tables.items():
        _write(directory / name, header, rows)
        written.append(directory / name)
    return written


def report(
    account: Annotated[str, typer.Argument(help="account name or slug")],
    html: Annotated[Path | None, typer.Option("--html", help="write one self-contained HTML file")] = None,
    csv_dir: Annotated[Path | None, typer.Option("--csv", help="write the tables as CSV files here")] = None,
) -> None:
    """Write the account's report (docs/report.md): HTML, CSV, or JSON on stdout."""
    settings = runtime.load_from_environment()
    chosen = _account(settings, account)
    result = asyncio.run(_with_progress(settings, chosen))
    if html is None and csv_dir is None:
        typer.echo(to_json(result))
        return
    try:
        if html is not None:
            html.write_text(render_html(result, chosen.name), encoding="utf-8")
            typer.echo(f"wrote {html}")
        if csv_dir is not None:
            for path in write_csv(result, csv_dir):
                typer.echo(f"wrote {path}")
    except OSError as e:
        raise ChmgrError(f"cannot write the report: {e.strerror or e}: {e.filename}") from None

"""Import boundaries: the domain is pure; only the `state` program reaches the DB writer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_ALLOWED = {
    "__future__", "abc", "bisect", "collections", "dataclasses", "datetime", "decimal", "enum",
    "functools", "heapq", "itertools", "math", "operator", "re", "statistics", "typing", "uuid", "zoneinfo",
    "msgspec", "coldharbour.domain",
}  # fmt: skip
WRITER_MODULES = ("coldharbour.db.writer", "coldharbour.db.upserts", "coldharbour.db.store", "coldharbour.mirror")
# The state program and the modules that make up its write path.
WRITER_ALLOWED_PREFIXES = (
    "workers.state", "coldharbour.mirror", "coldharbour.db.upserts", "coldharbour.db.rows", "coldharbour.db.writer",
    "coldharbour.db.store",
)  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _allowed_in_domain(name: str) -> bool:
    return any(name == allowed or name.startswith(allowed + ".") for allowed in DOMAIN_ALLOWED)


@pytest.mark.parametrize("path", _sources("coldharbour/domain"), ids=lambda p: p.name)
def test_domain_imports_nothing_that_does_io(path: Path) -> None:
    bad = sorted(name for name in _imports(path) if not _allowed_in_domain(name))

    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", _sources("coldharbour/domain"), ids=lambda p: p.name)
def test_domain_reads_no_clock(path: Path) -> None:
    text = path.read_text()

    assert "datetime.now(" not in text
    assert "time.time(" not in text
    assert ".today()" not in text


def test_only_state_imports_the_writer() -> None:
    offenders = []
    for path in _sources("coldharbour", "workers"):
        module = _module_name(path)
        if module.startswith(WRITER_ALLOWED_PREFIXES):
            continue
        used = {n for n in _imports(path) if n.startswith(WRITER_MODULES)}
        if used:
            offenders.append(f"{module}: {sorted(used)}")

    assert offenders == []


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(p.relative_to(ROOT))
        for p in _sources("coldharbour", "workers")
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]

    assert missing == []


def test_no_util_modules() -> None:
    names = {p.stem for p in _sources("coldharbour", "workers")}

    assert not names & {"util", "utils", "helpers", "common", "misc"}


MIRROR_FORBIDDEN = ("psycopg", "coldharbour.db")


@pytest.mark.parametrize("path", _sources("coldharbour/mirror"), ids=lambda p: p.name)
def test_mirror_imports_nothing_from_db_and_no_psycopg(path: Path) -> None:
    # The mirror decides what changes (``domain.changes``, domain values); only ``db/`` turns them
    # into rows and SQL. ``mirror.owner`` reaches the database through its ``Store`` port.
    bad = sorted(name for name in _imports(path)
                 if any(name == f or name.startswith(f + ".") for f in MIRROR_FORBIDDEN))

    assert bad == [], f"{path.name} imports {bad}"


def test_state_program_stays_thin() -> None:
    # The commit protocol lives in ``mirror.owner``; the program only wires it.
    lines = (ROOT / "workers" / "state.py").read_text().count("\n")

    assert lines <= 150, f"workers/state.py has {lines} lines"


@pytest.mark.parametrize("path", [ROOT / "coldharbour/db/writer.py", ROOT / "coldharbour/domain/changes.py"],
                         ids=lambda p: p.name)
def test_write_path_has_no_switch_over_change_kinds(path: Path) -> None:
    # Each change kind is described once (``ROWS``/``OPS`` in domain.changes, ``WRITES`` in
    # db.writer); a ``match`` over kinds would be one more place to edit for a new table.
    tree = ast.parse(path.read_text())
    kinds = {"OpenRows", "ClosedSlices", "RawOrders", "RawActivities", "Reconciliations", "CashFlows", "DailyEquity",
             "IntradayEquity", "MetricsDoc", "MarketSchedule", "LatestPrices", "PriceBars", "UiHeartbeat"}
    switches = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Match)
                and any(isinstance(p, ast.MatchClass) and getattr(p.cls, "attr", getattr(p.cls, "id", None)) in kinds
                        for case in node.cases for p in ast.walk(case.pattern))]

    assert switches == []


@pytest.mark.parametrize("path", _sources("coldharbour/web"), ids=lambda p: p.name)
def test_web_imports_nothing_from_the_command_line(path: Path) -> None:
    """`web` and `chmgr` share the health model (coldharbour.health), never each other's code."""
    bad = sorted(name for name in _imports(path) if name.startswith("coldharbour.cli"))

    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", [*_sources("coldharbour/web"), ROOT / "coldharbour/cli/doctor.py",
                                  ROOT / "coldharbour/cli/database.py", ROOT / "coldharbour/cli/status.py"],
                         ids=lambda p: p.name)  # fmt: skip
def test_dashboard_and_operator_commands_hold_no_sql(path: Path) -> None:
    """Their queries live in db/ (db.dashboard, db.checks, db.queries)."""
    bad = sorted(name for name in _imports(path) if name == "psycopg.sql" or name.endswith(".sql"))

    assert bad == [], f"{path.name} imports {bad}"

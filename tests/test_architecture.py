"""Import boundaries (docs/architecture.md §5): the direction of imports, a pure domain, SQL only in db/,
and only the `state` program reaches the DB writer."""

from __future__ import annotations

import ast
import re
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


# --- the direction of imports (docs/architecture.md §5) ---------------------------------------
#
#   workers → {analytics, broker, mirror, web, cli, jobs} → {db, bus and the base modules} → domain
#
# A module may import its own layer and the layers below it, never above. On top of that, named
# pairs are forbidden outright. ``sim`` (the fake broker, feed, bot, throwaway PostgreSQL) serves
# the demo, the tests and the benchmarks: the product never imports it, except ``chmgr sim …``.
LAYER: dict[str, int] = {
    "domain": 0,
    "config": 1, "errors": 1, "messages": 1, "retry": 1, "bus": 1, "runtime": 1, "supervisor": 1, "health": 1,
    "db": 1,
    "analytics": 2, "broker": 2, "mirror": 2, "web": 2, "cli": 2, "jobs": 2,
    "workers": 3,
}  # fmt: skip
FORBIDDEN: dict[tuple[str, str], str] = {
    ("mirror", "db"): "the mirror returns changes; only db turns them into rows and SQL",
    ("web", "cli"): "the dashboard shares what it needs with chmgr through db/, bus or runtime, not cli/",
}
SIM_ALLOWED = ("coldharbour.cli",)  # `chmgr sim broker|feed|bot`, imported lazily


def _package(module: str) -> str | None:
    """Return the layer name of ``module`` (``coldharbour.db.rows`` → ``db``; ``workers.x`` → ``workers``)."""
    parts = module.split(".")
    if parts[0] == "workers":
        return "workers"
    if parts[0] != "coldharbour" or len(parts) < 2:
        return None
    return parts[1]


def _targets(path: Path) -> set[str]:
    """Return the modules ``path`` imports (``from coldharbour.db import rows`` → ``coldharbour.db.rows``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # ``from coldharbour.db import rows``: the module is db.rows
                sub = ROOT.joinpath(*node.module.split("."), alias.name)
                is_module = sub.with_suffix(".py").exists() or sub.is_dir()
                targets.add(f"{node.module}.{alias.name}" if is_module else node.module)
    return targets


def _breaks_direction(module: str, name: str) -> bool:
    """Return True when ``module`` may not import ``name`` (both dotted module names)."""
    mine, theirs = _package(module), _package(name)
    if mine is None or mine == "sim" or theirs is None or theirs == mine:
        return False
    if theirs == "sim":
        return not module.startswith(SIM_ALLOWED)
    if theirs not in LAYER or mine not in LAYER:
        return True  # a new top-level package: give it a layer
    return LAYER[theirs] > LAYER[mine] or (mine, theirs) in FORBIDDEN


def _import_violations() -> set[tuple[str, str]]:
    return {
        (module, name)
        for path in _sources("coldharbour", "workers")
        for module in (_module_name(path),)
        for name in _targets(path)
        if _breaks_direction(module, name)
    }


def test_every_package_has_a_layer() -> None:
    packages = {_package(_module_name(p)) for p in _sources("coldharbour", "workers")} - {None, "coldharbour", "sim"}

    assert packages - set(LAYER) == set()


def test_imports_go_one_way() -> None:
    found = sorted(f"{module} imports {name}" for module, name in _import_violations())

    assert found == []


@pytest.mark.parametrize(
    ("module", "name", "breaks"),
    [
        ("coldharbour.db.loads", "coldharbour.broker.convert", True),  # db nothing from broker
        ("coldharbour.web.health", "coldharbour.cli.status", True),  # web nothing from cli
        ("coldharbour.mirror.core", "coldharbour.db.rows", True),  # the mirror nothing from db
        ("coldharbour.domain.ledger", "coldharbour.messages", True),  # domain is the bottom
        ("coldharbour.bus", "coldharbour.broker.feed", True),  # bus below the adapters
        ("coldharbour.web.app", "coldharbour.sim.broker", True),  # the product never imports sim
        ("coldharbour.broker.sync", "coldharbour.db.rows", False),
        ("coldharbour.cli", "coldharbour.sim.broker", False),  # `chmgr sim broker`
        ("workers.state", "coldharbour.mirror.owner", False),
    ],
)
def test_the_direction_check_itself(module: str, name: str, breaks: bool) -> None:
    assert _breaks_direction(module, name) is breaks


SQL_TEXT = re.compile(
    r"^\s*(SELECT\s.+\sFROM\s|SELECT\s+\S+\s*$|INSERT\s+INTO\s|UPDATE\s+\S+\s+SET\s|DELETE\s+FROM\s"
    r"|(CREATE|ALTER|DROP)\s+(UNIQUE\s+)?(TABLE|INDEX|ROLE|SCHEMA|DATABASE|DOMAIN|EXTENSION|DEFAULT)\b"
    r"|GRANT\s|REVOKE\s|LISTEN\s+\{|NOTIFY\s|SHOW\s+\w+\s*$|SET\s+\w+\s*(=|TO)\s|WITH\s+\w+\s+AS\s*\()",
    re.DOTALL,
)


def _speaks_sql(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_TEXT.match(node.value):
            return True
    return any(name == "psycopg.sql" or name.startswith("psycopg.sql.") for name in _imports(path))


def _sql_outside_db() -> set[str]:
    return {
        _module_name(path)
        for path in _sources("coldharbour", "workers")
        if _package(_module_name(path)) not in ("db", "sim") and _speaks_sql(path)
    }


def test_the_sql_check_sees_statements_and_not_prose() -> None:
    assert SQL_TEXT.match("SELECT qty FROM {t} WHERE parent_id = %s")
    assert SQL_TEXT.match("INSERT INTO {t} (id) VALUES (%s)")
    assert SQL_TEXT.match("LISTEN {}")
    assert not SQL_TEXT.match("LISTEN connection lost: %s")
    assert not SQL_TEXT.match("Select the account")


def test_sql_lives_only_in_db() -> None:
    assert sorted(_sql_outside_db()) == []


# Waits that are not a backoff or a wait for an event: (module, call, why).
WAIT_ALLOWED = {
    ("coldharbour.cli.report", "asyncio.wait"): "a progress notice after PROGRESS_AFTER_S; the read goes on",
}


def _waits(path: Path) -> list[tuple[str, int]]:
    """Return the sleeps and timed ``asyncio.wait``s of ``path`` (``asyncio.sleep(0)``, a yield, is not a wait)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    sleeps = {f"{node.module}.{alias.name}": alias.asname or alias.name for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module in ("asyncio", "time")
              for alias in node.names if alias.name in ("sleep", "wait", "wait_for")}  # fmt: skip
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            name = f"{func.value.id}.{func.attr}"
        elif isinstance(func, ast.Name):
            name = next((full for full, local in sleeps.items() if local == func.id), "")
        else:
            continue
        is_yield = name == "asyncio.sleep" and [ast.dump(a) for a in node.args] == [ast.dump(ast.Constant(0))]
        timed = name == "asyncio.wait" and any(k.arg == "timeout" for k in node.keywords)
        if (name in ("asyncio.sleep", "time.sleep") and not is_yield) or timed:
            found.append((name, node.lineno))
    return sorted(found, key=lambda item: item[1])


@pytest.mark.parametrize("path", _sources("coldharbour", "workers"), ids=lambda p: _module_name(p))
def test_no_sleep_or_timed_wait_outside_retry(path: Path) -> None:
    """Every backoff, poll and wait-with-timeout goes through ``coldharbour.retry`` (stoppable, one policy)."""
    module = _module_name(path)
    if module == "coldharbour.retry":
        return
    bad = [f"{name} at line {line}" for name, line in _waits(path) if (module, name) not in WAIT_ALLOWED]

    assert bad == [], f"{module}: use coldharbour.retry (sleep_or_stop, wait_any, poll_until, retry, ...)"


def test_the_wait_check_itself(tmp_path: Path) -> None:
    source = tmp_path / "waits.py"
    source.write_text(
        "import asyncio, time\nfrom time import sleep as nap\n"
        "async def f():\n    await asyncio.sleep(0)\n    await asyncio.sleep(1)\n    time.sleep(2)\n    nap(3)\n"
        "    await asyncio.wait({t}, timeout=1)\n    await asyncio.wait({t}, return_when=asyncio.FIRST_COMPLETED)\n"
    )

    assert _waits(source) == [("asyncio.sleep", 5), ("time.sleep", 6), ("time.sleep", 7), ("asyncio.wait", 8)]

"""One name per program everywhere (docs/architecture.md §7, names), and the README keeps up with the code.

``runtime.PROGRAMS`` == the ``[program:x]`` sections of ``supervisord.conf`` (same order: it is
the start order) == the ``workers/x.py`` modules; the conf keeps the programs' settings; ``docs/operations.md``
names every setting and ``chmgr`` command; the README shows the exact test command ``.ci/run`` runs.
"""

from __future__ import annotations

import ast
import configparser
import importlib
from pathlib import Path

import pytest

from coldharbour import config, runtime
from coldharbour.supervisor import CONFIG_TEMPLATE, render_config
from workers.state import FINAL_FLUSH_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'\n.venv/bin/pytest"


def _conf(path: Path = CONFIG_TEMPLATE) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(path, encoding="utf-8")
    return parser


def _programs(parser: configparser.RawConfigParser) -> list[str]:
    return [s.removeprefix("program:") for s in parser.sections() if s.startswith("program:")]


def test_programs_conf_sections_match_runtime_programs_in_start_order() -> None:
    assert _programs(_conf()) == list(runtime.PROGRAMS)


def test_programs_each_has_a_worker_module_with_main() -> None:
    modules = sorted(p.stem for p in (ROOT / "workers").glob("*.py") if p.stem != "__init__")

    assert modules == sorted(runtime.PROGRAMS)
    for name in runtime.PROGRAMS:
        tree = ast.parse((ROOT / "workers" / f"{name}.py").read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert "main" in functions, f"workers/{name}.py has no main()"
        assert f'runtime.run("{name}"' in (ROOT / "workers" / f"{name}.py").read_text(), (
            f"workers/{name}.py runs under another name"
        )


@pytest.mark.parametrize("name", runtime.PROGRAMS)
def test_programs_conf_section_follows_the_rules(name: str) -> None:
    section = _conf()[f"program:{name}"]

    assert section["command"] == f"python -m workers.{name}"
    assert section["autorestart"] == "unexpected"  # every exit but a settings error restarts
    assert section["exitcodes"] == str(runtime.EXIT_CONFIG)
    assert section["stopsignal"] == "TERM"
    assert int(section["stopwaitsecs"]) > FINAL_FLUSH_TIMEOUT_S
    assert int(section["startsecs"]) >= 1
    assert int(section["startretries"]) >= 3
    assert section["stdout_logfile"] == "%(here)s/run/logs/%(program_name)s.log"
    assert section["redirect_stderr"] == "true"


def test_programs_priorities_start_bus_then_state_then_the_rest() -> None:
    parser = _conf()
    priority = {name: int(parser[f"program:{name}"]["priority"]) for name in runtime.PROGRAMS}
    rest = [priority[name] for name in runtime.PROGRAMS if name not in ("bus", "state")]

    assert priority["bus"] < priority["state"] < min(rest)
    assert int(parser["group:session"]["priority"]) > priority["state"]


def test_programs_session_group_is_runtime_session_programs() -> None:
    programs = _conf()["group:session"]["programs"].split(",")

    assert programs == list(runtime.SESSION_PROGRAMS)


def test_programs_supervisord_socket_is_private_and_in_the_run_dir() -> None:
    parser = _conf()

    assert parser["unix_http_server"]["file"] == "%(here)s/run/supervisor.sock"
    assert parser["unix_http_server"]["chmod"] == "0700"
    assert parser["supervisorctl"]["serverurl"] == "unix://%(here)s/run/supervisor.sock"
    assert parser["supervisord"]["logfile"].startswith("%(here)s/run/logs/")
    assert 'CHMGR_RUN_DIR="%(here)s/run"' in parser["supervisord"]["environment"]
    assert "ENV_CHMGR_RUN_DIR" not in CONFIG_TEMPLATE.read_text()  # works without it exported
    assert "rpcinterface:supervisor" in parser.sections()


def test_programs_rendered_conf_is_the_template_with_the_project_pinned(tmp_path: Path) -> None:
    rendered = render_config(tmp_path)

    assert rendered.read_text() == CONFIG_TEMPLATE.read_text().replace("%(here)s", str(ROOT))
    assert _programs(_conf(rendered)) == list(runtime.PROGRAMS)


def test_programs_conf_rendered_for_another_run_dir_puts_everything_there(tmp_path: Path) -> None:
    run_dir = tmp_path / "elsewhere"
    parser = _conf(render_config(tmp_path, run_dir))
    values = [value for section in parser.sections() for value in parser[section].values()]

    assert parser["unix_http_server"]["file"] == f"{run_dir}/supervisor.sock"
    assert f'CHMGR_RUN_DIR="{run_dir}"' in parser["supervisord"]["environment"]
    assert parser["program:state"]["stdout_logfile"] == f"{run_dir}/logs/%(program_name)s.log"
    assert not [value for value in values if f"{ROOT}/run" in value]


def test_programs_cli_entry_point_resolves() -> None:
    module = importlib.import_module("coldharbour.cli")

    assert callable(module.main)


# --- README and docs/operations.md -----------------------------------------------------------------------------------


def test_operations_configuration_table_names_every_setting() -> None:
    text = OPERATIONS.read_text()
    names = [*config.ENV_NAMES.values(), "CHMGR_ACCOUNTS", "CHMGR_CONFIG"]
    per_account = [
        "ALPACA_API_KEY_<NAME>",
        "ALPACA_SECRET_KEY_<NAME>",
        "ALPACA_BASE_URL_<NAME>",
        "ENABLE_TRADE_STREAM_<NAME>",
    ]
    table_rows = [line for line in text.splitlines() if line.startswith("|")]

    missing = [name for name in names + per_account if not any(f"`{name}`" in row for row in table_rows)]

    assert missing == []


def test_readme_shows_the_exact_test_command_under_run_the_tests() -> None:
    text = README.read_text()
    section = text.split("## Run the tests", 1)[1].split("\n## ", 1)[0]

    assert f"```\n{TEST_COMMAND}\n```" in section or f"```sh\n{TEST_COMMAND}\n```" in section


def test_operations_chmgr_reference_names_every_command() -> None:
    text = OPERATIONS.read_text()

    for command in (
        "status",
        "start",
        "stop",
        "restart",
        "up",
        "down",
        "db init",
        "positions",
        "watch",
        "doctor",
        "config",
        "sim broker",
        "sim feed",
        "sim bot",
    ):
        assert f"chmgr {command}" in text, command

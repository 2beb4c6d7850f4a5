"""`chmgr` as a user runs it: a real process, real PostgreSQL, the fake broker, exit codes 0/1/2.

Every command runs as ``python -m coldharbour.cli`` (the same ``main`` as the ``chmgr`` script)
with an explicit environment, so exit codes and the one-line stderr are the real ones.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from coldharbour.cli.doctor import corporate_checks
from coldharbour.cli.status import SLEEPING, last_log_line, shown_state
from coldharbour.config import Dsn
from coldharbour.db import schema
from coldharbour.domain.schedule import Phase
from coldharbour.messages import Heartbeat
from coldharbour.runtime import PROGRAMS
from coldharbour.supervisor import ProcessInfo
from tests.fixtures.broker import FakeBroker
from tests.support import TEST_SECRETS, make_environ, make_settings, wait_for

CLI_TIMEOUT_S = 60
ROOT = Path(__file__).resolve().parent.parent


def chmgr(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = CLI_TIMEOUT_S, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``chmgr args…`` with only ``env`` (plus PATH/HOME) and return the finished process."""
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "PYTHONPATH") if key in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "coldharbour.cli", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def one_line(text: str) -> str:
    """Return ``text``'s only line (fails if there are several)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, found {len(lines)}: {text!r}"
    return lines[0]


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short, private run directory (unix socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="chc-", dir="/tmp"))
    path.chmod(0o700)
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if not child.is_dir() else child.rmdir()
    path.rmdir()


# --- usage and configuration errors -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("frobnicate",), ("restart",), ("status", "--no-such-option"), ("db", "migrate"), ("watch", "--count", "x")],
    ids=["unknown-command", "missing-argument", "unknown-option", "unknown-subcommand", "bad-value"],
)
def test_cli_usage_error_exits_2_with_one_line(args: tuple[str, ...]) -> None:
    result = chmgr(*args)

    assert result.returncode == 2
    assert one_line(result.stderr).startswith("chmgr: ")
    assert result.stdout == ""


def test_cli_unknown_program_exits_1_naming_the_known_ones() -> None:
    result = chmgr("restart", "tradez")

    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("chmgr: no such program 'tradez' (known: bus, state, ")
    assert all(name in line for name in PROGRAMS)


def test_cli_missing_dsn_exits_1_with_one_line() -> None:
    result = chmgr("config")

    assert result.returncode == 1
    assert one_line(result.stderr).startswith("chmgr: CHMGR_DSN: required")


def test_cli_bad_setting_exits_1_naming_the_variable(run_dir: Path) -> None:
    env = make_environ("postgresql://u@127.0.0.1:1/x", run_dir, FLUSH_INTERVAL_S="soon")

    result = chmgr("status", env=env)

    assert result.returncode == 1
    assert one_line(result.stderr) == "chmgr: FLUSH_INTERVAL_S: expected a number, found 'soon'"


def test_cli_status_without_supervisord_says_how_to_start_it(run_dir: Path) -> None:
    env = make_environ("postgresql://u@127.0.0.1:1/x", run_dir)

    result = chmgr("status", env=env)

    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"chmgr: supervisord is not running (no socket at {run_dir}/supervisor.sock): start it with `chmgr up`"
    )


def test_cli_default_run_dir_is_the_projects_run_from_any_directory(tmp_path: Path) -> None:
    """The same directory supervisord.conf uses (``%(here)s/run``), wherever `chmgr` runs."""
    env = make_environ("postgresql://u@127.0.0.1:1/x")
    del env["CHMGR_RUN_DIR"]

    result = chmgr("config", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"CHMGR_RUN_DIR={ROOT}/run\n" in result.stdout
    assert f"CHMGR_BUS_IN=ipc://{ROOT}/run/bus-in.sock\n" in result.stdout


def test_cli_up_write_conf_without_run_dir_is_the_projects_conf() -> None:
    env = make_environ("postgresql://u@127.0.0.1:1/x")
    del env["CHMGR_RUN_DIR"]

    result = chmgr("up", "--write-conf", env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{ROOT / 'supervisord.conf'}\n"


def test_cli_up_write_conf_renders_for_chmgr_run_dir_and_never_chmods_it(run_dir: Path) -> None:
    """CHMGR_RUN_DIR wins: supervisord gets a copy of the conf with every path (and the programs'
    CHMGR_RUN_DIR) in it. The directory exists with /tmp's mode: it is not ours to chmod."""
    run_dir.chmod(0o1777)
    env = make_environ("postgresql://u@127.0.0.1:1/x", run_dir)

    result = chmgr("up", "--write-conf", env=env)

    conf = run_dir / "supervisord.conf"
    text = conf.read_text()
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{conf}\n"
    assert f"file={run_dir}/supervisor.sock\n" in text
    assert f'environment=CHMGR_RUN_DIR="{run_dir}",PATH="{ROOT}/.venv/bin:' in text
    assert f"stdout_logfile={run_dir}/logs/%(program_name)s.log\n" in text
    assert "%(here)s" not in text
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o1777
    assert stat.S_IMODE((run_dir / "logs").stat().st_mode) == 0o700


def test_status_last_log_line_skips_blank_lines_and_reads_only_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "state.log"
    log.write_text("x" * 100_000 + "\nstate: configuration error: CHMGR_DSN: required, not set\n\n")

    assert last_log_line(str(log)) == "state: configuration error: CHMGR_DSN: required, not set"
    assert last_log_line(str(tmp_path / "missing.log")) is None


def test_cli_config_prints_settings_without_secrets(run_dir: Path) -> None:
    env = make_environ("postgresql://chmgr:hunter2-PASSWORD@127.0.0.1:1/x", run_dir)

    result = chmgr("config", env=env)

    assert result.returncode == 0
    assert "CHMGR_DSN=postgresql://chmgr:***@127.0.0.1:1/x" in result.stdout
    assert "FLUSH_INTERVAL_S=60.0" in result.stdout
    assert "account paper-1: slug=paper_1" in result.stdout
    for secret in ["hunter2-PASSWORD", *(value for pair in TEST_SECRETS.values() for value in pair)]:
        assert secret not in result.stdout + result.stderr


# --- database commands ------------------------------------------------------------------------


def test_cli_db_init_creates_schema_then_reports_current(pg_dsn: Dsn, run_dir: Path) -> None:
    env = make_environ(pg_dsn, run_dir)

    first = chmgr("db", "init", env=env)
    second = chmgr("db", "init", env=env)

    assert first.returncode == 0, first.stderr
    assert "applied shared v1" in first.stdout
    assert "applied account:paper_1 v1" in first.stdout
    settings = make_settings(pg_dsn, run_dir)
    with psycopg.connect(pg_dsn.reveal()) as conn:
        assert schema.schema_versions(conn, settings) == schema.latest_versions(settings)
    assert second.returncode == 0, second.stderr
    account = max(m.version for m in schema.ACCOUNT_MIGRATIONS)
    shared = max(m.version for m in schema.SHARED_MIGRATIONS)
    assert one_line(second.stdout).startswith(
        f"schema is current (shared v{shared}, account:demo v{account}, account:paper_1 v{account})"
    )


def test_cli_db_init_unreachable_database_exits_1_redacted(run_dir: Path) -> None:
    env = make_environ("postgresql://chmgr:hunter2-PASSWORD@127.0.0.1:1/x", run_dir)

    result = chmgr("db", "init", env=env)

    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("chmgr: cannot connect to postgresql://chmgr:***@127.0.0.1:1/x")
    assert "hunter2" not in line


def _insert_position(dsn: Dsn, symbol: str, qty: str, mkt_px: str) -> None:
    with psycopg.connect(dsn.reveal()) as conn:
        conn.execute(
            "INSERT INTO accounts.account_open_positions_demo (parent_id, symbol, side, qty, avg_fill, mkt_px) "
            "VALUES (%s, %s, 'long', %s, 100.00, %s)",
            (f"order-{symbol}", symbol, qty, mkt_px),
        )


def test_cli_positions_prints_each_account_table(migrated_dsn: Dsn, run_dir: Path) -> None:
    _insert_position(migrated_dsn, "AAPL", "12", "101.25")
    _insert_position(migrated_dsn, "MSFT", "3.5", "99.5")

    result = chmgr("positions", env=make_environ(migrated_dsn, run_dir))

    assert result.returncode == 0, result.stderr
    assert "demo (demo): 2 open" in result.stdout
    assert "paper-1 (paper_1): 0 open" in result.stdout
    aapl = next(line for line in result.stdout.splitlines() if "AAPL" in line)
    assert "long" in aapl
    assert "12" in aapl
    assert "101.25" in aapl
    assert any("MSFT" in line and "3.5" in line for line in result.stdout.splitlines())


def test_cli_positions_without_schema_says_run_db_init(pg_dsn: Dsn, run_dir: Path) -> None:
    result = chmgr("positions", env=make_environ(pg_dsn, run_dir))

    assert result.returncode == 1
    assert one_line(result.stderr).endswith("does not exist: run `chmgr db init`")


def test_cli_watch_prints_notifications(migrated_dsn: Dsn, run_dir: Path) -> None:
    env = make_environ(migrated_dsn, run_dir)
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "coldharbour.cli", "watch", "--count", "2", "--timeout-s", "30"],
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert "listening on pos_channel_demo" in watcher.stdout.readline()
        with psycopg.connect(migrated_dsn.reveal(), autocommit=True) as conn:
            conn.execute("SELECT pg_notify('closed_channel_paper_1', '{\"op\": \"insert\"}')")
            conn.execute("SELECT pg_notify('metrics_channel_demo', '{\"op\": \"update\"}')")
        out, err = watcher.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        watcher.kill() if watcher.poll() is None else None

    assert watcher.returncode == 0, err
    lines = out.strip().splitlines()
    assert lines[0].endswith('closed_channel_paper_1 {"op": "insert"}')
    assert lines[1].endswith('metrics_channel_demo {"op": "update"}')


# --- doctor -----------------------------------------------------------------------------------


def _verdicts(stdout: str) -> dict[str, str]:
    """Return {line: verdict} for doctor's output (every line must start with a verdict)."""
    found = {}
    for line in stdout.strip().splitlines():
        verdict, _, text = line.partition(" ")
        assert verdict in {"OK", "WARN", "FAIL"}, line
        found[text.strip()] = verdict
    return found


def _doctor_env(dsn: Dsn, run_dir: Path, broker: FakeBroker) -> dict[str, str]:
    return make_environ(
        dsn,
        run_dir,
        ALPACA_SECRET_KEY_DEMO="demo-secret",
        ALPACA_BASE_URL_DEMO=broker.base_url,
        ALPACA_BASE_URL_PAPER_1=broker.base_url,
        ZMQ_SIP_STREAM_ENDPOINT=f"ipc://{run_dir}/feed.sock",
    )


def test_cli_doctor_reports_each_precondition(migrated_dsn: Dsn, run_dir: Path, fake_broker: FakeBroker) -> None:
    env = _doctor_env(migrated_dsn, run_dir, fake_broker)
    feed = subprocess.Popen(
        [sys.executable, "-m", "coldharbour.sim.feed", "--endpoint", env["ZMQ_SIP_STREAM_ENDPOINT"], "--rate", "50",
         "--duration-s", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: (run_dir / "feed.sock").exists(), 30, what="the feed's socket")
        result = chmgr("doctor", env=env)
    finally:
        feed.terminate()
        feed.wait(30)

    verdicts = _verdicts(result.stdout)
    assert result.returncode == 1  # paper-1's credentials are not the broker's
    assert any(t.startswith("database reachable at postgresql://") for t, v in verdicts.items() if v == "OK")
    assert any(text.startswith("schema current") for text, v in verdicts.items() if v == "OK")
    assert any(t.startswith("account demo: credentials accepted") for t, v in verdicts.items() if v == "OK")
    rejected = [t for t, v in verdicts.items() if v == "FAIL"]
    assert rejected == [
        f"account paper-1: credentials rejected by {fake_broker.base_url} (HTTP 403): "
        "check ALPACA_API_KEY_PAPER_1 and ALPACA_SECRET_KEY_PAPER_1"
    ]
    assert any(t.startswith("price feed at ipc://") for t, v in verdicts.items() if v == "OK")
    assert any(t == f"run dir {run_dir} writable, mode 0700" for t, v in verdicts.items() if v == "OK")
    assert any(t.startswith("supervisord is not running") for t, v in verdicts.items() if v == "WARN")


def test_doctor_lists_unclassified_activity_codes_per_account(migrated_dsn: Dsn) -> None:
    """docs/spec.md §8: a code outside the catalogue is stored ``unclassified`` and shown, WARN."""
    from coldharbour.cli.doctor import check_unclassified

    with psycopg.connect(migrated_dsn.reveal(), autocommit=True) as conn:
        for flow_id, code, category in (("20240301000000000::a", "ZZNEW", "unclassified"),
                                        ("20240302000000000::b", "ZZNEW", "unclassified"),
                                        ("20240302000000000::c", "DIV", "income")):
            conn.execute("INSERT INTO accounts.cash_flows_demo (id, ts, amount, type, category) "
                         "VALUES (%s, now(), 1, %s, %s)", (flow_id, code, category))

    checks = list(check_unclassified(make_settings(migrated_dsn)))

    assert [c.verdict for c in checks] == ["WARN", "OK"]
    assert checks[0].line.startswith("account demo: unclassified activity codes 'ZZNEW' ×2: kept in returns")
    assert checks[1].line == "account paper-1: every activity code is classified"


def test_cli_doctor_reports_wrong_dsn_missing_feed_and_open_run_dir(run_dir: Path, fake_broker: FakeBroker) -> None:
    env = _doctor_env(Dsn("postgresql://chmgr:hunter2-PASSWORD@127.0.0.1:1/x"), run_dir, fake_broker)
    run_dir.chmod(0o755)

    result = chmgr("doctor", env=env)

    verdicts = _verdicts(result.stdout)
    assert result.returncode == 1
    failed = [t for t, v in verdicts.items() if v == "FAIL"]
    assert failed[0].startswith("cannot connect to postgresql://chmgr:***@127.0.0.1:1/x")
    assert failed[0].endswith("check CHMGR_DSN and that PostgreSQL is running")
    assert any(t.startswith(f"run dir {run_dir} has mode 0755") and t.endswith(f"chmod 700 {run_dir}") for t in failed)
    assert any(t.startswith("no message from the price feed") for t, v in verdicts.items() if v == "WARN")
    assert "hunter2" not in result.stdout + result.stderr
    for secret in ("demo-secret", *TEST_SECRETS["paper-1"]):
        assert secret not in result.stdout + result.stderr


# --- status: what a parked session program looks like -----------------------------------------


def _process(name: str, state: str) -> ProcessInfo:
    return ProcessInfo(name, "session", state, None, None, "", f"/run/logs/{name}.log")


@pytest.mark.parametrize(
    ("state", "scheduler", "sleep_disabled", "phase", "shown"),
    [
        ("STOPPED", "RUNNING", "0", Phase.CLOSED, SLEEPING),
        ("STOPPED", "RUNNING", "0", None, SLEEPING),  # schedule unreadable: trust the scheduler
        ("STOPPED", "RUNNING", "0", Phase.OPEN, "STOPPED"),  # stopped by hand while the market is open
        ("STOPPED", "RUNNING", "1", Phase.CLOSED, "STOPPED"),  # DISABLE_SESSION_SLEEP: nobody parks it
        ("STOPPED", "FATAL", "0", Phase.CLOSED, "STOPPED"),  # no scheduler to have parked it
        ("FATAL", "RUNNING", "0", Phase.CLOSED, "FATAL"),
        ("RUNNING", "RUNNING", "0", Phase.CLOSED, "RUNNING"),
    ],
)
def test_status_session_program_shown_sleeping_only_when_parked_by_schedule(
    state: str, scheduler: str, sleep_disabled: str, phase: Phase | None, shown: str
) -> None:
    settings = make_settings("postgresql://u@127.0.0.1:1/x", DISABLE_SESSION_SLEEP=sleep_disabled)
    states = {"trades": state, "scheduler": scheduler}

    result = shown_state(_process("trades", state), states, settings, phase)

    assert result == shown


def test_status_non_session_program_is_never_sleeping() -> None:
    settings = make_settings("postgresql://u@127.0.0.1:1/x")

    result = shown_state(
        _process("state", "STOPPED"), {"state": "STOPPED", "scheduler": "RUNNING"}, settings, Phase.CLOSED
    )

    assert result == "STOPPED"


def test_cli_sim_passes_arguments_through() -> None:
    helped = chmgr("sim", "feed", "--help")
    refused = chmgr("sim", "broker", "--port", "not-a-port")

    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: python -m coldharbour.sim.feed")
    assert refused.returncode == 2
    assert "--port: invalid int value: 'not-a-port'" in refused.stderr


# --- price source (PRICE_SOURCE=alpaca): doctor's handshake, status's line ----------------------


def test_doctor_data_stream_accepts_broker_keys_and_refuses_wrong_ones(run_dir: Path, fake_broker: FakeBroker) -> None:
    from coldharbour.cli.doctor import check_data_stream

    url = f"ws://127.0.0.1:{fake_broker.port}/v2/iex"
    good = make_settings(
        "postgresql://chmgr@127.0.0.1:1/unused",
        run_dir,
        ("demo",),
        ALPACA_API_KEY_DEMO="demo-key",
        ALPACA_SECRET_KEY_DEMO="demo-secret",
    )
    bad = make_settings(
        "postgresql://chmgr@127.0.0.1:1/unused",
        run_dir,
        ("demo",),
        ALPACA_API_KEY_DEMO="demo-key",
        ALPACA_SECRET_KEY_DEMO="nope-9876",
    )

    accepted = check_data_stream(good.accounts[0], url)
    refused = check_data_stream(bad.accounts[0], url)
    unreachable = check_data_stream(good.accounts[0], "ws://127.0.0.1:9/v2/iex")

    assert accepted.verdict == "OK"
    assert "accepts account demo's keys" in accepted.line
    assert refused.verdict == "FAIL"
    assert "(402 auth failed)" in refused.line
    assert "nope-9876" not in refused.line
    assert unreachable.verdict == "FAIL"
    assert unreachable.line.endswith("check ALPACA_DATA_STREAM_URL")


def test_status_prices_line_shows_source_subscriptions_and_newest_tick_age() -> None:
    from coldharbour.cli.status import describe_prices
    from coldharbour.messages import Heartbeat

    now_ns = 1_700_000_000 * 10**9
    beat = Heartbeat(
        program="prices", pid=1, uptime_s=1.0,
        counters={
            "data_stream_subscribed": 7, "data_stream_unpriced": 2, "newest_tick_unix_ms": now_ns // 10**6 - 2500,
        },
        details={"price_source": "alpaca", "subscribed": "AAPL,AMD,MSFT,NVDA,TSLA"},
    )  # fmt: skip
    quiet = Heartbeat(program="prices", pid=1, uptime_s=1.0, details={"price_source": "zmq"})

    assert describe_prices(beat, now_ns) == (
        "source alpaca · subscribed 7 (AAPL, AMD, MSFT, NVDA, TSLA, …) · unpriced 2 · newest tick 2.5 s ago"
    )
    assert describe_prices(quiet, now_ns) == "source zmq · no tick yet"


def test_status_budget_lines_show_each_keys_requests_of_the_last_minute() -> None:
    from coldharbour.cli.status import describe_budgets
    from coldharbour.messages import Heartbeat

    snapshot = Heartbeat(
        program="snapshot", pid=1, uptime_s=1.0,
        counters={"rest_last_min.demo": 12, "rest_budget.demo": 40, "rest_limited.demo": 1, "snapshots": 3},
    )  # fmt: skip
    prices = Heartbeat(
        program="prices", pid=2, uptime_s=1.0,
        counters={"data_last_min.demo": 20, "data_budget.demo": 40, "data_limited.demo": 0},
    )  # fmt: skip

    assert describe_budgets({"snapshot": snapshot, "prices": prices}) == [
        "key of demo: trading 12/40 a minute, 1 × 429 · market data 20/40 a minute, 0 × 429"
    ]
    assert describe_budgets({}) == []
    from coldharbour.cli.status import key_requests

    assert key_requests(snapshot) == "demo 12/40"
    assert key_requests(prices) == "demo 20/40 data"
    assert key_requests(None) == "—"


def test_cli_positions_shows_fill_times_in_new_york(migrated_dsn: Dsn, run_dir: Path) -> None:
    with psycopg.connect(migrated_dsn.reveal()) as conn:
        conn.execute(
            "INSERT INTO accounts.account_open_positions_demo"
            " (parent_id, symbol, side, qty, avg_fill, mkt_px, filled_at)"
            " VALUES ('o-1', 'AAPL', 'long', 1, 100, 100, '2026-07-01 13:30:05+00')"
        )

    result = chmgr("positions", env=make_environ(migrated_dsn, run_dir))

    assert result.returncode == 0, result.stderr
    assert "filled at (New York)" in result.stdout
    assert "2026-07-01 09:30:05" in result.stdout  # EDT, UTC-4


def test_cli_positions_escapes_control_characters_of_a_symbol(migrated_dsn: Dsn, run_dir: Path) -> None:
    _insert_position(migrated_dsn, "EVIL\x1b]0;pwned\x07[red]X", "1", "1.00")

    result = chmgr("positions", env=make_environ(migrated_dsn, run_dir))

    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout
    assert "EVIL\\x1b]0;pwned\\x07[red]X" in result.stdout  # shown, and "[red]" not read as markup


@pytest.mark.parametrize(("unknown", "verdict"), [(1, "WARN"), (0, "OK")])
def test_doctor_warns_about_positions_state_could_not_read(unknown: int, verdict: str) -> None:
    """``state`` counts, per account, the positions the broker lists that it could not read (kept, unknown)."""
    import shutil
    import threading

    from coldharbour.cli.doctor import check_unknown_positions
    from coldharbour.messages import Heartbeat, topic_heartbeat
    from tests.fixtures.bus import InprocBus

    directory = Path(tempfile.mkdtemp(prefix="chm-", dir="/tmp"))  # ipc:// paths are short
    bus = InprocBus("ipc", directory)
    settings = make_settings("postgresql://unused@127.0.0.1:9/none", directory / "run",
                             CHMGR_BUS_IN=bus.bus_in, CHMGR_BUS_OUT=bus.bus_out)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.05):
            bus.inject(topic_heartbeat("state"), Heartbeat(program="state", pid=1, uptime_s=1.0,
                                                           counters={"positions_unknown_demo": unknown}))

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        checks = list(check_unknown_positions(settings, listen_s=5.0))
    finally:
        stop.set()
        beating.join(5)
        bus.close()
        shutil.rmtree(directory, ignore_errors=True)

    assert [c.verdict for c in checks] == [verdict]
    assert ("demo: 1" in checks[0].line) == bool(unknown)


@pytest.mark.parametrize("pct", ["0", "100", "abc", "150", "NaN"])
def test_cli_corporate_basis_refuses_a_percentage_outside_0_100_with_exit_2(pct: str, migrated_dsn: Dsn,
                                                                            run_dir: Path) -> None:
    result = chmgr("corporate", "basis", "demo", "some-id", pct, env=make_environ(migrated_dsn, run_dir))

    assert result.returncode == 2
    assert "PARENT_PCT must be" in result.stderr


def test_cli_corporate_basis_exits_1_when_state_does_not_apply_it(migrated_dsn: Dsn, run_dir: Path) -> None:
    """No ``state`` listens: the stored allocation never becomes the one asked, one line, exit 1."""
    result = chmgr("corporate", "basis", "demo", "no-such-spinoff", "60", "--wait-s", "1",
                   env=make_environ(migrated_dsn, run_dir))

    assert result.returncode == 1
    assert one_line(result.stderr).startswith("chmgr: state did not apply the basis of no-such-spinoff within 1 s")


def test_doctor_names_the_corporate_actions_held_and_those_whose_legs_disagree() -> None:
    """``snapshot``'s heartbeat details (docs/corporate-actions.md "Rates against quantities"):
    a disagreement with the announced rates and the pending symbols are each a WARN line."""
    details = {"corporate_mismatch_demo": "a1: split: the legs state 30 AAPL for 10 held, announcement x implies 20",
               "corporate_held_demo": "pending: AAPL"}  # fmt: skip
    beat = Heartbeat(src="snapshot", seq=1, ts=1, program="snapshot", pid=1, uptime_s=1.0, details=details)
    quiet = Heartbeat(src="state", seq=1, ts=1, program="state", pid=2, uptime_s=1.0)

    lines = [(c.verdict, c.line) for c in corporate_checks({"snapshot": beat, "state": quiet})]

    assert lines == [
        ("WARN", "account demo: corporate actions held (pending: AAPL)"),
        ("WARN", "account demo: corporate actions held whole, their legs disagree with the announced rates "
                 "(a1: split: the legs state 30 AAPL for 10 held, announcement x implies 20)"),
    ]  # fmt: skip
    assert [c.verdict for c in corporate_checks({"state": quiet})] == ["OK"]

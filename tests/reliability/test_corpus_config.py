"""Bad-input corpus for configuration: every bad value is one ConfigError line naming its variable."""

from __future__ import annotations

import pytest

from coldharbour.config import ENV_NAMES, load_settings
from coldharbour.errors import ConfigError

BASE = {"CHMGR_DSN": "postgresql://u:pw-CORPUS-1@127.0.0.1/db"}
HOSTILE_NAMES = [
    "x'; DROP TABLE accounts.latest_prices; --", 'x"; DROP SCHEMA accounts CASCADE; --', "a;b", "a\\b",
    "name -- comment", "a/*b*/c", "tab\tname", "new\nline", "nul\x00byte", "`backtick`", "'", '"',
    "robert'); DROP TABLE students;--", "x' OR '1'='1", "\x7f", "a" * 65,
]  # fmt: skip
# Fields whose bad values we can state generically, by type.
NUMERIC_BAD = ["", "abc", "1,5", "0x10", "--1", "1e", "nan", "-inf", "inf", "1e400", "-5", "🙂", "None", "[1]"]
BOOL_BAD = ["maybe", "2", "truee", "nein", "🙂", "-1"]
TIME_BAD = ["4", "24:00", "4:00", "04:60", "noon", "04-00", "", "04:00:00"]


NUMERIC = (
    "FLUSH_INTERVAL_S", "UI_PUSH_PCT_THRESHOLD", "UI_HEARTBEAT_S", "SNAPSHOT_SEC", "CLOSED_SYNC_SEC",
    "BACKFILL_DAYS", "CASH_FLOWS_INTERVAL_S", "EQUITY_UPDATE_INTERVAL_S", "METRICS_INTERVAL_S",
    "MARKET_REFRESH_SEC", "SCHEDULE_FORWARD_DAYS", "SCHEDULE_RETENTION_DAYS", "MIN_STOP_GAP",
    "ALPACA_GTC_DAYS", "EQUITY_INIT_CASH",
)  # fmt: skip
BOOLEAN = ("DISABLE_SESSION_SLEEP", "ENABLE_TRADE_STREAM")
CLOCK = ("MARKET_PRE_OPEN_TIME", "MARKET_POST_CLOSE_TIME")


def _cases() -> list[tuple[str, str]]:
    cases = [(env, value) for env in NUMERIC for value in NUMERIC_BAD if value != ""]
    cases += [(env, value) for env in BOOLEAN for value in BOOL_BAD]
    cases += [(env, value) for env in CLOCK for value in TIME_BAD]
    for template_env in ("TABLE_ACCOUNT_POSITIONS", "TABLE_ACCOUNT_CLOSED", "POS_CHANNEL", "METRICS_CHANNEL"):
        bad_templates = ("no_slug", "{slug}{slug}", "Bad-{slug}", "x;{slug}", "{other}_{slug}", "")
        cases += [(template_env, v) for v in bad_templates]
    cases += [("ACCOUNT_SCHEMA", v) for v in ("Accounts", "a-b", "a;b", "1abc", "a" * 64, "")]
    return cases


CASES = _cases()


def test_corpus_covers_every_numeric_and_boolean_knob() -> None:
    covered = {env for env, _ in CASES}
    assert set(NUMERIC + BOOLEAN + CLOCK) <= set(ENV_NAMES.values())

    assert {
        "FLUSH_INTERVAL_S", "UI_PUSH_PCT_THRESHOLD", "BACKFILL_DAYS", "DISABLE_SESSION_SLEEP", "MARKET_PRE_OPEN_TIME",
        "MIN_STOP_GAP", "EQUITY_INIT_CASH", "SCHEDULE_FORWARD_DAYS",
    } <= covered
    assert len(CASES) + len(HOSTILE_NAMES) >= 250


@pytest.mark.parametrize(("env", "value"), CASES)
def test_bad_knob_value_is_rejected_naming_the_variable(env: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, env: value})

    text = str(caught.value)
    assert env in text
    assert "\n" not in text
    assert "pw-CORPUS-1" not in text


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_account_name_is_rejected_at_load(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, "CHMGR_ACCOUNTS": name, "ALPACA_API_KEY_X": "k", "ALPACA_SECRET_KEY_X": "s"})

    assert "\n" not in str(caught.value)


HUNTER_DSNS = [
    "postgresql://chmgr:Hunter#2pw@127.0.0.1:1/x",
    "postgresql://chmgr:Hunter%232pw@127.0.0.1:1/x",
    "postgresql://chmgr@127.0.0.1:1/x?password=Hunter%232pw&sslmode=disable",
    "host=127.0.0.1 port=1 user=chmgr password='Hunter#2pw' dbname=x",
    "host=127.0.0.1 port=1 user=chmgr password=Hunter#2pw sslpassword=Hunter#2pw dbname=x",
]


@pytest.mark.parametrize("dsn", HUNTER_DSNS)
def test_chmgr_config_and_doctor_print_no_part_of_the_password(dsn: str, tmp_path) -> None:
    from tests.test_cli import chmgr

    env = {"CHMGR_DSN": dsn, "CHMGR_READ_DSN": dsn.replace("chmgr", "reader", 1), "CHMGR_RUN_DIR": str(tmp_path)}
    shown = ""
    for command in (["config"], ["doctor"]):
        result = chmgr(*command, env=env)
        shown += result.stdout + result.stderr

    assert "CHMGR_DSN=" in shown
    for part in ("Hunter", "2pw", "%23"):
        assert part not in shown

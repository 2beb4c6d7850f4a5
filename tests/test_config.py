"""Configuration: env/TOML loading, slugs, every rejection is one readable line, secrets never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from coldharbour.config import (
    ENV_NAMES,
    PROJECT_ROOT,
    Secret,
    all_secrets,
    describe,
    load_settings,
    redact_dsn,
    slugify,
)
from coldharbour.errors import ConfigError

DSN = "postgresql://chmgr:pw-Sekr1t-9@127.0.0.1:5432/chmgr"
BASE = {
    "CHMGR_DSN": DSN,
    "CHMGR_ACCOUNTS": "live,paper-1",
    "ALPACA_API_KEY_LIVE": "AK-LIVE-123456",
    "ALPACA_SECRET_KEY_LIVE": "SK-LIVE-abcdef",
    "ALPACA_API_KEY_PAPER_1": "AK-PAPER-7890",
    "ALPACA_SECRET_KEY_PAPER_1": "SK-PAPER-ghijk",
}


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("live", "live"),
        ("Paper-1", "paper_1"),
        ("  My  Account!! ", "my_account"),
        ("___", "dest"),
        ("", "dest"),
        ("2024 fund", "d_2024_fund"),
        ("a--b..c", "a_b_c"),
        ("Ünïcode", "n_code"),
    ],
)
def test_slugify_follows_spec_rule(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_load_defaults_and_accounts() -> None:
    settings = load_settings(BASE)

    assert [a.slug for a in settings.accounts] == ["live", "paper_1"]
    assert settings.flush_interval_s == 60.0
    assert settings.ui_push_pct_threshold == 0.25
    assert settings.trade_conditions_exclude == ("D", "M", "E")
    assert settings.run_dir == str(PROJECT_ROOT / "run")  # supervisord.conf's %(here)s/run
    assert settings.bus_in == f"ipc://{PROJECT_ROOT}/run/bus-in.sock"
    assert settings.accounts[0].base_url == "https://paper-api.alpaca.markets"
    assert settings.accounts[1].stream_url == "wss://paper-api.alpaca.markets/stream"


def test_every_knob_is_read_from_its_env_var() -> None:
    overrides = {
        "FLUSH_INTERVAL_S": "2", "UI_PUSH_PCT_THRESHOLD": "0.5", "UI_HEARTBEAT_S": "3", "SNAPSHOT_SEC": "4",
        "CLOSED_SYNC_SEC": "5", "BACKFILL_DAYS": "6", "CASH_FLOWS_INTERVAL_S": "7", "EQUITY_UPDATE_INTERVAL_S": "8",
        "METRICS_INTERVAL_S": "9", "MARKET_PRE_OPEN_TIME": "05:30", "MARKET_POST_CLOSE_TIME": "19:00",
        "MARKET_REFRESH_SEC": "10", "SCHEDULE_FORWARD_DAYS": "11", "SCHEDULE_RETENTION_DAYS": "12",
        "DISABLE_SESSION_SLEEP": "1", "ENABLE_TRADE_STREAM": "false", "TRADE_CONDITIONS_EXCLUDE": "d, z",
        "MIN_STOP_GAP": "0.05", "ALPACA_GTC_DAYS": "30", "CASH_FLOW_TYPES": "CSD,DIV", "EQUITY_INIT_CASH": "5000",
        "LOG_LEVEL": "DEBUG", "ACCOUNT_SCHEMA": "acc", "ZMQ_SIP_STREAM_ENDPOINT": "tcp://127.0.0.1:6000",
        "CHMGR_RUN_DIR": "/tmp/x", "CHMGR_BUS_IN": "ipc:///tmp/x/in", "CHMGR_BUS_OUT": "ipc:///tmp/x/out",
    }  # fmt: skip

    settings = load_settings({**BASE, **overrides})

    assert (settings.flush_interval_s, settings.ui_push_pct_threshold, settings.backfill_days) == (2.0, 0.5, 6)
    assert settings.market_pre_open_time == "05:30"
    assert settings.disable_session_sleep is True
    assert all(not a.enable_trade_stream for a in settings.accounts)
    assert settings.trade_conditions_exclude == ("D", "Z")
    assert settings.cash_flow_types == ("CSD", "DIV")
    assert settings.equity_init_cash == 5000.0
    assert (settings.account_schema, settings.run_dir, settings.bus_in) == ("acc", "/tmp/x", "ipc:///tmp/x/in")
    assert set(overrides) <= set(ENV_NAMES.values()) | {"CHMGR_RUN_DIR"}


def test_toml_file_with_env_on_top(tmp_path: Path) -> None:
    toml = tmp_path / "chmgr.toml"
    toml.write_text(
        'CHMGR_DSN = "postgresql://u@h/db"\nflush_interval_s = 7\nSNAPSHOT_SEC = 30\n'
        '[[accounts]]\nname = "fund-a"\napi_key = "AK-TOML-1"\nsecret_key = "SK-TOML-1"\n'
        'base_url = "http://127.0.0.1:8765"\nenable_trade_stream = false\n'
    )

    settings = load_settings({"SNAPSHOT_SEC": "45"}, toml)

    assert settings.flush_interval_s == 7.0
    assert settings.snapshot_sec == 45.0
    assert [(a.slug, a.base_url, a.enable_trade_stream) for a in settings.accounts] == [
        ("fund_a", "http://127.0.0.1:8765", False)
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CHMGR_DSN": ""}, "CHMGR_DSN: required, not set"),
        ({"FLUSH_INTERVAL_S": "soon"}, "FLUSH_INTERVAL_S: expected a number, found 'soon'"),
        ({"FLUSH_INTERVAL_S": "-1"}, "FLUSH_INTERVAL_S: expected a number > 0"),
        ({"UI_PUSH_PCT_THRESHOLD": "inf"}, "UI_PUSH_PCT_THRESHOLD: expected a number <= 100"),
        ({"UI_PUSH_PCT_THRESHOLD": "nan"}, "UI_PUSH_PCT_THRESHOLD: expected a number >= 0"),
        ({"BACKFILL_DAYS": "1.5"}, "BACKFILL_DAYS: expected a whole number, found '1.5'"),
        ({"MARKET_PRE_OPEN_TIME": "4am"}, "MARKET_PRE_OPEN_TIME: expected a time of day HH:MM, found '4am'"),
        ({"DISABLE_SESSION_SLEEP": "perhaps"}, "DISABLE_SESSION_SLEEP: expected a boolean"),
        ({"ENABLE_TRADE_STREAM_LIVE": "sometimes"}, "ENABLE_TRADE_STREAM_LIVE: expected a boolean"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: expected a log level"),
        ({"ACCOUNT_SCHEMA": "Accounts; DROP"}, "ACCOUNT_SCHEMA: expected a lower-case identifier"),
        ({"TABLE_ACCOUNT_POSITIONS": "positions"}, "TABLE_ACCOUNT_POSITIONS: expected a template containing {slug}"),
        ({"ALPACA_BASE_URL_LIVE": "ftp://x"}, "ALPACA_BASE_URL_LIVE: expected an http(s) origin"),
        ({"CHMGR_ACCOUNTS": "live,LIVE"}, "both have slug 'live'"),
        ({"CHMGR_ACCOUNTS": "x'; DROP TABLE t; --"}, "account name may not contain quotes"),
        ({"CHMGR_ACCOUNTS": 'a"b'}, "account name may not contain quotes"),
        ({"CHMGR_ACCOUNTS": "a" * 50, "ALPACA_API_KEY_" + "A" * 50: "k", "ALPACA_SECRET_KEY_" + "A" * 50: "s"},
         "is 73 bytes, PostgreSQL allows 63"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, **env})

    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert "pw-Sekr1t-9" not in text


def test_unknown_toml_key_is_rejected(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('CHMGR_DSN = "postgresql://u@h/db"\nFLUSH_INTERVAL = 3\n')

    with pytest.raises(ConfigError, match="unknown key 'FLUSH_INTERVAL'"):
        load_settings({}, toml)


def test_missing_toml_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CHMGR_CONFIG: file not found"):
        load_settings({}, tmp_path / "nope.toml")


def test_missing_credential_disables_only_that_account() -> None:
    env = {**BASE, "CHMGR_ACCOUNTS": "live,paper-1,broken"}

    settings = load_settings(env)

    assert [a.name for a in settings.accounts] == ["live", "paper-1"]
    assert settings.disabled_accounts == (
        ("broken", "ALPACA_API_KEY_BROKEN and ALPACA_SECRET_KEY_BROKEN not set"),
    )


def test_secrets_never_print() -> None:
    settings = load_settings(BASE)
    secrets = ["pw-Sekr1t-9", "AK-LIVE-123456", "SK-LIVE-abcdef", "AK-PAPER-7890", "SK-PAPER-ghijk"]

    shown = " ".join(
        [repr(settings), str(settings), str(describe(settings)), repr(settings.accounts), str(settings.dsn)]
    )

    assert not [s for s in secrets if s in shown]
    assert "postgresql://chmgr:***@127.0.0.1:5432/chmgr" in shown
    assert sorted(all_secrets(settings)) == sorted(secrets)
    assert Secret("x").reveal() == "x"


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("host=h user=u password=p dbname=d", "user=u password=*** dbname=d host=h"),
        ("host=h password='a b c' dbname=d", "password=*** dbname=d host=h"),
        ("postgresql://u@h/db?password=p&sslmode=disable", "postgresql://u:***@h/db?sslmode=disable"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:Hunter#2pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:Hun?ter@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40x@h/db", "postgresql://u:***@h/db"),
        ("host=h user=u sslpassword=Hunter#2pw dbname=d", "user=u dbname=d host=h sslpassword=***"),
        ("not a dsn Hunter#2pw", "<a DSN libpq cannot parse>"),
    ],
)
def test_redact_dsn(dsn: str, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted


@pytest.mark.parametrize(
    ("environ", "source"),
    [
        ({}, "alpaca"),
        ({"ZMQ_SIP_STREAM_ENDPOINT": "tcp://127.0.0.1:6000"}, "zmq"),
        ({"ZMQ_SIP_STREAM_ENDPOINT": "tcp://127.0.0.1:6000", "PRICE_SOURCE": "alpaca"}, "alpaca"),
        ({"PRICE_SOURCE": "ZMQ"}, "zmq"),
        ({"PRICE_SOURCE": ""}, "alpaca"),
    ],
)
def test_price_source_defaults_to_zmq_only_when_the_feed_endpoint_is_set(environ: dict[str, str], source: str) -> None:
    settings = load_settings({"CHMGR_DSN": "postgresql://u@h/db", **environ})

    assert settings.price_source == source
    assert settings.alpaca_data_stream_url == "wss://stream.data.alpaca.markets/v2/iex"
    assert settings.alpaca_data_max_symbols == 30


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PRICE_SOURCE", "kafka",
         "PRICE_SOURCE: expected text matching regex '^(zmq|alpaca|alpaca-stream)$', found 'kafka'"),
        ("ALPACA_DATA_STREAM_URL", "https://x", "ALPACA_DATA_STREAM_URL: expected text matching regex"),
        ("ALPACA_DATA_MAX_SYMBOLS", "0", "ALPACA_DATA_MAX_SYMBOLS: expected a whole number >= 1, found '0'"),
    ],
)
def test_price_source_settings_reject_bad_values_in_one_line(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"CHMGR_DSN": "postgresql://u@h/db", name: value})

    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("names", ["i,ı", "ss,ß", "Straße,STRASSE"])
def test_account_names_that_fold_to_one_credential_name_are_one_line_errors(names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"CHMGR_DSN": DSN, "CHMGR_ACCOUNTS": names})

    assert "map to one credential name" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_non_utf8_toml_is_one_line_error(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_bytes(b'FLUSH_INTERVAL_S = 5\nLOG_LEVEL = "\xff\xfe"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings({"CHMGR_DSN": DSN}, toml)

    assert str(caught.value) == f"CHMGR_CONFIG: {toml} is not UTF-8 (byte 34)"


def test_deeply_nested_toml_is_one_line_error(tmp_path: Path) -> None:
    toml = tmp_path / "deep.toml"
    toml.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")

    with pytest.raises(ConfigError) as caught:
        load_settings({"CHMGR_DSN": DSN}, toml)

    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("CHMGR_CONFIG:")


def test_dsn_as_a_toml_table_is_used_and_never_printed(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[CHMGR_DSN]\nhost = "127.0.0.1"\nuser = "chmgr"\npassword = "Hunter#2pw"\ndbname = "chmgr"\n')

    settings = load_settings({}, toml)

    assert "Hunter#2pw" in settings.dsn.reveal()
    shown = " ".join([str(settings.dsn), repr(settings.dsn), str(describe(settings))])
    assert "Hunter" not in shown
    assert "2pw" not in shown
    assert "password=***" in shown
    assert "Hunter#2pw" in all_secrets(settings)


def test_unparseable_dsn_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"CHMGR_DSN": "hostt=h password=Hunter#2pw"})

    assert "Hunter" not in str(caught.value)
    assert str(caught.value).startswith("CHMGR_DSN: not a PostgreSQL DSN")


def test_read_dsn_is_optional_and_secret() -> None:
    plain = load_settings(BASE)
    reader = load_settings({**BASE, "CHMGR_READ_DSN": "postgresql://chmgr_reader:Rd-Hunter#2pw@127.0.0.1/chmgr"})

    assert plain.read_dsn is None
    assert plain.reader_dsn is plain.dsn
    assert reader.reader_dsn.reveal().startswith("postgresql://chmgr_reader:")
    assert "Rd-Hunter" not in str(describe(reader))
    assert "Rd-Hunter#2pw" in all_secrets(reader)


def test_guest_settings_budget_data_host_and_proxy_bind() -> None:
    from coldharbour.config import load_settings
    from coldharbour.errors import ConfigError

    base = {"CHMGR_DSN": "postgresql://chmgr@127.0.0.1:5432/chmgr"}
    default = load_settings(base)
    assert (default.alpaca_rest_budget_per_min, default.alpaca_data_budget_per_min) == (40, 40)
    assert (default.alpaca_data_url, default.data_proxy_bind, default.price_poll_s) == ("", "", 3.0)
    chosen = load_settings({**base, "ALPACA_REST_BUDGET_PER_MIN": "20", "ALPACA_DATA_URL": "https://data.example",
                            "CHMGR_DATA_PROXY_BIND": "127.0.0.1:8766", "PRICE_SOURCE": "alpaca-stream"})  # fmt: skip
    assert (chosen.alpaca_rest_budget_per_min, chosen.alpaca_data_url) == (20, "https://data.example")
    assert chosen.data_proxy_bind == "127.0.0.1:8766"
    for name, value in (("ALPACA_REST_BUDGET_PER_MIN", "0"), ("CHMGR_DATA_PROXY_BIND", "anywhere"),
                        ("ALPACA_DATA_URL", "ftp://x")):  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            load_settings({**base, name: value})

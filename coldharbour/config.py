"""Settings: environment + optional TOML, validated into frozen msgspec Structs.

``load_settings(environ, toml_path)`` is a pure function of its inputs: it reads the TOML file
(if any), lays the environment over it, converts everything into ``Settings`` and raises
``ConfigError`` with one line naming the variable, what was expected and what was found.
Only ``runtime.py`` and ``cli.py`` read ``os.environ``; everything else is handed settings.

Secrets (API keys, secret keys, the DSN password) are held in ``Secret``/``Dsn`` values whose
``repr`` and ``str`` never show them. A DSN is shown by *parsing* it the way libpq does
(``psycopg.conninfo``) and printing it back without ``password``/``sslpassword``, so no quoting
or special character (``#``, ``?``, ``@``) can leak part of a password; a DSN libpq cannot parse
is never printed at all.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import quote

import msgspec
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from coldharbour.errors import ConfigError

# The project root (where supervisord.conf lives); its run/ is the default run directory, the
# same one supervisord.conf's ``%(here)s/run`` names, so `chmgr` finds it from any directory.
PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR: Final = str(PROJECT_ROOT / "run")
LOGS_DIR_NAME: Final = "logs"
PRIVATE_DIR_MODE: Final = 0o700


class Secret:
    """A string that never prints: ``repr``/``str`` give ``***``; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value (only for handing it to a client library)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


SECRET_DSN_KEYS: Final = frozenset({"password", "sslpassword"})
_URL_SCHEME = re.compile(r"^(postgres|postgresql)://", re.I)
UNPARSEABLE_DSN: Final = "<a DSN libpq cannot parse>"


def _dsn_parts(dsn: str) -> dict[str, str] | None:
    try:
        return {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    except Exception:  # psycopg.ProgrammingError, or anything libpq refuses: never shown
        return None


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` as libpq reads it, with ``password``/``sslpassword`` shown as ``***``.

    A URL stays a URL (``postgresql://u:***@h:5432/db?sslmode=require``), a key=value DSN stays
    key=value; a DSN libpq cannot parse is replaced whole (it could be anything).
    """
    parts = _dsn_parts(dsn)
    if parts is None:
        return UNPARSEABLE_DSN
    shown = {key: ("***" if key in SECRET_DSN_KEYS else value) for key, value in parts.items()}
    if not _URL_SCHEME.match(dsn.strip()):
        return " ".join(f"{key}={_kv_value(value)}" for key, value in shown.items())
    user = shown.pop("user", "")
    password = shown.pop("password", None)
    host, port, dbname = shown.pop("host", ""), shown.pop("port", ""), shown.pop("dbname", "")
    auth = quote(user, safe="") + (":***" if password else "") + "@" if user or password else ""
    location = quote(host, safe=",[]:") + (":" + quote(port, safe=",") if port else "")
    query = "&".join(f"{quote(key, safe='')}={_url_value(value)}" for key, value in shown.items())
    return f"postgresql://{auth}{location}/{quote(dbname, safe='')}" + ("?" + query if query else "")


def _url_value(value: str) -> str:
    return value if value == "***" else quote(value, safe="")


def _kv_value(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dsn_secrets(dsn: str) -> list[str]:
    """Return every secret in ``dsn`` (passwords, as parsed and as written), to scrub logs."""
    parts = _dsn_parts(dsn) or {}
    found = [parts[key] for key in sorted(SECRET_DSN_KEYS & parts.keys()) if parts[key]]
    found += [quote(value, safe="") for value in found]
    return sorted({value for value in found if value}, key=len, reverse=True)


def dsn_password(dsn: str) -> str | None:
    """Return the password embedded in ``dsn``, if any."""
    parts = _dsn_parts(dsn) or {}
    return parts.get("password") or None


def dsn_from_table(table: Mapping[str, object], *, what: str) -> str:
    """Return the key=value DSN of a TOML table (``dsn = {host = "h", password = "…"}``)."""
    values: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict | list) or value is None:
            raise ConfigError(f"{what}: key {str(key)[:30]!r} of the DSN table must be text or a number")
        values[str(key)] = str(value)
    try:
        return make_conninfo(**values)
    except Exception:
        raise ConfigError(f"{what}: the DSN table is not a valid libpq connection (keys: {sorted(values)})") from None


class Dsn(Secret):
    """A PostgreSQL DSN: prints redacted (``postgresql://u:***@h/db``), reveals in full."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Dsn({redact_dsn(self._value)!r})"

    def __str__(self) -> str:
        return redact_dsn(self._value)


def account_key(name: str) -> str:
    """Return the credential name of ``name`` after Unicode case folding (``ß`` → ``SS``)."""
    return env_suffix(unicodedata.normalize("NFKC", name).casefold())


# --- slugs and identifiers (docs/spec.md §1) -------------------------------------------------------

IDENTIFIER_MAX_BYTES: Final = 63
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# Names may hold spaces, dots and dashes (they become `_`), but never quotes, semicolons,
# backslashes, comment markers or control characters: such a name is an attack, not a typo.
_HOSTILE_NAME = re.compile(r"['\"`;\\]|--|/\*|\*/|[\x00-\x1f\x7f]")
ACCOUNT_NAME_MAX_CHARS: Final = 64


def slugify(name: str) -> str:
    """Return the account slug of ``name`` (docs/spec.md §1 rule)."""
    slug = re.sub(r"[^a-z0-9_]", "_", name.lower())
    slug = re.sub(r"_+", "_", slug).strip("_")
    if not slug:
        return "dest"
    if slug[0].isdigit():
        return "d_" + slug
    return slug


def env_suffix(name: str) -> str:
    """Return ``name`` as used in per-account variable names (``paper-1`` → ``PAPER_1``)."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def check_identifier(value: str, *, what: str) -> str:
    """Return ``value`` if it is a safe lower-case SQL identifier of at most 63 bytes."""
    if not _IDENTIFIER.match(value):
        raise ConfigError(f"{what}: expected a lower-case identifier [a-z_][a-z0-9_]*, found {value!r}")
    if len(value.encode()) > IDENTIFIER_MAX_BYTES:
        raise ConfigError(
            f"{what}: identifier {value!r} is {len(value.encode())} bytes, "
            f"PostgreSQL allows {IDENTIFIER_MAX_BYTES}"
        )
    return value


# --- the Structs ----------------------------------------------------------------------------

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=86_400 * 7)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0, le=100_000)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
Template = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
LogLevel = Annotated[str, msgspec.Meta(pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")]
WsUrl = Annotated[str, msgspec.Meta(pattern=r"^wss?://[^/\s]+(/\S*)?$")]


class AccountSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One brokerage account: its name, slug, credentials and endpoint."""

    name: str
    slug: str
    api_key: Secret
    secret_key: Secret
    base_url: str
    enable_trade_stream: bool = True
    equity_init_cash: str | None = None  # EQUITY_INIT_CASH_<NAME>: opening balance override (Decimal text)

    @property
    def stream_url(self) -> str:
        """Return the trade_updates WebSocket URL for ``base_url`` (http→ws, + ``/stream``)."""
        url = self.base_url.rstrip("/")
        if url.startswith("https://"):
            url = "wss://" + url[len("https://") :]
        elif url.startswith("http://"):
            url = "ws://" + url[len("http://") :]
        return url + "/stream"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every setting of docs/spec.md §7 and §1; field ``x_y`` is env var ``X_Y`` (see ``ENV_NAMES``)."""

    dsn: Dsn
    read_dsn: Dsn | None = None  # the read-only role's login, for every program but `state`
    run_dir: str = DEFAULT_RUN_DIR
    bus_in: str = ""
    bus_out: str = ""
    zmq_sip_stream_endpoint: str = "tcp://127.0.0.1:5558"
    # Where `prices` gets trades: the ZMQ feed above; "alpaca": market-data REST snapshots of the
    # symbols in play every PRICE_POLL_S (the first account's keys; the key's one stream
    # connection is left to the trader); "alpaca-stream": Alpaca's market-data WebSocket (REST
    # while the key's connection is taken, 406). Not set: "zmq" if ZMQ_SIP_STREAM_ENDPOINT is.
    price_source: Annotated[str, msgspec.Meta(pattern=r"^(zmq|alpaca|alpaca-stream)$")] = "alpaca"
    # The market-data REST host; empty: Alpaca's for Alpaca trading hosts, else the trading origin.
    alpaca_data_url: Annotated[str, msgspec.Meta(pattern=r"^(https?://[^/\s]+/?)?$")] = ""
    price_poll_s: PositiveSeconds = 3.0
    # With PRICE_SOURCE=alpaca-stream: also serve Alpaca's stock data protocol here (host:port),
    # so the trader's bot shares the key's one connection with us (broker/data_proxy.py). Empty: off.
    data_proxy_bind: Annotated[str, msgspec.Meta(pattern=r"^(\[?[0-9A-Za-z.:_-]+\]?:\d{1,5})?$")] = ""
    # Requests a minute per API key, over every program (Alpaca allows 200 on each API, more on
    # some plans): trading REST, and market-data REST (docs/broker-budget.md).
    alpaca_rest_budget_per_min: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 40
    alpaca_data_budget_per_min: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 40
    alpaca_data_stream_url: WsUrl = "wss://stream.data.alpaca.markets/v2/iex"
    alpaca_crypto_stream_url: WsUrl = "wss://stream.data.alpaca.markets/v1beta3/crypto/us"
    alpaca_data_max_symbols: PositiveInt = 30  # the free plan's cap on trade subscriptions
    account_schema: Template = "accounts"
    activities_schema: Template = "account_activities"
    table_account_positions: Template = "account_open_positions_{slug}"
    table_account_closed: Template = "account_closed_{slug}"
    table_account_equity_full: Template = "account_equity_full_{slug}"
    table_account_equity_intraday: Template = "account_equity_intraday_{slug}"
    table_cash_flows: Template = "cash_flows_{slug}"
    table_account_metrics: Template = "account_metrics_{slug}"
    table_market_schedule: Template = "market_schedule"
    pos_channel: Template = "pos_channel_{slug}"
    closed_channel: Template = "closed_channel_{slug}"
    metrics_channel: Template = "metrics_channel_{slug}"
    flush_interval_s: PositiveSeconds = 60.0
    ui_push_pct_threshold: Percent = 0.25
    ui_heartbeat_s: PositiveSeconds = 30.0
    snapshot_sec: PositiveSeconds = 60.0
    closed_sync_sec: PositiveSeconds = 60.0
    backfill_days: Annotated[int, msgspec.Meta(ge=0, le=36_500)] = 365
    cash_flows_interval_s: PositiveSeconds = 300.0
    equity_update_interval_s: PositiveSeconds = 60.0
    metrics_interval_s: PositiveSeconds = 5.0
    market_pre_open_time: ClockTime = "04:00"
    market_post_close_time: ClockTime = "20:00"
    market_refresh_sec: PositiveSeconds = 21_600.0
    schedule_forward_days: PositiveInt = 90
    schedule_retention_days: PositiveInt = 120
    disable_session_sleep: bool = False
    enable_trade_stream: bool = True
    trade_conditions_exclude: tuple[str, ...] = ("D", "M", "E")
    min_stop_gap: Annotated[float, msgspec.Meta(ge=0, le=1_000)] = 0.01
    alpaca_gtc_days: PositiveInt = 90
    cash_flow_types: tuple[str, ...] = (
        "CSD", "CSW", "JNLC", "ACATC", "ACATS", "FEE", "CFEE", "DIV", "DIVCGL", "DIVCGS",
        "DIVNRA", "DIVROC", "DIVTXEX", "DIVWH", "INT", "INTPNL",
    )  # fmt: skip
    equity_init_cash: Annotated[float, msgspec.Meta(ge=0, le=1e12)] | None = None
    log_level: LogLevel = "INFO"
    # The dashboard (`web`): where it listens; any non-loopback bind requires the token.
    web_bind: Annotated[str, msgspec.Meta(pattern=r"^\[?[0-9A-Za-z.:_-]+\]?:\d{1,5}$")] = "127.0.0.1:8765"
    web_token: Secret = Secret("")
    # The report's benchmark: its daily bars from the broker's data API (docs/report.md).
    report_benchmark: Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9.]{0,9}$")] = "SPY"
    accounts: tuple[AccountSettings, ...] = ()
    # Accounts listed but not runnable (missing credential), with the reason: the others run.
    disabled_accounts: tuple[tuple[str, str], ...] = ()

    @property
    def reader_dsn(self) -> Dsn:
        """Return the DSN of the read-only role (``CHMGR_READ_DSN``), else ``CHMGR_DSN``."""
        return self.read_dsn if self.read_dsn is not None else self.dsn

    def account(self, slug: str) -> AccountSettings:
        """Return the enabled account with ``slug``; raise ``ConfigError`` naming the known ones."""
        for account in self.accounts:
            if account.slug == slug:
                return account
        known = ", ".join(a.slug for a in self.accounts) or "none"
        raise ConfigError(f"no such account {slug!r} (known: {known})")


# Field → environment variable. Fields not listed use their upper-cased name.
_ENV_OVERRIDES: Final = {
    "dsn": "CHMGR_DSN",
    "read_dsn": "CHMGR_READ_DSN",
    "run_dir": "CHMGR_RUN_DIR",
    "bus_in": "CHMGR_BUS_IN",
    "bus_out": "CHMGR_BUS_OUT",
    "web_bind": "CHMGR_WEB_BIND",
    "web_token": "CHMGR_WEB_TOKEN",
    "data_proxy_bind": "CHMGR_DATA_PROXY_BIND",
}
_NOT_FROM_ENV: Final = frozenset({"accounts", "disabled_accounts"})
ENV_NAMES: Final[dict[str, str]] = {
    field: _ENV_OVERRIDES.get(field, field.upper())
    for field in Settings.__struct_fields__
    if field not in _NOT_FROM_ENV
}
_FIELD_BY_ENV: Final = {env: field for field, env in ENV_NAMES.items()}
_LIST_FIELDS: Final = frozenset({"trade_conditions_exclude", "cash_flow_types"})
_TEMPLATE_FIELDS: Final = (
    "table_account_positions", "table_account_closed", "table_account_equity_full",
    "table_account_equity_intraday", "table_cash_flows", "table_account_metrics",
    "pos_channel", "closed_channel", "metrics_channel",
)  # fmt: skip
_ACCOUNT_KEYS: Final = frozenset(
    {"name", "api_key", "secret_key", "base_url", "enable_trade_stream"}
)
DEFAULT_BASE_URL: Final = "https://paper-api.alpaca.markets"


def load_settings(environ: Mapping[str, str], toml_path: str | Path | None = None) -> Settings:
    """Return validated settings from ``environ`` laid over the TOML file at ``toml_path``.

    Raises
    ------
    ConfigError
        One line naming the variable, what was expected and what was found.
    """
    file_values, file_accounts = _read_toml(toml_path) if toml_path else ({}, [])
    raw: dict[str, object] = dict(file_values)
    for env, field in _FIELD_BY_ENV.items():
        if env in environ:
            raw[field] = environ[env]
    if "dsn" not in raw or not str(raw["dsn"]).strip():
        raise ConfigError(
            "CHMGR_DSN: required, not set (a PostgreSQL DSN such as postgresql://user@127.0.0.1:5432/chmgr)"
        )
    raw["dsn"] = _dsn(raw["dsn"], what="CHMGR_DSN")
    if raw.get("read_dsn") in (None, ""):
        raw.pop("read_dsn", None)
    else:
        raw["read_dsn"] = _dsn(raw["read_dsn"], what="CHMGR_READ_DSN")
    raw["web_token"] = Secret(str(raw.get("web_token") or "").strip())
    for field in _LIST_FIELDS & raw.keys():
        raw[field] = _split_list(raw[field])
    source = str(raw.get("price_source") or "").strip().lower()
    raw["price_source"] = source or ("zmq" if "zmq_sip_stream_endpoint" in raw else "alpaca")
    run_dir = str(raw.get("run_dir") or DEFAULT_RUN_DIR)
    raw.setdefault("bus_in", f"ipc://{run_dir}/bus-in.sock")
    raw.setdefault("bus_out", f"ipc://{run_dir}/bus-out.sock")
    settings = _convert(raw)
    accounts, disabled = _load_accounts(environ, file_accounts, settings)
    settings = msgspec.structs.replace(settings, accounts=accounts, disabled_accounts=disabled)
    _check_names(settings)
    return settings


def _dsn(value: object, *, what: str) -> Dsn:
    """Return ``value`` (text, or a TOML table of libpq keys) as a ``Dsn`` libpq can parse."""
    text = dsn_from_table(value, what=what) if isinstance(value, Mapping) else str(value).strip()
    if _dsn_parts(text) is None:
        raise ConfigError(
            f"{what}: not a PostgreSQL DSN libpq can parse (postgresql://user@host:5432/db or key=value pairs)"
        )
    return Dsn(text)


def _read_toml(path: str | Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"CHMGR_CONFIG: file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"CHMGR_CONFIG: cannot read {path}: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"CHMGR_CONFIG: {path} is not UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise ConfigError(f"CHMGR_CONFIG: {path} is nested too deeply") from None
    accounts = data.pop("accounts", [])
    if not isinstance(accounts, list) or not all(isinstance(a, dict) for a in accounts):
        raise ConfigError(f"CHMGR_CONFIG: [[accounts]] must be a list of tables in {path}")
    values: dict[str, object] = {}
    for key, value in data.items():
        field = _FIELD_BY_ENV.get(key.upper(), key.lower())
        if field not in ENV_NAMES:
            known = ", ".join(sorted(ENV_NAMES.values()))
            raise ConfigError(f"CHMGR_CONFIG: unknown key {key!r} in {path} (known: {known})")
        values[field] = value
    return values, accounts


def _split_list(value: object) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(item).strip().upper() for item in value if str(item).strip())
    return tuple(item.strip().upper() for item in str(value).split(",") if item.strip())


def _convert(raw: dict[str, object]) -> Settings:
    try:
        return msgspec.convert(raw, Settings, strict=False, dec_hook=_passthrough)
    except msgspec.ValidationError as e:
        raise ConfigError(_explain(e, raw)) from None


def _passthrough(kind: type, value: Any) -> Any:
    if isinstance(value, kind):
        return value
    raise NotImplementedError


def _explain(error: msgspec.ValidationError, raw: Mapping[str, object]) -> str:
    """Turn ``Expected `float` > 0.0 - at `$.flush_interval_s``` into a line naming the env var."""
    message = str(error)
    match = re.search(r"at `\$\.(\w+)", message)
    if match is None:
        unknown = re.search(r"unknown field `(\w+)`", message)
        return f"configuration: {message}" if unknown is None else f"unknown setting {unknown.group(1)!r}"
    field = match.group(1)
    expected = _friendly(message.split(" - at ")[0].replace("`", ""))
    found = raw.get(field)
    shown = "***" if isinstance(found, Secret) else repr(found)
    return f"{ENV_NAMES.get(field, field.upper())}: expected {expected}, found {shown}"


_FRIENDLY: Final = (
    (re.compile(r"^Expected float(?:, got \w+)?"), "a number"),
    (re.compile(r"^Expected int(?:, got \w+)?"), "a whole number"),
    (re.compile(r"^Expected bool(?:, got \w+)?"), "a boolean (true/false, 1/0, yes/no)"),
    (re.compile(r"^Expected str matching regex '\^\(\[01\].*"), "a time of day HH:MM"),
    (re.compile(r"^Expected str matching regex '\^\(DEBUG.*"), "a log level (DEBUG, INFO, WARNING, ERROR)"),
    (re.compile(r"^Expected str(?:, got \w+)?"), "text"),
)


def _friendly(expected: str) -> str:
    for pattern, replacement in _FRIENDLY:
        expected = pattern.sub(replacement, expected)
    return expected.replace("Expected ", "")


def _parse_bool(value: object, *, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{what}: expected a boolean (1/0, true/false, yes/no, on/off), found {value!r}")


def _account_names(environ: Mapping[str, str], file_accounts: list[dict[str, object]]) -> list[str]:
    if "CHMGR_ACCOUNTS" in environ:
        return [n.strip() for n in environ["CHMGR_ACCOUNTS"].split(",") if n.strip()]
    names = []
    for entry in file_accounts:
        unknown = set(entry) - _ACCOUNT_KEYS
        if unknown:
            raise ConfigError(f"CHMGR_CONFIG: unknown key(s) {sorted(unknown)} in [[accounts]]")
        if not isinstance(entry.get("name"), str) or not str(entry["name"]).strip():
            raise ConfigError("CHMGR_CONFIG: every [[accounts]] table needs a name")
        names.append(str(entry["name"]).strip())
    return names


def _check_account_name(name: str) -> None:
    if len(name) > ACCOUNT_NAME_MAX_CHARS:
        raise ConfigError(
            f"CHMGR_ACCOUNTS: account name longer than {ACCOUNT_NAME_MAX_CHARS} characters: {name[:20]!r}…"
        )
    if _HOSTILE_NAME.search(name):
        raise ConfigError(
            f"CHMGR_ACCOUNTS: account name may not contain quotes, ';', '\\', comments or control "
            f"characters, found {name!r}"
        )


def _load_accounts(
    environ: Mapping[str, str], file_accounts: list[dict[str, object]], settings: Settings
) -> tuple[tuple[AccountSettings, ...], tuple[tuple[str, str], ...]]:
    by_name = {str(a.get("name", "")).strip(): a for a in file_accounts}
    accounts: list[AccountSettings] = []
    disabled: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    keys: dict[str, str] = {}
    for name in _account_names(environ, file_accounts):
        _check_account_name(name)
        slug = slugify(name)
        if slug in seen:
            raise ConfigError(f"CHMGR_ACCOUNTS: accounts {seen[slug]!r} and {name!r} both have slug {slug!r}")
        seen[slug] = name
        for key in {env_suffix(name), account_key(name)}:
            if key in keys:
                raise ConfigError(
                    f"CHMGR_ACCOUNTS: accounts {keys[key]!r} and {name!r} map to one credential name {key!r} "
                    "(names are compared after Unicode case folding)"
                )
            keys[key] = name
        suffix = env_suffix(name)
        entry = by_name.get(name, {})

        def pick(env_prefix: str, key: str, entry: Mapping[str, object] = entry, suffix: str = suffix) -> str:
            value = environ.get(f"{env_prefix}_{suffix}", entry.get(key))
            return "" if value is None else str(value).strip()

        api_key = pick("ALPACA_API_KEY", "api_key")
        secret_key = pick("ALPACA_SECRET_KEY", "secret_key")
        missing = [v for v, k in (("ALPACA_API_KEY", api_key), ("ALPACA_SECRET_KEY", secret_key)) if not k]
        if missing:
            disabled.append((name, f"{' and '.join(m + '_' + suffix for m in missing)} not set"))
            continue
        base_url = pick("ALPACA_BASE_URL", "base_url") or DEFAULT_BASE_URL
        if not re.match(r"^https?://[^/\s]+$", base_url.rstrip("/")):
            raise ConfigError(
                f"ALPACA_BASE_URL_{suffix}: expected an http(s) origin such as "
                f"https://paper-api.alpaca.markets (no path), found {base_url!r}"
            )
        stream_raw = environ.get(f"ENABLE_TRADE_STREAM_{suffix}", entry.get("enable_trade_stream"))
        enable_stream = (
            settings.enable_trade_stream
            if stream_raw is None
            else _parse_bool(stream_raw, what=f"ENABLE_TRADE_STREAM_{suffix}")
        )
        accounts.append(
            AccountSettings(
                name=name,
                slug=slug,
                api_key=Secret(api_key),
                secret_key=Secret(secret_key),
                base_url=base_url.rstrip("/"),
                enable_trade_stream=enable_stream,
                equity_init_cash=_cash_text(pick("EQUITY_INIT_CASH", "equity_init_cash"), f"EQUITY_INIT_CASH_{suffix}"),
            )
        )
    return tuple(accounts), tuple(disabled)


def _cash_text(text: str, what: str) -> str | None:
    """Return a per-account opening balance (a non-negative decimal) or None when unset."""
    if not text:
        return None
    if not re.fullmatch(r"\d{1,12}(\.\d{1,2})?", text):
        raise ConfigError(f"{what}: expected a non-negative amount such as 100000 or 2500.50, found {text!r}")
    return text


def _check_names(settings: Settings) -> None:
    """Check schema names and every identifier derived from every slug (docs/spec.md §1)."""
    check_identifier(settings.account_schema, what="ACCOUNT_SCHEMA")
    check_identifier(settings.activities_schema, what="ACTIVITIES_SCHEMA")
    check_identifier(settings.table_market_schedule, what="TABLE_MARKET_SCHEDULE")
    for field in _TEMPLATE_FIELDS:
        template = getattr(settings, field)
        if template.count("{slug}") != 1 or re.search(r"\{(?!slug\})", template):
            raise ConfigError(f"{ENV_NAMES[field]}: expected a template containing {{slug}} once, found {template!r}")
        check_identifier(template.format(slug="x"), what=ENV_NAMES[field])
    for account in settings.accounts:
        for field in _TEMPLATE_FIELDS:
            identifier = getattr(settings, field).format(slug=account.slug)
            try:
                check_identifier(identifier, what=ENV_NAMES[field])
            except ConfigError as e:
                raise ConfigError(f"account {account.name!r} (slug {account.slug!r}): {e}") from None
        for prefix in ("raw_orders_", "raw_activities_"):
            check_identifier(prefix + account.slug, what=f"account {account.name!r} raw table")


def all_secrets(settings: Settings) -> list[str]:
    """Return every secret string in ``settings`` (for the log scrubber), longest first."""
    values = [a.api_key.reveal() for a in settings.accounts]
    values += [a.secret_key.reveal() for a in settings.accounts]
    values.append(settings.web_token.reveal())
    for dsn in (settings.dsn, settings.read_dsn):
        if dsn is not None:
            values += dsn_secrets(dsn.reveal())
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def describe(settings: Settings) -> dict[str, object]:
    """Return the effective settings as a printable dict, secrets redacted (logged at start)."""
    shown: dict[str, object] = {}
    for field in Settings.__struct_fields__:
        value = getattr(settings, field)
        if field == "accounts":
            value = [f"{a.name}({a.slug}) {a.base_url} stream={a.enable_trade_stream}" for a in value]
        elif isinstance(value, Secret):
            value = str(value)
        shown[field] = value
    return shown


def make_private_dir(path: str | Path) -> Path:
    """Create ``path`` and its missing parents with mode 0700; return it as an absolute path.

    Only the directories this call creates are chmodded (mkdir's mode is cut by the umask): a
    directory that already exists keeps its mode, so ``CHMGR_RUN_DIR=/tmp`` or a bus endpoint
    in a shared folder never changes that folder (issue #14). Raises ``OSError``.
    """
    target = Path(path).absolute()
    missing = []
    directory = target
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # created meanwhile by another program: not ours to chmod
            continue
        os.chmod(directory, PRIVATE_DIR_MODE)
    return target


def prepare_run_dir(run_dir: str | Path) -> Path:
    """Make ``run_dir`` and its ``logs/`` exist with mode 0700; return ``run_dir`` absolute.

    Directories created here are 0700. Of the existing ones, only the project's own
    ``<project root>/run`` and its ``logs/`` (shipped in the repository, where git cannot store
    a mode) are tightened to 0700; any other existing directory is left as its owner set it.
    """
    try:
        target = make_private_dir(run_dir)
        logs = make_private_dir(target / LOGS_DIR_NAME)
        for directory in (target, logs):
            if is_project_run_dir(directory):
                os.chmod(directory, PRIVATE_DIR_MODE)
    except OSError as e:
        raise ConfigError(f"CHMGR_RUN_DIR: cannot prepare {e.filename or run_dir}: {e.strerror or e}") from e
    return target


def is_project_run_dir(directory: Path) -> bool:
    """Return True for the repository's own run/ or run/logs/: a real directory we own."""
    own = {PROJECT_ROOT / "run", PROJECT_ROOT / "run" / LOGS_DIR_NAME}
    if directory not in own:
        return False
    info = directory.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()

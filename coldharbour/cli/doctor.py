"""`chmgr doctor`: check every precondition of a running stack, one line each.

Each check prints ``OK …``, ``WARN …`` (works, but look) or ``FAIL … what to fix``; the command
exits 1 if any check failed. Checks never print a secret: DSNs are redacted and credentials are
named by their variable, never shown.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, NamedTuple

import psycopg
import typer
import websockets
import zmq
from websockets.sync.client import connect

from coldharbour import runtime
from coldharbour.cli.status import HEARTBEAT_LISTEN_S, collect_heartbeats, describe_prices, stack_health
from coldharbour.config import AccountSettings, Settings, env_suffix, is_project_run_dir
from coldharbour.db import checks, ownership, roles, schema
from coldharbour.db.connect import connect_sync
from coldharbour.db.names import account_names, shared_names
from coldharbour.domain.schedule import CALENDAR_GAP_DAYS, ny_date
from coldharbour.errors import DatabaseError
from coldharbour.health import credentials_rejected
from coldharbour.messages import Heartbeat
from coldharbour.supervisor import UNIX_SOCKET_PATH_MAX, SupervisorClient, socket_path

QUARANTINE_SHOWN: Final = 5
BROKER_TIMEOUT_S: Final = 5.0
FEED_WAIT_S: Final = 3.0
UNCLASSIFIED_CODE_CHARS: Final = 40

Verdict = Literal["OK", "WARN", "FAIL"]


class Check(NamedTuple):
    """The outcome of one check: a verdict and one line saying what was found (and what to do)."""

    verdict: Verdict
    line: str


def check_database(settings: Settings) -> Iterator[Check]:
    """Check that the DSN connects and that the schema is at this code's version."""
    try:
        with connect_sync(settings.dsn, "chmgr-doctor", read_only=True) as conn:
            yield Check("OK", f"database reachable at {settings.dsn} (PostgreSQL {checks.server_version(conn)})")
            recorded = schema.schema_versions(conn, settings)
    except DatabaseError as e:
        yield Check("FAIL", f"{e}: check CHMGR_DSN and that PostgreSQL is running")
        return
    latest = schema.latest_versions(settings)
    behind = [
        f"{scope} at v{recorded.get(scope, 0)} (code v{version})"
        for scope, version in latest.items()
        if recorded.get(scope, 0) < version
    ]
    ahead = [f"{scope} at v{version}" for scope, version in recorded.items() if version > latest.get(scope, version)]
    if ahead:
        yield Check("FAIL", f"schema newer than this code: {', '.join(ahead)}: upgrade the code")
    elif behind:
        yield Check("FAIL", f"schema behind: {', '.join(behind)}: run `chmgr db init`")
    else:
        yield Check("OK", f"schema current ({', '.join(f'{s} v{v}' for s, v in latest.items())})")


def check_equity_proof(settings: Settings) -> Iterator[Check]:
    """Per account: daily equity rows that differ from the broker's portfolio history."""
    try:
        with connect_sync(settings.dsn, "chmgr-doctor", read_only=True) as conn:
            for account in settings.accounts:
                compared, differ, worst = checks.equity_proof(conn, account_names(settings, account.slug))
                if differ:
                    yield Check(
                        "WARN",
                        f"account {account.name}: daily equity differs from the broker's portfolio history on "
                        f"{differ} of {compared} days (largest {worst}): see the equity log (flows it could not "
                        "explain widen a day's tolerance)",
                    )
                elif compared:
                    yield Check("OK", f"account {account.name}: daily equity matches the broker on all {compared} days")
    except (DatabaseError, psycopg.Error):
        return  # the database check above says what is wrong


def check_unclassified(settings: Settings) -> Iterator[Check]:
    """Per account: activity codes stored as ``unclassified`` (not in the catalogue of docs/spec.md §8)."""
    try:
        with connect_sync(settings.reader_dsn, "chmgr-doctor", read_only=True) as conn:
            for account in settings.accounts:
                found = checks.unclassified_codes(conn, account_names(settings, account.slug))
                if found:
                    codes = ", ".join(f"{str(code)[:UNCLASSIFIED_CODE_CHARS]!r} ×{n}" for code, n in found)
                    yield Check(
                        "WARN",
                        f"account {account.name}: unclassified activity codes {codes}: kept in returns (never "
                        "a deposit); add them to the catalogue in domain/cashflows.py if they are known",
                    )
                else:
                    yield Check("OK", f"account {account.name}: every activity code is classified")
    except (DatabaseError, psycopg.Error):
        return  # the database check above says what is wrong


def check_schedule_horizon(settings: Settings, today: date) -> Iterator[Check]:
    """Warn when the stored market schedule ends short of today + ``SCHEDULE_FORWARD_DAYS``."""
    wanted = today + timedelta(days=settings.schedule_forward_days)
    try:
        with connect_sync(settings.dsn, "chmgr-doctor", read_only=True) as conn:
            last = checks.schedule_end(conn, shared_names(settings))
    except (DatabaseError, psycopg.Error):
        return  # the database check above says what is wrong
    if last is None:
        yield Check("WARN", "market schedule is empty: is the scheduler running? (session programs fail open)")
    elif (wanted - last).days > CALENDAR_GAP_DAYS:
        yield Check(
            "WARN",
            f"market schedule ends on {last}, {(last - today).days} days ahead, short of SCHEDULE_FORWARD_DAYS="
            f"{settings.schedule_forward_days}: the broker calendar ends there; session programs keep running past it",
        )
    else:
        yield Check("OK", f"market schedule covers through {last}")


def check_roles(settings: Settings) -> Check:
    """Check that other programs log in as a role that cannot write (``CHMGR_READ_DSN``)."""
    if settings.read_dsn is None:
        return Check(
            "WARN",
            "CHMGR_READ_DSN not set: every program logs in as the writer, read-only by session default only "
            "(a program could lift it): set CHMGR_READ_DSN and run `chmgr db init`",
        )
    try:
        with connect_sync(settings.read_dsn, "chmgr-doctor", read_only=True) as conn:
            writable = roles.can_write(conn, settings)
            user = checks.current_user(conn)
    except DatabaseError as e:
        return Check("FAIL", f"read-only role: {e}: check CHMGR_READ_DSN and run `chmgr db init`")
    if writable:
        return Check(
            "FAIL",
            f"read-only role {user} can write {len(writable)} table(s) ({', '.join(writable[:3])}…): "
            "use a role without write privileges in CHMGR_READ_DSN",
        )
    return Check("OK", f"read-only role {user} (CHMGR_READ_DSN) has no write privilege")


def check_quarantine(settings: Settings) -> Iterator[Check]:
    """List the newest changes `state` quarantined (a data error it isolated from a commit)."""
    try:
        with connect_sync(settings.reader_dsn, "chmgr-doctor", read_only=True) as conn:
            found = checks.quarantine(conn, settings.account_schema, QUARANTINE_SHOWN)
    except (DatabaseError, psycopg.Error) as e:
        yield Check("WARN", f"quarantine: cannot read it ({' '.join(str(e).split())[:160]})")
        return
    if found is None:
        yield Check("OK", "quarantine: none (no quarantine table)")
        return
    total, rows = found
    if not total:
        yield Check("OK", "quarantine: none")
        return
    yield Check("WARN", f"quarantine: {total} change(s) refused by the database and set aside (newest first):")
    for ts, account, kind, key, error in rows:
        detail = " ".join(str(error).split())[:120]
        yield Check("WARN", f"  {ts:%Y-%m-%d %H:%M:%S} account={account} {kind} {str(key)[:60]!r}: {detail}")


def check_ownership(settings: Settings) -> Iterator[Check]:
    """Say which stack owns each account and the shared tables (the ``state`` advisory locks).

    Lock keys are matched with every account the database has a schema for; a configured
    account nobody owns is a warning (its ``state`` is not running).
    """
    try:
        with connect_sync(settings.dsn, "chmgr-doctor", read_only=True) as conn:
            held = {o.key: o for o in ownership.owners(conn)}
            recorded = schema.schema_versions(conn, settings)
    except DatabaseError as e:
        yield Check("WARN", f"ownership locks not readable: {e}")
        return
    configured = [a.slug for a in settings.accounts]
    known = dict.fromkeys([ownership.SHARED, *configured,
                           *sorted(s.removeprefix("account:") for s in recorded if s.startswith("account:"))])
    keys = {ownership.lock_key(settings.account_schema, slug): slug for slug in known}
    for key, slug in keys.items():
        what = "shared tables" if slug == ownership.SHARED else f"account {slug}"
        owner = held.get(key)
        if owner is not None:
            yield Check("OK", f"{what}: owned by {owner.application_name or '?'} "
                              f"({ownership.describe_owner(owner)}, backend pid {owner.backend_pid})")
        elif slug == ownership.SHARED or slug in configured:
            yield Check("WARN", f"{what}: no owner (no `state` running for it)")
    for key, owner in held.items():
        if key not in keys:
            yield Check("OK", f"lock key {key}: owned by {owner.application_name or '?'} (an account unknown here)")


def check_account(account: AccountSettings) -> Check:
    """Check that the broker accepts the account's credentials (``GET /v2/account``)."""
    suffix = env_suffix(account.name)
    url = f"{account.base_url}/v2/account"
    request = urllib.request.Request(  # noqa: S310 - base_url is validated as http(s) by config
        url,
        headers={"APCA-API-KEY-ID": account.api_key.reveal(), "APCA-API-SECRET-KEY": account.secret_key.reveal()},
    )
    try:
        with urllib.request.urlopen(request, timeout=BROKER_TIMEOUT_S) as response:  # noqa: S310
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            cause = credentials_rejected(account.name, account.base_url, f"HTTP {e.code}")
            return Check("FAIL", f"account {account.name}: {cause}")
        return Check("FAIL", f"account {account.name}: {url} answered HTTP {e.code}: check ALPACA_BASE_URL_{suffix}")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return Check(
            "FAIL",
            f"account {account.name}: broker unreachable at {account.base_url} ({reason}): "
            f"check ALPACA_BASE_URL_{suffix}",
        )
    status = body.get("status", "?") if isinstance(body, dict) else "?"
    if not (isinstance(status, str) and status.isprintable() and len(status) <= 40):
        status = "?"  # the terminal shows it: never an escape sequence or a page of text
    return Check("OK", f"account {account.name}: credentials accepted by {account.base_url} (status {status})")


def check_feed(settings: Settings, wait_s: float = FEED_WAIT_S) -> Check:
    """Check that the price feed publishes: connect a SUB and wait for one message."""
    endpoint = settings.zmq_sip_stream_endpoint
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(zmq.SUB)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        if sock.poll(int(wait_s * 1000), zmq.POLLIN):
            sock.recv_multipart()
            return Check("OK", f"price feed at {endpoint}: messages arriving")
    except zmq.ZMQError as e:
        return Check("FAIL", f"price feed endpoint {endpoint!r} is not usable ({e}): check ZMQ_SIP_STREAM_ENDPOINT")
    finally:
        sock.close(linger=0)
        context.destroy(linger=0)
    return Check(
        "WARN",
        f"no message from the price feed at {endpoint} within {wait_s:.0f} s: is the feed running "
        "(outside market hours it may be quiet)? check ZMQ_SIP_STREAM_ENDPOINT",
    )


def check_prices(settings: Settings, listen_s: float = HEARTBEAT_LISTEN_S) -> Check:
    """Check the price source: the ZMQ feed, or (``alpaca``) what ``prices`` reports or a handshake."""
    if settings.price_source == "zmq":
        return check_feed(settings)
    if settings.price_source == "alpaca":  # market-data REST: what `prices` reports of its polls
        heard = asyncio.run(collect_heartbeats(settings, ["prices"], listen_s)).get("prices")
        if not settings.accounts:
            return Check("FAIL", "price source alpaca (market-data REST) needs an account with credentials")
        if heard is None:
            return Check("WARN", "price source alpaca (market-data REST): prices is not running, nothing to check")
        failing = heard.counters.get("price_poll_failures", 0)
        verdict: Verdict = "WARN" if failing and not heard.counters.get("newest_tick_unix_ms") else "OK"
        return Check(verdict, f"price source alpaca (market-data REST): {describe_prices(heard, time.time_ns())}")
    url = settings.alpaca_data_stream_url
    if not settings.accounts:
        return Check("FAIL", f"price source alpaca ({url}) needs an account with credentials")
    heard = asyncio.run(collect_heartbeats(settings, ["prices"], listen_s)).get("prices")
    if heard is None:
        return check_data_stream(settings.accounts[0], url)
    verdict = "WARN" if heard.counters.get("data_stream_unpriced") else "OK"
    hint = ": raise ALPACA_DATA_MAX_SYMBOLS if your data plan allows" if verdict == "WARN" else ""
    return Check(verdict, f"price source alpaca-stream ({url}): {describe_prices(heard, time.time_ns())}{hint}")


def check_unknown_positions(settings: Settings, listen_s: float = HEARTBEAT_LISTEN_S) -> Iterator[Check]:
    """Check ``state``'s heartbeat for positions the broker lists that could not be read.

    Such a symbol is neither flat nor known (``docs/startup.md``): its lots stay as they were and
    are not reconciled until the broker sends a readable row. Nothing is said when ``state`` is
    not heard (the supervisord check covers a stopped stack).
    """
    heard = asyncio.run(collect_heartbeats(settings, ["state"], listen_s)).get("state")
    if heard is None:
        return
    unknown = {key.removeprefix("positions_unknown_"): count for key, count in heard.counters.items()
               if key.startswith("positions_unknown_") and key != "positions_unknown_snapshots" and count}
    if not unknown:
        yield Check("OK", "every position the broker lists is readable")
        return
    listed = ", ".join(f"{slug}: {count}" for slug, count in sorted(unknown.items()))
    yield Check("WARN", f"positions the broker lists could not be read ({listed}): their lots are kept as they "
                        "were and not reconciled; `state`'s log names the symbols and the refused field")


def check_data_stream(account: AccountSettings, url: str) -> Check:
    """Check that the market-data stream accepts ``account``'s keys (connect, auth, close)."""
    suffix = env_suffix(account.name)
    auth = {"action": "auth", "key": account.api_key.reveal(), "secret": account.secret_key.reveal()}
    try:
        with connect(url, open_timeout=BROKER_TIMEOUT_S, close_timeout=1.0) as socket:
            replies = [json.loads(socket.recv(BROKER_TIMEOUT_S))]
            socket.send(json.dumps(auth))
            replies.append(json.loads(socket.recv(BROKER_TIMEOUT_S)))
    except (OSError, TimeoutError, ValueError, websockets.exceptions.WebSocketException) as e:
        return Check(
            "FAIL", f"market-data stream unreachable at {url} ({type(e).__name__}): check ALPACA_DATA_STREAM_URL"
        )
    last = replies[-1][0] if isinstance(replies[-1], list) and replies[-1] else {}
    if last.get("T") == "success" and last.get("msg") == "authenticated":
        return Check("OK", f"price source alpaca: {url} accepts account {account.name}'s keys (prices not running)")
    if last.get("code") == 406:
        return Check("WARN", f"price source alpaca: {url} says connection limit exceeded: another client holds it")
    return Check(
        "FAIL",
        f"price source alpaca: {url} refused account {account.name}'s keys ({last.get('code')} {last.get('msg')}): "
        f"check ALPACA_API_KEY_{suffix}, ALPACA_SECRET_KEY_{suffix} and the data plan (iex or sip)",
    )


def check_corporate(settings: Settings, listen_s: float = HEARTBEAT_LISTEN_S) -> Iterator[Check]:
    """Corporate actions the mirror cannot see or book yet (docs/corporate-actions.md).

    From the heartbeats: ``snapshot``'s details name the activity codes the broker refused
    (``corporate_refused_<account>``: their legs are not read, so their actions are not
    booked); ``state``'s details name the actions held (pending or quarantined).
    """
    yield from corporate_checks(asyncio.run(collect_heartbeats(settings, ["snapshot", "state"], listen_s)))


def corporate_checks(heard: Mapping[str, Heartbeat]) -> Iterator[Check]:
    """The lines of ``check_corporate`` from the heartbeats heard (program -> newest)."""
    if not heard:
        yield Check("WARN", "corporate actions: neither snapshot nor state heard on the bus (is the stack running?)")
        return
    found = False
    for program, beat in sorted(heard.items()):
        for key, text in sorted(beat.details.items()):
            if key.startswith("corporate_refused_"):
                found = True
                account = key.removeprefix("corporate_refused_")
                yield Check("WARN", f"account {account}: corporate activity codes refused by the broker "
                            f"({text[:120]}): their actions are not booked until they are read")  # fmt: skip
            elif key.startswith("corporate_mismatch_"):
                found = True
                yield Check("WARN", f"account {key.removeprefix('corporate_mismatch_')}: corporate actions held whole, "
                            f"their legs disagree with the announced rates ({text[:200]})")  # fmt: skip
            elif key.startswith("corporate_held_"):
                found = True
                yield Check("WARN", f"account {key.removeprefix('corporate_held_')}: corporate actions held "
                            f"({text[:160]})")  # fmt: skip
        if beat.counters.get("corporate_problems"):
            found = True
            yield Check("WARN", f"{program}: {beat.counters['corporate_problems']} corporate action leg(s) not booked "
                        "since start (see its log: 'corporate action leg not booked')")  # fmt: skip
    if not found:
        yield Check("OK", "corporate actions: every activity code read, none held")


def check_run_dir(settings: Settings) -> Iterator[Check]:
    """Check the run directory (writable, mode 0700) and that socket paths fit a unix socket."""
    run_dir = Path(settings.run_dir).resolve()
    if not run_dir.exists():
        yield Check("WARN", f"run dir {run_dir} does not exist yet (`chmgr up` creates it with mode 0700)")
    else:
        mode = stat.S_IMODE(run_dir.stat().st_mode)
        if mode != 0o700 and is_project_run_dir(run_dir):  # a fresh clone's: git stores no modes
            yield Check("WARN", f"run dir {run_dir} has mode {mode:04o}: `chmgr up` or the first program makes it 0700")
        elif mode != 0o700:
            yield Check("FAIL", f"run dir {run_dir} has mode {mode:04o}, sockets need 0700: chmod 700 {run_dir}")
        elif not _writable(run_dir):
            yield Check("FAIL", f"run dir {run_dir} is not writable by uid {os.getuid()}: fix its owner")
        else:
            yield Check("OK", f"run dir {run_dir} writable, mode 0700")
    sockets = {"supervisor socket": str(socket_path(run_dir))}
    for name, endpoint in (("CHMGR_BUS_IN", settings.bus_in), ("CHMGR_BUS_OUT", settings.bus_out)):
        if endpoint.startswith("ipc://"):
            sockets[name] = str(Path(endpoint.removeprefix("ipc://")).resolve())
    too_long = [f"{name} ({len(path)} chars)" for name, path in sockets.items() if len(path) > UNIX_SOCKET_PATH_MAX]
    if too_long:
        yield Check("FAIL", f"socket paths too long for unix sockets: {', '.join(too_long)}: shorten CHMGR_RUN_DIR")
    else:
        yield Check("OK", f"socket paths fit ({', '.join(sockets.values())})")


def check_stack(settings: Settings) -> Iterator[Check]:
    """With supervisord running: whether the stack works (the health model, `chmgr status`'s words)."""
    client = SupervisorClient(socket_path(Path(settings.run_dir).resolve()))
    if not client.is_running():
        return
    health, _, _ = stack_health(settings, {info.name: info for info in client.info()}, HEARTBEAT_LISTEN_S)
    for finding in health.findings:
        yield Check("FAIL", f"stack: {finding.line}")
    for waiting in health.waiting:
        yield Check("WARN", f"stack: waiting: {waiting}")
    if health.working:
        yield Check("OK", f"stack: working: account {', account '.join(health.working)}")


def check_supervisord(settings: Settings) -> Check:
    """Report whether supervisord answers on its socket (not running is a warning, not a failure)."""
    client = SupervisorClient(socket_path(Path(settings.run_dir).resolve()))
    if client.is_running():
        return Check("OK", f"supervisord running (socket {client.socket_path})")
    return Check("WARN", f"supervisord is not running (socket {client.socket_path}): start it with `chmgr up`")


def _writable(directory: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-"):
            return True
    except OSError:
        return False


def run_checks(settings: Settings) -> Iterator[Check]:
    """Yield every check's outcome, in the order an operator would fix them."""
    yield from check_database(settings)
    yield from check_equity_proof(settings)
    yield from check_unclassified(settings)
    yield from check_schedule_horizon(settings, ny_date(datetime.now(UTC)))
    yield check_roles(settings)
    yield from check_quarantine(settings)
    yield from check_ownership(settings)
    for account in settings.accounts:
        yield check_account(account)
    for name, reason in settings.disabled_accounts:
        yield Check("FAIL", f"account {name}: disabled, {reason}: set it or remove {name!r} from CHMGR_ACCOUNTS")
    if not settings.accounts and not settings.disabled_accounts:
        yield Check("FAIL", "no account configured: set CHMGR_ACCOUNTS and ALPACA_*_KEY_<NAME>")
    yield check_prices(settings)
    yield from check_unknown_positions(settings)
    yield from check_corporate(settings)
    yield from check_run_dir(settings)
    yield check_supervisord(settings)
    yield from check_stack(settings)


def doctor() -> None:
    """Check the DSN, schema, broker credentials, price source and run dir; exit 1 if any FAIL."""
    settings = runtime.load_from_environment()
    failed = 0
    for check in run_checks(settings):
        typer.echo(f"{check.verdict:<4} {check.line}")
        failed += check.verdict == "FAIL"
    if failed:
        raise typer.Exit(runtime.EXIT_FAILURE)

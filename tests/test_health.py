"""The health model: supervisord's view, the programs' reported conditions and the database,
joined into causes (one line each), what is awaited, and the accounts that work."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from coldharbour import runtime
from coldharbour.broker.rest import BrokerRest
from coldharbour.config import Dsn, Settings
from coldharbour.errors import BrokerError
from coldharbour.health import (
    NEED_BROKER,
    NEED_DATABASE,
    NEED_SNAPSHOT,
    NEED_STREAM,
    SLEEPING,
    Finding,
    Streaming,
    assess,
    first_cause,
    shown_state,
)
from coldharbour.messages import Condition, Heartbeat
from coldharbour.supervisor import ProcessInfo
from tests.fixtures.broker import FakeBroker
from tests.support import make_settings

NOW_NS = 1_765_000_000_000_000_000


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(Dsn("postgresql://u@127.0.0.1:1/x"), tmp_path)


def _infos(state: str = "RUNNING", **states: str) -> dict[str, ProcessInfo]:
    return {
        name: ProcessInfo(name, name, states.get(name, state), 100, 10.0, "", f"/logs/{name}.log")
        for name in runtime.PROGRAMS
    }


def _beat(program: str, *conditions: Condition, age_s: float = 0.5) -> Heartbeat:
    return Heartbeat(
        src=program, seq=1, ts=NOW_NS - int(age_s * 1e9), program=program, pid=1, uptime_s=1.0,
        conditions=conditions,
    )  # fmt: skip


def _working(*slugs: str) -> dict[str, Heartbeat]:
    return {
        "snapshot": _beat("snapshot", *(Condition(need=NEED_BROKER, account=s, ok=True) for s in slugs)),
        "trades": _beat("trades", *(Condition(need=NEED_STREAM, account=s, ok=True) for s in slugs)),
        "state": _beat("state", *(Condition(need=NEED_SNAPSHOT, account=s, ok=True) for s in slugs)),
    }


def test_every_account_shown_to_work_is_working(settings: Settings) -> None:
    health = assess(settings, _infos(), _working("demo", "paper_1"), NOW_NS)

    assert health.is_working
    assert health.working == ["demo", "paper-1"]
    assert health.lines() == []


def test_rejected_credentials_name_the_program_the_account_and_the_cause(settings: Settings) -> None:
    beats = _working("paper_1")
    refused = (
        "credentials rejected by http://127.0.0.1:9 (HTTP 403): check ALPACA_API_KEY_DEMO and ALPACA_SECRET_KEY_DEMO"
    )
    beats["snapshot"] = _beat("snapshot", Condition(need=NEED_BROKER, account="demo", ok=False, cause=refused),
                              Condition(need=NEED_BROKER, account="paper_1", ok=True))  # fmt: skip

    health = assess(settings, _infos(), beats, NOW_NS)

    assert not health.is_working
    assert health.working == ["paper-1"]
    assert [f.line for f in health.findings] == [f"snapshot: account demo: {refused}"]
    assert health.waiting == []  # demo has a cause: not also "waiting"


def test_no_word_from_a_program_is_waiting_not_working(settings: Settings) -> None:
    beats = _working("demo", "paper_1")
    del beats["trades"]

    health = assess(settings, _infos(), beats, NOW_NS)

    assert not health.is_working
    assert health.findings == []
    assert health.waiting == [
        "trades: account demo: trade stream not connected yet",
        "trades: account paper-1: trade stream not connected yet",
    ]


def test_an_account_whose_first_snapshot_state_has_not_stored_is_waiting(settings: Settings) -> None:
    beats = _working("demo", "paper_1")
    beats["state"] = _beat("state", Condition(need=NEED_SNAPSHOT, account="paper_1", ok=True))

    health = assess(settings, _infos(), beats, NOW_NS)

    assert not health.is_working
    assert health.working == ["paper-1"]
    assert health.waiting == ["state: account demo: first snapshot not stored yet"]


def test_state_reporting_its_database_unreachable_is_a_cause(settings: Settings) -> None:
    beats = _working("demo", "paper_1")
    cause = "database unreachable: state's commit failed, reconnecting"
    stored = (Condition(need=NEED_SNAPSHOT, account=s, ok=True) for s in ("demo", "paper_1"))
    beats["state"] = _beat("state", Condition(need=NEED_DATABASE, account="", ok=False, cause=cause), *stored)

    health = assess(settings, _infos(), beats, NOW_NS)

    assert not health.is_working
    assert [f.line for f in health.findings] == [f"state: {cause}"]


def test_a_parked_session_program_is_not_awaited(settings: Settings) -> None:
    infos = _infos(snapshot="STOPPED", trades="STOPPED")

    health = assess(settings, infos, {}, NOW_NS)

    assert shown_state(infos["trades"], {n: i.state for n, i in infos.items()}, settings, None) == SLEEPING
    assert health.is_working


def test_database_and_supervisord_and_program_states_are_causes(settings: Settings) -> None:
    stale = _working("demo", "paper_1")
    stale["state"] = _beat("state", age_s=30)

    fatal = assess(settings, _infos(cashflows="FATAL"), stale, NOW_NS, database_error="database unreachable: x")
    unreachable = assess(settings, None, {}, NOW_NS, supervisor_error="no socket")

    assert [f.line for f in fatal.findings] == [
        "database unreachable: x",
        "state: no heartbeat for 30 s (hung, or cut off from the bus)",
        "cashflows: FATAL",
    ]
    assert [f.line for f in unreachable.findings] == ["supervisord: no socket"]


def test_streaming_counts_the_accounts_trades_said_are_streaming(settings: Settings) -> None:
    beats = _working("demo", "paper_1")
    disconnected = Condition(need=NEED_STREAM, account="paper_1", ok=False, cause="trade stream disconnected")
    beats["trades"] = _beat("trades", Condition(need=NEED_STREAM, account="demo", ok=True), disconnected)

    health = assess(settings, _infos(), beats, NOW_NS)
    everything = assess(settings, _infos(), _working("demo", "paper_1"), NOW_NS)

    assert health.streaming is not None
    assert health.streaming.line == "trades: 1 of 2 accounts streaming"
    assert not health.streaming.complete
    assert everything.streaming is not None
    assert everything.streaming.line == "trades: 2 of 2 accounts streaming"
    assert everything.streaming.complete


def test_streaming_takes_no_word_or_a_stale_word_for_no_stream(settings: Settings) -> None:
    silent = _working("demo", "paper_1")
    del silent["trades"]
    stale = _working("demo", "paper_1")
    stale["trades"] = _beat("trades", *stale["trades"].conditions, age_s=30)

    assert assess(settings, _infos(), silent, NOW_NS).streaming == Streaming(0, 2)
    assert assess(settings, _infos(), stale, NOW_NS).streaming == Streaming(0, 2)


def test_streaming_is_not_shown_when_trades_is_parked_or_no_account_streams(tmp_path: Path) -> None:
    settings = make_settings(Dsn("postgresql://u@127.0.0.1:1/x"), tmp_path)
    no_stream = make_settings(Dsn("postgresql://u@127.0.0.1:1/x"), tmp_path, ENABLE_TRADE_STREAM="0")

    parked = assess(settings, _infos(snapshot="STOPPED", trades="STOPPED"), {}, NOW_NS)
    without = assess(no_stream, _infos(), _working("demo", "paper_1"), NOW_NS)

    assert parked.streaming is None
    assert without.streaming is None


def test_first_cause_prefers_an_account() -> None:
    found = [Finding("cashflows", "", "FATAL"), Finding("snapshot", "demo", "credentials rejected")]

    assert first_cause(found) == found[1]
    assert first_cause([]) is None


def test_conditions_keep_the_last_word_and_when_it_changed() -> None:
    clock = iter([1, 2, 3]).__next__
    conditions = runtime.Conditions(clock_ns=clock)

    conditions.failed(NEED_STREAM, "trade stream disconnected\n(reconnecting)", "demo")
    conditions.failed(NEED_STREAM, "trade stream disconnected (reconnecting)", "demo")  # same: no change
    conditions.ok(NEED_STREAM, "demo")

    assert conditions.reported() == (Condition(need=NEED_STREAM, account="demo", ok=True, since=2),)


@pytest.mark.asyncio
async def test_broker_rest_reports_rejected_and_accepted_credentials(fake_broker: FakeBroker) -> None:
    """GET /v2/account against the fake broker with a wrong secret, then the right one
    (the 403 body follows Alpaca's {"code", "message"} error shape: docs/broker.md)."""
    key, secret = fake_broker.keys("demo")
    on_broker = {"ALPACA_API_KEY_DEMO": key, "ALPACA_BASE_URL_DEMO": fake_broker.base_url}
    dsn = Dsn("postgresql://u@h/x")
    wrong = make_settings(dsn, accounts=("demo",), ALPACA_SECRET_KEY_DEMO="not-the-secret", **on_broker)
    right = make_settings(dsn, accounts=("demo",), ALPACA_SECRET_KEY_DEMO=secret, **on_broker)
    conditions = runtime.Conditions(clock_ns=time.time_ns)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(BrokerError, match="call=GET /account: status 403, code 40310000"):
            await BrokerRest(wrong.accounts[0], session, conditions=conditions).get("/account")
        refused = conditions.reported()
        await BrokerRest(right.accounts[0], session, conditions=conditions).get("/account")
        accepted = conditions.reported()

    assert [(c.need, c.account, c.ok) for c in refused] == [(NEED_BROKER, "demo", False)]
    assert refused[0].cause.startswith(f"credentials rejected by {fake_broker.base_url} (HTTP 40")
    assert refused[0].cause.endswith("check ALPACA_API_KEY_DEMO and ALPACA_SECRET_KEY_DEMO")
    assert "not-the-secret" not in refused[0].cause
    assert [(c.need, c.account, c.ok) for c in accepted] == [(NEED_BROKER, "demo", True)]

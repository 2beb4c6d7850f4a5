"""Nothing lost across a restart: cash activities booked while `state` is down are stored after.

Real processes over ipc:// (bus, state, cashflows), real PostgreSQL, the fake broker's
``POST /sim/activities`` (Alpaca's non-trade activity shape,
https://docs.alpaca.markets/reference/getaccountactivities). ``cashflows`` pulls every 2 s, so
it publishes the new dividends while `state` is stopped (they are lost on the bus); the cursor
it resumes from is what `state` stored, and `state`'s start resync makes it re-send them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coldharbour.config import Dsn
from tests.fixtures.broker import FakeBroker
from tests.fixtures.stack import Db, Programs, all_clean, broker_environ
from tests.support import wait_for

pytestmark = pytest.mark.integration

CASH_FLOWS = "accounts.cash_flows_demo"


def test_cash_activities_booked_while_state_is_down_are_stored_after_it_returns(
    migrated_dsn: Dsn, fake_broker: FakeBroker, stack_dir: Path
) -> None:
    env = broker_environ(
        migrated_dsn, stack_dir, fake_broker.base_url, CASH_FLOWS_INTERVAL_S="2", SNAPSHOT_SEC="3600",
        FLUSH_INTERVAL_S="3600", UI_HEARTBEAT_S="3600",
    )  # fmt: skip
    db = Db(migrated_dsn)
    programs = Programs(env, stack_dir)

    def stored() -> set[str]:
        return {row[0] for row in db.rows(f"SELECT id FROM {CASH_FLOWS}")}

    try:
        first = fake_broker.post_activities([{"activity_type": "DIV", "net_amount": "1.00", "symbol": "MSFT"}])
        programs.start("bus", "state", "cashflows")
        wait_for(lambda: first[0]["id"] in stored(), 20, what="the first dividend stored")

        assert programs.stop("state") == 0
        published = programs.counter("cashflows", "activities_published")
        later = fake_broker.post_activities([
            {"activity_type": "DIV", "net_amount": "2.40", "symbol": "AAPL", "description": "Cash DIV"},
            {"activity_type": "INT", "net_amount": "0.31", "description": "credit interest"},
        ])  # fmt: skip
        programs.wait_counter("cashflows", "activities_published", published + 2)  # sent into the void
        lost_meanwhile = {a["id"] for a in later} - stored()

        programs.start("state")
        wait_for(lambda: {a["id"] for a in later} <= stored(), 30, what="the dividends booked while down stored")
        # The rows are stored, so they were sent again; the heartbeat carrying the counter may be
        # up to a second behind (reading it once raced it).
        resent = programs.wait_counter("cashflows", "activities_resent", 2, timeout_s=10)
    finally:
        db.close()
        codes = programs.close()

    assert all_clean(codes), programs.logs()
    assert lost_meanwhile == {a["id"] for a in later}
    assert resent >= 2  # wait_counter raised otherwise; kept to say what the test is about

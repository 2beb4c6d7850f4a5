"""Snapshot scheduling: each account keeps its own slot in the period (spread, not all at once)."""

from __future__ import annotations

import pytest

from coldharbour.broker.runner import next_slot_s


@pytest.mark.parametrize(("now_s", "phase_s", "expected"), [
    (1000.0, 30.0, 50.0),   # 1000 is 40 past a minute: the slot at 30 past is 50 s away
    (1000.0, 50.0, 70.0),   # 10 s away is under half a period: the slot after it
    (1020.0, 0.0, 60.0),    # on the slot itself: the next one
    (1030.0, 0.0, 50.0),
])  # fmt: skip
def test_next_slot_is_the_accounts_place_in_the_period_at_least_half_a_period_away(
    now_s: float, phase_s: float, expected: float
) -> None:
    assert next_slot_s(now_s, 60.0, phase_s) == pytest.approx(expected)


def test_accounts_with_spread_phases_read_the_broker_at_different_instants() -> None:
    accounts = 100
    instants = {round((1000.0 + next_slot_s(1000.0, 60.0, 60.0 * i / accounts)) % 60.0, 6) for i in range(accounts)}

    assert len(instants) == accounts

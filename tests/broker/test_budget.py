"""The per-key REST budget shared by every program through one locked file (docs/broker-budget.md).

Two ``RestBudget`` objects on the same file stand for two programs: each opens the file for
every decision, and ``flock`` locks belong to the open file, so they exclude each other exactly
as two processes do.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from coldharbour.broker.budget import BudgetStopped, RestBudget, key_file


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_window_is_a_hard_bound_across_programs(tmp_path: Path) -> None:
    clock = Clock()
    path = key_file(tmp_path, "PKTEST", "trading")
    snapshot = RestBudget(path, 4, burst=4, clock=clock)
    trades = RestBudget(path, 4, burst=4, clock=clock)
    assert [snapshot._try(urgent=True, take=True) for _ in range(2)] == [0.0, 0.0]
    assert [trades._try(urgent=True, take=True) for _ in range(2)] == [0.0, 0.0]
    clock.now += 20  # the bucket refilled (4/min), but the window still holds four requests
    assert trades._try(urgent=True, take=True) == pytest.approx(40.0)
    assert snapshot.figures().last_min == 4
    clock.now += 40.01
    assert snapshot._try(urgent=True, take=True) == 0.0
    assert "PKTEST" not in str(path)  # the file name says nothing of the key


def test_tokens_spread_the_budget_and_background_leaves_room(tmp_path: Path) -> None:
    clock = Clock()
    budget = RestBudget(tmp_path / "k.json", 40, clock=clock)  # burst 10, reserve 5, 2/3 a second
    assert budget.burst == 10
    assert budget.reserve == 5
    taken = 0
    while budget._try(urgent=False, take=True) == 0.0:
        taken += 1
    assert taken == 9  # background stops with one token left for an urgent request
    assert budget._try(urgent=True, take=True) == 0.0
    wait = budget._try(urgent=True, take=True)
    assert wait == pytest.approx(1.5)  # one token at 40 a minute
    # a minute of steady demand: background never takes the window's last `reserve` requests
    for _ in range(200):
        clock.now += 0.25
        budget._try(urgent=False, take=True)
    assert budget.figures().last_min <= 40 - budget.reserve
    assert budget._try(urgent=True, take=True) == 0.0


def test_pause_stops_everyone_and_counts(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "k.json"
    one, other = RestBudget(path, 40, clock=clock), RestBudget(path, 40, clock=clock)
    assert one.pause_until(clock.now + 3, limited=True) == pytest.approx(3)
    assert other._try(urgent=True, take=True) == pytest.approx(3)
    assert other.figures().limited == 1
    assert other.figures().paused_s == pytest.approx(3)
    assert one.pause_until(clock.now + 10_000, limited=False) <= 120  # a far reset is not believed
    assert other.figures().limited == 1


def test_unreadable_file_starts_again(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text('{"times": [1, 2')
    budget = RestBudget(path, 40)
    assert budget._try(urgent=True, take=True) == 0.0
    assert budget.figures().last_min == 1


def test_file_is_rewritten_in_place_and_a_tail_left_by_a_killed_writer_is_ignored(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "k.json"
    budget = RestBudget(path, 40, clock=clock)
    for _ in range(3):
        clock.now += 2
        assert budget._try(urgent=True, take=True) == 0.0
    written = path.read_bytes()
    clock.now += 61  # the window empties: the next document is shorter than the last
    assert budget._try(urgent=True, take=True) == 0.0
    assert len(path.read_bytes()) < len(written)  # the old document's tail was cut
    assert budget.figures().last_min == 1
    # killed between writing a document and cutting the longer one it replaced
    path.write_bytes(path.read_bytes() + b',"tokens":9,"at":1}')
    assert budget.figures().last_min == 1  # the window survives (a reset would allow a burst)


@pytest.mark.asyncio
async def test_acquire_waits_for_a_token_and_stops(tmp_path: Path) -> None:
    budget = RestBudget(tmp_path / "k.json", 600, burst=2)  # 10 a second
    for _ in range(3):  # the third waits ~0.1 s for a token
        await budget.acquire(urgent=True)
    assert budget.figures().last_min == 3
    budget.pause_until(time.time() + 60, limited=False)
    stop = asyncio.Event()
    waiting = asyncio.create_task(budget.acquire(stop, urgent=True))
    await asyncio.sleep(0)
    stop.set()
    with pytest.raises(BudgetStopped, match="stopped while waiting for the request budget of k"):
        await asyncio.wait_for(waiting, 5)

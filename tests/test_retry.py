"""The one backoff policy, stoppable waits, retry, reconnect and task supervisor (``coldharbour.retry``).

Time is ours: the backoff draws from a ``random.Random`` we pick the answers of, and the
supervisor sleeps and reads the time through a fake clock that only moves when it is slept on.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from coldharbour.retry import (
    MAX_CONSECUTIVE_CRASHES,
    Backoff,
    RetryStopped,
    Session,
    finish_or_cancel,
    keep_connected,
    poll_until,
    retry,
    sleep_or_stop,
    supervise,
    until_stopped,
    wait_any,
)


class EdgeRandom(random.Random):
    """``uniform`` answers the low or the high end of its range, as told."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


class FakeClock:
    """Monotonic time that moves only when something sleeps on it; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, stop: asyncio.Event, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return stop.is_set()


def test_backoff_doubles_up_to_the_cap_with_equal_jitter() -> None:
    high, low = Backoff(1.0, 10.0, rng=EdgeRandom(True)), Backoff(1.0, 10.0, rng=EdgeRandom(False))

    highs = [high.next_delay() for _ in range(6)]
    lows = [low.next_delay() for _ in range(6)]

    assert highs == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert lows == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert high.attempts == 6


def test_backoff_reset_starts_again_and_attempts_can_start_later() -> None:
    backoff = Backoff(1.0, 30.0, rng=EdgeRandom(True))
    for _ in range(4):
        backoff.next_delay()

    backoff.reset()
    after_reset = backoff.next_delay()
    resumed = Backoff(1.0, 30.0, attempts=3, rng=EdgeRandom(True)).next_delay()

    assert after_reset == 1.0
    assert resumed == 8.0  # the fourth attempt


def test_backoff_survives_a_huge_attempt_count() -> None:
    backoff = Backoff(0.5, 15.0, attempts=10_000, rng=EdgeRandom(True))

    assert backoff.next_delay() == 15.0


@pytest.mark.parametrize(("base_s", "cap_s"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_backoff_refuses_a_policy_that_cannot_work(base_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match=r"expected 0 < base_s <= cap_s"):
        Backoff(base_s, cap_s)


@pytest.mark.asyncio
async def test_sleep_or_stop_returns_false_when_the_time_passed() -> None:
    assert await sleep_or_stop(asyncio.Event(), 0.0) is False


@pytest.mark.asyncio
async def test_sleep_or_stop_returns_true_at_once_when_stopped_during_a_long_sleep() -> None:
    stop = asyncio.Event()
    sleeper = asyncio.create_task(sleep_or_stop(stop, 3600.0))
    await asyncio.sleep(0)
    still_sleeping = not sleeper.done()

    stop.set()
    stopped = await asyncio.wait_for(sleeper, 5)

    assert still_sleeping
    assert stopped is True


@pytest.mark.asyncio
async def test_sleep_or_stop_already_stopped_does_not_wait() -> None:
    stop = asyncio.Event()
    stop.set()

    assert await asyncio.wait_for(sleep_or_stop(stop, 3600.0), 5) is True


@pytest.mark.asyncio
async def test_wait_any_returns_true_when_the_second_event_is_set() -> None:
    first, second = asyncio.Event(), asyncio.Event()
    waiter = asyncio.create_task(wait_any(3600.0, first, second))
    await asyncio.sleep(0)
    still_waiting = not waiter.done()

    second.set()

    assert still_waiting
    assert await asyncio.wait_for(waiter, 5) is True
    assert not first.is_set()


@pytest.mark.asyncio
async def test_wait_any_returns_false_after_the_timeout_and_leaves_no_waiter_behind() -> None:
    event = asyncio.Event()
    before = len(asyncio.all_tasks())

    assert await wait_any(0.0, event) is False
    assert len(asyncio.all_tasks()) == before


@pytest.mark.asyncio
async def test_wait_any_without_a_timeout_waits_for_an_event_only() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_any(None, event))
    for _ in range(5):
        await asyncio.sleep(0)
    still_waiting = not waiter.done()

    event.set()

    assert still_waiting
    assert await asyncio.wait_for(waiter, 5) is True


def test_poll_until_checks_until_ready_and_sleeps_between_checks() -> None:
    answers = iter([False, False, True])
    slept: list[float] = []

    ready = poll_until(lambda: next(answers), 10.0, interval_s=0.5, monotonic=lambda: 0.0, sleep=slept.append)

    assert ready is True
    assert slept == [0.5, 0.5]


def test_poll_until_gives_up_at_the_deadline() -> None:
    now = [0.0]
    checks = 0

    def never() -> bool:
        nonlocal checks
        checks += 1
        return False

    def sleep(seconds: float) -> None:
        now[0] += seconds

    ready = poll_until(never, 1.0, interval_s=0.25, monotonic=lambda: now[0], sleep=sleep)

    assert ready is False
    assert checks == 5  # at 0, 0.25, 0.5, 0.75 and once more at the deadline
    assert now[0] == 1.0


@pytest.mark.asyncio
async def test_until_stopped_returns_true_when_the_work_completes() -> None:
    async def work() -> str:
        return "done"

    assert await until_stopped(work(), asyncio.Event()) is True


@pytest.mark.asyncio
async def test_until_stopped_cancels_the_work_when_stopped_first() -> None:
    stop = asyncio.Event()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runner = asyncio.create_task(until_stopped(forever(), stop))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()

    assert await asyncio.wait_for(runner, 5) is False
    assert cancelled.is_set()


@pytest.mark.asyncio
async def test_until_stopped_raises_the_works_own_error() -> None:
    async def broken() -> None:
        raise ValueError("job failed: account paper")

    with pytest.raises(ValueError, match="job failed: account paper"):
        await until_stopped(broken(), asyncio.Event())


@pytest.mark.asyncio
async def test_until_stopped_gives_the_work_its_grace_to_end_on_its_own_after_stop() -> None:
    """A connection closing cleanly on ``stop`` finishes within the grace: it is not cancelled."""
    stop = asyncio.Event()
    closed = []

    async def closes_on_stop() -> None:
        await stop.wait()
        await asyncio.sleep(0)  # one more turn of the loop: the close handshake
        closed.append(True)

    runner = asyncio.create_task(until_stopped(closes_on_stop(), stop, grace_s=5.0))
    stop.set()

    assert await asyncio.wait_for(runner, 5) is True
    assert closed == [True]


@pytest.mark.asyncio
async def test_finish_or_cancel_cancels_a_task_that_overstays_and_keeps_one_that_finished() -> None:
    never = asyncio.create_task(asyncio.Event().wait())
    finished = asyncio.Event()
    finished.set()
    quick = asyncio.create_task(finished.wait())

    assert await finish_or_cancel(never, 0.01) is False
    assert never.cancelled()
    assert await finish_or_cancel(quick, 5.0) is True


class Flaky:
    """Fails with the given errors in turn, then answers ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.called = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self.called.set()
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.mark.asyncio
async def test_retry_waits_the_backoff_after_each_accepted_failure_then_returns() -> None:
    clock = FakeClock()
    attempt = Flaky(ConnectionError("down"), ConnectionError("still down"))
    backoff = Backoff(1.0, 60.0, rng=EdgeRandom(high=True))
    seen: list[tuple[str, int, float]] = []

    result = await retry(attempt, stop=asyncio.Event(), backoff=backoff, sleep=clock.sleep,
                         retry_if=lambda e: isinstance(e, ConnectionError),
                         on_retry=lambda e, n, delay: seen.append((str(e), n, delay)))  # fmt: skip

    assert result == "ok"
    assert attempt.calls == 3
    assert clock.sleeps == [1.0, 2.0]
    assert seen == [("down", 1, 1.0), ("still down", 2, 2.0)]
    assert backoff.attempts == 2


@pytest.mark.asyncio
async def test_retry_caps_each_delay_at_max_delay() -> None:
    clock = FakeClock()
    attempt = Flaky(*(ConnectionError("down") for _ in range(4)))

    await retry(attempt, stop=asyncio.Event(), backoff=Backoff(1.0, 60.0, rng=EdgeRandom(high=True)),
                retry_if=lambda e: True, max_delay_s=3.0, sleep=clock.sleep)  # fmt: skip

    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]


@pytest.mark.asyncio
async def test_retry_raises_a_failure_it_does_not_accept_at_once() -> None:
    clock = FakeClock()
    attempt = Flaky(ValueError("schema newer than this code"))

    with pytest.raises(ValueError, match="schema newer than this code"):
        await retry(attempt, stop=asyncio.Event(), backoff=Backoff(1.0, 60.0),
                    retry_if=lambda e: isinstance(e, ConnectionError), sleep=clock.sleep)  # fmt: skip
    assert attempt.calls == 1
    assert clock.sleeps == []


@pytest.mark.asyncio
async def test_retry_stopped_during_the_wait_raises_retry_stopped_with_the_last_failure() -> None:
    stop = asyncio.Event()
    attempt = Flaky(ConnectionError("down"), ConnectionError("never tried"))
    task = asyncio.create_task(retry(attempt, stop=stop, backoff=Backoff(3600.0, 3600.0),
                                     retry_if=lambda e: True))  # fmt: skip
    await asyncio.wait_for(attempt.called.wait(), 5)

    stop.set()

    with pytest.raises(RetryStopped, match="stopped while retrying after: down") as raised:
        await asyncio.wait_for(task, 5)
    assert str(raised.value.last) == "down"
    assert attempt.calls == 1


@pytest.mark.asyncio
async def test_keep_connected_backs_off_after_failures_and_starts_again_after_a_delivery() -> None:
    clock = FakeClock()
    stop = asyncio.Event()
    outcomes = [Session.FAILED, Session.FAILED, Session.DELIVERED, Session.FAILED, Session.AT_ONCE]
    retries: list[tuple[int, float]] = []

    async def session() -> Session:
        outcome = outcomes.pop(0)
        if not outcomes:
            stop.set()
        return outcome

    await keep_connected(session, stop, Backoff(1.0, 60.0, rng=EdgeRandom(high=True)), sleep=clock.sleep,
                         on_retry=lambda n, delay: retries.append((n, delay)))  # fmt: skip

    # Two failures: 1 s, 2 s. A delivery resets (1 s). Another failure: 2 s. AT_ONCE: stopped, no wait.
    assert clock.sleeps == [1.0, 2.0, 1.0, 2.0]
    assert retries == [(1, 1.0), (2, 2.0), (1, 1.0), (2, 2.0)]


@pytest.mark.asyncio
async def test_keep_connected_reconnects_at_once_when_the_session_asks() -> None:
    clock = FakeClock()
    stop = asyncio.Event()
    outcomes = [Session.AT_ONCE, Session.AT_ONCE, Session.FAILED]
    calls = 0

    async def session() -> Session:
        nonlocal calls
        calls += 1
        outcome = outcomes.pop(0)
        if not outcomes:
            stop.set()
        return outcome

    await keep_connected(session, stop, Backoff(1.0, 60.0), sleep=clock.sleep)

    assert calls == 3
    assert clock.sleeps == []


def _crashing(
    runs: list[float], clock: FakeClock, *, crashes: int, lasting_s: float = 0.0
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        runs.append(clock.now)
        clock.now += lasting_s
        if len(runs) <= crashes:
            raise RuntimeError(f"crash {len(runs)}")

    return run


@pytest.mark.asyncio
async def test_supervise_restarts_a_crashed_task_with_backoff_and_counts_it() -> None:
    clock, counters, runs = FakeClock(), Counter[str](), list[float]()

    await supervise(
        "t", _crashing(runs, clock, crashes=3), asyncio.Event(), counters,
        backoff=Backoff(1.0, 60.0, rng=EdgeRandom(True)), sleep=clock.sleep, monotonic=clock.monotonic,
    )  # fmt: skip

    assert len(runs) == 4  # three crashes, then a clean return
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert counters["task_restarts"] == 3


@pytest.mark.asyncio
async def test_supervise_raises_when_the_task_keeps_crashing(caplog: pytest.LogCaptureFixture) -> None:
    clock, counters, runs = FakeClock(), Counter[str](), list[float]()

    with pytest.raises(RuntimeError, match=f"crash {MAX_CONSECUTIVE_CRASHES}"):
        await supervise("acct-demo", _crashing(runs, clock, crashes=100), asyncio.Event(), counters,
                        sleep=clock.sleep, monotonic=clock.monotonic)

    assert len(runs) == MAX_CONSECUTIVE_CRASHES
    assert counters["task_restarts"] == MAX_CONSECUTIVE_CRASHES
    assert "task failed name=acct-demo crashes=1" in caplog.text


@pytest.mark.asyncio
async def test_supervise_forgets_crashes_after_a_healthy_run() -> None:
    # Each run lasts 100 s before it crashes: longer than ``healthy_after_s``, so no crash is
    # "in a row" with the one before it and the backoff starts again every time.
    clock, counters, runs = FakeClock(), Counter[str](), list[float]()
    crashes = MAX_CONSECUTIVE_CRASHES * 2

    await supervise(
        "t", _crashing(runs, clock, crashes=crashes, lasting_s=100.0), asyncio.Event(), counters,
        backoff=Backoff(1.0, 60.0, rng=EdgeRandom(True)), healthy_after_s=60.0,
        sleep=clock.sleep, monotonic=clock.monotonic,
    )  # fmt: skip

    assert counters["task_restarts"] == crashes
    assert clock.sleeps == [1.0] * crashes


@pytest.mark.asyncio
async def test_supervise_returns_when_stopped_during_the_backoff() -> None:
    clock, counters, runs = FakeClock(), Counter[str](), list[float]()
    stop = asyncio.Event()

    async def sleep(event: asyncio.Event, seconds: float) -> bool:
        stop.set()  # SIGTERM arrives while the task waits to restart
        return await clock.sleep(event, seconds)

    await supervise("t", _crashing(runs, clock, crashes=100), stop, counters, sleep=sleep, monotonic=clock.monotonic)

    assert len(runs) == 1
    assert counters["task_restarts"] == 1

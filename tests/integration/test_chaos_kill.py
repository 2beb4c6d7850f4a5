"""Chaos: ``kill -9`` of each of the nine programs during a burst of fills and ticks.

One supervisord stack serves the module (``chaos_stack``). Each scenario places a burst of
orders through unmodified alpaca-py (market orders both ways and brackets whose exits the
random price walk reaches), moves the fake broker's prices and publishes feed ticks, and kills
one program half-way. Once supervisord has restarted it, within 10 s: no broker fill is missing
from the database, no exit is booked twice, the open rows equal the broker's positions per
symbol, the stored closed slices equal a ledger rebuilt from the stored history, and ``state``'s
own ledger check (``hb.state`` counters) finds no mismatch. Each scenario prints its figures.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest, StopLossRequest, TakeProfitRequest

from coldharbour.runtime import PROGRAMS
from tests.fixtures.stack import Figures, Stack, leaked_secrets, report
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SYMBOLS = ("AAPL", "MSFT", "NVDA")
ORDERS_BEFORE_KILL = 10
ORDERS_AFTER_RESTART = 10
MAX_ORDERS = 200
# A deadline for a run that never converges, not a speed target: the seconds it took are a
# reported figure (speed targets live in scripts/bench).
CONVERGE_TIMEOUT_S = 120.0
RESTART_TIMEOUT_S = 30.0


class Burst:
    """Orders, price moves and ticks with a seeded random walk; counts what it sent."""

    def __init__(self, stack: Stack, seed: int) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.client = stack.broker.trading_client()
        self.prices = dict.fromkeys(SYMBOLS, 100.0)
        self.orders = self.rejected = self.moves = self.ticks = 0

    def move(self) -> None:
        """Walk every price by up to ±1.5 % at the broker, and tick each on the feed."""
        for symbol in SYMBOLS:
            self.prices[symbol] = round(self.prices[symbol] * (1 + self.rng.uniform(-0.015, 0.015)), 2)
        self.stack.broker.set_prices(self.prices)
        self.moves += 1
        for symbol, price in self.prices.items():
            self.stack.tick(symbol, price)
            self.ticks += 1

    def order(self) -> None:
        """Place one market order (a bracket one time in three); a refusal is counted."""
        symbol = self.rng.choice(SYMBOLS)
        price = self.prices[symbol]
        qty = self.rng.randint(1, 5)
        if self.rng.random() < 1 / 3:
            request = MarketOrderRequest(
                symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
                order_class=OrderClass.BRACKET, take_profit=TakeProfitRequest(limit_price=round(price * 1.01, 2)),
                stop_loss=StopLossRequest(stop_price=round(price * 0.99, 2)),
            )  # fmt: skip
        else:
            side = self.rng.choice((OrderSide.BUY, OrderSide.SELL))
            request = MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.GTC)
        try:
            self.client.submit_order(request)
            self.orders += 1
        except APIError:  # e.g. a sell crossing through zero against held bracket exits
            self.rejected += 1

    def step(self) -> None:
        """Move the prices, then place one order."""
        self.move()
        self.order()

    @property
    def sent(self) -> int:
        """Return every event the burst caused at the broker or on the feed."""
        return self.orders + self.moves + self.ticks


def _beating_again(stack: Stack, program: str, killed: int) -> int | None:
    """Return the new pid once a new ``program`` process publishes heartbeats."""
    beat = stack.beats().get(program)
    return beat.pid if beat is not None and beat.pid != killed and beat.state == "running" else None


def _converged(stack: Stack, since_checks: int, mismatches_before: int) -> Figures | None:
    """Return the figures once they are clean and ``state`` has checked its ledger since."""
    state = stack.beats().get("state")
    if state is None or state.pid != stack.pid("state"):
        return None
    checks, found = state.counters.get("ledger_checks", 0), state.counters.get("ledger_mismatches", 0)
    if checks <= since_checks or found != mismatches_before:
        return None
    figures = stack.figures()
    return figures if figures.clean else None


@pytest.mark.parametrize("program", PROGRAMS)
def test_chaos_kill_9_during_burst_converges_to_broker(chaos_stack: Stack, program: str) -> None:
    stack = chaos_stack
    wait_for(stack.beating, 60, interval_s=0.2, what="every program healthy before the scenario")
    burst = Burst(stack, seed=PROGRAMS.index(program))
    before = stack.beats()["state"].counters
    fills_before = len(stack.broker.fill_executions())
    killed = stack.pid(program)
    assert killed is not None

    for _ in range(ORDERS_BEFORE_KILL):
        burst.step()
    os.kill(killed, signal.SIGKILL)
    # Keep trading until the new process beats on the bus, then a little more.
    new_pid = None
    while new_pid is None and burst.orders + burst.rejected < MAX_ORDERS:
        burst.step()
        new_pid = _beating_again(stack, program, killed)
    new_pid = new_pid or wait_for(lambda: _beating_again(stack, program, killed), RESTART_TIMEOUT_S,
                                  what=f"{program} restarted and beating")  # fmt: skip
    restarted_at = time.monotonic()
    for _ in range(ORDERS_AFTER_RESTART):
        burst.step()
    # A restarted state counts from zero; otherwise its counters keep going.
    checks = 0 if program == "state" else stack.beats()["state"].counters.get("ledger_checks", 0)
    mismatches = 0 if program == "state" else before.get("ledger_mismatches", 0)
    try:
        figures = wait_for(
            lambda: _converged(stack, checks, mismatches), CONVERGE_TIMEOUT_S,
            interval_s=0.25, what=f"database equal to the broker after kill -9 of {program}",
        )  # fmt: skip
    except AssertionError:
        figures = stack.figures()
        report(f"kill-9 {program}", converged=False, detail=figures.detail)
        raise
    seconds = time.monotonic() - restarted_at
    assert figures is not None
    report(
        f"kill-9 {program}", events_sent=burst.sent, orders=burst.orders, refused=burst.rejected,
        fills=figures.fills - fills_before, lost=figures.lost, duplicates=figures.duplicates,
        mismatches=figures.mismatches, recon_fills=figures.recon_fills, seconds_to_converge=round(seconds, 2),
    )  # fmt: skip

    assert new_pid != killed
    assert figures.lost == figures.duplicates == figures.mismatches == 0
    assert leaked_secrets(stack) == []

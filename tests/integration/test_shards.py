"""Shards: two stacks on one PostgreSQL, accounts ``alpha``,``beta`` on the first and ``gamma`` on the second.

One fake broker serves the three accounts (``--account NAME:KEY:SECRET``); each stack has its
own run dir (bus sockets, supervisord), its own price feed PUB socket bound by the test, and
runs every program under supervisord. The same orders go to the three accounts through
unmodified alpaca-py while both stacks run. Checked:

- ownership: the first stack's ``state`` holds the shared lock (``hb.state`` counter
  ``shared_writer``), the second does not and drops its shared changes (``shared_changes_skipped``);
- prices are written by one stack only: a symbol only the second stack's feed carries never
  reaches ``latest_prices`` while the first stack writes; a symbol only the first one's feed
  carries does, and ``market_schedule`` is stored;
- ``kill -9`` of the first stack's ``state`` (the shared writer): the second stack takes the
  shared writes over within a few seconds (its counter ``shared_takeovers``, and its feed's
  symbol reaching ``latest_prices``), while supervisord restarts the killed ``state``, which gets
  its accounts back without the shared lock;
- ``chmgr doctor`` says which process owns each account and the shared tables;
- a third stack for ``alpha`` is refused: ``python -m workers.state`` exits 1 with one line
  naming the account and the owning process;
- every account's rows are exact: no broker fill missing, no exit booked twice, open rows equal
  the broker's positions, stored closed slices equal a ledger rebuilt from the stored history.

Broker payloads come from the fake broker (``coldharbour/sim``), whose shapes follow Alpaca's
trading API reference (https://docs.alpaca.markets/reference/postorder,
https://docs.alpaca.markets/reference/getaccountactivitiesbyactivitytype).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from coldharbour.config import Dsn
from coldharbour.db.names import account_names
from coldharbour.messages import Heartbeat
from coldharbour.runtime import PROGRAMS
from coldharbour.sim.postgres import PgCluster
from tests.fixtures.stack import (
    BrokerProcess,
    Feed,
    Figures,
    HeartbeatWatch,
    Stack,
    broker_environ,
    report,
    run_stack,
    short_directory,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

ACCOUNTS = {name: (f"{name}-key-S7d2", f"{name}-secret-S7d2") for name in ("alpha", "beta", "gamma")}
SHARDS = (("alpha", "beta"), ("gamma",))
SETTINGS = {
    "DISABLE_SESSION_SLEEP": "1", "SNAPSHOT_SEC": "2", "CLOSED_SYNC_SEC": "2", "FLUSH_INTERVAL_S": "0.5",
    "UI_HEARTBEAT_S": "1", "BACKFILL_DAYS": "1", "METRICS_INTERVAL_S": "2", "EQUITY_UPDATE_INTERVAL_S": "5",
    "CASH_FLOWS_INTERVAL_S": "5", "LOG_LEVEL": "INFO",
}  # fmt: skip
SYMBOLS = ("AAPL", "MSFT")
ONLY_FIRST, ONLY_SECOND = "ZFST", "ZSND"  # feed symbols only one stack's feed carries
ROUNDS_BEFORE_KILL = 6
ROUNDS_AFTER_KILL = 6
TAKEOVER_TIMEOUT_S = 60.0  # a deadline, not a target: two lock retries (2 s each) take ~5 s; takeover_s is reported
CONVERGE_S = 45.0
STARTUP_S = 90.0


class Shard:
    """One stack: its environment, supervisord, feed socket, heartbeat watch and one ``Stack`` view per account."""

    def __init__(self, env: dict[str, str], views: dict[str, Stack], feed: Feed, heartbeats: HeartbeatWatch) -> None:
        self.env, self.views, self.feed, self.heartbeats = env, views, feed, heartbeats
        self.any = next(iter(views.values()))

    def state(self) -> Heartbeat | None:
        """Return the latest ``hb.state`` of the RUNNING ``state`` process (None before it beats)."""
        beat = self.heartbeats.poll().get("state")
        return beat if beat is not None and beat.pid == self.any.pid("state") and beat.state == "running" else None

    def counter(self, name: str) -> int:
        """Return ``name`` from the running ``state``'s heartbeat counters (-1 before it beats)."""
        beat = self.state()
        return -1 if beat is None else beat.counters.get(name, 0)

    def tick(self, symbol: str, price: float) -> None:
        """Publish one trade print on this stack's feed."""
        self.feed.send(symbol, price)


def _environment(dsn: Dsn, directory: Path, broker: BrokerProcess, accounts: tuple[str, ...],
                 **extra: str) -> dict[str, str]:  # fmt: skip
    return broker_environ(dsn, directory, broker.base_url, accounts={name: ACCOUNTS[name] for name in accounts},
                          **{**SETTINGS, **extra})  # fmt: skip


def _view(stack: Stack, slug: str) -> Stack:
    account_broker = copy.copy(stack.broker)  # same process and session, this account's credentials
    account_broker.key, account_broker.secret = ACCOUNTS[slug]
    view = Stack(stack.env, stack.run_dir, stack.conf, account_broker, stack.dsn)
    view.names = account_names(view.settings, slug)
    view.heartbeats = stack.heartbeats
    return view


@contextlib.contextmanager
def _shard(dsn: Dsn, broker: BrokerProcess, accounts: tuple[str, ...], work: Path) -> Iterator[Shard]:
    """One stack of ``accounts`` on the shared database and broker (``run_stack``)."""
    directory = short_directory("chs-")
    work.mkdir(parents=True, exist_ok=True)
    env = _environment(dsn, directory, broker, accounts)
    feed = Feed(env["ZMQ_SIP_STREAM_ENDPOINT"])
    try:
        with run_stack(env, work, broker, dsn) as first:
            first.heartbeats = HeartbeatWatch(first.settings.bus_out)
            try:
                yield Shard(env, {slug: _view(first, slug) for slug in accounts}, feed, first.heartbeats)
            finally:
                first.heartbeats.close()
    finally:
        feed.close()
        shutil.rmtree(directory, ignore_errors=True)


def _stored_prices(view: Stack) -> set[str]:
    return {row[0] for row in view.query("SELECT symbol FROM accounts.latest_prices")}


def _clean(views: list[Stack]) -> list[Figures] | None:
    figures = [view.figures() for view in views]
    return figures if all(f.clean for f in figures) and all(f.fills for f in figures) else None


class Orders:
    """The same seeded sequence of market orders for every account, and the price walk behind them."""

    def __init__(self, broker: BrokerProcess, views: list[Stack], shards: list[Shard]) -> None:
        self.broker, self.shards = broker, shards
        self.clients = [view.broker.trading_client() for view in views]
        self.rng = random.Random(17)
        self.prices = dict.fromkeys(SYMBOLS, 100.0)
        self.placed = self.refused = 0

    def round(self) -> None:
        """Move the prices (broker and both feeds), then place one order in every account."""
        for symbol in SYMBOLS:
            self.prices[symbol] = round(self.prices[symbol] * (1 + self.rng.uniform(-0.01, 0.01)), 2)
        self.broker.set_prices(self.prices)
        for shard in self.shards:
            for symbol, price in self.prices.items():
                shard.tick(symbol, price)
        symbol, qty = self.rng.choice(SYMBOLS), self.rng.randint(1, 5)
        side = self.rng.choice((OrderSide.BUY, OrderSide.BUY, OrderSide.SELL))
        request = MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.GTC)
        for client in self.clients:
            try:
                client.submit_order(request)
                self.placed += 1
            except APIError:
                self.refused += 1


def _third_stack_refused(dsn: Dsn, broker: BrokerProcess, owner_pid: int) -> None:
    directory = short_directory("chs3-")
    try:
        env = _environment(dsn, directory, broker, ("alpha",), LOG_LEVEL="WARNING")
        result = subprocess.run([sys.executable, "-m", "workers.state"], env=env, capture_output=True, text=True,
                                timeout=60, check=False)  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith(f"account alpha is owned by another stack (pid {owner_pid} on host "
                             f"{socket.gethostname()})"), lines[0]  # fmt: skip


def test_two_stacks_one_database_own_their_accounts_and_one_writes_shared_tables(
    pg_cluster: PgCluster, migrated_template: str, tmp_path: Path
) -> None:
    database = pg_cluster.create_database(template=migrated_template)
    dsn = pg_cluster.dsn(database)
    broker = BrokerProcess(tmp_path / "broker.log", tuple(f"{n}:{k}:{s}" for n, (k, s) in ACCOUNTS.items()))
    try:
        with _shard(dsn, broker, SHARDS[0], tmp_path / "first") as first:
            wait_for(lambda: first.counter("shared_writer") == 1, STARTUP_S, interval_s=0.2,
                     what="the first stack's state writing the shared tables")  # fmt: skip
            with _shard(dsn, broker, SHARDS[1], tmp_path / "second") as second:
                _run(broker, dsn, first, second)
    finally:
        broker.stop()
        pg_cluster.drop_database(database)


def _run(broker: BrokerProcess, dsn: Dsn, first: Shard, second: Shard) -> None:
    views = [*first.views.values(), *second.views.values()]
    wait_for(lambda: all(shard.any.beating(PROGRAMS) for shard in (first, second)), STARTUP_S, interval_s=0.2,
             what="every program of both stacks beating")  # fmt: skip
    wait_for(lambda: broker.listeners() == len(ACCOUNTS), 60, what="one trade_updates stream per account")
    assert second.counter("shared_writer") == 0
    owner_pid = first.any.pid("state")
    assert owner_pid is not None
    _third_stack_refused(dsn, broker, owner_pid)

    # Prices: each stack's feed has a symbol of its own; only the writer's reaches latest_prices.
    def fed_and_flushed() -> bool:
        first.tick(ONLY_FIRST, 10.0)
        second.tick(ONLY_SECOND, 20.0)
        return ONLY_FIRST in _stored_prices(first.any) and second.counter("shared_changes_skipped") > 0

    wait_for(fed_and_flushed, 30, interval_s=0.5, what="the first stack's feed price stored, the second's skipped")
    skipped_before = second.counter("shared_changes_skipped")
    wait_for(lambda: second.counter("shared_changes_skipped") > skipped_before, 10, what="another skipped flush")
    assert ONLY_SECOND not in _stored_prices(first.any)
    assert first.any.query("SELECT count(*) FROM accounts.market_schedule")[0][0] > 0

    orders = Orders(broker, views, [first, second])
    for _ in range(ROUNDS_BEFORE_KILL):
        orders.round()
    os.kill(owner_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    for _ in range(ROUNDS_AFTER_KILL):
        orders.round()
    wait_for(lambda: second.counter("shared_writer") == 1, TAKEOVER_TIMEOUT_S, interval_s=0.1,
             what="the second stack taking the shared writes over")  # fmt: skip
    takeover_s = time.monotonic() - killed_at
    assert second.counter("shared_takeovers") == 1

    def second_writes_prices() -> bool:
        second.tick(ONLY_SECOND, 21.0)
        return ONLY_SECOND in _stored_prices(second.any)

    wait_for(second_writes_prices, 10, interval_s=0.5, what="the second stack's feed price stored")
    # The killed state is back (supervisord), owns alpha and beta again, and does not write shared tables.
    restarted = wait_for(lambda: first.state(), 60, interval_s=0.2, what="the first stack's state restarted")
    assert restarted.pid != owner_pid
    assert restarted.counters.get("shared_writer") == 0
    _third_stack_refused(dsn, broker, restarted.pid)

    # `chmgr doctor` (from the first stack) says who owns what, gamma included (known from the schema).
    second_pid = second.any.pid("state")
    host = socket.gethostname()
    doctor = first.any.chmgr("doctor").stdout.splitlines()
    for what, pid in (("account alpha", restarted.pid), ("account beta", restarted.pid),
                      ("account gamma", second_pid), ("shared tables", second_pid)):
        assert any(line.startswith(f"OK   {what}: owned by chmgr-state@{host}:{pid} ") for line in doctor), doctor

    figures = wait_for(lambda: _clean(views), CONVERGE_S, interval_s=1.0, what="every account exact")
    assert second.counter("shared_writer") == 1
    assert first.counter("shared_writer") == 0
    report("shards", orders=orders.placed, refused=orders.refused, takeover_s=round(takeover_s, 2),
           fills={slug: f.fills for slug, f in zip([*first.views, *second.views], figures, strict=True)})

"""``state`` in-process: real PostgreSQL, real in-proc bus, a LISTEN client; no mocks, no sleeps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
import pytest_asyncio

from coldharbour.domain.types import NS_PER_DAY, from_datetime
from coldharbour.errors import ChmgrError
from coldharbour.health import NEED_DATABASE, NEED_SNAPSHOT
from coldharbour.messages import (
    CorporateActionsPage,
    FillsPage,
    LedgerCheckRequested,
    MetricsComputed,
    OrdersPage,
    OrderUpdated,
    SnapshotTaken,
    Tick,
    topic_fills,
    topic_ledger_check,
    topic_metrics,
    topic_orders,
    topic_resync,
    topic_snapshot,
    topic_tick,
    topic_trade,
)
from tests.support import async_wait_for
from tests.workers.state_harness import T0, StateHarness, fill, new_id, order, position

pytestmark = pytest.mark.asyncio
POS = "accounts.account_open_positions_demo"
CLOSED = "accounts.account_closed_demo"
MINUTE = 60 * 1_000_000_000


@pytest_asyncio.fixture

async def state(migrated_dsn: Any, bus: Any, request: pytest.FixtureRequest) -> AsyncIterator[StateHarness]:
    env = getattr(request, "param", {})
    harness = StateHarness(migrated_dsn, bus, **env)
    await harness.start()
    yield harness
    await harness.close()


class Bracket:
    """A long bracket on AAPL: entry E (10 @ 100), TP leg at 110, SL leg at 95."""

    def __init__(self) -> None:
        self.entry_id, self.tp_id, self.sl_id = new_id(), new_id(), new_id()
        self.tp = order(id=self.tp_id, side="sell", order_type="limit", limit_price=Decimal(110),
                        parent_id=self.entry_id, order_class="bracket")
        self.sl = order(id=self.sl_id, side="sell", order_type="stop", stop_price=Decimal(95),
                        parent_id=self.entry_id, order_class="bracket")
        self.entry = order(id=self.entry_id, status="filled", filled_qty=Decimal(10), filled_avg_price=Decimal(100),
                           order_class="bracket", legs=(self.tp_id, self.sl_id))

        self._entry_fill = fill(self.entry_id, cum_qty=Decimal(10))
        self._tp_fill = self._take_profit()

    def entry_fill(self) -> OrderUpdated:
        return OrderUpdated(account="demo", event="fill", order=self.entry, legs=(self.tp, self.sl),
                            fill=self._entry_fill, event_ts=T0)

    def tp_fill(self) -> list[OrderUpdated]:
        return self._tp_fill

    def _take_profit(self) -> list[OrderUpdated]:
        when = T0 + 5 * MINUTE
        tp = msgspec.structs.replace(self.tp, status="filled", filled_qty=Decimal(10),
                                     filled_avg_price=Decimal(110), updated_at=when)
        sl = msgspec.structs.replace(self.sl, status="canceled", updated_at=when + 1000)
        exit_fill = fill(self.tp_id, side="sell", price=Decimal(110), ts=when, cum_qty=Decimal(10))
        return [OrderUpdated(account="demo", event="fill", order=tp, fill=exit_fill, event_ts=when),
                OrderUpdated(account="demo", event="canceled", order=sl, event_ts=when + 1000)]


async def _row(state: StateHarness, parent_id: str) -> dict[str, Any] | None:
    rows = await state.query(f"SELECT row_to_json(p)::text FROM {POS} p WHERE parent_id = %s", parent_id)
    return json.loads(rows[0][0]) if rows else None


async def _open_entry(state: StateHarness, bracket: Bracket) -> dict[str, Any]:
    state.inject(topic_trade("demo"), bracket.entry_fill())
    found: dict[str, Any] = await async_wait_for(lambda: _row(state, bracket.entry_id), 15, what="open row")
    # The row is committed before its NOTIFY reaches the listener: settle, so a ``mark()`` taken
    # next does not count this push as the next step's.
    await state.settle()
    return found


def _history_complete(state: StateHarness, upto: int) -> None:
    """What ``snapshot`` sends before a full snapshot: the last page of a fill read from the backfill
    floor, saying the history is complete up to ``upto`` (reconciliation acts only then)."""
    state.inject(topic_fills("demo"), FillsPage(account="demo", fills=(), complete_after_ns=0, complete_to_ns=upto,
                                                is_from_floor=True))
    state.inject(topic_fills("demo"), CorporateActionsPage(account="demo", actions=(), complete_after_ns=0,
                                                           complete_to_ns=upto, is_from_floor=True))


async def test_state_bracket_entry_fill_writes_row_with_derived_columns_and_pushes_it(state: StateHarness) -> None:
    bracket = Bracket()
    resyncs = state.bus.observe(topic_resync("demo"))
    start = state.mark()

    row = await _open_entry(state, bracket)
    await async_wait_for(lambda: state.notes_since(start, "pos_channel_demo"), 10, what="row NOTIFY")
    await async_wait_for(lambda: resyncs.messages(), 10, what="WAC resync request")

    [pushed] = state.notes_since(start, "pos_channel_demo")
    assert pushed["row"]["parent_id"] == bracket.entry_id
    assert pushed["row"]["qty"] == 10
    assert (row["symbol"], row["side"], row["qty"]) == ("AAPL", "long", 10)
    assert (row["avg_fill"], row["avg_px_symbol"]) == (100, 100)
    assert (row["tp_child"], row["tp_px"], row["sl_child"], row["sl_px"]) == (bracket.tp_id, 110, bracket.sl_id, 95)
    assert row["moved_flag"] == "—"
    assert row["buy_value"] == 1000
    assert row["filled_at"].startswith("2024-03-01T15:00:00")
    assert row["mkt_px"] is None
    assert row["profit_loss"] is None
    assert row["tp_sl_reach_pct"] is None
    # Both are computed at the row's own ``updated_at`` (the commit's clock), so exact at any date.
    built_at = from_datetime(datetime.fromisoformat(row["updated_at"]))
    assert row["holding_days"] == (built_at - T0) // NS_PER_DAY
    assert row["days_to_expire"] == min((T0 + 90 * NS_PER_DAY - built_at) // NS_PER_DAY, 90)
    [resync] = resyncs.messages()
    assert (resync.reason, resync.symbols) == ("fill", ("AAPL",))


async def test_state_take_profit_fill_deletes_row_writes_slice_and_notifies(state: StateHarness) -> None:
    bracket = Bracket()
    await _open_entry(state, bracket)
    start = state.mark()

    for message in bracket.tp_fill():
        state.inject(topic_trade("demo"), message)
    await async_wait_for(lambda: state.notes_since(start, "closed_channel_demo"), 15, what="closed NOTIFY")

    assert await _row(state, bracket.entry_id) is None
    [closed] = await state.query(
        f"SELECT entry_lot_id, exit_order_id, exit_type, qty, entry_price, exit_price, pnl_cash, pnl_cash_fifo, "
        f"diff_pnl, return_pct FROM {CLOSED}")
    assert closed[:3] == (bracket.entry_id, bracket.tp_id, "TP")
    assert closed[3:] == (10, 100, 110, 100, 100, 0, 10)
    assert {"op": "delete", "parent_id": bracket.entry_id} in state.notes_since(start, "pos_channel_demo")
    [insert] = state.notes_since(start, "closed_channel_demo")
    assert insert["op"] == "insert"
    assert insert["rows"][0]["exit_type"] == "TP"


async def test_state_replayed_events_write_and_notify_nothing(state: StateHarness) -> None:
    bracket = Bracket()
    await _open_entry(state, bracket)
    for message in bracket.tp_fill():
        state.inject(topic_trade("demo"), message)
    await async_wait_for(lambda: state.notes_since(0, "closed_channel_demo"), 15, what="closed")
    await state.settle()
    start, commits = state.mark(), state.ctx.counters["commits"]

    state.inject(topic_trade("demo"), bracket.entry_fill())
    for message in bracket.tp_fill():
        state.inject(topic_trade("demo"), message)
    await state.settle()

    assert state.ctx.counters["commits"] == commits + 1  # the sentinel's commit only
    assert state.notes_since(start, "pos_channel_demo") == []
    assert state.notes_since(start, "closed_channel_demo") == []


async def test_state_unchanged_snapshot_writes_and_notifies_nothing(state: StateHarness) -> None:
    bracket = Bracket()
    await _open_entry(state, bracket)
    snapshot = SnapshotTaken(account="demo", taken_at=T0 + MINUTE, positions=(position("10", "100"),),
                             open_orders=(bracket.tp, bracket.sl))
    state.inject(topic_snapshot("demo"), snapshot)
    await state.settle()
    start, commits = state.mark(), state.ctx.counters["commits"]

    state.inject(topic_snapshot("demo"), msgspec.structs.replace(snapshot, taken_at=T0 + 2 * MINUTE))
    await state.settle()

    assert state.ctx.counters["commits"] == commits + 1
    assert state.notes_since(start, "pos_channel_demo") == []
    assert state.ctx.counters["recon_corrections"] == 0


async def test_state_snapshot_with_extra_broker_qty_books_recon_lot(state: StateHarness) -> None:
    bracket = Bracket()
    await _open_entry(state, bracket)
    start = state.mark()

    _history_complete(state, T0 + MINUTE)
    state.inject(topic_snapshot("demo"), SnapshotTaken(account="demo", taken_at=T0 + MINUTE,
                                                       positions=(position("15", "101"),)))
    await state.settle()

    rows = await state.query(f"SELECT parent_id, qty, avg_fill, avg_px_symbol FROM {POS} ORDER BY filled_at")
    assert [(r[1], r[2], r[3]) for r in rows] == [(10, 100, 101), (5, 101, 101)]
    assert rows[1][0].startswith("recon:AAPL:")
    assert state.ctx.counters["recon_corrections"] == 1
    pushed = state.notes_since(start, "pos_channel_demo")
    assert pushed
    assert pushed[0]["op"] == "batch"
    assert len(pushed[0]["rows"]) == 2
    [stored] = await state.query("SELECT count(*) FROM accounts.reconciliations_demo WHERE id LIKE '%%::recon:AAPL:%%'")
    [raw] = await state.query(
        "SELECT count(*) FROM account_activities.raw_activities_demo WHERE id LIKE '%%::recon:AAPL:%%'")
    assert (stored, raw) == ((1,), (0,))  # our booking, never among the broker's activities


async def test_state_snapshot_without_symbol_removes_its_rows(state: StateHarness) -> None:
    bracket = Bracket()
    await _open_entry(state, bracket)
    start = state.mark()

    _history_complete(state, T0 + MINUTE)
    state.inject(topic_snapshot("demo"), SnapshotTaken(account="demo", taken_at=T0 + MINUTE, positions=()))
    await state.settle()

    assert await _row(state, bracket.entry_id) is None
    assert {"op": "delete", "parent_id": bracket.entry_id} in state.notes_since(start, "pos_channel_demo")


async def test_state_stale_raw_order_version_does_not_overwrite(state: StateHarness) -> None:
    newer = order(id=new_id(), status="accepted", updated_at=T0 + MINUTE)
    older = msgspec.structs.replace(newer, status="new", updated_at=T0)

    state.inject(topic_orders("demo"), OrdersPage(account="demo", orders=(newer,)))
    await state.settle()
    state.inject(topic_orders("demo"), OrdersPage(account="demo", orders=(older,)))
    await state.settle()

    rows = await state.query("SELECT status FROM account_activities.raw_orders_demo WHERE id = %s", newer.id)
    assert rows == [("accepted",)]


@pytest.mark.parametrize("state", [{"FLUSH_INTERVAL_S": "0.3"}], indirect=True)
async def test_state_small_tick_moves_wait_for_flush_and_large_ones_push_at_once(state: StateHarness) -> None:
    bracket = Bracket()
    await _open_entry(state, bracket)
    start = state.mark()
    state.inject(topic_tick("AAPL"), Tick(symbol="AAPL", price=100.0, ts_event=T0 + MINUTE))  # first mark: pushed
    await async_wait_for(lambda: state.notes_since(start, "pos_channel_demo"), 10, what="first mark push")
    small = state.mark()

    state.inject(topic_tick("AAPL"), Tick(symbol="AAPL", price=100.1, ts_event=T0 + 2 * MINUTE))  # +0.1 %
    flushed: bool = await async_wait_for(
        lambda: _mkt_px(state, bracket.entry_id, Decimal("100.1")), 10, what="flush")
    quiet = state.notes_since(small, "pos_channel_demo")
    large = state.mark()
    state.inject(topic_tick("AAPL"), Tick(symbol="AAPL", price=101.0, ts_event=T0 + 3 * MINUTE))  # +0.9 %
    await async_wait_for(lambda: state.notes_since(large, "pos_channel_demo"), 10, what="threshold push")

    assert flushed
    assert quiet == []
    [push] = state.notes_since(large, "pos_channel_demo")
    assert push["row"]["mkt_px"] == 101.0
    assert push["row"]["profit_loss"] == 10.0
    async def latest() -> bool:
        return await state.query("SELECT price FROM accounts.latest_prices WHERE symbol = 'AAPL'") == [
            (Decimal("101.0"),)]

    await async_wait_for(latest, 10, what="next price flush")
    bars = await state.query("SELECT ts, open, close FROM accounts.price_bars_1min WHERE symbol = 'AAPL' ORDER BY ts")
    assert [(o, c) for _, o, c in bars] == [(Decimal("100.0"), Decimal("100.0")), (Decimal("100.1"), Decimal("100.1")),
                                           (Decimal("101.0"), Decimal("101.0"))]  # one bar per tick minute


async def _mkt_px(state: StateHarness, parent_id: str, expected: Decimal) -> bool:
    rows = await state.query(f"SELECT mkt_px FROM {POS} WHERE parent_id = %s", parent_id)
    return rows == [(expected,)]


async def test_state_restart_loads_and_converges_without_duplicates(state: StateHarness) -> None:
    first, second = Bracket(), Bracket()
    await _open_entry(state, first)
    for message in first.tp_fill():
        state.inject(topic_trade("demo"), message)
    await _open_entry(state, second)
    await state.settle()
    before = await state.query(f"SELECT count(*) FROM {POS}"), await state.query(f"SELECT count(*) FROM {CLOSED}")
    await state.shutdown()
    start = state.mark()

    await state.launch()
    state.inject(topic_trade("demo"), second.entry_fill())  # a replay after the restart
    await state.settle()
    state.inject(topic_ledger_check("demo"), LedgerCheckRequested(account="demo"))
    await async_wait_for(lambda: state.ctx.counters["ledger_checks"] >= 1, 15, what="ledger check")

    after = await state.query(f"SELECT count(*) FROM {POS}"), await state.query(f"SELECT count(*) FROM {CLOSED}")
    assert before == after == ([(1,)], [(1,)])
    assert state.notes_since(start, "pos_channel_demo") == []
    assert state.notes_since(start, "closed_channel_demo") == []
    assert state.ctx.counters["ledger_mismatches"] == 0


async def test_state_restart_restores_marks_from_committed_rows(state: StateHarness) -> None:
    """Killed before a price flush: ``latest_prices`` lacks the mark, the committed row has it."""
    bracket = Bracket()
    await _open_entry(state, bracket)
    state.inject(topic_tick("AAPL"), Tick(symbol="AAPL", price=104.5, ts_event=T0 + MINUTE))
    await async_wait_for(lambda: _mkt_px(state, bracket.entry_id, Decimal("104.5")), 10, what="pushed mark")
    await state.shutdown()
    await state.query("DELETE FROM accounts.latest_prices RETURNING symbol")  # as if killed before the flush
    before = await _row(state, bracket.entry_id)
    start = state.mark()

    await state.launch()
    await state.settle()

    assert await _row(state, bracket.entry_id) == before
    assert state.notes_since(start, "pos_channel_demo") == []


async def test_state_snapshot_marks_a_position_whose_last_tick_is_older(state: StateHarness) -> None:
    """No feed: the broker's ``current_price`` in a snapshot marks the position."""
    bracket = Bracket()
    await _open_entry(state, bracket)
    broker = msgspec.structs.replace(position("10", "100"), current_price=Decimal("102.25"))
    stale = msgspec.structs.replace(broker, current_price=Decimal(99))

    state.inject(topic_snapshot("demo"), SnapshotTaken(account="demo", positions=(broker,), symbols=("AAPL",),
                                                       taken_at=T0 + MINUTE))
    marked = await async_wait_for(lambda: _mkt_px(state, bracket.entry_id, Decimal("102.25")), 10, what="mark")
    state.inject(topic_tick("AAPL"), Tick(symbol="AAPL", price=103.0, ts_event=T0 + 2 * MINUTE))
    await async_wait_for(lambda: _mkt_px(state, bracket.entry_id, Decimal("103.0")), 10, what="tick mark")
    state.inject(topic_snapshot("demo"), SnapshotTaken(account="demo", positions=(stale,), symbols=("AAPL",),
                                                       taken_at=T0 + 90 * 1_000_000_000))  # older than the tick
    await state.settle()

    assert marked
    assert await _mkt_px(state, bracket.entry_id, Decimal("103.0"))


async def test_state_ledger_check_equals_rebuild_after_events(state: StateHarness) -> None:
    first, second = Bracket(), Bracket()
    await _open_entry(state, first)
    await _open_entry(state, second)
    for message in first.tp_fill():
        state.inject(topic_trade("demo"), message)
    _history_complete(state, T0 + 10 * MINUTE)
    state.inject(topic_snapshot("demo"), SnapshotTaken(account="demo", taken_at=T0 + 10 * MINUTE,
                                                       positions=(position("12", "100"),)))
    await state.settle()

    state.inject(topic_ledger_check("demo"), LedgerCheckRequested(account="demo"))
    await async_wait_for(lambda: state.ctx.counters["ledger_checks"] >= 1, 15, what="ledger check")

    assert state.ctx.counters["recon_corrections"] == 1
    assert state.ctx.counters["ledger_mismatches"] == 0


async def test_state_unchanged_metrics_document_is_not_notified(state: StateHarness) -> None:
    start = state.mark()
    document = {"Win Rate %": 50.0, "as_of": "2024-03-01T15:00:00Z"}
    state.inject(topic_metrics("demo"), MetricsComputed(account="demo", payload=json.dumps(document), computed_at=T0))
    await async_wait_for(lambda: state.notes_since(start, "metrics_channel_demo"), 10, what="metrics NOTIFY")
    again = state.mark()

    document["as_of"] = "2024-03-01T15:00:05Z"
    state.inject(topic_metrics("demo"), MetricsComputed(account="demo", payload=json.dumps(document), computed_at=T0))
    await state.settle()

    [note] = state.notes_since(start, "metrics_channel_demo")
    assert note["op"] == "metrics"
    assert state.notes_since(again, "metrics_channel_demo") == []


@pytest.mark.asyncio
async def test_issue_9_restart_deletes_stored_slices_the_rebuild_no_longer_has(state: StateHarness) -> None:
    """Bug: at start-up ``state`` rebuilt the ledger from the stored history and upserted its
    slices, but never deleted stored slices under keys the rebuild no longer produces. After a
    PostgreSQL crash lost acknowledged commits (and the re-sent fills matched exits to other
    lots), the closed table kept a stale slice beside the new one: an exit counted twice."""
    await state.shutdown()
    async with await psycopg.AsyncConnection.connect(state.dsn.reveal(), autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO accounts.account_closed_demo (entry_lot_id, exit_order_id, symbol, side, qty, exit_type) "
            "VALUES ('stale-lot', 'stale-exit', 'AAPL', 'long', 10, 'MANUAL')"
        )

    await state.launch()
    await state.settle()
    rows = await state.query("SELECT entry_lot_id FROM accounts.account_closed_demo")

    assert rows == []


@pytest.mark.asyncio
async def test_issue_9_ledger_differing_from_stored_history_stops_state(state: StateHarness) -> None:
    """Bug: when the ledger check found memory differing from the stored history (a commit that
    PostgreSQL acknowledged and then lost in a crash), ``state`` only logged it and kept running
    on a mirror it knew was wrong — for good, since nothing re-sent the lost fill. It now exits
    (supervisord restarts it: reload from the database, rewound resync)."""
    await _open_entry(state, Bracket())
    async with await psycopg.AsyncConnection.connect(state.dsn.reveal(), autocommit=True) as conn:
        await conn.execute("DELETE FROM account_activities.raw_activities_demo")  # the commit "lost"

    state.inject(topic_ledger_check("demo"), LedgerCheckRequested(account="demo"))
    await async_wait_for(lambda: state.ctx.counters["ledger_check_suspect"] == 1, 15, what="first difference")
    assert not state.task.done()  # one difference may have an innocent cause: checked again first
    state.inject(topic_ledger_check("demo"), LedgerCheckRequested(account="demo"))
    await async_wait_for(lambda: state.task.done(), 15, what="state stopping")

    with pytest.raises(ChmgrError, match="ledger differs from the stored history account=demo"):
        state.task.result()
    assert state.ctx.counters["ledger_mismatches"] >= 1


async def test_state_refused_value_is_quarantined_and_the_rest_commits_without_resync(state: StateHarness) -> None:
    """Issue 14: an order with a NUL byte poisons only itself (no commit loop, no snapshot storm)."""
    bracket = Bracket()
    resyncs = state.bus.observe(topic_resync("demo"))
    poisoned = order(id=new_id(), client_order_id="bad\x00id", symbol="MSFT")

    state.inject(topic_orders("demo"), OrdersPage(account="demo", orders=(poisoned,)))
    state.inject(topic_trade("demo"), bracket.entry_fill())
    await async_wait_for(lambda: _row(state, bracket.entry_id), 15, what="the good fill's row")
    await state.settle()
    quarantined = await state.query("SELECT account, kind, key, error FROM accounts.quarantine")
    stored = await state.query("SELECT count(*) FROM account_activities.raw_orders_demo WHERE id = %s",
                               bracket.entry_id)

    assert [(a, k, key) for a, k, key, _ in quarantined] == [("demo", "RawOrders", poisoned.id)]
    assert "\\u0000" in quarantined[0][3]  # PostgreSQL names the refused NUL
    assert stored == [(1,)]
    assert state.ctx.counters["quarantined"] == 1
    assert [m.reason for m in resyncs.messages()] == ["fill"]  # none for the refused value


async def test_state_books_a_final_orders_commission_as_a_fee_once(state: StateHarness) -> None:
    """docs/spec.md §8: ``commission`` on Alpaca's order object is a fee; a replay rewrites nothing."""
    entry = order(id=new_id(), status="filled", filled_qty=Decimal(10), filled_avg_price=Decimal(100), filled_at=T0,
                  commission=Decimal("1.25"))
    update = OrderUpdated(account="demo", event="fill", order=entry, fill=fill(entry.id), event_ts=T0)

    state.inject(topic_trade("demo"), update)
    await state.settle()
    first = await state.query("SELECT id, amount, type, category, updated_at FROM accounts.cash_flows_demo")
    state.inject(topic_trade("demo"), update)
    await state.settle()
    replay = await state.query("SELECT id, amount, type, category, updated_at FROM accounts.cash_flows_demo")

    assert [row[:4] for row in first] == [(f"commission:{entry.id}", Decimal("-1.25"), "FEE", "fee")]
    assert replay == first


async def test_state_heartbeat_says_which_accounts_first_snapshot_it_stored(state: StateHarness) -> None:
    """The health model's "first snapshot stored" comes from state, after the commit: demo's
    snapshot handled, paper-1 still without one (not reported: awaited, never assumed)."""
    before = {(c.need, c.account) for c in state.ctx.heartbeat().conditions if c.ok}

    _history_complete(state, T0 + MINUTE)
    state.inject(topic_snapshot("demo"), SnapshotTaken(account="demo", taken_at=T0 + MINUTE, positions=()))
    await state.settle()

    conditions = {(c.need, c.account): c for c in state.ctx.heartbeat().conditions}
    assert (NEED_SNAPSHOT, "demo") not in before
    assert conditions[(NEED_SNAPSHOT, "demo")].ok
    assert (NEED_SNAPSHOT, "paper_1") not in conditions
    assert conditions[(NEED_DATABASE, "")].ok  # the settle sentinel committed


async def test_state_heartbeat_says_database_unreachable_when_a_commit_fails_until_one_succeeds(
    state: StateHarness,
) -> None:
    """A killed writer connection: the next commit fails, state says so in its heartbeat (the
    words `chmgr status` prints), reconnects, and the next commit that succeeds says ok again."""
    await state.settle()
    with psycopg.connect(state.dsn.reveal(), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'chmgr-state'"
        ).fetchall()

    def database() -> Any:
        return {(c.need, c.account): c for c in state.ctx.heartbeat().conditions}.get((NEED_DATABASE, ""))

    state.inject(topic_metrics("demo"), MetricsComputed(account="demo", payload='{"after": "kill"}', computed_at=T0))
    await async_wait_for(lambda: database() is not None and not database().ok, 15, what="database not ok")
    said = database()
    await state.settle()  # a later commit on the new connection

    assert killed
    assert said.cause == "database unreachable: state's commit failed, reconnecting"
    assert database().ok

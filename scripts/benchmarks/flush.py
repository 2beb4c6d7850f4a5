"""`flush_10k`: `state`'s periodic flush of 10,000 dirty open-position rows, through its own code.

The mirror's ``AccountMirror.flush_plan`` and the ``Writer`` commit it, exactly as the ``state``
program runs them (in-process here, so nothing else is timed), beside the raw floor: COPY of
the same rows into a temp table and one ``UPDATE … FROM`` merge. Each round re-marks every row
(so every write is a real change); the value is the median of the rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from decimal import Decimal

import psycopg

from coldharbour.config import load_settings
from coldharbour.db import rows as r
from coldharbour.db.writer import Writer
from coldharbour.domain.positions import RowParams, with_mark
from coldharbour.domain.types import OpenRow
from coldharbour.mirror.account import AccountMirror
from scripts.benchmarks import baselines, history, stack
from scripts.benchmarks.report import emit, note

ROWS = 10_000
NOW = history.START_NS + 86_400_000_000_000


def _row(n: int) -> OpenRow:
    return OpenRow(parent_id=f"lot-{n:06d}", symbol=history.symbol(n % 1000), side="long",
                   filled_at=history.START_NS, qty=Decimal(10), avg_fill=Decimal(100), avg_px_symbol=Decimal(100),
                   sl_child=None, sl_px=Decimal(95), tp_child=None, tp_px=Decimal(110), mkt_px=None, bar_px=None,
                   bar_ts=None, moved_flag="OK", buy_value=Decimal(1000), holding_days=1, days_to_expire=None,
                   mkt_value=None, profit_loss=None, profit_loss_lot=None, tp_sl_reach_pct=None,
                   updated_at=history.START_NS)  # fmt: skip


def _marked(account: AccountMirror, round_: int) -> list[OpenRow]:
    mark = Decimal(100) + Decimal(round_) / 100
    return [with_mark(row, mark, NOW + round_) for row in account.rows.values()]


async def _state_flush(writer: Writer, account: AccountMirror, marked: list[OpenRow]) -> float:
    for row in marked:
        account.rows[row.parent_id] = row
        account.dirty.add(row.parent_id)
    started = time.perf_counter()
    plan = account.flush_plan(NOW)
    await writer.commit(plan.changes, NOW)
    elapsed = time.perf_counter() - started
    for flushed in plan.rows_flushed:
        account.flushed(flushed)
    return elapsed


async def _measure(dsn: str, env: dict[str, str], rounds: int) -> tuple[list[float], list[float]]:
    settings = load_settings(env)
    names = history.names(env)
    account = AccountMirror(names.slug, params=RowParams(), push_pct=Decimal("0.25"), counters=Counter())
    writer = Writer(settings)
    await writer.connect()
    try:
        account.rows = {row.parent_id: row for row in map(_row, range(ROWS))}
        await _state_flush(writer, account, list(account.rows.values()))  # the rows exist before a flush
        table = f'"{names.positions.schema}"."{names.positions.name}"'
        state_s, raw_s = [], []
        for round_ in range(1, 2 * rounds + 1, 2):
            raw_rows = [r.open_row_values(row) for row in _marked(account, round_)]
            raw_s.append(await asyncio.to_thread(baselines.raw_copy_merge_s, dsn, table, r.POSITION_COLUMNS, raw_rows))
            state_s.append(await _state_flush(writer, account, _marked(account, round_ + 1)))
        return state_s, raw_s
    finally:
        await writer.close()


def run(dsn: str, quick: bool) -> None:
    """Measure the figure and its raw baseline (same rows, same table, alternating rounds)."""
    rounds = 3 if quick else 7
    with stack.run_dir() as directory:
        env = stack.environ(dsn, directory)
        stack.migrate(dsn, env)
        note(f"flush_10k: {rounds} rounds of {ROWS} dirty rows, state flush vs raw COPY+merge")
        state_s, raw_s = asyncio.run(_measure(dsn, env, rounds))
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM accounts.account_open_positions_bench").fetchone()
    emit("flush_10k", statistics.median(state_s), "s", statistics.median(raw_s), rows=ROWS, rounds=rounds,
         state_min_s=min(state_s), raw_min_s=min(raw_s), stored_rows=count[0] if count else None)  # fmt: skip

"""The single writer: changes in, SQL out — one connection, one statement and one round trip per commit.

Only ``state`` builds a ``Writer`` (``tests/test_architecture.py`` enforces it). How each change
kind is written is one entry of ``WRITES`` (docs/write-path.md): it turns the change's domain
values into rows (``db.rows``) and the rows into parts (``db.upserts``: their CTEs, the rows as
one jsonb parameter). A commit joins its parts into **one statement**, composed once per sequence of
part kinds, cached and prepared server-side. The statement makes its own ``pg_notify`` calls
from what it ``RETURNING``-ed, and on this autocommit connection it is its own transaction: the
commit is one round trip. Parts that write the same table go into separate statements, sent
in one pipelined transaction. PostgreSQL delivers the notifications only at commit, so a UI
never sees a row that did not commit. A change without rows sends nothing.

A commit that fails on the connection raises ``DatabaseError`` (memory must stay as it was; the
caller reconnects with capped exponential backoff and jitter). One that fails on a *value*
(``DataRefused``) can be retried with ``commit_isolating``: the changes are bisected, down to
single rows, until the refused ones are found; those go to the ``quarantine`` table with their
error and everything else commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final, NamedTuple

import msgspec
import psycopg
from psycopg.rows import TupleRow

from coldharbour.config import Dsn, Settings
from coldharbour.db import notify, tables
from coldharbour.db import rows as r
from coldharbour.db.connect import connect_writer, describe_error
from coldharbour.db.names import AccountNames, SharedNames, account_names, shared_names
from coldharbour.db.upserts import Spec, Statements
from coldharbour.domain import changes as c
from coldharbour.domain.cashflows import CashFlow
from coldharbour.domain.corporate import SpinoffBasis
from coldharbour.domain.equity import DailyRow, IntradayPoint
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.schedule import Session
from coldharbour.domain.types import ClosedSlice, OpenRow, Order, to_datetime
from coldharbour.errors import DatabaseError
from coldharbour.retry import Backoff, RetryStopped, retry

log = logging.getLogger(__name__)

BACKOFF_BASE_S: Final = 0.2  # reconnect delays (``retry.Backoff``)
BACKOFF_CAP_S: Final = 10.0
DATA_ERRORS: Final = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)
_RAW: Final = msgspec.json.Encoder(decimal_format="string", enc_hook=str)
_ROWS: Final = msgspec.json.Encoder(decimal_format="number")
_KEY_MAX: Final = 200


class DataRefused(DatabaseError):
    """A commit refused by PostgreSQL (or psycopg) because of a value, not the connection."""


class CommitResult(NamedTuple):
    """What a commit did: rows changed, notifications sent, changes quarantined."""

    changed: int
    notified: int
    quarantined: int = 0


Statement = tuple[Spec, list[Any]]


class Writer:
    """The one write connection of the ``state`` program."""

    def __init__(self, settings: Settings, *, counters: Counter[str] | None = None, dsn: Dsn | None = None) -> None:
        self._settings = settings
        self._dsn = dsn if dsn is not None else settings.dsn
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._cursor: psycopg.AsyncCursor[TupleRow] | None = None
        self._names: dict[str, AccountNames] = {}
        self.statements = Statements(shared_names(settings))
        self.counters: Counter[str] = counters if counters is not None else Counter()

    async def connect(self, stop: asyncio.Event | None = None) -> None:
        """Open the connection, retried with capped, jittered backoff (``retry.retry``) until it works or ``stop``."""
        if self.connected:
            return
        backoff = Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S)

        def failed(error: Exception, attempt: int, wait_s: float) -> None:
            self.counters["db_connect_failures"] += 1
            log.warning("writer connect attempt=%d failed, retrying in %.2fs: %s", attempt, wait_s, error)

        try:
            conn = await retry(lambda: connect_writer(self._dsn), stop=stop or asyncio.Event(), backoff=backoff,
                               retry_if=lambda error: isinstance(error, DatabaseError), on_retry=failed)
        except RetryStopped:
            raise DatabaseError("stopped while connecting the writer") from None
        conn.cursor_factory = psycopg.AsyncRawCursor  # statements use $n (db.upserts)
        self._conn, self._cursor = conn, conn.cursor(binary=True)  # one statement per commit: one cursor, reused
        if backoff.attempts:
            self.counters["db_reconnects"] += 1
            log.info("writer connected after attempt=%d", backoff.attempts + 1)

    @property
    def connected(self) -> bool:
        """Return True when the connection is open (it may still turn out broken)."""
        return self._conn is not None and not self._conn.closed

    # -- committing -------------------------------------------------------------------------

    async def commit(self, changes: Sequence[c.Change], now_ns: int) -> CommitResult:
        """Write ``changes`` and their NOTIFYs in one transaction; raise ``DatabaseError`` on failure.

        ``DataRefused`` when a value was refused. On failure nothing was written or notified.
        """
        result = await self._commit(changes, now_ns)
        self.counters["commits"] += 1
        self.counters["notifications"] += result.notified
        return result

    async def commit_isolating(self, changes: Sequence[c.Change], now_ns: int) -> CommitResult:
        """Commit ``changes``; when a value is refused, quarantine the refusing rows and commit the rest.

        Raises ``DatabaseError`` only for connection failures.
        """
        try:
            return await self.commit(changes, now_ns)
        except DataRefused as e:
            log.warning("commit refused a value, isolating it among changes=%d: %s", len(changes), e)
            return await self._isolate(list(changes), now_ns, str(e))

    async def _isolate(self, changes: list[c.Change], now_ns: int, error: str) -> CommitResult:
        if len(changes) == 1:
            parts = c.split(changes[0])
            if len(parts) == 1:
                await self._quarantine(changes[0], error)
                return CommitResult(0, 0, 1)
            changes = parts
        mid = len(changes) // 2
        changed = notified = quarantined = 0
        for half in (changes[:mid], changes[mid:]):
            try:
                result = await self.commit(half, now_ns)
            except DataRefused as e:
                result = await self._isolate(half, now_ns, str(e))
            changed, notified = changed + result.changed, notified + result.notified
            quarantined += result.quarantined
        return CommitResult(changed, notified, quarantined)

    async def upsert(self, spec: tables.TableSpec, names: AccountNames | SharedNames,
                     values: Sequence[object]) -> CommitResult:
        """Upsert ``values`` (whose fields are ``spec``'s columns) on ``spec``'s key, in one transaction.

        The plain upsert every change kind of a described table uses (``_plain``), for a table
        written outside a change kind (a new table before its kind exists; the tests).
        """
        counts = await self._run([_plain(self, spec, names, values)]) if values else []
        return CommitResult(sum(n for n, _ in counts), sum(m for _, m in counts))

    async def _quarantine(self, change: c.Change, error: str) -> None:
        self.counters["quarantined"] += 1
        kind = type(change).__name__
        account = c.account_of(change)
        raw = _RAW.encode(change).decode().replace("\x00", "\\u0000")
        key = _key_of(change)
        log.error("quarantined account=%s kind=%s key=%s: %s", account, kind, key, error)
        try:
            await self._run([(self.statements.quarantine(), [account, kind, key, raw, _clean(error)])])
        except DataRefused as e:
            self.counters["quarantine_failures"] += 1
            log.error("quarantine refused too, change dropped kind=%s: %s", kind, e)

    async def _commit(self, changes: Sequence[c.Change], now_ns: int) -> CommitResult:
        statements = [s for change in changes for s in WRITES[type(change)](self, change, now_ns)]
        if not statements:
            return CommitResult(0, 0)
        counts = await self._run(statements)
        return CommitResult(sum(n for n, _ in counts), sum(m for _, m in counts))

    async def _run(self, statements: list[Statement]) -> list[tuple[int, int]]:
        """Send ``statements`` joined into as few as can share one; return each sent one's (changed, notified)."""
        if self._conn is None or self._conn.closed or self._cursor is None:
            raise DatabaseError("writer is not connected")
        joined = []
        for run in self.statements.group([spec for spec, _ in statements]):
            params = [p for i in run for p in statements[i][1]]
            joined.append((self.statements.statement([statements[i][0] for i in run]), params))
        try:
            counts = await _send(self._conn, self._cursor, joined)
        except psycopg.OperationalError as e:
            self.counters["commit_failures"] += 1
            if isinstance(e, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
                self.counters["db_timeouts"] += 1  # connect.WRITER_*_TIMEOUT_MS: `chmgr status` degraded
                self.counters["db_degraded"] = 1
            await self._drop()
            raise DatabaseError(f"commit failed, connection lost: {describe_error(self._dsn, e)}") from None
        except DATA_ERRORS as e:
            self.counters["commit_failures"] += 1
            raise DataRefused(f"commit failed on a value: {describe_error(self._dsn, e)}") from e
        except (ValueError, OverflowError) as e:  # a value psycopg could not even encode
            self.counters["commit_failures"] += 1
            raise DataRefused(f"commit failed on a value: {type(e).__name__}: {str(e)[:200]}") from e
        except psycopg.Error as e:
            self.counters["commit_failures"] += 1
            raise DatabaseError(f"commit failed: {describe_error(self._dsn, e)}") from e
        if self.counters.get("db_degraded"):
            self.counters["db_degraded"] = 0  # a commit went through: no longer degraded
        return counts

    # -- changes → statements ------------------------------------------------------------------

    def names(self, slug: str) -> AccountNames:
        """Return (and cache) the table and channel names of ``slug``."""
        found = self._names.get(slug)
        if found is None:
            found = self._names[slug] = account_names(self._settings, slug)
        return found

    async def _drop(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            except psycopg.Error:
                log.debug("closing a broken writer connection failed", exc_info=True)
        self._conn = self._cursor = None

    async def close(self) -> None:
        """Close the connection."""
        await self._drop()


async def _send(conn: psycopg.AsyncConnection[TupleRow], cur: psycopg.AsyncCursor[TupleRow],
                joined: list[tuple[bytes, list[Any]]]) -> list[tuple[int, int]]:
    """Execute one statement on ``cur`` (autocommit: its own transaction), or several in one pipelined transaction."""
    if len(joined) == 1:
        await cur.execute(joined[0][0], joined[0][1], prepare=True)
        return [_counts(await cur.fetchone())]
    cursors: list[psycopg.AsyncCursor[TupleRow]] = []
    async with conn.pipeline(), conn.transaction():
        for query, params in joined:
            cur = conn.cursor(binary=True)
            await cur.execute(query, params, prepare=True)
            cursors.append(cur)
    return [_counts(await cur.fetchone()) for cur in cursors]


def _counts(row: TupleRow | None) -> tuple[int, int]:
    return (0, 0) if row is None else (int(row[0] or 0), int(row[1] or 0))


def _rows(rows: Sequence[tuple[object, ...]], width: int, *, single: bool = False) -> str:
    """Return ``rows`` as the one JSON parameter ``db.upserts._input`` reads (``width`` columns each).

    ``single``: the one row's array itself (``_input(single=True)``).
    """
    if not all(len(row) == width for row in rows):
        raise ValueError(f"every row must have {width} columns")
    return _ROWS.encode(rows[0] if single else rows).decode()


# -- change kinds → statements: one entry per kind in ``WRITES`` ----------------------------------


def _open_rows(w: Writer, change: c.OpenRows, now_ns: int) -> list[Statement]:
    names, ups, dels = w.names(change.account), change.upserts, change.deletes
    values = [r.open_row_values(row) for row in ups]
    if len(ups) == 1 and not dels:  # a stream fill: one row (the one-row part, see db.upserts.Statements.position)
        params: list[Any] = [_rows(values, tables.POSITIONS.width, single=True)]
        if change.announce:
            params.append(notify.to_json(dict(zip(tables.POSITIONS.names, values[0], strict=True))))
        return [(w.statements.position(names, announce=change.announce), params)]
    if not ups and not dels:
        return []
    params = []
    if ups and change.announce:
        params.append(_rows([(*row, notify.to_json(dict(zip(tables.POSITIONS.names, row, strict=True))))
                             for row in values], tables.POSITIONS.width + 1))
    elif ups:
        params.append(_rows(values, tables.POSITIONS.width))
    if dels:
        params.append(list(dels))
    spec = w.statements.positions(names, upserts=bool(ups), deletes=bool(dels), announce=change.announce)
    return [(spec, params)]


def _closed(w: Writer, change: c.ClosedSlices, now_ns: int) -> list[Statement]:
    ups, dels = change.upserts, change.deletes
    if not ups and not dels:
        return []
    params: list[Any] = [[k[0] for k in dels], [k[1] for k in dels]] if dels else []
    if ups:
        values = [r.closed_values(found) for found in ups]
        params.append(_rows([(*row, notify.to_json(dict(zip(tables.CLOSED.names, row, strict=True))), str(flag))
                             for row, flag in zip(values, change.announce, strict=True)], tables.CLOSED.width + 2))
    return [(w.statements.closed(w.names(change.account), upserts=bool(ups), deletes=bool(dels)), params)]


def _raw_orders(w: Writer, change: c.RawOrders, now_ns: int) -> list[Statement]:
    if not change.rows:
        return []
    single = len(change.rows) == 1
    values = [r.order_values(order, raw) for order, raw in change.rows]
    return [(w.statements.raw_orders(w.names(change.account), single=single),
             [_rows(values, tables.RAW_ORDERS.width, single=single)])]


def _raw_activities(w: Writer, change: c.RawActivities, now_ns: int) -> list[Statement]:
    if not change.rows:
        return []
    single = len(change.rows) == 1
    spec = w.statements.raw_activities(w.names(change.account), by_execution=change.by_execution, single=single)
    return [(spec, [_rows([r.activity_values(a) for a in change.rows], tables.RAW_ACTIVITIES.width, single=single)])]


def _reconciliations(w: Writer, change: c.Reconciliations, now_ns: int) -> list[Statement]:
    if not change.rows:
        return []
    single = len(change.rows) == 1
    spec = w.statements.reconciliations(w.names(change.account), single=single)
    return [(spec, [_rows([r.activity_values(a) for a in change.rows], tables.RAW_ACTIVITIES.width, single=single)])]


def _plain(w: Writer, spec: tables.TableSpec, names: AccountNames | SharedNames, values: Sequence[object]) -> Statement:
    """The upsert of ``values`` (domain values whose fields are ``spec``'s columns) on ``spec``'s key."""
    return w.statements.simple(spec, names), [_rows([r.row_of(spec, value) for value in values], spec.width)]


def _cash_flows(w: Writer, change: c.CashFlows, now_ns: int) -> list[Statement]:
    names, out = w.names(change.account), list[Statement]()
    if change.deletes:  # before the rows: never a row the same change upserts
        out.append((w.statements.delete_cash_flows(names), [list(change.deletes)]))
    if change.rows:
        out.append(_plain(w, tables.CASH_FLOWS, names, change.rows))
    return out


def _spinoff_bases(w: Writer, change: c.SpinoffBases, now_ns: int) -> list[Statement]:
    return [_plain(w, tables.SPINOFF_BASES, w.names(change.account), change.rows)] if change.rows else []


def _daily(w: Writer, change: c.DailyEquity, now_ns: int) -> list[Statement]:
    names, out = w.names(change.account), list[Statement]()
    if change.rows:
        out.append(_plain(w, tables.DAILY_EQUITY, names, change.rows))
    if change.keep_only is not None:  # a full rebuild: every other date goes
        out.append((w.statements.delete_daily_except(names), [list(change.keep_only)]))
    return out


def _intraday(w: Writer, change: c.IntradayEquity, now_ns: int) -> list[Statement]:
    return [_plain(w, tables.INTRADAY_EQUITY, w.names(change.account), change.rows)] if change.rows else []


def _metrics(w: Writer, change: c.MetricsDoc, now_ns: int) -> list[Statement]:
    names, at = w.names(change.account), to_datetime(now_ns)
    announced = notify.metrics_changed(names.metrics_channel, at).payload
    return [(w.statements.metrics(names), [change.payload, at, announced])]


def _heartbeat(w: Writer, change: c.UiHeartbeat, now_ns: int) -> list[Statement]:
    names = w.names(change.account)
    return [(w.statements.heartbeat(names), [notify.heartbeat(names.pos_channel, to_datetime(change.now_ns)).payload])]


def _schedule(w: Writer, change: c.MarketSchedule, now_ns: int) -> list[Statement]:
    st, out = w.statements, list[Statement]()
    if change.replace is not None:
        first, last = change.replace
        out.append((st.replace_schedule(), [first, last, list(change.keep)]))
    if change.prune_before is not None:
        out.append((st.prune_schedule(), [change.prune_before]))
    if change.rows:
        out.append(_plain(w, tables.MARKET_SCHEDULE, st.shared, change.rows))
    return out


def _prices(w: Writer, change: c.LatestPrices, now_ns: int) -> list[Statement]:
    if not change.rows:
        return []
    rows = [(symbol, price, to_datetime(ts)) for symbol, price, ts in change.rows]
    return [(w.statements.latest_prices(), [_rows(rows, tables.LATEST_PRICES.width)])]


def _bars(w: Writer, change: c.PriceBars, now_ns: int) -> list[Statement]:
    if not change.rows:
        return []
    rows = [(symbol, to_datetime(minute), *ohlcv) for symbol, minute, *ohlcv in change.rows]
    return [(w.statements.price_bars(), [_rows(rows, tables.PRICE_BARS.width)])]


WriteChange = Callable[["Writer", Any, int], list[Statement]]
# The one place that knows how each change kind is written (statements in the order they run).
WRITES: Final[dict[type[c.Change], WriteChange]] = {
    c.OpenRows: _open_rows, c.ClosedSlices: _closed, c.RawOrders: _raw_orders, c.RawActivities: _raw_activities,
    c.Reconciliations: _reconciliations, c.CashFlows: _cash_flows, c.SpinoffBases: _spinoff_bases,
    c.DailyEquity: _daily,
    c.IntradayEquity: _intraday, c.MetricsDoc: _metrics, c.UiHeartbeat: _heartbeat, c.MarketSchedule: _schedule,
    c.LatestPrices: _prices, c.PriceBars: _bars,
}  # fmt: skip


def _key_of(change: c.Change) -> str | None:
    """Return a readable key of the first row of ``change`` (for the quarantine table)."""
    for group in change.ROWS:
        values = getattr(change, group[0])
        if values:
            return _clean(str(_row_key(values[0])))[:_KEY_MAX]
    return "latest" if not change.ROWS else None


def _row_key(value: object) -> object:
    match value:
        case OpenRow(parent_id=key) | CashFlow(id=key) | ActivityRecord(id=key) | Session(session_date=key) \
                | SpinoffBasis(action_id=key):
            return key
        case ClosedSlice(key=key) | DailyRow(date=key) | IntradayPoint(ts=key):
            return key
        case (Order(id=key), str()):
            return key
        case (str() as symbol, Decimal() | int(), *_):  # a price mark or a 1-minute bar
            return symbol
    return value


def _clean(text: str) -> str:
    return text.replace("\x00", "\\u0000")

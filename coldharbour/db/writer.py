"""The single writer: changes in, SQL out — one connection, one statement and one round trip per commit.

Only ``workers/state.py`` builds a ``Writer`` (``tests/test_architecture.py`` enforces it). A
commit turns each ``domain.changes`` value into one part (``db.upserts``: its CTEs, the rows as
one jsonb parameter) and joins the parts into **one statement**, composed once per sequence of
part kinds, cached and prepared server-side. The statement makes its own ``pg_notify`` calls
from what it ``RETURNING``-ed, and on this autocommit connection it is its own transaction: the
commit is one round trip. Parts that write the same table go into separate statements, sent
in one pipelined transaction. PostgreSQL delivers the notifications only at commit, so a UI
never sees a row that did not commit. A change without rows sends nothing.

A commit that fails on the connection raises ``DatabaseError`` (memory must stay as it was; the
caller reconnects with capped exponential backoff and jitter). One that fails on a *value*
(``DataRefused``) can be retried with ``commit_isolating``: the changes are bisected, down to
single rows, until the refused ones are found; those go to the ``quarantine`` table with their
error and everything else commits (issue 14).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import msgspec
import psycopg
from psycopg.rows import TupleRow

from coldharbour.config import Dsn, Settings
from coldharbour.db import notify
from coldharbour.db import rows as r
from coldharbour.db.connect import connect_writer, describe_error
from coldharbour.db.names import AccountNames, account_names, shared_names
from coldharbour.db.upserts import Spec, Statements
from coldharbour.domain import changes as c
from coldharbour.domain.types import CLOSED_COLUMNS, to_datetime
from coldharbour.errors import DatabaseError
from coldharbour.retry import Backoff, sleep_or_stop

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S: Final = 0.2
BACKOFF_MAX_S: Final = 10.0
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
        """Open the connection, retrying with capped exponential backoff until it works or ``stop``."""
        backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        while self._conn is None or self._conn.closed:
            try:
                self._conn = await connect_writer(self._dsn)
                self._conn.cursor_factory = psycopg.AsyncRawCursor  # statements use $n (db.upserts)
                self._cursor = self._conn.cursor(binary=True)  # one statement per commit: one cursor, reused
            except DatabaseError as e:
                self.counters["db_connect_failures"] += 1
                wait = backoff.next_delay()
                log.warning("writer connect attempt=%d failed, retrying in %.2fs: %s", backoff.attempts, wait, e)
                if await sleep_or_stop(stop or asyncio.Event(), wait):
                    raise DatabaseError("stopped while connecting the writer") from None
                continue
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
        statements = [s for change in expand(changes) if (s := self._statement(change, now_ns)) is not None]
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

    def _statement(self, change: c.Change, now_ns: int) -> Statement | None:
        st = self.statements
        match change:
            case c.OpenRows(account=slug, upserts=ups, deletes=dels, announce=announce):
                return _open_rows(st, self.names(slug), ups, dels, announce) if ups or dels else None
            case c.ClosedSlices(account=slug, upserts=ups, announce=flags, deletes=dels):
                return _closed(st, self.names(slug), ups, flags, dels) if ups or dels else None
            case c.RawOrders(account=slug, rows=rows):
                single = len(rows) == 1
                return (st.raw_orders(self.names(slug), single=single),
                        _columns(rows, len(r.ORDER_COLUMNS), single=single)) if rows else None
            case c.RawActivities(account=slug, rows=rows, by_execution=by_execution):
                single = len(rows) == 1
                query = st.raw_activities(self.names(slug), by_execution=by_execution, single=single)
                return (query, _columns(rows, len(r.ACTIVITY_COLUMNS), single=single)) if rows else None
            case c.Reconciliations(account=slug, rows=rows):
                single = len(rows) == 1
                query = st.reconciliations(self.names(slug), single=single)
                return (query, _columns(rows, len(r.ACTIVITY_COLUMNS), single=single)) if rows else None
            case c.MetricsDoc(account=slug, payload=payload):
                names, at = self.names(slug), to_datetime(now_ns)
                return st.metrics(names), [payload, at, notify.metrics_changed(names.metrics_channel, at).payload]
            case c.UiHeartbeat(account=slug, now_ns=at):
                names = self.names(slug)
                return st.heartbeat(names), [notify.heartbeat(names.pos_channel, to_datetime(at)).payload]
            case _:
                return self._analytics_statement(change)

    def _analytics_statement(self, change: c.Change) -> Statement | None:
        st = self.statements
        match change:
            case c.CashFlows(account=slug, rows=rows) if rows:
                return st.simple("cash_flows", self.names(slug).cash_flows), _columns(rows, len(r.CASH_FLOW_COLUMNS))
            case c.DailyEquity(account=slug, rows=rows) if rows:
                return st.simple("daily", self.names(slug).equity_full), _columns(rows, len(r.DAILY_COLUMNS))
            case c.IntradayEquity(account=slug, rows=rows) if rows:
                return st.simple("intraday", self.names(slug).equity_intraday), _columns(rows, len(r.INTRADAY_COLUMNS))
            case c.MarketSchedule(rows=rows) if rows:
                return st.simple("schedule", st.shared.market_schedule), _columns(rows, len(r.SESSION_COLUMNS))
            case c.LatestPrices(rows=rows) if rows:
                return st.latest_prices(), _columns(rows, 3)
            case c.PriceBars(rows=rows) if rows:
                return st.price_bars(), _columns(rows, 7)
        return self._delete_statement(change)

    def _delete_statement(self, change: c.Change) -> Statement | None:
        st = self.statements
        match change:
            case c.DailyEquity(account=slug, keep_only=keep) if keep is not None:
                return st.delete_daily_except(self.names(slug)), [list(keep)]
            case c.CashFlows(account=slug, deletes=dels) if dels:
                return st.delete_cash_flows(self.names(slug)), [list(dels)]
            case c.MarketSchedule(prune_before=before) if before is not None:
                return st.prune_schedule(), [before]
            case c.MarketSchedule(replace=(first, last), keep=keep):
                return st.replace_schedule(), [first, last, list(keep)]
        return None

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


def expand(changes: Sequence[c.Change]) -> list[c.Change]:
    """Return ``changes`` with the multi-part kinds as one change per statement.

    Rows and their deletes (a daily-equity rebuild, a schedule prune or range replace, canceled
    cash flows) are separate statements; the deletes go first (they never touch a row the same
    change upserts).
    """
    out: list[c.Change] = []
    for change in changes:
        match change:
            case c.DailyEquity(account=slug, rows=rows, keep_only=keep) if rows and keep is not None:
                out += [c.DailyEquity(slug, rows), c.DailyEquity(slug, keep_only=keep)]
            case c.MarketSchedule(rows=rows, prune_before=before, replace=span, keep=keep) if (
                    (before is not None) + (span is not None) + bool(rows) > 1):
                out += [c.MarketSchedule(replace=span, keep=keep)] if span is not None else []
                out += [c.MarketSchedule(prune_before=before)] if before is not None else []
                out += [c.MarketSchedule(rows)] if rows else []
            case c.CashFlows(account=slug, rows=rows, deletes=dels) if rows and dels:
                out += [c.CashFlows(slug, deletes=dels), c.CashFlows(slug, rows)]
            case _:
                out.append(change)
    return out


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


def _columns(rows: Sequence[c.Row], width: int, *, single: bool = False) -> list[Any]:
    """Return ``rows`` as the one JSON parameter ``db.upserts._input`` reads (``width`` columns each).

    ``single``: the one row's array itself (``_input(single=True)``).
    """
    if not all(len(row) == width for row in rows):
        return _width_error(width)
    return [_ROWS.encode(rows[0] if single else rows).decode()]


def _width_error(width: int) -> list[Any]:
    raise ValueError(f"every row must have {width} columns")


def _open_rows(st: Statements, names: AccountNames, ups: Sequence[c.Row], dels: Sequence[str],
               announce: bool) -> Statement:
    if len(ups) == 1 and not dels:  # a stream fill: one row, its payload built here
        params = _columns(ups, len(r.POSITION_COLUMNS), single=True)
        if announce:
            params.append(notify.open_row(notify.to_json(dict(zip(r.POSITION_COLUMNS, ups[0], strict=True))),
                                          str(ups[0][0])))
        return st.position(names, announce=announce), params
    params = []
    if ups and announce:
        params = _columns([(*row, notify.to_json(dict(zip(r.POSITION_COLUMNS, row, strict=True)))) for row in ups],
                          len(r.POSITION_COLUMNS) + 1)
    elif ups:
        params = _columns(ups, len(r.POSITION_COLUMNS))
    if dels:
        params.append(list(dels))
    return st.positions(names, upserts=bool(ups), deletes=bool(dels), announce=announce), params


def _closed(st: Statements, names: AccountNames, ups: Sequence[c.Row], flags: Sequence[c.Announce],
            dels: Sequence[tuple[str, str]]) -> Statement:
    params: list[Any] = [[k[0] for k in dels], [k[1] for k in dels]] if dels else []
    if ups:
        params += _columns([(*row, notify.to_json(dict(zip(CLOSED_COLUMNS, row, strict=True))), str(flag))
                            for row, flag in zip(ups, flags, strict=True)], len(CLOSED_COLUMNS) + 2)
    return st.closed(names, upserts=bool(ups), deletes=bool(dels)), params


def _key_of(change: c.Change) -> str | None:
    match change:
        case c.OpenRows(upserts=ups, deletes=dels):
            key: object = ups[0][0] if ups else dels[0] if dels else None
        case c.ClosedSlices(upserts=ups, deletes=dels):
            key = ups[0][:2] if ups else dels[0] if dels else None
        case c.MetricsDoc() | c.UiHeartbeat():
            key = "latest"
        case c.CashFlows(rows=rows, deletes=dels):
            key = rows[0][0] if rows else dels[0] if dels else None
        case _:
            rows = getattr(change, "rows", ())
            key = rows[0][0] if rows else None
    return None if key is None else _clean(str(key))[:_KEY_MAX]


def _clean(text: str) -> str:
    return text.replace("\x00", "\\u0000")

"""What one commit changes: row upserts and deletes per table kind, and what they announce.

The mirror returns these values; ``db.writer`` alone turns them into SQL and NOTIFYs. A row is
a tuple of column values in the order of its table's column constant (``db.rows``:
``POSITION_COLUMNS``, ``CLOSED_COLUMNS``, …), converted by ``db.rows`` — one conversion per
table, used by the live path and the start-up loader alike.

Announcements are part of a change, never a statement of their own: open rows are announced
when the database says they changed (``RETURNING``), closed slices when they changed and are
final, or ``ALWAYS`` when the slice became final without its stored columns changing (its lot
closed later). Nothing is sent for a change without rows.

Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum

from coldharbour.domain.types import SliceKey

Row = tuple[object, ...]


class CommitOutcome(StrEnum):
    """What became of a commit."""

    COMMITTED = "committed"  # written and announced (or nothing to write)
    WITHHELD = "withheld"  # not sent (this stack lost its locks, or it is stopping): nothing to resync
    FAILED = "failed"  # the connection failed: memory must stay as it was; the accounts are resynced


class Announce(StrEnum):
    """When a closed slice is announced on the closed channel."""

    NEVER = "never"  # not final yet
    IF_CHANGED = "if_changed"  # final: announced when the stored row changed
    ALWAYS = "always"  # became final in memory (its lot closed): announced once, changed or not


@dataclass(frozen=True, slots=True)
class OpenRows:
    """Open-position rows to upsert and ``parent_id``s to delete; announced on the positions channel."""

    account: str
    upserts: tuple[Row, ...] = ()
    deletes: tuple[str, ...] = ()
    announce: bool = True  # False: a mark flush (DESIGN §3), written without NOTIFY


@dataclass(frozen=True, slots=True)
class ClosedSlices:
    """Closed slices to upsert (each with its ``Announce``) and slice keys to delete."""

    account: str
    upserts: tuple[Row, ...] = ()
    announce: tuple[Announce, ...] = ()  # one per upsert
    deletes: tuple[SliceKey, ...] = ()


@dataclass(frozen=True, slots=True)
class RawOrders:
    """Raw order versions (an older ``updated_at`` never overwrites a newer one)."""

    account: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class RawActivities:
    """Raw broker activities; ``by_execution``: FILLs keyed by ``execution_id``, else by ``id``."""

    account: str
    rows: tuple[Row, ...]
    by_execution: bool = False


@dataclass(frozen=True, slots=True)
class Reconciliations:
    """Reconciliation fills (``recon:``) as activity rows, keyed by ``id``: never in a raw broker table."""

    account: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class CashFlows:
    """Cash-flow rows by id, and ids to delete (activities the broker canceled, SPEC §8)."""

    account: str
    rows: tuple[Row, ...] = ()
    deletes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DailyEquity:
    """Daily equity rows; ``keep_only`` (a full rebuild) deletes every other date."""

    account: str
    rows: tuple[Row, ...] = ()
    keep_only: tuple[date, ...] | None = None


@dataclass(frozen=True, slots=True)
class IntradayEquity:
    """Intraday equity points by ``ts``."""

    account: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class MetricsDoc:
    """The ``latest`` KPI document; announced on the metrics channel when a KPI changed."""

    account: str
    payload: str


@dataclass(frozen=True, slots=True)
class MarketSchedule:
    """Market sessions to upsert; sessions dated before ``prune_before`` are deleted.

    ``replace`` (first, last): the calendar range a refresh covered; stored sessions inside it
    whose date is not in ``keep`` (the refresh's dates) are deleted — a closure declared later.
    """

    rows: tuple[Row, ...] = ()
    prune_before: date | None = None
    replace: tuple[date, date] | None = None
    keep: tuple[date, ...] = ()


@dataclass(frozen=True, slots=True)
class LatestPrices:
    """(symbol, price, ts) rows; an older ``ts`` never wins."""

    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class PriceBars:
    """1-minute bars (symbol, ts, open, high, low, close, volume), merged with a stored bar."""

    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class UiHeartbeat:
    """The UI heartbeat on ``account``'s positions channel (``now_ns``: its version)."""

    account: str
    now_ns: int


Change = (OpenRows | ClosedSlices | RawOrders | RawActivities | Reconciliations | CashFlows | DailyEquity
          | IntradayEquity | MetricsDoc | MarketSchedule | LatestPrices | PriceBars | UiHeartbeat)


def account_of(change: Change) -> str | None:
    """Return the account slug a change belongs to (None for the shared tables)."""
    return getattr(change, "account", None)


def size(change: Change) -> int:
    """Return how many rows (upserts plus deletes) ``change`` carries."""
    match change:
        case OpenRows(upserts=ups, deletes=dels):
            return len(ups) + len(dels)
        case ClosedSlices(upserts=ups, deletes=dels):
            return len(ups) + len(dels)
        case DailyEquity(rows=rows, keep_only=keep):
            return len(rows) + (keep is not None)
        case MarketSchedule(rows=rows, prune_before=prune, replace=span):
            return len(rows) + (prune is not None) + (span is not None)
        case CashFlows(rows=rows, deletes=dels):
            return len(rows) + len(dels)
        case MetricsDoc() | UiHeartbeat():
            return 1
        case _:
            return len(change.rows)


def split(change: Change) -> list[Change]:
    """Return ``change`` as changes of one row each (to find the one a commit refuses)."""
    match change:
        case OpenRows(account=a, upserts=ups, deletes=dels, announce=ann):
            return [*(OpenRows(a, (row,), announce=ann) for row in ups),
                    *(OpenRows(a, deletes=(pid,), announce=ann) for pid in dels)]
        case ClosedSlices(account=a, upserts=ups, announce=ann, deletes=dels):
            return [*(ClosedSlices(a, (row,), (flag,)) for row, flag in zip(ups, ann, strict=True)),
                    *(ClosedSlices(a, deletes=(key,)) for key in dels)]
        case DailyEquity(account=a, rows=rows, keep_only=keep):
            parts: list[Change] = [DailyEquity(a, (row,)) for row in rows]
            return parts + ([DailyEquity(a, keep_only=keep)] if keep is not None else [])
        case MarketSchedule(rows=rows, prune_before=prune, replace=span, keep=keep):
            sessions: list[Change] = [MarketSchedule((row,)) for row in rows]
            sessions += [MarketSchedule(prune_before=prune)] if prune is not None else []
            return sessions + ([MarketSchedule(replace=span, keep=keep)] if span is not None else [])
        case CashFlows(account=a, rows=rows, deletes=dels):
            return [*(CashFlows(a, (row,)) for row in rows), *(CashFlows(a, deletes=(d,)) for d in dels)]
        case MetricsDoc() | UiHeartbeat():
            return [change]
        case _:
            return [replace(change, rows=(row,)) for row in change.rows]


def chunks(changes: list[Change], max_rows: int) -> list[list[Change]]:
    """Return ``changes`` in groups of at most about ``max_rows`` rows (big changes cut by rows).

    For a start-up convergence that would otherwise be one huge transaction. Each row stays in
    one piece; a change of one kind keeps its order.
    """
    groups: list[list[Change]] = [[]]
    size_now = 0
    for change in changes:
        parts = [change] if size(change) <= max_rows else _cut(change, max_rows)
        for part in parts:
            if size_now and size_now + size(part) > max_rows:
                groups.append([])
                size_now = 0
            groups[-1].append(part)
            size_now += size(part)
    return [group for group in groups if group]


def _cut(change: Change, n: int) -> list[Change]:
    """Return ``change`` as changes of at most ``n`` rows each."""
    def spans(total: int) -> range:
        return range(0, total, n)

    match change:
        case OpenRows(account=a, upserts=ups, deletes=dels, announce=ann):
            return [*(OpenRows(a, ups[i:i + n], announce=ann) for i in spans(len(ups))),
                    *(OpenRows(a, deletes=dels[i:i + n], announce=ann) for i in spans(len(dels)))]
        case ClosedSlices(account=a, upserts=ups, announce=flags, deletes=dels):
            return [*(ClosedSlices(a, deletes=dels[i:i + n]) for i in spans(len(dels))),
                    *(ClosedSlices(a, ups[i:i + n], flags[i:i + n]) for i in spans(len(ups)))]
        case CashFlows(account=a, rows=rows, deletes=dels):
            return [*(CashFlows(a, deletes=dels[i:i + n]) for i in spans(len(dels))),
                    *(CashFlows(a, rows[i:i + n]) for i in spans(len(rows)))]
        case DailyEquity() | MarketSchedule() | MetricsDoc() | UiHeartbeat():
            return [change]
        case _:
            return [replace(change, rows=change.rows[i:i + n]) for i in spans(len(change.rows))]

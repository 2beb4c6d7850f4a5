"""What one commit changes: domain values to upsert or delete per table, and what they announce.

The mirror returns these values; ``db.writer`` alone turns them into rows, SQL and NOTIFYs (its
``WRITES`` table: one entry per change kind, with the table description of ``db.tables``).
Changes carry domain values (``OpenRow``, ``ClosedSlice``, ``ActivityRecord``, …), never
database rows.

Each kind declares its row-bearing fields once: ``ROWS`` are groups of parallel tuples (one
element per row, e.g. closed slices and their announce flags), ``OPS`` are groups of fields that
make one extra operation when their first field is set (a delete by predicate). ``size``,
``split`` and ``chunks`` are derived from them; a kind with neither is one indivisible row.

Announcements are part of a change, never a statement of their own: open rows are announced
when the database says they changed (``RETURNING``), closed slices when they changed and are
final, or ``ALWAYS`` when the slice became final without its stored columns changing (its lot
closed later). Nothing is sent for a change without rows.

Pure data: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields, replace
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from coldharbour.domain.cashflows import CashFlow
from coldharbour.domain.corporate import SpinoffBasis
from coldharbour.domain.equity import DailyRow, IntradayPoint
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.schedule import Session
from coldharbour.domain.types import ClosedSlice, OpenRow, Order, SliceKey

Groups = tuple[tuple[str, ...], ...]
PriceMark = tuple[str, Decimal, int]  # symbol, last price, its time (UTC ns)
# symbol, the bar's minute (UTC ns), open, high, low, close, volume
PriceBar = tuple[str, int, Decimal, Decimal, Decimal, Decimal, Decimal]


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

    ROWS: ClassVar[Groups] = (("upserts",), ("deletes",))
    OPS: ClassVar[Groups] = ()

    account: str
    upserts: tuple[OpenRow, ...] = ()
    deletes: tuple[str, ...] = ()
    announce: bool = True  # False: a mark flush (docs/spec.md §6), written without NOTIFY


@dataclass(frozen=True, slots=True)
class ClosedSlices:
    """Closed slices to upsert (each with its ``Announce``) and slice keys to delete."""

    ROWS: ClassVar[Groups] = (("deletes",), ("upserts", "announce"))
    OPS: ClassVar[Groups] = ()

    account: str
    upserts: tuple[ClosedSlice, ...] = ()
    announce: tuple[Announce, ...] = ()  # one per upsert
    deletes: tuple[SliceKey, ...] = ()


@dataclass(frozen=True, slots=True)
class RawOrders:
    """Raw order versions with the broker's JSON text (an older ``updated_at`` never overwrites a newer one)."""

    ROWS: ClassVar[Groups] = (("rows",),)
    OPS: ClassVar[Groups] = ()

    account: str
    rows: tuple[tuple[Order, str], ...]


@dataclass(frozen=True, slots=True)
class RawActivities:
    """Raw broker activities; ``by_execution``: FILLs keyed by ``execution_id``, else by ``id``."""

    ROWS: ClassVar[Groups] = (("rows",),)
    OPS: ClassVar[Groups] = ()

    account: str
    rows: tuple[ActivityRecord, ...]
    by_execution: bool = False


@dataclass(frozen=True, slots=True)
class Reconciliations:
    """Reconciliation fills (``recon:``) as activity rows, keyed by ``id``: never in a raw broker table."""

    ROWS: ClassVar[Groups] = (("rows",),)
    OPS: ClassVar[Groups] = ()

    account: str
    rows: tuple[ActivityRecord, ...]


@dataclass(frozen=True, slots=True)
class CashFlows:
    """Cash flows by id, and ids to delete (activities the broker canceled, docs/spec.md §8)."""

    ROWS: ClassVar[Groups] = (("deletes",), ("rows",))
    OPS: ClassVar[Groups] = ()

    account: str
    rows: tuple[CashFlow, ...] = ()
    deletes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpinoffBases:
    """How spin-offs' bases are allocated, by action id (docs/corporate-actions.md "Spin-offs")."""

    ROWS: ClassVar[Groups] = (("rows",),)
    OPS: ClassVar[Groups] = ()

    account: str
    rows: tuple[SpinoffBasis, ...] = ()


@dataclass(frozen=True, slots=True)
class DailyEquity:
    """Daily equity rows; ``keep_only`` (a full rebuild) deletes every other date."""

    ROWS: ClassVar[Groups] = (("rows",),)
    OPS: ClassVar[Groups] = (("keep_only",),)

    account: str
    rows: tuple[DailyRow, ...] = ()
    keep_only: tuple[date, ...] | None = None


@dataclass(frozen=True, slots=True)
class IntradayEquity:
    """Intraday equity points by ``ts``."""

    ROWS: ClassVar[Groups] = (("rows",),)
    OPS: ClassVar[Groups] = ()

    account: str
    rows: tuple[IntradayPoint, ...]


@dataclass(frozen=True, slots=True)
class MetricsDoc:
    """The ``latest`` KPI document; announced on the metrics channel when a KPI changed."""

    ROWS: ClassVar[Groups] = ()
    OPS: ClassVar[Groups] = ()

    account: str
    payload: str


@dataclass(frozen=True, slots=True)
class MarketSchedule:
    """Market sessions to upsert; sessions dated before ``prune_before`` are deleted.

    ``replace`` (first, last): the calendar range a refresh covered; stored sessions inside it
    whose date is not in ``keep`` (the refresh's dates) are deleted — a closure declared later.
    """

    ROWS: ClassVar[Groups] = (("rows",),)
    OPS: ClassVar[Groups] = (("replace", "keep"), ("prune_before",))

    rows: tuple[Session, ...] = ()
    prune_before: date | None = None
    replace: tuple[date, date] | None = None
    keep: tuple[date, ...] = ()


@dataclass(frozen=True, slots=True)
class LatestPrices:
    """The last price of each symbol; an older time never wins."""

    ROWS: ClassVar[Groups] = (("rows",),)
    OPS: ClassVar[Groups] = ()

    rows: tuple[PriceMark, ...]


@dataclass(frozen=True, slots=True)
class PriceBars:
    """1-minute bars, merged with a stored bar of the same minute."""

    ROWS: ClassVar[Groups] = (("rows",),)
    OPS: ClassVar[Groups] = ()

    rows: tuple[PriceBar, ...]


@dataclass(frozen=True, slots=True)
class UiHeartbeat:
    """The UI heartbeat on ``account``'s positions channel (``now_ns``: its version)."""

    ROWS: ClassVar[Groups] = ()
    OPS: ClassVar[Groups] = ()

    account: str
    now_ns: int


Change = (OpenRows | ClosedSlices | RawOrders | RawActivities | Reconciliations | CashFlows | SpinoffBases
          | DailyEquity | IntradayEquity | MetricsDoc | MarketSchedule | LatestPrices | PriceBars | UiHeartbeat)


def account_of(change: Change) -> str | None:
    """Return the account slug a change belongs to (None for the shared tables)."""
    return getattr(change, "account", None)


# The name of each account change kind in ``changed_kinds`` (and ``AccountChanged.kinds``).
KIND_NAMES: dict[type, str] = {
    OpenRows: "open_rows", ClosedSlices: "closed", RawOrders: "orders", RawActivities: "activities",
    Reconciliations: "reconciliations", CashFlows: "cash_flows", DailyEquity: "daily_equity",
    IntradayEquity: "intraday", MetricsDoc: "metrics",
}  # fmt: skip


def changed_kinds(changes: Sequence[Change]) -> dict[str, tuple[str, ...]]:
    """Return, per account, the kinds of rows ``changes`` write (sorted; none for a change without rows).

    A mark flush (open rows written without announcement) is left out: its marks moved less than
    the push threshold (docs/spec.md §6), so nothing derived from the rows is due.
    """
    found: dict[str, set[str]] = {}
    for change in changes:
        account, kind = account_of(change), KIND_NAMES.get(type(change))
        if account is None or kind is None or size(change) == 0:
            continue
        if isinstance(change, OpenRows) and not change.announce:
            continue
        found.setdefault(account, set()).add(kind)
    return {account: tuple(sorted(kinds)) for account, kinds in found.items()}


def size(change: Change) -> int:
    """Return how many rows (upserts, deletes and operations) ``change`` carries; 1 for an indivisible one."""
    if not change.ROWS and not change.OPS:
        return 1
    return (sum(len(getattr(change, group[0])) for group in change.ROWS)
            + sum(getattr(change, group[0]) is not None for group in change.OPS))


def _empty(change: Change) -> dict[str, Any]:
    """Return the field values that make ``change`` carry nothing (every row field and operation unset)."""
    defaults = {f.name: f.default for f in fields(change) if f.default is not MISSING}
    empty: dict[str, Any] = {name: () for group in change.ROWS for name in group}
    empty.update({name: defaults[name] for group in change.OPS for name in group})
    return empty


def _parts(change: Change, n: int) -> list[Change]:
    """Return ``change`` as changes of at most ``n`` rows of one group each, in group order."""
    if not change.ROWS and not change.OPS:
        return [change]
    empty = _empty(change)
    parts: list[Change] = []
    for group in change.ROWS:
        values = [getattr(change, name) for name in group]
        for i in range(0, len(values[0]), n):
            piece = {name: value[i:i + n] for name, value in zip(group, values, strict=True)}
            parts.append(replace(change, **{**empty, **piece}))
    for group in change.OPS:
        if getattr(change, group[0]) is not None:
            parts.append(replace(change, **{**empty, **{name: getattr(change, name) for name in group}}))
    return parts


def split(change: Change) -> list[Change]:
    """Return ``change`` as changes of one row each (to find the one a commit refuses)."""
    return _parts(change, 1)


def chunks(changes: list[Change], max_rows: int) -> list[list[Change]]:
    """Return ``changes`` in groups of at most about ``max_rows`` rows (big changes cut by rows).

    For a start-up convergence that would otherwise be one huge transaction. Each row stays in
    one piece; a change of one kind keeps its order.
    """
    groups: list[list[Change]] = [[]]
    size_now = 0
    for change in changes:
        for part in [change] if size(change) <= max_rows else _parts(change, max_rows):
            if size_now and size_now + size(part) > max_rows:
                groups.append([])
                size_now = 0
            groups[-1].append(part)
            size_now += size(part)
    return [group for group in groups if group]

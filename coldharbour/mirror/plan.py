"""What the mirror hands the state owner to commit, and what memory takes after the commit.

Compute, commit, then swap (docs/architecture.md §3): a ``Plan`` is computed from memory without changing
it. It holds the ``changes`` to commit (``domain.changes``; ``db.writer`` turns them into SQL
and NOTIFYs, in one transaction), the ``messages`` to publish after the commit, and, as plain
data, what memory takes once the commit succeeded: one ``AccountUpdate`` per planned account,
the rows and marks a flush wrote, the time at which idle marks are pruned. ``Mirror.swap``
applies that data; ``mirror.owner.StateOwner.apply`` is the one caller, right after the commit.
A plan whose commit failed is dropped: memory stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from coldharbour.domain.changes import Change
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.ledger import Ledger, LedgerDelta
from coldharbour.domain.orders import OrderBook
from coldharbour.domain.types import ClosedSlice, Fill, FillRejection, Lot, OpenRow, Order, SliceKey
from coldharbour.messages import Msg, SnapshotTaken


@dataclass(slots=True)
class LedgerChange:
    """A ledger change: lots changed (None = closed), slices changed, and the new ledger state.

    Exactly one of ``delta`` (the incremental path: applied to the ledger) and ``rebuilt`` (a
    whole-account rebuild: the new ledger and the book it was rebuilt with) is set.
    """

    lots: dict[str, Lot | None]
    slice_upserts: tuple[ClosedSlice, ...]
    slice_deletes: tuple[SliceKey, ...]
    delta: LedgerDelta | None = None
    rebuilt: tuple[Ledger, OrderBook] | None = None
    rejections: tuple[FillRejection, ...] = ()


@dataclass(slots=True)
class RowChanges:
    """Open rows to write and push, to hold dirty, and to delete."""

    upserts: dict[str, OpenRow] = field(default_factory=dict)
    dirty: dict[str, OpenRow] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Rewrites:
    """What a batch rewrites in the history: new corporate actions and busted fills (by key)."""

    actions: dict[str, CorporateAction] = field(default_factory=dict)
    busted: dict[str, Fill] = field(default_factory=dict)
    canceled: dict[str, CorporateAction] = field(default_factory=dict)  # booked actions the broker canceled
    # Booked spin-offs rebooked with another basis allocation (``chmgr corporate basis``), by id.
    rebased: dict[str, CorporateAction] = field(default_factory=dict)


@dataclass(slots=True)
class AccountUpdate:
    """What one account takes after its plan committed (``AccountMirror.swap``)."""

    slug: str
    orders: dict[str, Order]  # new or updated versions, into the book
    fills: dict[str, Fill]  # new fills by key, into the history
    ledger: LedgerChange
    rows: RowChanges
    wac: dict[str, Decimal | None]  # the broker's average cost per symbol (None: flat)
    bars: dict[str, tuple[Decimal, int]]
    rewrites: Rewrites  # corporate actions booked and fills busted
    slices_converged: bool = False  # start-up: the stored slices not rebuilt are deleted
    recon_corrections: int = 0  # reconciliation corrections the plan books


@dataclass(frozen=True, slots=True)
class RowsFlushed:
    """Dirty rows of ``slug`` a flush wrote (each clean again unless it changed meanwhile)."""

    slug: str
    rows: dict[str, OpenRow]


@dataclass(frozen=True, slots=True)
class MarksFlushed:
    """The prices and 1-minute bars a flush wrote."""

    symbols: frozenset[str]
    bars: frozenset[tuple[str, int]]


@dataclass(slots=True)
class Plan:
    """One transaction's worth of work and what memory takes after it committed."""

    changes: list[Change] = field(default_factory=list)
    messages: list[tuple[str, Msg]] = field(default_factory=list)
    updates: list[AccountUpdate] = field(default_factory=list)
    rows_flushed: list[RowsFlushed] = field(default_factory=list)
    marks_flushed: MarksFlushed | None = None
    prune_marks_at: int | None = None  # after a flush: forget idle marks as of this time (ns)

    @property
    def is_empty(self) -> bool:
        """Return True when the plan has nothing to commit, swap or publish."""
        return not (self.changes or self.messages or self.updates or self.rows_flushed
                    or self.marks_flushed is not None or self.prune_marks_at is not None)

    def extend(self, other: Plan) -> None:
        """Append ``other``'s work to this plan (one transaction for both)."""
        self.changes += other.changes
        self.messages += other.messages
        self.updates += other.updates
        self.rows_flushed += other.rows_flushed
        if other.marks_flushed is not None:
            self.marks_flushed = other.marks_flushed
        if other.prune_marks_at is not None:
            self.prune_marks_at = other.prune_marks_at


@dataclass(frozen=True)
class LedgerCheck:
    """Load ``slug``'s stored history and compare a rebuild with the ledger (a barrier)."""

    slug: str


@dataclass(frozen=True)
class Reconcile:
    """Make ``snapshot``'s account match the full broker snapshot (a barrier)."""

    snapshot: SnapshotTaken


@dataclass(frozen=True)
class Flush:
    """Write every dirty price, bar and row (a barrier)."""


Barrier = LedgerCheck | Reconcile | Flush


@dataclass(slots=True)
class Step:
    """The events ``Mirror.stage`` consumed: their plan, and the barrier they stopped at."""

    plan: Plan | None  # None: nothing to commit, swap or publish
    barrier: Barrier | None
    consumed: int

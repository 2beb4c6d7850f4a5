"""What the mirror hands ``state`` to commit: typed changes, the swap, follow-up messages.

Compute, commit, then swap (STYLE.md §2.5): a ``Plan`` is computed from memory without changing
it; ``state`` commits its ``changes`` (``domain.changes``: rows and the notifications they imply;
``db.writer`` turns them into SQL) in one transaction and only then calls
``swap()``, which moves memory to the committed state, and publishes ``messages``. A plan whose
commit failed is dropped: memory stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from coldharbour.domain.changes import Change
from coldharbour.messages import Msg


@dataclass(slots=True)
class Plan:
    """One transaction's worth of work and what to do after it committed."""

    changes: list[Change] = field(default_factory=list)
    swaps: list[Callable[[], None]] = field(default_factory=list)
    messages: list[tuple[str, Msg]] = field(default_factory=list)
    accounts: set[str] = field(default_factory=set)  # slugs whose events it carries

    @property
    def needs_commit(self) -> bool:
        """Return True when there is something to send to the database."""
        return bool(self.changes)

    def swap(self) -> None:
        """Apply the planned in-memory changes (call only after the commit succeeded)."""
        for apply in self.swaps:
            apply()

    def extend(self, other: Plan) -> None:
        """Append ``other``'s work to this plan (one transaction for both)."""
        self.changes += other.changes
        self.swaps += other.swaps
        self.messages += other.messages
        self.accounts |= other.accounts


@dataclass(frozen=True)
class LedgerCheck:
    """Ask ``state`` to load ``slug``'s stored history and compare a rebuild with the ledger."""

    slug: str

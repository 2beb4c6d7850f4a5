"""The in-memory mirror owned by ``state``: marks, dirty flags, program liveness.

Mutated only by ``state``'s single consumer task. It decides *what* to write; ``db.upserts``
says *how*; ``db.writer`` commits. Price-only changes are held as dirty and written by
``flush_steps()``; ``flushed()`` clears them only after the commit succeeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from coldharbour.db import notify, upserts
from coldharbour.db.names import AccountNames, SharedNames
from coldharbour.db.writer import Step
from coldharbour.domain.money import InvalidMoney, to_decimal
from coldharbour.messages import Heartbeat, Message, Tick


class Mirror:
    """Per-process in-memory state of every account."""

    def __init__(self, shared: SharedNames, accounts: Sequence[AccountNames]) -> None:
        self.shared = shared
        self.accounts = list(accounts)
        self.marks: dict[str, tuple[Decimal, datetime]] = {}
        self.dirty_symbols: set[str] = set()
        self.heartbeats: dict[str, Heartbeat] = {}
        self.rejected_ticks = 0

    def apply(self, topic: str, message: Message) -> None:
        """Apply one bus message to memory (no I/O)."""
        match message:
            case Tick():
                self._apply_tick(message)
            case Heartbeat():
                self.heartbeats[message.program] = message
            case _:
                pass

    def _apply_tick(self, tick: Tick) -> None:
        try:
            price = to_decimal(tick.price, field="price")
        except InvalidMoney:
            self.rejected_ticks += 1
            return
        ts_ns = tick.ts_event or tick.ts
        when = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)
        current = self.marks.get(tick.symbol)
        if current is not None and current[1] > when:
            return  # an older print arriving late never replaces a newer mark
        self.marks[tick.symbol] = (price, when)
        self.dirty_symbols.add(tick.symbol)

    def flush_steps(self) -> list[Step]:
        """Return the statements writing every dirty price (empty when nothing is dirty)."""
        if not self.dirty_symbols:
            return []
        rows = [(s, *self.marks[s]) for s in sorted(self.dirty_symbols)]
        return [upserts.latest_prices(self.shared.latest_prices, rows)]

    def flushed(self) -> None:
        """Forget dirty flags after a successful commit."""
        self.dirty_symbols.clear()

    def heartbeat_notifications(self, now: datetime) -> list[notify.Notification]:
        """Return the UI heartbeat for every account's positions channel."""
        return [notify.heartbeat(a.pos_channel, now) for a in self.accounts]

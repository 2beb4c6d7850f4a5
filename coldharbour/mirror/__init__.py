"""The in-memory mirror owned by ``state``: accounts (ledger, orders, rows), marks and bars.

Modules by concept: ``core`` (the batch → plans generator), ``account`` (one account's state
and its plans), ``batch`` (staging one account's inputs), ``book`` (the order view with a batch
on top), ``marks`` (prices and 1-minute bars), ``plan`` (what ``state`` commits then swaps).
It decides *what* changes (``domain.changes``); ``db.writer`` alone turns changes into SQL and commits.
"""

from coldharbour.mirror.core import Event, FlushDue, GapDetected, HeartbeatDue, Mirror
from coldharbour.mirror.plan import LedgerCheck, Plan

__all__ = ["Event", "FlushDue", "GapDetected", "HeartbeatDue", "LedgerCheck", "Mirror", "Plan"]

"""The in-memory mirror owned by ``state``: accounts (ledger, orders, rows), marks and bars.

Modules by concept: ``owner`` (the commit protocol: plan, commit, then swap), ``core`` (a batch
of events → plans, and the swap), ``account`` (one account's state and its plans), ``batch``
(staging one account's inputs), ``book`` (the order view with a batch on top), ``marks`` (prices
and 1-minute bars), ``plan`` (what is committed, and what memory takes after the commit). It
decides *what* changes (``domain.changes``); ``db.writer`` alone turns changes into SQL. Nothing
here imports ``db/`` (``tests/test_architecture.py``).
"""

from coldharbour.mirror.core import Event, FlushDue, GapDetected, HeartbeatDue, Mirror
from coldharbour.mirror.owner import StateOwner
from coldharbour.mirror.plan import LedgerCheck, Plan

__all__ = ["Event", "FlushDue", "GapDetected", "HeartbeatDue", "LedgerCheck", "Mirror", "Plan", "StateOwner"]

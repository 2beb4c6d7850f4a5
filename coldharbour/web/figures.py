"""The account header's figures: what the broker's ``GET /v2/account`` said, as `snapshot` read it.

``snapshot`` reads ``/v2/account`` with every full snapshot (``SNAPSHOT_SEC``) and publishes its
cash, equity, buying power and last equity in ``SnapshotTaken``; ``AccountFigures`` subscribes to
``snap.*``, keeps the newest per account and pushes each to the page as an ``account`` frame.
Today's P&L is ``equity - last_equity`` (last equity: the equity at the previous session's
close), as the broker's own dashboard shows it. Before the first snapshot this process hears,
an account has no figures (the page says it waits for the broker's account); nothing is
guessed from other tables.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from coldharbour.bus import Subscriber
from coldharbour.db.notify import to_json
from coldharbour.domain.money import round_pct
from coldharbour.domain.types import to_datetime
from coldharbour.messages import SnapshotTaken
from coldharbour.web.hub import Hub, frame

PREFIX_SNAPSHOT: Final = "snap."
RECV_WAKE_S: Final = 1.0


def figures_of(snapshot: SnapshotTaken) -> dict[str, Any]:
    """Return the header's document of a full snapshot: the broker's figures and today's P&L."""
    equity, last = snapshot.equity, snapshot.last_equity
    day_pl = equity - last if equity is not None and last is not None else None
    day_pct = round_pct(day_pl / last * 100) if day_pl is not None and last else None
    return {
        "equity": equity,
        "cash": snapshot.cash,
        "buying_power": snapshot.buying_power,
        "last_equity": last,
        "day_pl": day_pl,
        "day_pl_pct": day_pct,
        "as_of": to_datetime(snapshot.taken_at).isoformat(),
    }


class AccountFigures:
    """The newest figures per account, pushed to the page as they come."""

    def __init__(self, subscriber: Subscriber, hub: Hub) -> None:
        self._subscriber = subscriber
        self._hub = hub

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the newest figures of every account until ``stop``."""
        while not stop.is_set():
            try:
                _, message = await asyncio.wait_for(self._subscriber.recv(), RECV_WAKE_S)
            except TimeoutError:
                continue
            if isinstance(message, SnapshotTaken):
                self.take(message)

    def take(self, snapshot: SnapshotTaken) -> None:
        """Keep and push the figures of a full snapshot (a partial one carries none)."""
        if snapshot.symbols or snapshot.equity is None or snapshot.account not in self._hub.accounts:
            return
        known = self._hub.account_figures.get(snapshot.account)
        if known is not None and known["as_of"] > to_datetime(snapshot.taken_at).isoformat():
            return  # an older snapshot arriving late
        document = figures_of(snapshot)
        self._hub.account_figures[snapshot.account] = document
        self._hub.broadcast(snapshot.account, frame("account", to_json(document)))

    def close(self) -> None:
        """Close the subscriber."""
        self._subscriber.close()

"""What the broker reports, as domain values: the activity record, and how far ahead a report may be.

The broker adapter (``broker/convert.py``) turns Alpaca's JSON into these; the database layer
(``db/rows.py``, ``db/loads.py``) stores and loads them; the mirror books them. Keeping them here
lets ``broker → domain`` and ``db → domain`` stay one-way (docs/architecture.md §5).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import msgspec

from coldharbour.domain.money import is_finite

NS_PER_SECOND: Final = 1_000_000_000
BROKER_FUTURE_NS: Final = 86_400 * NS_PER_SECOND  # a broker record may be stamped ≤ 1 day ahead
TICK_FUTURE_NS: Final = 300 * NS_PER_SECOND  # a feed tick ≤ 5 minutes ahead of our clock


class ActivityRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One account activity as stored in ``raw_activities_<slug>`` (fills and cash activities).

    ``transaction_time`` is UTC ns; ``raw_json`` is the broker's JSON text, kept verbatim. A
    non-finite or out-of-range amount is refused at construction (``ValueError``; msgspec turns it
    into a decode error), as every bus message that carries money does.
    """

    id: str
    activity_type: str
    transaction_time: int
    symbol: str | None = None
    side: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    net_amount: Decimal | None = None
    execution_id: str | None = None
    order_id: str | None = None
    raw_json: str = "{}"
    # The broker's ``status`` (``executed``, ``correct``, ``canceled``): a known id seen again
    # with ``canceled`` or a new amount is a correction (docs/spec.md §8); a canceled FILL is a bust.
    status: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("qty", self.qty), ("price", self.price), ("net_amount", self.net_amount)):
            if value is not None and not is_finite(value):
                raise ValueError(f"{name}: non-finite or out-of-range number")

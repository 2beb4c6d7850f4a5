"""The page header's document from a full snapshot (``web.figures.figures_of``): today's P&L
and its percentage for every pair of equity and previous close the money rules accept, including
extremes (a 1e15 equity over a 1e-20 previous close once raised ``InvalidOperation`` in the
percentage's ``quantize`` and stopped the header's task)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from coldharbour.messages import SnapshotTaken
from coldharbour.web.figures import figures_of


def _snapshot(equity: str | None, last: str | None) -> SnapshotTaken:
    return SnapshotTaken(
        account="demo", taken_at=1_765_000_000_000_000_000, positions=(),
        equity=None if equity is None else Decimal(equity), last_equity=None if last is None else Decimal(last),
        cash=Decimal("100"), buying_power=Decimal("200"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("equity", "last", "day_pl", "day_pct"),
    [
        ("10100", "10000", Decimal("100"), Decimal("1.00")),
        ("9950", "10000", Decimal("-50"), Decimal("-0.50")),
        ("1e15", "1e-20", Decimal("1e15") - Decimal("1e-20"), Decimal("1e37")),
        ("1e-20", "1e15", Decimal("1e-20") - Decimal("1e15"), Decimal("-100.00")),
        ("10000", "0", Decimal("10000"), None),
        (None, "10000", None, None),
        ("10000", None, None, None),
    ],
)
def test_day_pl_and_its_percentage(equity: str | None, last: str | None, day_pl: Decimal | None,
                                   day_pct: Decimal | None) -> None:  # fmt: skip
    figures = figures_of(_snapshot(equity, last))
    assert figures["day_pl"] == day_pl
    assert figures["day_pl_pct"] == day_pct
    assert figures["cash"] == Decimal("100")
    assert figures["buying_power"] == Decimal("200")

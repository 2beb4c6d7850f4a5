"""The stored form of a fill, computed directly, equals the JSON round trip it replaced.

``canon.stored_fill`` gives the fill ``state`` applies without encoding the activity row and
decoding it back; ``fill_from_activity(activity_from_fill(fill))`` stays the reference (it is
what a start-up load reads). ``_stamp`` formats the activity id's time without ``strftime``.
No database: pure conversions.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldharbour.domain import stored as canon
from coldharbour.domain.types import Fill, to_datetime

_DECIMALS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e6"), max_value=Decimal("1e6")),
    st.sampled_from([Decimal(t) for t in ("0", "-0", "1", "10", "1.500", "1E+2", "0E-5", "2.5", "0.0001", "-3")]),
)
_IDS = st.one_of(st.none(), st.just(""), st.builds(lambda: str(uuid.uuid4())), st.text(max_size=12),
                 st.sampled_from(["AB1ABC12-9A7B-4C3D-8E9F-0A1B2C3D4E5F", "x-1", "::"]))


@st.composite
def fills(draw: st.DrawFn) -> Fill:
    return Fill(
        order_id=draw(st.one_of(st.builds(lambda: str(uuid.uuid4())), st.text(max_size=8))),
        symbol=draw(st.sampled_from(["AAPL", "", "BRK.B"])),
        side=draw(st.sampled_from(["buy", "sell", "sell_short", "BUY", "Sell", "", "hold"])),
        qty=draw(_DECIMALS), price=draw(_DECIMALS),
        ts=draw(st.integers(-(10**18), 9 * 10**18)),
        execution_id=draw(_IDS), cum_qty=draw(st.one_of(st.none(), _DECIMALS)),
    )


def _exact(fill: Fill) -> tuple[tuple[type, str], ...]:
    """Every field with its type and text: ``==`` on Decimals would hide a different form."""
    return tuple((type(v), str(v)) for v in msgspec.structs.astuple(fill))


def _round_trip(fill: Fill) -> tuple[str, object]:
    try:
        record = canon.activity_from_fill(fill)
    except ValueError as e:
        return ("raises", str(e))
    again = canon.fill_from_activity(record)
    return ("invalid", None) if again is None else ("ok", (record, again))


@settings(max_examples=600, deadline=None)
@given(fill=fills())
def test_stored_fill_equals_the_json_round_trip(fill: Fill) -> None:
    outcome, found = _round_trip(fill)
    if outcome == "raises":
        assert isinstance(found, str)
        with pytest.raises(ValueError, match=re.escape(found)):  # the same refusal as the record's
            canon.stored_fill(fill)
        return
    if outcome == "invalid":
        with pytest.raises(canon.InvalidRow, match="cannot be stored"):
            canon.stored_fill(fill)
        return
    assert isinstance(found, tuple)
    record, again = found
    key, stored_record, stored = canon.stored_fill(fill)
    assert stored_record == record
    old_raw = {"order_id": fill.order_id, "execution_id": fill.key, "symbol": fill.symbol, "side": fill.side,
               "qty": fill.qty, "price": fill.price, "source": "state", "cum_qty": fill.cum_qty}
    assert record.raw_json == msgspec.json.Encoder(decimal_format="string").encode(old_raw).decode()
    assert _exact(stored) == _exact(again)
    assert key == fill.key == again.key


@settings(max_examples=400, deadline=None)
@given(ts=st.integers(-(10**19), 2**63 - 1))
def test_stamp_equals_strftime(ts: int) -> None:
    assert canon._stamp(ts) == to_datetime(ts).astimezone(UTC).strftime("%Y%m%d%H%M%S%f")[:17]


def test_stamp_of_a_known_time() -> None:
    assert canon._stamp(1_709_305_200_123_456_789) == "20240301150000123"

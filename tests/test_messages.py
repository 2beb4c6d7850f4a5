"""Messages: every type round-trips; bad frames are rejected at decode, never half-accepted."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldharbour import messages as m
from coldharbour.domain.cashflows import CashFlow, Category
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.equity import DailyRow, IntradayPoint
from coldharbour.domain.money import MAX_ABS
from coldharbour.domain.reports import ActivityRecord
from coldharbour.domain.schedule import Session
from coldharbour.domain.types import BrokerPosition, Fill, Order

NOW = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
ORDER = Order(
    id="11111111-1111-1111-1111-111111111111", symbol="AAPL", side="buy", order_type="limit", status="filled",
    created_at=1, updated_at=2, qty=Decimal("10"), filled_qty=Decimal("10"), filled_avg_price=Decimal("187.25"),
    limit_price=Decimal("187.30"), legs=("a", "b"),
)  # fmt: skip
FILL = Fill(
    order_id=ORDER.id, symbol="AAPL", side="buy", qty=Decimal("10"), price=Decimal("187.25"), ts=3, execution_id="e1"
)
ACTIVITY = ActivityRecord(id="20260302::x", activity_type="DIV", transaction_time=5, net_amount=Decimal("2.40"))


def _every_message() -> list[m.Msg]:
    daily = msgspec.convert(
        {"date": "2026-03-02", "deposit": "1", "cash_balance": "1", "market_value": "0", "net_flows": "0",
         "daily_return": "0", "cumulative_return": "0", "drawdown": "0"},
        DailyRow, strict=False,
    )  # fmt: skip
    position = BrokerPosition(symbol="AAPL", qty=Decimal("-5"), avg_entry_price=Decimal("10.5"))
    flow = CashFlow(id="c", ts=NOW, amount=Decimal("-1.5"), type="FEE", category=Category.FEE)
    point = IntradayPoint(ts=NOW, deposit=Decimal("1"), cumulative_return=None, drawdown=None, realised_return=None)
    session = Session(session_date=date(2026, 3, 2), pre_open_utc=NOW, open_utc=NOW, close_utc=NOW, post_close_utc=NOW)
    action = CorporateAction(id="a", type="split", symbol="AAPL", ts=1, ratio=Decimal("0.1"),
                             cash_in_lieu_qty=Decimal("0.5"), price=Decimal("340"))
    return [
        m.Heartbeat(program="state", pid=1, uptime_s=1.5, counters={"rejects": 2}, lag_ms=0.3),
        m.Probe(token="t"),
        m.ResyncRequested(account="demo", reason="gap", symbols=("AAPL",)),
        m.Tick(symbol="AAPL", price=187.25, size=100, ts_event=9),
        m.TickBatch(symbols=("AAPL", "MSFT"), prices=(187.25, 400.0), sizes=(100.0, 0.0), ts_events=(9, 0)),
        m.OrderUpdated(account="demo", event="fill", order=ORDER, fill=FILL, event_ts=4, order_json='{"id": "x"}'),
        m.SnapshotTaken(account="demo", taken_at=1, positions=(position,), cash=Decimal("100000.00")),
        m.OrdersPage(account="demo", orders=(ORDER,), orders_json=("{}",)),
        m.FillsPage(account="demo", fills=(FILL,), activities=(ACTIVITY,)),
        m.ActivitiesPage(account="demo", activities=(ACTIVITY,), cash_flows=(flow,)),
        m.EquityComputed(account="demo", daily=(daily,), intraday=(point,), bars={"AAPL": (Decimal("1.5"), 7)}),
        m.MetricsComputed(account="demo", payload='{"a": 1}', computed_at=1),
        m.AccountChanged(account="demo", kinds=("closed", "open_rows")),
        m.ScheduleComputed(sessions=(session,)),
        m.SessionPhaseChanged(phase="open", session_date="2026-03-02", at_ns=1),
        m.LedgerCheckRequested(account="demo"),
        m.SpinoffBasisSet(account="demo", action_id="20240301103000000::x", parent_share=Decimal("0.9"), parent="GE"),
        m.CorporateActionsPage(
            account="demo", actions=(action,), activities=(ACTIVITY,), problems=("x: leg without a partner",)
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("message", _every_message(), ids=lambda x: type(x).__name__)
def test_every_message_round_trips(message: m.Msg) -> None:
    stamped = msgspec.structs.replace(message, src="test", seq=7, ts=123)

    assert m.decode(m.encode(stamped)) == stamped


def test_every_message_type_is_in_the_union() -> None:
    union = set(m.Message.__args__)

    assert {type(x) for x in _every_message()} == union


def test_decimal_money_is_exact_on_the_wire() -> None:
    decoded = m.decode(m.encode(m.FillsPage(account="d", fills=(), activities=(ACTIVITY,))))

    assert isinstance(decoded, m.FillsPage)
    assert decoded.activities[0].net_amount == Decimal("2.40")


def test_newer_field_is_ignored_by_older_decoder() -> None:
    payload = msgspec.msgpack.encode({"type": "cmd.resync", "account": "demo", "reason": "x", "added_in_v2": [1, 2]})

    assert m.decode(payload) == m.ResyncRequested(account="demo", reason="x")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "Input data was truncated"),
        (b"\xc1", r"MessagePack data is malformed: invalid opcode '\\xc1'"),
        (msgspec.msgpack.encode([1, 2, 3]), "Expected `object`, got `array`"),
        (msgspec.msgpack.encode({"type": "px", "symbol": "A", "price": float("inf")}),
         "price must be finite and positive, found inf"),
        (msgspec.msgpack.encode({"type": "px", "symbol": "A", "price": 0.0}),
         "price must be finite and positive, found 0.0"),
        (msgspec.msgpack.encode({"type": "px", "symbol": "A"}), "Object missing required field `price`"),
        (msgspec.msgpack.encode({"type": "px.batch", "symbols": ["A", "B"], "prices": [1.0, float("nan")],
                                 "sizes": [0.0, 0.0], "ts_events": [1, 2]}), "prices must be finite and positive"),
        (msgspec.msgpack.encode({"type": "px.batch", "symbols": ["A"], "prices": [-1.0], "sizes": [0.0],
                                 "ts_events": [1]}), "prices must be finite and positive"),
        (msgspec.msgpack.encode({"type": "px.batch", "symbols": ["A"], "prices": [1.0], "sizes": [-2.0],
                                 "ts_events": [1]}), "sizes must be finite and non-negative"),
        (msgspec.msgpack.encode({"type": "px.batch", "symbols": ["A", "B"], "prices": [1.0], "sizes": [0.0],
                                 "ts_events": [1]}), "columns must have the same length"),
        (msgspec.msgpack.encode({"type": "hb", "program": "x", "pid": "1", "uptime_s": 0}),
         r"Expected `int`, got `str` - at `\$\.pid`"),
        (msgspec.msgpack.encode({"type": "cash.activities", "account": "d", "activities": [
            {"id": "x", "activity_type": "DIV", "transaction_time": 1, "net_amount": "NaN"}]}),
         r"net_amount: non-finite or out-of-range number - at `\$\.activities\[0\]`"),
        (msgspec.msgpack.encode({"type": "nope"}), r"Invalid value 'nope' - at `\$\.type`"),
    ],
)  # fmt: skip
def test_bad_payloads_raise_decode_error(payload: bytes, message: str) -> None:
    with pytest.raises(msgspec.DecodeError, match=message):
        m.decode(payload)


@pytest.mark.parametrize("qty", ["1e999", "-1E+30", "1000000000000001"])
def test_issue_9_huge_decimal_rejected_at_decode(qty: str) -> None:
    """Bug: ``Decimal("1e999")`` is finite, so a snapshot claiming a position of 1e999 shares
    passed the NaN/inf check, reached ``state``, was reconciled and written as an open row.
    Money and quantities above ``domain.money.MAX_ABS`` are now rejected like NaN."""
    payload = msgspec.msgpack.encode({"type": "snap", "account": "demo", "taken_at": 1, "positions": [
        {"symbol": "AAPL", "qty": qty, "avg_entry_price": "1"}]})  # fmt: skip

    with pytest.raises(msgspec.DecodeError, match=r"^positions: non-finite or out-of-range number"):
        m.decode(payload)


# --- the finiteness check reaches every number (it walks a plan made from declared types) ----

BAD_DECIMALS = (Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("1e999"), -(MAX_ABS + 1))
BAD_FLOATS = (float("nan"), float("inf"), float("-inf"))
Path = tuple[object, ...]


def _number_paths(value: object, path: Path = ()) -> Iterator[tuple[Path, object]]:
    """Yield (path, number) for every Decimal and float inside ``value``, by runtime type."""
    if isinstance(value, Decimal | float):
        yield path, value
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            yield from _number_paths(getattr(value, name), (*path, name))
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            yield from _number_paths(item, (*path, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _number_paths(item, (*path, key))


def _replace_at(value: Any, path: Path, new: object, *, checked: bool) -> Any:
    """Return ``value`` with the item at ``path`` replaced; ``checked``: rebuild through the
    constructor (``__post_init__`` runs at every level), else set fields without any check."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, msgspec.Struct):
        inner = _replace_at(getattr(value, str(head)), rest, new, checked=checked)
        if checked:
            return msgspec.structs.replace(value, **{str(head): inner})
        copied = copy.copy(value)
        msgspec.structs.force_setattr(copied, str(head), inner)
        return copied
    if isinstance(value, dict):
        return {**value, head: _replace_at(value[head], rest, new, checked=checked)}
    assert isinstance(head, int)
    items = list(value)
    items[head] = _replace_at(items[head], rest, new, checked=checked)
    return type(value)(items)


def _rich_messages() -> list[m.Msg]:
    leg = msgspec.structs.replace(ORDER, stop_price=Decimal(1))
    order_with_leg = m.OrderUpdated(account="demo", event="fill", order=ORDER, fill=FILL, legs=(leg,))
    return [*_every_message(), order_with_leg]


def _cases() -> list[tuple[m.Msg, Path, object]]:
    cases: list[tuple[m.Msg, Path, object]] = []
    for message in _rich_messages():
        for path, number in _number_paths(message):
            for bad in BAD_DECIMALS if isinstance(number, Decimal) else BAD_FLOATS:
                cases.append((message, path, bad))
    return cases


def test_the_cases_reach_numbers_at_every_depth() -> None:
    paths = {(type(message).__name__, path) for message, path, _ in _cases()}

    assert ("OrderUpdated", ("fill", "price")) in paths
    assert ("OrderUpdated", ("legs", 0, "stop_price")) in paths
    assert ("EquityComputed", ("bars", "AAPL", 0)) in paths
    assert ("FillsPage", ("activities", 0, "net_amount")) in paths
    assert ("Heartbeat", ("uptime_s",)) in paths
    assert len(paths) > 40


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{type(c[0]).__name__}.{'.'.join(map(str, c[1]))}={c[2]}")
def test_a_bad_number_anywhere_is_rejected_when_built_and_when_decoded(case: tuple[m.Msg, Path, object]) -> None:
    message, path, bad = case
    smuggled = _replace_at(message, path, bad, checked=False)

    with pytest.raises(ValueError, match=r"non-finite|finite and"):
        _replace_at(message, path, bad, checked=True)
    with pytest.raises(msgspec.DecodeError, match=r"non-finite|finite and"):
        m.decode(m.encode(smuggled))


def test_the_field_holding_the_bad_number_is_named() -> None:
    bad_leg = msgspec.structs.replace(ORDER, commission=Decimal("NaN"))

    with pytest.raises(ValueError, match=r"^legs: non-finite or out-of-range number$"):
        m.OrderUpdated(account="demo", event="fill", order=ORDER, legs=(ORDER, bad_leg))


def test_a_value_of_an_undeclared_type_is_still_walked() -> None:
    """Only code that bypasses mypy can put a float where a Decimal or a Struct is declared; the
    check then falls back to asking the value what it is."""
    with pytest.raises(ValueError, match=r"^order: "):
        m.OrderUpdated(account="demo", event="fill", order=[Decimal("NaN")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^fill: "):
        m.OrderUpdated(account="demo", event="fill", order=ORDER, fill={"qty": float("inf")})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^cash: "):
        m.SnapshotTaken(account="demo", taken_at=1, positions=(), cash=float("nan"))  # type: ignore[arg-type]


class _Unresolvable(m.Checked, frozen=True):
    value: NoSuchType  # type: ignore[name-defined]  # noqa: F821 - msgspec cannot resolve it


def test_a_class_whose_types_cannot_be_read_is_checked_by_its_values() -> None:
    assert _Unresolvable(value=Decimal(1)).value == Decimal(1)
    with pytest.raises(ValueError, match=r"^value: non-finite"):
        _Unresolvable(value=Decimal("NaN"))


FINITE = st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-MAX_ABS, max_value=MAX_ABS)
ANY_DECIMAL = st.one_of(
    FINITE, st.decimals(allow_nan=True, allow_infinity=True), st.sampled_from(BAD_DECIMALS), st.just(MAX_ABS)
)


@settings(max_examples=300, deadline=None)
@given(qty=ANY_DECIMAL, price=ANY_DECIMAL, cum_qty=st.none() | ANY_DECIMAL, commission=ANY_DECIMAL)
def test_the_planned_check_agrees_with_the_walk_by_runtime_type(
    qty: Decimal, price: Decimal, cum_qty: Decimal | None, commission: Decimal
) -> None:
    fill = msgspec.structs.replace(FILL, qty=qty, price=price, cum_qty=cum_qty)
    order = msgspec.structs.replace(ORDER, commission=commission)
    expected = m._has_non_finite(fill) or m._has_non_finite(order)

    try:
        m.OrderUpdated(account="demo", event="fill", order=ORDER, fill=fill, legs=(order,))
        rejected = False
    except ValueError:
        rejected = True

    assert rejected == expected


# --- cashflows' completeness mark in its heartbeat (docs/startup.md) ---------------------------

GOOD_MARK = 1_765_000_000_000_000_000


@pytest.mark.parametrize("value", [
    "", "abc", "-1", "1.5", "1e18", " 1", "²", "١٢٣", "\x00", "9" * 40, str(2**63), "0x10",
])  # fmt: skip
def test_a_malformed_cash_complete_mark_is_left_out_after_the_bus(value: str) -> None:
    details = {m.cash_complete_detail("bad"): value, m.cash_complete_detail("demo"): str(GOOD_MARK)}
    beat = m.Heartbeat(program="cashflows", pid=1, uptime_s=1.0, details=details)
    decoded = m.decode(m.encode(beat))
    assert isinstance(decoded, m.Heartbeat)

    assert m.cash_complete_marks(decoded) == {"demo": GOOD_MARK}


@given(st.text(max_size=30))
@settings(max_examples=300)
def test_every_cash_complete_mark_kept_is_an_instant_equity_can_hold(value: str) -> None:
    marks = m.cash_complete_marks(m.Heartbeat(program="cashflows", pid=1, uptime_s=1.0,
                                              details={m.cash_complete_detail("demo"): value}))  # fmt: skip

    for mark in marks.values():  # what equity does with it (workers/equity.py)
        assert datetime.fromtimestamp(mark / 1e9, tz=UTC).year <= 2262

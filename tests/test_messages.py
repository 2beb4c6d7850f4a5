"""Messages: every type round-trips; bad frames are rejected at decode, never half-accepted."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import msgspec
import pytest

from coldharbour import messages as m
from coldharbour.domain.cashflows import CashFlow, Category
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.equity import DailyRow, IntradayPoint
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
ACTIVITY = m.ActivityRecord(id="20260302::x", activity_type="DIV", transaction_time=5, net_amount=Decimal("2.40"))


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
        m.ScheduleComputed(sessions=(session,)),
        m.SessionPhaseChanged(phase="open", session_date="2026-03-02", at_ns=1),
        m.LedgerCheckRequested(account="demo"),
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
    "payload",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"type": "px", "symbol": "A", "price": float("inf")}),
        msgspec.msgpack.encode({"type": "px", "symbol": "A", "price": 0.0}),
        msgspec.msgpack.encode({"type": "px", "symbol": "A"}),
        msgspec.msgpack.encode({"type": "px.batch", "symbols": ["A", "B"], "prices": [1.0, float("nan")],
                                "sizes": [0.0, 0.0], "ts_events": [1, 2]}),
        msgspec.msgpack.encode({"type": "px.batch", "symbols": ["A"], "prices": [-1.0], "sizes": [0.0],
                                "ts_events": [1]}),
        msgspec.msgpack.encode({"type": "px.batch", "symbols": ["A"], "prices": [1.0], "sizes": [-2.0],
                                "ts_events": [1]}),
        msgspec.msgpack.encode({"type": "px.batch", "symbols": ["A", "B"], "prices": [1.0], "sizes": [0.0],
                                "ts_events": [1]}),
        msgspec.msgpack.encode({"type": "hb", "program": "x", "pid": "1", "uptime_s": 0}),
        msgspec.msgpack.encode({"type": "cash.activities", "account": "d", "activities": [
            {"id": "x", "activity_type": "DIV", "transaction_time": 1, "net_amount": "NaN"}]}),
        msgspec.msgpack.encode({"type": "nope"}),
    ],
)
def test_bad_payloads_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        m.decode(payload)


@pytest.mark.parametrize("qty", ["1e999", "-1E+30", "1000000000000001"])
def test_issue_9_huge_decimal_rejected_at_decode(qty: str) -> None:
    """Bug: ``Decimal("1e999")`` is finite, so a snapshot claiming a position of 1e999 shares
    passed the NaN/inf check, reached ``state``, was reconciled and written as an open row.
    Money and quantities above ``domain.money.MAX_ABS`` are now rejected like NaN."""
    payload = msgspec.msgpack.encode({"type": "snap", "account": "demo", "taken_at": 1, "positions": [
        {"symbol": "AAPL", "qty": qty, "avg_entry_price": "1"}]})  # fmt: skip

    with pytest.raises(msgspec.DecodeError):
        m.decode(payload)

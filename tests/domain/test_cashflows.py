"""Activity classification, signs, conversion with rejections, and the incremental cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coldharbour.domain.cashflows import (
    CashFlow,
    Category,
    Execution,
    FlowChanges,
    Rejection,
    activity_id_time,
    classify,
    commission_flow,
    convert_activities,
    flow_changes,
    newest_id,
    query_after,
    select_new,
    to_cash_flow,
    to_corporate_execution,
    to_execution,
    unclassified_codes,
)

# The catalogue of docs/spec.md §8 (Alpaca's activity types: https://docs.alpaca.markets/us/docs/account-activities.md
# and the 2026-11-06 "activity types" changelog of docs.alpaca.markets).
CATALOGUE: dict[Category, list[str]] = {
    Category.TRADE: ["FILL", "PARTIAL_FILL", "OPTRD"],
    Category.INCOME: ["DIV", "DIVCGL", "DIVCGS", "DIVNRA", "DIVROC", "DIVTXEX", "DIVWH", "DIVFT", "DIVTW", "DIVFEE"],
    Category.INTEREST: ["INT", "INTNRA", "INTTW", "INTPNL"],
    Category.FEE: ["FEE", "CFEE", "PTC", "PTR"],
    Category.TAX: ["WH"],
    Category.EXTERNAL: ["CSD", "CSW", "JNLC", "JNLS", "ACATC", "ACATS"],
    Category.CORPORATE: [
        "SPLIT", "SSP", "SPIN", "SSO", "MA", "NC", "SC", "REORG", "CIL", "OPASN", "OPEXC", "OPEXP", "OPCA",
    ],
    Category.OTHER: ["MISC", "SWP", "FXTRD"],
    Category.UNCLASSIFIED: ["XYZ_NEW_CODE", "DVF", "TRANS"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("code", "category"),
    [(c, cat) for cat, codes in CATALOGUE.items() for c in codes]
    + [(" div ", Category.INCOME), ("cfee", Category.FEE), ("fill", Category.TRADE)],
)
def test_classify_every_code(code: str, category: Category) -> None:
    assert classify(code) is category


def test_only_external_codes_are_external_and_unknown_is_never_a_deposit() -> None:
    external = {c for cat, codes in CATALOGUE.items() for c in codes if classify(c) is Category.EXTERNAL}

    assert external == set(CATALOGUE[Category.EXTERNAL])
    flow = to_cash_flow({"id": flow_id(1), "activity_type": "NEWCODE", "date": "2024-07-01", "net_amount": "500"})
    assert isinstance(flow, CashFlow)
    assert flow.category is Category.UNCLASSIFIED


def test_unclassified_codes_reports_each_new_code_once() -> None:
    flows = [
        CashFlow(id=str(i), ts=datetime(2025, 1, 1, tzinfo=UTC), amount=Decimal(1), type=code, category=classify(code))
        for i, code in enumerate(["ZZZ", "DIV", "AAA", "ZZZ", "AAA"])
    ]

    assert unclassified_codes(flows) == ["AAA", "ZZZ"]
    assert unclassified_codes(flows, known={"AAA"}) == ["ZZZ"]


def test_cfee_paid_in_coin_is_valued_at_the_coin_price() -> None:
    """A crypto fee debited in coin: ``net_amount`` "0", ``qty`` < 0, ``price`` the coin's price."""
    activity = {
        "id": flow_id(1),
        "activity_type": "CFEE",
        "date": "2024-07-01",
        "net_amount": "0",
        "qty": "-0.000025",
        "price": "60000.5",
        "symbol": "BTCUSD",
        "description": "Coin Pair Transaction Fee (Non USD)",
        "status": "executed",
    }

    result = to_cash_flow(activity)

    assert isinstance(result, CashFlow)
    assert result.category is Category.FEE
    assert result.amount == Decimal("-0.000025") * Decimal("60000.5")
    no_price = to_cash_flow({**activity, "price": None})
    assert isinstance(no_price, Rejection)
    assert "price" in no_price.reason
    cash_fee = to_cash_flow({**activity, "net_amount": "-1.5", "qty": None})
    assert isinstance(cash_fee, CashFlow)
    assert cash_fee.amount == Decimal("-1.5")


def flow_id(n: int) -> str:
    return f"2025011{n}100000000::0000000{n}-aaaa-4bbb-8ccc-dddddddddddd"


def test_to_cash_flow_dividend_keeps_sign_and_ny_date() -> None:
    activity = {
        "id": "20240215000000000::2b1f2c4d-6e7f-4a8b-9c0d-1e2f3a4b5c6d",
        "activity_type": "DIV",
        "date": "2024-02-15",
        "net_amount": "2.4",
        "symbol": "AAPL",
        "description": "Cash DIV @ 0.24",
        "status": "executed",
    }

    result = to_cash_flow(activity)

    # A bare date is 00:00 New York (EST here: 05:00Z), so its NY date stays the 15th (docs/defects.md D13).
    assert result == CashFlow(
        id=activity["id"],
        ts=datetime(2024, 2, 15, 5, tzinfo=UTC),
        amount=Decimal("2.4"),
        type="DIV",
        category=Category.INCOME,
        description="Cash DIV @ 0.24",
    )


@pytest.mark.parametrize(
    ("activity", "amount", "category"),
    [
        ({"activity_type": "CSW", "date": "2024-07-01", "net_amount": "-500"}, Decimal(-500), Category.EXTERNAL),
        ({"activity_type": "FEE", "date": "2024-07-01", "net_amount": "-0.02"}, Decimal("-0.02"), Category.FEE),
        ({"activity_type": "DIVWH", "date": "2024-07-01", "net_amount": "-0.36"}, Decimal("-0.36"), Category.INCOME),
        ({"activity_type": "JNLC", "date": "2024-07-01", "net_amount": -500.5}, Decimal("-500.5"), Category.EXTERNAL),
        # FILL without net_amount: -side·qty·price.
        (
            {
                "activity_type": "FILL",
                "transaction_time": "2024-03-01T15:00:00.300Z",
                "side": "buy",
                "qty": "10",
                "price": "180.25",
            },
            Decimal("-1802.50"),
            Category.TRADE,
        ),
        (
            {
                "activity_type": "FILL",
                "transaction_time": "2024-03-01T15:00:00Z",
                "side": "sell",
                "qty": "4",
                "price": "10.5",
            },
            Decimal("42.0"),
            Category.TRADE,
        ),
        (
            {
                "activity_type": "FILL",
                "transaction_time": "2024-03-01T15:00:00Z",
                "side": "sell_short",
                "qty": "3",
                "price": "2",
            },
            Decimal(6),
            Category.TRADE,
        ),
        # A stream fill that carries its own net_amount keeps it.
        (
            {
                "activity_type": "FILL",
                "transaction_time": "2024-03-01T15:00:00Z",
                "side": "buy",
                "qty": "1",
                "price": "2",
                "net_amount": "-2.01",
            },
            Decimal("-2.01"),
            Category.TRADE,
        ),
    ],
)
def test_to_cash_flow_amounts_and_categories(activity: dict[str, object], amount: Decimal, category: Category) -> None:
    result = to_cash_flow({"id": flow_id(1), **activity})

    assert isinstance(result, CashFlow)
    assert result.amount == amount
    assert result.category is category


def test_to_cash_flow_times_are_utc_and_summer_dates_are_ny_midnight() -> None:
    fill = to_cash_flow(
        {
            "id": flow_id(1),
            "activity_type": "FILL",
            "transaction_time": "2024-03-01T10:00:00-05:00",
            "side": "buy",
            "qty": "1",
            "price": "1",
        }
    )
    interest = to_cash_flow({"id": flow_id(2), "activity_type": "INT", "date": "2024-07-31", "net_amount": "3.12"})

    assert isinstance(fill, CashFlow)
    assert isinstance(interest, CashFlow)
    assert fill.ts == datetime(2024, 3, 1, 15, tzinfo=UTC)
    assert interest.ts == datetime(2024, 7, 31, 4, tzinfo=UTC)  # EDT


@pytest.mark.parametrize(
    ("activity", "expected"),
    [
        ({"activity_type": "DIV", "description": "Cash DIV", "symbol": "AAPL"}, "Cash DIV"),
        ({"activity_type": "DIV", "description": "  ", "symbol": "AAPL"}, "AAPL"),
        ({"activity_type": "CSD"}, ""),
    ],
)
def test_to_cash_flow_description_falls_back_to_symbol(activity: dict[str, object], expected: str) -> None:
    result = to_cash_flow({"id": flow_id(1), "date": "2024-07-01", "net_amount": "1", **activity})

    assert isinstance(result, CashFlow)
    assert result.description == expected


BASE = {"id": flow_id(1), "activity_type": "DIV", "date": "2024-07-01", "net_amount": "1"}
BASE_FILL = {
    "id": flow_id(1),
    "activity_type": "FILL",
    "transaction_time": "2024-07-01T14:00:00Z",
    "side": "buy",
    "qty": "1",
    "price": "10",
}


@pytest.mark.parametrize(
    ("activity", "reason"),
    [
        ({**BASE, "id": None}, "id"),
        ({**BASE, "id": "  "}, "id"),
        ({**BASE, "activity_type": None}, "activity_type"),
        ({**BASE, "activity_type": ""}, "activity_type"),
        ({**BASE, "net_amount": "NaN"}, "finite"),
        ({**BASE, "net_amount": "inf"}, "finite"),
        ({**BASE, "net_amount": "1e20"}, "too large"),
        ({**BASE, "net_amount": "abc"}, "net_amount"),
        ({**BASE, "net_amount": None}, "net_amount"),
        ({**BASE, "net_amount": True}, "net_amount"),
        ({**BASE, "date": None}, "time"),
        ({**BASE, "date": "yesterday"}, "yesterday"),
        ({**BASE, "date": "2024-07-01T10:00:00"}, "offset"),
        ({**BASE, "status": "canceled"}, "canceled"),
        ({**BASE_FILL, "side": "hold"}, "side"),
        ({**BASE_FILL, "price": None}, "price"),
        ({**BASE_FILL, "qty": "NaN"}, "qty"),
    ],
)
def test_to_cash_flow_bad_input_is_rejected_with_reason(activity: dict[str, object], reason: str) -> None:
    result = to_cash_flow(activity)

    assert isinstance(result, Rejection)
    assert reason in result.reason


def test_convert_activities_sorts_collapses_and_reports() -> None:
    activities = [
        {"id": flow_id(3), "activity_type": "CSD", "date": "2025-01-13", "net_amount": "100"},
        {"id": flow_id(1), "activity_type": "FEE", "date": "2025-01-11", "net_amount": "-1"},
        {"id": flow_id(3), "activity_type": "CSD", "date": "2025-01-13", "net_amount": "100"},
        {"id": flow_id(2), "activity_type": "DIV", "date": "2025-01-12"},
    ]

    rows, rejected = convert_activities(activities)

    assert [r.id for r in rows] == [flow_id(1), flow_id(3)]
    assert [r.id for r in rejected] == [flow_id(2)]


def test_activity_id_time_reads_the_encoded_instant() -> None:
    # New York wall clock (EST in March): the docs' sample id 20190524113406977 is 15:34:06.977Z.
    assert activity_id_time("20240301100000123::7f0c4a8e") == datetime(2024, 3, 1, 15, 0, 0, 123000, tzinfo=UTC)
    assert activity_id_time("20190524113406977::x") == datetime(2019, 5, 24, 15, 34, 6, 977000, tzinfo=UTC)
    assert activity_id_time("not-an-id") is None
    assert activity_id_time("20241399100000000::x") is None


def test_query_after_overlaps_the_newest_seen_id() -> None:
    assert query_after(None) is None
    assert query_after("junk") is None
    assert query_after("20240301100000000::x") == datetime(2024, 2, 23, 15, tzinfo=UTC)
    assert query_after("20240301100000000::x", timedelta(hours=1)) == datetime(2024, 3, 1, 14, tzinfo=UTC)


def _flow(activity_id: str) -> CashFlow:
    return CashFlow(
        id=activity_id,
        ts=datetime(2025, 1, 1, tzinfo=UTC),
        amount=Decimal(1),
        type="CSD",
        category=Category.EXTERNAL,
    )


def test_select_new_drops_seen_ids_even_when_backdated() -> None:
    """A dividend booked late sorts before the cursor; the overlap query plus id check keeps it."""
    seen = {flow_id(2), flow_id(4)}
    fetched = [_flow(flow_id(4)), _flow(flow_id(1)), _flow(flow_id(2)), _flow(flow_id(5)), _flow(flow_id(1))]

    fresh = select_new(fetched, seen)

    assert [f.id for f in fresh] == [flow_id(1), flow_id(5)]
    assert newest_id(fresh, flow_id(4)) == flow_id(5)
    assert newest_id([], None) is None
    assert newest_id([_flow(flow_id(1))], flow_id(4)) == flow_id(4)


amounts = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(100000), places=4, allow_nan=False)


@given(side=st.sampled_from(["buy", "sell", "sell_short"]), qty=amounts, price=amounts)
def test_fill_amount_sign_follows_side(side: str, qty: Decimal, price: Decimal) -> None:
    result = to_cash_flow({**BASE_FILL, "side": side, "qty": str(qty), "price": str(price)})

    assert isinstance(result, CashFlow)
    assert result.amount == (-1 if side == "buy" else 1) * qty * price


@pytest.mark.parametrize(("side", "qty"), [("buy", Decimal(10)), ("sell", Decimal(-10)), ("sell_short", Decimal(-10))])
def test_to_execution_signs_quantity_by_side(side: str, qty: Decimal) -> None:
    result = to_execution({**BASE_FILL, "side": side, "qty": "10", "price": "12.5", "symbol": " AAPL "})

    assert result == Execution(
        id=flow_id(1), ts=datetime(2024, 7, 1, 14, tzinfo=UTC), symbol="AAPL", qty=qty, price=Decimal("12.5")
    )


@pytest.mark.parametrize(
    ("activity", "reason"),
    [
        (BASE, "expected FILL"),
        ({**BASE_FILL, "symbol": None}, "symbol"),
        ({**BASE_FILL, "symbol": "AAPL", "net_amount": "-10", "side": None}, "side"),
        ({**BASE_FILL, "symbol": "AAPL", "qty": "x"}, "qty"),
        ({**BASE_FILL, "id": None}, "id"),
    ],
)
def test_to_execution_bad_input_is_rejected_with_reason(activity: dict[str, object], reason: str) -> None:
    result = to_execution(activity)

    assert isinstance(result, Rejection)
    assert reason in result.reason


def test_flow_changes_corrections_cancellations_and_replays() -> None:
    dividend = {
        "id": flow_id(1), "activity_type": "DIV", "date": "2025-01-11", "net_amount": "12", "status": "executed"
    }  # fmt: skip
    fee = {"id": flow_id(2), "activity_type": "FEE", "date": "2025-01-12", "net_amount": "-1"}
    first = flow_changes([dividend, fee], {})
    stored = {f.id: f for f in first.upserts}

    replay = flow_changes([dividend, fee], stored)
    corrected = flow_changes([{**dividend, "net_amount": "10", "status": "correct"}], stored)
    canceled = flow_changes([{**dividend, "status": "canceled"}], stored)
    never_stored = flow_changes([{**dividend, "id": flow_id(3), "status": "canceled"}], stored)

    assert [f.id for f in first.upserts] == [flow_id(1), flow_id(2)]
    assert replay == FlowChanges()
    assert [(f.id, f.amount) for f in corrected.upserts] == [(flow_id(1), Decimal(10))]
    assert (canceled.upserts, canceled.deletes) == ((), (flow_id(1),))
    assert never_stored == FlowChanges()


def test_commission_is_a_fee_once_per_order_and_crypto_fees_come_from_cfee() -> None:
    ts = datetime(2025, 1, 2, 15, tzinfo=UTC)

    flow = commission_flow("o-1", "AAPL", Decimal("1.25"), ts)

    assert flow == CashFlow(id="commission:o-1", ts=ts, amount=Decimal("-1.25"), type="FEE", category=Category.FEE,
                            description="commission AAPL")
    assert commission_flow("o-1", "AAPL", Decimal(0), ts) is None
    assert commission_flow("o-2", "BTC/USD", Decimal("1.85"), ts) is None


def test_corporate_leg_moves_shares_at_zero_price_and_other_activities_do_not() -> None:
    leg = {"id": "20240610040000000::a1", "activity_type": "SPLIT", "date": "2024-06-10", "net_amount": "0",
           "symbol": "nvda", "qty": "90", "price": "120.5", "status": "executed"}  # fmt: skip

    moved = to_corporate_execution(leg)

    assert moved == Execution(id=leg["id"], ts=datetime(2024, 6, 10, 8, tzinfo=UTC), symbol="NVDA", qty=Decimal(90),
                              price=Decimal(0))  # fmt: skip
    assert to_corporate_execution({**leg, "status": "canceled"}) is None
    assert to_corporate_execution({**leg, "activity_type": "DIV"}) is None
    assert to_corporate_execution({**leg, "qty": None}) is None
    bad = to_corporate_execution({**leg, "qty": "many"})
    assert isinstance(bad, Rejection)
    assert "qty" in bad.reason

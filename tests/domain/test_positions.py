"""The open-position row (docs/spec.md §2.2) and the push decision, with hand-computed figures."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from coldharbour.domain.ledger import rebuild
from coldharbour.domain.orders import OrderBook, live_legs
from coldharbour.domain.positions import (
    RowParams,
    build_open_row,
    days_to_expire,
    moved_flag,
    should_push,
    tp_sl_reach_pct,
    with_mark,
)
from coldharbour.domain.types import NS_PER_DAY, Leg, LegRole, Lot, LotLegs, LotSide, OpenRow
from tests.domain.builders import T0, at, bracket, make_fill, replace_order

D = Decimal
NOW = T0 + 3 * NS_PER_DAY + 3600 * 10**9


def make_lot(side: LotSide = "long", qty: str = "10", avg: str = "100", **kw: object) -> Lot:
    fields: dict[str, object] = {"parent_id": "A", "symbol": "AAPL", "side": side,
                                 "qty": D(qty), "entry_qty": D(qty),
                                 "entry_cost": D(qty) * D(avg), "filled_at": T0}
    fields.update(kw)
    return Lot(**fields)  # type: ignore[arg-type]


def leg(role: LegRole, price: str | None, *, original: str | None = None,
        replaced: bool = False, created: int = T0, expires: int | None = None) -> Leg:
    first = original if original is not None else price
    return Leg(order_id=f"{role}-2" if replaced else f"{role}-1", role=role,
               price=D(price) if price is not None else None, original_id=f"{role}-1",
               original_price=D(first) if first is not None else None,
               created_at=created, expires_at=expires)


def row(lot: Lot | None = None, *, legs: LotLegs | None = None, mark: str | None = "105",
        wac: str | None = "102", params: RowParams | None = None) -> OpenRow:
    return build_open_row(lot or make_lot(), legs=legs or LotLegs(),
                          mark=D(mark) if mark is not None else None,
                          wac=D(wac) if wac is not None else None, now=NOW,
                          params=params or RowParams())


def test_long_row_money_columns() -> None:
    found = row(legs=LotLegs(take_profit=leg("take_profit", "110"),
                             stop_loss=leg("stop_loss", "95")))
    assert (found.buy_value, found.mkt_value, found.profit_loss, found.profit_loss_lot) == (
        D(1000), D(1050), D(30), D(50))
    assert (found.tp_child, found.tp_px, found.sl_child, found.sl_px) == (
        "take_profit-1", D(110), "stop_loss-1", D(95))
    assert found.tp_sl_reach_pct == D("50.00")
    assert found.avg_px_symbol == D(102)
    assert (found.filled_at, found.holding_days, found.updated_at) == (T0, 3, NOW)


def test_short_row_pnl_is_signed() -> None:
    found = row(make_lot(side="short", avg="50"), mark="45", wac="48")
    assert (found.buy_value, found.mkt_value) == (D(500), D(450))
    assert found.profit_loss == D(30)  # −1·10·(45 − 48)
    assert found.profit_loss_lot == D(50)  # −1·10·(45 − 50)


def test_no_mark_leaves_pnl_null_not_zero() -> None:
    """docs/defects.md D16: without a price, value, P&Ls and reach are null."""
    found = row(mark=None, legs=LotLegs(take_profit=leg("take_profit", "110")))
    assert (found.mkt_px, found.mkt_value, found.profit_loss, found.profit_loss_lot,
            found.tp_sl_reach_pct) == (None, None, None, None, None)
    assert found.buy_value == D(1000)


def test_missing_wac_falls_back_to_avg_fill() -> None:
    found = row(wac=None)
    assert found.avg_px_symbol == D(100)
    assert found.profit_loss == found.profit_loss_lot == D(50)


@pytest.mark.parametrize(("side", "mark", "tp", "sl", "expected"), [
    ("long", "105", "110", "95", "50.00"),      # halfway to TP
    ("long", "97.5", "110", "95", "-50.00"),    # halfway to SL: negative (D22)
    ("long", "101", "103", "95", "33.33"),      # rounded to 2 decimals
    ("long", "100", "110", "95", "0.00"),       # at entry: toward TP side
    ("long", "97", None, "95", "-60.00"),
    ("long", "105", None, "95", None),          # toward TP without TP
    ("long", "95", "110", None, None),          # toward SL without SL
    ("short", "95", "90", "105", "50.00"),
    ("short", "102", "90", "105", "-40.00"),
    ("long", "105", "100", "95", None),         # TP equal to entry: undefined
])
def test_tp_sl_reach_pct(side: LotSide, mark: str, tp: str | None, sl: str | None,
                         expected: str | None) -> None:
    found = tp_sl_reach_pct(side, D(100), D(mark), D(tp) if tp else None,
                            D(sl) if sl else None)
    assert found == (D(expected) if expected is not None else None)


@pytest.mark.parametrize(("side", "avg", "stop", "original", "replaced", "gap", "expected"), [
    ("long", "50", None, None, False, "0.01", "—"),
    ("long", "50", "45", None, False, "0.01", "—"),
    ("long", "50", "49.99", None, False, "0.01", "Already"),   # L = 49.99
    ("long", "50", "49.98", None, False, "0.01", "—"),
    ("long", "50", "50.50", "45", True, "0.01", "OK"),         # moved by a replacement
    ("long", "50", "50.50", "49.99", True, "0.01", "Already"),  # was already protective
    ("long", "50", "48", "45", True, "0.01", "—"),             # moved, still not protective
    ("long", "50", "49.95", None, False, "0.05", "Already"),   # MIN_STOP_GAP 0.05
    ("long", "50", "49.96", None, False, "0.001", "—"),        # gap ≥ tick 0.01
    ("short", "50", "50.01", "55", True, "0.01", "OK"),        # L = 50.01
    ("short", "50", "50.02", "55", True, "0.01", "—"),
    ("short", "50", "49", None, False, "0.01", "Already"),
    ("long", "0.5", "0.4999", None, False, "0", "Already"),    # sub-dollar tick 0.0001
    ("long", "0.5", "0.4998", None, False, "0", "—"),
])
def test_moved_flag(side: LotSide, avg: str, stop: str | None, original: str | None,
                    replaced: bool, gap: str, expected: str) -> None:
    stop_leg = None if stop is None else leg("stop_loss", stop, original=original,
                                             replaced=replaced)
    assert moved_flag(side, D(avg), stop_leg, D(gap)) == expected


def test_moved_flag_in_row_uses_params() -> None:
    found = row(legs=LotLegs(stop_loss=leg("stop_loss", "99.95")),
                params=RowParams(min_stop_gap=D("0.05")))
    assert found.moved_flag == "Already"
    assert row(legs=LotLegs()).moved_flag == "\u2014"


@pytest.mark.parametrize(("legs", "expected"), [
    (LotLegs(), None),
    (LotLegs(take_profit=leg("take_profit", "110", expires=NOW + 10 * NS_PER_DAY + 5)), 10),
    (LotLegs(take_profit=leg("take_profit", "110", expires=NOW + 10 * NS_PER_DAY),
             stop_loss=leg("stop_loss", "95", expires=NOW + 4 * NS_PER_DAY)), 4),
    (LotLegs(stop_loss=leg("stop_loss", "95", created=NOW - 30 * NS_PER_DAY)), 60),
    (LotLegs(stop_loss=leg("stop_loss", "95", expires=NOW + 400 * NS_PER_DAY)), 90),
])
def test_days_to_expire(legs: LotLegs, expected: int | None) -> None:
    assert days_to_expire(legs, NOW, 90) == expected


def test_holding_days_counts_from_first_fill() -> None:
    assert row(make_lot(filled_at=NOW - NS_PER_DAY + 1)).holding_days == 0
    assert row(make_lot(filled_at=NOW - 2 * NS_PER_DAY)).holding_days == 2


def test_with_mark_equals_full_rebuild_of_row() -> None:
    legs = LotLegs(take_profit=leg("take_profit", "110"), stop_loss=leg("stop_loss", "95"))
    base = row(legs=legs, mark=None)
    repriced = with_mark(base, D("97.5"), NOW + 1)
    expected = build_open_row(make_lot(), legs=legs, mark=D("97.5"), wac=D(102), now=NOW + 1)
    assert repriced == expected
    assert repriced.tp_sl_reach_pct == D("-50.00")


def _pushed(**changes: object) -> tuple[OpenRow, OpenRow]:
    before = row(legs=LotLegs(stop_loss=leg("stop_loss", "95")), mark="100")
    return before, msgspec.structs.replace(before, **changes)


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, False),
    ({"updated_at": at(5), "holding_days": 9}, False),
    ({"mkt_px": D("100.24")}, False),            # 0.24 % < 0.25 %
    ({"mkt_px": D("100.25")}, True),             # exactly the threshold
    ({"mkt_px": D("99.75")}, True),              # down moves count too
    ({"mkt_px": None}, True),                    # mark lost
    ({"qty": D(5)}, True),
    ({"side": "short"}, True),
    ({"avg_fill": D(99)}, True),
    ({"avg_px_symbol": D(101)}, True),
    ({"sl_px": D(96)}, True),
    ({"tp_child": "tp"}, True),
    ({"moved_flag": "OK"}, True),
])
def test_should_push(changes: dict[str, object], expected: bool) -> None:
    before, after = _pushed(**changes)
    assert should_push(before, after, D("0.25")) is expected


def test_should_push_first_row_and_first_mark() -> None:
    unmarked = row(mark=None)
    assert should_push(None, unmarked, D("0.25"))
    assert should_push(unmarked, with_mark(unmarked, D(100), NOW), D("0.25"))
    assert not should_push(unmarked, with_mark(unmarked, None, NOW + 1), D("0.25"))


def test_should_push_measures_from_last_pushed_mark_not_last_tick() -> None:
    """D31: drift in small ticks adds up against the last *pushed* row."""
    pushed = row(mark="100")
    drifted = pushed
    results = []
    for price in ("100.1", "100.2", "100.3"):
        drifted = with_mark(drifted, D(price), NOW)
        results.append(should_push(pushed, drifted, D("0.25")))
    assert results == [False, False, True]


def test_row_of_bracket_whose_stop_was_raised_twice_to_break_even() -> None:
    """The issue's case: grandchild stop at break-even → moved_flag OK, legs followed."""
    orders = bracket("A", tp=110, sl=95)
    retired1, stop1 = replace_order(orders[2], "A-sl-r1", when=at(20), stop_price=98)
    retired2, stop2 = replace_order(stop1, "A-sl-r2", when=at(30), stop_price="100.00",
                                    expires_at=NOW + 5 * NS_PER_DAY)
    book = OrderBook([*orders[:2], retired1, retired2, stop2])
    ledger = rebuild(book, [make_fill(order_id="A", price=100, ts=T0)])
    found = build_open_row(ledger.lots["A"], legs=live_legs(book, "A"), mark=D(104),
                           wac=None, now=NOW)
    assert (found.sl_child, found.sl_px, found.tp_child, found.tp_px) == (
        "A-sl-r2", D(100), "A-tp", D(110))
    assert found.moved_flag == "OK"
    assert found.days_to_expire == 5
    assert found.tp_sl_reach_pct == D("40.00")

"""The ledger: hand-computed lot matching, slices, FIFO P&L, idempotence, late events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coldharbour.domain.ledger import (
    Ledger,
    LedgerDelta,
    StaleDeltaError,
    apply_delta,
    differences,
    plan_fills,
    rebuild,
)
from coldharbour.domain.orders import OrderBook
from coldharbour.domain.types import ClosedSlice, Fill, Lot, Order, side_sign
from tests.domain.builders import at, bracket, make_fill, make_order, replace_order

D = Decimal


def run(orders: Sequence[Order], fills: Iterable[Fill]) -> tuple[Ledger, list[LedgerDelta]]:
    """Apply ``fills`` one by one (plan, then apply) and check it equals the rebuild."""
    book = OrderBook(orders)
    ledger = Ledger()
    deltas = []
    fills = list(fills)
    for fill in fills:
        delta = plan_fills(ledger, [fill], book)
        apply_delta(ledger, delta)
        deltas.append(delta)
    assert differences(ledger, rebuild(orders, fills)) == []
    return ledger, deltas


def one_slice(ledger: Ledger, lot: str, exit_id: str) -> ClosedSlice:
    return ledger.slices[(lot, exit_id)]


def money(found: ClosedSlice) -> tuple[Decimal, ...]:
    return (found.qty, found.entry_price, found.exit_price, found.pnl_cash, found.pnl_cash_fifo,
            found.diff_pnl, found.pnl_pct)


# -- brackets: TP, SL, manual -----------------------------------------------------------------

@pytest.mark.parametrize(("exit_id", "exit_side", "price", "expected_type", "pnl", "pct"), [
    ("A-tp", "sell", "110", "TP", "100", "10"),
    ("A-sl", "sell", "95", "SL", "-50", "-5"),
    ("M", "sell", "105", "MANUAL", "50", "5"),
])
def test_long_bracket_exit_books_one_final_slice(exit_id: str, exit_side: str, price: str,
                                                 expected_type: str, pnl: str,
                                                 pct: str) -> None:
    orders = [*bracket("A"), make_order(id="M", side="sell")]
    fills = [make_fill(order_id="A", ts=at(0)),
             make_fill(order_id=exit_id, side=exit_side, price=price, ts=at(90))]
    ledger, deltas = run(orders, fills)
    found = one_slice(ledger, "A", exit_id)
    assert ledger.lots == {}
    assert deltas[1].lot_deletes == ("A",)
    assert found.exit_type == expected_type
    assert money(found) == (D(10), D(100), D(price), D(pnl), D(pnl), D(0), D(pct))
    assert found.return_pct == found.pnl_pct
    assert found.duration_sec == 90
    assert found.exit_parent_id == ("A" if exit_id != "M" else None)
    assert found.is_final


def test_short_bracket_take_profit_is_a_gain() -> None:
    orders = bracket("S", side="sell_short", tp=45, sl=55)
    fills = [make_fill(order_id="S", side="sell_short", price=50, ts=at(0)),
             make_fill(order_id="S-tp", side="buy", price=45, ts=at(60))]
    ledger, deltas = run(orders, fills)
    found = one_slice(ledger, "S", "S-tp")
    assert deltas[0].lot_upserts[0].side == "short"
    assert found.side == "short"
    assert found.exit_type == "TP"
    assert money(found) == (D(10), D(50), D(45), D(50), D(50), D(0), D(10))


def test_short_bracket_stop_is_a_loss() -> None:
    orders = bracket("S", side="sell_short", tp=45, sl=55)
    fills = [make_fill(order_id="S", side="sell_short", price=50, ts=at(0)),
             make_fill(order_id="S-sl", side="buy", price=55, ts=at(60))]
    ledger, _ = run(orders, fills)
    found = one_slice(ledger, "S", "S-sl")
    assert found.exit_type == "SL"
    assert found.pnl_cash == D(-50)
    assert found.pnl_pct == D(-10)


@pytest.mark.parametrize("sl_type", ["stop_limit", "trailing_stop"])
def test_stop_limit_and_trailing_stop_legs_are_sl(sl_type: str) -> None:
    """docs/defects.md D6: a stop_limit leg is a stop-loss even though its type contains "limit"."""
    orders = bracket("A", sl_type=sl_type)
    fills = [make_fill(order_id="A"), make_fill(order_id="A-sl", side="sell", price=94,
                                                ts=at(5))]
    ledger, _ = run(orders, fills)
    assert one_slice(ledger, "A", "A-sl").exit_type == "SL"


def test_stop_replaced_twice_then_filled_is_sl_of_its_lot_not_fifo() -> None:
    """D5: the grandchild stop links to its own lot, although an older lot exists."""
    old_lot = make_order(id="OLD")
    orders = [old_lot, *bracket("A", created=at(10))]
    retired1, stop1 = replace_order(orders[3], "A-sl-r1", when=at(20), stop_price=99)
    retired2, stop2 = replace_order(stop1, "A-sl-r2", when=at(30), stop_price=101)
    orders += [retired1, retired2, stop2]
    fills = [make_fill(order_id="OLD", price=90, ts=at(0)),
             make_fill(order_id="A", price=100, ts=at(10)),
             make_fill(order_id="A-sl-r2", side="sell", price=101, ts=at(40))]
    ledger, _ = run(orders, fills)
    found = one_slice(ledger, "A", "A-sl-r2")
    assert set(ledger.lots) == {"OLD"}
    assert found.exit_type == "SL"
    assert found.exit_parent_id == "A"
    # FIFO (broker) basis sells the older 90 lot: 10·(101 − 90) = 110 vs lot basis 10.
    assert money(found) == (D(10), D(100), D(101), D(10), D(110), D(-100), D(1))


# -- partial exits, FIFO, flips ------------------------------------------------------------------

def test_partial_take_profit_shrinks_lot_then_manual_sell_closes_it() -> None:
    """D3: a partial exit reduces the lot; its slices become final when the lot closes."""
    orders = [*bracket("A"), make_order(id="M", side="sell")]
    fills = [make_fill(order_id="A", ts=at(0)),
             make_fill(order_id="A-tp", side="sell", qty=4, price=110, ts=at(10)),
             make_fill(order_id="M", side="sell", qty=6, price=90, ts=at(20))]
    ledger, deltas = run(orders, fills)
    after_tp = deltas[1]
    assert after_tp.lot_upserts[0].qty == D(6)
    assert not after_tp.slice_upserts[0].is_final
    assert money(one_slice(ledger, "A", "A-tp")) == (D(4), D(100), D(110), D(40), D(40), D(0),
                                                     D(10))
    assert money(one_slice(ledger, "A", "M")) == (D(6), D(100), D(90), D(-60), D(-60), D(0),
                                                  D(-10))
    finals = {s.key: s.is_final for s in deltas[2].slice_upserts}
    assert finals == {("A", "M"): True, ("A", "A-tp"): True}


def test_manual_sell_sweeps_two_lots_fifo() -> None:
    orders = [make_order(id="A"), make_order(id="B"), make_order(id="M", side="sell")]
    fills = [make_fill(order_id="A", price=100, ts=at(0)),
             make_fill(order_id="B", price=120, ts=at(10)),
             make_fill(order_id="M", side="sell", qty=15, price=130, ts=at(20))]
    ledger, _ = run(orders, fills)
    assert list(ledger.lots) == ["B"]
    assert ledger.lots["B"].qty == D(5)
    # FIFO unit P&L of M: (10·30 + 5·10) / 15 = 23.33… per share, spread pro rata.
    a, b = one_slice(ledger, "A", "M"), one_slice(ledger, "B", "M")
    assert money(a)[:4] == (D(10), D(100), D(130), D(300))
    assert (a.pnl_cash_fifo, a.pnl_pct) == (D(10) * D(350) / D(15), D(30))
    assert a.diff_pnl == a.pnl_cash - a.pnl_cash_fifo
    assert money(b)[:4] == (D(5), D(120), D(130), D(50))
    assert (b.pnl_cash_fifo, b.pnl_pct) == (D(5) * D(350) / D(15), D(5000) / D(600))
    assert abs(a.pnl_cash_fifo + b.pnl_cash_fifo - D(350)) < D("1e-20")


def test_second_lot_take_profit_first_lot_pnl_differs_from_fifo() -> None:
    """The issue's case: lot P&L ≠ FIFO P&L, both right, diff_pnl right, totals equal."""
    orders = [*bracket("A", tp=110), *bracket("B", tp=130, sl=110, created=at(10))]
    fills = [make_fill(order_id="A", price=100, ts=at(0)),
             make_fill(order_id="B", price=120, ts=at(10)),
             make_fill(order_id="B-tp", side="sell", price=130, ts=at(20)),
             make_fill(order_id="A-tp", side="sell", price=110, ts=at(30))]
    ledger, _ = run(orders, fills)
    b_tp, a_tp = one_slice(ledger, "B", "B-tp"), one_slice(ledger, "A", "A-tp")
    assert (b_tp.exit_type, a_tp.exit_type) == ("TP", "TP")
    assert (b_tp.pnl_cash, b_tp.pnl_cash_fifo, b_tp.diff_pnl) == (D(100), D(300), D(-200))
    assert (a_tp.pnl_cash, a_tp.pnl_cash_fifo, a_tp.diff_pnl) == (D(100), D(-100), D(200))
    assert b_tp.pnl_cash + a_tp.pnl_cash == b_tp.pnl_cash_fifo + a_tp.pnl_cash_fifo


def test_one_exit_order_in_two_executions_spreads_fifo_pnl_pro_rata() -> None:
    orders = [make_order(id="A"), make_order(id="B"), make_order(id="M", side="sell")]
    fills = [make_fill(order_id="A", price=100, ts=at(0)),
             make_fill(order_id="B", price=120, ts=at(10)),
             make_fill(order_id="M", side="sell", qty=8, price=130, ts=at(20)),
             make_fill(order_id="M", side="sell", qty=7, price=140, ts=at(30))]
    ledger, _ = run(orders, fills)
    a, b = one_slice(ledger, "A", "M"), one_slice(ledger, "B", "M")
    # FIFO: 8·30 + 2·40 + 5·20 = 420 over 15 → 28 per share.
    assert (a.qty, a.exit_price, a.pnl_cash, a.pnl_cash_fifo, a.diff_pnl) == (
        D(10), D(132), D(320), D(280), D(40))
    assert (b.qty, b.exit_price, b.pnl_cash, b.pnl_cash_fifo, b.diff_pnl) == (
        D(5), D(140), D(100), D(140), D(-40))
    assert a.exit_time == at(30)
    assert b.is_final is False


def test_flip_long_to_short_then_cover() -> None:
    orders = [make_order(id="A"), make_order(id="S", side="sell", qty=15),
              make_order(id="C", qty=5)]
    fills = [make_fill(order_id="A", price=100, ts=at(0)),
             make_fill(order_id="S", side="sell", qty=15, price=110, ts=at(10)),
             make_fill(order_id="C", qty=5, price=100, ts=at(20))]
    ledger, deltas = run(orders, fills)
    flip = deltas[1]
    assert flip.lot_deletes == ("A",)
    assert flip.lot_upserts == (Lot(parent_id="S", symbol="AAPL", side="short", qty=D(5),
                                    entry_qty=D(5), entry_cost=D(550), filled_at=at(10)),)
    assert money(one_slice(ledger, "A", "S")) == (D(10), D(100), D(110), D(100), D(100), D(0),
                                                  D(10))
    cover = one_slice(ledger, "S", "C")
    assert cover.side == "short"
    assert money(cover) == (D(5), D(110), D(100), D(50), D(50), D(0),
                            D("9.090909090909090909090909091"))
    assert ledger.lots == {}


def test_take_profit_leg_that_oversells_opens_short_lot_keyed_on_leg() -> None:
    orders = [*bracket("A"), make_order(id="M", side="sell")]
    fills = [make_fill(order_id="A", ts=at(0)),
             make_fill(order_id="M", side="sell", qty=4, price=105, ts=at(5)),
             make_fill(order_id="A-tp", side="sell", qty=10, price=110, ts=at(10))]
    ledger, _ = run(orders, fills)
    assert list(ledger.lots) == ["A-tp"]
    assert ledger.lots["A-tp"].side == "short"
    assert ledger.lots["A-tp"].qty == D(4)
    assert one_slice(ledger, "A", "A-tp").qty == D(6)


def test_growing_entry_averages_its_fills() -> None:
    orders = [make_order(id="A", qty=10), make_order(id="M", side="sell")]
    fills = [make_fill(order_id="A", qty=4, price=100, ts=at(0)),
             make_fill(order_id="A", qty=6, price=105, ts=at(5)),
             make_fill(order_id="M", side="sell", qty=10, price=110, ts=at(10))]
    ledger, deltas = run(orders, fills)
    assert deltas[1].lot_upserts[0].avg_fill == D(103)
    assert deltas[1].lot_upserts[0].filled_at == at(0)  # D15: first fill, not creation
    found = one_slice(ledger, "A", "M")
    assert (found.entry_price, found.pnl_cash, found.entry_time) == (D(103), D(70), at(0))


def test_oco_exit_classified_by_leg() -> None:
    top = make_order(id="O", side="sell", order_type="limit", order_class="oco",
                     legs=("O-sl",))
    stop = make_order(id="O-sl", side="sell", order_type="stop", order_class="oco",
                      parent_id="O")
    orders = [make_order(id="E"), top, stop]
    fills = [make_fill(order_id="E"), make_fill(order_id="O-sl", side="sell", price=95,
                                                ts=at(5))]
    ledger, _ = run(orders, fills)
    assert one_slice(ledger, "E", "O-sl").exit_type == "SL"


# -- idempotence and ordering ------------------------------------------------------------------

def test_duplicate_execution_id_is_a_no_op() -> None:
    orders = bracket("A")
    entry = make_fill(order_id="A", execution_id="e-1")
    ledger, _ = run(orders, [entry])
    before = (dict(ledger.lots), dict(ledger.slices))
    delta = plan_fills(ledger, [make_fill(order_id="A", execution_id="e-1", price=999)],
                       OrderBook(orders))
    apply_delta(ledger, delta)
    assert not delta.has_row_changes
    assert delta.duplicates == 1
    assert (dict(ledger.lots), dict(ledger.slices)) == before


def test_fill_without_execution_id_keys_on_order_and_cumulative_qty() -> None:
    first = make_fill(order_id="A", qty=4, cum_qty=4, execution_id=None)
    again = make_fill(order_id="A", qty=4, cum_qty="4.0", execution_id=None, ts=at(3))
    second = make_fill(order_id="A", qty=6, cum_qty=10, execution_id=None, ts=at(1))
    delta = plan_fills(Ledger(), [first, again, second], OrderBook())
    assert first.key == again.key == "A:4"
    assert delta.duplicates == 1
    assert delta.lot_upserts[0].qty == D(10)


def test_exit_arriving_before_its_entry_is_fixed_when_the_entry_arrives() -> None:
    orders = bracket("A")
    book = OrderBook(orders)
    ledger = Ledger()
    entry = make_fill(order_id="A", ts=at(0))
    exit_fill = make_fill(order_id="A-tp", side="sell", price=110, ts=at(10))
    first = plan_fills(ledger, [exit_fill], book)
    apply_delta(ledger, first)
    second = plan_fills(ledger, [entry], book)
    apply_delta(ledger, second)
    assert [lot.side for lot in first.lot_upserts] == ["short"]  # provisional, then fixed
    assert second.lot_deletes == ("A-tp",)
    assert ledger.lots == {}
    assert one_slice(ledger, "A", "A-tp").pnl_cash == D(100)
    assert differences(ledger, rebuild(orders, [entry, exit_fill])) == []


def test_fill_older_than_last_flat_point_asks_for_rebuild() -> None:
    orders = [make_order(id="A"), make_order(id="M", side="sell"), make_order(id="B")]
    fills = [make_fill(order_id="A", ts=at(0)),
             make_fill(order_id="M", side="sell", price=110, ts=at(20))]
    late = make_fill(order_id="B", price=90, ts=at(10))
    ledger, _ = run(orders, fills)
    book = OrderBook(orders)
    delta = plan_fills(ledger, [late], book)
    apply_delta(ledger, delta)
    assert delta.needs_rebuild == ("AAPL",)  # the mirror rebuilds the account (tests/mirror)
    assert not delta.has_row_changes


def test_stale_delta_is_refused() -> None:
    ledger = Ledger()
    first = plan_fills(ledger, [make_fill()], OrderBook())
    second = plan_fills(ledger, [make_fill()], OrderBook())
    apply_delta(ledger, first)
    with pytest.raises(StaleDeltaError, match="delta planned on version 0, ledger is at 1"):
        apply_delta(ledger, second)


@pytest.mark.parametrize(("field", "value"), [("qty", 0), ("qty", -1), ("price", 0),
                                              ("price", "NaN"), ("symbol", "")])
def test_invalid_fill_is_rejected_with_reason(field: str, value: object) -> None:
    delta = plan_fills(Ledger(), [make_fill(**{field: value})], OrderBook())
    assert not delta.has_row_changes
    assert len(delta.rejections) == 1


def test_plan_does_not_mutate_the_ledger() -> None:
    ledger, _ = run(bracket("A"), [make_fill(order_id="A")])
    before = (dict(ledger.lots), dict(ledger.slices), ledger.net("AAPL"), ledger.version)
    plan_fills(ledger, [make_fill(order_id="A-tp", side="sell", price=110, ts=at(5))],
               OrderBook(bracket("A")))
    assert (dict(ledger.lots), dict(ledger.slices), ledger.net("AAPL"), ledger.version) == before


def test_entry_filling_more_after_partial_exit_reprices_its_slices() -> None:
    """Slices use the entry's average fill, even when the entry grows after an exit."""
    orders = [make_order(id="A"), make_order(id="M", side="sell"),
              make_order(id="M2", side="sell")]
    fills = [make_fill(order_id="A", qty=4, price=100, ts=at(0)),
             make_fill(order_id="M", side="sell", qty=2, price=110, ts=at(1)),
             make_fill(order_id="A", qty=6, price=110, ts=at(2)),
             make_fill(order_id="M2", side="sell", qty=8, price=106, ts=at(3))]
    ledger, deltas = run(orders, fills)
    first, second = one_slice(ledger, "A", "M"), one_slice(ledger, "A", "M2")
    assert deltas[2].slice_upserts[0].entry_price == D(106)  # (400 + 660) / 10
    assert (first.entry_price, first.pnl_cash, first.pnl_cash_fifo) == (D(106), D(8), D(20))
    assert (second.entry_price, second.pnl_cash, second.pnl_cash_fifo) == (D(106), D(0), D(-12))
    assert first.pnl_cash + second.pnl_cash == first.pnl_cash_fifo + second.pnl_cash_fifo


# -- properties ----------------------------------------------------------------------------------

SYMBOLS = ("AAPL", "MSFT")
QTYS = tuple(D(q) for q in ("0.5", "1", "2", "3", "5", "10"))
PRICES = tuple(D(p) for p in ("90", "95.5", "100", "104.25", "110"))
TOLERANCE = D("1e-15")


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Order], list[Fill]]:
    """Random entries (brackets with replaced legs, simple orders), manual orders and fills."""
    orders: list[Order] = []
    for n in range(draw(st.integers(1, 4))):
        symbol = draw(st.sampled_from(SYMBOLS))
        side = draw(st.sampled_from(["buy", "sell_short"]))
        if draw(st.booleans()):
            entry, take, stop = bracket(f"E{n}", symbol=symbol, side=side, created=at(n),
                                        sl_type=draw(st.sampled_from(["stop", "stop_limit"])))
            orders += [entry, take]
            for r in range(draw(st.integers(0, 2))):
                retired, stop = replace_order(stop, f"E{n}-sl-r{r}", when=at(n + r + 1),
                                              keep_parent=draw(st.booleans()))
                orders.append(retired)
            orders.append(stop)
        else:
            orders.append(make_order(id=f"E{n}", symbol=symbol, side=side))
    for n in range(draw(st.integers(0, 3))):
        orders.append(make_order(id=f"M{n}", symbol=draw(st.sampled_from(SYMBOLS)),
                                 side=draw(st.sampled_from(["buy", "sell"]))))
    fills: list[Fill] = []
    clock = 0
    for n in range(draw(st.integers(1, 24))):
        order = draw(st.sampled_from(orders))
        clock += draw(st.integers(0, 3))  # equal timestamps happen: ties break on the key
        fills.append(make_fill(order_id=order.id, symbol=order.symbol, side=order.side,
                               qty=draw(st.sampled_from(QTYS)),
                               price=draw(st.sampled_from(PRICES)), ts=at(clock),
                               execution_id=f"x{n:03d}"))
    return orders, fills


def with_duplicates(data: st.DataObject, fills: list[Fill]) -> list[Fill]:
    extra = data.draw(st.lists(st.sampled_from(fills), max_size=len(fills)))
    return [*fills, *extra]


@given(history=histories(), data=st.data())
def test_property_in_order_with_replayed_duplicates_equals_rebuild(
        history: tuple[list[Order], list[Fill]], data: st.DataObject) -> None:
    orders, fills = history
    ordered = sorted(fills, key=lambda f: f.sort_key)
    arrival = list(ordered)
    for dup in data.draw(st.lists(st.sampled_from(ordered), max_size=len(ordered))):
        at_index = data.draw(st.integers(arrival.index(dup) + 1, len(arrival)))
        arrival.insert(at_index, dup)
    book = OrderBook(orders)
    ledger = Ledger()
    for fill in arrival:
        delta = plan_fills(ledger, [fill], book)
        assert delta.needs_rebuild == ()
        apply_delta(ledger, delta)
    assert differences(ledger, rebuild(orders, fills)) == []


@given(history=histories())
def test_property_replaying_every_fill_twice_changes_nothing(
        history: tuple[list[Order], list[Fill]]) -> None:
    orders, fills = history
    ledger = rebuild(orders, fills)
    book = OrderBook(orders)
    for fill in fills:
        delta = plan_fills(ledger, [fill], book)
        assert not delta.has_row_changes
        assert delta.duplicates == 1
        apply_delta(ledger, delta)
    assert differences(ledger, rebuild(orders, fills)) == []


def _cash_identities(ledger: Ledger, fills: list[Fill], symbol: str,
                     mark: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    mine = [f for f in fills if f.symbol == symbol]
    net = sum((f.qty if f.side == "buy" else -f.qty for f in mine), D(0))
    total = sum((-(f.qty if f.side == "buy" else -f.qty) * f.price for f in mine), D(0))
    total += net * mark
    slices = [s for s in ledger.slices.values() if s.symbol == symbol]
    sign = 1 if net > 0 else -1
    fifo = sum((s.pnl_cash_fifo for s in slices), D(0)) + sum(
        (sign * e.qty * (mark - e.price) for e in ledger.fifo_queue(symbol)), D(0))
    lots = sum((s.pnl_cash for s in slices), D(0)) + sum(
        (side_sign(lot.side) * lot.qty * (mark - lot.avg_fill)
         for lot in ledger.open_lots(symbol)), D(0))
    return total, fifo, lots


@given(history=histories(), mark=st.sampled_from(PRICES))
def test_property_realised_plus_unrealised_equals_cash_flow_total(
        history: tuple[list[Order], list[Fill]], mark: Decimal) -> None:
    orders, fills = history
    ledger = rebuild(orders, fills)
    for symbol in SYMBOLS:
        total, fifo_basis, lot_basis = _cash_identities(ledger, fills, symbol, mark)
        assert abs(fifo_basis - total) < TOLERANCE
        assert abs(lot_basis - total) < TOLERANCE


def flatten(orders: list[Order], fills: list[Fill]) -> tuple[list[Order], list[Fill]]:
    """Append one manual order and fill per symbol that brings it back to flat."""
    last = max(f.ts for f in fills)
    for symbol in SYMBOLS:
        net = sum((f.qty if f.side == "buy" else -f.qty for f in fills if f.symbol == symbol),
                  D(0))
        if net:
            side = "sell" if net > 0 else "buy"
            orders = [*orders, make_order(id=f"FLAT-{symbol}", symbol=symbol, side=side)]
            fills = [*fills, make_fill(order_id=f"FLAT-{symbol}", symbol=symbol, side=side,
                                       qty=abs(net), price=100, ts=last + 1)]
    return orders, fills


@given(history=histories())
def test_property_flat_symbol_lot_pnl_equals_fifo_pnl(
        history: tuple[list[Order], list[Fill]]) -> None:
    orders, fills = flatten(*history)
    ledger = rebuild(orders, fills)
    assert ledger.lots == {}
    for symbol in SYMBOLS:
        slices = [s for s in ledger.slices.values() if s.symbol == symbol]
        assert all(s.is_final for s in slices)
        lot_pnl = sum((s.pnl_cash for s in slices), D(0))
        fifo_pnl = sum((s.pnl_cash_fifo for s in slices), D(0))
        assert abs(lot_pnl - fifo_pnl) < TOLERANCE


@given(history=histories())
def test_property_open_lot_qty_equals_net_executed_qty(
        history: tuple[list[Order], list[Fill]]) -> None:
    orders, fills = history
    ledger = rebuild(orders, fills)
    for symbol in SYMBOLS:
        executed = sum((f.qty if f.side == "buy" else -f.qty
                        for f in fills if f.symbol == symbol), D(0))
        lots = ledger.open_lots(symbol)
        assert sum((side_sign(lot.side) * lot.qty for lot in lots), D(0)) == executed
        assert len({lot.side for lot in lots}) <= 1
        assert all(lot.qty > 0 for lot in lots)
        assert all(s.qty > 0 for s in ledger.slices.values())

"""Corporate actions, busts and fill identity as ledger events (docs/spec.md §8), and the property that
booking them on a live ledger gives exactly the ledger rebuilt from the history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal as D

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from coldharbour.domain.corporate import (
    Announcement,
    CorporateAction,
    adjusted_history,
    allocate_spinoff,
    announced_quantities,
    check_announced,
    ex_date_closes,
    needs_history,
    parse_announcements,
    remove_busted,
    spinoff_by_announcement,
    spinoff_parent_share,
)
from coldharbour.domain.ledger import (
    Ledger,
    apply_delta,
    differences,
    plan_fills,
    plan_symbols_rebuild,
    rebuild,
)
from coldharbour.domain.orders import OrderBook
from coldharbour.domain.types import Fill, Order
from tests.domain.builders import at, make_fill, make_order

BUY = make_order(id="b1")


def held(qty: int = 10, price: int = 100) -> list[Fill]:
    return [make_fill(order_id="b1", qty=qty, price=price, ts=at(0), cum_qty=qty)]


def split(ratio: str, symbol: str = "AAPL", when: float = 60, **extra: object) -> CorporateAction:
    return CorporateAction(id=f"split-{ratio}-{when}", type="split", symbol=symbol, ts=at(when), ratio=D(ratio),
                           **extra)  # type: ignore[arg-type]


def test_two_for_one_split_doubles_qty_halves_entry_keeps_cost_and_time() -> None:
    ledger = rebuild([BUY], held(), [split("2")])

    (lot,) = ledger.lots.values()
    assert (lot.qty, lot.avg_fill, lot.entry_cost, lot.filled_at) == (D(20), D(50), D(1000), at(0))
    assert ledger.slices == {}
    assert ledger.fifo_queue("AAPL")[0].qty == D(20)


def test_a_fee_in_the_coin_takes_coins_out_of_the_lot_and_keeps_its_cost() -> None:
    """Alpaca charges a crypto buy's fee in the coin received (CFEE, ``qty`` < 0, ``net_amount``
    0: the NonTradeActivity of https://docs.alpaca.markets/us/docs/account-activities.md): the lot
    holds what the broker holds, its cost is what was paid, and nothing closes."""
    buy = make_order(id="c1", symbol="BTC/USD")
    fills = [make_fill(order_id="c1", symbol="BTC/USD", qty=D("0.5"), price=D(60000), ts=at(0), cum_qty=D("0.5"))]
    fee = CorporateAction(id="cfee", type="coin_fee", symbol="BTC/USD", ts=at(3600), qty=D("0.00125"))
    too_big = CorporateAction(id="cfee2", type="coin_fee", symbol="BTC/USD", ts=at(3600), qty=D(1))

    ledger = rebuild([buy], fills, [fee])
    _, problems = adjusted_history(fills, [too_big])

    (lot,) = ledger.lots.values()
    assert (lot.qty, lot.entry_cost) == (D("0.49875"), D(30000))
    assert ledger.slices == {}
    assert [p.reason for p in problems] == ["coin_fee: 1 BTC/USD not held then (position 0.5)"]


def test_one_for_ten_reverse_split_books_no_sale_and_no_pnl() -> None:
    ledger = rebuild([BUY], held(), [split("0.1")])

    (lot,) = ledger.lots.values()
    assert (lot.qty, lot.avg_fill, lot.entry_cost) == (D(1), D(1000), D(1000))
    assert ledger.slices == {}


def test_partial_exit_before_a_split_keeps_its_pnl_and_later_exit_is_in_new_terms() -> None:
    sell = make_order(id="s1", side="sell")
    later = make_order(id="s2", side="sell")
    fills = [*held(), make_fill(order_id="s1", side="sell", qty=4, price=110, ts=at(10), cum_qty=4),
             make_fill(order_id="s2", side="sell", qty=12, price=60, ts=at(120), cum_qty=12)]

    ledger = rebuild([BUY, sell, later], fills, [split("2")])

    first, second = ledger.slices[("b1", "s1")], ledger.slices[("b1", "s2")]
    assert first.pnl_cash == D(40)  # 4·(110 − 100), unchanged by the split
    assert (second.qty, second.pnl_cash) == (D(12), D(120))  # 12·(60 − 50)
    assert ledger.lots == {}


def test_symbol_change_and_stock_merger_move_the_lot_with_its_basis() -> None:
    rename = CorporateAction(id="sc", type="symbol_change", symbol="AAPL", new_symbol="APPL", ts=at(60))
    merge = CorporateAction(id="ma", type="stock_merger", symbol="APPL", new_symbol="ACQ", ts=at(90),
                            ratio=D("0.5"))

    ledger = rebuild([BUY], held(), [rename, merge])

    (lot,) = ledger.lots.values()
    assert (lot.symbol, lot.qty, lot.entry_cost, lot.avg_fill) == ("ACQ", D(5), D(1000), D(200))
    assert ledger.net("AAPL") == ledger.net("APPL") == 0
    assert ledger.net("ACQ") == D(5)


def test_cash_merger_closes_the_lot_as_corporate_with_its_pnl() -> None:
    merger = CorporateAction(id="cm", type="cash_merger", symbol="AAPL", ts=at(60), cash_per_share=D(125))

    ledger = rebuild([BUY], held(), [merger])

    (found,) = ledger.slices.values()
    assert (found.exit_type, found.qty, found.exit_price, found.pnl_cash) == ("CORPORATE", D(10), D(125), D(250))
    assert found.is_final
    assert ledger.lots == {}


def test_cash_in_lieu_closes_the_fraction_as_corporate() -> None:
    reverse = split("0.3", cash_in_lieu_qty=D("0.5"), price=D(340))

    ledger = rebuild([BUY], held(15), [reverse])  # 15 -> 4.5 new shares, 0.5 paid in cash

    (lot,) = ledger.lots.values()
    (found,) = ledger.slices.values()
    assert lot.qty == D(4)
    assert (found.exit_type, found.qty, found.exit_price) == ("CORPORATE", D("0.5"), D(340))


def test_spinoff_books_new_lots_at_the_stated_basis_or_reports_the_problem() -> None:
    spin = CorporateAction(id="sp", type="spinoff", symbol="AAPL", new_symbol="KID", ts=at(60), ratio=D("0.2"),
                           price=D(15))
    bare = CorporateAction(id="sp0", type="spinoff", symbol="AAPL", new_symbol="KID", ts=at(60), ratio=D("0.2"))

    ledger = rebuild([BUY], held(), [spin])
    _, problems = adjusted_history(held(), [bare])

    assert ledger.net("KID") == D(2)
    assert ledger.net("AAPL") == D(10)
    assert [p.reason.split(":")[0] for p in problems] == ["spinoff_without_basis"]


def spin_leg(qty: str = "2") -> CorporateAction:
    """A spin-off as its SPIN leg states it: the new shares, priced 0 (no basis)."""
    return CorporateAction(id="sp", type="spinoff", symbol="KID", new_symbol="KID", ts=at(60), qty=D(qty))


def test_the_default_parent_share_is_the_ex_date_market_values() -> None:
    # 1 KID per 5 AAPL; AAPL 100, KID 25: 5 x 100 = 500 of parent per 25 of child
    assert spinoff_parent_share(D(5), D(1), D(100), D(25)) == D(500) / D(525)
    assert spinoff_parent_share(D(5), D(1), D(0), D(25)) is None
    assert spinoff_parent_share(D(5), D(1), D(100), D("NaN")) is None


def test_an_allocated_spinoff_splits_the_parent_basis_and_books_no_slice() -> None:
    fills = [*held(4, 100), make_fill(order_id="b2", qty=6, price=110, ts=at(10), cum_qty=6)]
    spin = allocate_spinoff(spin_leg(), "AAPL", D("0.8"))

    ledger = rebuild([BUY, make_order(id="b2")], fills, [spin])

    parent = sum((lot.entry_cost for lot in ledger.lots.values() if lot.symbol == "AAPL"), D(0))
    (child,) = (lot for lot in ledger.lots.values() if lot.symbol == "KID")
    assert parent == D("0.8") * D(1060)
    assert (child.qty, child.entry_cost) == (D(2), D("0.2") * D(1060))
    assert parent + child.entry_cost == D(1060)
    assert ledger.net("AAPL") == D(10)
    assert ledger.slices == {}


def test_a_spinoff_leg_is_allocated_by_its_announcement_and_the_two_prices() -> None:
    # the spin_offs group as alpaca-py's alpaca/data/models/corporate_actions.py names it (SpinOff)
    body = {"corporate_actions": {"spin_offs": [{
        "id": "a1", "source_symbol": "AAPL", "source_rate": 5, "new_symbol": "KID", "new_rate": "1",
        "ex_date": "2024-03-01", "process_date": "2024-03-01", "payable_date": "2024-03-01"}]}}
    announcements = parse_announcements(body)
    leg = msgspec_replace_action(spin_leg(), ts=at(0))  # at(0) is on 2024-03-01 in New York

    found = spinoff_by_announcement(leg, announcements, {"AAPL": D(100), "KID": D(25)})

    assert announcements[0].rates == (D(5), D(1))
    assert found is not None
    assert (found.symbol, found.new_symbol, found.qty, found.basis_share) == ("AAPL", "KID", D(2), D(500) / D(525))
    assert spinoff_by_announcement(leg, announcements, {"AAPL": D(100)}) is None  # no price of KID: held
    assert spinoff_by_announcement(leg, [], {"AAPL": D(100), "KID": D(25)}) is None


def test_the_default_allocation_takes_the_ex_date_closes_not_a_later_price() -> None:
    """Worked example (docs/corporate-actions.md "Spin-offs"): 10 AAPL bought at 100, 1 KID per
    2 AAPL, closes on the ex-date AAPL 90, KID 20: per 2 AAPL, 2 x 90 = 180 of parent against
    1 x 20 of child, so AAPL keeps 180/200 = 90 % of its 1,000 (900: 90 a share) and the 5 KID
    open at the other 100 (20 a share). The next day's closes (80, 30) are not used."""
    body = {"corporate_actions": {"spin_offs": [{
        "id": "a1", "source_symbol": "AAPL", "source_rate": "2", "new_symbol": "KID", "new_rate": "1",
        "ex_date": "2024-03-01", "process_date": "2024-03-01", "payable_date": "2024-03-01"}]}}  # fmt: skip
    announcements = parse_announcements(body)
    ex_date, after = announcements[0].effective, date(2024, 3, 4)
    closes = {ex_date: {"AAPL": D(90), "KID": D(20)}, after: {"AAPL": D(80), "KID": D(30)}}

    prices = ex_date_closes(closes, ("AAPL", "KID"), ex_date, date(2024, 3, 5))
    assert prices == {"AAPL": D(90), "KID": D(20)}
    allocated = spinoff_by_announcement(spin_leg("5"), announcements, prices)
    assert allocated is not None
    assert allocated.basis_share == D("0.9")
    ledger = rebuild([BUY], held(10, 100), [allocated])

    (parent,) = (lot for lot in ledger.lots.values() if lot.symbol == "AAPL")
    (child,) = (lot for lot in ledger.lots.values() if lot.symbol == "KID")
    assert (parent.qty, parent.entry_cost, child.qty, child.entry_cost) == (D(10), D(900), D(5), D(100))
    assert ledger.slices == {}
    # the ex-date not over yet (its bar is today's, not a close), or one symbol not closed: no price
    assert ex_date_closes(closes, ("AAPL", "KID"), ex_date, ex_date) is None
    assert ex_date_closes({ex_date: {"AAPL": D(90)}}, ("AAPL", "KID"), ex_date, after) is None
    # KID not trading on the ex-date: the first session on which both closed
    assert ex_date_closes({ex_date: {"AAPL": D(90)}, **{after: closes[after]}}, ("AAPL", "KID"), ex_date,
                          date(2024, 3, 5)) == {"AAPL": D(80), "KID": D(30)}  # fmt: skip


def msgspec_replace_action(action: CorporateAction, **changes: object) -> CorporateAction:
    return msgspec.structs.replace(action, **changes)


def test_an_allocated_spinoff_is_held_when_the_parent_was_partly_sold_or_not_held() -> None:
    sold = [*held(), make_fill(order_id="s1", side="sell", qty=3, price=90, ts=at(10), cum_qty=3)]
    spin = allocate_spinoff(spin_leg(), "AAPL", D("0.8"))

    _, partly = adjusted_history(sold, [spin])
    _, absent = adjusted_history(held(), [allocate_spinoff(spin_leg(), "MSFT", D("0.8"))])
    _, unallocated = adjusted_history(held(), [spin_leg()])

    assert [p.reason for p in partly] == ["spinoff: AAPL partly closed before it: basis not one sum (held)"]
    assert [p.reason for p in absent] == ["spinoff: MSFT not held then (held)"]
    assert [p.reason.split(":")[0] for p in unallocated] == ["spinoff_without_basis"]


def test_action_while_flat_changes_nothing() -> None:
    fills = [*held(), make_fill(order_id="s1", side="sell", qty=10, price=90, ts=at(10), cum_qty=10)]

    assert adjusted_history(fills, [split("2")])[0] == adjusted_history(fills, [])[0]


def test_stream_fill_without_execution_id_and_rest_fill_are_one_fill() -> None:
    stream = make_fill(order_id="b1", execution_id=None, cum_qty=10, ts=at(0))
    rest = make_fill(order_id="b1", execution_id="2f63ea93-423d-4169-b3f6-3fdafc10c418", cum_qty=10, ts=at(0) + 7)
    book = OrderBook([BUY])
    for first, second in ((stream, rest), (rest, stream)):
        ledger = Ledger()
        apply_delta(ledger, plan_fills(ledger, (first,), book))
        delta = plan_fills(ledger, (second,), book)
        apply_delta(ledger, delta)
        assert delta.duplicates == 1
        assert ledger.net("AAPL") == D(10)


def test_bust_removes_the_fill_and_the_rebuild_follows() -> None:
    sell = make_order(id="s1", side="sell")
    fills = [*held(), make_fill(order_id="s1", side="sell", qty=4, price=110, ts=at(10), cum_qty=4)]
    book = OrderBook([BUY, sell])
    ledger = rebuild(book, fills)

    kept = remove_busted(fills, [fills[1].key])
    apply_delta(ledger, plan_symbols_rebuild(ledger, ["AAPL"], kept, book))

    assert ledger.slices == {}
    assert ledger.net("AAPL") == D(10)
    assert differences(ledger, rebuild(book, kept)) == []


# ----- property: booked live == rebuilt


SYMBOLS = ("AAA", "BBB")
QTYS = tuple(D(q) for q in ("1", "2", "3", "0.5"))
PRICES = tuple(D(p) for p in ("90", "100", "110"))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Order], list[object]]:
    """Orders, then events in time order: fills (some twice: stream without id + REST with id),
    splits, symbol changes and busts."""
    orders: list[Order] = []
    events: list[object] = []
    cum: dict[str, D] = {}
    for n in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["fill", "fill", "fill", "split", "rename", "bust"]))
        when = at(n * 10)
        if kind == "fill":
            symbol = draw(st.sampled_from((*SYMBOLS, "NEW")))
            order = make_order(id=f"o{n}", symbol=symbol, side=draw(st.sampled_from(["buy", "sell"])))
            orders.append(order)
            qty = draw(st.sampled_from(QTYS))
            cum[order.id] = cum.get(order.id, D(0)) + qty
            fill = make_fill(order_id=order.id, symbol=symbol, side=order.side, qty=qty,
                             price=draw(st.sampled_from(PRICES)), ts=when, cum_qty=cum[order.id],
                             execution_id=f"x{n}")
            events.append(fill)
            if draw(st.booleans()):  # the stream's copy, without execution_id, a moment later
                events.append(msgspec_replace(fill, execution_id=None, ts=when + 3))
        elif kind == "split":
            ratio = draw(st.sampled_from([D(2), D("0.5"), D(3)]))
            events.append(CorporateAction(id=f"a{n}", type="split", symbol=draw(st.sampled_from(SYMBOLS)),
                                          ts=when, ratio=ratio))
        elif kind == "rename":
            events.append(CorporateAction(id=f"a{n}", type="symbol_change", symbol=draw(st.sampled_from(SYMBOLS)),
                                          new_symbol="NEW", ts=when))
        else:
            events.append("bust")
    return orders, events


def msgspec_replace(fill: Fill, **changes: object) -> Fill:
    return msgspec.structs.replace(fill, **changes)


def drive(orders: Sequence[Order], events: Sequence[object]) -> tuple[Ledger, list[Fill], list[CorporateAction]]:
    """Book events one by one as the mirror must: fills incrementally (a rebuild when one
    predates an action), an action or a bust by ``plan_symbols_rebuild``."""
    book = OrderBook(orders)
    ledger = Ledger()
    stored: list[Fill] = []
    actions: list[CorporateAction] = []
    busted: list[str] = []
    for event in events:
        if isinstance(event, Fill):
            stored.append(event)
            if needs_history(event, actions):
                symbols = {event.symbol, *(s for a in actions for s in a.symbols)}
                delta = plan_symbols_rebuild(ledger, symbols, remove_busted(stored, busted), book, actions)
            else:
                delta = plan_fills(ledger, (event,), book)
            apply_delta(ledger, delta)
            if delta.needs_rebuild:
                apply_delta(ledger, plan_symbols_rebuild(ledger, delta.needs_rebuild,
                                                         remove_busted(stored, busted), book, actions))
        elif isinstance(event, CorporateAction):
            actions.append(event)
            apply_delta(ledger, plan_symbols_rebuild(ledger, event.symbols, remove_busted(stored, busted),
                                                     book, actions))
        elif stored:
            victim = stored[len(stored) // 2]
            busted.append(victim.key)
            symbols = {victim.symbol, *(s for a in actions for s in a.symbols)}
            apply_delta(ledger, plan_symbols_rebuild(ledger, symbols, remove_busted(stored, busted), book, actions))
    return ledger, remove_busted(stored, busted), actions


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_property_booked_live_equals_rebuilt_with_actions_busts_and_fills_without_ids(
    scenario: tuple[list[Order], list[object]],
) -> None:
    orders, events = scenario

    live, history, actions = drive(orders, events)

    assert differences(live, rebuild(orders, history, actions)) == []


def test_two_actions_at_the_same_instant_apply_in_order() -> None:
    """Actions re-timed to the start of one ex-date share an instant: the later one (by id) sees
    the earlier one's booking. Found by the mirror's property test: a removal at 0, then a split
    at the same instant, scaled the removed lot and left a short lot priced 0."""
    removal = CorporateAction(id="act0", type="removal", symbol="AAPL", ts=at(3), cash_per_share=D(0))
    later = CorporateAction(id="act1", type="split", symbol="AAPL", ts=at(3), ratio=D("0.5"))

    ledger = rebuild([BUY], held(), [removal, later])

    assert ledger.lots == {}
    assert [(s.qty, s.pnl_cash, s.exit_type) for s in ledger.slices.values()] == [(D(10), D(-1000), "CORPORATE")]


def test_an_absurd_ratio_or_price_holds_the_whole_action() -> None:
    """A leg of 1e-11 shares against 10 (a 1e-12 ratio) would scale the price past every cap:
    the action is held whole (reported), the lot stays as the fills made it, and a rebuild agrees."""
    tiny = split("0.000000000001")
    priced = CorporateAction(id="cm", type="cash_merger", symbol="AAPL", ts=at(60), cash_per_share=D("1e16"))

    ledger = rebuild([BUY], held(), [tiny, priced])
    _, problems = adjusted_history(held(), [tiny, priced])

    (lot,) = ledger.lots.values()
    assert (lot.qty, lot.entry_cost) == (D(10), D(1000))
    assert sorted(p.id for p in problems) == sorted([tiny.id, "cm"])


def test_a_split_and_a_rename_at_the_same_instant_split_the_shares_whatever_the_id_order() -> None:
    """Alpaca books both at the ex-date: 10 AAPL bought at 100, split 2:1 and renamed APPL at one
    instant, are 20 APPL at 50 (cost 1000, no P&L), whichever id sorts first and whether the split
    names the old or the new symbol (docs/corporate-actions.md "Same instant")."""
    for rename_id, split_id in (("act0", "act1"), ("act1", "act0")):
        rename = CorporateAction(id=rename_id, type="symbol_change", symbol="AAPL", new_symbol="APPL", ts=at(60))
        for symbol in ("AAPL", "APPL"):
            both = CorporateAction(id=split_id, type="split", symbol=symbol, ts=at(60), ratio=D(2))
            later = split("2", symbol="APPL", when=90)

            ledger = rebuild([BUY], held(), [rename, both, later])

            (lot,) = ledger.lots.values()
            assert (lot.symbol, lot.qty, lot.avg_fill, lot.entry_cost) == ("APPL", D(40), D(25), D(1000))
            assert ledger.slices == {}


# --- the announcement's rates against the legs' quantities (docs/corporate-actions.md "Rates against quantities")

# Items shaped as alpaca-py's alpaca/data/models/corporate_actions.py models them (ForwardSplit,
# ReverseSplit, UnitSplit, StockMerger, StockAndCashMerger, NameChange, SpinOff, WorthlessRemoval);
# rates as numbers.
_ITEMS: dict[str, dict[str, object]] = {
    "forward_splits": {"symbol": "AAPL", "old_rate": 1, "new_rate": 2, "ex_date": "2024-03-01"},
    "reverse_splits": {"symbol": "AAPL", "old_rate": 4, "new_rate": 1, "ex_date": "2024-03-01"},
    "unit_splits": {"old_symbol": "AAPL", "new_symbol": "UA", "alternate_symbol": "UW", "old_rate": 1,
                    "new_rate": 1, "alternate_rate": 0.5, "effective_date": "2024-03-01"},
    "stock_mergers": {"acquiree_symbol": "AAPL", "acquirer_symbol": "ACQ", "acquirer_rate": 1, "acquiree_rate": 3,
                      "effective_date": "2024-03-01"},
    "stock_and_cash_mergers": {"acquiree_symbol": "AAPL", "acquirer_symbol": "ACQ", "acquirer_rate": 1,
                               "acquiree_rate": 3, "cash_rate": 10.5, "effective_date": "2024-03-01"},
    "name_changes": {"old_symbol": "AAPL", "new_symbol": "APPL", "process_date": "2024-03-01"},
    "spin_offs": {"source_symbol": "AAPL", "new_symbol": "KID", "source_rate": 5, "new_rate": 1,
                  "ex_date": "2024-03-01"},
    "stock_dividends": {"symbol": "AAPL", "rate": 0.25, "ex_date": "2024-03-01"},
    "cash_mergers": {"acquiree_symbol": "AAPL", "rate": 54.2, "effective_date": "2024-03-01"},
    "redemptions": {"symbol": "AAPL", "rate": 25, "payable_date": "2024-03-01"},
}


def announced(group: str, **changes: object) -> list[Announcement]:
    return parse_announcements({"corporate_actions": {group: [{"id": f"a-{group}", **_ITEMS[group], **changes}]}})


def test_each_group_implies_the_new_shares_of_the_position_held() -> None:
    quantities = {group: announced_quantities(announced(group)[0], D(10)) for group in _ITEMS
                  if group not in {"cash_mergers", "redemptions"}}  # fmt: skip

    assert quantities == {
        "forward_splits": {"AAPL": D(20)}, "reverse_splits": {"AAPL": D("2.5")},
        "unit_splits": {"UA": D(10), "UW": D(5)}, "stock_mergers": {"ACQ": D(10) / D(3)},
        "stock_and_cash_mergers": {"ACQ": D(10) / D(3)},
        "name_changes": {"APPL": D(10)}, "spin_offs": {"KID": D(2)}, "stock_dividends": {"AAPL": D("2.5")},
    }  # fmt: skip
    assert announced_quantities(announced("forward_splits", new_rate=None)[0], D(10)) is None


def test_legs_that_agree_with_the_announcement_are_booked_and_others_held_whole() -> None:
    forward = announced("forward_splits")
    reverse = announced("reverse_splits")

    def checked(action: CorporateAction, found: list[Announcement], held_qty: str = "10") -> str | None:
        problem = check_announced(action, D(held_qty), found)
        return None if problem is None else problem.reason

    # 10 held, 2 for 1: 20 stated agrees, 30 (a wrong 3 for 1) is held whole
    assert checked(split("2", when=0), forward) is None
    assert checked(split("3", when=0), forward) == (
        "split: the legs state 30 AAPL for 10 held, announcement a-forward_splits implies 20 (held whole)")
    # 1 for 4 of 10 whole shares: 2.5 new shares, 2 kept and 0.5 paid in lieu (its CIL leg listed or not)
    assert checked(split("0.25", when=0, cash_in_lieu_qty=D("0.5"), price=D(400)), reverse) is None
    assert checked(split("0.2", when=0), reverse) is None
    assert checked(split("0.1", when=0), reverse) is not None  # 1 kept: more than the fraction short
    # no announcement of that group or that symbol near its date: booked as listed
    assert checked(split("3", when=0), announced("name_changes")) is None
    assert checked(split("3", symbol="MSFT", when=0), forward) is None
    assert checked(split("3", when=30 * 86_400), forward) is None
    assert check_announced(split("3", when=0), None, forward) is None  # shares out unknown


def test_mergers_renames_unit_splits_and_spinoffs_are_checked_against_their_rates() -> None:
    merger = CorporateAction(id="m", type="stock_merger", symbol="AAPL", ts=at(0), ratio=D(1) / D(3),
                             new_symbol="ACQ", cash_in_lieu_qty=D(1) / D(3), price=D(300))  # fmt: skip
    rename = CorporateAction(id="n", type="symbol_change", symbol="AAPL", ts=at(0), new_symbol="APPL")
    unit = CorporateAction(id="u", type="unit_split", symbol="AAPL", ts=at(0), new_symbol="UA",
                           alternate_symbol="UW", alternate_ratio=D("0.5"), basis_share=D("0.9"))  # fmt: skip
    spin = allocate_spinoff(msgspec_replace_action(spin_leg(), ts=at(0)), "AAPL", D("0.9"))

    assert check_announced(merger, D(10), announced("stock_mergers")) is None  # 3 kept, 1/3 in lieu
    assert check_announced(msgspec_replace_action(merger, ratio=D(1)), D(10), announced("stock_mergers")) is not None
    assert check_announced(rename, D(10), announced("name_changes")) is None
    assert check_announced(msgspec_replace_action(rename, ratio=D(2)), D(10), announced("name_changes")) is not None
    assert check_announced(unit, D(10), announced("unit_splits")) is None
    assert check_announced(unit, D(10), announced("unit_splits", alternate_rate=1)) is not None
    assert check_announced(spin, D(10), announced("spin_offs")) is None  # 2 KID for 10 AAPL at 1 per 5
    assert check_announced(spin, D(20), announced("spin_offs")) is not None  # 4 due: more than the fraction short


_RATES = st.decimals(min_value=D("0.01"), max_value=D(1000), places=2)
_HELD = st.one_of(st.integers(1, 100_000).map(D), st.decimals(min_value=D("0.000000001"), max_value=D(10_000),
                                                              places=9))  # fmt: skip


@given(held_qty=_HELD, old_rate=_RATES, new_rate=_RATES, in_lieu_listed=st.booleans(),
       off=st.decimals(min_value=D(1), max_value=D(1000), places=9), more=st.booleans())  # fmt: skip
@settings(max_examples=300)
def test_property_the_brokers_rounding_agrees_and_a_share_off_never_does(
    held_qty: D, old_rate: D, new_rate: D, in_lieu_listed: bool, off: D, more: bool
) -> None:
    """The broker's legs (docs/corporate-actions.md "Rates against quantities"): new shares to 9
    decimals rounded down, whole shares kept by a holder of whole shares, the fraction paid in
    lieu (its CIL leg listed with the action or not yet). Those always agree with the announced
    rates; legs a whole share (or more) off them never do."""
    found = announced("forward_splits", old_rate=str(old_rate), new_rate=str(new_rate))
    due = (held_qty * new_rate / old_rate).quantize(D("1e-9"), rounding="ROUND_DOWN")
    kept = due.to_integral_value(rounding="ROUND_DOWN") if held_qty == held_qty.to_integral_value() else due
    if kept == 0:
        return  # the whole position paid in lieu: no shares-in leg, no split to check
    # the shares-in leg states them all and a CIL leg pays the fraction, or it states the whole shares only
    in_lieu = due - kept if in_lieu_listed else D(0)
    agreeing = split(str((kept + in_lieu) / held_qty), when=0, cash_in_lieu_qty=in_lieu,
                     price=D(1) if in_lieu else None)  # fmt: skip
    stated = kept + (off if more else -off)

    assert check_announced(agreeing, held_qty, found) is None
    if stated > 0:
        wrong = split(str(stated / held_qty), when=0, cash_in_lieu_qty=in_lieu, price=D(1) if in_lieu else None)
        assert check_announced(wrong, held_qty, found) is not None


def test_a_stock_dividend_adds_shares_at_no_cost_and_its_fraction_is_paid_in_lieu() -> None:
    """A SPLIT shares-in leg alone (the fake's stock dividend, alpaca-py's ``StockDividend``
    ``rate`` 0.25): 10 at 100 get 2.5 shares, 2 kept (basis 1000 over 12.5, so 960 kept) and 0.5
    paid in lieu at 100 (P&L 0.5 x (100 - 80))."""
    dividend = CorporateAction(id="div", type="stock_dividend", symbol="AAPL", ts=at(60), qty=D("2.5"),
                               cash_in_lieu_qty=D("0.5"), price=D(100))  # fmt: skip

    ledger = rebuild([BUY], held(), [dividend])
    _, short = adjusted_history([make_fill(order_id="b1", side="sell_short", qty=10, price=100, ts=at(0),
                                           cum_qty=10)], [dividend])  # fmt: skip

    (lot,) = ledger.lots.values()
    assert (lot.qty, lot.avg_fill, lot.qty * lot.avg_fill) == (D(12), D(80), D(960))
    assert [(s.qty, s.pnl_cash, s.exit_type) for s in ledger.slices.values()] == [(D("0.5"), D(10), "CORPORATE")]
    assert [p.reason for p in short] == ["stock_dividend: AAPL held short (held)"]


def test_a_cash_merger_or_redemption_pays_its_announced_rate_to_the_cent() -> None:
    """alpaca-py's ``CashMerger.rate`` and ``Redemption.rate``: cash per share. The legs' total may
    differ by the cent the broker rounds to; a redemption announced but paid 0 (no cash leg:
    read as a worthless removal) is held."""
    merger = CorporateAction(id="c", type="cash_merger", symbol="AAPL", ts=at(0), cash_per_share=D("54.201"))
    redeemed = CorporateAction(id="r", type="removal", symbol="AAPL", ts=at(0), cash_per_share=D(25))

    assert check_announced(merger, D(10), announced("cash_mergers")) is None  # 542.01 against 542.00
    assert check_announced(msgspec_replace_action(merger, cash_per_share=D("54.21")), D(10),
                           announced("cash_mergers")) is not None  # fmt: skip
    assert check_announced(redeemed, D(10), announced("redemptions")) is None
    worthless = msgspec_replace_action(redeemed, cash_per_share=D(0))
    assert check_announced(worthless, D(10), announced("redemptions")) is not None
    assert check_announced(worthless, D(10), announced("forward_splits")) is None  # nothing says it pays


def stock_and_cash(cash_per_share: str, ratio: D = D(1) / D(3)) -> CorporateAction:
    """A stock-and-cash merger as its legs state it: AAPL out, ACQ in (priced 150), cash per share."""
    return CorporateAction(id="sc", type="stock_cash_merger", symbol="AAPL", ts=at(0), ratio=ratio, new_symbol="ACQ",
                           price=D(150), cash_per_share=D(cash_per_share))  # fmt: skip


def test_a_stock_and_cash_mergers_cash_leg_pays_its_announced_cash_rate_to_the_cent() -> None:
    """alpaca-py's ``StockAndCashMerger``: ``acquirer_rate`` ACQ per ``acquiree_rate`` AAPL and
    ``cash_rate`` cash per AAPL share. 10 AAPL at 1 per 3 and 10.50: 3 1/3 ACQ and 105.00 cash;
    a cash leg a cent off agrees, two cents off is held whole, like a wrong share count."""
    found = announced("stock_and_cash_mergers")

    def checked(action: CorporateAction, held_qty: str = "10", among: list[Announcement] = found) -> str | None:
        problem = check_announced(action, D(held_qty), among)
        return None if problem is None else problem.reason

    assert checked(stock_and_cash("10.5")) is None
    assert checked(stock_and_cash("10.501")) is None  # 105.01 against 105.00
    assert checked(stock_and_cash("10.499")) is None  # 104.99
    assert checked(stock_and_cash("10.502")) == (
        "stock_cash_merger: the legs pay 105.02 for 10 AAPL, announcement a-stock_and_cash_mergers implies 105 "
        "(held whole)")  # fmt: skip
    assert checked(stock_and_cash("21")) is not None  # twice the cash, the shares right
    assert checked(stock_and_cash("10.5", ratio=D(1))) is not None  # the cash right, three times the shares
    # a fraction held: 3.333333333 x 10.50 = 34.9999999965, paid as 35.00
    assert checked(stock_and_cash(str(D("35.00") / D("3.333333333"))), "3.333333333") is None
    # no cash_rate announced: the shares are still checked, the cash is booked as listed
    assert checked(stock_and_cash("99"), among=announced("stock_and_cash_mergers", cash_rate=None)) is None
    # a stock merger's announcement states no cash: booked as listed
    assert checked(stock_and_cash("99"), among=announced("stock_mergers")) is None


_CENT_ROUNDINGS = st.sampled_from(["ROUND_HALF_EVEN", "ROUND_HALF_UP", "ROUND_DOWN", "ROUND_UP"])


@given(held_qty=_HELD, acquirer_rate=_RATES, acquiree_rate=_RATES,
       cash_rate=st.decimals(min_value=D("0.0001"), max_value=D(10_000), places=4), rounding=_CENT_ROUNDINGS,
       off=st.decimals(min_value=D("0.011"), max_value=D(100_000), places=3), more=st.booleans())  # fmt: skip
@settings(max_examples=300)
def test_property_a_cash_leg_rounded_to_the_cent_agrees_and_one_off_by_more_never_does(
    held_qty: D, acquirer_rate: D, acquiree_rate: D, cash_rate: D, rounding: str, off: D, more: bool
) -> None:
    """The broker pays a stock-and-cash merger's cash as one total to the cent (however it rounds
    held x ``cash_rate``) and the acquirer's shares as the existing property says: that always
    agrees with the announcement; a cash leg more than a cent off the announced total never does
    (docs/corporate-actions.md "Rates against quantities")."""
    found = announced("stock_and_cash_mergers", acquirer_rate=str(acquirer_rate), acquiree_rate=str(acquiree_rate),
                      cash_rate=str(cash_rate))  # fmt: skip
    shares = (held_qty * acquirer_rate / acquiree_rate).quantize(D("1e-9"), rounding="ROUND_DOWN")
    kept = shares.to_integral_value(rounding="ROUND_DOWN") if held_qty == held_qty.to_integral_value() else shares
    due = held_qty * cash_rate
    paid = due.quantize(D("0.01"), rounding=rounding)
    if kept == 0 or paid == 0:
        return  # no shares-in leg or no cash leg: not a stock-and-cash merger's legs
    ratio = kept / held_qty
    wrong = due + (off if more else -off)

    assert check_announced(stock_and_cash(str(paid / held_qty), ratio=ratio), held_qty, found) is None
    if wrong > 0:
        assert check_announced(stock_and_cash(str(wrong / held_qty), ratio=ratio), held_qty, found) is not None
